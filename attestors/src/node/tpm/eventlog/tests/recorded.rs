//! Replay against PCR values recorded from real TPMs, and the decoding
//! boot policy relies on, on real logs.

use super::super::event_type::*;
use super::super::*;
use super::corpus::log;
use super::read;
use std::collections::BTreeMap;

use HashAlg::{Sha1 as S1, Sha256 as S256, Sm3_256 as SM3};

fn hex_pcrs(bank_pcrs: &[(u32, &str)]) -> BTreeMap<u32, Vec<u8>> {
    bank_pcrs
        .iter()
        .map(|(i, v)| (*i, hex::decode(v).unwrap()))
        .collect()
}

#[test]
fn replay_matches_pcrs_read_from_real_tpms() {
    // swtpm extended with rhel8-uefi.bin's digests, then quoted (fixture).
    let text = String::from_utf8(read("fixtures/swtpm-replayed-rhel8/pcrs_sha256.txt")).unwrap();
    let quoted: BTreeMap<u32, Vec<u8>> = text
        .lines()
        .map(|l| {
            let (slot, v) = l.trim_start_matches("Slot").split_once(' ').unwrap();
            (slot.parse().unwrap(), hex::decode(v).unwrap())
        })
        .collect();
    assert_eq!(quoted.len(), 11);
    let rhel8 = parse(&read("fixtures/swtpm-replayed-rhel8/eventlog.bin")).unwrap();
    assert_eq!(rhel8.verify(S256, &quoted).unwrap().len(), 82);
    let mut wrong = quoted.clone();
    wrong.get_mut(&14).unwrap()[31] ^= 1;
    wrong.get_mut(&4).unwrap()[0] ^= 1;
    let err = rhel8.verify(S256, &wrong).unwrap_err();
    assert_eq!(err, EventLogError::PcrMismatch { bank: S256, pcr: 4 });
    assert_eq!(
        err.to_string(),
        "PCR 4 (sha256) does not match the event log"
    );

    // TPM-read SHA-1 PCRs 0-7 in go-attestation attest/secureboot_test.go.
    let option_rom = hex_pcrs(&[
        (0, "01518aedc87a0ef505d27261ef835809e7da0086"),
        (1, "bebff4c08a6677473ab604cedefb82f850cde883"),
        (2, "366a31a0c075368f0e10857333ea2ed6e8a00fd3"),
        (3, "b2a83b0ebf2f8374299a5b2bdfc31ea955ad7236"),
        (4, "39f388c3959e904694726f4c015b6dceae0680a1"),
        (5, "723a0520cf7f2978548742bd1541706b2446459e"),
        (6, "b2a83b0ebf2f8374299a5b2bdfc31ea955ad7236"),
        (7, "20de7dfba6bcdfccadad7e3eb099c91d4d97c5ad"),
    ]);
    log("go-attestation/option_rom_eventlog.bin")
        .verify(S1, &option_rom)
        .unwrap();

    // StartupLocality 3: TPM-read PCRs in go-tpm-tools server/eventlog_test.go.
    let alex = log("go-tpm-tools/glinux-alex.bin");
    let alex_sha1 = hex_pcrs(&[
        (0, "29d236609a5f9cc6912af44ba5f57b13a17c8a84"),
        (2, "0c8ef58d40b8cd1fe15f6b45fc1b385dd251eec0"),
        (7, "9221b8fc57b60cb7de507dc016f88d4600cde9c5"),
    ]);
    let alex_sha256 = hex_pcrs(&[
        (
            0,
            "0e5ea849d7647a1ac1becc096fee4df98f00f8015f934afadaab0b8aa20b38a5",
        ),
        (
            7,
            "9d1be46302bc4f5055c90a0376d9142e397ca8744f387c9824170f1bc855fde5",
        ),
    ]);
    alex.verify(S1, &alex_sha1).unwrap();
    alex.verify(S256, &alex_sha256).unwrap();

    // H-CRTM: the TPM-read SHA-1 PCR 0 in tpm2-tss test/unit/fapi-eventlog.c.
    let hcrtm = log("tpm2-tss/binary_measurements_hcrtm.bin");
    hcrtm
        .verify(
            S1,
            &hex_pcrs(&[(0, "15f4e6ca457d1af6bc49511a93ba3500ad69acc5")]),
        )
        .unwrap();
    assert_eq!(
        hcrtm.replay_bank(SM3),
        Err(EventLogError::UnsupportedAlgorithm(SM3))
    );
}

#[test]
fn windows_wbcl_replays_the_quoted_pcrs() {
    let json: serde_json::Value = serde_json::from_slice(&read(
        "fixtures/go-attestation/windows_gcp_shielded_vm.json",
    ))
    .unwrap();
    let quoted: BTreeMap<u32, Vec<u8>> = json["Log"]["PCRs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["Index"].as_u64().unwrap() as u32,
                base64(p["Digest"].as_str().unwrap()),
            )
        })
        .collect();
    assert_eq!(
        quoted.len(),
        24,
        "all 24 SHA-1 PCRs, so reset values are checked too"
    );
    let wbcl = log("go-attestation/windows_gcp_shielded_vm_wbcl.bin");
    assert_eq!(
        base64(json["Log"]["Raw"].as_str().unwrap()),
        read("eventlogs/go-attestation/windows_gcp_shielded_vm_wbcl.bin")
    );
    assert_eq!(wbcl.verify(S1, &quoted).unwrap().len(), 21);
}

fn base64(s: &str) -> Vec<u8> {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bits: Vec<u8> = s
        .bytes()
        .filter(|b| *b != b'=')
        .map(|b| ABC.iter().position(|a| *a == b).unwrap() as u8)
        .collect();
    bits.chunks(4)
        .flat_map(|c| {
            let n = c
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, v)| n | (u32::from(*v) << (18 - 6 * i)));
            n.to_be_bytes()[1..c.len()].to_vec()
        })
        .collect()
}

#[test]
fn secure_boot_on_log_decodes_secure_boot_1_from_verified_events() {
    let log = log("go-tpm-tools/rhel8-uefi.bin");
    let quoted = BTreeMap::from([(7, log.replay_bank(S256).unwrap()[&7].clone())]);
    let pcr7 = log.verify(S256, &quoted).unwrap();
    let vars: Vec<(String, Vec<u8>)> = pcr7
        .iter()
        .filter_map(|e| match e.decode().unwrap() {
            EventData::Variable(v) if e.event_type == EV_EFI_VARIABLE_DRIVER_CONFIG => {
                Some((v.name.clone(), v.data.to_vec()))
            }
            _ => None,
        })
        .collect();
    let names: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["SecureBoot", "PK", "KEK", "db", "dbx"]);
    assert_eq!(vars[0].1, [1]);
    // digest == H(UEFI_VARIABLE_DATA) for driver-config variables.
    let sb = pcr7
        .iter()
        .find(|e| e.event_type == EV_EFI_VARIABLE_DRIVER_CONFIG)
        .unwrap();
    assert_eq!(sb.digest(S256).unwrap(), digest(S256, &sb.data).unwrap());
}

#[test]
fn real_log_payloads_decode() {
    let rhel8 = log("go-tpm-tools/rhel8-uefi.bin");
    let decoded: Vec<EventData<'_>> = rhel8.events.iter().map(|e| e.decode().unwrap()).collect();
    let cmdline = decoded.iter().find_map(|d| match d {
        EventData::Ipl(Ipl::GrubKernelCmdline(c)) => Some(c.as_str()),
        _ => None,
    });
    assert!(
        cmdline
            .unwrap()
            .starts_with("(hd0,gpt2)/boot/vmlinuz-4.18.0-240.22.1.el8_3.x86_64 root=UUID="),
        "{cmdline:?}"
    );
    assert!(decoded
        .iter()
        .any(|d| *d == EventData::Ipl(Ipl::GrubCommand("set pager=1".into()))));
    assert!(decoded.contains(&EventData::Action("Exit Boot Services Invocation".into())));
    assert_eq!(
        decoded
            .iter()
            .filter(|d| **d == EventData::Separator(0))
            .count(),
        8
    );
    match &decoded[26] {
        EventData::ImageLoad(i) => {
            assert_eq!(i.file_path().as_deref(), Some("\\EFI\\redhat\\grubx64.efi"))
        }
        other => panic!("{other:?}"),
    }

    let ubuntu = log("go-tpm-tools/ubuntu-2104-no-secure-boot.bin");
    let cmdline = ubuntu.events.iter().find_map(|e| match e.decode() {
        Ok(EventData::Ipl(Ipl::GrubKernelCmdline(c))) => Some(c),
        _ => None,
    });
    assert_eq!(cmdline.as_deref(), Some("/boot/vmlinuz-5.11.0-1006-gcp root=PARTUUID=6443a6ae-e5e9-4df7-9a06-d1329e50f33c ro console=ttyS0 panic=-1"));

    // systemd-boot: UTF-16LE in PCR 12, whitespace kept, digest = H(data).
    let fedora = log("tpm2-tools/event-sd-boot-fedora37.bin");
    let e = fedora.events.iter().find(|e| e.pcr == 12).unwrap();
    assert_eq!(
        e.decode().unwrap(),
        EventData::Ipl(Ipl::SdBootCmdline(
            " console=ttyS0 console=tty0 efi=debug ".into()
        ))
    );
    assert_eq!(e.digest(S256).unwrap(), digest(S256, &e.data).unwrap());

    // systemd-boot before 251 measured the command line into PCR 8.
    let arch = log("go-tpm-tools/arch-linux-workstation.bin");
    let e = arch.events.iter().find(|e| e.pcr == 8).unwrap();
    assert!(
        matches!(e.decode().unwrap(), EventData::Ipl(Ipl::SdBootCmdline(c)) if c.starts_with("initrd="))
    );

    // shim authority events: six bytes of padding after VariableData.
    let sb_cert = log("go-attestation/sb_cert_eventlog.bin");
    match sb_cert.events[12].decode().unwrap() {
        EventData::Variable(v) => assert_eq!(
            (v.guid, v.name.as_str(), v.data.len()),
            (Guid::SHIM_LOCK, "Shim", 1080)
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        log("tpm2-tss/binary_measurements_hcrtm.bin")
            .events
            .iter()
            .filter(|e| e.decode() == Ok(EventData::HCrtm))
            .count(),
        1
    );
}

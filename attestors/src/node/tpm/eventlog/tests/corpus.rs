//! Every real log in tests/data/eventlogs (see its MANIFEST.md): the
//! documented shape, replay equal to tpm2_eventlog's and to PCR values read
//! from real TPMs, and the decoding policy relies on.

use super::super::event_type::*;
use super::super::*;
use super::{extend, read};
use crate::testdata;
use std::collections::BTreeMap;
use std::process::Command;

use Format::{CryptoAgile as A, Legacy as L};
use HashAlg::{Sha1 as S1, Sha256 as S256, Sha384 as S384, Sha512 as S512, Sm3_256 as SM3};

struct Case {
    file: &'static str,
    expect: Result<Shape, EventLogError>,
    /// Why tpm2_eventlog cannot be compared with, if it cannot.
    no_tpm2: Option<&'static str>,
}

struct Shape {
    format: Format,
    banks: &'static [HashAlg],
    events: usize,
    locality: Option<u8>,
    /// Data of the SecureBoot variable in PCR 7, if measured.
    secure_boot: Option<&'static [u8]>,
}

const fn ok(
    file: &'static str,
    format: Format,
    banks: &'static [HashAlg],
    events: usize,
    locality: Option<u8>,
    secure_boot: Option<&'static [u8]>,
) -> Case {
    let shape = Shape {
        format,
        banks,
        events,
        locality,
        secure_boot,
    };
    Case {
        file,
        expect: Ok(shape),
        no_tpm2: None,
    }
}

const SB_ON: Option<&[u8]> = Some(&[1]);
const SB_OFF: Option<&[u8]> = Some(&[0]);
const SB_EMPTY: Option<&[u8]> = Some(&[]);
const GCE: &[HashAlg] = &[S1, S256, S384];

#[rustfmt::skip]
static CASES: &[Case] = &[
    ok("go-attestation/coreos_36_shielded_vm_no_secure_boot_eventlog.bin", A, GCE, 76, None, SB_OFF),
    ok("go-attestation/crypto_agile_eventlog.bin", A, &[S256], 27, None, SB_EMPTY),
    ok("go-attestation/ebs_event_missing_eventlog.bin", L, &[S1], 38, None, SB_OFF),
    Case { no_tpm2: Some("tpm2_eventlog 5.4 segfaults"), ..ok("go-attestation/option_rom_eventlog.bin", L, &[S1], 61, None, SB_ON) },
    ok("go-attestation/sb_cert_eventlog.bin", A, GCE, 15, None, SB_ON),
    Case { no_tpm2: Some("tpm2_eventlog rejects it"), ..ok("go-attestation/short_no_action_eventlog.bin", L, &[S1], 1, Some(3), None) },
    ok("go-attestation/ubuntu_2104_shielded_vm_no_secure_boot_eventlog.bin", A, GCE, 106, None, SB_OFF),
    ok("go-attestation/windows_gcp_shielded_vm_wbcl.bin", L, &[S1], 21, None, SB_ON),
    ok("go-tpm-tools/arch-linux-workstation.bin", A, &[S1, S256], 25, None, SB_EMPTY),
    ok("go-tpm-tools/confidential-gke-debug-251000_eventlog.bin", A, GCE, 55, None, SB_ON),
    ok("go-tpm-tools/cos-101-amd-sev.bin", A, GCE, 49, None, SB_ON),
    ok("go-tpm-tools/cos-85-amd-sev.bin", A, GCE, 46, None, SB_ON),
    ok("go-tpm-tools/cos-93-amd-sev.bin", A, GCE, 46, None, SB_ON),
    ok("go-tpm-tools/debian-10.bin", L, &[S1], 25, None, SB_ON),
    ok("go-tpm-tools/eventlogwithsp800155.bin", A, GCE, 54, None, SB_ON),
    ok("go-tpm-tools/gdc-host.bin", A, &[S256], 159, Some(3), SB_OFF),
    ok("go-tpm-tools/glinux-alex.bin", A, &[S1, S256], 29, Some(3), SB_OFF),
    ok("go-tpm-tools/rhel8-uefi.bin", A, GCE, 83, None, SB_ON),
    ok("go-tpm-tools/ubuntu-1804-amd-sev.bin", A, GCE, 88, None, SB_OFF),
    ok("go-tpm-tools/ubuntu-2104-no-dbx.bin", A, GCE, 112, None, SB_OFF),
    ok("go-tpm-tools/ubuntu-2104-no-secure-boot.bin", A, GCE, 106, None, SB_OFF),
    ok("go-tpm-tools/ubuntu-2404-amd-sevsnp.bin", A, GCE, 117, None, SB_OFF),
    ok("keylime/create-mb-policy_binary_bios_measurements-secureboot.bin", A, &[S256], 99, None, SB_ON),
    ok("keylime/create-mb-policy_binary_bios_measurements.bin", A, &[S1, S256], 121, Some(3), SB_OFF),
    ok("keylime/mb_log.bin", A, &[S256], 102, None, SB_ON),
    ok("rust-keylime/uefi_log.bin", A, &[S256], 124, None, SB_OFF),
    ok("tpm2-tools/event-arch-linux.bin", A, &[S1, S256], 25, None, SB_EMPTY),
    ok("tpm2-tools/event-bootorder.bin", A, &[S1, S256], 104, None, SB_OFF),
    ok("tpm2-tools/event-gce-ubuntu-2104-log.bin", A, GCE, 112, None, SB_OFF),
    ok("tpm2-tools/event-moklisttrusted.bin", A, &[S256], 97, None, SB_ON),
    ok("tpm2-tools/event-postcode.bin", A, &[S1, S256], 59, None, SB_ON),
    ok("tpm2-tools/event-sd-boot-fedora37.bin", A, &[S256], 28, None, SB_EMPTY),
    ok("tpm2-tools/event-uefi-sha1-log.bin", L, &[S1], 17, None, SB_EMPTY),
    // The Spec ID lists 4 banks, the event carries sha1 and sha256 only.
    ok("tpm2-tools/event-uefiaction.bin", A, &[S1, S256], 2, None, None),
    ok("tpm2-tools/event-uefiservices.bin", A, &[S1, S256], 2, None, None),
    ok("tpm2-tools/event-uefivar.bin", A, &[S1, S256], 2, None, SB_ON),
    ok("tpm2-tools/event.bin", A, &[S1, S256, S384, S512], 2, None, None),
    // eventSize stops before the 4 vendorInfo bytes vendorInfoSize announces;
    // tpm2_eventlog reads past the event, we do not.
    Case { file: "tpm2-tools/specid-vendordata.bin", expect: Err(EventLogError::BadSpecId("truncated")), no_tpm2: Some("malformed") },
    ok("tpm2-tss/binary_measurements_hcrtm.bin", A, &[S1, S256, SM3], 204, None, SB_OFF),
    ok("tpm2-tss/binary_measurements_nuc.bin", L, &[S1], 17, None, SB_EMPTY),
    ok("tpm2-tss/binary_measurements_pc_client.bin", A, &[S1, S256], 33, None, SB_EMPTY),
];

pub(super) fn log(file: &str) -> EventLog {
    parse(&read(&format!("eventlogs/{file}"))).unwrap()
}

#[test]
fn every_log_in_testdata_is_listed() {
    let mut found = vec![];
    for dir in std::fs::read_dir(testdata::path("eventlogs")).unwrap() {
        let dir = dir.unwrap();
        for f in std::fs::read_dir(dir.path()).unwrap() {
            let name = format!(
                "{}/{}",
                dir.file_name().to_string_lossy(),
                f.unwrap().file_name().to_string_lossy()
            );
            found.push(name);
        }
    }
    found.sort();
    let mut listed: Vec<String> = CASES.iter().map(|c| c.file.to_string()).collect();
    listed.sort();
    assert_eq!(found, listed);
}

#[test]
fn every_log_parses_as_documented() {
    for case in CASES {
        let parsed = parse(&read(&format!("eventlogs/{}", case.file)));
        let (log, want) = match (parsed, &case.expect) {
            (Ok(log), Ok(want)) => (log, want),
            (got, want) => {
                assert_eq!(got.as_ref().err(), want.as_ref().err(), "{}", case.file);
                continue;
            }
        };
        let got = (
            log.format,
            log.banks.as_slice(),
            log.events.len(),
            log.startup_locality,
        );
        assert_eq!(
            got,
            (want.format, want.banks, want.events, want.locality),
            "{}",
            case.file
        );
        let replayed = log.replay().unwrap();
        let replayable: Vec<HashAlg> = want.banks.iter().copied().filter(|b| *b != SM3).collect();
        assert_eq!(
            replayed.keys().copied().collect::<Vec<_>>(),
            replayable,
            "{}: SM3 is skipped",
            case.file
        );
        let sb: Vec<Vec<u8>> = log
            .events
            .iter()
            .filter(|e| e.pcr == 7)
            .filter_map(|e| match e.decode() {
                Ok(EventData::Variable(v)) if v.is(Guid::EFI_GLOBAL_VARIABLE, "SecureBoot") => {
                    Some(v.data.to_vec())
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            sb,
            want.secure_boot
                .map(|s| vec![s.to_vec()])
                .unwrap_or_default(),
            "{}",
            case.file
        );
    }
}

/// The `pcrs:` block of tpm2_eventlog's YAML, by bank name.
fn tpm2_eventlog_pcrs(path: &std::path::Path) -> BTreeMap<String, BTreeMap<u32, Vec<u8>>> {
    let out = Command::new("tpm2_eventlog")
        .arg(path)
        .output()
        .expect("tpm2_eventlog (tpm2-tools, installed by scripts/install-deps.sh)");
    assert!(
        out.status.success(),
        "tpm2_eventlog {}: {:?}",
        path.display(),
        out.status
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    let mut pcrs: BTreeMap<String, BTreeMap<u32, Vec<u8>>> = BTreeMap::new();
    let mut bank = String::new();
    for line in yaml.lines().skip_while(|l| *l != "pcrs:").skip(1) {
        if let Some((pcr, value)) = line
            .trim()
            .split_once(':')
            .filter(|_| line.starts_with("    "))
        {
            let value = hex::decode(value.trim().trim_start_matches("0x")).unwrap();
            pcrs.entry(bank.clone())
                .or_default()
                .insert(pcr.trim().parse().unwrap(), value);
        } else if line.starts_with("  ") {
            bank = line.trim().trim_end_matches(':').to_string();
        } else {
            break;
        }
    }
    pcrs
}

/// A PCR as tpm2-tools 5.4 replays it: from zero, extending EV_NO_ACTION
/// events too. Both were fixed later (tpm2-tools #3230, #3242, #3268).
fn as_tpm2_tools_5_4(log: &EventLog, bank: HashAlg, pcr: u32) -> Vec<u8> {
    let events = log.events.iter().skip(1).filter(|e| e.pcr == pcr);
    events.fold(vec![0; bank.size()], |v, e| {
        extend(bank, &v, e.digest(bank).unwrap())
    })
}

#[test]
fn replay_matches_tpm2_eventlog() {
    let (mut compared, mut explained) = (0, vec![]);
    for case in CASES.iter().filter(|c| c.no_tpm2.is_none()) {
        let log = log(case.file);
        let mut theirs = tpm2_eventlog_pcrs(&testdata::path(&format!("eventlogs/{}", case.file)));
        // We do not implement SM3; tpm2-tools does.
        let sm3 = theirs.remove("sm3_256");
        assert_eq!(sm3.is_some(), log.banks.contains(&SM3), "{}", case.file);
        let mut ours: BTreeMap<String, BTreeMap<u32, Vec<u8>>> = BTreeMap::new();
        for (bank, mut pcrs) in log.replay().unwrap() {
            for (pcr, value) in pcrs.iter_mut() {
                let Some(their) = theirs.get(bank.name()).and_then(|p| p.get(pcr)) else {
                    continue;
                };
                if value != their {
                    // Only PCRs with a reset value other than zero or an
                    // EV_NO_ACTION event may differ, and exactly as 5.4 errs.
                    let no_action = log
                        .events
                        .iter()
                        .skip(1)
                        .any(|e| e.pcr == *pcr && e.event_type == EV_NO_ACTION);
                    assert!(
                        no_action || log.initial_value(bank, *pcr) != vec![0; bank.size()],
                        "{} {bank} {pcr}",
                        case.file
                    );
                    assert_eq!(
                        &as_tpm2_tools_5_4(&log, bank, *pcr),
                        their,
                        "{} {bank} {pcr}",
                        case.file
                    );
                    explained.push(format!("{} {bank} PCR{pcr}", case.file));
                    value.clone_from(their);
                }
            }
            ours.insert(bank.name().to_string(), pcrs);
        }
        assert_eq!(ours, theirs, "{}", case.file);
        compared += 1;
    }
    assert_eq!(compared, CASES.len() - 3);
    // Locality 3, H-CRTM and SP800-155 (EV_NO_ACTION) logs; a fixed
    // tpm2-tools (>= 5.6) would agree everywhere.
    let known = [
        "confidential-gke",
        "sp800155",
        "gdc-host",
        "glinux-alex",
        "create-mb-policy_binary_bios_measurements.bin",
        "hcrtm",
    ];
    for e in &explained {
        assert!(
            e.ends_with(" PCR0") && known.iter().any(|k| e.contains(k)),
            "{e}"
        );
    }
    assert!(explained.len() <= 13, "{explained:#?}");
}

#[test]
fn every_event_of_every_log_decodes() {
    for case in CASES.iter().filter(|c| c.expect.is_ok()) {
        for e in log(case.file).events {
            if let Err(err) = e.decode() {
                panic!("{}: {err}", case.file);
            }
        }
    }
}

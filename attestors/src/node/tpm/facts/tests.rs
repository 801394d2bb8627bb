//! Real logs from tests/data, and the attacks of issue 7 played on
//! them: each forged log replays to the PCRs it claims (recomputed), so only
//! the proof and type checks stand between it and a passed policy.

use super::*;
use crate::node::tpm::eventlog::{self, digest, EventLog, Format};
use crate::node::tpm::policy::{BootPolicy, BootPolicyConfig};
use crate::testdata;
use std::collections::BTreeMap;

use HashAlg::Sha256 as S256;

/// The authority's default `[tpm] pcrs`.
pub(super) const QUOTED: [u32; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 14];

pub(super) fn log(file: &str) -> EventLog {
    eventlog::parse(&testdata::read(&format!("eventlogs/{file}"))).unwrap()
}

/// The log as firmware writes it: the first event in TCG 1.2 framing, the
/// rest in the log's own.
pub(super) fn to_bytes(log: &EventLog) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, e) in log.events.iter().enumerate() {
        out.extend(e.pcr.to_le_bytes());
        out.extend(e.event_type.to_le_bytes());
        if i == 0 || log.format == Format::Legacy {
            out.extend(e.digest(HashAlg::Sha1).unwrap());
        } else {
            out.extend((e.digests.len() as u32).to_le_bytes());
            for (alg, d) in &e.digests {
                out.extend(alg.id().to_le_bytes());
                out.extend(d);
            }
        }
        out.extend((e.data.len() as u32).to_le_bytes());
        out.extend(&e.data);
    }
    out
}

/// What a TPM that measured exactly `log` quotes: the attacker with root
/// extends PCRs at runtime to match whatever log they send.
pub(super) fn quote(log: &EventLog, bank: HashAlg) -> BTreeMap<u32, Vec<u8>> {
    let replayed = log.replay_bank(bank).unwrap();
    QUOTED
        .iter()
        .map(|p| {
            let v = replayed.get(p).cloned();
            (*p, v.unwrap_or_else(|| log.initial_value(bank, *p)))
        })
        .collect()
}

/// Round-trips `log` through its bytes (as the agent would send it), replays
/// it into the quote and extracts the facts the authority would.
fn facts_of(log: &EventLog, bank: HashAlg) -> (BootFacts, BTreeMap<u32, Vec<u8>>) {
    let log = eventlog::parse(&to_bytes(log)).unwrap();
    let quoted = quote(&log, bank);
    let events = log.verify(bank, &quoted).unwrap();
    (extract(&events, bank, quoted.keys().copied()), quoted)
}

fn violation(log: &EventLog, policy: &BootPolicy) -> Option<String> {
    let (facts, quoted) = facts_of(log, S256);
    policy.violation(&facts, &quoted)
}

fn policy(f: impl FnOnce(&mut BootPolicyConfig)) -> BootPolicy {
    let mut c = BootPolicyConfig {
        name: "p".into(),
        ..Default::default()
    };
    f(&mut c);
    BootPolicy::new(&c).unwrap()
}

/// An event with correct digests in every bank of `log`.
fn measured(log: &EventLog, pcr: u32, event_type: u32, data: &[u8]) -> Event {
    let digests = log
        .banks
        .iter()
        .map(|b| (*b, digest(*b, data).unwrap()))
        .collect();
    Event {
        index: log.events.len(),
        pcr,
        event_type,
        digests,
        data: data.to_vec(),
    }
}

fn position(log: &EventLog, f: impl Fn(&Event) -> bool) -> usize {
    log.events.iter().position(f).expect("event present")
}

const RHEL8: &str = "go-tpm-tools/rhel8-uefi.bin";
/// rhel8's grub command line, as measured.
const RHEL8_CMDLINE: &str = "(hd0,gpt2)/boot/vmlinuz-4.18.0-240.22.1.el8_3.x86_64 root=UUID=f3948fb4-cce7-4193-940a-c50052e93bf3 ro net.ifnames=0 biosdevname=0 scsi_mod.use_blk_mq=Y crashkernel=auto console=ttyS0,38400n8";

/// rhel8's boot applications (shim, grub, kernel) and command line.
fn rhel8_policy() -> BootPolicy {
    let (facts, _) = facts_of(&log(RHEL8), S256);
    policy(|c| {
        c.require_secure_boot = true;
        c.boot_digests = facts.boot_applications.clone();
        c.kernel_cmdline = vec!["^\\S+ root=UUID=\\S+ ro .*console=ttyS0,38400n8$".into()];
    })
}

#[test]
fn every_real_log_holds_only_allowed_proven_events_where_policies_read() {
    let dirs = std::fs::read_dir(testdata::path("eventlogs")).unwrap();
    let mut checked = 0;
    for file in dirs.flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap()) {
        let path = file.unwrap().path();
        let Ok(log) = eventlog::parse(&std::fs::read(&path).unwrap()) else {
            continue; // specid-vendordata.bin: malformed on purpose
        };
        for bank in [HashAlg::Sha1, S256] {
            if !log.banks.contains(&bank) {
                continue;
            }
            let (facts, _) = facts_of(&log, bank);
            for pcr in [4, 7, 8, 12] {
                assert_eq!(facts.covered[&pcr], Ok(()), "{} {bank}", path.display());
            }
            checked += 1;
        }
    }
    assert!(checked > 50, "{checked}");
}

#[test]
fn real_logs_give_their_facts() {
    let (rhel8, _) = facts_of(&log(RHEL8), S256);
    assert!(rhel8.secure_boot);
    assert_eq!(rhel8.boot_applications.len(), 3, "shim, grub, kernel");
    // grub's kernel_cmdline event and its `linux` command say the same.
    assert_eq!(rhel8.kernel_cmdlines, [RHEL8_CMDLINE, RHEL8_CMDLINE]);
    assert_eq!(violation(&log(RHEL8), &rhel8_policy()), None);

    // systemd-boot: UTF-16 in PCR 12, measured twice.
    let (sd, _) = facts_of(&log("tpm2-tools/event-sd-boot-fedora37.bin"), S256);
    assert_eq!(
        sd.kernel_cmdlines,
        ["console=ttyS0 console=tty0 efi=debug"; 2]
    );
    // systemd-boot < 251: PCR 8, digest over one more byte than logged.
    let (arch, _) = facts_of(&log("go-tpm-tools/arch-linux-workstation.bin"), S256);
    assert!(arch.kernel_cmdlines[0].starts_with("initrd=\\intel-ucode.img"));
    // shim's authority event hashes all but its last byte.
    assert!(
        facts_of(&log("go-attestation/sb_cert_eventlog.bin"), S256)
            .0
            .secure_boot
    );
    // "DMA Protection Disabled" is proven, and means no secure boot.
    let (gdc, _) = facts_of(&log("go-tpm-tools/gdc-host.bin"), S256);
    assert_eq!(gdc.covered[&7], Ok(()));
    assert!(!gdc.secure_boot);
}

#[test]
fn a_log_that_extends_nothing_grants_no_list_policy() {
    let mut empty = log(RHEL8);
    empty.events.truncate(1); // the Spec ID event only
    let apps = policy(|c| c.boot_digests = vec!["00".repeat(32)]);
    assert_eq!(
        violation(&empty, &apps).as_deref(),
        Some("no measured boot application")
    );
    let cmd = policy(|c| c.kernel_cmdline = vec![".*".into()]);
    assert!(violation(&empty, &cmd).is_some());
    // No log at all (what the verifier has when the agent sends none).
    let quoted = quote(&log(RHEL8), S256);
    assert_eq!(
        apps.violation(&BootFacts::default(), &quoted).as_deref(),
        Some("boot_digests: no event log")
    );
}

#[test]
fn a_boot_application_hidden_by_its_event_type_is_refused() {
    let honest = log(RHEL8);
    let kernel = honest
        .events
        .iter()
        .rposition(|e| e.pcr == 4 && e.event_type == EV_EFI_BOOT_SERVICES_APPLICATION)
        .unwrap();
    let (facts, _) = facts_of(&honest, S256);
    // The operator allows shim and grub, not this kernel.
    let p = policy(|c| c.boot_digests = facts.boot_applications[..2].to_vec());
    assert!(violation(&honest, &p).unwrap().contains("is not allowed"));
    // The type is not covered by the digest: the replay still matches.
    for disguise in [
        EV_EFI_ACTION,
        EV_EFI_BOOT_SERVICES_DRIVER,
        EV_IPL,
        EV_EVENT_TAG,
        EV_OMIT_BOOT_DEVICE_EVENTS,
        0x8000_0bad,
    ] {
        let mut forged = honest.clone();
        forged.events[kernel].event_type = disguise;
        let why = violation(&forged, &p).unwrap_or_else(|| panic!("{disguise:#x} passed"));
        assert!(why.starts_with("boot_digests: PCR 4: event"), "{why}");
    }
}

#[test]
fn a_forged_command_line_next_to_a_runtime_extended_one_is_refused() {
    let honest = log(RHEL8);
    let p = policy(|c| c.kernel_cmdline = vec!["^\\S+ ro quiet$".into()]);
    assert!(violation(&honest, &p).unwrap().contains("is not allowed"));
    // Rewrite the measured command lines' text (no longer proven by their
    // digests) and extend PCR 8 at runtime with one the policy allows.
    let mut forged = honest.clone();
    for e in forged.events.iter_mut().filter(|e| e.pcr == 8) {
        let text = String::from_utf8_lossy(&e.data).into_owned();
        if text.contains(RHEL8_CMDLINE) {
            e.data = text
                .replace(RHEL8_CMDLINE, "/vmlinuz ro quiet")
                .into_bytes();
        }
    }
    let good = measured(&forged, 8, EV_IPL, b"/vmlinuz ro quiet");
    forged.events.push(Event {
        data: b"grub_kernel_cmdline /vmlinuz ro quiet".to_vec(),
        ..good
    });
    let why = violation(&forged, &p).expect("forged command line passed");
    assert!(why.starts_with("kernel_cmdline: PCR 8: event"), "{why}");

    // Relabelling keeps the digest valid: the kernel_cmdline event turned
    // into a grub command is hidden, but grub's `linux` command still says
    // what the kernel was given.
    let mut relabelled = honest.clone();
    let at = position(&relabelled, |e| e.data.starts_with(b"grub_kernel_cmdline "));
    relabelled.events[at].data = [b"grub_cmd ", RHEL8_CMDLINE.as_bytes()].concat();
    let good = measured(&relabelled, 8, EV_IPL, b"/vmlinuz ro quiet");
    relabelled.events.push(Event {
        data: b"grub_kernel_cmdline /vmlinuz ro quiet".to_vec(),
        ..good
    });
    let why = violation(&relabelled, &p).expect("relabelled command line passed");
    assert!(why.contains("console=ttyS0,38400n8"), "{why}");
}

#[test]
fn efi_action_strings_count_only_when_their_digest_proves_them() {
    let honest = log(RHEL8);
    let sb = policy(|c| c.require_secure_boot = true);
    assert_eq!(violation(&honest, &sb), None);
    let separator = position(&honest, |e| e.pcr == 7 && e.event_type == EV_SEPARATOR);
    // The firmware measured debug mode into PCR 7 ...
    let mut debug = honest.clone();
    let action = measured(&debug, 7, EV_EFI_ACTION, b"UEFI Debug Mode");
    debug.events.insert(separator, action);
    assert!(!facts_of(&debug, S256).0.secure_boot);
    assert!(violation(&debug, &sb).is_some());
    // ... and the attacker rewrites its text: now nothing proves it.
    debug.events[separator].data = b"Calling EFI Application from Boot Option".to_vec();
    let (facts, _) = facts_of(&debug, S256);
    assert!(!facts.secure_boot);
    assert!(facts.covered[&7]
        .as_ref()
        .unwrap_err()
        .contains("EV_EFI_ACTION"));
    assert!(violation(&debug, &sb).is_some());
}

#[test]
fn proof_rules() {
    let rhel8 = log(RHEL8);
    let kinds = |pcr: u32| -> Vec<Proof> {
        rhel8
            .events
            .iter()
            .filter(|e| e.pcr == pcr && e.event_type != EV_NO_ACTION)
            .map(|e| proof(e, S256))
            .collect()
    };
    assert!(kinds(4).contains(&Proof::ImageDigest));
    assert!(kinds(7).iter().all(|p| *p == Proof::Data));
    // grub's files (PCR 9) and shim's MOK lists (PCR 14) are hashed as
    // files and variables the log does not carry.
    assert!(kinds(9).iter().all(|p| *p == Proof::Unproven));
    assert!(kinds(14).iter().all(|p| *p == Proof::Unproven));
    assert!(allowed(4, EV_EFI_BOOT_SERVICES_APPLICATION));
    assert!(!allowed(4, EV_EFI_BOOT_SERVICES_DRIVER));
    assert!(!allowed(7, EV_IPL));
    assert!(!allowed(16, EV_IPL));
}

//! Real logs mutated the way an attacker who controls the log (but not the
//! TPM) would: a log that still verifies against the original quote
//! measured exactly what the original did, and yields no fact the original
//! does not. Nothing panics on the way.

use super::tests::{log, quote, to_bytes, QUOTED};
use super::*;
use crate::node::tpm::eventlog::{self, EventLog, Format};
use proptest::prelude::*;
use std::sync::LazyLock;

/// Logs with secure boot, grub and systemd-boot command lines, option ROMs,
/// a legacy SHA-1 log and an H-CRTM one.
const SEEDS: [&str; 7] = [
    "go-tpm-tools/rhel8-uefi.bin",
    "go-tpm-tools/ubuntu-2104-no-dbx.bin",
    "tpm2-tools/event-sd-boot-fedora37.bin",
    "go-attestation/sb_cert_eventlog.bin",
    "go-attestation/option_rom_eventlog.bin",
    "tpm2-tools/event-uefi-sha1-log.bin",
    "tpm2-tss/binary_measurements_hcrtm.bin",
];

const TYPES: [u32; 14] = [
    EV_POST_CODE,
    EV_NO_ACTION,
    EV_SEPARATOR,
    EV_ACTION,
    EV_EVENT_TAG,
    EV_IPL,
    EV_EFI_VARIABLE_DRIVER_CONFIG,
    EV_EFI_VARIABLE_BOOT,
    EV_EFI_BOOT_SERVICES_APPLICATION,
    EV_EFI_BOOT_SERVICES_DRIVER,
    EV_EFI_ACTION,
    EV_EFI_PLATFORM_FIRMWARE_BLOB,
    EV_EFI_HCRTM_EVENT,
    EV_EFI_VARIABLE_AUTHORITY,
];

#[derive(Clone, Debug)]
enum Mutation {
    EventType { at: usize, ty: u32 },
    DataByte { at: usize, pos: usize, byte: u8 },
    Data { at: usize, data: Vec<u8> },
    DigestByte { at: usize, pos: usize, byte: u8 },
    Pcr { at: usize, pcr: u32 },
    Swap { a: usize, b: usize },
    Remove { at: usize },
    Duplicate { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = any::<usize>();
    prop_oneof![
        (at, prop::sample::select(TYPES.to_vec()))
            .prop_map(|(at, ty)| Mutation::EventType { at, ty }),
        (at, any::<usize>(), any::<u8>()).prop_map(|(at, pos, byte)| Mutation::DataByte {
            at,
            pos,
            byte
        }),
        (at, prop::collection::vec(any::<u8>(), 0..40))
            .prop_map(|(at, data)| Mutation::Data { at, data }),
        (at, any::<usize>(), any::<u8>()).prop_map(|(at, pos, byte)| Mutation::DigestByte {
            at,
            pos,
            byte
        }),
        (at, 0u32..24).prop_map(|(at, pcr)| Mutation::Pcr { at, pcr }),
        (at, any::<usize>()).prop_map(|(a, b)| Mutation::Swap { a, b }),
        at.prop_map(|at| Mutation::Remove { at }),
        at.prop_map(|at| Mutation::Duplicate { at }),
    ]
}

/// Applies `m` to the events after the first (a crypto-agile log's first
/// event is its Spec ID; a legacy log's is firmware's too).
fn apply(log: &mut EventLog, m: &Mutation) {
    let n = log.events.len() - 1;
    let ev = |at: usize| 1 + at % n;
    match m.clone() {
        Mutation::EventType { at, ty } => log.events[ev(at)].event_type = ty,
        Mutation::DataByte { at, pos, byte } => {
            let data = &mut log.events[ev(at)].data;
            if !data.is_empty() {
                let pos = pos % data.len();
                data[pos] = byte;
            }
        }
        Mutation::Data { at, data } => log.events[ev(at)].data = data,
        Mutation::DigestByte { at, pos, byte } => {
            let e = &mut log.events[ev(at)];
            let bank = pos % e.digests.len();
            let d = &mut e.digests[bank].1;
            let pos = pos % d.len();
            d[pos] = byte;
        }
        Mutation::Pcr { at, pcr } => log.events[ev(at)].pcr = pcr,
        Mutation::Swap { a, b } => log.events.swap(ev(a), ev(b)),
        Mutation::Remove { at } => {
            log.events.remove(ev(at));
        }
        Mutation::Duplicate { at } => {
            let e = log.events[ev(at)].clone();
            log.events.insert(ev(at), e);
        }
    }
    for (i, e) in log.events.iter_mut().enumerate() {
        e.index = i;
    }
}

fn bank_of(log: &EventLog) -> HashAlg {
    if log.banks.contains(&HashAlg::Sha256) {
        HashAlg::Sha256
    } else {
        HashAlg::Sha1
    }
}

/// What the TPM extended into each quoted PCR, in order.
fn measurements(log: &EventLog, bank: HashAlg) -> BTreeMap<u32, Vec<String>> {
    let mut out: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for e in log
        .events
        .iter()
        .filter(|e| e.event_type != EV_NO_ACTION && QUOTED.contains(&e.pcr))
    {
        let d = e.digest(bank).map(hex::encode).unwrap_or_default();
        out.entry(e.pcr).or_default().push(d);
    }
    out
}

/// A seed log with its quote and facts, computed once.
struct Original {
    log: EventLog,
    bank: HashAlg,
    quoted: BTreeMap<u32, Vec<u8>>,
    facts: BootFacts,
    /// Every digest PCR 4 was extended with.
    pcr4: Vec<String>,
}

static ORIGINALS: LazyLock<Vec<Original>> = LazyLock::new(|| {
    SEEDS
        .iter()
        .map(|f| {
            let log = log(f);
            let bank = bank_of(&log);
            let quoted = quote(&log, bank);
            let facts = extract(
                &log.verify(bank, &quoted).expect("a seed verifies"),
                bank,
                QUOTED,
            );
            let pcr4 = log
                .events
                .iter()
                .filter(|e| e.pcr == 4 && e.event_type != EV_NO_ACTION)
                .filter_map(|e| e.digest(bank).map(hex::encode))
                .collect();
            Original {
                log,
                bank,
                quoted,
                facts,
                pcr4,
            }
        })
        .collect()
});

/// Parses, verifies against the original's quote and extracts facts from
/// the bytes an agent would send: fails the case if the forged log passes
/// yet measured something else or proves a fact the original does not.
fn check(original: &Original, bytes: &[u8]) -> Result<(), TestCaseError> {
    let bank = original.bank;
    let Ok(forged) = eventlog::parse(bytes) else {
        return Ok(());
    };
    let _ = forged.replay();
    let Ok(events) = forged.verify(bank, &original.quoted) else {
        return Ok(());
    };
    prop_assert_eq!(
        measurements(&forged, bank),
        measurements(&original.log, bank)
    );
    let got = extract(&events, bank, QUOTED);
    prop_assert!(
        !got.secure_boot || original.facts.secure_boot,
        "secure boot appeared"
    );
    for c in &got.kernel_cmdlines {
        prop_assert!(
            original.facts.kernel_cmdlines.contains(c),
            "new command line {:?}",
            c
        );
    }
    for a in &got.boot_applications {
        prop_assert!(
            original.pcr4.contains(a),
            "boot application {} was never measured",
            a
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn structurally_mutated_logs_never_pass_as_the_original(
        i in 0..SEEDS.len(),
        ms in prop::collection::vec(mutation(), 1..4),
    ) {
        let original = &ORIGINALS[i];
        let mut forged = original.log.clone();
        for m in &ms {
            apply(&mut forged, m);
        }
        check(original, &to_bytes(&forged))?;
    }

    #[test]
    fn byte_mutated_logs_never_pass_as_the_original(
        i in 0..SEEDS.len(),
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..6),
    ) {
        let original = &ORIGINALS[i];
        let mut bytes = to_bytes(&original.log);
        for (at, v) in flips {
            let at = at % bytes.len();
            bytes[at] = v;
        }
        check(original, &bytes)?;
    }
}

#[test]
fn the_seeds_cover_what_the_checks_read() {
    let o = &*ORIGINALS;
    assert!(o.iter().any(|o| o.facts.secure_boot));
    assert!(o.iter().any(|o| !o.facts.kernel_cmdlines.is_empty()));
    assert!(o.iter().any(|o| !o.facts.boot_applications.is_empty()));
    assert!(o
        .iter()
        .any(|o| o.log.format == Format::Legacy && o.bank == HashAlg::Sha1));
}

/// Found by the property above: an event in PCR 12 whose digest is of its plain text
/// ("WBCL"), relabelled EV_IPL (the event type is not measured), read as a kernel command
/// line. Unlabelled text no longer counts as one.
#[test]
fn a_relabelled_text_event_is_no_command_line() {
    let original = &ORIGINALS[4];
    let mut forged = original.log.clone();
    let relabel = Mutation::EventType {
        at: 7014837403939765194,
        ty: EV_IPL,
    };
    apply(&mut forged, &relabel);
    if let Err(e) = check(original, &to_bytes(&forged)) {
        panic!("{e}");
    }
}

//! Hostile input: truncation, oversized length fields, broken Spec ID
//! events, random mutation. Nothing may panic or allocate from a length
//! field it has not checked.

use super::super::event_type::*;
use super::super::*;
use super::{read, spec_id, Log};
use proptest::prelude::*;
use std::collections::BTreeMap;

use HashAlg::{Sha1 as S1, Sha256 as S256};

/// Everything a verifier would do with a log; must not panic.
fn exercise(bytes: &[u8]) {
    let Ok(log) = parse(bytes) else { return };
    let _ = log.replay();
    for e in &log.events {
        if let Ok(EventData::ImageLoad(i)) = e.decode() {
            let _ = i.file_path();
        }
    }
    for bank in log.banks.clone() {
        let quoted: BTreeMap<u32, Vec<u8>> = (0..24).map(|p| (p, vec![0; bank.size()])).collect();
        let _ = log.verify(bank, &quoted);
    }
}

#[test]
fn every_prefix_is_an_error_or_a_shorter_log() {
    for file in [
        "tpm2-tools/event-sd-boot-fedora37.bin",
        "tpm2-tools/event-uefi-sha1-log.bin",
        "go-attestation/short_no_action_eventlog.bin",
        "go-tpm-tools/glinux-alex.bin",
    ] {
        let bytes = read(&format!("eventlogs/{file}"));
        let full = parse(&bytes).unwrap();
        for n in 0..bytes.len() {
            match parse(&bytes[..n]) {
                Ok(log) => {
                    assert!(log.events.len() < full.events.len(), "{file}[..{n}]");
                    assert_eq!(log.events, full.events[..log.events.len()], "{file}[..{n}]");
                    log.replay().unwrap();
                }
                Err(EventLogError::Empty) => assert_eq!(n, 0),
                Err(EventLogError::Truncated { offset }) => assert!(offset <= n, "{file}[..{n}]"),
                Err(e) => panic!("{file}[..{n}]: {e:?}"),
            }
        }
    }
}

/// One SHA-256 Spec ID event followed by `tail`.
fn agile_then(tail: &[u8]) -> Vec<u8> {
    [Log::agile(&[S256]).bytes.as_slice(), tail].concat()
}

fn event_header(pcr: u32, ty: u32, digests: &[(u16, &[u8])]) -> Vec<u8> {
    let mut b = [
        pcr.to_le_bytes(),
        ty.to_le_bytes(),
        (digests.len() as u32).to_le_bytes(),
    ]
    .concat();
    for (id, d) in digests {
        b.extend(id.to_le_bytes());
        b.extend(*d);
    }
    b
}

#[test]
fn oversized_length_fields_are_rejected() {
    let d = [0u8; 32];
    let start = Log::agile(&[S256]).bytes.len();
    let header = event_header(4, EV_IPL, &[(S256.id(), &d)]);
    let data_at = start + header.len() + 4;
    for (size, want) in [
        (
            u32::MAX,
            EventLogError::EventTooLarge {
                index: 1,
                size: u32::MAX.into(),
            },
        ),
        (
            MAX_EVENT_DATA as u32 + 1,
            EventLogError::EventTooLarge {
                index: 1,
                size: MAX_EVENT_DATA as u64 + 1,
            },
        ),
        (1000, EventLogError::Truncated { offset: data_at }),
    ] {
        let log = agile_then(&[header.as_slice(), &size.to_le_bytes(), &[0; 10]].concat());
        assert_eq!(parse(&log), Err(want));
    }
    // Digest counts: more than the Spec ID lists, far more, a foreign or repeated algorithm.
    let many = agile_then(
        &[
            4u32.to_le_bytes(),
            5u32.to_le_bytes(),
            u32::MAX.to_le_bytes(),
        ]
        .concat(),
    );
    assert!(matches!(
        parse(&many),
        Err(EventLogError::BadEvent { index: 1, .. })
    ));
    let two = agile_then(&event_header(
        4,
        EV_IPL,
        &[(S256.id(), &d), (S256.id(), &d)],
    ));
    assert!(matches!(
        parse(&two),
        Err(EventLogError::BadEvent { index: 1, .. })
    ));
    let foreign = agile_then(&event_header(4, EV_IPL, &[(S1.id(), &d[..20])]));
    assert_eq!(
        parse(&foreign),
        Err(EventLogError::UnknownAlgorithm(S1.id()))
    );
    let unknown = agile_then(&event_header(4, EV_IPL, &[(0x99, &d)]));
    assert_eq!(parse(&unknown), Err(EventLogError::UnknownAlgorithm(0x99)));
    // A huge legacy event size.
    let legacy = [[0u8; 28].as_slice(), &u32::MAX.to_le_bytes()].concat();
    assert!(matches!(
        parse(&legacy),
        Err(EventLogError::EventTooLarge { index: 0, .. })
    ));
}

#[test]
fn log_size_and_event_count_are_capped() {
    assert_eq!(
        parse(&vec![0; MAX_LOG_BYTES + 1]),
        Err(EventLogError::TooLarge)
    );
    assert_eq!(parse(&[]), Err(EventLogError::Empty));
    // 32-byte legacy events (EV_POST_CODE in PCR 1, no data).
    let event = [1u32.to_le_bytes().as_slice(), &1u32.to_le_bytes(), &[0; 24]].concat();
    let log = event.repeat(MAX_EVENTS);
    assert_eq!(parse(&log).unwrap().events.len(), MAX_EVENTS);
    let log = event.repeat(MAX_EVENTS + 1);
    assert_eq!(parse(&log), Err(EventLogError::TooManyEvents));
}

#[test]
fn malformed_spec_id_events_are_rejected() {
    let sha256 = (S256.id(), 32);
    let cases: Vec<(Vec<u8>, EventLogError)> = vec![
        (
            spec_id(&[], b""),
            EventLogError::BadSpecId("bad number of algorithms"),
        ),
        (
            spec_id(&[(S256.id(), 20)], b""),
            EventLogError::BadSpecId("wrong digest size"),
        ),
        (
            spec_id(&[(0x1234, 32)], b""),
            EventLogError::UnknownAlgorithm(0x1234),
        ),
        (
            spec_id(&[sha256, sha256], b""),
            EventLogError::BadSpecId("algorithm listed twice"),
        ),
        (
            [spec_id(&[sha256], b"").as_slice(), b"x"].concat(),
            EventLogError::BadSpecId("trailing bytes"),
        ),
        (
            spec_id(&[sha256], b"")[..30].to_vec(),
            EventLogError::BadSpecId("truncated"),
        ),
    ];
    for (data, want) in cases {
        let log = Log::legacy().event(0, EV_NO_ACTION, &data);
        assert_eq!(log.parse(), Err(want));
    }
    // 2^32-1 algorithms must be refused before anything is read or allocated.
    let mut huge = spec_id(&[sha256], b"");
    huge[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
    let log = Log::legacy().event(0, EV_NO_ACTION, &huge);
    assert_eq!(
        log.parse(),
        Err(EventLogError::BadSpecId("bad number of algorithms"))
    );
    let log = Log::legacy().event(1, EV_NO_ACTION, &spec_id(&[sha256], b""));
    assert_eq!(log.parse(), Err(EventLogError::BadSpecId("not in PCR 0")));
}

#[test]
fn bad_pcr_indexes_and_startup_localities_are_rejected() {
    let log = Log::agile(&[S256]).event(24, EV_POST_CODE, b"");
    assert!(matches!(
        log.parse(),
        Err(EventLogError::BadEvent { index: 1, .. })
    ));
    let log = Log::legacy().event(0xffff_ffff, EV_SEPARATOR, b"");
    assert!(matches!(
        log.parse(),
        Err(EventLogError::BadEvent { index: 0, .. })
    ));
    // EV_NO_ACTION is never extended: Windows/HP logs use PCR 0xffffffff.
    Log::agile(&[S256])
        .event(0xffff_ffff, EV_NO_ACTION, b"")
        .parse()
        .unwrap();

    let loc = |l: u8| [b"StartupLocality\0".as_slice(), &[l]].concat();
    let two = Log::agile(&[S256])
        .event(0, EV_NO_ACTION, &loc(3))
        .event(0, EV_NO_ACTION, &loc(0));
    assert!(matches!(
        two.parse(),
        Err(EventLogError::BadEvent { index: 2, .. })
    ));
    let five = Log::agile(&[S256]).event(0, EV_NO_ACTION, &loc(5));
    assert!(matches!(
        five.parse(),
        Err(EventLogError::BadEvent { index: 1, .. })
    ));
    let long = Log::agile(&[S256]).event(0, EV_NO_ACTION, &[loc(3), vec![0]].concat());
    assert!(matches!(
        long.parse(),
        Err(EventLogError::BadEvent { index: 1, .. })
    ));
}

#[test]
fn oversized_variable_lengths_do_not_decode() {
    let mut data = vec![0u8; 16];
    data.extend(u64::MAX.to_le_bytes()); // name length in chars: doubles past u64
    data.extend(2u64.to_le_bytes());
    let log = Log::agile(&[S256])
        .event(7, EV_EFI_VARIABLE_DRIVER_CONFIG, &data)
        .parse()
        .unwrap();
    assert!(matches!(
        log.events[1].decode(),
        Err(EventLogError::BadEventData { index: 1, .. })
    ));
    data[16..24].copy_from_slice(&1u64.to_le_bytes());
    data[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
    let log = Log::agile(&[S256])
        .event(7, EV_EFI_VARIABLE_BOOT, &data)
        .parse()
        .unwrap();
    assert!(matches!(
        log.events[1].decode(),
        Err(EventLogError::BadEventData { index: 1, .. })
    ));
}

fn seeds() -> Vec<Vec<u8>> {
    [
        "tpm2-tools/event-sd-boot-fedora37.bin",
        "go-attestation/short_no_action_eventlog.bin",
        "tpm2-tools/event-uefivar.bin",
        "tpm2-tools/event-uefiservices.bin",
    ]
    .iter()
    .map(|f| read(&format!("eventlogs/{f}")))
    .chain([read("eventlogs/tpm2-tools/event-uefi-sha1-log.bin")[..3000].to_vec()])
    .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_logs_never_panic(
        seed in 0usize..5,
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
        insert in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        let mut bytes = seeds().swap_remove(seed);
        for (at, v) in flips {
            let at = at % bytes.len();
            bytes[at] = v;
        }
        let at = cut % bytes.len();
        bytes.splice(at..at, insert);
        exercise(&bytes);
        exercise(&bytes[..cut % (bytes.len() + 1)]);
    }

    #[test]
    fn random_events_after_a_spec_id_never_panic(tail in prop::collection::vec(any::<u8>(), 0..600)) {
        exercise(&agile_then(&tail));
        exercise(&tail);
    }
}

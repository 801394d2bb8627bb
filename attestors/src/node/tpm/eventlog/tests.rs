//! Synthetic-log unit tests; real logs in `corpus` and `recorded`, hostile
//! input in `robust`.

mod corpus;
mod recorded;
mod robust;

use super::event_type::*;
use super::*;
use std::collections::BTreeMap;

pub(super) use crate::testdata::read;

pub(super) fn h(alg: HashAlg, data: &[u8]) -> Vec<u8> {
    digest(alg, data).unwrap()
}

pub(super) fn extend(alg: HashAlg, pcr: &[u8], d: &[u8]) -> Vec<u8> {
    h(alg, &[pcr, d].concat())
}

/// Builds logs byte by byte, as firmware would write them.
pub(super) struct Log {
    algs: Vec<HashAlg>,
    agile: bool,
    pub(super) bytes: Vec<u8>,
}

impl Log {
    pub(super) fn legacy() -> Log {
        Log {
            algs: vec![HashAlg::Sha1],
            agile: false,
            bytes: vec![],
        }
    }

    pub(super) fn agile(algs: &[HashAlg]) -> Log {
        let ids: Vec<(u16, u16)> = algs.iter().map(|a| (a.id(), a.size() as u16)).collect();
        let mut log = Log::legacy();
        log = log.event(0, EV_NO_ACTION, &spec_id(&ids, b""));
        log.algs = algs.to_vec();
        log.agile = true;
        log
    }

    /// An event whose digests are H(data) in every bank.
    pub(super) fn event(self, pcr: u32, ty: u32, data: &[u8]) -> Log {
        let digests: Vec<(u16, Vec<u8>)> = self
            .algs
            .iter()
            .map(|a| {
                (
                    a.id(),
                    if ty == EV_NO_ACTION {
                        vec![0; a.size()]
                    } else {
                        h(*a, data)
                    },
                )
            })
            .collect();
        self.raw(pcr, ty, &digests, data)
    }

    pub(super) fn raw(mut self, pcr: u32, ty: u32, digests: &[(u16, Vec<u8>)], data: &[u8]) -> Log {
        self.bytes.extend(pcr.to_le_bytes());
        self.bytes.extend(ty.to_le_bytes());
        if self.agile {
            self.bytes.extend((digests.len() as u32).to_le_bytes());
            for (id, d) in digests {
                self.bytes.extend(id.to_le_bytes());
                self.bytes.extend(d);
            }
        } else {
            self.bytes.extend(&digests[0].1);
        }
        self.bytes.extend((data.len() as u32).to_le_bytes());
        self.bytes.extend(data);
        self
    }

    pub(super) fn parse(&self) -> Result<EventLog, EventLogError> {
        parse(&self.bytes)
    }
}

pub(super) fn spec_id(algs: &[(u16, u16)], vendor: &[u8]) -> Vec<u8> {
    let mut d = b"Spec ID Event03\0".to_vec();
    d.extend(0u32.to_le_bytes()); // platform class
    d.extend([0, 2, 0, 2]); // minor, major, errata, uintnSize
    d.extend((algs.len() as u32).to_le_bytes());
    for (id, size) in algs {
        d.extend(id.to_le_bytes());
        d.extend(size.to_le_bytes());
    }
    d.push(vendor.len() as u8);
    d.extend(vendor);
    d
}

fn locality(l: u8) -> Vec<u8> {
    [b"StartupLocality\0".as_slice(), &[l]].concat()
}

const SHA2: [HashAlg; 3] = [HashAlg::Sha256, HashAlg::Sha384, HashAlg::Sha512];

#[test]
fn legacy_log_replays_only_the_sha1_bank() {
    let log = Log::legacy()
        .event(0, EV_S_CRTM_VERSION, b"v1")
        .event(7, EV_SEPARATOR, &[0; 4])
        .parse()
        .unwrap();
    assert_eq!(
        (log.format, log.banks.clone()),
        (Format::Legacy, vec![HashAlg::Sha1])
    );
    let replayed = log.replay().unwrap();
    assert_eq!(
        replayed.keys().copied().collect::<Vec<_>>(),
        [HashAlg::Sha1]
    );
    let s = HashAlg::Sha1;
    assert_eq!(replayed[&s][&0], extend(s, &[0; 20], &h(s, b"v1")));
    assert_eq!(replayed[&s][&7], extend(s, &[0; 20], &h(s, &[0; 4])));
    assert_eq!(
        log.replay_bank(HashAlg::Sha256),
        Err(EventLogError::NoSuchBank(HashAlg::Sha256))
    );
}

#[test]
fn crypto_agile_replay_extends_every_bank() {
    let log = Log::agile(&SHA2)
        .event(
            4,
            EV_EFI_ACTION,
            b"Calling EFI Application from Boot Option",
        )
        .event(4, EV_SEPARATOR, &[0; 4])
        .parse()
        .unwrap();
    assert_eq!(
        (log.format, log.banks.clone()),
        (Format::CryptoAgile, SHA2.to_vec())
    );
    let replayed = log.replay().unwrap();
    for alg in SHA2 {
        let once = extend(
            alg,
            &vec![0; alg.size()],
            &h(alg, b"Calling EFI Application from Boot Option"),
        );
        assert_eq!(
            replayed[&alg][&4],
            extend(alg, &once, &h(alg, &[0; 4])),
            "{alg}"
        );
        assert_eq!(replayed[&alg].len(), 1);
    }
}

#[test]
fn startup_locality_3_starts_pcr0_at_3() {
    let s = HashAlg::Sha256;
    let log = Log::agile(&[s])
        .event(0, EV_NO_ACTION, &locality(3))
        .event(0, EV_S_CRTM_VERSION, b"v")
        .event(1, EV_SEPARATOR, &[0; 4])
        .parse()
        .unwrap();
    assert_eq!(log.startup_locality, Some(3));
    let mut init = vec![0; 32];
    init[31] = 3;
    let replayed = log.replay_bank(s).unwrap();
    assert_eq!(replayed[&0], extend(s, &init, &h(s, b"v")));
    assert_eq!(
        replayed[&1],
        extend(s, &[0; 32], &h(s, &[0; 4])),
        "only PCR 0 moves"
    );
}

#[test]
fn hcrtm_event_starts_pcr0_at_4_even_with_a_locality() {
    let s = HashAlg::Sha1;
    for prefix in [vec![], locality(3)] {
        let mut log = Log::agile(&[s]);
        if !prefix.is_empty() {
            log = log.event(0, EV_NO_ACTION, &prefix);
        }
        let log = log.event(0, EV_EFI_HCRTM_EVENT, b"HCRTM").parse().unwrap();
        let mut init = vec![0; 20];
        init[19] = 4;
        assert_eq!(
            log.replay_bank(s).unwrap()[&0],
            extend(s, &init, &h(s, b"HCRTM"))
        );
    }
}

#[test]
fn no_action_events_are_never_extended() {
    let s = HashAlg::Sha256;
    let plain = Log::agile(&[s])
        .event(0, EV_POST_CODE, b"x")
        .parse()
        .unwrap();
    // Non-zero digests and odd PCR fields must not matter either.
    let noisy = Log::agile(&[s])
        .raw(
            0,
            EV_NO_ACTION,
            &[(s.id(), vec![7; 32])],
            b"SP800-155 Event3",
        )
        .event(0, EV_POST_CODE, b"x")
        .raw(0xffff_ffff, EV_NO_ACTION, &[(s.id(), vec![9; 32])], b"")
        .parse()
        .unwrap();
    assert_eq!(noisy.replay().unwrap(), plain.replay().unwrap());
    let legacy = Log::legacy()
        .raw(3, EV_NO_ACTION, &[(4, vec![1; 20])], b"")
        .parse()
        .unwrap();
    assert_eq!(legacy.replay().unwrap()[&HashAlg::Sha1], BTreeMap::new());
}

#[test]
fn drtm_pcrs_start_at_all_ones() {
    let s = HashAlg::Sha256;
    let log = Log::agile(&[s])
        .event(17, EV_POST_CODE, b"x")
        .parse()
        .unwrap();
    assert_eq!(log.initial_value(s, 17), vec![0xff; 32]);
    assert_eq!(log.initial_value(s, 23), vec![0; 32]);
    assert_eq!(
        log.replay_bank(s).unwrap()[&17],
        extend(s, &[0xff; 32], &h(s, b"x"))
    );
}

#[test]
fn banks_missing_from_an_extended_event_are_dropped() {
    let (a, b) = (HashAlg::Sha1, HashAlg::Sha256);
    let log = Log::agile(&[a, b])
        .raw(4, EV_EFI_ACTION, &[(a.id(), h(a, b"x"))], b"x")
        .parse()
        .unwrap();
    assert_eq!(log.banks, [a]);
    assert_eq!(
        log.verify(b, &BTreeMap::new()),
        Err(EventLogError::NoSuchBank(b))
    );
}

#[test]
fn spec_id_vendor_info_is_kept() {
    let s = HashAlg::Sha256;
    let mut log = Log::legacy().event(0, EV_NO_ACTION, &spec_id(&[(s.id(), 32)], b"\xde\xad"));
    log.agile = true;
    log.algs = vec![s];
    let log = log.event(7, EV_SEPARATOR, &[0; 4]).parse().unwrap();
    match log.events[0].decode().unwrap() {
        EventData::SpecId(id) => {
            assert_eq!(
                (id.algorithms, id.vendor_info, id.spec_version),
                (vec![s], vec![0xde, 0xad], (2, 0))
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn verify_checks_quoted_pcrs_and_returns_their_events() {
    let s = HashAlg::Sha256;
    let log = Log::agile(&[s])
        .event(0, EV_NO_ACTION, &locality(3))
        .event(0, EV_S_CRTM_VERSION, b"v")
        .event(4, EV_EFI_ACTION, b"a")
        .event(7, EV_SEPARATOR, &[0; 4])
        .parse()
        .unwrap();
    let mut quoted = log.replay_bank(s).unwrap();
    quoted.remove(&7);
    quoted.insert(9, vec![0; 32]); // never extended: must hold its reset value
    let events = log.verify(s, &quoted).unwrap();
    let got: Vec<(usize, u32)> = events.iter().map(|e| (e.index, e.pcr)).collect();
    assert_eq!(got, [(2, 0), (3, 4)], "no EV_NO_ACTION, no PCR 7");

    let mut bad = quoted.clone();
    bad.insert(9, vec![1; 32]);
    bad.get_mut(&4).unwrap()[0] ^= 1;
    assert_eq!(
        log.verify(s, &bad),
        Err(EventLogError::PcrMismatch { bank: s, pcr: 4 })
    );
    bad.remove(&4);
    assert_eq!(
        log.verify(s, &bad),
        Err(EventLogError::PcrMismatch { bank: s, pcr: 9 })
    );
    let short = BTreeMap::from([(0, vec![0; 20])]);
    assert_eq!(
        log.verify(s, &short),
        Err(EventLogError::PcrMismatch { bank: s, pcr: 0 })
    );
    let out = BTreeMap::from([(24, vec![0; 32])]);
    assert_eq!(log.verify(s, &out), Err(EventLogError::PcrOutOfRange(24)));
    assert_eq!(
        log.verify(HashAlg::Sha1, &quoted),
        Err(EventLogError::NoSuchBank(HashAlg::Sha1))
    );
}

#[test]
fn image_load_events_are_parsed_by_length() {
    let dp = [
        4u8, 4, 12, 0, b'\\', 0, b'a', 0, 0, 0, 0, 0, 0x7f, 0xff, 4, 0,
    ];
    let mut wide = 0x1000u64.to_le_bytes().to_vec();
    for v in [0x2000u64, 0x3000, dp.len() as u64] {
        wide.extend(v.to_le_bytes());
    }
    let mut narrow = 0x1000u64.to_le_bytes().to_vec();
    for v in [0x2000u32, 0x3000, dp.len() as u32] {
        narrow.extend(v.to_le_bytes());
    }
    let padded = [wide.as_slice(), &dp, &[0; 8]].concat();
    for (data, what) in [
        ([wide.as_slice(), &dp].concat(), "64-bit"),
        ([narrow.as_slice(), &dp].concat(), "32-bit"),
        (padded, "padded"),
    ] {
        let log = Log::agile(&[HashAlg::Sha256]).event(4, EV_EFI_BOOT_SERVICES_APPLICATION, &data);
        match log.parse().unwrap().events[1].decode().unwrap() {
            EventData::ImageLoad(i) => {
                assert_eq!(
                    (i.location, i.length, i.link_time_address),
                    (0x1000, 0x2000, 0x3000),
                    "{what}"
                );
                assert_eq!(
                    (i.device_path, i.file_path().as_deref()),
                    (dp.as_slice(), Some("\\a")),
                    "{what}"
                );
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    let short = Log::agile(&[HashAlg::Sha256]).event(2, EV_EFI_BOOT_SERVICES_DRIVER, &[0; 19]);
    let err = short.parse().unwrap().events[1].decode().unwrap_err();
    assert!(
        matches!(err, EventLogError::BadEventData { index: 1, .. }),
        "{err:?}"
    );
}

#[test]
fn names_and_guids() {
    assert_eq!(
        event_type_name(EV_EFI_VARIABLE_AUTHORITY),
        Some("EV_EFI_VARIABLE_AUTHORITY")
    );
    assert_eq!(event_type_name(0x1234), None);
    assert_eq!(
        Guid::EFI_GLOBAL_VARIABLE.to_string(),
        "8be4df61-93ca-11d2-aa0d-00e098032b8c"
    );
    assert_eq!(
        Guid::SHIM_LOCK.to_string(),
        "605dab50-e046-4300-abb6-3dd810dd8b23"
    );
    for alg in [HashAlg::Sha1, HashAlg::Sha512, HashAlg::Sm3_256] {
        assert_eq!(HashAlg::from_id(alg.id()), Some(alg));
        assert_eq!(HashAlg::from_name(alg.name()), Some(alg));
    }
}

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

use super::*;
use crate::node::tpm::attest::ST_ATTEST_QUOTE;
use crate::node::tpm::public::{attr, KeyParams, PublicArea, Scheme, TpmtPublic};
use crate::node::tpm::wire::{alg, curve, HashAlg};

const SETS: [&str; 2] = ["swtpm-sample", "swtpm-replayed-rhel8"];

fn fixture(set: &str, name: &str) -> Vec<u8> {
    crate::testdata::read(&format!("fixtures/{set}/{name}"))
}

/// The quoted selection of the fixtures: sha256 PCRs 0-9 and 14.
fn selection() -> PcrSelection {
    PcrSelection::single(HashAlg::Sha256, &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14])
}

/// `pcrs_sha256.txt`: lines "SlotN <hex>" in ascending PCR order.
fn pcr_values(set: &str) -> Vec<Vec<u8>> {
    let text = String::from_utf8(fixture(set, "pcrs_sha256.txt")).expect("utf8");
    let lines: Vec<(u8, Vec<u8>)> = text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(slot, hex)| {
            let n = slot.trim_start_matches("Slot").parse().expect("slot");
            (n, hex::decode(hex.trim()).expect("hex"))
        })
        .collect();
    let order: Vec<u8> = selection().iter().map(|(_, i)| i).collect();
    assert_eq!(lines.iter().map(|l| l.0).collect::<Vec<_>>(), order);
    lines.into_iter().map(|l| l.1).collect()
}

struct Quote {
    ak: AkPublic,
    attest: Vec<u8>,
    sig: Vec<u8>,
    nonce: Vec<u8>,
    pcrs: Vec<Vec<u8>>,
}

fn load(set: &str) -> Quote {
    let ak = TpmtPublic::parse(&fixture(set, "ak_pub.tpmt_public")).expect("AK");
    Quote {
        ak: AkPublic::new(ak).expect("AK checks"),
        attest: fixture(set, "quote.tpms_attest"),
        sig: fixture(set, "quote.tpmt_signature"),
        nonce: fixture(set, "nonce.bin"),
        pcrs: pcr_values(set),
    }
}

impl Quote {
    fn verify(&self) -> Result<Attest, QuoteError> {
        verify_quote(
            &self.ak,
            &self.attest,
            &self.sig,
            &self.nonce,
            &selection(),
            &self.pcrs,
        )
    }
}

#[test]
fn fixture_quotes_verify() {
    for set in SETS {
        let q = load(set).verify().unwrap_or_else(|e| panic!("{set}: {e}"));
        assert!(q.clock_info.safe);
        assert_eq!(q.extra_data, fixture(set, "nonce.bin"));
    }
}

#[test]
fn flipped_attest_byte_fails_signature() {
    for set in SETS {
        let mut q = load(set);
        let last = q.attest.len() - 1;
        q.attest[last] ^= 0x01;
        assert_eq!(q.verify(), Err(SignatureError::Invalid.into()), "{set}");
        let mut q = load(set);
        q.sig[10] ^= 0x80;
        assert_eq!(q.verify(), Err(SignatureError::Invalid.into()), "{set}");
    }
}

#[test]
fn other_nonce_fails() {
    let mut q = load("swtpm-sample");
    q.nonce[31] ^= 1;
    assert_eq!(q.verify(), Err(QuoteError::Nonce));
    q.nonce = vec![0x5a; 31];
    assert_eq!(q.verify(), Err(QuoteError::Nonce));
    q.nonce = vec![0x5a; 8];
    assert_eq!(q.verify(), Err(QuoteError::NonceLength));
}

#[test]
fn wrong_pcr_value_fails_digest() {
    for set in SETS {
        let mut q = load(set);
        q.pcrs[7][0] ^= 1;
        assert_eq!(q.verify(), Err(QuoteError::PcrDigest), "{set}");
    }
    // Right values, wrong order (the sample's PCRs are all zero).
    let mut q = load("swtpm-replayed-rhel8");
    q.pcrs.swap(0, 10);
    assert_eq!(q.verify(), Err(QuoteError::PcrDigest));
    let mut q = load("swtpm-sample");
    q.pcrs.pop();
    assert!(matches!(q.verify(), Err(QuoteError::PcrCount { .. })));
    let mut q = load("swtpm-sample");
    q.pcrs[3].push(0);
    assert_eq!(q.verify(), Err(QuoteError::PcrLength { index: 3 }));
}

#[test]
fn other_selection_fails() {
    let q = load("swtpm-replayed-rhel8");
    let others = [
        PcrSelection::single(HashAlg::Sha256, &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
        PcrSelection::single(HashAlg::Sha1, &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14]),
        PcrSelection(vec![]),
    ];
    for other in others {
        let r = verify_quote(&q.ak, &q.attest, &q.sig, &q.nonce, &other, &q.pcrs);
        assert_eq!(r, Err(QuoteError::Selection));
    }
}

#[test]
fn quote_signed_by_another_ak_fails() {
    let sample = load("swtpm-sample");
    let rhel = load("swtpm-replayed-rhel8");
    let r = verify_quote(
        &rhel.ak,
        &sample.attest,
        &sample.sig,
        &sample.nonce,
        &selection(),
        &sample.pcrs,
    );
    assert_eq!(r, Err(SignatureError::Invalid.into()));
}

/// A software ECDSA P-256 "AK" that signs arbitrary TPMS_ATTEST bytes, to
/// prove checks that come after the signature.
struct SoftAk {
    key: EcdsaKeyPair,
    ak: AkPublic,
}

impl SoftAk {
    fn new() -> Self {
        let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("key");
        let point = key.public_key().as_ref();
        let area = PublicArea {
            name_alg: alg::SHA256,
            attributes: attr::FIXED_TPM
                | attr::FIXED_PARENT
                | attr::SENSITIVE_DATA_ORIGIN
                | attr::USER_WITH_AUTH
                | attr::RESTRICTED
                | attr::SIGN,
            auth_policy: vec![],
            symmetric: None,
            scheme: Some(Scheme {
                alg: alg::ECDSA,
                hash: alg::SHA256,
                count: 0,
            }),
            key: KeyParams::Ecc {
                curve: curve::NIST_P256,
                kdf: None,
                x: point[1..33].to_vec(),
                y: point[33..].to_vec(),
            },
        };
        let public = TpmtPublic::parse(&area.marshal().expect("marshal")).expect("parse");
        Self {
            key,
            ak: AkPublic::new(public).expect("AK checks"),
        }
    }

    fn sign(&self, attest: &[u8], hash: u16) -> Vec<u8> {
        let sig = self.key.sign(&SystemRandom::new(), attest).expect("sign");
        let (r, s) = sig.as_ref().split_at(32);
        let (r, s) = (r.to_vec(), s.to_vec());
        TpmtSignature::Ecdsa { hash, r, s }.marshal().expect("sig")
    }

    /// A quote over the fixture PCRs; `edit` may change the marshalled bytes.
    fn quote(&self, safe: bool, edit: impl FnOnce(&mut Vec<u8>)) -> Result<Attest, QuoteError> {
        let pcrs = pcr_values("swtpm-replayed-rhel8");
        let digest = HashAlg::Sha256.digest(&pcrs.concat());
        let attest = Attest {
            qualified_signer: self.ak.name().to_vec(),
            extra_data: vec![7; 32],
            clock_info: ClockInfo {
                clock: 1000,
                reset_count: 2,
                restart_count: 0,
                safe,
            },
            firmware_version: 0x2019_1023_0016_3636,
            pcr_selection: selection(),
            pcr_digest: digest,
        };
        let mut raw = attest.marshal().expect("marshal");
        edit(&mut raw);
        let sig = self.sign(&raw, alg::SHA256);
        verify_quote(&self.ak, &raw, &sig, &[7; 32], &selection(), &pcrs)
    }
}

#[test]
fn software_ecdsa_quote_verifies() {
    let ak = SoftAk::new();
    let q = ak.quote(true, |_| {}).expect("valid quote");
    assert_eq!(q.clock_info.reset_count, 2);
}

#[test]
fn unsafe_clock_fails() {
    assert_eq!(
        SoftAk::new().quote(false, |_| {}),
        Err(QuoteError::ClockNotSafe)
    );
}

#[test]
fn wrong_magic_or_type_fails() {
    let ak = SoftAk::new();
    assert_eq!(
        ak.quote(true, |raw| raw[3] = 0x48),
        Err(AttestError::BadMagic(0xff54_4348).into())
    );
    assert_eq!(
        ak.quote(true, |raw| raw[5] = 0x17),
        Err(AttestError::NotAQuote(0x8017).into())
    );
    assert_eq!(ST_ATTEST_QUOTE, 0x8018);
}

#[test]
fn signature_hash_or_scheme_other_than_the_aks_fails() {
    let ak = SoftAk::new();
    let raw = fixture("swtpm-sample", "quote.tpms_attest");
    let sig = ak.sign(&raw, alg::SHA384);
    let r = verify_quote(
        &ak.ak,
        &raw,
        &sig,
        &[0x5a; 32],
        &selection(),
        &[[0u8; 32]; 11],
    );
    assert!(matches!(
        r,
        Err(QuoteError::Signature(SignatureError::SchemeMismatch { .. }))
    ));
    // The RSA fixture signature against the ECDSA AK.
    let sig = fixture("swtpm-sample", "quote.tpmt_signature");
    let r = verify_quote(
        &ak.ak,
        &raw,
        &sig,
        &[0x5a; 32],
        &selection(),
        &[[0u8; 32]; 11],
    );
    assert!(matches!(
        r,
        Err(QuoteError::Signature(SignatureError::SchemeMismatch { .. }))
    ));
}

#[test]
fn clock_must_move_forward() {
    let base = ClockInfo {
        clock: 100,
        reset_count: 5,
        restart_count: 2,
        safe: true,
    };
    let with = |clock, reset_count, restart_count| ClockInfo {
        clock,
        reset_count,
        restart_count,
        safe: true,
    };
    assert_eq!(with(101, 5, 2).follows(&base), Ok(()));
    assert_eq!(with(1, 5, 3).follows(&base), Ok(()));
    assert_eq!(with(1, 6, 0).follows(&base), Ok(()));
    for bad in [
        with(100, 5, 2),
        with(99, 5, 2),
        with(200, 5, 1),
        with(200, 4, 9),
    ] {
        assert!(matches!(
            bad.follows(&base),
            Err(QuoteError::ClockRollback(_))
        ));
    }
}

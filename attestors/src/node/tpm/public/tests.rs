use super::*;
use crate::node::tpm::wire::{alg, curve};

const SETS: [&str; 2] = ["swtpm-sample", "swtpm-replayed-rhel8"];

fn fixture(set: &str, name: &str) -> Vec<u8> {
    crate::testdata::read(&format!("fixtures/{set}/{name}"))
}

fn ak(set: &str) -> TpmtPublic {
    TpmtPublic::parse(&fixture(set, "ak_pub.tpmt_public")).expect("AK parses")
}

fn ek(set: &str) -> TpmtPublic {
    TpmtPublic::parse(&fixture(set, "ek_pub.tpmt_public")).expect("EK parses")
}

/// Re-marshals the AK fixture after `mutate` and runs the AK checks.
fn mutated_ak(mutate: impl FnOnce(&mut PublicArea)) -> Result<AkPublic, PublicError> {
    let mut area = ak("swtpm-sample").area().clone();
    mutate(&mut area);
    AkPublic::new(TpmtPublic::parse(&area.marshal().expect("marshal")).expect("parse"))
}

#[test]
fn ek_fixtures_are_the_l1_rsa2048_template() {
    for set in SETS {
        let ek = ek(set);
        assert_eq!(ek.ek_template(), Ok(EkTemplate::L1Rsa2048), "{set}");
        let t = EkTemplate::L1Rsa2048;
        assert_eq!(t.name_alg(), HashAlg::Sha256);
        assert_eq!(
            t.symmetric(),
            SymDef {
                alg: alg::AES,
                key_bits: 128,
                mode: alg::CFB
            }
        );
        assert_eq!(ek.area().attributes, 0x0003_00b2);
        // An EK can never pass as an AK.
        assert_eq!(
            AkPublic::new(ek).map(|_| ()),
            Err(PublicError::AkCheck(AkCheck::Sign))
        );
    }
}

#[test]
fn ek_template_recognition_rejects_changed_fields() {
    let base = ek("swtpm-sample").area().clone();
    let changes: [fn(&mut PublicArea); 5] = [
        |a| a.attributes |= attr::USER_WITH_AUTH,
        |a| a.auth_policy[0] ^= 1,
        |a| a.symmetric = None,
        |a| a.name_alg = alg::SHA384,
        |a| {
            if let KeyParams::Rsa { exponent, .. } = &mut a.key {
                *exponent = 3;
            }
        },
    ];
    for (i, change) in changes.iter().enumerate() {
        let mut area = base.clone();
        change(&mut area);
        let p = TpmtPublic::parse(&area.marshal().expect("marshal")).expect("parse");
        assert_eq!(
            p.ek_template(),
            Err(PublicError::NotEkTemplate),
            "change {i}"
        );
    }
    assert_eq!(
        ak("swtpm-sample").ek_template(),
        Err(PublicError::NotEkTemplate)
    );
}

#[test]
fn ak_fixtures_pass_checks_and_name_matches() {
    for set in SETS {
        let ak = AkPublic::new(ak(set)).expect("AK checks");
        assert_eq!(ak.name(), fixture(set, "ak_name.bin").as_slice(), "{set}");
        assert_eq!(ak.public().name().as_deref(), Ok(ak.name()));
        assert_eq!(ak.scheme(), (alg::RSASSA, HashAlg::Sha256));
        assert_eq!(ak.public().area().attributes, 0x0005_0072);
    }
}

#[test]
fn ek_public_key_matches_certificate() {
    for set in SETS {
        let der = fixture(set, "ek_cert_rsa2048.der");
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("cert");
        let spki = cert.public_key();
        let ek = ek(set);
        assert_eq!(ek.spki_der().expect("spki"), spki.raw, "{set}");
        let Ok(x509_parser::public_key::PublicKey::RSA(rsa)) = spki.parsed() else {
            panic!("RSA cert key expected");
        };
        let KeyParams::Rsa { modulus, .. } = &ek.area().key else {
            panic!("RSA EK expected");
        };
        assert_eq!(strip_zeros(rsa.modulus), modulus.as_slice());
        // A different modulus is a different SPKI.
        let mut area = ek.area().clone();
        if let KeyParams::Rsa { modulus, .. } = &mut area.key {
            modulus[100] ^= 1;
        }
        let other = TpmtPublic::parse(&area.marshal().expect("m")).expect("p");
        assert_ne!(other.spki_der().expect("spki"), spki.raw);
    }
}

#[test]
fn parse_is_exact_and_round_trips() {
    for set in SETS {
        for name in ["ek_pub.tpmt_public", "ak_pub.tpmt_public"] {
            let raw = fixture(set, name);
            let p = TpmtPublic::parse(&raw).expect("parse");
            assert_eq!(p.raw(), raw.as_slice());
            assert_eq!(p.area().marshal().expect("marshal"), raw);
            for n in 0..raw.len() {
                assert!(TpmtPublic::parse(&raw[..n]).is_err(), "{name} prefix {n}");
            }
            let mut long = raw.clone();
            long.push(0);
            assert!(matches!(
                TpmtPublic::parse(&long),
                Err(PublicError::Wire(WireError::TrailingBytes { .. }))
            ));
            let mut tpm2b = (raw.len() as u16).to_be_bytes().to_vec();
            tpm2b.extend_from_slice(&raw);
            assert_eq!(TpmtPublic::parse_tpm2b(&tpm2b), Ok(p));
            tpm2b[1] ^= 1;
            assert!(TpmtPublic::parse_tpm2b(&tpm2b).is_err());
        }
    }
}

#[test]
fn parse_rejects_unsupported_and_oversized() {
    let mut raw = fixture("swtpm-sample", "ak_pub.tpmt_public");
    raw[1] = 0x08; // TPM_ALG_KEYEDHASH
    assert_eq!(
        TpmtPublic::parse(&raw),
        Err(PublicError::UnsupportedType(alg::KEYEDHASH))
    );
    assert_eq!(
        TpmtPublic::parse(&[0; MAX_PUBLIC + 1]),
        Err(PublicError::TooLarge)
    );
    // authPolicy claiming 65 bytes (more than any digest).
    let bad = [0, 1, 0, 0x0b, 0, 0, 0, 0, 0, 65];
    assert!(matches!(
        TpmtPublic::parse(&bad),
        Err(PublicError::Wire(WireError::TooLarge { .. }))
    ));
}

#[test]
fn ak_restricted_cleared_is_rejected() {
    let err = mutated_ak(|a| a.attributes &= !attr::RESTRICTED);
    assert_eq!(err, Err(PublicError::AkCheck(AkCheck::Restricted)));
}

#[test]
fn ak_decrypt_set_is_rejected() {
    let err = mutated_ak(|a| a.attributes |= attr::DECRYPT);
    assert_eq!(err, Err(PublicError::AkCheck(AkCheck::DecryptClear)));
}

#[test]
fn ak_sha1_name_alg_is_rejected() {
    let err = mutated_ak(|a| a.name_alg = alg::SHA1);
    assert_eq!(err, Err(PublicError::AkCheck(AkCheck::NameAlgSha256)));
}

#[test]
fn ak_other_attribute_and_algorithm_checks() {
    type Mutation = fn(&mut PublicArea);
    let cases: [(Mutation, AkCheck); 7] = [
        (|a| a.attributes &= !attr::SIGN, AkCheck::Sign),
        (|a| a.attributes &= !attr::FIXED_TPM, AkCheck::FixedTpm),
        (
            |a| a.attributes &= !attr::FIXED_PARENT,
            AkCheck::FixedParent,
        ),
        (
            |a| a.attributes &= !attr::SENSITIVE_DATA_ORIGIN,
            AkCheck::SensitiveDataOrigin,
        ),
        (
            |a| {
                if let Some(s) = &mut a.scheme {
                    s.hash = alg::SHA1;
                }
            },
            AkCheck::SigningScheme,
        ),
        (|a| a.scheme = None, AkCheck::SigningScheme),
        (
            |a| {
                if let KeyParams::Rsa {
                    key_bits, modulus, ..
                } = &mut a.key
                {
                    *key_bits = 1024;
                    modulus.truncate(128);
                }
            },
            AkCheck::RsaKeyBits,
        ),
    ];
    for (mutate, check) in cases {
        assert_eq!(mutated_ak(mutate), Err(PublicError::AkCheck(check)));
    }
}

#[test]
fn ecc_ak_checks_curve_and_scheme() {
    let area = PublicArea {
        name_alg: alg::SHA256,
        attributes: 0x0005_0072,
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
            x: vec![1; 32],
            y: vec![2; 32],
        },
    };
    let check = |a: &PublicArea| {
        AkPublic::new(TpmtPublic::parse(&a.marshal().expect("m")).expect("p")).map(|k| k.scheme())
    };
    assert_eq!(check(&area), Ok((alg::ECDSA, HashAlg::Sha256)));
    let mut p521 = area.clone();
    if let KeyParams::Ecc { curve, .. } = &mut p521.key {
        *curve = 0x0005;
    }
    assert_eq!(check(&p521), Err(PublicError::AkCheck(AkCheck::EccCurve)));
    let mut ecdh = area.clone();
    ecdh.scheme = Some(Scheme {
        alg: alg::ECDH,
        hash: alg::SHA256,
        count: 0,
    });
    assert_eq!(
        check(&ecdh),
        Err(PublicError::AkCheck(AkCheck::SigningScheme))
    );
    for (curve_id, n, oid) in [
        (curve::NIST_P256, 32, "1.2.840.10045.3.1.7"),
        (curve::NIST_P384, 48, "1.3.132.0.34"),
    ] {
        let mut a = area.clone();
        a.key = KeyParams::Ecc {
            curve: curve_id,
            kdf: None,
            x: vec![1; n],
            y: vec![2; n - 1],
        };
        let spki = TpmtPublic::parse(&a.marshal().expect("m"))
            .expect("p")
            .spki_der()
            .expect("spki");
        use x509_parser::prelude::FromDer;
        let (rest, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&spki).expect("der");
        assert!(rest.is_empty());
        let params = info.algorithm.parameters.as_ref().expect("curve");
        assert_eq!(params.as_oid().expect("oid").to_id_string(), oid);
        // Uncompressed point with y left-padded to the coordinate size.
        let point = &info.subject_public_key.data;
        assert_eq!(point.len(), 1 + 2 * n);
        assert_eq!(
            (point[0], point[1], point[n + 1], point[n + 2]),
            (4, 1, 0, 2)
        );
    }
}

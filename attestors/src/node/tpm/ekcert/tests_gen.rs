//! Tests on certificates generated with rcgen (aws-lc-rs).

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
};
use x509_parser::prelude::FromDer;

use super::tests::swtpm_ek;
use super::*;

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    der: Vec<u8>,
}

fn named(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.use_authority_key_identifier_extension = true;
    params
}

/// A CA named `cn`, self-signed or issued by `parent`.
fn ca(cn: &str, parent: Option<&Ca>, edit: impl FnOnce(&mut CertificateParams)) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = named(cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    edit(&mut params);
    let cert = match parent {
        Some(p) => params.signed_by(&key, &Issuer::from_params(&p.params, &p.key)),
        None => params.self_signed(&key),
    };
    let der = cert.unwrap().der().to_vec();
    Ca { params, key, der }
}

/// The TCG SAN: critical, a single directoryName with the TPM attributes.
fn tpm_san(manufacturer: &str) -> CustomExtension {
    let attr = |last: u8, value: &str| {
        let oid = der_tlv(0x06, &[0x67, 0x81, 0x05, 0x02, last]);
        der_tlv(
            0x31,
            &der_tlv(0x30, &[oid, der_tlv(0x0c, value.as_bytes())].concat()),
        )
    };
    let name = [
        attr(1, manufacturer),
        attr(2, "SLB9670"),
        attr(3, "id:000d0003"),
    ]
    .concat();
    let san = der_tlv(0x30, &der_tlv(0xa4, &der_tlv(0x30, &name)));
    let mut ext = CustomExtension::from_oid_content(&[2, 5, 29, 17], san);
    ext.set_criticality(true);
    ext
}

/// TCG-profile EK parameters for an ECC key (empty subject, critical SAN).
fn ek_params() -> CertificateParams {
    let mut params = named("x");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::KeyAgreement];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::Other(vec![2, 23, 133, 8, 1])];
    params.custom_extensions = vec![tpm_san("id:49465800")];
    params
}

fn issue(params: &CertificateParams, key: &impl PublicKeyData, by: &Ca) -> Vec<u8> {
    let issuer = Issuer::from_params(&by.params, &by.key);
    params.signed_by(key, &issuer).unwrap().der().to_vec()
}

fn new_ek(by: &Ca, edit: impl FnOnce(&mut CertificateParams)) -> Vec<u8> {
    let mut params = ek_params();
    edit(&mut params);
    issue(&params, &KeyPair::generate().unwrap(), by)
}

fn store(roots: &[&Ca], intermediates: &[&Ca]) -> EkCaStore {
    let ders = |cas: &[&Ca]| cas.iter().map(|c| c.der.clone()).collect();
    EkCaStore::from_certs(ders(roots), ders(intermediates)).unwrap()
}

fn expect(result: Result<VerifiedEk, EkCertError>, pred: fn(&EkCertError) -> bool) {
    match result {
        Err(ref e) if pred(e) => {}
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn ekcert_expired_intermediate_still_verifies() {
    let root = ca("Gen Root", None, |_| {});
    let ica = ca("Gen ICA", Some(&root), |p| {
        p.not_before = rcgen::date_time_ymd(2015, 1, 1);
        p.not_after = rcgen::date_time_ymd(2020, 1, 1);
    });
    let ek = verify(&new_ek(&ica, |_| {}), &store(&[&root], &[&ica])).unwrap();
    assert!(ek.chain_verified);
    assert_eq!(ek.manufacturer.as_deref(), Some("id:49465800"));
    assert_eq!(ek.manufacturer_id(), Some(0x4946_5800)); // "IFX\0"
    assert_eq!(ek.model.as_deref(), Some("SLB9670"));
    assert_eq!(ek.version.as_deref(), Some("id:000d0003"));
    assert_eq!(ek.issuer, "CN=Gen ICA");
}

#[test]
fn ekcert_leaf_not_after_is_enforced_not_before_is_not() {
    let root = ca("Gen Root", None, |_| {});
    let trust = store(&[&root], &[]);
    let expired = new_ek(&root, |p| p.not_after = rcgen::date_time_ymd(2022, 1, 1));
    expect(verify(&expired, &trust), |e| {
        matches!(e, EkCertError::Expired(_))
    });
    assert!(verify_at(&expired, &trust, None).unwrap().chain_verified);
    let future = new_ek(&root, |p| p.not_before = rcgen::date_time_ymd(2200, 1, 1));
    assert!(verify(&future, &trust).is_ok());
}

#[test]
fn ekcert_look_alike_ca_is_rejected() {
    let real = ca("TPM EK CA", None, |_| {});
    let fake = ca("TPM EK CA", None, |_| {});
    let trust = store(&[&real], &[]);
    assert!(verify(&new_ek(&real, |_| {}), &trust).is_ok());
    // With an AKI the look-alike's key id matches no stored SKI...
    let forged = new_ek(&fake, |_| {});
    expect(verify(&forged, &trust), |e| {
        matches!(e, EkCertError::UnknownIssuer(_))
    });
    // ...without one the signature check rejects it.
    let forged = new_ek(&fake, |p| p.use_authority_key_identifier_extension = false);
    expect(verify(&forged, &trust), |e| {
        matches!(e, EkCertError::BadSignature(_))
    });
}

#[test]
fn ekcert_profile_violations_are_not_ek() {
    let root = ca("Gen Root", None, |_| {});
    let trust = store(&[&root], &[]);
    let not_ek = |e: &EkCertError| matches!(e, EkCertError::NotEk(_));
    assert!(verify(&new_ek(&root, |_| {}), &trust).is_ok());
    // No EKU/KU at all is fine (both are "if present").
    let bare = new_ek(&root, |p| {
        p.extended_key_usages.clear();
        p.key_usages.clear();
    });
    assert!(verify(&bare, &trust).is_ok());
    let tls = new_ek(&root, |p| {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth]
    });
    expect(verify(&tls, &trust), not_ek);
    let signing = new_ek(&root, |p| {
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature]
    });
    expect(verify(&signing, &trust), not_ek);
    let ca_ek = new_ek(&root, |p| {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained)
    });
    expect(verify(&ca_ek, &trust), not_ek);
    let unknown = new_ek(&root, |p| {
        let mut ext = CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 99999, 1], vec![5, 0]);
        ext.set_criticality(true);
        p.custom_extensions.push(ext);
    });
    expect(verify(&unknown, &trust), not_ek);
}

#[test]
fn ekcert_non_ca_cannot_issue() {
    let root = ca("Gen Root", None, |_| {});
    // basicConstraints cA=FALSE.
    let leafish = ca("Not a CA", Some(&root), |p| p.is_ca = IsCa::ExplicitNoCa);
    let ek = new_ek(&leafish, |_| {});
    expect(
        verify(&ek, &store(&[&root], &[&leafish])),
        |e| matches!(e, EkCertError::UnknownIssuer(m) if m.contains("not a CA")),
    );
    expect(verify(&ek, &store(&[&leafish], &[])), |e| {
        matches!(e, EkCertError::UnknownIssuer(_))
    });
    // keyUsage without keyCertSign.
    let no_sign = ca("No CertSign", Some(&root), |p| {
        p.key_usages = vec![KeyUsagePurpose::CrlSign]
    });
    expect(
        verify(&new_ek(&no_sign, |_| {}), &store(&[&root], &[&no_sign])),
        |e| matches!(e, EkCertError::UnknownIssuer(m) if m.contains("keyCertSign")),
    );
    // pathLenConstraint 0 on the root forbids an intermediate below it.
    let short = ca("Short Root", None, |p| {
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0))
    });
    let ica = ca("Under Short", Some(&short), |_| {});
    expect(
        verify(&new_ek(&ica, |_| {}), &store(&[&short], &[&ica])),
        |e| matches!(e, EkCertError::UnknownIssuer(m) if m.contains("pathLenConstraint")),
    );
    assert!(verify(&new_ek(&short, |_| {}), &store(&[&short], &[])).is_ok());
}

/// rsaesOaep SPKI with the TCG 1.2 "TCPA" label (golang/go#30416 form).
fn oaep_spki(rsa_public_key: &[u8]) -> Vec<u8> {
    let pkcs1 = |last: u8| {
        der_tlv(
            0x06,
            &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, last],
        )
    };
    let psource = der_tlv(0x30, &[pkcs1(9), der_tlv(0x04, b"TCPA")].concat());
    let alg = der_tlv(
        0x30,
        &[pkcs1(7), der_tlv(0x30, &der_tlv(0xa2, &psource))].concat(),
    );
    let bits = der_tlv(0x03, &[&[0u8][..], rsa_public_key].concat());
    der_tlv(0x30, &[alg, bits].concat())
}

/// Content of a DER TLV (definite length).
fn content(tlv: &[u8]) -> &[u8] {
    let header = if tlv[1] < 0x80 {
        2
    } else {
        2 + usize::from(tlv[1] & 0x7f)
    };
    &tlv[header..]
}

/// `der` with its SPKI replaced by `spki`, re-signed by `ca` (rcgen always
/// writes rsaEncryption, so the OAEP certificate is built by hand).
fn with_spki(der: &[u8], spki: &[u8], ca: &Ca) -> Vec<u8> {
    let cert = verify::parse_cert(der).unwrap();
    let old_spki = cert.public_key().raw;
    let tbs = cert.tbs_certificate.as_ref();
    let at = tbs
        .windows(old_spki.len())
        .position(|w| w == old_spki)
        .unwrap();
    let body = content(tbs);
    let offset = tbs.len() - body.len();
    let new_body = [
        &body[..at - offset],
        spki,
        &body[at - offset + old_spki.len()..],
    ]
    .concat();
    let new_tbs = der_tlv(0x30, &new_body);
    let outer = content(der);
    let alg_len = der_sequence_len(&outer[tbs.len()..]).unwrap();
    let sig_alg = &outer[tbs.len()..tbs.len() + alg_len];
    let signature = rcgen::SigningKey::sign(&ca.key, &new_tbs).unwrap();
    let bits = der_tlv(0x03, &[&[0u8][..], &signature].concat());
    der_tlv(0x30, &[new_tbs, sig_alg.to_vec(), bits].concat())
}

#[test]
fn ekcert_rsaes_oaep_spki_maps_to_rsa_encryption() {
    let swtpm_der = swtpm_ek();
    let swtpm = verify::parse_cert(&swtpm_der).unwrap();
    let rsa_spki = swtpm.public_key().raw.to_vec();
    let rsa_key = swtpm.public_key().subject_public_key.data.to_vec();
    // Hand-built SPKI.
    let oaep = oaep_spki(&rsa_key);
    let (_, parsed) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&oaep).unwrap();
    assert_eq!(normalized_spki(&parsed).unwrap(), rsa_spki);
    assert_eq!(normalized_spki(swtpm.public_key()).unwrap(), rsa_spki);
    // A whole RSA EK certificate with that SPKI, signed over the OAEP SPKI.
    let root = ca("Gen Root", None, |_| {});
    let trust = store(&[&root], &[]);
    let mut params = ek_params();
    params.key_usages = vec![KeyUsagePurpose::KeyEncipherment];
    let template = issue(&params, &KeyPair::generate().unwrap(), &root);
    let der = with_spki(&template, &oaep, &root);
    assert_eq!(
        verify::parse_cert(&der).unwrap().public_key().raw,
        &oaep[..]
    );
    assert_eq!(public_key_spki(&der).unwrap(), rsa_spki);
    let ek = verify(&der, &trust).unwrap();
    assert_eq!(ek.spki_der, rsa_spki);
    // The signature covers the SPKI: the same TBS with rsaEncryption fails.
    let mut forged = der.clone();
    let at = forged.windows(oaep.len()).position(|w| w == oaep).unwrap();
    forged[at + 16] = 0x01; // rsaesOaep (...01 01 07) -> rsaEncryption-like OID
    expect(verify(&forged, &trust), |e| {
        matches!(e, EkCertError::BadSignature(_))
    });
    // An RSA EK must allow keyEncipherment.
    let agreement = issue(&ek_params(), &KeyPair::generate().unwrap(), &root);
    let der = with_spki(&agreement, &oaep, &root);
    expect(verify(&der, &trust), |e| matches!(e, EkCertError::NotEk(_)));
}

#[test]
fn ekcert_chain_depth_is_bounded() {
    let root = ca("Deep Root", None, |_| {});
    let mut chain = vec![root];
    for i in 0..MAX_CHAIN_DEPTH {
        let next = ca(&format!("Deep ICA {i}"), chain.last(), |_| {});
        chain.push(next);
    }
    let ek = new_ek(chain.last().unwrap(), |_| {});
    let intermediates: Vec<&Ca> = chain.iter().skip(1).collect();
    // MAX_CHAIN_DEPTH intermediates + root = one certificate too many.
    let err = verify(&ek, &store(&[&chain[0]], &intermediates)).unwrap_err();
    assert!(matches!(err, EkCertError::ChainTooLong), "{err}");
    // Trusting the second-from-top intermediate shortens the path enough.
    assert!(verify(&ek, &store(&[&chain[1]], &intermediates)).is_ok());
}

#[test]
fn ekcert_issuer_loop_terminates() {
    // A and B certify each other; no anchor is reachable.
    let seed_a = ca("Loop A", None, |_| {});
    let seed_b = ca("Loop B", None, |_| {});
    let a_by_b = issue(&seed_a.params, &seed_a.key, &seed_b);
    let b_by_a = issue(&seed_b.params, &seed_b.key, &seed_a);
    let other = ca("Unrelated Root", None, |_| {});
    let trust = EkCaStore::from_certs(vec![other.der.clone()], vec![a_by_b, b_by_a]).unwrap();
    let err = verify(&new_ek(&seed_a, |_| {}), &trust).unwrap_err();
    assert!(matches!(err, EkCertError::UnknownIssuer(_)), "{err}");
}

#[test]
fn ekcert_load_dir_rejects_bad_or_oversized_files() {
    let store_err =
        |dir: &std::path::Path| matches!(EkCaStore::load_dir(dir), Err(EkCertError::Store { .. }));
    let dir = tempfile::tempdir().unwrap();
    assert!(store_err(dir.path()), "empty directory");
    std::fs::write(dir.path().join("readme.txt"), b"skipped").unwrap();
    assert!(store_err(dir.path()), "no certificate file");
    let root = ca("Gen Root", None, |_| {});
    std::fs::write(dir.path().join("root.DER"), &root.der).unwrap();
    assert_eq!(EkCaStore::load_dir(dir.path()).unwrap().len(), 1);
    std::fs::write(
        dir.path().join("junk.pem"),
        b"-----BEGIN KEY-----\nAAAA\n-----END KEY-----\n",
    )
    .unwrap();
    assert!(store_err(dir.path()), "PEM file without certificate");
    std::fs::remove_file(dir.path().join("junk.pem")).unwrap();
    std::fs::write(dir.path().join("junk.crt"), b"\x30\x03\x02\x01\x00").unwrap();
    assert!(store_err(dir.path()), "DER that is not a certificate");
    std::fs::remove_file(dir.path().join("junk.crt")).unwrap();
    let big = vec![b'#'; usize::try_from(store::MAX_FILE_BYTES).unwrap() + 1];
    std::fs::write(dir.path().join("big.cer"), big).unwrap();
    assert!(store_err(dir.path()), "oversized file");
    assert!(store_err(&dir.path().join("missing")), "missing directory");
}

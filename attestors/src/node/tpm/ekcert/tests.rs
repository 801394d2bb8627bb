//! Tests on the real vendor CAs and the swtpm EK certificate of the
//! repository's test data.

use std::path::Path;

use super::store::certs_in_file;
use super::*;

const KEYLIME: &str = "ek-roots/keylime-tpm_cert_store";
const TPM_CA: &str = "ek-roots/tpm-ca-certificates";
const SWTPM_EK: &str = "fixtures/swtpm-sample/ek_cert_rsa2048.der";
const SWTPM_INTERMEDIATE: &str = "fixtures/swtpm-sample/issuercert.pem";
const SWTPM_ROOT: &str = "fixtures/swtpm-sample/swtpm-localca-rootca-cert.pem";

use crate::testdata::{path as data, read};

/// The single certificate of a test data file.
pub(super) fn cert(rel: &str) -> Vec<u8> {
    let mut certs = certs_in_file(&read(rel)).unwrap();
    assert_eq!(certs.len(), 1, "{rel}");
    certs.remove(0)
}

pub(super) fn swtpm_ek() -> Vec<u8> {
    read(SWTPM_EK)
}

fn swtpm_store() -> EkCaStore {
    EkCaStore::from_certs(vec![cert(SWTPM_ROOT)], vec![cert(SWTPM_INTERMEDIATE)]).unwrap()
}

/// Every certificate of every certificate file of a test data directory.
fn dir_certs(rel: &str) -> Vec<Vec<u8>> {
    let mut names: Vec<_> = std::fs::read_dir(data(rel))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e != "yaml"))
        .collect();
    names.sort();
    names
        .iter()
        .flat_map(|p| certs_in_file(&std::fs::read(p).unwrap()).unwrap())
        .collect()
}

fn vendor_store() -> EkCaStore {
    let mut all = dir_certs(KEYLIME);
    all.extend(dir_certs(TPM_CA));
    EkCaStore::from_certs(all, Vec::new()).unwrap()
}

#[test]
fn ekcert_loads_keylime_store() {
    let store = EkCaStore::load_dir(&data(KEYLIME)).unwrap();
    // 51 files, one certificate each (Nationz/Alibaba behind an
    // `openssl x509 -text` preamble); IFX1..8 duplicate IFX_RSA_0xI.
    assert_eq!(dir_certs(KEYLIME).len(), 51);
    assert_eq!(store.len(), 45);
    assert_eq!(store.anchors(), 45);
    for rel in ["Nationz_TPM_EK.pem", "Alibaba_Cloud_vTPM_EK.pem"] {
        let der = cert(&format!("{KEYLIME}/{rel}"));
        let parsed = verify::parse_cert(&der).unwrap();
        assert!(parsed.is_ca(), "{rel}");
    }
}

#[test]
fn ekcert_loads_tpm_ca_certificates() {
    let store = EkCaStore::load_dir(&data(TPM_CA)).unwrap();
    let bundle = |name: &str| certs_in_file(&read(&format!("{TPM_CA}/{name}"))).unwrap();
    assert_eq!(bundle("MIRROR.tpm-ca-certificates.pem").len(), 26);
    assert_eq!(
        bundle("MIRROR.tpm-intermediate-ca-certificates.pem").len(),
        143
    );
    // 26 + 143 + 9 single files (PEM and DER), 3 of which are in a bundle;
    // the .yaml files are skipped.
    assert_eq!(dir_certs(TPM_CA).len(), 178);
    assert_eq!(store.len(), 175);
}

#[test]
fn ekcert_swtpm_ek_verifies_against_local_ca() {
    let ek = verify(&swtpm_ek(), &swtpm_store()).unwrap();
    assert!(ek.chain_verified);
    assert_eq!(ek.manufacturer.as_deref(), Some("id:00001014"));
    assert_eq!(ek.model.as_deref(), Some("swtpm"));
    assert_eq!(ek.version.as_deref(), Some("id:20191023"));
    assert_eq!(ek.manufacturer_id(), Some(0x1014));
    assert_eq!(ek.issuer, "CN=swtpm-localca");
    let parsed = verify::parse_cert(&read(SWTPM_EK))
        .unwrap()
        .public_key()
        .raw
        .to_vec();
    assert_eq!(ek.spki_der, parsed);
    assert_eq!(public_key_spki(&swtpm_ek()).unwrap(), parsed);
    // TPM.md item 4: the certified key is the EK of the TPM public area
    // (TPMT_PUBLIC ends with the TPM2B modulus).
    let public = read("fixtures/swtpm-sample/ek_pub.tpmt_public");
    let modulus = &public[public.len() - 256..];
    assert!(ek.spki_der.windows(256).any(|w| w == modulus));
    assert_eq!(public[public.len() - 258..public.len() - 256], [0x01, 0x00]);
}

#[test]
fn ekcert_swtpm_ek_is_unknown_to_vendor_store() {
    let err = verify(&swtpm_ek(), &vendor_store()).unwrap_err();
    assert!(matches!(err, EkCertError::UnknownIssuer(_)), "{err}");
    let err = verify(&swtpm_ek(), &EkCaStore::load_dir(&data(KEYLIME)).unwrap()).unwrap_err();
    assert!(matches!(err, EkCertError::UnknownIssuer(_)), "{err}");
}

#[test]
fn ekcert_root_only_store_needs_the_intermediate() {
    let root_only = EkCaStore::from_certs(vec![cert(SWTPM_ROOT)], Vec::new()).unwrap();
    let err = verify(&swtpm_ek(), &root_only).unwrap_err();
    assert!(
        matches!(err, EkCertError::UnknownIssuer(ref m) if m == "CN=swtpm-localca"),
        "{err}"
    );
    // An intermediate alone is not a trust anchor...
    let no_root = EkCaStore::from_certs(Vec::new(), vec![cert(SWTPM_INTERMEDIATE)]).unwrap();
    let err = verify(&swtpm_ek(), &no_root).unwrap_err();
    assert!(matches!(err, EkCertError::UnknownIssuer(ref m) if m == "CN=swtpm-localca-rootca"));
    // ...unless the operator trusts it directly.
    let direct = EkCaStore::from_certs(vec![cert(SWTPM_INTERMEDIATE)], Vec::new()).unwrap();
    assert!(verify(&swtpm_ek(), &direct).unwrap().chain_verified);
    assert!(verify(&swtpm_ek(), &swtpm_store()).is_ok());
}

#[test]
fn ekcert_load_dir_trusts_every_ca_in_it() {
    let copy = |dir: &Path, rel: &str| {
        let name = Path::new(rel).file_name().unwrap();
        std::fs::write(dir.join(name), read(rel)).unwrap();
    };
    // Root alone: the intermediate is missing.
    let root_dir = tempfile::tempdir().unwrap();
    copy(root_dir.path(), SWTPM_ROOT);
    let store = EkCaStore::load_dir(root_dir.path()).unwrap();
    assert!(matches!(
        verify(&swtpm_ek(), &store),
        Err(EkCertError::UnknownIssuer(_))
    ));
    // Non-self-signed intermediate alone: trusted directly.
    let ica_dir = tempfile::tempdir().unwrap();
    copy(ica_dir.path(), SWTPM_INTERMEDIATE);
    let store = EkCaStore::load_dir(ica_dir.path()).unwrap();
    assert_eq!((store.len(), store.anchors()), (1, 1));
    assert!(verify(&swtpm_ek(), &store).is_ok());
    // Both, plus files that are not read.
    copy(root_dir.path(), SWTPM_INTERMEDIATE);
    std::fs::write(root_dir.path().join("notes.yaml"), b"not a cert").unwrap();
    std::fs::write(root_dir.path().join(".hidden.pem"), b"not a cert").unwrap();
    let store = EkCaStore::load_dir(root_dir.path()).unwrap();
    assert_eq!(store.len(), 2);
    assert!(verify(&swtpm_ek(), &store).is_ok());
}

#[test]
fn ekcert_tampered_signature_is_rejected() {
    let mut der = swtpm_ek();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let err = verify(&der, &swtpm_store()).unwrap_err();
    assert!(matches!(err, EkCertError::BadSignature(_)), "{err}");
}

#[test]
fn ekcert_tampered_tbs_is_rejected() {
    let mut der = swtpm_ek();
    // First modulus bytes (a5 ce c1 97) inside the TBS.
    let at = der
        .windows(4)
        .position(|w| w == [0xa5, 0xce, 0xc1, 0x97])
        .unwrap();
    der[at + 2] ^= 0x01;
    let err = verify(&der, &swtpm_store()).unwrap_err();
    assert!(matches!(err, EkCertError::BadSignature(_)), "{err}");
    // A change in the issuer name leaves no candidate at all.
    let mut der = swtpm_ek();
    let at = der.windows(13).position(|w| w == b"swtpm-localca").unwrap();
    der[at] = b'x';
    let err = verify(&der, &swtpm_store()).unwrap_err();
    assert!(matches!(err, EkCertError::UnknownIssuer(_)), "{err}");
}

#[test]
fn ekcert_nv_header_and_padding_are_stripped() {
    let der = swtpm_ek();
    let len = u16::try_from(der.len()).unwrap().to_be_bytes();
    let mut nv = vec![0x10, 0x01, 0x00, len[0], len[1]];
    nv.extend_from_slice(&der);
    nv.extend_from_slice(&[0u8; 200]);
    assert_eq!(normalize_nv(&nv).unwrap(), &der[..]);
    assert!(verify(&nv, &swtpm_store()).unwrap().chain_verified);
    // TPM 1.2 layout: the announced length covers a `10 02` full-cert tag.
    let len12 = u16::try_from(der.len() + 2).unwrap().to_be_bytes();
    let mut nv12 = vec![0x10, 0x01, 0x00, len12[0], len12[1], 0x10, 0x02];
    nv12.extend_from_slice(&der);
    assert_eq!(normalize_nv(&nv12).unwrap(), &der[..]);
    // Plain DER with 0xff padding (an NV index read at full size).
    let mut padded = der.clone();
    padded.extend_from_slice(&[0xff; 64]);
    assert_eq!(normalize_nv(&padded).unwrap(), &der[..]);
    assert_eq!(normalize_nv(&der).unwrap(), &der[..]);
    // Announced lengths beyond the data, oversized input, garbage.
    assert!(matches!(
        normalize_nv(&nv[..100]),
        Err(EkCertError::Parse(_))
    ));
    assert!(matches!(
        normalize_nv(&der[..500]),
        Err(EkCertError::Parse(_))
    ));
    let huge = vec![0x30; MAX_EK_CERT_LEN + 1];
    assert!(matches!(normalize_nv(&huge), Err(EkCertError::TooLarge)));
    assert!(matches!(
        verify(&huge, &swtpm_store()),
        Err(EkCertError::TooLarge)
    ));
    assert!(matches!(
        normalize_nv(b"\x04\x02ab"),
        Err(EkCertError::Parse(_))
    ));
}

#[test]
fn ekcert_ca_certificate_is_not_an_ek() {
    let err = verify(&cert(SWTPM_INTERMEDIATE), &swtpm_store()).unwrap_err();
    assert!(matches!(err, EkCertError::NotEk(_)), "{err}");
    let err = inspect(&cert(&format!("{KEYLIME}/STM_RSA_05I.pem"))).unwrap_err();
    assert!(matches!(err, EkCertError::NotEk(_)), "{err}");
}

#[test]
fn ekcert_inspect_does_not_verify_the_chain() {
    let ek = inspect(&swtpm_ek()).unwrap();
    assert!(!ek.chain_verified);
    assert_eq!(ek.manufacturer.as_deref(), Some("id:00001014"));
}

#[test]
fn ekcert_real_vendor_chains_verify() {
    let k = |name: &str| cert(&format!("{KEYLIME}/{name}"));
    // Three levels, SHA-256: STM intermediate -> STM root -> GlobalSign root.
    let gs = EkCaStore::from_certs(vec![k("GS_TPM_RT.pem")], vec![k("STM_RSA_RT.pem")]).unwrap();
    verify_chain_only(&k("STM_RSA_05I.pem"), &gs).unwrap();
    let gs_only = EkCaStore::from_certs(vec![k("GS_TPM_RT.pem")], Vec::new()).unwrap();
    let err = verify_chain_only(&k("STM_RSA_05I.pem"), &gs_only).unwrap_err();
    assert!(matches!(err, EkCertError::UnknownIssuer(_)), "{err}");
    // SHA-1 and expired (notAfter 2025-10-20): Infineon intermediate 01.
    let ifx = EkCaStore::from_certs(vec![k("IFX_RSA_RT.pem")], Vec::new()).unwrap();
    verify_chain_only(&k("IFX_RSA_01I.pem"), &ifx).unwrap();
    // ECDSA P-384 / SHA-384.
    let inf = EkCaStore::from_certs(vec![k("INF_ECC_010RT.pem")], Vec::new()).unwrap();
    verify_chain_only(&k("INF_ECC_010I.pem"), &inf).unwrap();
    // A wrong root with the right algorithm is not enough.
    let err = verify_chain_only(&k("STM_RSA_05I.pem"), &ifx).unwrap_err();
    assert!(matches!(err, EkCertError::UnknownIssuer(_)), "{err}");
}

/// Every vendor CA whose issuer is also in the test data verifies: proves
/// sha1WithRSA, sha256/384 RSA, ECDSA P-256/P-384 and P-521/SHA-512 work.
#[test]
fn ekcert_every_vendor_ca_signature_verifies() {
    let store = vendor_store();
    let mut anchored = 0;
    let mut unknown = 0;
    for idx in 0..store.len() {
        let der = &store.get(idx).unwrap().der;
        match verify_chain_only(der, &store) {
            Ok(()) => anchored += 1,
            Err(EkCertError::UnknownIssuer(_)) => unknown += 1,
            Err(e) => panic!("certificate #{idx}: {e}"),
        }
    }
    println!(
        "vendor CAs: {} distinct, {anchored} chained, {unknown} issuer absent",
        store.len()
    );
    assert_eq!(
        (store.len(), anchored, unknown),
        (EXPECTED_DISTINCT, EXPECTED_ANCHORED, EXPECTED_UNKNOWN)
    );
}

// 45 keylime + 175 tpm-ca-certificates, 21 in both. The 4 without issuer:
// Aliyun EKMF CA, IFX root (VeriSign), Nationz CA 001, AMD Pluton ICA.
const EXPECTED_DISTINCT: usize = 199;
const EXPECTED_ANCHORED: usize = 195;
const EXPECTED_UNKNOWN: usize = 4;

#[test]
fn ekcert_issuer_names_match_across_string_types() {
    use x509_parser::prelude::FromDer;
    let atv = |oid: u8, tag: u8, v: &str| {
        der_tlv(
            0x30,
            &[der_tlv(0x06, &[0x55, 4, oid]), der_tlv(tag, v.as_bytes())].concat(),
        )
    };
    let name = |rdns: &[Vec<u8>]| {
        let sets: Vec<u8> = rdns.iter().flat_map(|r| der_tlv(0x31, r)).collect();
        der_tlv(0x30, &sets)
    };
    let key = |der: &[u8]| store::name_key(&x509_parser::x509::X509Name::from_der(der).unwrap().1);
    let printable = name(&[atv(3, 0x13, "STM TPM Root")]);
    assert_eq!(
        key(&printable),
        key(&name(&[atv(3, 0x0c, " stm  TPM root ")]))
    );
    assert_ne!(
        key(&printable),
        key(&name(&[atv(3, 0x13, "STM TPM Root 2")]))
    );
    assert_ne!(
        key(&printable),
        key(&name(&[atv(10, 0x13, "STM TPM Root")]))
    );
    // Multi-valued RDN (Nuvoton): attribute order inside the SET is ignored,
    // but the RDN sequence order is not.
    let (cn, o) = (atv(3, 0x0c, "NTC"), atv(10, 0x0c, "Nuvoton"));
    let ab = name(&[[cn.clone(), o.clone()].concat()]);
    assert_eq!(key(&ab), key(&name(&[[o.clone(), cn.clone()].concat()])));
    assert_ne!(key(&name(&[cn.clone(), o.clone()])), key(&name(&[o, cn])));
}

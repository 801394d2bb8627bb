//! Against a private swtpm per test. tpm2-tools run between `Tpm` calls (the
//! swtpm TCTI connects per command; see swtpm.rs for the fork pitfall).

use std::os::unix::fs::PermissionsExt;
use std::time::Instant;

use sha2::{Digest as _, Sha256};
use tss_esapi::structures::{Attest, AttestInfo, Public, Signature};
use tss_esapi::traits::UnMarshall;

use super::swtpm::{make_credential, Swtpm};
use super::*;

fn start() -> (Swtpm, Tpm, tempfile::TempDir) {
    let t = Instant::now();
    let swtpm = Swtpm::start().expect("swtpm");
    let provisioned = t.elapsed();
    let tpm = Tpm::open(&swtpm.tcti()).expect("open");
    eprintln!(
        "timing: provision+start {provisioned:?}, open {:?}",
        t.elapsed() - provisioned
    );
    (swtpm, tpm, tempfile::tempdir().expect("tempdir"))
}

fn lap(what: &str, t: Instant) {
    eprintln!("timing: {what} {:?}", t.elapsed());
}

fn attributes(tpmt_public: &[u8]) -> u32 {
    u32::from_be_bytes(tpmt_public[4..8].try_into().expect("attrs"))
}

#[test]
fn strip_nv_cert_handles_header_and_padding() {
    let der = [0x30, 0x03, 0x02, 0x01, 0x05];
    assert_eq!(ek::strip_nv_cert(&der), Some(&der[..]));
    let mut padded = der.to_vec();
    padded.extend_from_slice(&[0xFF; 7]);
    assert_eq!(ek::strip_nv_cert(&padded), Some(&der[..]));
    let mut with_header = vec![0x10, 0x01, 0x00, 0x00, 0x05];
    with_header.extend_from_slice(&padded);
    assert_eq!(ek::strip_nv_cert(&with_header), Some(&der[..]));
    assert_eq!(ek::strip_nv_cert(&[0xFF; 16]), None);
    assert_eq!(ek::strip_nv_cert(&der[..3]), None);
}

/// The agent spawns these futures on a multi-threaded runtime.
#[allow(dead_code)]
fn futures_are_send(tpm: &Tpm, dir: &std::path::Path, sel: &PcrSelection) {
    fn send<T: Send>(_: T) {}
    send(tpm.endorsement());
    send(tpm.attestation_key(dir));
    send(tpm.activate_credential(dir, &[], &[]));
    send(tpm.quote(dir, &[], sel));
    send(tpm.clone());
}

#[test]
fn fds_opened_by_libtss2_become_cloexec() {
    use nix::fcntl::{fcntl, open, FcntlArg, FdFlag, OFlag};
    let fd = context::cloexec_new_fds(|| {
        open("/dev/null", OFlag::O_RDONLY, nix::sys::stat::Mode::empty()).expect("open")
    });
    let flags = FdFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFD).expect("getfd"));
    let _ = nix::unistd::close(fd);
    assert!(flags.contains(FdFlag::FD_CLOEXEC));
}

#[tokio::test]
async fn open_fails_clearly_without_a_tpm() {
    let err = Tpm::open("device:/nonexistent/tpmrm0")
        .err()
        .expect("must fail");
    assert!(
        err.to_string()
            .contains("no TPM device at /nonexistent/tpmrm0"),
        "{err}"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let err = Tpm::open(&format!("swtpm:host=127.0.0.1,port={port}"))
        .err()
        .expect("must fail");
    assert!(matches!(err, TpmError::Open(_)), "{err}");
}

#[tokio::test]
async fn ek_cert_matches_ek_public_and_chains_to_local_ca() {
    let (swtpm, tpm, _dir) = start();
    let t = Instant::now();
    let e = tpm.endorsement().await.expect("endorsement");
    lap("endorsement (NV read + persistent EK)", t);
    let der = e.ek_cert.expect("swtpm_setup wrote an EK cert");
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("EK cert parses as X.509");
    let x509_parser::public_key::PublicKey::RSA(rsa) = cert.public_key().parsed().expect("spki")
    else {
        panic!("swtpm's first EK cert is RSA-2048");
    };
    let Public::Rsa {
        unique,
        object_attributes,
        ..
    } = Public::unmarshall(&e.ek_public).expect("TPMT_PUBLIC")
    else {
        panic!("EK public is not RSA");
    };
    let modulus = rsa.modulus.strip_prefix(&[0u8][..]).unwrap_or(rsa.modulus);
    assert_eq!(modulus, unique.value(), "cert key == EK public area");
    assert!(object_attributes.restricted() && object_attributes.decrypt());
    assert_eq!(
        attributes(&e.ek_public),
        0x0003_00B2,
        "TCG L-1 EK attributes"
    );

    let (issuer, root) = swtpm.ca_certs();
    let pem = |p: std::path::PathBuf| {
        let bytes = std::fs::read(p).expect("read CA");
        x509_parser::pem::parse_x509_pem(&bytes).expect("pem").1
    };
    let (issuer, root) = (pem(issuer), pem(root));
    let (issuer, root) = (
        issuer.parse_x509().expect("CA"),
        root.parse_x509().expect("CA"),
    );
    cert.verify_signature(Some(issuer.public_key()))
        .expect("local CA signed the EK cert");
    issuer
        .verify_signature(Some(root.public_key()))
        .expect("root signed the local CA");
    assert_eq!(
        tpm.endorsement().await.expect("again").ek_public,
        e.ek_public
    );
}

#[tokio::test]
async fn ak_is_restricted_signing_and_persisted_0600() {
    let (_swtpm, tpm, dir) = start();
    let blob_dir = dir.path().join("state");
    let t = Instant::now();
    let ak = tpm.attestation_key(&blob_dir).await.expect("create AK");
    lap("AK create (ECC P-256, incl. EK resolve)", t);
    let attrs = attributes(&ak.public);
    for (bit, what) in [
        (1, "fixedTPM"),
        (4, "fixedParent"),
        (5, "sensitiveDataOrigin"),
        (6, "userWithAuth"),
        (16, "restricted"),
        (18, "sign"),
    ] {
        assert!(attrs & (1 << bit) != 0, "{what} must be set: {attrs:#x}");
    }
    assert_eq!(attrs & (1 << 17), 0, "decrypt must be clear");
    assert_eq!(
        ak.public[..4],
        [0x00, 0x23, 0x00, 0x0B],
        "ECC key, nameAlg SHA-256"
    );
    let mut name = vec![0x00, 0x0B];
    name.extend_from_slice(&Sha256::digest(&ak.public));
    assert_eq!(ak.name, name);

    let path = blob_dir.join(AK_BLOB_FILE);
    let mode = std::fs::metadata(&path).expect("blob").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let t = Instant::now();
    assert_eq!(tpm.attestation_key(&blob_dir).await.expect("reuse"), ak);
    lap("AK reuse (load + flush)", t);
    // A restart (new context) reuses the blob too.
    drop(tpm);
    let tpm = Tpm::open(&_swtpm.tcti()).expect("reopen");
    assert_eq!(
        tpm.attestation_key(&blob_dir).await.expect("after restart"),
        ak
    );
    // A corrupted blob is replaced rather than wedging the agent.
    std::fs::write(&path, b"garbage").expect("corrupt");
    let fresh = tpm.attestation_key(&blob_dir).await.expect("recreate");
    assert_ne!(fresh, ak);
}

#[tokio::test]
async fn activate_credential_round_trip_and_wrong_name_fails() {
    let (_swtpm, tpm, dir) = start();
    let ek_public = tpm.endorsement().await.expect("ek").ek_public;
    let ak = tpm.attestation_key(dir.path()).await.expect("ak");
    let secret = b"0123456789abcdef0123456789abcdef";
    let (id, enc) = make_credential(&ek_public, &ak.name, secret).expect("makecredential");
    let t = Instant::now();
    let got = tpm
        .activate_credential(dir.path(), &id, &enc)
        .await
        .expect("activate");
    lap("activate_credential", t);
    assert_eq!(got, secret);

    let mut other = ak.name.clone();
    other[5] ^= 0xFF;
    let (id, enc) = make_credential(&ek_public, &other, secret).expect("makecredential");
    let err = tpm
        .activate_credential(dir.path(), &id, &enc)
        .await
        .expect_err("wrong AK name");
    assert!(matches!(err, TpmError::Activate(_)), "{err}");
    let err = tpm
        .activate_credential(dir.path(), &id[2..], &enc)
        .await
        .expect_err("not a TPM2B");
    assert!(matches!(err, TpmError::InvalidInput(_)), "{err}");
    // Still usable after the failures (no leaked sessions).
    let (id, enc) = make_credential(&ek_public, &ak.name, secret).expect("makecredential");
    assert_eq!(
        tpm.activate_credential(dir.path(), &id, &enc)
            .await
            .expect("again"),
        secret
    );
}

/// Checks a quote against `nonce` and the AK, returns the PCR values.
fn check_quote(q: &Quote, nonce: &[u8], ak: &AkPublic) -> Vec<(u32, Vec<u8>)> {
    let attest = Attest::unmarshall(&q.attest).expect("TPMS_ATTEST");
    assert_eq!(attest.extra_data().value(), nonce, "extraData == nonce");
    let AttestInfo::Quote { info } = attest.attested() else {
        panic!("not a quote")
    };
    let mut h = Sha256::new();
    q.pcr_values.iter().for_each(|(_, v)| h.update(v));
    assert_eq!(
        info.pcr_digest().value(),
        h.finalize().as_slice(),
        "pcrDigest"
    );
    let Signature::EcDsa(sig) = Signature::unmarshall(&q.signature).expect("TPMT_SIGNATURE") else {
        panic!("ECDSA AK expected");
    };
    let Public::Ecc { unique, .. } = Public::unmarshall(&ak.public).expect("ak") else {
        panic!("ECC AK")
    };
    let pad = |v: &[u8]| [vec![0u8; 32 - v.len()], v.to_vec()].concat();
    let point = [
        &[4u8][..],
        &pad(unique.x().value()),
        &pad(unique.y().value()),
    ]
    .concat();
    let rs = [
        pad(sig.signature_r().value()),
        pad(sig.signature_s().value()),
    ]
    .concat();
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
        point,
    )
    .verify(&q.attest, &rs)
    .expect("quote signature verifies with the AK");
    q.pcr_values.clone()
}

#[tokio::test]
async fn quote_binds_nonce_and_follows_pcr_extend() {
    let (swtpm, tpm, dir) = start();
    let ak = tpm.attestation_key(dir.path()).await.expect("ak");
    let sel = PcrSelection::default();
    let err = tpm
        .quote(dir.path(), &[0; 65], &sel)
        .await
        .expect_err("nonce too long");
    assert!(matches!(err, TpmError::InvalidInput(_)), "{err}");
    let nonce = [0x5A; 32];
    let t = Instant::now();
    let q = tpm.quote(dir.path(), &nonce, &sel).await.expect("quote");
    lap("quote (load AK + quote + read + flush)", t);
    let before = check_quote(&q, &nonce, &ak);
    let idx: Vec<u32> = before.iter().map(|(i, _)| *i).collect();
    assert_eq!(idx, sel.pcrs);
    assert!(before.iter().all(|(_, v)| v == &[0u8; 32]), "fresh PCRs");

    // Extended by another process while the agent holds the TPM open.
    let digest = Sha256::digest(b"tessera");
    let arg = format!("14:sha256={}", hex::encode(digest));
    swtpm.tool(&["tpm2_pcrextend", &arg]).expect("pcrextend");
    let nonce = b"second nonce";
    let q = tpm.quote(dir.path(), nonce, &sel).await.expect("quote 2");
    let after = check_quote(&q, nonce, &ak);
    let expected = Sha256::digest([[0u8; 32].as_slice(), digest.as_slice()].concat());
    assert_eq!(after.last().expect("pcr 14"), &(14, expected.to_vec()));
    assert_eq!(after[..10], before[..10]);

    let sha1 = PcrSelection {
        bank: PcrBank::Sha1,
        pcrs: vec![14, 0],
    };
    let q = tpm.quote(dir.path(), b"", &sha1).await.expect("sha1 bank");
    let lens: Vec<_> = q.pcr_values.iter().map(|(i, v)| (*i, v.len())).collect();
    assert_eq!(lens, [(0, 20), (14, 20)]);
    let bad = PcrSelection {
        bank: PcrBank::Sha256,
        pcrs: vec![24],
    };
    assert!(matches!(
        tpm.quote(dir.path(), b"", &bad).await,
        Err(TpmError::InvalidInput(_))
    ));
}

#[tokio::test]
async fn quote_without_ak_is_a_clear_error() {
    let (_swtpm, tpm, dir) = start();
    let err = tpm
        .quote(dir.path(), b"n", &PcrSelection::default())
        .await
        .expect_err("no AK");
    assert!(matches!(err, TpmError::NoAk(_)), "{err}");
}

#[tokio::test]
async fn twenty_quotes_leak_nothing() {
    let (swtpm, tpm, dir) = start();
    let ak = tpm.attestation_key(dir.path()).await.expect("ak");
    let sel = PcrSelection::default();
    let t = Instant::now();
    for i in 0..20u8 {
        let q = tpm
            .quote(dir.path(), &[i; 16], &sel)
            .await
            .expect("quote must not run out of TPM memory");
        check_quote(&q, &[i; 16], &ak);
    }
    eprintln!("timing: 20 quotes {:?}", t.elapsed());
    tpm.close().await.expect("close");
    // Closing the TPM leaves no transient object or session behind.
    for cap in [
        "handles-transient",
        "handles-loaded-session",
        "handles-saved-session",
    ] {
        let out = swtpm.tool(&["tpm2_getcap", cap]).expect("getcap");
        assert!(
            out.trim_ascii().is_empty(),
            "{cap}: {}",
            String::from_utf8_lossy(&out)
        );
    }
}

#[tokio::test]
async fn created_ek_matches_cert_when_not_persistent() {
    let swtpm = Swtpm::start().expect("swtpm");
    // Without a persistent EK the agent must recreate it from the template.
    let evict = ["tpm2_evictcontrol", "-C", "o", "-c", "0x81010001"];
    swtpm.tool(&evict).expect("evict EK");
    let tpm = Tpm::open(&swtpm.tcti()).expect("open");
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Instant::now();
    let e = tpm.endorsement().await.expect("endorsement");
    lap("endorsement with CreatePrimary RSA EK", t);
    let der = e.ek_cert.expect("cert");
    let Public::Rsa { unique, .. } = Public::unmarshall(&e.ek_public).expect("pub") else {
        panic!("RSA")
    };
    assert!(der.windows(256).any(|w| w == unique.value()));
    let ak = tpm.attestation_key(dir.path()).await.expect("ak");
    let (id, enc) = make_credential(&e.ek_public, &ak.name, b"secret").expect("makecredential");
    assert_eq!(
        tpm.activate_credential(dir.path(), &id, &enc)
            .await
            .expect("activate"),
        b"secret"
    );
    for i in 0..5u8 {
        tpm.quote(dir.path(), &[i], &PcrSelection::default())
            .await
            .expect("quote");
    }
    tpm.close().await.expect("close");
    // close() flushed the created EK.
    let out = swtpm
        .tool(&["tpm2_getcap", "handles-transient"])
        .expect("getcap");
    assert!(
        out.trim_ascii().is_empty(),
        "{}",
        String::from_utf8_lossy(&out)
    );
}

#[tokio::test]
async fn ek_template_picks_that_ek_and_no_other() {
    use crate::node::tpm::public::{EkTemplate, TpmtPublic};
    let swtpm = Swtpm::start().expect("swtpm");
    let template_of = |e: &Endorsement| TpmtPublic::parse(&e.ek_public).unwrap().ek_template();
    let mut seen = Vec::new();
    // swtpm_setup provisions an RSA-2048 and a P-384 EK, both with certificates.
    for t in [EkTemplate::L1Rsa2048, EkTemplate::H3EccP384] {
        let tpm = Tpm::open_with_ek(&swtpm.tcti(), t).expect("open");
        let e = tpm.endorsement().await.expect("endorsement");
        assert_eq!(template_of(&e), Ok(t));
        assert!(e.ek_cert.is_some(), "{t}: the certificate of that EK");
        tpm.close().await.expect("close");
        seen.push(e.ek_public);
    }
    assert_ne!(seen[0], seen[1]);
    // No L-2 certificate: the EK created from the L-2 template, without one.
    let tpm = Tpm::open_with_ek(&swtpm.tcti(), EkTemplate::L2EccP256).expect("open");
    let e = tpm.endorsement().await.expect("endorsement");
    assert_eq!(template_of(&e), Ok(EkTemplate::L2EccP256));
    assert_eq!(e.ek_cert, None);
    tpm.close().await.expect("close");
}

//! Authority signing on every core, in process: X.509-SVIDs from CSRs through the
//! authority's CA, and JWT-SVIDs through its signer, against raw ECDSA P-256
//! signatures of the same crypto library (aws-lc-rs).

use crate::measure::{cores, rate};
use crate::report::{Row, Target};
use crate::Sizes;
use anyhow::{anyhow, Context, Result};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use std::time::Duration;
use tessera_authority::ca::Ca;
use tessera_common::jwt::JwtSigner;
use tessera_common::TrustDomain;

const SCENARIO: &str = "authority signing";

pub fn run(sizes: Sizes) -> Result<Vec<Row>> {
    let threads = cores();
    let per_core = format!("signatures/s on {threads} cores");
    let raw = rate(threads, sizes.window, || {
        let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING)
            .map_err(|e| anyhow!("P-256 key: {e}"))?;
        let rng = SystemRandom::new();
        // About the size of a to-be-signed certificate.
        let msg = [7u8; 400];
        Ok(move || {
            key.sign(&rng, &msg)
                .map(drop)
                .map_err(|e| anyhow!("sign: {e}"))
        })
    })?;

    let td = TrustDomain::new(tessera_tests::TD)?;
    let dir = tempfile::tempdir()?;
    let now = tessera_tests::now();
    let ca = Ca::load_or_create(dir.path(), &td, None, Duration::from_secs(86400), now)
        .context("create a CA")?;
    let id = td.id("/bench/workload")?;
    let x509 = rate(threads, sizes.window, || {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let csr = rcgen::CertificateParams::default().serialize_request(&key)?;
        let (ca, id) = (&ca, &id);
        Ok(move || {
            ca.sign_svid(csr.der(), id, &[], Duration::from_secs(3600), now)
                .map(drop)
                .map_err(anyhow::Error::from)
        })
    })?;

    let signer = JwtSigner::generate()?;
    let aud = vec!["bench".to_string()];
    let jwt = rate(threads, sizes.window, || {
        let (signer, id, aud) = (&signer, &id, &aud);
        Ok(move || {
            signer
                .sign(id, aud, now, now + 300)
                .map(drop)
                .map_err(anyhow::Error::from)
        })
    })?;

    Ok(vec![
        Row::new(
            SCENARIO,
            &format!("X.509-SVID from a CSR, {per_core}"),
            "1/s",
            x509,
        )
        .against(raw, Target::RatioAtLeast(0.5)),
        Row::new(SCENARIO, &format!("JWT-SVID, {per_core}"), "1/s", jwt)
            .against(raw, Target::RatioAtLeast(0.5)),
    ])
}

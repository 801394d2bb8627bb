//! A PKCS#10 CSR as an agent sends it to have an SVID signed: the
//! authority's own CA checks it and signs over its key.

use crate::NOW;
use std::sync::OnceLock;
use std::time::Duration;
use tessera_authority::ca::Ca;
use tessera_common::{SpiffeId, TrustDomain};

struct Signer {
    ca: Ca,
    id: SpiffeId,
    // The CA's files live as long as the CA.
    _dir: tempfile::TempDir,
}

fn signer() -> &'static Signer {
    static S: OnceLock<Signer> = OnceLock::new();
    S.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let td = TrustDomain::new("example.org").unwrap_or_else(|e| panic!("{e}"));
        let ca = Ca::load_or_create(dir.path(), &td, None, Duration::from_secs(86400), NOW)
            .unwrap_or_else(|e| panic!("CA: {e}"));
        let id = td.id("/fuzz").unwrap_or_else(|e| panic!("{e}"));
        Signer { ca, id, _dir: dir }
    })
}

pub fn fuzz_one(data: &[u8]) {
    let s = signer();
    let names = ["fuzz.example.org".to_string()];
    let _ =
        s.ca.sign_svid(data, &s.id, &names, Duration::from_secs(3600), NOW);
}

pub fn seeds() -> Vec<Vec<u8>> {
    use rcgen::{CertificateParams, KeyPair};
    [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_ED25519,
    ]
    .into_iter()
    .map(|alg| {
        let key = KeyPair::generate_for(alg).unwrap_or_else(|e| panic!("{e}"));
        let p = CertificateParams::new(vec!["workload.example".to_string()])
            .unwrap_or_else(|e| panic!("{e}"));
        let csr = p.serialize_request(&key).unwrap_or_else(|e| panic!("{e}"));
        csr.der().to_vec()
    })
    .collect()
}

#[cfg(test)]
mod tests {
    /// The ECDSA seeds are signed (the authority refuses Ed25519 keys).
    #[test]
    fn ecdsa_seed_csrs_are_signed() {
        let s = super::signer();
        let seeds = super::seeds();
        for csr in &seeds[..2] {
            s.ca.sign_svid(
                csr,
                &s.id,
                &[],
                std::time::Duration::from_secs(60),
                crate::NOW,
            )
            .expect("seed CSR signed");
        }
        assert!(s
            .ca
            .sign_svid(
                &seeds[2],
                &s.id,
                &[],
                std::time::Duration::from_secs(60),
                crate::NOW
            )
            .is_err());
    }
}

//! The whole `tpm` node-attestation evidence message, through the
//! authority's `TpmVerifier::challenge` (protobuf decode, EK and AK public
//! areas, EK certificate, event log, credential). The verifier trusts the
//! swtpm fixtures' CA and allow-lists the fixtures' EKs, so mutations of
//! real evidence get past the EK checks to the AK and the event log.

use crate::data;
use prost::Message;
use sha2::{Digest, Sha256};
use std::sync::OnceLock;
use tessera_attestors::node::tpm::ekcert::EkCaStore;
use tessera_attestors::node::tpm::public::TpmtPublic;
use tessera_attestors::node::tpm::verifier::TpmVerifier;
use tessera_proto::tpm as pb;

/// The store of the swtpm fixtures' local CA (root and issuer).
pub(crate) fn swtpm_store() -> EkCaStore {
    let dir = data::SWTPM_FIXTURES[0];
    let roots = [
        format!("{dir}/swtpm-localca-rootca-cert.pem"),
        format!("{dir}/issuercert.pem"),
    ]
    .iter()
    .flat_map(|f| data::pem_certs(&data::path(f)))
    .collect();
    EkCaStore::from_certs(roots, Vec::new()).unwrap_or_else(|e| panic!("swtpm CA: {e}"))
}

fn verifier() -> &'static TpmVerifier {
    static V: OnceLock<TpmVerifier> = OnceLock::new();
    V.get_or_init(|| {
        let eks: Vec<TpmtPublic> = super::fixture_files("ek_pub.tpmt_public")
            .iter()
            .map(|b| TpmtPublic::parse(b).unwrap_or_else(|e| panic!("fixture EK: {e}")))
            .collect();
        let allowed_ek_hashes = eks
            .iter()
            .map(|ek| {
                let spki = ek.spki_der().unwrap_or_else(|e| panic!("fixture EK: {e}"));
                hex::encode(Sha256::digest(spki))
            })
            .collect();
        TpmVerifier {
            ek_cas: Some(swtpm_store()),
            allowed_ek_hashes,
            pcrs: (0..8).collect(),
            ek_template: eks[0]
                .ek_template()
                .unwrap_or_else(|e| panic!("fixture EK: {e}")),
            policies: Vec::new(),
        }
    })
}

pub fn fuzz_one(data: &[u8]) {
    let _ = verifier().challenge(data);
}

pub fn seeds() -> Vec<Vec<u8>> {
    let mut s = Vec::new();
    for dir in data::SWTPM_FIXTURES {
        let read = |f: &str| data::read(&format!("{dir}/{f}"));
        let full = pb::Evidence {
            ek_cert: read("ek_cert_rsa2048.der"),
            ek_public: read("ek_pub.tpmt_public"),
            ak_public: read("ak_pub.tpmt_public"),
            event_log: std::fs::read(data::path(&format!("{dir}/eventlog.bin")))
                .unwrap_or_default(),
        };
        // Without the certificate: the allow-listed EK path.
        let bare = pb::Evidence {
            ek_cert: Vec::new(),
            ..full.clone()
        };
        s.push(full.encode_to_vec());
        s.push(bare.encode_to_vec());
    }
    s
}

#[cfg(test)]
mod tests {
    /// Every seed gets a challenge: mutations start past the EK checks.
    #[test]
    fn seed_evidence_is_challenged() {
        for s in super::seeds() {
            super::verifier()
                .challenge(&s)
                .expect("seed evidence accepted");
        }
    }
}

//! An EK certificate as read from TPM NV and sent in the evidence, on the
//! lenient path: NV padding stripped, EK profile, key, and the chain to the
//! swtpm fixtures' CA (also without the leaf's notAfter).

use crate::data;
use std::sync::OnceLock;
use tessera_attestors::node::tpm::ekcert::{self, EkCaStore};

fn store() -> &'static EkCaStore {
    static S: OnceLock<EkCaStore> = OnceLock::new();
    S.get_or_init(crate::tpm_evidence::swtpm_store)
}

pub fn fuzz_one(data: &[u8]) {
    let _ = ekcert::normalize_nv(data);
    let _ = ekcert::public_key_spki(data);
    let _ = ekcert::inspect(data);
    let _ = ekcert::verify_at(data, store(), None);
    let _ = ekcert::verify_chain_only(data, store());
}

pub fn seeds() -> Vec<Vec<u8>> {
    let mut s: Vec<Vec<u8>> = data::SWTPM_FIXTURES
        .iter()
        .map(|d| data::read(&format!("{d}/ek_cert_rsa2048.der")))
        .collect();
    // Vendor CA certificates: real-world DER the parser must take apart.
    for p in data::files("tests/data/ek-roots", ".pem") {
        s.extend(data::pem_certs(&p));
    }
    s
}

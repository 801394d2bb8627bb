//! The quote's TPMS_ATTEST: parse and marshal back.

use tessera_attestors::node::tpm::attest::Attest;

pub fn fuzz_one(data: &[u8]) {
    if let Ok(a) = Attest::parse(data) {
        let _ = a.marshal();
        let _ = a.pcr_selection.iter().count();
    }
}

pub fn seeds() -> Vec<Vec<u8>> {
    super::fixture_files("quote.tpms_attest")
}

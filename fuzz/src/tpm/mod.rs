//! The TPM structures an agent sends the authority: TPM2B_PUBLIC (EK, AK),
//! TPMS_ATTEST and TPMT_SIGNATURE (the quote), and the whole evidence message.

pub mod attest;
pub mod evidence;
pub mod public;
pub mod signature;

use crate::data;

/// `name` of each swtpm fixture.
fn fixture_files(name: &str) -> Vec<Vec<u8>> {
    data::SWTPM_FIXTURES
        .iter()
        .map(|d| data::read(&format!("{d}/{name}")))
        .collect()
}

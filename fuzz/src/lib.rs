//! One module per fuzz target. Each has `fuzz_one`, which the libFuzzer
//! target (`fuzz_targets/<name>.rs`) and the corpus test (`tests/corpus.rs`)
//! both call, and `seeds`, the target's seed inputs made from `tests/data`
//! at run time (nothing vendored is copied into this crate).
//!
//! `fuzz_one` must return for every input: a panic, an abort or a hang is a
//! finding. Results are thrown away on purpose; only not crashing is checked.

pub mod data;

pub mod config;
pub mod csr;
pub mod ek_cert;
pub mod eventlog;
pub mod jwt;
pub mod sds;
pub mod tpm;
pub mod workload_api;

pub use tpm::signature as tpm_signature;
pub use tpm::{attest as tpm_attest, evidence as tpm_evidence, public as tpm_public};

/// A fuzz target: its name (the `fuzz_targets/<name>.rs` binary), the
/// function it fuzzes and its seeds.
pub struct Target {
    pub name: &'static str,
    pub fuzz_one: fn(&[u8]),
    pub seeds: fn() -> Vec<Vec<u8>>,
}

macro_rules! targets {
    ($($m:ident),* $(,)?) => {
        /// Every target, in the order the smoke run goes.
        pub const TARGETS: &[Target] = &[$(Target {
            name: stringify!($m),
            fuzz_one: $m::fuzz_one,
            seeds: $m::seeds,
        }),*];
    };
}

targets!(
    eventlog,
    tpm_public,
    tpm_attest,
    tpm_signature,
    tpm_evidence,
    ek_cert,
    csr,
    jwt,
    workload_api,
    sds,
    config,
);

/// The fixed time every target validates at, so a seed that is valid
/// today stays valid (JWT `exp`, CA validity).
pub const NOW: i64 = 1_800_000_000;

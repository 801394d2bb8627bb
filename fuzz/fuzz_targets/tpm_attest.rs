#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tessera_fuzz::tpm_attest::fuzz_one(data));

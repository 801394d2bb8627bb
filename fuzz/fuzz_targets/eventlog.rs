#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tessera_fuzz::eventlog::fuzz_one(data));

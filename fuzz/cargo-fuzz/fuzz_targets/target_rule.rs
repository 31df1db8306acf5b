#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| toxtun_fuzz::target_rule(data));

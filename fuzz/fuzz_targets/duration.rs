#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| visio_operator::fuzz::duration(data));

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| visio_operator::fuzz::pod_load(data));

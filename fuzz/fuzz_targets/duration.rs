#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| visio_fuzz_bodies::duration(data));

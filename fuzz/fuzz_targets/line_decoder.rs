#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tcpchat_fuzz::line_decoder(data));

//! Fuzz target `helm_payload`: `history::helm::decode_payload` (first byte: 0 raw, 1 base64(input), 2 base64(gzip(input))).
//! How the raw input is read and what is checked: `tests/fuzz_checks/mod.rs`.
#![no_main]

#[path = "../../tests/fuzz_checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::replay("helm_payload", data));

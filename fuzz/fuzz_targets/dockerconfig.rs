//! Fuzz target `dockerconfig`: `credentials::parse_secret`, `Keyring` and its lookups (image after the first NUL byte).
//! How the raw input is read and what is checked: `tests/fuzz_checks/mod.rs`.
#![no_main]

#[path = "../../tests/fuzz_checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::replay("dockerconfig", data));

//! Fuzz target `config_file`: `FileConfig::parse`, `Config::from_file`, `validate`.
//! How the raw input is read and what is checked: `tests/fuzz_checks/mod.rs`.
#![no_main]

#[path = "../../tests/fuzz_checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::replay("config_file", data));

//! Fuzz target `files_yaml`: `history::files::load_yaml_str` and `decode_value`.
//! How the raw input is read and what is checked: `tests/fuzz_checks/mod.rs`.
#![no_main]

#[path = "../../tests/fuzz_checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::replay("files_yaml", data));

//! Fuzz target `controller_revision`: `history::controller_revisions::decode`, `template::from_workload_value` / `from_spec_value`.
//! How the raw input is read and what is checked: `tests/fuzz_checks/mod.rs`.
#![no_main]

#[path = "../../tests/fuzz_checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::replay("controller_revision", data));

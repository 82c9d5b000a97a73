//! The objects a real API server, Helm 4 and kubectl wrote (`tests/fixtures/history`, from
//! `tests/fixtures/history-src/regenerate.sh`), read back for the tests to compare against.

use serde::de::DeserializeOwned;
use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/history");

/// The items of the recorded list `file` (`apps/replicasets.json`, `helm/release-secrets.yaml`,
/// …), each as a `T`.
pub fn recorded<T: DeserializeOwned>(file: &str) -> Vec<T> {
    let path = format!("{FIXTURES}/{file}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let list: Value = if file.ends_with(".json") {
        serde_json::from_str(&text).expect("fixture is JSON")
    } else {
        rollcache::history::manifest::parse(&text).expect("fixture is YAML")
    };
    list["items"]
        .as_array()
        .expect("a List")
        .iter()
        .map(|i| serde_json::from_value(i.clone()).expect("a valid object"))
        .collect()
}

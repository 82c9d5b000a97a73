//! The `rollcache node` binary against a real containerd and registry: pull, pin, list as JSON.

mod common;

use std::process::Command;

use common::*;

fn rollcache(socket: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rollcache"))
        .arg("node")
        .args(args)
        .env("ROLLCACHE_CONTAINERD_SOCKET", socket)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run rollcache")
}

#[tokio::test]
async fn node_pull_pin_and_list_as_json() {
    let mut bed = Bed::start().await;
    let (reference, built, digest) = bed.push_small(40, "cli/app:1");
    let socket = bed.containerd.socket();

    let out = rollcache(&socket, &["pull", &reference]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("pulled"));
    let out = rollcache(&socket, &["pin", &reference]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = rollcache(&socket, &["list", "--output", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    let rows = rows.as_array().expect("an array");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["reference"], reference);
    assert_eq!(rows[0]["id"], built.config_digest);
    assert_eq!(rows[0]["digest"], digest);
    assert_eq!(rows[0]["pinned"], true);
    assert_eq!(rows[0]["managed"], true);

    // YAML is the same document; a long reference keeps the table in 100 columns, whole in wide.
    let out = rollcache(&socket, &["list", "-o", "yaml"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml: serde_json::Value =
        serde_saphyr::from_str(&String::from_utf8_lossy(&out.stdout)).expect("YAML output");
    assert_eq!(yaml.as_array(), Some(rows), "{yaml}");
    let (long, _, _) = bed.push_small(
        41,
        "cli/a-repository-path-as-long-as-some-facilities-make-them/ioc-adaravis-runtime:2024.11.1",
    );
    let out = rollcache(&socket, &["pull", &long]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(rollcache(&socket, &["list"]).stdout).unwrap();
    assert!(table.lines().all(|l| l.chars().count() <= 100), "{table}");
    assert!(
        table.contains("…") && table.contains("runtime:2024.11.1"),
        "{table}"
    );
    let wide = String::from_utf8(rollcache(&socket, &["list", "-o", "wide"]).stdout).unwrap();
    assert!(wide.contains(&long), "{wide}");

    // A failing image makes the command fail and says why.
    let missing = bed.reference("cli/missing:1");
    let out = rollcache(&socket, &["pull", "--output", "json", &missing]);
    assert!(!out.status.success());
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    assert_eq!(rows[0]["error_kind"], "image_not_found", "{rows}");
}

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

    // A failing image makes the command fail and says why.
    let missing = bed.reference("cli/missing:1");
    let out = rollcache(&socket, &["pull", "--output", "json", &missing]);
    assert!(!out.status.success());
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    assert_eq!(rows[0]["error_kind"], "image_not_found", "{rows}");
}

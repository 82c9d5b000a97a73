//! `rollcache plan --from DIR` on an exported history (a Helm-deployed IOC StatefulSet over several
//! releases, a Deployment with old ReplicaSets, a DaemonSet): what each node would hold and why.

use std::process::Command;

fn plan(node: &str) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_rollcache"))
        .args([
            "plan",
            "--from",
            "tests/fixtures/history",
            "--node",
            node,
            "--output",
            "json",
        ])
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn revisions<'a>(p: &'a serde_json::Value, name: &str) -> Vec<&'a serde_json::Value> {
    p["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["key"]["workload"]["name"] == name)
        .collect()
}

fn images(p: &serde_json::Value) -> Vec<String> {
    p["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["reference"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn ioc_statefulset_is_held_only_on_its_beamline_node() {
    let beamline = plan("bl45p-ws001");
    let ioc = revisions(&beamline, "bl45p-mo-ioc-01");
    assert_eq!(ioc.len(), 3, "three Helm releases, three revisions");
    assert!(ioc.iter().all(|r| r["wanted"] == true));
    assert_eq!(ioc[0]["current"], true, "newest release is deployed");
    assert_eq!(ioc[0]["helm_release"], "bl45p-mo-ioc-01");

    let other = plan("k8s-worker-01");
    let ioc = revisions(&other, "bl45p-mo-ioc-01");
    assert_eq!(ioc.len(), 3);
    for r in ioc {
        assert_eq!(r["wanted"], false);
        assert_eq!(r["not_held"]["reason"], "node-affinity", "{r}");
    }
    // No IOC image is held on the other node, every one on the beamline node.
    let ioc_images: Vec<String> = revisions(&beamline, "bl45p-mo-ioc-01")
        .iter()
        .flat_map(|r| r["images"].as_array().unwrap().iter())
        .map(|i| i.as_str().unwrap().to_string())
        .collect();
    assert!(!ioc_images.is_empty());
    for i in &ioc_images {
        assert!(
            images(&beamline).contains(i),
            "{i} held on the beamline node"
        );
        assert!(!images(&other).contains(i), "{i} not held elsewhere");
    }
}

#[test]
fn deployment_history_from_old_replicasets_is_held() {
    let p = plan("k8s-worker-01");
    let archiver = revisions(&p, "bl45p-archiver");
    let numbers: Vec<i64> = archiver
        .iter()
        .map(|r| r["number"].as_i64().unwrap())
        .collect();
    assert_eq!(
        numbers,
        vec![4, 3, 2, 1],
        "newest first, every retained ReplicaSet"
    );
    assert!(archiver.iter().all(|r| r["wanted"] == true));
    assert_eq!(archiver.iter().filter(|r| r["current"] == true).count(), 1);
    // Current revisions come first in pull order.
    let first = &p["images"][0];
    assert_eq!(first["tier"], serde_json::json!("current"), "{first}");
}

#[test]
fn table_output_explains_what_is_not_held() {
    let out = Command::new(env!("CARGO_BIN_EXE_rollcache"))
        .args([
            "plan",
            "--from",
            "tests/fixtures/history",
            "--node",
            "k8s-worker-01",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Revisions not held on this node"), "{text}");
    assert!(text.contains("bl45p-mo-ioc-01"));
    assert!(text.contains("beamline"));
}

#[test]
fn missing_directory_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_rollcache"))
        .args(["plan", "--from", "/nonexistent/history"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a directory"), "{err}");
}

/// What cannot be decoded is listed with the plan (which may lack what it needed), naming the
/// file or object, in the table and in JSON.
#[test]
fn undecodable_files_are_listed_with_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("web.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: ns}\nspec:\n  template:\n    spec:\n      containers: [{name: web, image: reg.example/web:1}]\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("half.json"), "{\"kind\": \"Deployment\", ").unwrap();
    let run = |format: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_rollcache"))
            .args(["plan", "--from"])
            .arg(dir.path())
            .args(["--node", "n1", "--output", format])
            .env_remove("KUBECONFIG")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let p: serde_json::Value = serde_json::from_str(&run("json")).unwrap();
    assert_eq!(images(&p), ["reg.example/web:1"]);
    let problems = p["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    let message = problems[0]["message"].as_str().unwrap();
    assert!(
        message.contains("half.json") && message.contains("json"),
        "{message}"
    );
    let table = run("table");
    assert!(
        table.contains("Problems (1)") && table.contains("half.json"),
        "{table}"
    );
}

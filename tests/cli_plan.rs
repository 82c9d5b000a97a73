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

fn plan_in(
    dir: &std::path::Path,
    node: &str,
    env: &[(&str, &std::path::Path)],
) -> serde_json::Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rollcache"));
    cmd.args(["plan", "--node", node, "--output", "json"])
        .env_remove("KUBECONFIG");
    if !dir.as_os_str().is_empty() {
        cmd.arg("--from").arg(dir);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_cordoned_node_under_pressure_holds_what_it_held() {
    let dir = tempfile::tempdir().unwrap();
    let copied = Command::new("cp")
        .args(["-r", "tests/fixtures/history/."])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(copied.success());
    let nodes = dir.path().join("core/nodes.yaml");
    let text = std::fs::read_to_string(&nodes).unwrap();
    let taint = "    - effect: NoSchedule\n      key: beamline\n      value: bl45p\n";
    assert!(text.contains(taint));
    let drained = text.replace(
        taint,
        &format!(
            "{taint}    - effect: NoSchedule\n      key: node.kubernetes.io/unschedulable\n    \
             - effect: NoExecute\n      key: node.kubernetes.io/not-ready\n    \
             - effect: NoSchedule\n      key: node.kubernetes.io/disk-pressure\n    \
             unschedulable: true\n"
        ),
    );
    std::fs::write(&nodes, drained).unwrap();

    let normal = plan("bl45p-ws001");
    let cordoned = plan_in(dir.path(), "bl45p-ws001", &[]);
    assert_eq!(images(&cordoned), images(&normal));
    assert_eq!(cordoned["revisions"], normal["revisions"]);
    let state = &cordoned["node_state"];
    assert_eq!(state["known"], true, "{state}");
    assert_eq!(state["cordoned"], true, "{state}");
    assert_eq!(
        state["ignored_taints"],
        serde_json::json!([
            "node.kubernetes.io/unschedulable:NoSchedule",
            "node.kubernetes.io/not-ready:NoExecute",
            "node.kubernetes.io/disk-pressure:NoSchedule"
        ])
    );
    assert_eq!(normal["node_state"]["cordoned"], false);

    let out = Command::new(env!("CARGO_BIN_EXE_rollcache"))
        .args(["plan", "--node", "bl45p-ws001", "--from"])
        .arg(dir.path())
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Node state: cordoned; taints"), "{text}");
}

#[test]
fn a_named_node_missing_from_the_history_is_unknown() {
    let p = plan("bl45p-ws999");
    assert_eq!(p["node"], "bl45p-ws999");
    assert_eq!(p["node_state"]["known"], false, "{}", p["node_state"]);
    assert_eq!(
        p["node_state"]["unknown_reason"],
        "Node object bl45p-ws999 not found"
    );
    let ioc = revisions(&p, "bl45p-mo-ioc-01");
    assert_eq!(ioc.len(), 3);
    for r in ioc {
        assert_eq!(r["wanted"], false);
        assert_eq!(r["not_held"]["reason"], "node-unknown", "{r}");
    }
    // Unconstrained revisions do not depend on the node.
    assert!(
        revisions(&p, "bl45p-archiver")
            .iter()
            .all(|r| r["wanted"] == true || r["not_held"]["reason"] == "node-unknown")
    );
    assert!(!images(&p).is_empty());
}

/// `rollcache plan` against a cluster (the in-test API server through `KUBECONFIG`): a cordoned
/// Node under pressure plans as if neither, and once the Node is deleted the node is unknown
/// and the nodeSelector revision waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_plan_reports_cordon_and_a_missing_node() {
    use serde_json::json;
    let api = rollcache_testbed::apiserver::ApiServer::start()
        .await
        .unwrap();
    let node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "worker-1", "labels": {"zone": "a"}},
        "spec": {"unschedulable": true, "taints": [
            {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"},
        ]},
    });
    api.apply(node).unwrap();
    let template = |image: &str, selector: Option<serde_json::Value>| {
        let mut spec = json!({"containers": [{"name": "c", "image": image}]});
        if let Some(s) = selector {
            spec["nodeSelector"] = s;
        }
        json!({"metadata": {"labels": {"app": "x"}}, "spec": spec})
    };
    api.apply(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web-1", "namespace": "apps",
            "annotations": {"deployment.kubernetes.io/revision": "1"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                "uid": "u1", "controller": true}]},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "x"}},
            "template": template("registry.example/web:1", None)},
    }))
    .unwrap();
    api.apply(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "ioc-1", "namespace": "apps",
            "annotations": {"deployment.kubernetes.io/revision": "1"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "ioc",
                "uid": "u2", "controller": true}]},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "x"}},
            "template": template("registry.example/ioc:1", Some(json!({"zone": "a"})))},
    }))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: {}\n\
             users:\n- name: t\n  user: {{}}\ncontexts:\n- name: t\n  context:\n    cluster: t\n    \
             user: t\ncurrent-context: t\n",
            api.url()
        ),
    )
    .unwrap();
    let run = |kubeconfig: std::path::PathBuf| {
        tokio::task::spawn_blocking(move || {
            plan_in(
                std::path::Path::new(""),
                "worker-1",
                &[("KUBECONFIG", kubeconfig.as_path())],
            )
        })
    };

    let p = run(kubeconfig.clone()).await.unwrap();
    assert_eq!(p["node_state"]["known"], true, "{}", p["node_state"]);
    assert_eq!(p["node_state"]["cordoned"], true, "{}", p["node_state"]);
    assert_eq!(
        images(&p),
        ["registry.example/ioc:1", "registry.example/web:1"],
        "cordon and not-ready change nothing"
    );

    assert!(api.delete("Node", "", "worker-1"));
    let p = run(kubeconfig).await.unwrap();
    assert_eq!(p["node_state"]["known"], false, "{}", p["node_state"]);
    assert_eq!(
        p["node_state"]["unknown_reason"],
        "Node object worker-1 not found"
    );
    assert_eq!(images(&p), ["registry.example/web:1"]);
    let ioc = revisions(&p, "ioc");
    assert_eq!(ioc[0]["not_held"]["reason"], "node-unknown", "{}", ioc[0]);
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

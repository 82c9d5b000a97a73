//! The binary's output formats: `-o yaml` is the same document as `-o json` (plan, status,
//! prefetch), and the default tables fit 100 columns while `-o wide` keeps every cell whole.

use std::process::{Command, Output};
use std::sync::Arc;

use rollcache::http::{Health, HttpState, PrefetchAccepted, StatusDoc, admin_router, serve_on};
use rollcache::metrics::Metrics;
use rollcache::report::{Readiness, Report, RevisionReport, WorkloadReport};
use rollcache::status::Status;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

fn rollcache(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_rollcache"))
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// YAML read back into the JSON data model, to compare it with `-o json`.
fn yaml_value(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn assert_fits(text: &str, width: usize) {
    for line in text.lines() {
        assert!(
            line.chars().count() <= width,
            "{} characters: {line:?}\n{text}",
            line.chars().count()
        );
    }
}

const NAME: &str = "bl45p-ea-ioc-01-with-a-name-as-long-as-facilities-like-to-give-their-iocs";
const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A history with long names and a digest-pinned image: every tabular line of the plan is long.
fn long_history() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let image = format!("ghcr.io/epics-containers/ioc-adaravis-runtime@{DIGEST}");
    std::fs::write(
        dir.path().join("ioc.yaml"),
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {NAME}, namespace: bl45p-beamline-namespace}}\n\
             spec:\n  template:\n    spec:\n      containers: [{{name: ioc, image: \"{image}\"}}]\n      \
             nodeSelector: {{beamline-node-label-that-is-long: bl45p-and-then-some-more-text}}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("node.yaml"),
        "apiVersion: v1\nkind: Node\nmetadata: {name: worker-1, labels: {zone: a}}\n",
    )
    .unwrap();
    dir
}

#[test]
fn plan_yaml_is_the_json_document() {
    let args = |o: &'static str| {
        [
            "plan",
            "--from",
            "tests/fixtures/history",
            "--node",
            "bl45p-ws001",
            "-o",
            o,
        ]
    };
    let json: Value = serde_json::from_slice(&rollcache(&args("json")).stdout).unwrap();
    let yaml = stdout(&rollcache(&args("yaml")));
    assert!(yaml.contains("revisions:"), "{yaml}");
    assert_eq!(yaml_value(&yaml), json);
}

#[test]
fn the_plan_table_fits_100_columns_and_wide_is_whole() {
    let dir = long_history();
    let run = |o: &str| {
        let out = rollcache(&[
            "plan",
            "--from",
            dir.path().to_str().unwrap(),
            "--node",
            "worker-1",
            "--hold-everything",
            "-o",
            o,
        ]);
        stdout(&out)
    };
    let wide = run("wide");
    assert!(wide.contains(&format!(
        "ghcr.io/epics-containers/ioc-adaravis-runtime@{DIGEST}"
    )));
    assert!(
        wide.contains(&format!("bl45p-beamline-namespace/{NAME}")),
        "{wide}"
    );
    assert!(wide.lines().any(|l| l.chars().count() > 100), "{wide}");
    let table = run("table");
    assert_fits(&table, 100);
    // The registry and the digest's end still tell the image.
    assert!(table.contains("ghcr.io/epics-containers/"), "{table}");
    assert!(table.contains("…"), "{table}");
    assert!(table.contains("456789abcdef"), "{table}");

    // Not held (the nodeSelector excludes worker-1): the table of revisions fits too.
    let out = rollcache(&[
        "plan",
        "--from",
        dir.path().to_str().unwrap(),
        "--node",
        "worker-1",
    ]);
    let table = stdout(&out);
    assert!(
        table.contains("Revisions not held on this node (1)"),
        "{table}"
    );
    assert_fits(&table, 100);
}

fn long_status() -> Status {
    let why = "container ioc: imagePullPolicy Always (the default for untagged images): the kubelet goes to the registry";
    Status {
        node: "bl45p-ws001".into(),
        runtime_reachable: true,
        can_pin: true,
        images_desired: 1,
        images_present: 1,
        images_pinned: 1,
        report: Report {
            workloads: vec![WorkloadReport {
                kind: "StatefulSet".into(),
                namespace: "bl45p-beamline-namespace".into(),
                name: NAME.into(),
                helm_release: Some(NAME.into()),
                revisions: vec![RevisionReport {
                    revision: Some(3),
                    helm_revision: Some(12),
                    status: Some("deployed".into()),
                    current: true,
                    sources: vec!["helm".into()],
                    readiness: Some(Readiness::NeedsRegistry),
                    not_here: None,
                    node_unknown: false,
                    reasons: vec![why.into()],
                    images: vec![],
                }],
            }],
            summary: [(Readiness::NeedsRegistry, 1)].into_iter().collect(),
        },
        ..Default::default()
    }
}

/// `status` and `prefetch` through a real admin listener, as `kubectl exec … rollcache status`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_prefetch_in_every_format() {
    let status = long_status();
    let doc = StatusDoc::from_value(&serde_json::to_value(&status).unwrap()).unwrap();
    let (_status_tx, status_rx) = watch::channel(doc);
    let (prefetch_tx, mut prefetch_rx) = mpsc::channel(4);
    let state = HttpState {
        metrics: Arc::new(Metrics::new()),
        health: Arc::new(Health::default()),
        status: status_rx,
        prefetch: prefetch_tx,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let cancel = CancellationToken::new();
    let server = tokio::spawn(serve_on(listener, admin_router(state), cancel.clone()));
    let answers = tokio::spawn(async move {
        while let Some(cmd) = prefetch_rx.recv().await {
            let _ = cmd.reply.send(Ok(PrefetchAccepted {
                images: cmd.request.images.clone(),
                already_present: 0,
            }));
        }
    });
    let run = move |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            stdout(&rollcache(&args))
        })
    };
    let status_in = |o: &str| {
        run(vec![
            "status".into(),
            "--addr".into(),
            addr.clone(),
            "-o".into(),
            o.into(),
        ])
    };
    let json: Value = serde_json::from_str(&status_in("json").await.unwrap()).unwrap();
    assert_eq!(json["node"], "bl45p-ws001");
    let yaml = status_in("yaml").await.unwrap();
    assert_eq!(yaml_value(&yaml), json, "{yaml}");

    let table = status_in("table").await.unwrap();
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_fits(&rows.join("\n"), 100);
    assert!(rows[1].contains("needs_registry"), "{table}");
    let wide = status_in("wide").await.unwrap();
    assert!(
        wide.contains(&format!("StatefulSet/bl45p-beamline-namespace/{NAME}")),
        "{wide}"
    );
    assert!(wide.contains("the kubelet goes to the registry"), "{wide}");

    let prefetch_in = |o: &str| {
        run(vec![
            "prefetch".into(),
            "--addr".into(),
            addr.clone(),
            "-o".into(),
            o.into(),
            "busybox:1.36".into(),
        ])
    };
    let json: Value = serde_json::from_str(&prefetch_in("json").await.unwrap()).unwrap();
    assert_eq!(json["images"], serde_json::json!(["busybox:1.36"]));
    assert_eq!(yaml_value(&prefetch_in("yaml").await.unwrap()), json);
    assert!(
        prefetch_in("table")
            .await
            .unwrap()
            .contains("prefetch queued for 1 image(s)")
    );

    cancel.cancel();
    let _ = server.await;
    answers.abort();
}

//! `rollcache check-rollback` and `rollcache cluster`, the binary against the in-test API server
//! with the CRD: a StatefulSet's ControllerRevisions and a Helm release's Secrets, Nodes whose
//! labels and taints make some of them eligible, RollcacheNodes applied to `/status` as the agent
//! applies them (its serde type, server-side apply); the exit codes scripts rely on.

mod common;

use std::process::{Command, Stdio};
use std::time::SystemTime;

use common::cli::*;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use rollcache_core::summary::{NodeSummary, NotSafe, rfc3339};
use rollcache_testbed::apiserver::{ApiServer, ApiServerOptions, Fault, rollcache_node_resource};
use rollcache_testbed::history::*;
use serde_json::{Value, json};

const NS: &str = "ioc";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A summary in `state`, observed `age` seconds ago, naming `listed` as not offline-safe.
fn summary(state: &str, age: i64, listed: Vec<NotSafe>) -> NodeSummary {
    let mut s = NodeSummary {
        state: state.into(),
        message: format!("{state}: as the agent says it"),
        history_generation: 7,
        observed_at: rfc3339(now() - age),
        not_offline_safe: listed,
        ..NodeSummary::default()
    };
    s.images.desired = 3;
    s.images.pinned = 2;
    s.revisions.offline_safe = 2;
    s
}

fn needs_registry(workload: &str, revision: Option<i64>, helm: Option<i64>) -> NotSafe {
    NotSafe {
        workload: workload.into(),
        revision,
        helm_release: helm.map(|_| "web".into()),
        helm_revision: helm,
        readiness: "needs_registry".into(),
        reason: "ioc (reg.example/ioc:latest): pull policy Always".into(),
    }
}

/// Writes `node`'s RollcacheNode as the agent does: the object owned by its Node, then its
/// status through the status subresource with server-side apply.
async fn publish(api: &ApiServer, node: &str, s: &NodeSummary) {
    let uid = api.get("Node", "", node).expect("node")["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_owned();
    api.apply(rollcache_node(node, &uid, json!({})))
        .expect("RollcacheNode");
    let rcn: Api<DynamicObject> =
        Api::all_with(api.client().expect("client"), &rollcache_node_resource());
    let body = json!({"apiVersion": "rollcache.io/v1alpha1", "kind": "RollcacheNode",
        "metadata": {"name": node}, "status": s});
    rcn.patch_status(
        node,
        &PatchParams::apply("rollcache").force(),
        &Patch::Apply(&body),
    )
    .await
    .expect("status applied");
}

/// Helm release `web` version `v` in NS: one Deployment running `image`.
fn web_release(v: i64, image: &str, status: &str) -> Value {
    let manifest = format!(
        "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  \
         selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        \
         app: web\n    spec:\n      containers:\n        - name: web\n          image: {image}\n"
    );
    helm::secret(&helm::release_json(
        "web",
        NS,
        v,
        status,
        "2025-01-10T09:00:00Z",
        &manifest,
        &[],
    ))
}

/// Four Nodes: n1, n2 at beamline bl01, n3 at bl02, n4 at bl01 but tainted; StatefulSet bl01
/// (revisions 1 to 3, required node affinity to bl01) and Helm release web (v1 to v3, anywhere).
async fn cluster(crd: bool) -> ApiServer {
    let api = ApiServer::start_with(ApiServerOptions {
        rollcache_crd: crd,
        ..Default::default()
    })
    .await
    .expect("test API server starts");
    for (name, location) in [("n1", "bl01"), ("n2", "bl01"), ("n3", "bl02")] {
        api.apply(node(name, json!({"location": location})))
            .expect("node");
    }
    let mut tainted = node("n4", json!({"location": "bl01"}));
    tainted["spec"]["taints"] = json!([{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]);
    api.apply(tainted).expect("node n4");
    for n in 1..=3 {
        let cr = controller_revision(NS, "bl01", n, &[&format!("reg.example/ioc:{n}")]);
        let mut cr = cr;
        // As the ioc-instance chart places an IOC: required node affinity on a location label.
        pod_spec(&mut cr)["affinity"] = json!({"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "location", "operator": "In", "values": ["bl01"]}]}
        ]}}});
        api.apply(cr).expect("controller revision");
    }
    for (v, image, status) in [
        (1, "reg.example/web:1", "superseded"),
        (2, "reg.example/web:2", "superseded"),
        (3, "reg.example/web:3", "deployed"),
    ] {
        api.apply(web_release(v, image, status)).expect("release");
    }
    api
}

fn nodes_of(doc: &Value, key: &str) -> Vec<String> {
    doc[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap().to_owned())
        .collect()
}

const STS: &[&str] = &["check-rollback", "sts/bl01", "-n", NS, "--to-revision", "2"];

fn with<'a>(base: &[&'a str], more: &[&'a str]) -> Vec<&'a str> {
    base.iter().chain(more).copied().collect()
}

/// Only the nodes the revision's pods could be scheduled on are asked: n3 (another beamline)
/// and n4 (an untolerated taint) are not, however bad their state; every asked one ready and
/// fresh is exit 0, one listing the revision as needing the registry is exit 1 with that reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_eligible_nodes_are_asked_and_each_must_be_ready_and_fresh() {
    let api = cluster(true).await;
    publish(&api, "n1", &summary("Ready", 20, vec![])).await;
    publish(&api, "n2", &summary("Cordoned", 200, vec![])).await;
    publish(&api, "n3", &summary("RuntimeDown", 20, vec![])).await;

    let out = rollcache(&api, &with(STS, &["-o", "json"])).await;
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let doc = json_of(&out);
    assert_eq!(nodes_of(&doc, "nodes"), ["n1", "n2"], "{doc:#}");
    assert_eq!(nodes_of(&doc, "notEligible"), ["n3", "n4"], "{doc:#}");
    let why: Vec<&str> = doc["notEligible"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["reason"].as_str().unwrap())
        .collect();
    assert!(why[0].starts_with("required node affinity"), "{why:?}");
    assert!(why[1].contains("dedicated=x:NoSchedule"), "{why:?}");
    assert_eq!(
        (doc["revision"].as_i64(), doc["ready"].as_bool()),
        (Some(2), Some(true))
    );

    // The table: one line per eligible node in 100 columns, the verdict last.
    let out = rollcache(&api, STS).await;
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.lines().all(|l| l.chars().count() <= 100), "{table}");
    assert!(
        table.starts_with("Rollback of StatefulSet/ioc/bl01 to revision 2\n"),
        "{table}"
    );
    assert!(
        table.contains("\nNODE  READY  REASON        OBSERVED\n"),
        "{table}"
    );
    assert!(table.contains("\nn1    yes    offline-safe"), "{table}");
    assert!(table.contains("2 node(s) not eligible"), "{table}");
    assert!(
        table.ends_with("READY: starts from the cache on all 2 eligible node(s)\n"),
        "{table}"
    );

    let listed = needs_registry("StatefulSet/ioc/bl01", Some(2), None);
    publish(&api, "n2", &summary("NotReady", 5, vec![listed])).await;
    let out = rollcache(&api, &with(STS, &["-o", "wide"])).await;
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "", "the table says why");
    let table = text(&out.stdout);
    let n2 = table.lines().find(|l| l.starts_with("n2 ")).expect(&table);
    assert!(
        n2.contains("no") && n2.contains("NotReady") && n2.contains(
            "StatefulSet/ioc/bl01 rev 2 needs_registry: ioc (reg.example/ioc:latest): pull policy Always"
        ),
        "{table}"
    );
    assert!(
        table.contains("n3 (required node affinity"),
        "wide says why: {table}"
    );
    assert!(
        table.ends_with(
            "NOT READY: 1 of 2 eligible node(s) would need the registry or cannot tell\n"
        ),
        "{table}"
    );
}

/// A summary older than `--max-age`, or none at all, is not an answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_or_missing_summary_is_not_ready() {
    let api = cluster(true).await;
    publish(&api, "n1", &summary("Ready", 20, vec![])).await;
    publish(&api, "n2", &summary("Ready", 1800, vec![])).await;
    let out = rollcache(&api, &with(STS, &["-o", "json"])).await;
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    let doc = json_of(&out);
    let n2 = &doc["nodes"][1];
    assert_eq!(
        (n2["node"].as_str(), n2["ready"].as_bool()),
        (Some("n2"), Some(false))
    );
    assert_eq!(
        n2["reason"], "summary stale: observed 30m ago, older than 10m",
        "{doc:#}"
    );
    // A longer limit believes it.
    let out = rollcache(&api, &with(STS, &["--max-age", "1h"])).await;
    assert_eq!(code(&out), 0, "{}", text(&out.stdout));

    assert!(api.delete("RollcacheNode", "", "n2"));
    let out = rollcache(&api, &with(STS, &["-o", "yaml"])).await;
    assert_eq!(code(&out), 1);
    let yaml = text(&out.stdout);
    assert!(yaml.contains("state: NoSummary"), "{yaml}");
    assert!(
        yaml.contains("no RollcacheNode: rollcache is not running on this node"),
        "{yaml}"
    );
}

/// Without `--to-revision` the previous revision is checked and the table says it was picked;
/// a revision that is not retained is exit 2 with one line listing those that are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_revision_is_picked_and_an_unknown_one_lists_the_retained() {
    let api = cluster(true).await;
    publish(&api, "n1", &summary("Ready", 20, vec![])).await;
    let listed = needs_registry("StatefulSet/ioc/bl01", Some(1), None);
    publish(&api, "n2", &summary("NotReady", 20, vec![listed])).await;
    let out = rollcache(&api, &["check-rollback", "StatefulSet/bl01", "-n", NS]).await;
    assert_eq!(
        code(&out),
        0,
        "revision 1 is not the target: {}",
        text(&out.stdout)
    );
    let table = text(&out.stdout);
    assert!(
        table.starts_with("Rollback of StatefulSet/ioc/bl01 to revision 2\n(the previous revision: what `kubectl rollout undo` picks without a number)\n")
            && table.lines().all(|l| l.chars().count() <= 100),
        "{table}"
    );
    let out = rollcache(&api, &with(&STS[..4], &["--to-revision", "1"])).await;
    assert_eq!(code(&out), 1, "{}", text(&out.stdout));

    // A workload's check reads only its controller's history: no Secrets needed.
    api.set_resource_fault("secrets", Some(Fault::Status(403)));
    let started = std::time::Instant::now();
    let out = rollcache(&api, &STS[..4]).await;
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(started.elapsed().as_secs() < 10, "{:?}", started.elapsed());
    api.set_resource_fault("secrets", None);

    // Without -n, the context's namespace, as kubectl; else `default`.
    let out = rollcache_in(&api, Some(NS), &["check-rollback", "sts/bl01"]).await;
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let out = rollcache(&api, &["check-rollback", "sts/bl01"]).await;
    assert_eq!(code(&out), 2);
    assert_eq!(
        text(&out.stderr),
        "error: StatefulSet/default/bl01: not found in the history (no ControllerRevisions of it; for what a Helm release deployed, use --helm-release RELEASE)\n"
    );

    for (args, want) in [
        (
            &["check-rollback", "sts/bl01", "-n", NS, "--to-revision", "7"][..],
            "error: StatefulSet/ioc/bl01: revision 7 is not retained; retained revisions: 1, 2, 3\n",
        ),
        (
            &["check-rollback", "deploy/bl01", "-n", NS],
            "error: Deployment/ioc/bl01: not found in the history (no ReplicaSets of it; for what a Helm release deployed, use --helm-release RELEASE)\n",
        ),
        (
            &["check-rollback", "pod/bl01", "-n", NS],
            "error: \"pod/bl01\": give the workload as KIND/NAME, KIND one of deployment, statefulset, daemonset (deploy, sts, ds)\n",
        ),
    ] {
        let out = rollcache(&api, args).await;
        assert_eq!(code(&out), 2, "{args:?}");
        assert_eq!(text(&out.stderr), want, "{args:?}");
    }
}

/// A Helm release revision checks every workload its manifest holds, matched in the summaries by
/// Helm revision; the release's Deployment has no constraints, so only the tainted n4 is left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_helm_release_revision_is_checked_on_every_node_it_could_run_on() {
    let api = cluster(true).await;
    for n in ["n1", "n2"] {
        publish(&api, n, &summary("Ready", 20, vec![])).await;
    }
    // Helm revision 1 of the release, and a controller revision 1 of bl01 that is another thing.
    let listed = vec![
        needs_registry("Deployment/ioc/web", None, Some(1)),
        needs_registry("StatefulSet/ioc/bl01", Some(2), None),
    ];
    publish(&api, "n3", &summary("NotReady", 20, listed)).await;
    let args = [
        "check-rollback",
        "--helm-release",
        "web",
        "-n",
        NS,
        "-o",
        "json",
    ];
    let out = rollcache(&api, &with(&args, &["--to-revision", "1"])).await;
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    let doc = json_of(&out);
    assert_eq!(nodes_of(&doc, "nodes"), ["n1", "n2", "n3"], "{doc:#}");
    assert_eq!(nodes_of(&doc, "notEligible"), ["n4"]);
    assert_eq!(doc["revisions"][0]["workload"], "Deployment/ioc/web");
    let n3 = &doc["nodes"][2];
    assert_eq!(n3["ready"], false);
    assert!(
        n3["reason"]
            .as_str()
            .unwrap()
            .starts_with("Deployment/ioc/web helm revision 1 needs_registry"),
        "{doc:#}"
    );
    // Without a number: helm rollback's previous, 2, which n3 does not list.
    let out = rollcache(&api, &args).await;
    assert_eq!(code(&out), 0, "{}", text(&out.stdout));
    let doc = json_of(&out);
    assert_eq!(
        (doc["revision"].as_i64(), doc["previous"].as_bool()),
        (Some(2), Some(true))
    );
}

/// `cluster`: every Node with its summary's counts; one without shows NoSummary, an old one is
/// marked stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_table_shows_every_node_and_marks_missing_and_stale_summaries() {
    let api = cluster(true).await;
    // Ages in whole minutes, so that the second the command runs in does not change the table.
    publish(&api, "n1", &summary("Ready", 300, vec![])).await;
    let listed = needs_registry("StatefulSet/ioc/bl01", Some(2), None);
    let mut n2 = summary("NotReady", 180, vec![listed]);
    n2.revisions.needs_registry = 1;
    publish(&api, "n2", &n2).await;
    publish(&api, "n3", &summary("Ready", 7200, vec![])).await;

    let out = rollcache(&api, &["cluster"]).await;
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0],
        "NODE  DESIRED  PINNED  SAFE  NEEDS-REGISTRY  FAILED  STATE          AGE"
    );
    assert_eq!(
        lines[1],
        "n1          3       2     2               0       0  Ready           5m"
    );
    assert_eq!(
        lines[2],
        "n2          3       2     2               1       0  NotReady        3m"
    );
    assert_eq!(
        lines[3],
        "n3          3       2     2               0       0  Ready (stale)   2h"
    );
    assert_eq!(
        lines[4],
        "n4          -       -     -               -       -  NoSummary        -"
    );

    let out = rollcache(&api, &["cluster", "-o", "json"]).await;
    let doc = json_of(&out);
    assert_eq!(nodes_of(&doc, "nodes"), ["n1", "n2", "n3", "n4"]);
    let n2 = &doc["nodes"][1];
    assert_eq!(n2["summary"]["notOfflineSafe"][0]["revision"], 2, "{doc:#}");
    assert_eq!(n2["summary"]["historyGeneration"], 7);
    assert_eq!(doc["nodes"][2]["stale"], true);
    assert_eq!(doc["nodes"][3]["state"], "NoSummary");
    assert!(doc["nodes"][3].get("summary").is_none());

    let out = rollcache(&api, &["cluster", "-o", "wide"]).await;
    let wide = text(&out.stdout);
    assert!(
        wide.lines()
            .next()
            .unwrap()
            .ends_with("AGE  GENERATION  MESSAGE"),
        "{wide}"
    );
    assert!(wide.contains("NotReady: as the agent says it"), "{wide}");
}

/// Without the CRD both commands say so in one line and exit 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_crd_both_commands_say_so_in_one_line() {
    let api = cluster(false).await;
    for args in [&["cluster"][..], STS] {
        let out = rollcache(&api, args).await;
        assert_eq!(code(&out), 2, "{args:?}");
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with(
                "error: the RollcacheNode CRD (rollcachenodes.rollcache.io) is not installed"
            ),
            "{err}"
        );
        assert_eq!(text(&out.stdout), "");
    }
}

/// An API server nobody answers on: one line naming it, exit 2, within seconds, as `plan`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_is_one_line_and_no_answer() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let home = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let config = kubeconfig(home.path(), &url);
    for args in [&["cluster"][..], STS] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rollcache"));
        cmd.args(args)
            .arg("--kubeconfig")
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        let started = std::time::Instant::now();
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        assert!(started.elapsed().as_secs() < 10, "{args:?}");
        assert_eq!(code(&out), 2, "{args:?}");
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!("cannot reach the Kubernetes API at {url}")),
            "{err}"
        );
    }
}

//! Safety rule 7 end to end (real containerd and registry, the daemon against the in-test API
//! server): cordon and the node lifecycle controller's taints never change what the node holds,
//! a missing or unreadable Node object means "unknown node" (nothing unpinned, constrained
//! revisions wait); each beside its control, where the unpin is right and does happen after the
//! grace period.

mod common;

use std::time::{Duration, Instant};

use common::daemon::*;
use common::*;
use rollcache::node::PinOwner;
use rollcache_testbed::apiserver::Fault;
use rollcache_testbed::history::*;
use serde_json::{Value, json};

const NS: &str = "apps";
const NODE: &str = "worker-1";
const SOON: Duration = Duration::from_secs(20);
/// The tests' unpin grace period.
const GRACE: Duration = Duration::from_secs(1);

fn settings(bed: &Bed) -> std::collections::BTreeMap<String, String> {
    let mut s = base_settings(bed.containerd.socket().as_path(), Some(NODE));
    s.insert("unpin_grace".into(), "1s".into());
    s
}

/// This node's Node object with `labels`, cordoned or not, with `taints` (`key`, `effect`).
fn node_object(labels: Value, cordoned: bool, taints: &[(&str, &str)]) -> Value {
    let mut n = node(NODE, labels);
    let taints: Vec<Value> = taints
        .iter()
        .map(|(k, e)| json!({"key": k, "effect": e}))
        .collect();
    n["spec"] = json!({"taints": taints});
    if cordoned {
        n["spec"]["unschedulable"] = json!(true);
    }
    n
}

async fn pinned_by_us(bed: &Bed, image: &str) -> bool {
    cri_image(&bed.node, image)
        .await
        .is_some_and(|i| i.pinned && i.pin_owner == PinOwner::Rollcache)
}

async fn assert_all_pinned(bed: &Bed, images: &[&str], when: &str) {
    for i in images {
        assert!(pinned_by_us(bed, i).await, "{i} unpinned {when}");
    }
}

fn unpins(m: &str) -> Option<f64> {
    metric(m, "rollcache_unpins_total{result=\"success\"}")
}

fn node_state(m: &str, state: &str) -> Option<f64> {
    metric(m, &format!("rollcache_node_state{{state=\"{state}\"}}"))
}

/// Waits for the unpin of `image` and checks it came no sooner than the grace period after
/// `since` and that the image stays (never deleted).
async fn expect_unpin_after_grace(bed: &Bed, image: &str, since: Instant) {
    wait_until(SOON, &format!("{image} unpinned"), || async {
        cri_image(&bed.node, image).await.is_some_and(|i| !i.pinned)
    })
    .await;
    let took = since.elapsed();
    assert!(
        took >= GRACE - Duration::from_millis(100),
        "{image} unpinned after {took:?}, within the grace period"
    );
    assert!(cri_image(&bed.node, image).await.is_some(), "never deleted");
}

/// `kubectl cordon` (spec.unschedulable and the unschedulable taint) keeps every pin, a
/// nodeSelector-constrained revision's included, for several grace periods, and `/status` and
/// the metrics say the node is cordoned. Control: a revision really removed from history while
/// the node is cordoned is unpinned after the grace period (cordon ignores only itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordon_keeps_every_pin_but_a_pruned_revision_is_still_unpinned() {
    let mut bed = Bed::start().await;
    let api = api().await;
    let (w1, _, _) = bed.push_small(301, "ns7/web:1");
    let (w2, _, _) = bed.push_small(302, "ns7/web:2");
    let (ioc, _, _) = bed.push_small(303, "ns7/ioc:1");
    api.apply(node_object(json!({"zone": "a"}), false, &[]))
        .expect("apply");
    api.apply(replicaset(NS, "web", 1, &[&w1], 0))
        .expect("apply");
    api.apply(replicaset(NS, "web", 2, &[&w2], 1))
        .expect("apply");
    api.apply(with_node_selector(
        controller_revision(NS, "ioc", 1, &[&ioc]),
        json!({"zone": "a"}),
    ))
    .expect("apply");
    let d = TestDaemon::start(&api, settings(&bed)).await;
    for i in [&w1, &w2, &ioc] {
        wait_pinned_by_us(&bed.node, i).await;
    }
    d.wait_status(SOON, "three revisions offline-safe", |s| {
        s["summary"]["offline_safe"] == 3 && s["node_state"]["known"] == true
    })
    .await;

    api.apply(node_object(
        json!({"zone": "a"}),
        true,
        &[("node.kubernetes.io/unschedulable", "NoSchedule")],
    ))
    .expect("cordon");
    let s = d
        .wait_status(SOON, "/status says cordoned", |s| {
            s["node_state"]["cordoned"] == true
        })
        .await;
    assert_eq!(
        s["node_state"]["ignored_taints"],
        json!(["node.kubernetes.io/unschedulable:NoSchedule"]),
        "{s:#}"
    );
    tokio::time::sleep(4 * GRACE).await;
    assert_all_pinned(&bed, &[&w1, &w2, &ioc], "while cordoned").await;
    let s = d.status().await;
    assert_eq!(s["summary"]["offline_safe"], 3, "{s:#}");
    assert_eq!(
        readiness(&s, "StatefulSet", NS, "ioc", 1).as_deref(),
        Some("offline_safe")
    );
    let m = d.metrics().await;
    assert_eq!(unpins(&m), None, "{m}");
    assert_eq!(node_state(&m, "cordoned"), Some(1.0), "{m}");
    assert_eq!(node_state(&m, "unknown"), Some(0.0), "{m}");

    // Control: history itself changes while cordoned.
    assert!(api.delete("ReplicaSet", NS, "web-1"));
    let pruned = Instant::now();
    expect_unpin_after_grace(&bed, &w1, pruned).await;
    assert_all_pinned(&bed, &[&w2, &ioc], "beside the pruned revision").await;

    api.apply(node_object(json!({"zone": "a"}), false, &[]))
        .expect("uncordon");
    d.wait_status(SOON, "/status says uncordoned", |s| {
        s["node_state"]["cordoned"] == false
    })
    .await;
    let m = d
        .metrics_when("rollcache_node_state{state=\"cordoned\"}", 0.0)
        .await;
    assert_eq!(node_state(&m, "cordoned"), Some(0.0), "{m}");
    assert_eq!(unpins(&m), Some(1.0), "{m}");
    d.stop().await;
}

/// Each taint the node lifecycle controller sets by itself, with the effect it uses, keeps
/// every pin (the revisions tolerate none of them) and is reported. Control: a real taint the
/// workloads do not tolerate (`dedicated=gpu:NoSchedule`) unpins them after the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_condition_taints_keep_the_pins_but_a_real_taint_unpins() {
    let mut bed = Bed::start().await;
    let api = api().await;
    let (w1, _, _) = bed.push_small(311, "ns7/cond:1");
    let (w2, _, _) = bed.push_small(312, "ns7/cond:2");
    let (ioc, _, _) = bed.push_small(313, "ns7/cond-ioc:1");
    api.apply(node_object(json!({"zone": "a"}), false, &[]))
        .expect("apply");
    api.apply(replicaset(NS, "cond", 1, &[&w1], 0))
        .expect("apply");
    api.apply(replicaset(NS, "cond", 2, &[&w2], 1))
        .expect("apply");
    api.apply(with_node_selector(
        controller_revision(NS, "ioc", 1, &[&ioc]),
        json!({"zone": "a"}),
    ))
    .expect("apply");
    let d = TestDaemon::start(&api, settings(&bed)).await;
    for i in [&w1, &w2, &ioc] {
        wait_pinned_by_us(&bed.node, i).await;
    }

    for (key, effect, state) in [
        ("node.kubernetes.io/not-ready", "NoExecute", "not_ready"),
        ("node.kubernetes.io/unreachable", "NoExecute", "unreachable"),
        (
            "node.kubernetes.io/memory-pressure",
            "NoSchedule",
            "memory_pressure",
        ),
        (
            "node.kubernetes.io/disk-pressure",
            "NoSchedule",
            "disk_pressure",
        ),
        (
            "node.kubernetes.io/pid-pressure",
            "NoSchedule",
            "pid_pressure",
        ),
        (
            "node.kubernetes.io/network-unavailable",
            "NoSchedule",
            "network_unavailable",
        ),
    ] {
        api.apply(node_object(json!({"zone": "a"}), false, &[(key, effect)]))
            .expect("taint");
        let taint = format!("{key}:{effect}");
        d.wait_status(SOON, &format!("/status reports {taint}"), |s| {
            s["node_state"]["ignored_taints"] == json!([taint])
        })
        .await;
        // Past the grace period from the moment the plan saw the taint.
        tokio::time::sleep(GRACE + Duration::from_millis(700)).await;
        assert_all_pinned(&bed, &[&w1, &w2, &ioc], &format!("under {taint}")).await;
        let m = d.metrics().await;
        assert_eq!(unpins(&m), None, "{taint}: {m}");
        assert_eq!(node_state(&m, state), Some(1.0), "{taint}: {m}");
    }

    // Control: a taint that says what the node may run.
    api.apply(node_object(
        json!({"zone": "a"}),
        false,
        &[("dedicated", "NoSchedule")],
    ))
    .expect("taint");
    let tainted = Instant::now();
    for i in [&w1, &w2, &ioc] {
        expect_unpin_after_grace(&bed, i, tainted).await;
    }
    let s = d
        .wait_status(SOON, "the report says why", |s| {
            revision(s, "Deployment", NS, "cond", 2)
                .is_some_and(|r| r["not_here"].as_str().is_some())
        })
        .await;
    let r = revision(&s, "Deployment", NS, "cond", 2).unwrap();
    assert!(
        r["not_here"]
            .as_str()
            .unwrap()
            .contains("untolerated taint dedicated"),
        "{r:#}"
    );
    d.stop().await;
}

/// The Node object deleted: nothing is unpinned for several grace periods (not the pins of the
/// nodeSelector-constrained revision, not even a revision pruned from history meanwhile), a new
/// constrained revision waits instead of being pulled or declared "not here", an unconstrained
/// one is pulled, and `/status` and the metrics say the node is unknown. The Node re-created:
/// normal operation resumes (the waiting revision is pulled, the pruned one unpinned after the
/// grace period). Control: the Node's labels changed to exclude the constrained revisions
/// unpins them after the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_node_is_unknown_and_unpins_nothing_until_it_returns() {
    let mut bed = Bed::start().await;
    let api = api().await;
    let (w1, _, _) = bed.push_small(321, "ns7/gone:1");
    let (w2, _, _) = bed.push_small(322, "ns7/gone:2");
    let (w3, _, _) = bed.push_small(323, "ns7/gone:3");
    let (i1, _, _) = bed.push_small(324, "ns7/gone-ioc:1");
    let (i2, _, _) = bed.push_small(325, "ns7/gone-ioc:2");
    api.apply(node_object(json!({"zone": "a"}), false, &[]))
        .expect("apply");
    api.apply(replicaset(NS, "gone", 1, &[&w1], 0))
        .expect("apply");
    api.apply(replicaset(NS, "gone", 2, &[&w2], 1))
        .expect("apply");
    api.apply(with_node_selector(
        controller_revision(NS, "ioc", 1, &[&i1]),
        json!({"zone": "a"}),
    ))
    .expect("apply");
    let d = TestDaemon::start(&api, settings(&bed)).await;
    for i in [&w1, &w2, &i1] {
        wait_pinned_by_us(&bed.node, i).await;
    }

    assert!(api.delete("Node", "", NODE));
    let s = d
        .wait_status(SOON, "/status says the node is unknown", |s| {
            s["node_state"]["known"] == false
        })
        .await;
    assert_eq!(
        s["node_state"]["unknown_reason"],
        format!("Node object {NODE} not found"),
        "{s:#}"
    );
    let ioc1 = revision(&s, "StatefulSet", NS, "ioc", 1).expect("reported");
    assert_eq!(ioc1["node_unknown"], true, "{ioc1:#}");
    assert!(
        ioc1["not_here"]
            .as_str()
            .is_some_and(|r| r.starts_with("node unknown: Node object worker-1 not found")),
        "{ioc1:#}"
    );
    // History changes while the node is unknown: a revision pruned, a constrained and an
    // unconstrained one added.
    assert!(api.delete("ReplicaSet", NS, "gone-1"));
    api.apply(with_node_selector(
        controller_revision(NS, "ioc", 2, &[&i2]),
        json!({"zone": "a"}),
    ))
    .expect("apply");
    api.apply(replicaset(NS, "gone", 3, &[&w3], 1))
        .expect("apply");
    wait_pinned_by_us(&bed.node, &w3).await;
    d.wait_status(SOON, "the new revisions reported", |s| {
        revision(s, "StatefulSet", NS, "ioc", 2).is_some()
            && revision(s, "Deployment", NS, "gone", 1).is_none()
    })
    .await;
    tokio::time::sleep(3 * GRACE).await;
    assert_all_pinned(&bed, &[&w1, &w2, &i1, &w3], "while the node is unknown").await;
    assert!(
        cri_image(&bed.node, &i2).await.is_none(),
        "a constrained revision waits for the node"
    );
    let s = d.status().await;
    let ioc2 = revision(&s, "StatefulSet", NS, "ioc", 2).expect("reported");
    assert_eq!(ioc2["node_unknown"], true, "{ioc2:#}");
    assert!(
        rollcache::status::render_table(&serde_json::from_value(s.clone()).unwrap())
            .contains("node: UNKNOWN (Node object worker-1 not found)")
    );
    let m = d.metrics().await;
    assert_eq!(unpins(&m), None, "{m}");
    assert_eq!(node_state(&m, "unknown"), Some(1.0), "{m}");

    api.apply(node_object(json!({"zone": "a"}), false, &[]))
        .expect("re-register");
    let back = Instant::now();
    wait_pinned_by_us(&bed.node, &i2).await;
    expect_unpin_after_grace(&bed, &w1, back).await;
    assert_all_pinned(&bed, &[&w2, &w3, &i1, &i2], "after the node came back").await;
    let s = d
        .wait_status(SOON, "known again", |s| s["node_state"]["known"] == true)
        .await;
    assert_eq!(
        readiness(&s, "StatefulSet", NS, "ioc", 2).as_deref(),
        Some("offline_safe"),
        "{s:#}"
    );

    // Control: labels that really exclude the constrained revisions.
    api.apply(node_object(json!({"zone": "b"}), false, &[]))
        .expect("relabel");
    let relabelled = Instant::now();
    expect_unpin_after_grace(&bed, &i1, relabelled).await;
    expect_unpin_after_grace(&bed, &i2, relabelled).await;
    assert_all_pinned(&bed, &[&w2, &w3], "unconstrained, after the relabel").await;
    let m = d
        .metrics_when("rollcache_node_state{state=\"unknown\"}", 0.0)
        .await;
    assert_eq!(node_state(&m, "unknown"), Some(0.0), "{m}");
    d.stop().await;
}

/// The first revision of workload `name` in a `/status` report.
fn first_revision<'a>(s: &'a Value, name: &str) -> Option<&'a Value> {
    s["workloads"]
        .as_array()?
        .iter()
        .find(|w| w["name"] == name)?["revisions"]
        .get(0)
}

fn deployment_yaml(name: &str, image: &str, zone: Option<&str>) -> String {
    let selector = zone
        .map(|z| format!("      nodeSelector:\n        zone: {z}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: {NS}\nspec:\n  \
         template:\n    spec:\n{selector}      containers:\n      - name: main\n        image: {image}\n"
    )
}

/// The same rule with a directory as the only source and the node named in the config: no
/// Node object in the directory means an unknown node (constrained revisions wait, nothing is
/// unpinned, even a workload removed from the directory); the Node written into the directory
/// makes it known and normal operation resumes (control: the removed workload is unpinned after
/// the grace period).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_without_the_node_object_is_an_unknown_node() {
    let mut bed = Bed::start().await;
    let api = api().await;
    let (web, _, _) = bed.push_small(331, "ns7/dir-web:1");
    let (ioc, _, _) = bed.push_small(332, "ns7/dir-ioc:1");
    let dir = tempfile::tempdir().unwrap();
    let write = |file: &str, text: String| std::fs::write(dir.path().join(file), text).unwrap();
    write("web.yaml", deployment_yaml("web", &web, None));
    write("ioc.yaml", deployment_yaml("ioc", &ioc, Some("a")));
    let mut s = settings(&bed);
    s.insert("kubernetes".into(), "false".into());
    s.insert("from_dir".into(), format!("\"{}\"", dir.path().display()));
    let d = TestDaemon::start(&api, s).await;

    wait_pinned_by_us(&bed.node, &web).await;
    let s = d
        .wait_status(SOON, "the node is unknown, the IOC waits", |s| {
            s["node_state"]["known"] == false
                && first_revision(s, "ioc").is_some_and(|r| r["node_unknown"] == true)
        })
        .await;
    assert_eq!(
        s["node_state"]["unknown_reason"],
        format!("Node object {NODE} not found"),
        "{s:#}"
    );
    assert!(
        cri_image(&bed.node, &ioc).await.is_none(),
        "waits for the node"
    );

    let node_yaml =
        format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: {NODE}\n  labels:\n    zone: a\n");
    write("node.yaml", node_yaml.clone());
    wait_pinned_by_us(&bed.node, &ioc).await;
    d.wait_status(SOON, "known", |s| s["node_state"]["known"] == true)
        .await;

    std::fs::remove_file(dir.path().join("node.yaml")).unwrap();
    d.wait_status(SOON, "unknown again", |s| s["node_state"]["known"] == false)
        .await;
    std::fs::remove_file(dir.path().join("web.yaml")).unwrap();
    d.wait_status(SOON, "web gone from the report", |s| {
        first_revision(s, "web").is_none()
    })
    .await;
    tokio::time::sleep(3 * GRACE).await;
    assert_all_pinned(&bed, &[&web, &ioc], "while the node is unknown").await;
    assert_eq!(unpins(&d.metrics().await), None);

    // Control: with the Node back, the removed workload is unpinned after the grace period.
    write("node.yaml", node_yaml);
    let back = Instant::now();
    expect_unpin_after_grace(&bed, &web, back).await;
    assert_all_pinned(&bed, &[&ioc], "the IOC on its node").await;
    d.stop().await;
}

/// RBAC that denies `nodes` (403 on every request for them): the daemon restarted under it
/// cannot read its Node, so the node is unknown and says why; nothing is unpinned, not even a
/// revision history pruned meanwhile, and a constrained revision's pin stays. Control: once the
/// Node can be read again, the pruned revision is unpinned after the grace period and the
/// constrained one, which the Node's labels admit, stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_denying_nodes_makes_the_node_unknown_and_unpins_nothing() {
    let mut bed = Bed::start().await;
    let api = api().await;
    let (w1, _, _) = bed.push_small(341, "ns7/denied:1");
    let (w2, _, _) = bed.push_small(342, "ns7/denied:2");
    let (i1, _, _) = bed.push_small(343, "ns7/denied-ioc:1");
    api.apply(node_object(json!({"zone": "a"}), false, &[]))
        .expect("apply");
    api.apply(replicaset(NS, "denied", 1, &[&w1], 0))
        .expect("apply");
    api.apply(replicaset(NS, "denied", 2, &[&w2], 1))
        .expect("apply");
    api.apply(with_node_selector(
        controller_revision(NS, "ioc", 1, &[&i1]),
        json!({"zone": "a"}),
    ))
    .expect("apply");
    let d = TestDaemon::start(&api, settings(&bed)).await;
    for i in [&w1, &w2, &i1] {
        wait_pinned_by_us(&bed.node, i).await;
    }
    d.stop().await;

    api.set_resource_fault("nodes", Some(Fault::Status(403)));
    assert!(api.delete("ReplicaSet", NS, "denied-1"), "history prunes");
    let d = TestDaemon::start(&api, settings(&bed)).await;
    let s = d
        .wait_status(SOON, "the node is unknown: its Node cannot be read", |s| {
            s["node_state"]["known"] == false
                && s["node_state"]["unknown_reason"]
                    .as_str()
                    .is_some_and(|r| r.starts_with(&format!("Node object {NODE} cannot be read")))
                && revision(s, "Deployment", NS, "denied", 1).is_none()
        })
        .await;
    assert!(
        s["node_state"]["unknown_reason"]
            .as_str()
            .is_some_and(|r| r.contains("forbidden") || r.contains("403")),
        "the reason names the refusal: {:#}",
        s["node_state"]
    );
    let until = Instant::now() + 4 * GRACE;
    while Instant::now() < until {
        assert_all_pinned(&bed, &[&w1, &w2, &i1], "while nodes are denied").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let m = d.metrics().await;
    assert_eq!(unpins(&m).unwrap_or(0.0), 0.0, "{m}");
    assert_eq!(node_state(&m, "unknown"), Some(1.0), "{m}");

    let lifted = Instant::now();
    api.set_resource_fault("nodes", None);
    d.wait_status(SOON, "the node is known again", |s| {
        s["node_state"]["known"] == true
    })
    .await;
    expect_unpin_after_grace(&bed, &w1, lifted).await;
    assert_all_pinned(&bed, &[&w2, &i1], "once the Node is readable").await;
    d.stop().await;
}

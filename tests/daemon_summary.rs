//! The node summary each agent publishes as a `RollcacheNode`: the daemon against the in-test API
//! server (CRD, status subresource, server-side apply, cascading delete) and a real containerd.

mod common;

use std::time::{Duration, Instant};

use common::daemon::*;
use common::*;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams};
use rollcache_testbed::apiserver::{ApiServer, ApiServerOptions};
use rollcache_testbed::history::*;
use serde_json::{Value, json};

const NS: &str = "apps";
const NODE: &str = "n1";
const SOON: Duration = Duration::from_secs(20);

async fn api_with_crd(crd: bool) -> (ApiServer, String) {
    let api = ApiServer::start_with(ApiServerOptions {
        rollcache_crd: crd,
        ..Default::default()
    })
    .await
    .expect("test API server starts");
    let node = api.apply(node(NODE, json!({}))).expect("node");
    let uid = node["metadata"]["uid"].as_str().expect("uid").to_owned();
    (api, uid)
}

/// The stored summary once `pred` holds on it; panics with the last one after `within`.
async fn wait_summary(
    api: &ApiServer,
    within: Duration,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let got = api.get("RollcacheNode", "", NODE);
        if let Some(o) = got.as_ref().filter(|o| pred(o)) {
            return o.clone();
        }
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for: {what}\nlast: {got:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// With the CRD: a summary whose counts are `/status`'s, naming the revision that needs the
/// registry and why, owned by the Node; a new revision shows up within the publishing interval;
/// deleting the Node through the API takes the summary with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_matches_status_follows_changes_and_goes_with_its_node() {
    logs::capture();
    let mut bed = Bed::start().await;
    let (api, uid) = api_with_crd(true).await;
    let (ioc1, _, _) = bed.push_small(701, "rcn/ioc:1");
    let (ioc2, _, _) = bed.push_small(702, "rcn/ioc:2");
    let (web, _, _) = bed.push_small(703, "rcn/web:1");
    api.apply(controller_revision(NS, "ioc", 1, &[&ioc1]))
        .expect("apply");
    api.apply(with_pull_policy(
        replicaset(NS, "web", 1, &[&web], 1),
        "Always",
    ))
    .expect("apply");
    let d = TestDaemon::start(
        &api,
        base_settings(bed.containerd.socket().as_path(), Some(NODE)),
    )
    .await;
    let s = d
        .wait_status(SOON, "one offline-safe, one needing the registry", |s| {
            s["summary"]["offline_safe"] == 1 && s["summary"]["needs_registry"] == 1
        })
        .await;

    let o = wait_summary(&api, SOON, "the summary shows both revisions", |o| {
        o["status"]["revisions"]["offlineSafe"] == 1
            && o["status"]["revisions"]["needsRegistry"] == 1
    })
    .await;
    let st = &o["status"];
    assert_eq!(st["images"]["desired"], s["images_desired"], "{o:#}");
    assert_eq!(st["images"]["present"], s["images_present"], "{o:#}");
    assert_eq!(st["images"]["pinned"], s["images_pinned"], "{o:#}");
    assert_eq!(st["revisions"]["total"], 2);
    assert_eq!(st["state"], "NotReady", "{o:#}");
    let listed = st["notOfflineSafe"].as_array().expect("listed");
    assert_eq!(listed.len(), 1, "{o:#}");
    assert_eq!(listed[0]["workload"], format!("Deployment/{NS}/web"));
    assert_eq!(listed[0]["readiness"], "needs_registry");
    let reason = listed[0]["reason"].as_str().expect("reason");
    let in_status = revision(&s, "Deployment", NS, "web", 1).expect("web in /status")["reasons"][0]
        .as_str()
        .expect("a reason in /status")
        .to_owned();
    assert!(
        !reason.is_empty() && reason.contains(&in_status),
        "{reason} vs {in_status}"
    );
    assert!(
        st["observedAt"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{o:#}"
    );
    let owner = &o["metadata"]["ownerReferences"][0];
    assert_eq!(
        (
            &owner["apiVersion"],
            &owner["kind"],
            &owner["name"],
            &owner["uid"]
        ),
        (&json!("v1"), &json!("Node"), &json!(NODE), &json!(uid))
    );
    assert_eq!(
        (&owner["controller"], &owner["blockOwnerDeletion"]),
        (&json!(false), &json!(false))
    );

    // A new revision: published within the 10 s interval of /status showing it.
    api.apply(controller_revision(NS, "ioc", 2, &[&ioc2]))
        .expect("apply");
    d.wait_status(SOON, "the new revision offline-safe", |s| {
        s["summary"]["offline_safe"] == 2
    })
    .await;
    let seen = Instant::now();
    let o = wait_summary(&api, SOON, "the new revision in the summary", |o| {
        o["status"]["revisions"]["offlineSafe"] == 2
    })
    .await;
    assert!(
        seen.elapsed() < Duration::from_secs(12),
        "published {:?} after /status",
        seen.elapsed()
    );
    let generation = o["status"]["historyGeneration"]
        .as_u64()
        .expect("generation");
    assert!(generation > 0, "{o:#}");

    let nodes: Api<Node> = Api::all(api.client().expect("client"));
    nodes
        .delete(NODE, &DeleteParams::default())
        .await
        .expect("delete the Node");
    assert!(
        api.get("RollcacheNode", "", NODE).is_none(),
        "the summary goes with its Node"
    );
    d.stop().await;
}

/// Without the CRD the agent pins as usual; once the CRD is installed it publishes (it looks
/// again at every resync).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_crd_the_agent_carries_on_and_publishes_once_it_is_installed() {
    logs::capture();
    let started = Instant::now();
    let mut bed = Bed::start().await;
    let (api, _) = api_with_crd(false).await;
    let (ioc, _, _) = bed.push_small(711, "rcn/nocrd:1");
    api.apply(controller_revision(NS, "ioc", 1, &[&ioc]))
        .expect("apply");
    let mut settings = base_settings(bed.containerd.socket().as_path(), Some(NODE));
    settings.insert("resync_interval".into(), "2s".into());
    let d = TestDaemon::start(&api, settings).await;
    wait_pinned_by_us(&bed.node, &ioc).await;
    d.wait_status(SOON, "offline-safe without the CRD", |s| {
        s["summary"]["offline_safe"] == 1
    })
    .await;
    assert!(api.get("RollcacheNode", "", NODE).is_none());
    // Looked again every 10 s (the resync, 2 s here, is below the publishing interval): said once.
    tokio::time::sleep(Duration::from_secs(25).saturating_sub(started.elapsed())).await;
    assert_eq!(
        logs::lines("CRD (rollcachenodes.rollcache.io) is not installed"),
        1
    );

    api.install_rollcache_crd();
    let o = wait_summary(
        &api,
        Duration::from_secs(30),
        "published once the CRD is installed",
        |o| o["status"]["revisions"]["offlineSafe"] == 1,
    )
    .await;
    assert_eq!(o["status"]["state"], "Ready", "{o:#}");
    assert!(d.status().await["summary"]["offline_safe"] == 1);
    d.stop().await;
}

//! `check-rollback` and `cluster` end to end: a real agent on a real containerd publishes its
//! node's summary to the in-test API server, and the binary's answer follows what it published.

mod common;

use std::time::{Duration, Instant};

use common::cli::*;
use common::daemon::*;
use common::*;
use rollcache_testbed::apiserver::{ApiServer, ApiServerOptions};
use rollcache_testbed::history::*;
use serde_json::{Value, json};

const NS: &str = "apps";

/// n1's summary once `pred` holds on its status.
async fn wait_summary(api: &ApiServer, what: &str, pred: impl Fn(&Value) -> bool) {
    let start = Instant::now();
    loop {
        let got = api.get("RollcacheNode", "", "n1");
        if got.as_ref().is_some_and(|o| pred(&o["status"])) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for: {what}\nlast: {got:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// StatefulSet `ioc` required at location bl01: revision 1 with `imagePullPolicy: Always` (the
/// kubelet would ask the registry), revision 2 (current) plain. The agent on n1 (bl01) pulls and
/// pins both; n2 (bl02) could run neither and has no agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_follows_what_the_agent_published() {
    let mut bed = Bed::start().await;
    let api = ApiServer::start_with(ApiServerOptions {
        rollcache_crd: true,
        ..Default::default()
    })
    .await
    .expect("test API server starts");
    api.apply(node("n1", json!({"location": "bl01"})))
        .expect("n1");
    api.apply(node("n2", json!({"location": "bl02"})))
        .expect("n2");
    let (ioc1, _, _) = bed.push_small(801, "crb/ioc:1");
    let (ioc2, _, _) = bed.push_small(802, "crb/ioc:2");
    let at_bl01 = |cr| with_node_selector(cr, json!({"location": "bl01"}));
    let always = with_pull_policy(controller_revision(NS, "ioc", 1, &[&ioc1]), "Always");
    api.apply(at_bl01(always)).expect("revision 1");
    api.apply(at_bl01(controller_revision(NS, "ioc", 2, &[&ioc2])))
        .expect("revision 2");
    let daemon = TestDaemon::start(
        &api,
        base_settings(bed.containerd.socket().as_path(), Some("n1")),
    )
    .await;
    wait_summary(
        &api,
        "revision 2 offline-safe, 1 needing the registry",
        |s| s["revisions"]["offlineSafe"] == 1 && s["revisions"]["needsRegistry"] == 1,
    )
    .await;

    // Without a number: revision 1, the previous one, which the agent says needs the registry.
    let out = rollcache(&api, &["check-rollback", "sts/ioc", "-n", NS, "-o", "json"]).await;
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    let doc = json_of(&out);
    assert_eq!(
        (doc["revision"].as_i64(), doc["previous"].as_bool()),
        (Some(1), Some(true))
    );
    assert_eq!(doc["nodes"].as_array().map(Vec::len), Some(1), "{doc:#}");
    assert_eq!(doc["nodes"][0]["node"], "n1");
    let reason = doc["nodes"][0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("StatefulSet/apps/ioc rev 1 needs_registry: ") && reason.contains(&ioc1),
        "{reason}"
    );
    assert_eq!(doc["notEligible"][0]["node"], "n2", "{doc:#}");

    let out = rollcache(
        &api,
        &["check-rollback", "sts/ioc", "-n", NS, "--to-revision", "2"],
    )
    .await;
    assert_eq!(code(&out), 0, "{}", text(&out.stdout));

    let out = rollcache(&api, &["cluster", "-o", "json"]).await;
    let doc = json_of(&out);
    let states: Vec<_> = doc["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["node"].as_str().unwrap(), n["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [("n1", "NotReady"), ("n2", "NoSummary")], "{doc:#}");
    daemon.stop().await;
}

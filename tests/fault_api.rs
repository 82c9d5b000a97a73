//! Faults on the Kubernetes API side, with the daemon running end to end against the in-test API
//! server, a real containerd and registry: a long outage spanning a daemon restart, and a watch
//! whose resource version was compacted away (410 Gone).

mod common;

use std::time::{Duration, Instant};

use common::daemon::*;
use common::*;
use rollcache::node::{Node, PinOwner};
use rollcache_testbed::apiserver::ApiServer;
use rollcache_testbed::history::*;

const NS: &str = "apps";
const SOON: Duration = Duration::from_secs(20);

async fn pinned_by_us(node: &Node, reference: &str) -> bool {
    cri_image(node, reference)
        .await
        .is_some_and(|i| i.pinned && i.pin_owner == PinOwner::Rollcache)
}

fn fresh(s: &serde_json::Value) -> bool {
    s["sources"].as_array().is_some_and(|a| {
        !a.is_empty()
            && a.iter()
                .all(|x| x["synced"] == true && x.get("error").is_none())
    })
}

/// The API server is gone for many grace periods (1 s here, standing in for minutes), and the
/// daemon restarts in the middle of it, so the new daemon has no history at all: nothing is
/// unpinned, `/readyz` stays 503 and `/status` says the sources are not synced. When the API
/// returns, only what history really pruned is unpinned, after the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_api_outage_across_a_daemon_restart_unpins_nothing() {
    let mut bed = Bed::start().await;
    let api = ApiServer::start().await.expect("API server");
    let (old, _, _) = bed.push_small(301, "fault/api:1");
    let (new, _, _) = bed.push_small(302, "fault/api:2");
    api.apply(replicaset(NS, "api", 1, &[&old], 0))
        .expect("apply");
    api.apply(replicaset(NS, "api", 2, &[&new], 1))
        .expect("apply");
    let mut settings = base_settings(bed.containerd.socket().as_path(), None);
    settings.insert("unpin_grace".into(), "1s".into());
    let d = TestDaemon::start(&api, settings.clone()).await;
    wait_until(SOON, "both pinned", || async {
        pinned_by_us(&bed.node, &old).await && pinned_by_us(&bed.node, &new).await
    })
    .await;
    d.stop().await;

    api.set_down(true);
    assert!(
        api.delete("ReplicaSet", NS, "api-1"),
        "history now says prune"
    );
    let d = TestDaemon::start(&api, settings).await;
    let s = d
        .wait_status(SOON, "a report from the restarted daemon", |s| {
            s["runtime_reachable"] == true
        })
        .await;
    assert!(
        s["sources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["synced"] == false),
        "nothing synced while the API is down: {:#}",
        s["sources"]
    );
    // Eight grace periods without any history.
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        assert!(
            pinned_by_us(&bed.node, &old).await,
            "unpinned during the outage"
        );
        assert!(
            pinned_by_us(&bed.node, &new).await,
            "unpinned during the outage"
        );
        assert_eq!(d.get("/readyz").await.0, 503);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let m = d.metrics().await;
    assert_eq!(
        metric(&m, "rollcache_unpins_total{result=\"success\"}"),
        None,
        "{m}"
    );
    assert_eq!(
        metric(&m, "rollcache_pulls_total{result=\"success\"}"),
        None,
        "{m}"
    );

    api.set_down(false);
    let back = Instant::now();
    d.wait_status(Duration::from_secs(40), "fresh again", fresh)
        .await;
    let fresh_after = back.elapsed();
    wait_until(SOON, "the pruned revision's image is unpinned", || async {
        cri_image(&bed.node, &old).await.is_some_and(|i| !i.pinned)
    })
    .await;
    // The grace period starts when the view is fresh (less a margin for observing it here).
    assert!(back.elapsed() >= fresh_after + Duration::from_millis(700));
    assert!(cri_image(&bed.node, &old).await.is_some(), "never deleted");
    assert!(
        pinned_by_us(&bed.node, &new).await,
        "the current revision stays pinned"
    );
    d.wait_status(SOON, "current revision offline-safe", |s| {
        readiness(s, "Deployment", NS, "api", 2).as_deref() == Some("offline_safe")
            && s["summary"]["offline_safe"] == 1
    })
    .await;
    assert_eq!(d.get("/readyz").await.0, 200);
    d.stop().await;
}

/// The watches' resource version is compacted away while they are cut (`410 Gone` when they
/// resume): the daemon re-lists, picks up what changed meanwhile (a new revision pulled, a
/// deleted one unpinned after the grace period) and pulls nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_410_gone_relists_without_duplicate_pulls() {
    let mut bed = Bed::start().await;
    let api = ApiServer::start().await.expect("API server");
    let (one, _, _) = bed.push_small(311, "fault/gone:1");
    let (two, _, _) = bed.push_small(312, "fault/gone:2");
    let (three, _, _) = bed.push_small(313, "fault/gone:3");
    api.apply(replicaset(NS, "gone", 1, &[&one], 0))
        .expect("apply");
    api.apply(replicaset(NS, "gone", 2, &[&two], 1))
        .expect("apply");
    let d = TestDaemon::start(&api, base_settings(bed.containerd.socket().as_path(), None)).await;
    wait_until(SOON, "both pinned", || async {
        pinned_by_us(&bed.node, &one).await && pinned_by_us(&bed.node, &two).await
    })
    .await;
    let manifests = || bed.registry.request_count("/v2/fault/gone/manifests/");
    let per_pull = manifests() / 2;
    assert!(per_pull > 0);

    // Changes the watches miss, then compaction: resuming from their version gets 410, so the
    // deletion below can only be learnt by a re-list.
    api.set_down(true);
    d.wait_status(SOON, "sources in error", |s| !fresh(s)).await;
    api.apply(replicaset(NS, "gone", 3, &[&three], 1))
        .expect("apply");
    api.apply(replicaset(NS, "gone", 2, &[&two], 0))
        .expect("apply");
    assert!(api.delete("ReplicaSet", NS, "gone-1"));
    api.compact();
    api.set_down(false);

    wait_until(
        Duration::from_secs(40),
        "the new revision is pinned",
        || async { pinned_by_us(&bed.node, &three).await },
    )
    .await;
    d.wait_status(Duration::from_secs(40), "the re-listed view", |s| {
        fresh(s)
            && revision(s, "Deployment", NS, "gone", 1).is_none()
            && readiness(s, "Deployment", NS, "gone", 3).as_deref() == Some("offline_safe")
            && readiness(s, "Deployment", NS, "gone", 2).as_deref() == Some("offline_safe")
    })
    .await;
    wait_until(SOON, "the deleted revision's image is unpinned", || async {
        cri_image(&bed.node, &one).await.is_some_and(|i| !i.pinned)
    })
    .await;
    assert!(cri_image(&bed.node, &one).await.is_some(), "never deleted");
    assert_eq!(manifests(), 3 * per_pull, "each image pulled exactly once");
    let m = d
        .metrics_when("rollcache_pulls_total{result=\"success\"}", 3.0)
        .await;
    assert_eq!(
        metric(&m, "rollcache_pulls_total{result=\"success\"}"),
        Some(3.0),
        "{m}"
    );
    d.stop().await;
}

//! `rollcache run` end to end: the in-test Kubernetes API server (real list/watch protocol), a real
//! containerd and registry, the daemon in-process with its HTTP listeners; every check goes
//! through what an operator sees (CRI, `/status`, `/metrics`, the CLI).

mod common;

use std::time::{Duration, Instant};

use common::daemon::*;
use common::proxy::Proxy;
use common::*;
use rollcache::node::{Node, PinOwner};
use rollcache_testbed::apiserver::Fault;
use rollcache_testbed::containerd::Containerd;
use rollcache_testbed::history::*;
use rollcache_testbed::oci::{ImageSpec, LayerSpec, Platform};
use serde_json::json;

const NS: &str = "apps";
const SOON: Duration = Duration::from_secs(15);

/// A new revision from each history source (ReplicaSet, ControllerRevision, Helm release Secret)
/// is pulled and pinned by rollcache; the pull starts within about a second of the apply; CRI,
/// `/status` and `/metrics` agree that each revision is offline-safe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_revisions_are_pulled_and_pinned_promptly() {
    let mut bed = Bed::start().await;
    let api = api().await;
    let (rs_img, _, rs_digest) = bed.push_small(101, "e2e/web:1");
    let (cr_img, _, _) = bed.push_small(102, "e2e/ioc:1");
    let (helm_img, _, _) = bed.push_small(103, "e2e/chart-app:1");
    let d = TestDaemon::start(&api, base_settings(bed.containerd.socket().as_path(), None)).await;
    d.wait_status(SOON, "sources synced", sources_fresh).await;

    let before = bed.registry.request_count("/v2/e2e/web/manifests/");
    let applied = Instant::now();
    api.apply(replicaset(NS, "web", 1, &[&rs_img], 1))
        .expect("apply");
    let started = wait_until(SOON, "the registry sees the pull of e2e/web:1", || async {
        bed.registry.request_count("/v2/e2e/web/manifests/") > before
    })
    .await;
    assert!(
        started < Duration::from_millis(1500),
        "the pull started {started:?} after the apply (want about 1 s)"
    );
    api.apply(controller_revision(NS, "ioc", 1, &[&cr_img]))
        .expect("apply");
    api.apply(helm::deployment_release(NS, "chart-app", 1, &helm_img))
        .expect("apply");

    for r in [&rs_img, &cr_img, &helm_img] {
        wait_pinned_by_us(&bed.node, r).await;
    }
    let s = d
        .wait_status(SOON, "three revisions offline-safe", |s| {
            s["summary"]["offline_safe"] == 3
        })
        .await;
    assert!(applied.elapsed() < SOON);
    assert_eq!(
        readiness(&s, "Deployment", NS, "web", 1).as_deref(),
        Some("offline_safe")
    );
    assert_eq!(
        readiness(&s, "StatefulSet", NS, "ioc", 1).as_deref(),
        Some("offline_safe")
    );
    let web = revision(&s, "Deployment", NS, "web", 1).expect("web revision reported");
    assert_eq!(
        web["images"][0]["cached_digest"],
        format!("{}/e2e/web@{rs_digest}", bed.registry.addr()),
        "the report names the digest the tag pointed to"
    );
    let chart = s["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "chart-app")
        .expect("the Helm release's workload is reported");
    assert_eq!(
        chart["revisions"][0]["readiness"], "offline_safe",
        "{chart:#}"
    );
    assert_eq!(s["images_pinned"], 3);

    let m = d
        .metrics_when("rollcache_pulls_total{result=\"success\"}", 3.0)
        .await;
    assert_eq!(metric(&m, "rollcache_images_pinned"), Some(3.0), "{m}");
    assert_eq!(metric(&m, "rollcache_images_missing"), Some(0.0), "{m}");
    assert_eq!(
        metric(&m, "rollcache_revisions{readiness=\"offline_safe\"}"),
        Some(3.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "rollcache_pulls_total{result=\"success\"}"),
        Some(3.0),
        "{m}"
    );
    d.stop().await;
}

/// A revision pruned from history (its ReplicaSet deleted) is unpinned only once the grace
/// period has passed, and its image is never deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruned_revision_is_unpinned_after_the_grace_period_and_never_deleted() {
    let mut bed = Bed::start().await;
    let api = api().await;
    let (old, _, _) = bed.push_small(111, "e2e/prune:1");
    let (new, _, _) = bed.push_small(112, "e2e/prune:2");
    api.apply(replicaset(NS, "prune", 1, &[&old], 0))
        .expect("apply");
    api.apply(replicaset(NS, "prune", 2, &[&new], 1))
        .expect("apply");
    let d = TestDaemon::start(&api, base_settings(bed.containerd.socket().as_path(), None)).await;
    wait_pinned_by_us(&bed.node, &old).await;
    wait_pinned_by_us(&bed.node, &new).await;

    assert!(api.delete("ReplicaSet", NS, "prune-1"));
    let deleted = Instant::now();
    d.wait_status(SOON, "revision 1 gone from the report", |s| {
        revision(s, "Deployment", NS, "prune", 1).is_none()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let during = cri_image(&bed.node, &old).await.expect("still present");
    assert!(during.pinned, "unpinned before the 2 s grace period ended");

    wait_until(SOON, "the pruned image is unpinned", || async {
        cri_image(&bed.node, &old).await.is_some_and(|i| !i.pinned)
    })
    .await;
    let took = deleted.elapsed();
    assert!(
        took >= Duration::from_millis(1900),
        "unpinned after {took:?}, before the grace period"
    );
    assert!(
        cri_image(&bed.node, &old).await.is_some(),
        "rollcache never deletes an image"
    );
    let current = cri_image(&bed.node, &new).await.expect("current present");
    assert!(current.pinned && current.pin_owner == PinOwner::Rollcache);
    let m = d.metrics().await;
    assert_eq!(
        metric(&m, "rollcache_unpins_total{result=\"success\"}"),
        Some(1.0),
        "{m}"
    );
    d.stop().await;
}

/// With the API server failing (503) for every resource but ReplicaSets, for longer than the
/// grace period, while history says "prune" and the ReplicaSet watch shows it: nothing is
/// unpinned and `/status` says the view is stale, because a view with sources in error is not
/// complete. Once the API answers again and the view is fresh, the normal rules apply (unpin
/// after the grace period, counted from when the view is fresh).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_outage_unpins_nothing_and_reports_stale() {
    let mut bed = Bed::start().await;
    let api = api().await;
    let (old, _, _) = bed.push_small(121, "e2e/outage:1");
    let (new, _, _) = bed.push_small(122, "e2e/outage:2");
    api.apply(replicaset(NS, "outage", 1, &[&old], 0))
        .expect("apply");
    api.apply(replicaset(NS, "outage", 2, &[&new], 1))
        .expect("apply");
    let d = TestDaemon::start(&api, base_settings(bed.containerd.socket().as_path(), None)).await;
    wait_pinned_by_us(&bed.node, &old).await;
    wait_pinned_by_us(&bed.node, &new).await;
    d.wait_status(SOON, "both offline-safe", |s| {
        s["summary"]["offline_safe"] == 2
    })
    .await;

    let failing = ["pods", "secrets", "configmaps", "controllerrevisions"];
    for r in failing {
        api.set_resource_fault(r, Some(Fault::Status(503)));
    }
    d.wait_status(SOON, "the report says stale", |s| {
        s["summary"]["stale"] == 2
    })
    .await;
    // The ReplicaSet watch still answers, so the daemon sees the prune: only the freshness rule
    // keeps the pin.
    assert!(
        api.delete("ReplicaSet", NS, "outage-1"),
        "history now says prune"
    );
    let s = d
        .wait_status(SOON, "the daemon sees revision 1 gone", |s| {
            revision(s, "Deployment", NS, "outage", 1).is_none()
        })
        .await;
    assert!(
        s["sources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x.get("error").is_some()),
        "a source is reported in error: {s:#}"
    );
    // Three grace periods of outage.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let i = cri_image(&bed.node, &old).await.expect("present");
    assert!(
        i.pinned && i.pin_owner == PinOwner::Rollcache,
        "unpinned during an API outage"
    );
    let m = d.metrics().await;
    assert_eq!(
        metric(&m, "rollcache_unpins_total{result=\"success\"}"),
        None,
        "{m}"
    );
    assert_eq!(d.status().await["summary"]["stale"], 1);

    for r in failing {
        api.set_resource_fault(r, None);
    }
    let back = Instant::now();
    d.wait_status(Duration::from_secs(40), "the view is fresh again", |s| {
        sources_fresh(s) && revision(s, "Deployment", NS, "outage", 1).is_none()
    })
    .await;
    let fresh_after = back.elapsed();
    wait_until(
        Duration::from_secs(40),
        "the pruned image is unpinned",
        || async { cri_image(&bed.node, &old).await.is_some_and(|i| !i.pinned) },
    )
    .await;
    assert!(
        // Margin for how late the fresh view was observed here; without the restart the unpin
        // would come right when the view is fresh.
        back.elapsed() >= fresh_after + Duration::from_millis(1500),
        "unpinned {:?} after the API came back, fresh after {fresh_after:?}: the grace period must restart",
        back.elapsed()
    );
    assert!(cri_image(&bed.node, &old).await.is_some(), "never deleted");
    assert_eq!(
        readiness(&d.status().await, "Deployment", NS, "outage", 2).as_deref(),
        Some("offline_safe")
    );
    d.stop().await;
}

/// With the registry down, `/status` names the revision at risk and why (failed, with the
/// error) and `rollcache_pulls_total{result="registry_unreachable"}` grows; once the registry is
/// back the backoff retry completes the pull.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_down_is_reported_and_the_pull_completes_when_it_returns() {
    let mut bed = Bed::start().await;
    let api = api().await;
    let (img, _, _) = bed.push_small(131, "e2e/regdown:1");
    let d = TestDaemon::start(&api, base_settings(bed.containerd.socket().as_path(), None)).await;
    d.wait_status(SOON, "sources synced", sources_fresh).await;
    bed.registry.stop();
    api.apply(replicaset(NS, "regdown", 1, &[&img], 1))
        .expect("apply");

    let s = d
        .wait_status(SOON, "the revision is reported failed", |s| {
            readiness(s, "Deployment", NS, "regdown", 1).as_deref() == Some("failed")
        })
        .await;
    let rev = revision(&s, "Deployment", NS, "regdown", 1).unwrap();
    let image = &rev["images"][0];
    assert_eq!(image["state"], "failed");
    let error = image["error"].as_str().expect("the error is named");
    assert!(
        error.contains("regdown"),
        "the error names the image: {error}"
    );
    assert!(
        rev["reasons"][0].as_str().unwrap().contains("pull failed"),
        "{rev:#}"
    );
    let unreachable = "rollcache_pulls_total{result=\"registry_unreachable\"}";
    let first = metric(&d.metrics().await, unreachable).expect("counted as registry_unreachable");
    let mut grew = false;
    for _ in 0..100 {
        if metric(&d.metrics().await, unreachable).unwrap_or(0.0) > first {
            grew = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(grew, "retried with backoff while the registry is down");
    assert!(cri_image(&bed.node, &img).await.is_none());

    need(bed.registry.start_again().await);
    wait_pinned_by_us(&bed.node, &img).await;
    d.wait_status(SOON, "offline-safe after the registry returned", |s| {
        readiness(s, "Deployment", NS, "regdown", 1).as_deref() == Some("offline_safe")
    })
    .await;
    d.stop().await;
}

/// Runs the CLI without blocking the runtime the daemon under test runs on.
async fn rollcache(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_rollcache"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("ROLLCACHE_ADMIN_ADDR")
        .output()
        .await
        .expect("run rollcache")
}

/// The manual trigger: POST /prefetch with explicit images pulls and pins them; a namespace +
/// workload scope skips the backoff of that workload's images; invalid requests are rejected;
/// the CLI's `prefetch` and `status --output json` work against the running daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_prefetch_over_http_and_the_cli() {
    let mut bed = Bed::start().await;
    let api = api().await;
    let (explicit, _, _) = bed.push_small(141, "e2e/manual:1");
    let mut settings = base_settings(bed.containerd.socket().as_path(), None);
    // A failed pull waits a long time: only a manual trigger makes it happen sooner.
    settings.insert("backoff_initial".into(), "5m".into());
    settings.insert("backoff_max".into(), "10m".into());
    let d = TestDaemon::start(&api, settings).await;
    d.wait_status(SOON, "sources synced", sources_fresh).await;

    let (code, body) = d.prefetch(&json!({"images": [explicit]}).to_string()).await;
    assert_eq!(code, 202, "{body}");
    let accepted: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(accepted["images"], json!([explicit]));
    assert_eq!(accepted["already_present"], 0);
    wait_pinned_by_us(&bed.node, &explicit).await;
    let (code, body) = d.prefetch(&json!({"images": [explicit]}).to_string()).await;
    assert_eq!(code, 202, "{body}");
    let again: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        again["already_present"], 1,
        "the answer says it is cached: {again}"
    );

    // A workload whose image did not exist yet: the pull failed and backs off for 5 minutes.
    let scoped = bed.reference("e2e/scoped:1");
    api.apply(replicaset(NS, "scoped", 1, &[&scoped], 1))
        .expect("apply");
    d.wait_status(SOON, "the scoped pull failed", |s| {
        readiness(s, "Deployment", NS, "scoped", 1).as_deref() == Some("failed")
    })
    .await;
    bed.push_small(142, "e2e/scoped:1");
    let (code, body) = d
        .prefetch(&json!({"namespace": NS, "workload": "deployment/scoped"}).to_string())
        .await;
    assert_eq!(code, 202, "{body}");
    assert!(body.contains("e2e/scoped:1"), "{body}");
    wait_pinned_by_us(&bed.node, &scoped).await;

    for (bad, want) in [
        (json!({"workload": "scoped"}).to_string(), 400),
        (
            json!({"namespace": NS, "images": [explicit]}).to_string(),
            400,
        ),
        ("{not json".to_string(), 400),
        (json!({"imagez": ["x"]}).to_string(), 400),
        (json!({"namespace": "nowhere"}).to_string(), 422),
        (json!({"images": ["Not A Reference!"]}).to_string(), 422),
    ] {
        let (code, body) = d.prefetch(&bad).await;
        assert_eq!(code, want, "{bad} -> {body}");
        assert!(body.contains("error"), "{body}");
    }

    // The CLI against the running daemon.
    let (cli_img, _, _) = bed.push_small(143, "e2e/cli:1");
    let admin = d.addrs.admin.to_string();
    let out = rollcache(&["prefetch", "--addr", &admin, &cli_img]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("e2e/cli:1"));
    wait_pinned_by_us(&bed.node, &cli_img).await;
    let out = rollcache(&["prefetch", "--addr", &admin, "--namespace", "nowhere"]).await;
    assert!(!out.status.success(), "an unknown namespace is an error");
    let s = d
        .wait_status(SOON, "report counts the prefetched images", |s| {
            s["images_pinned"] == 3
        })
        .await;
    let out = rollcache(&["status", "--addr", &admin, "--output", "json"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON status");
    assert_eq!(cli["images_pinned"], s["images_pinned"]);
    assert_eq!(
        readiness(&cli, "Deployment", NS, "scoped", 1).as_deref(),
        Some("offline_safe")
    );
    let out = rollcache(&["status", "--addr", &admin]).await;
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("3 pinned"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    d.stop().await;
}

/// Hot reload: an image added to `extra_images` in the config file is pulled and pinned; removed
/// again, it is unpinned after the grace period and never deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_reload_adds_and_removes_extra_images() {
    let mut bed = Bed::start().await;
    let api = api().await;
    let (extra, _, _) = bed.push_small(151, "e2e/extra:1");
    let mut d =
        TestDaemon::start(&api, base_settings(bed.containerd.socket().as_path(), None)).await;
    d.wait_status(SOON, "sources synced", sources_fresh).await;
    assert!(cri_image(&bed.node, &extra).await.is_none());

    let mut settings = d.settings.clone();
    settings.insert("extra_images".into(), format!("[\"{extra}\"]"));
    d.rewrite_config(settings);
    wait_pinned_by_us(&bed.node, &extra).await;
    let m = d.metrics().await;
    assert_eq!(
        metric(&m, "rollcache_config_reloads_total{result=\"applied\"}"),
        Some(1.0),
        "{m}"
    );

    let mut settings = d.settings.clone();
    settings.remove("extra_images");
    d.rewrite_config(settings);
    let removed = Instant::now();
    wait_until(SOON, "the extra image is unpinned", || async {
        cri_image(&bed.node, &extra)
            .await
            .is_some_and(|i| !i.pinned)
    })
    .await;
    assert!(
        removed.elapsed() >= Duration::from_millis(1900),
        "before the grace period"
    );
    assert!(
        cri_image(&bed.node, &extra).await.is_some(),
        "never deleted"
    );
    d.stop().await;
}

/// Two nodes (two containerds, two daemons, Node objects with different labels): a StatefulSet
/// whose nodeSelector matches only node A is held only by A; an unconstrained Deployment is held
/// by both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_hold_what_can_be_scheduled_on_them() {
    let mut bed = Bed::start().await;
    let b_ctd = need(Containerd::start_from_env().await);
    need(bed.registry.write_hosts_toml(&b_ctd.hosts_dir()));
    let b_node = Node::connect(b_ctd.socket(), deadlines());
    let api = api().await;
    let (sts_img, _, _) = bed.push_small(161, "e2e/sts:1");
    let (dep_img, _, _) = bed.push_small(162, "e2e/dep:1");
    api.apply(node(
        "node-a",
        json!({"zone": "a", "kubernetes.io/hostname": "node-a"}),
    ))
    .expect("apply");
    api.apply(node(
        "node-b",
        json!({"zone": "b", "kubernetes.io/hostname": "node-b"}),
    ))
    .expect("apply");
    api.apply(with_node_selector(
        controller_revision(NS, "ioc", 1, &[&sts_img]),
        json!({"zone": "a"}),
    ))
    .expect("apply");
    api.apply(replicaset(NS, "dep", 1, &[&dep_img], 1))
        .expect("apply");

    let a = TestDaemon::start(
        &api,
        base_settings(bed.containerd.socket().as_path(), Some("node-a")),
    )
    .await;
    let b = TestDaemon::start(
        &api,
        base_settings(b_ctd.socket().as_path(), Some("node-b")),
    )
    .await;
    wait_pinned_by_us(&bed.node, &sts_img).await;
    wait_pinned_by_us(&bed.node, &dep_img).await;
    wait_pinned_by_us(&b_node, &dep_img).await;
    let sb = b
        .wait_status(SOON, "B's report is complete", |s| {
            s["summary"]["offline_safe"] == 1 && sources_fresh(s)
        })
        .await;
    assert_eq!(sb["node"], "node-b");
    let ioc_on_b = revision(&sb, "StatefulSet", NS, "ioc", 1).expect("reported on B");
    assert!(
        ioc_on_b.get("readiness").is_none(),
        "not held on B: {ioc_on_b:#}"
    );
    assert!(
        ioc_on_b["not_here"].as_str().is_some_and(|r| !r.is_empty()),
        "{ioc_on_b:#}"
    );
    assert!(
        cri_image(&b_node, &sts_img).await.is_none(),
        "B never pulled the StatefulSet image"
    );
    a.wait_status(SOON, "both revisions offline-safe on A", |s| {
        readiness(s, "StatefulSet", NS, "ioc", 1).as_deref() == Some("offline_safe")
            && readiness(s, "Deployment", NS, "dep", 1).as_deref() == Some("offline_safe")
    })
    .await;
    a.stop().await;
    b.stop().await;
}

/// A pin another party set is never removed (nor claimed), even when history stops needing the
/// image; an image with pull policy Always is `needs_registry` although cached and pinned;
/// `/readyz` is 503 until the sources have synced and 200 after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_pins_always_policy_and_readiness_probe() {
    let mut bed = Bed::start().await;
    let api = api().await;
    let (foreign, _, _) = bed.push_small(171, "e2e/foreign:1");
    let (always, _, _) = bed.push_small(172, "e2e/always:1");
    // Someone else pulled and pinned `foreign` (no rollcache marker).
    bed.node.cri().pull(&foreign, None).await.expect("pull");
    let records = bed.node.containerd().list().await.expect("records");
    for r in records.iter().filter(|r| r.name == foreign) {
        bed.node
            .containerd()
            .update_labels(r, &[(rollcache::node::PINNED_LABEL, Some("pinned"))])
            .await
            .expect("label");
    }
    assert!(bed.node.wait_pinned(&foreign, true).await.expect("status"));
    api.apply(replicaset(NS, "foreign", 1, &[&foreign], 1))
        .expect("apply");
    api.apply(with_pull_policy(
        replicaset(NS, "always", 1, &[&always], 1),
        "Always",
    ))
    .expect("apply");

    api.set_down(true);
    let d = TestDaemon::start(&api, base_settings(bed.containerd.socket().as_path(), None)).await;
    let (code, _) = d.get("/readyz").await;
    assert_eq!(code, 503, "not ready before the sources synced");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        d.get("/readyz").await.0,
        503,
        "still not ready while the API is down"
    );
    assert_eq!(d.get("/healthz").await.0, 200, "alive all along");
    api.set_down(false);
    wait_until(Duration::from_secs(40), "/readyz 200", || async {
        d.get("/readyz").await.0 == 200
    })
    .await;

    wait_pinned_by_us(&bed.node, &always).await;
    let s = d
        .wait_status(SOON, "both revisions reported", |s| {
            readiness(s, "Deployment", NS, "always", 1).as_deref() == Some("needs_registry")
                && readiness(s, "Deployment", NS, "foreign", 1).as_deref() == Some("offline_safe")
        })
        .await;
    let reasons = revision(&s, "Deployment", NS, "always", 1).unwrap()["reasons"].to_string();
    assert!(reasons.contains("Always"), "{reasons}");
    // The metric behind the needs-registry alert names the image and its container, and only for
    // the revision that needs the registry.
    let image = &revision(&s, "Deployment", NS, "always", 1).unwrap()["images"][0];
    let series = format!(
        "rollcache_revision_needs_registry{{namespace=\"{NS}\",workload=\"Deployment/always\",revision=\"1\",container=\"{}\",image=\"{}\",cause=\"pull_policy_always\"}} 1",
        image["container"].as_str().unwrap(),
        image["reference"].as_str().unwrap(),
    );
    let metrics = d.metrics().await;
    let blamed: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("rollcache_revision_needs_registry{"))
        .collect();
    assert_eq!(blamed, [series.as_str()], "{metrics}");
    let f = cri_image(&bed.node, &foreign).await.unwrap();
    assert!(
        f.pinned && f.pin_owner == PinOwner::Other,
        "rollcache did not claim the foreign pin"
    );

    // History no longer needs `foreign`: its pin stays, it is someone else's.
    assert!(api.delete("ReplicaSet", NS, "foreign-1"));
    d.wait_status(SOON, "foreign revision gone", |s| {
        revision(s, "Deployment", NS, "foreign", 1).is_none()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let f = cri_image(&bed.node, &foreign).await.expect("present");
    assert!(
        f.pinned && f.pin_owner == PinOwner::Other,
        "a foreign pin was removed"
    );

    // Once no revision needs the registry, its series goes with it.
    assert!(api.delete("ReplicaSet", NS, "always-1"));
    d.wait_status(SOON, "always revision gone", |s| {
        revision(s, "Deployment", NS, "always", 1).is_none()
    })
    .await;
    let metrics = d.metrics().await;
    assert!(
        !metrics.contains("rollcache_revision_needs_registry{"),
        "{metrics}"
    );
    d.stop().await;
}

/// Cancel (what SIGTERM does) during a slow pull: `run_until` returns promptly, and CRI reports
/// no image for the half-transferred pull.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_mid_pull_stops_promptly_and_leaves_no_half_image() {
    let mut bed = Bed::start().await;
    let api = api().await;
    let proxy = Proxy::start(&bed.registry.addr()).await;
    need(rollcache_testbed::registry::write_hosts_toml(
        &bed.containerd.hosts_dir(),
        &proxy.addr(),
    ));
    // 4 MiB that gzip cannot shrink, served at 256 KiB/s: a 16 s pull.
    let spec = ImageSpec {
        platform: Platform::linux_amd64(),
        layers: vec![LayerSpec::new(181, 4 * MIB, 0)],
        label: "slow".into(),
    };
    bed.push(&spec, "e2e/slow:1");
    let slow = format!("{}/e2e/slow:1", proxy.addr());
    proxy.set_rate(256 * 1024);
    let d = TestDaemon::start(&api, base_settings(bed.containerd.socket().as_path(), None)).await;
    d.wait_status(SOON, "sources synced", sources_fresh).await;
    api.apply(replicaset(NS, "slow", 1, &[&slow], 1))
        .expect("apply");
    wait_until(SOON, "layer bytes flowing", || async {
        proxy.bytes_down() > 300 * 1024
    })
    .await;
    let s = d.status().await;
    assert_eq!(s["pulls_in_flight"], 1, "{s:#}");
    assert_eq!(
        readiness(&s, "Deployment", NS, "slow", 1).as_deref(),
        Some("pulling")
    );

    let took = d.stop().await;
    assert!(took < Duration::from_secs(3), "stopping took {took:?}");
    let transferred = proxy.bytes_down();
    assert!(
        transferred < 4 * MIB,
        "the pull was really cut short ({transferred} bytes)"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        cri_image(&bed.node, &slow).await.is_none(),
        "a half image is listed"
    );
    assert!(
        bed.node
            .cri()
            .status(&slow)
            .await
            .expect("status")
            .is_none(),
        "a half image has a status"
    );
}

//! Faults on the node side, with the daemon running end to end: the registry dying mid-pull,
//! containerd restarting, the disk budget reached (and pull priority once it is lifted), and a
//! hundred revisions appearing at once.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::daemon::*;
use common::proxy::Proxy;
use common::*;
use rollcache::node::{ImageRuntime, PinOwner};
use rollcache_testbed::history::*;
use rollcache_testbed::oci::{ImageSpec, LayerSpec, Platform};

const NS: &str = "apps";
const SOON: Duration = Duration::from_secs(20);

/// The registry dies in the middle of a layer transfer and comes back later: the failed pull
/// leaves no image (half or otherwise) visible through CRI, the report says failed, and the
/// backoff retry completes the pull with exactly the pushed content (same digest).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_killed_mid_pull_then_restored() {
    let mut bed = Bed::start().await;
    let api = api().await;
    let proxy = Proxy::start(&bed.registry.addr()).await;
    need(rollcache_testbed::registry::write_hosts_toml(
        &bed.containerd.hosts_dir(),
        &proxy.addr(),
    ));
    let spec = ImageSpec {
        platform: Platform::linux_amd64(),
        layers: vec![LayerSpec::new(201, 3 * MIB, 0)],
        label: "midpull".into(),
    };
    let (_, _, digest) = bed.push(&spec, "fault/midpull:1");
    let image = format!("{}/fault/midpull:1", proxy.addr());
    proxy.set_rate(256 * 1024);
    let d = TestDaemon::start(&api, base_settings(bed.containerd.socket().as_path(), None)).await;
    d.wait_status(SOON, "sources synced", sources_fresh).await;
    api.apply(replicaset(NS, "midpull", 1, &[&image], 1))
        .expect("apply");
    wait_until(SOON, "layer bytes flowing", || async {
        proxy.bytes_down() > 400 * 1024
    })
    .await;

    bed.registry.stop();
    proxy.cut();
    let s = d
        .wait_status(SOON, "the pull is reported failed", |s| {
            readiness(s, "Deployment", NS, "midpull", 1).as_deref() == Some("failed")
        })
        .await;
    let rev = revision(&s, "Deployment", NS, "midpull", 1).unwrap();
    assert!(rev["images"][0]["error"].as_str().is_some(), "{rev:#}");
    assert!(
        proxy.bytes_down() < 3 * MIB,
        "the transfer was really interrupted"
    );
    assert!(
        cri_image(&bed.node, &image).await.is_none(),
        "no half image listed"
    );
    assert!(
        bed.node
            .cri()
            .status(&image)
            .await
            .expect("status")
            .is_none()
    );
    let records = bed.node.containerd().list().await.expect("records");
    assert!(
        records.iter().all(|r| !r.name.contains("midpull")),
        "no image record for the failed pull: {:?}",
        records.iter().map(|r| &r.name).collect::<Vec<_>>()
    );

    proxy.set_rate(0);
    need(bed.registry.start_again().await);
    let i = wait_pinned_by_us(&bed.node, &image).await;
    assert!(
        i.repo_digests
            .iter()
            .any(|d| d == &format!("{}/fault/midpull@{digest}", proxy.addr())),
        "the cached image is the pushed one: {:?}",
        i.repo_digests
    );
    d.wait_status(SOON, "offline-safe", |s| {
        readiness(s, "Deployment", NS, "midpull", 1).as_deref() == Some("offline_safe")
    })
    .await;
    let m = d
        .metrics_when("rollcache_pulls_total{result=\"success\"}", 1.0)
        .await;
    assert_eq!(
        metric(&m, "rollcache_pulls_total{result=\"success\"}"),
        Some(1.0),
        "{m}"
    );
    d.stop().await;
}

/// containerd restarts under the running daemon: the daemon reports the runtime unreachable
/// meanwhile, reconnects by itself (a revision applied during the restart is pulled after it),
/// the pins survive, and nothing already cached is pulled again (registry manifest requests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_restart_keeps_pins_and_pulls_nothing_twice() {
    let mut bed = Bed::start().await;
    let api = api().await;
    let (a, _, _) = bed.push_small(211, "fault/restart-a:1");
    let (b, _, _) = bed.push_small(212, "fault/restart-b:1");
    let (c, _, _) = bed.push_small(213, "fault/restart-c:1");
    api.apply(replicaset(NS, "ra", 1, &[&a], 1)).expect("apply");
    api.apply(replicaset(NS, "rb", 1, &[&b], 1)).expect("apply");
    let d = TestDaemon::start(&api, base_settings(bed.containerd.socket().as_path(), None)).await;
    wait_pinned_by_us(&bed.node, &a).await;
    wait_pinned_by_us(&bed.node, &b).await;
    let manifests = |name: &str| {
        bed.registry
            .request_count(&format!("/v2/fault/{name}/manifests/"))
    };
    let (ma, mb) = (manifests("restart-a"), manifests("restart-b"));
    assert!(ma > 0 && mb > 0);

    bed.containerd.stop();
    api.apply(replicaset(NS, "rc", 1, &[&c], 1)).expect("apply");
    let s = d
        .wait_status(SOON, "the runtime is reported unreachable", |s| {
            s["runtime_reachable"] == false
        })
        .await;
    assert!(s["runtime_error"].as_str().is_some(), "{s:#}");
    assert_eq!(d.get("/readyz").await.0, 503, "not ready without a runtime");
    need(bed.containerd.restart().await);

    wait_pinned_by_us(&bed.node, &c).await;
    for r in [&a, &b] {
        let i = cri_image(&bed.node, r).await.expect("survived the restart");
        assert!(
            i.pinned && i.pin_owner == PinOwner::Rollcache,
            "{r}: pin intact"
        );
    }
    d.wait_status(SOON, "all offline-safe", |s| {
        s["summary"]["offline_safe"] == 3 && s["runtime_reachable"] == true
    })
    .await;
    assert_eq!(manifests("restart-a"), ma, "restart-a pulled again");
    assert_eq!(manifests("restart-b"), mb, "restart-b pulled again");
    let m = d.metrics().await;
    // restart-c's first pull may have completed inside the stopping containerd (stop returns
    // before the process is gone); then the daemon finds it present and only pins it.
    let ok = metric(&m, "rollcache_pulls_total{result=\"success\"}").unwrap_or(0.0);
    assert!((2.0..=3.0).contains(&ok), "{m}");
    assert!(
        metric(
            &m,
            "rollcache_reconciles_total{result=\"runtime_unreachable\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{m}"
    );
    assert_eq!(d.get("/readyz").await.0, 200);
    d.stop().await;
}

/// The first request line of each `names` repository's manifest in the registry's access log
/// since byte `from`, in order.
fn manifest_order(log: &std::path::Path, from: usize, names: &[String]) -> Vec<String> {
    let text = std::fs::read_to_string(log).expect("registry log");
    let mut seen = Vec::new();
    for line in text[from..].lines() {
        for n in names {
            if line.contains(&format!("/v2/{n}/manifests/")) && !seen.contains(n) {
                seen.push(n.clone());
            }
        }
    }
    seen
}

/// With the image filesystem above the disk budget: no pull starts (the registry sees nothing),
/// an image already present is still pinned, `/status` and `/metrics` say why. Once the budget is
/// lifted (config reload) with one pull slot, current revisions are pulled before old ones,
/// newest old ones first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_budget_holds_pulls_and_priority_order_once_lifted() {
    let mut bed = Bed::start().await;
    let api = api().await;
    let names: Vec<String> = (1..=4).map(|r| format!("fault/prio-{r}")).collect();
    let mut refs = Vec::new();
    for (i, n) in names.iter().enumerate() {
        refs.push(bed.push_small(220 + i as u64, &format!("{n}:1")).0);
    }
    let (present, _, _) = bed.push_small(230, "fault/present:1");
    bed.node.cri().pull(&present, None).await.expect("pull");
    // Revisions 1-3 are old (scaled to 0), 4 is current.
    for (i, r) in refs.iter().enumerate() {
        let rev = i as i64 + 1;
        api.apply(replicaset(NS, "prio", rev, &[r], i32::from(rev == 4)))
            .expect("apply");
    }
    api.apply(replicaset(NS, "present", 1, &[&present], 1))
        .expect("apply");
    let log_start = std::fs::metadata(bed.registry.log_path()).map_or(0, |m| m.len() as usize);

    let mut settings = base_settings(bed.containerd.socket().as_path(), None);
    // 1%: any real filesystem is fuller than that (counted as the kubelet counts it).
    settings.insert("disk_budget_percent".into(), "1".into());
    settings.insert("max_concurrent_pulls".into(), "1".into());
    let mut d = TestDaemon::start(&api, settings).await;
    let s = d
        .wait_status(
            SOON,
            "the present image is pinned and the others held back",
            |s| {
                readiness(s, "Deployment", NS, "present", 1).as_deref() == Some("offline_safe")
                    && s["summary"]["disk_budget"] == 4
            },
        )
        .await;
    assert_eq!(s["disk"]["over_budget"], true, "{:#}", s["disk"]);
    assert_eq!(s["disk"]["budget_percent"], 1);
    let rev = revision(&s, "Deployment", NS, "prio", 4).unwrap();
    assert_eq!(rev["images"][0]["state"], "disk_budget");
    assert!(
        rev["reasons"][0].as_str().unwrap().contains("disk budget"),
        "{rev:#}"
    );
    let m = d.metrics().await;
    assert_eq!(
        metric(&m, "rollcache_disk_budget_reached"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(metric(&m, "rollcache_images_pinned"), Some(1.0), "{m}");
    // CRI shows a label change a moment after containerd made it.
    wait_pinned_by_us(&bed.node, &present).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        manifest_order(&bed.registry.log_path(), log_start, &names).is_empty(),
        "a pull started above the disk budget"
    );

    let mut settings = d.settings.clone();
    settings.insert("disk_budget_percent".into(), "100".into());
    d.rewrite_config(settings);
    for r in &refs {
        wait_pinned_by_us(&bed.node, r).await;
    }
    let order = manifest_order(&bed.registry.log_path(), log_start, &names);
    let want: Vec<String> = [4, 3, 2, 1]
        .iter()
        .map(|r| format!("fault/prio-{r}"))
        .collect();
    assert_eq!(order, want, "current first, then newest old revisions");
    d.wait_status(SOON, "all offline-safe", |s| {
        s["summary"]["offline_safe"] == 5
    })
    .await;
    assert_eq!(d.status().await["disk"]["over_budget"], false);
    d.stop().await;
}

/// A hundred revisions (20 Deployments × 5) appear at once: the daemon never runs more pulls than
/// `max_concurrent_pulls`, pulls each image once, and every revision ends up offline-safe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_revisions_at_once_respect_the_concurrency_bound() {
    let mut bed = Bed::start().await;
    let api = api().await;
    let http = push::client();
    let base = LayerSpec::new(240, 128 * 1024, 50);
    let mut images = Vec::new();
    for w in 0..20u64 {
        for r in 1..=5u64 {
            let spec = ImageSpec {
                platform: Platform::linux_amd64(),
                layers: vec![base, LayerSpec::new(10_000 + w * 10 + r, 8 * 1024, 50)],
                label: format!("load-{w}-{r}"),
            };
            let built = need(bed.layout.image(&spec));
            let name = format!("load/w{w}");
            push::push(
                &http,
                bed.layout.dir(),
                &bed.registry.addr(),
                &name,
                &r.to_string(),
                &built,
            )
            .await;
            images.push((w, r, format!("{}/{name}:{r}", bed.registry.addr())));
        }
    }
    let mut settings = base_settings(bed.containerd.socket().as_path(), None);
    settings.insert("max_concurrent_pulls".into(), "3".into());
    let d = TestDaemon::start(&api, settings).await;
    d.wait_status(SOON, "sources synced", sources_fresh).await;

    for (w, r, image) in &images {
        api.apply(replicaset(
            NS,
            &format!("w{w}"),
            *r as i64,
            &[image],
            i32::from(*r == 5),
        ))
        .expect("apply");
    }
    let start = Instant::now();
    let mut max_in_flight = 0u64;
    let mut max_pulling = 0usize;
    loop {
        let s = d.status().await;
        max_in_flight = max_in_flight.max(s["pulls_in_flight"].as_u64().unwrap_or(0));
        let pulling: HashSet<&str> = s["workloads"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|w| w["revisions"].as_array().into_iter().flatten())
            .flat_map(|r| r["images"].as_array().into_iter().flatten())
            .filter(|i| i["state"] == "pulling")
            .filter_map(|i| i["reference"].as_str())
            .collect();
        max_pulling = max_pulling.max(pulling.len());
        if s["summary"]["offline_safe"] == 100 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "not all offline-safe: {}",
            s["summary"]
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        max_in_flight <= 3,
        "{max_in_flight} pulls in flight at once"
    );
    assert!(max_pulling <= 3, "{max_pulling} images pulling at once");
    assert!(max_in_flight >= 2, "the slots were used ({max_in_flight})");
    let m = d
        .metrics_when("rollcache_pulls_total{result=\"success\"}", 100.0)
        .await;
    assert_eq!(
        metric(&m, "rollcache_pulls_total{result=\"success\"}"),
        Some(100.0),
        "each image pulled once: {m}"
    );
    assert_eq!(metric(&m, "rollcache_images_pinned"), Some(100.0), "{m}");
    // CRI agrees (it shows a label change a moment after containerd made it).
    wait_until(
        SOON,
        "CRI lists all 100 images pinned by rollcache",
        || async {
            let listed = bed.node.list().await.expect("list");
            let pinned = images
                .iter()
                .filter(|(_, _, i)| {
                    listed.iter().any(|x| {
                        x.repo_tags.contains(i) && x.pinned && x.pin_owner == PinOwner::Rollcache
                    })
                })
                .count();
            pinned == 100
        },
    )
    .await;
    d.stop().await;
}

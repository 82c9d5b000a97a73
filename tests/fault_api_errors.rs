//! The freshness rule (safety rule 2) against an API server that misbehaves, end to end with a real
//! containerd and registry: RBAC denial, throttling, server errors, a hang, and watches that fail
//! while lists succeed. In each case history really changes in a way the daemon observes (another
//! source, or a re-list, sees a ReplicaSet deleted), so a daemon that ignored freshness would unpin
//! its image within the 1 s grace period; nothing is unpinned while the fault lasts, and the image
//! IS unpinned once the API answers again (the control).

mod common;

use std::time::{Duration, Instant};

use common::daemon::*;
use common::*;
use rollcache::node::{Node, PinOwner};
use rollcache_testbed::apiserver::{ApiServer, Fault};
use rollcache_testbed::history::*;
use serde_json::Value;

const NS: &str = "apps";
const SOON: Duration = Duration::from_secs(20);
/// Long enough for the watchers' backoff to retry and their resume check to confirm.
const RECOVERY: Duration = Duration::from_secs(40);
const GRACE: Duration = Duration::from_secs(1);

async fn pinned_by_us(node: &Node, reference: &str) -> bool {
    cri_image(node, reference)
        .await
        .is_some_and(|i| i.pinned && i.pin_owner == PinOwner::Rollcache)
}

/// The `/status` entry of the source watching `resource` (`secrets`, `replicasets`, ...).
fn source<'a>(s: &'a Value, resource: &str) -> Option<&'a Value> {
    let needle = format!("({resource}");
    s["sources"]
        .as_array()?
        .iter()
        .find(|x| x["source"].as_str().is_some_and(|n| n.contains(&needle)))
}

fn in_error(s: &Value, resource: &str) -> bool {
    source(s, resource).is_some_and(|x| x.get("error").is_some_and(|e| !e.is_null()))
}

/// A Deployment with a retained revision 1 (`old`) and a current revision 2 (`new`), both pinned
/// by a daemon with a 1 s grace period.
struct Scene {
    bed: Bed,
    api: ApiServer,
    old: String,
    new: String,
    name: &'static str,
    settings: std::collections::BTreeMap<String, String>,
}

impl Scene {
    async fn start(name: &'static str, seed: u64) -> (Self, TestDaemon) {
        let mut bed = Bed::start().await;
        let api = ApiServer::start().await.expect("API server");
        let (old, _, _) = bed.push_small(seed, &format!("fault/{name}:1"));
        let (new, _, _) = bed.push_small(seed + 1, &format!("fault/{name}:2"));
        api.apply(replicaset(NS, name, 1, &[&old], 0))
            .expect("apply");
        api.apply(replicaset(NS, name, 2, &[&new], 1))
            .expect("apply");
        let mut settings = base_settings(bed.containerd.socket().as_path(), None);
        settings.insert("unpin_grace".into(), format!("{}s", GRACE.as_secs()));
        let d = TestDaemon::start(&api, settings.clone()).await;
        let scene = Self {
            bed,
            api,
            old,
            new,
            name,
            settings,
        };
        wait_until(SOON, "both revisions pinned", || async {
            pinned_by_us(&scene.bed.node, &scene.old).await
                && pinned_by_us(&scene.bed.node, &scene.new).await
        })
        .await;
        d.wait_status(SOON, "a fresh view", sources_fresh).await;
        (scene, d)
    }

    /// Prunes revision 1 from history.
    fn delete_old(&self) {
        assert!(
            self.api
                .delete("ReplicaSet", NS, &format!("{}-1", self.name)),
            "history now says prune"
        );
    }

    /// Waits until the daemon's report no longer has revision 1 (it has seen the deletion).
    async fn wait_deletion_seen(&self, d: &TestDaemon) -> Value {
        d.wait_status(SOON, "the daemon sees revision 1 deleted", |s| {
            revision(s, "Deployment", NS, self.name, 2).is_some()
                && revision(s, "Deployment", NS, self.name, 1).is_none()
        })
        .await
    }

    /// Several grace periods: nothing unpinned, the view never fresh.
    async fn hold(&self, d: &TestDaemon) {
        let until = Instant::now() + 4 * GRACE;
        while Instant::now() < until {
            assert!(
                pinned_by_us(&self.bed.node, &self.old).await,
                "unpinned while the API misbehaves"
            );
            assert!(pinned_by_us(&self.bed.node, &self.new).await);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let m = d.metrics().await;
        assert_eq!(
            metric(&m, "rollcache_unpins_total{result=\"success\"}"),
            None,
            "{m}"
        );
        let s = d.status().await;
        assert!(!sources_fresh(&s), "{:#}", s["sources"]);
    }

    /// The control: once the API answers, the pruned revision's image is unpinned after the
    /// grace period (and never deleted); the current one stays pinned.
    async fn recover(&self, d: &TestDaemon) {
        d.wait_status(RECOVERY, "fresh again", sources_fresh).await;
        let fresh_at = Instant::now();
        wait_until(SOON, "the pruned revision's image is unpinned", || async {
            cri_image(&self.bed.node, &self.old)
                .await
                .is_some_and(|i| !i.pinned)
        })
        .await;
        // The grace period runs from the fresh view (less a margin for observing it here).
        assert!(fresh_at.elapsed() >= GRACE - Duration::from_millis(300));
        assert!(
            cri_image(&self.bed.node, &self.old).await.is_some(),
            "never deleted"
        );
        assert!(pinned_by_us(&self.bed.node, &self.new).await);
    }
}

/// RBAC denies Secrets (the Helm source): the ReplicaSet source stays fresh and sees revision 1
/// deleted, but the view is incomplete. The error is counted once, not once per retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_secrets_hold_every_pin_until_rbac_allows_again() {
    let (sc, d) = Scene::start("forbidden", 401).await;
    sc.api
        .set_resource_fault("secrets", Some(Fault::Status(403)));
    d.wait_status(SOON, "the Secret source in error", |s| {
        in_error(s, "secrets")
    })
    .await;
    sc.delete_old();
    let s = sc.wait_deletion_seen(&d).await;
    assert!(!in_error(&s, "replicasets"), "{:#}", s["sources"]);
    sc.hold(&d).await;
    let s = d.status().await;
    let err = source(&s, "secrets").expect("secrets source")["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(err.contains("forbidden"), "{err}");
    let m = d.metrics().await;
    assert_eq!(
        metric(&m, "rollcache_source_errors_total{source=\"helm\"}"),
        Some(1.0),
        "one error state, however many retries: {m}"
    );
    sc.api.set_resource_fault("secrets", None);
    sc.recover(&d).await;
    d.stop().await;
}

/// 429 Too Many Requests on ConfigMaps: reported as an error at once (not retried silently inside
/// the client for minutes while the source looks fresh).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_configmaps_hold_every_pin() {
    let (sc, d) = Scene::start("throttled", 411).await;
    sc.api
        .set_resource_fault("configmaps", Some(Fault::Status(429)));
    d.wait_status(SOON, "the ConfigMap source in error", |s| {
        in_error(s, "configmaps")
    })
    .await;
    sc.delete_old();
    sc.wait_deletion_seen(&d).await;
    sc.hold(&d).await;
    sc.api.set_resource_fault("configmaps", None);
    sc.recover(&d).await;
    d.stop().await;
}

/// 500 on ControllerRevisions and 503 on Pods at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_hold_every_pin() {
    let (sc, d) = Scene::start("errors", 421).await;
    sc.api
        .set_resource_fault("controllerrevisions", Some(Fault::Status(500)));
    sc.api.set_resource_fault("pods", Some(Fault::Status(503)));
    d.wait_status(SOON, "both sources in error", |s| {
        in_error(s, "controllerrevisions") && in_error(s, "pods")
    })
    .await;
    sc.delete_old();
    sc.wait_deletion_seen(&d).await;
    sc.hold(&d).await;
    sc.api.set_resource_fault("controllerrevisions", None);
    sc.api.set_resource_fault("pods", None);
    sc.recover(&d).await;
    d.stop().await;
}

/// Requests for Secrets hang (accepted, never answered) across a daemon restart: the restarted
/// daemon lists ReplicaSets (without revision 1) but never gets the Secrets, so its view is never
/// complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_secrets_across_a_restart_hold_every_pin() {
    let (sc, d) = Scene::start("hang", 431).await;
    d.stop().await;
    sc.api.set_resource_fault("secrets", Some(Fault::Hang));
    sc.delete_old();
    let d = TestDaemon::start(&sc.api, sc.settings.clone()).await;
    let s = sc.wait_deletion_seen(&d).await;
    assert_eq!(
        source(&s, "secrets").expect("secrets source")["synced"],
        false,
        "{:#}",
        s["sources"]
    );
    sc.hold(&d).await;
    sc.api.set_resource_fault("secrets", None);
    sc.recover(&d).await;
    d.stop().await;
}

/// Lists answer but every watch fails (`410 Expired` at once, so the watchers keep re-listing):
/// a re-list shows revision 1 deleted while no watch works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_failing_while_lists_succeed_hold_every_pin() {
    let (sc, d) = Scene::start("nowatch", 441).await;
    sc.api.set_fault(Some(Fault::WatchesFail(410)));
    d.wait_status(SOON, "sources in error", |s| !sources_fresh(s))
        .await;
    sc.delete_old();
    sc.wait_deletion_seen(&d).await;
    sc.hold(&d).await;
    sc.api.set_fault(None);
    sc.recover(&d).await;
    d.stop().await;
}

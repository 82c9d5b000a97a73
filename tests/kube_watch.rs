//! The production watch code (kube-runtime watchers feeding the history store) against the
//! in-process API server: lists, events, selectors, 410 re-lists, bookmarks, outages, decode
//! problems and pagination.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use kube::runtime::watcher;
use rollcache::history::store::{HistoryStore, SourceId, SourceStatus, StatusKey};
use rollcache::history::watch::{WatchConfig, run_source, spawn_watchers};
use rollcache::history::{DecodeProblem, Decoded, ProblemKind};
use rollcache::model::{ContainerImage, ObjectRef, RevisionFact, SourceKind, WorkloadId};
use rollcache_testbed::apiserver::{ApiServer, ApiServerOptions};
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use common::wait_for;

const PROBE: Duration = Duration::from_millis(200);

async fn server() -> ApiServer {
    ApiServer::start_with(ApiServerOptions {
        bookmark_interval: Duration::from_millis(200),
        ..Default::default()
    })
    .await
    .expect("test API server starts")
}

fn cm(ns: &str, name: &str, labels: Value, image: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "data": {"image": image},
    })
}

/// One fact per ConfigMap, its image from `data.image`; `bad` as image is a decode problem.
fn decode_cm(c: &ConfigMap) -> Decoded {
    let object = ObjectRef::new(
        "ConfigMap",
        c.metadata.namespace.clone().unwrap_or_default(),
        c.metadata.name.clone().unwrap_or_default(),
    );
    let image = c
        .data
        .as_ref()
        .and_then(|d| d.get("image"))
        .cloned()
        .unwrap_or_default();
    if image == "bad" {
        return Decoded {
            facts: vec![],
            problems: vec![DecodeProblem {
                object,
                kind: ProblemKind::InvalidImageRef,
                message: "image reference is not valid".into(),
            }],
        };
    }
    Decoded {
        facts: vec![RevisionFact {
            source: SourceKind::HelmRelease,
            object: object.clone(),
            workload: WorkloadId::new("Deployment", object.namespace.clone(), object.name.clone()),
            revision: None,
            created: None,
            helm_release: None,
            status: None,
            current: true,
            template: rollcache::model::PodTemplate {
                containers: vec![ContainerImage {
                    name: "main".into(),
                    image,
                    ..Default::default()
                }],
                ..Default::default()
            }
            .into(),
        }],
        problems: vec![],
    }
}

fn oref(ns: &str, name: &str) -> ObjectRef {
    ObjectRef::new("ConfigMap", ns, name)
}

fn image_of(store: &HistoryStore, ns: &str, name: &str) -> Option<String> {
    store
        .facts_of(&oref(ns, name))
        .and_then(|f| f.first().map(|f| f.template.containers[0].image.clone()))
}

fn status(store: &HistoryStore, id: &SourceId) -> SourceStatus {
    store.status(id).expect("source registered")
}

/// Runs a ConfigMap source with the test decoder; returns its id.
fn start_cm_source(
    api: &ApiServer,
    wc: watcher::Config,
    ns: Option<&str>,
    store: &Arc<HistoryStore>,
    token: &CancellationToken,
) -> SourceId {
    let client = api.client().expect("client");
    let kapi: Api<ConfigMap> = match ns {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let id = SourceId::new(SourceKind::HelmRelease, "configmaps", ns);
    store.register(&id);
    tokio::spawn(run_source(
        kapi,
        wc,
        id.clone(),
        decode_cm,
        store.clone(),
        token.clone(),
        PROBE,
    ));
    id
}

#[tokio::test]
async fn list_then_events_update_the_store() {
    let api = server().await;
    api.apply(cm("a", "one", json!({}), "reg/one:1"))
        .expect("apply");
    api.apply(cm("b", "two", json!({}), "reg/two:1"))
        .expect("apply");
    api.apply(cm("b", "broken", json!({}), "bad"))
        .expect("apply");
    let store = HistoryStore::new();
    let token = CancellationToken::new();
    let id = start_cm_source(
        &api,
        WatchConfig::default().watcher_config(),
        None,
        &store,
        &token,
    );

    wait_for(Duration::from_secs(5), "initial list", || {
        status(&store, &id).synced
    })
    .await;
    let st = status(&store, &id);
    assert_eq!((st.objects, st.facts), (3, 2));
    assert_eq!(st.problems.get(&ProblemKind::InvalidImageRef), Some(&1));
    assert!(store.snapshot().all_sources_fresh());
    assert_eq!(image_of(&store, "a", "one").as_deref(), Some("reg/one:1"));

    let mut changes = store.subscribe();
    changes.borrow_and_update();
    api.apply(cm("a", "three", json!({}), "reg/three:1"))
        .expect("apply");
    wait_for(Duration::from_secs(1), "ADDED arrives", || {
        image_of(&store, "a", "three").is_some()
    })
    .await;
    assert!(
        changes.has_changed().expect("store alive"),
        "reconcile loop is woken"
    );

    api.apply(cm("a", "one", json!({}), "reg/one:2"))
        .expect("apply");
    wait_for(Duration::from_secs(1), "MODIFIED arrives", || {
        image_of(&store, "a", "one").as_deref() == Some("reg/one:2")
    })
    .await;

    assert!(api.delete("ConfigMap", "b", "two"));
    wait_for(Duration::from_secs(1), "DELETED arrives", || {
        image_of(&store, "b", "two").is_none()
    })
    .await;
    assert_eq!(status(&store, &id).objects, 3);
    assert_eq!(status(&store, &id).lists, 1, "no re-list for plain events");
    token.cancel();
}

static SEEN_SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn record_secret(s: &Secret) -> Decoded {
    let name = s.metadata.name.clone().unwrap_or_default();
    SEEN_SECRETS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(name);
    Decoded::default()
}

fn secret(name: &str, labels: Value, ty: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": ty,
        "metadata": {"name": name, "namespace": "apps", "labels": labels},
        "data": {"release": "SDRzSUFBQUFBQUFBLw=="},
    })
}

#[tokio::test]
async fn helm_selectors_are_applied_by_the_server() {
    let api = server().await;
    let helm = json!({"owner": "helm", "name": "web"});
    api.apply(secret(
        "sh.helm.release.v1.web.v1",
        helm.clone(),
        "helm.sh/release.v1",
    ))
    .expect("apply");
    api.apply(secret("opaque-with-helm-label", helm.clone(), "Opaque"))
        .expect("apply");
    api.apply(secret(
        "release-type-no-label",
        json!({}),
        "helm.sh/release.v1",
    ))
    .expect("apply");
    api.apply(secret(
        "pull-secret",
        json!({}),
        "kubernetes.io/dockerconfigjson",
    ))
    .expect("apply");

    let store = HistoryStore::new();
    let token = CancellationToken::new();
    let cfg = WatchConfig::default();
    let id = SourceId::new(SourceKind::HelmRelease, "secrets", None);
    tokio::spawn(run_source(
        Api::<Secret>::all(api.client().expect("client")),
        cfg.helm_secrets_config(),
        id.clone(),
        record_secret,
        store.clone(),
        token.clone(),
        PROBE,
    ));
    wait_for(Duration::from_secs(5), "initial list", || {
        store.status(&id).is_some_and(|s| s.synced)
    })
    .await;
    // A label change that makes a Secret match arrives; changes to non-matching ones do not.
    api.apply(secret(
        "pull-secret",
        json!({"x": "y"}),
        "kubernetes.io/dockerconfigjson",
    ))
    .expect("apply");
    api.apply(secret(
        "sh.helm.release.v1.web.v2",
        helm,
        "helm.sh/release.v1",
    ))
    .expect("apply");
    wait_for(Duration::from_secs(1), "v2 decoded", || {
        SEEN_SECRETS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|n| n.ends_with("v2"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = SEEN_SECRETS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    assert_eq!(
        seen,
        vec!["sh.helm.release.v1.web.v1", "sh.helm.release.v1.web.v2"]
    );
    assert_eq!(status(&store, &id).objects, 2);
    token.cancel();
}

#[tokio::test]
async fn gone_410_relists_and_forgets_what_was_deleted_meanwhile() {
    let api = server().await;
    for n in ["keep", "doomed"] {
        api.apply(cm("a", n, json!({}), &format!("reg/{n}:1")))
            .expect("apply");
    }
    let store = HistoryStore::new();
    let token = CancellationToken::new();
    let id = start_cm_source(
        &api,
        WatchConfig::default().watcher_config(),
        None,
        &store,
        &token,
    );
    wait_for(Duration::from_secs(5), "initial list", || {
        status(&store, &id).synced
    })
    .await;

    api.set_down(true);
    let key = StatusKey::Source(id.clone());
    wait_for(Duration::from_secs(3), "source in error", || {
        store.in_error(&key)
    })
    .await;
    assert!(api.delete("ConfigMap", "a", "doomed"));
    api.apply(cm("a", "new", json!({}), "reg/new:1"))
        .expect("apply");
    api.compact();
    assert_eq!(
        image_of(&store, "a", "doomed").as_deref(),
        Some("reg/doomed:1")
    );
    api.set_down(false);

    wait_for(Duration::from_secs(10), "re-list after 410", || {
        image_of(&store, "a", "doomed").is_none() && image_of(&store, "a", "new").is_some()
    })
    .await;
    let st = status(&store, &id);
    assert_eq!(st.lists, 2, "one re-list");
    assert!(st.is_fresh());
    assert_eq!(st.objects, 2);
    token.cancel();
}

#[tokio::test]
async fn bookmarks_keep_the_resource_version_moving() {
    let api = server().await;
    api.apply(cm("a", "one", json!({}), "reg/one:1"))
        .expect("apply");
    let store = HistoryStore::new();
    let token = CancellationToken::new();
    // Two watchers on the same objects with 1 s watch timeouts: only the one without bookmarks
    // resumes from its (old) list resourceVersion and hits 410 after a compaction.
    let base = WatchConfig {
        watch_timeout: Some(1),
        ..Default::default()
    }
    .watcher_config();
    let with = start_cm_source(&api, base.clone(), Some("a"), &store, &token);
    let client = api.client().expect("client");
    let without = SourceId::new(
        SourceKind::HelmRelease,
        "configmaps-no-bookmarks",
        Some("a"),
    );
    tokio::spawn(run_source(
        Api::<ConfigMap>::namespaced(client, "a"),
        base.disable_bookmarks(),
        without.clone(),
        decode_cm,
        store.clone(),
        token.clone(),
        PROBE,
    ));
    wait_for(Duration::from_secs(5), "initial lists", || {
        status(&store, &with).synced && status(&store, &without).synced
    })
    .await;
    // Unrelated changes move the global resource version.
    for i in 0..20 {
        api.apply(cm("other", &format!("x{i}"), json!({}), "reg/x:1"))
            .expect("apply");
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    api.compact();
    wait_for(
        Duration::from_secs(8),
        "watch without bookmarks re-lists",
        || status(&store, &without).lists >= 2,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        status(&store, &with).lists,
        1,
        "bookmarked watch resumed without re-list"
    );
    assert!(status(&store, &with).is_fresh());
    token.cancel();
}

#[tokio::test]
async fn outage_keeps_facts_and_recovers() {
    let api = server().await;
    api.apply(cm("a", "one", json!({}), "reg/one:1"))
        .expect("apply");
    let store = HistoryStore::new();
    let token = CancellationToken::new();
    let id = start_cm_source(
        &api,
        WatchConfig::default().watcher_config(),
        None,
        &store,
        &token,
    );
    let key = StatusKey::Source(id.clone());
    wait_for(Duration::from_secs(5), "initial list", || {
        status(&store, &id).synced
    })
    .await;

    // A quiet outage: nothing changes, the watch resumes and the error clears without a re-list.
    api.set_down(true);
    wait_for(Duration::from_secs(3), "source in error", || {
        store.in_error(&key)
    })
    .await;
    let snap = store.snapshot();
    assert!(!snap.all_sources_fresh());
    assert_eq!(snap.facts().count(), 1, "nothing forgotten while down");
    assert!(snap.sources[&id].last_error.is_some());
    tokio::time::sleep(Duration::from_millis(300)).await;
    api.set_down(false);
    wait_for(Duration::from_secs(10), "quiet recovery", || {
        !store.in_error(&key)
    })
    .await;
    assert_eq!(
        status(&store, &id).lists,
        1,
        "resumed from its resourceVersion"
    );

    // An outage during which something changes: the change arrives after recovery.
    api.set_down(true);
    wait_for(Duration::from_secs(3), "source in error", || {
        store.in_error(&key)
    })
    .await;
    api.apply(cm("a", "two", json!({}), "reg/two:1"))
        .expect("apply");
    api.set_down(false);
    wait_for(Duration::from_secs(10), "change after recovery", || {
        image_of(&store, "a", "two").is_some() && !store.in_error(&key)
    })
    .await;
    assert!(store.snapshot().all_sources_fresh());
    token.cancel();
}

#[tokio::test]
async fn pagination_lists_more_than_a_page() {
    let api = server().await;
    for i in 0..1203 {
        api.apply(cm(
            &format!("ns{}", i % 7),
            &format!("cm{i}"),
            json!({}),
            "reg/x:1",
        ))
        .expect("apply");
    }
    api.reset_stats();
    let store = HistoryStore::new();
    let token = CancellationToken::new();
    let id = start_cm_source(
        &api,
        WatchConfig::default().watcher_config(),
        None,
        &store,
        &token,
    );
    wait_for(Duration::from_secs(10), "initial list", || {
        status(&store, &id).synced
    })
    .await;
    assert_eq!(status(&store, &id).objects, 1203);
    let stats = api.stats();
    assert!(
        stats.requests - stats.watch_requests >= 3,
        "1203 objects in pages of 500 take 3 lists: {stats:?}"
    );
    token.cancel();
}

#[tokio::test]
async fn spawn_watchers_runs_the_configured_sources_and_this_node() {
    let api = server().await;
    for n in ["worker-1", "worker-2"] {
        api.apply(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": n, "labels": {"zone": n}},
        }))
        .expect("apply");
    }
    let store = HistoryStore::new();
    let token = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let cfg = WatchConfig {
        helm_secrets: false,
        namespaces: vec!["a".into(), "b".into()],
        node_name: Some("worker-1".into()),
        probe_interval: PROBE,
        ..Default::default()
    };
    spawn_watchers(
        &api.client().expect("client"),
        &cfg,
        &store,
        &token,
        &mut tasks,
    );
    wait_for(
        Duration::from_secs(5),
        "all sources synced and node known",
        || {
            let s = store.snapshot();
            s.all_sources_fresh() && s.node.is_some()
        },
    )
    .await;
    let snap = store.snapshot();
    // 4 resources (no Secrets) in 2 namespaces.
    assert_eq!(snap.sources.len(), 8);
    assert!(!snap.sources.keys().any(|id| id.resource == "secrets"));
    assert_eq!(
        snap.node.as_ref().map(|n| n.name.as_str()),
        Some("worker-1")
    );

    assert!(api.delete("Node", "", "worker-1"));
    wait_for(Duration::from_secs(1), "node deletion seen", || {
        store.snapshot().node.is_none()
    })
    .await;
    token.cancel();
    while tasks.join_next().await.is_some() {}
}

/// Safety rule 8 through a 410 re-list: an object that changed into something undecodable while
/// nobody watched keeps its last good facts (and says why), while one deleted meanwhile goes (the
/// control); a good version afterwards resolves it.
#[tokio::test]
async fn a_relist_keeps_the_last_good_facts_of_what_broke_meanwhile() {
    let api = server().await;
    for n in ["broken", "doomed"] {
        api.apply(cm("a", n, json!({}), &format!("reg/{n}:1")))
            .expect("apply");
    }
    let store = HistoryStore::new();
    let token = CancellationToken::new();
    let id = start_cm_source(
        &api,
        WatchConfig::default().watcher_config(),
        None,
        &store,
        &token,
    );
    wait_for(Duration::from_secs(5), "initial list", || {
        status(&store, &id).synced
    })
    .await;

    api.set_down(true);
    let key = StatusKey::Source(id.clone());
    wait_for(Duration::from_secs(3), "source in error", || {
        store.in_error(&key)
    })
    .await;
    api.apply(cm("a", "broken", json!({}), "bad"))
        .expect("apply");
    assert!(api.delete("ConfigMap", "a", "doomed"));
    api.compact();
    api.set_down(false);

    wait_for(Duration::from_secs(10), "re-list after 410", || {
        status(&store, &id).lists == 2 && status(&store, &id).is_fresh()
    })
    .await;
    assert_eq!(image_of(&store, "a", "doomed"), None, "deleted meanwhile");
    assert_eq!(
        image_of(&store, "a", "broken").as_deref(),
        Some("reg/broken:1"),
        "last good facts kept"
    );
    let st = status(&store, &id);
    assert_eq!(st.unresolved.len(), 1);
    assert_eq!(st.unresolved[0].object, oref("a", "broken"));
    assert!(st.unresolved[0].ever_good);
    assert!(store.snapshot().complete());

    api.apply(cm("a", "broken", json!({}), "reg/broken:2"))
        .expect("apply");
    wait_for(Duration::from_secs(5), "the good version", || {
        image_of(&store, "a", "broken").as_deref() == Some("reg/broken:2")
    })
    .await;
    assert!(status(&store, &id).unresolved.is_empty());
    token.cancel();
}

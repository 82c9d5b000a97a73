//! Fleet mode's inventory source (`history::inventory`) against the in-test API server: shards and
//! a catalog published as the indexer writes them, read into the store; after an API outage the
//! source leaves its error without an event or a re-list, as every other source does; a change made
//! during an outage arrives after it; quiet watches resume on their bookmarks; the catalog's
//! freshness follows the heartbeats the agent sees, whatever its `observedAt` says by the node's
//! clock.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::apps::v1::ReplicaSet;
use rollcache::fleet::{codec, publish};
use rollcache::history::inventory::{source_id, spawn_inventory_source};
use rollcache::history::replicasets;
use rollcache::history::store::{HistoryStore, SourceId, SourceStatus, StatusKey};
use rollcache::history::watch::WatchConfig;
use rollcache::model::RevisionFact;
use rollcache::shard::{self, InventorySpec};
use rollcache_testbed::apiserver::{ApiServer, ApiServerOptions};
use rollcache_testbed::history;
use serde_json::json;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use common::wait_for;

const INV_NS: &str = "rollcache";
const PROBE: Duration = Duration::from_millis(200);

async fn server() -> ApiServer {
    let api = ApiServer::start_with(ApiServerOptions {
        bookmark_interval: Duration::from_millis(200),
        ..Default::default()
    })
    .await
    .expect("test API server starts");
    api.install_rollcache_crd();
    api
}

/// The facts of a Deployment `archiver` in `ns` whose ReplicaSets run `images`, one per revision.
fn history_of(ns: &str, images: &[&str]) -> Vec<Vec<RevisionFact>> {
    images
        .iter()
        .zip(1..)
        .map(|(image, rev)| {
            let replicas = i32::from(rev == images.len() as i64);
            let obj = history::replicaset(ns, "archiver", rev, &[image], replicas);
            let rs: ReplicaSet = serde_json::from_value(obj).expect("a ReplicaSet");
            let decoded = replicasets::decode(&rs);
            assert!(decoded.problems.is_empty(), "{:?}", decoded.problems);
            decoded.facts
        })
        .collect()
}

/// Writes `objects`' shards and then the catalog naming them, as the indexer does, with a fresh
/// `observedAt` and a 5 min resync.
fn publish(api: &ApiServer, objects: &[Vec<RevisionFact>]) {
    publish_at(api, objects, SystemTime::now(), Duration::from_secs(300));
}

/// `publish` by an indexer whose clock reads `observed_at` and whose resync is `resync`; the
/// catalog written.
fn publish_at(
    api: &ApiServer,
    objects: &[Vec<RevisionFact>],
    observed_at: SystemTime,
    resync: Duration,
) -> shard::Catalog {
    let mut published: BTreeMap<String, InventorySpec> = BTreeMap::new();
    for (ns, facts) in &shard::by_namespace(objects.iter().map(Vec::as_slice)) {
        for spec in codec::encode(ns, facts) {
            let name = shard::object_name(&spec.source_namespace, spec.shard, spec.shards);
            api.apply(json!({
                "apiVersion": "rollcache.io/v1alpha1", "kind": shard::KIND,
                "metadata": {"name": name, "namespace": INV_NS},
                "spec": spec,
            }))
            .expect("shard written");
            published.insert(name, spec);
        }
    }
    let catalog = shard::Catalog {
        observed_at: humantime::format_rfc3339_seconds(observed_at).to_string(),
        ..publish::catalog_of(&published, &published, true, resync)
    };
    api.apply(json!({
        "apiVersion": "rollcache.io/v1alpha1", "kind": shard::KIND,
        "metadata": {"name": shard::CATALOG_NAME, "namespace": INV_NS},
        "catalog": catalog,
    }))
    .expect("catalog written");
    catalog
}

/// Writes the indexer's heartbeat, dated `observed_at`, vouching for the catalog of `digest`.
fn beat(api: &ApiServer, observed_at: SystemTime, resync: Duration, digest: &str) {
    api.apply(json!({
        "apiVersion": "rollcache.io/v1alpha1", "kind": shard::KIND,
        "metadata": {"name": shard::HEARTBEAT_NAME, "namespace": INV_NS},
        "heartbeat": shard::Heartbeat {
            observed_at: humantime::format_rfc3339_seconds(observed_at).to_string(),
            resync_seconds: resync.as_secs(),
            catalog: digest.to_owned(),
        },
    }))
    .expect("heartbeat written");
}

/// Starts the inventory source as the agent does, probing every `PROBE` while in error.
fn start(api: &ApiServer, watch: WatchConfig, store: &Arc<HistoryStore>) -> (SourceId, Running) {
    let token = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let client = api.client().expect("client");
    spawn_inventory_source(&client, INV_NS, &watch, store, &token, &mut tasks);
    (
        source_id(INV_NS),
        Running {
            token,
            _tasks: tasks,
        },
    )
}

/// The source's task, cancelled (and aborted) when the test is done.
struct Running {
    token: CancellationToken,
    _tasks: JoinSet<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

fn probing() -> WatchConfig {
    WatchConfig {
        probe_interval: PROBE,
        ..WatchConfig::default()
    }
}

fn status(store: &HistoryStore, id: &SourceId) -> SourceStatus {
    store.status(id).expect("source registered")
}

fn images(store: &HistoryStore) -> Vec<String> {
    let mut out: Vec<String> = store
        .snapshot()
        .facts()
        .flat_map(|f| f.template.containers.iter().map(|c| c.image.clone()))
        .collect();
    out.sort();
    out
}

/// Listed, answering and complete: the view unpinning may use.
fn complete(store: &HistoryStore, id: &SourceId) -> bool {
    let st = status(store, id);
    st.synced && !st.in_error && st.incomplete.is_none() && st.is_fresh()
}

#[tokio::test]
async fn a_quiet_outage_ends_without_an_event_or_a_relist_and_a_change_during_one_arrives() {
    let api = server().await;
    publish(&api, &history_of("bl45p", &["r/arch:1", "r/arch:2"]));
    let store = HistoryStore::new();
    let (id, _running) = start(&api, probing(), &store);
    let key = StatusKey::Source(id.clone());
    wait_for(Duration::from_secs(5), "listed and complete", || {
        complete(&store, &id)
    })
    .await;
    assert_eq!(images(&store), ["r/arch:1", "r/arch:2"]);

    // A quiet outage: nothing is published meanwhile, so no event will ever end it.
    api.set_down(true);
    wait_for(Duration::from_secs(3), "source in error", || {
        store.in_error(&key)
    })
    .await;
    assert!(!store.snapshot().all_sources_fresh());
    assert!(status(&store, &id).last_error.is_some());
    assert_eq!(
        images(&store),
        ["r/arch:1", "r/arch:2"],
        "nothing forgotten"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    api.set_down(false);
    wait_for(Duration::from_secs(10), "quiet recovery", || {
        complete(&store, &id)
    })
    .await;
    assert!(store.snapshot().all_sources_fresh());
    assert_eq!(
        status(&store, &id).lists,
        1,
        "resumed from its resourceVersion"
    );
    assert_eq!(images(&store), ["r/arch:1", "r/arch:2"]);

    // Control: an outage during which the indexer publishes a new revision.
    api.set_down(true);
    wait_for(Duration::from_secs(3), "source in error again", || {
        store.in_error(&key)
    })
    .await;
    publish(
        &api,
        &history_of("bl45p", &["r/arch:1", "r/arch:2", "r/arch:3"]),
    );
    assert_eq!(images(&store), ["r/arch:1", "r/arch:2"], "not while down");
    api.set_down(false);
    wait_for(Duration::from_secs(10), "the change after recovery", || {
        images(&store).len() == 3 && complete(&store, &id)
    })
    .await;
    assert_eq!(images(&store), ["r/arch:1", "r/arch:2", "r/arch:3"]);
    assert_eq!(status(&store, &id).lists, 1, "its events, not a re-list");

    // And one whose history the server forgot (410): a re-list, counted, with the change.
    api.set_down(true);
    wait_for(
        Duration::from_secs(3),
        "source in error a third time",
        || store.in_error(&key),
    )
    .await;
    publish(&api, &history_of("bl45p", &["r/arch:2", "r/arch:3"]));
    api.compact();
    api.set_down(false);
    wait_for(Duration::from_secs(10), "re-listed after 410", || {
        images(&store).len() == 2 && complete(&store, &id)
    })
    .await;
    assert_eq!(images(&store), ["r/arch:2", "r/arch:3"]);
    assert_eq!(status(&store, &id).lists, 2, "one re-list");
}

#[tokio::test]
async fn a_quiet_inventory_watch_resumes_on_its_bookmarks_without_a_relist() {
    let api = server().await;
    publish(&api, &history_of("bl45p", &["r/arch:1"]));
    let store = HistoryStore::new();
    // Watches that end every second: each resumes from the last resourceVersion it was told.
    let (id, _running) = start(
        &api,
        WatchConfig {
            watch_timeout: Some(1),
            ..probing()
        },
        &store,
    );
    wait_for(Duration::from_secs(5), "listed and complete", || {
        complete(&store, &id)
    })
    .await;
    // Other namespaces' writes move the server's resourceVersion past the inventory's last
    // change; only bookmarks tell the watch, so that compacting does not make it re-list.
    for i in 0..20 {
        api.apply(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("x{i}"), "namespace": "other"},
        }))
        .expect("apply");
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    api.compact();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(status(&store, &id).lists, 1, "no re-list");
    assert!(complete(&store, &id));
    assert_eq!(images(&store), ["r/arch:1"]);
}

/// Why the source is incomplete, if it is.
fn incomplete(store: &HistoryStore, id: &SourceId) -> Option<String> {
    status(store, id).incomplete
}

#[tokio::test]
async fn the_catalogs_freshness_follows_the_heartbeats_seen_not_the_nodes_clock() {
    const HOUR: Duration = Duration::from_secs(3600);
    // Stale after three resyncs of 2 s (1 s is the floor: the CRD's minimum, and the view's).
    let resync = Duration::from_secs(2);
    let objects = history_of("bl45p", &["r/arch:1", "r/arch:2"]);
    let api = server().await;
    // An indexer whose clock is an hour ahead of this node's wrote once, and died.
    publish_at(&api, &objects, SystemTime::now() + HOUR, resync);
    let store = HistoryStore::new();
    let (id, _running) = start(&api, probing(), &store);
    wait_for(Duration::from_secs(5), "listed and complete", || {
        complete(&store, &id)
    })
    .await;
    let listed = Instant::now();
    let took = wait_for(
        Duration::from_secs(15),
        "stale by this agent's clock",
        || incomplete(&store, &id).is_some(),
    )
    .await;
    let why = incomplete(&store, &id).unwrap_or_default();
    assert!(why.contains("as seen by this agent"), "{why}");
    assert!(
        listed.elapsed() >= Duration::from_secs(5),
        "not before three resyncs (6 s) after the list: {took:?}"
    );
    assert!(!store.snapshot().all_sources_fresh());
    assert_eq!(
        images(&store),
        ["r/arch:1", "r/arch:2"],
        "nothing forgotten"
    );

    // An indexer whose clock is an hour behind this node's: its heartbeat seen arriving is
    // fresh, whatever its observedAt says.
    publish_at(&api, &objects, SystemTime::now() - HOUR, resync);
    wait_for(Duration::from_secs(3), "complete at the heartbeat", || {
        complete(&store, &id)
    })
    .await;
    // Heartbeats keep it so...
    let until = Instant::now() + Duration::from_secs(8);
    let mut n = 1;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        publish_at(
            &api,
            &objects,
            SystemTime::now() - HOUR + Duration::from_secs(n),
            resync,
        );
        n += 1;
        assert!(complete(&store, &id), "{:?}", incomplete(&store, &id));
    }
    // ...until they stop.
    wait_for(Duration::from_secs(10), "stale once they stop", || {
        incomplete(&store, &id).is_some()
    })
    .await;
    let why = incomplete(&store, &id).unwrap_or_default();
    assert!(why.contains("as seen by this agent"), "{why}");
    assert_eq!(status(&store, &id).lists, 1, "no re-list");
}

#[tokio::test]
async fn heartbeats_alone_keep_an_unchanged_catalog_fresh_until_they_stop() {
    const HOUR: Duration = Duration::from_secs(3600);
    let resync = Duration::from_secs(2);
    let objects = history_of("bl45p", &["r/arch:1", "r/arch:2"]);
    let api = server().await;
    // The catalog was written an hour ago and is never rewritten: only the heartbeat is.
    let catalog = publish_at(&api, &objects, SystemTime::now() - HOUR, resync);
    let digest = catalog.content_digest();
    beat(&api, SystemTime::now(), resync, &digest);
    let store = HistoryStore::new();
    let (id, _running) = start(&api, probing(), &store);
    wait_for(Duration::from_secs(5), "listed and complete", || {
        complete(&store, &id)
    })
    .await;
    // Past three resyncs (6 s) after the list on heartbeats alone.
    let until = Instant::now() + Duration::from_secs(9);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        beat(&api, SystemTime::now(), resync, &digest);
        assert!(complete(&store, &id), "{:?}", incomplete(&store, &id));
    }
    // A heartbeat for another catalog: incomplete until the one it names is read.
    let other = format!("sha256:{}", "0".repeat(64));
    beat(&api, SystemTime::now(), resync, &other);
    wait_for(
        Duration::from_secs(3),
        "waiting for the catalog vouched for",
        || incomplete(&store, &id).is_some_and(|w| w.contains("vouches for another catalog")),
    )
    .await;
    beat(&api, SystemTime::now(), resync, &digest);
    wait_for(Duration::from_secs(3), "complete again", || {
        complete(&store, &id)
    })
    .await;
    // The heartbeats stop: stale three resyncs after the last one, nothing forgotten.
    let last = Instant::now();
    wait_for(Duration::from_secs(15), "stale once they stop", || {
        incomplete(&store, &id).is_some()
    })
    .await;
    assert!(
        last.elapsed() >= Duration::from_secs(5),
        "{:?}",
        last.elapsed()
    );
    let why = incomplete(&store, &id).unwrap_or_default();
    assert!(why.contains("as seen by this agent"), "{why}");
    assert_eq!(
        images(&store),
        ["r/arch:1", "r/arch:2"],
        "nothing forgotten"
    );
    assert_eq!(status(&store, &id).lists, 1, "no re-list");
}

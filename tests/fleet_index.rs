//! `rollcache index` against the test API server: history written with the test bed's builder
//! appears as shards that decode to the facts the agent's decoders read; a change rewrites only
//! its shard; an incomplete view deletes nothing; a second replica writes nothing while the first
//! leads, and takes over without rewriting what is unchanged.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, ReplicaSet};
use kube::api::{Api, DynamicObject, ListParams};
use rollcache::commands::index::{IndexArgs, inventory_resource, run_with};
use rollcache::fleet::codec;
use rollcache::fleet::publish::{IndexMetrics, Tuning};
use rollcache::history::{controller_revisions, replicasets};
use rollcache::model::RevisionFact;
use rollcache::shard::{self, InventorySpec};
use rollcache_testbed::apiserver::{ApiServer, ApiServerOptions, Fault};
use rollcache_testbed::history;
use serde_json::Value;
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;

fn args(identity: &str) -> IndexArgs {
    IndexArgs {
        kube: Default::default(),
        namespace: Some("rollcache".into()),
        namespaces: Vec::new(),
        identity: Some(identity.into()),
        lease_name: "rollcache-index".into(),
        lease_duration: Duration::from_secs(2),
        metrics_addr: "127.0.0.1:0".parse().unwrap(),
    }
}

/// A small budget so that test-sized namespaces get several shards.
fn tuning() -> Tuning {
    Tuning {
        budget: 600,
        debounce: Duration::from_millis(100),
        retry: Duration::from_millis(300),
        resync: Duration::from_secs(1),
    }
}

struct Replica {
    metrics: Arc<IndexMetrics>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

fn start(api: &ApiServer, identity: &str) -> Replica {
    start_tuned(api, identity, tuning())
}

fn start_tuned(api: &ApiServer, identity: &str, tuning: Tuning) -> Replica {
    start_with(api, args(identity), tuning)
}

fn start_with(api: &ApiServer, args: IndexArgs, tuning: Tuning) -> Replica {
    let (metrics, cancel) = (Arc::new(IndexMetrics::default()), CancellationToken::new());
    let client = api.client().expect("client");
    let task = tokio::spawn(run_with(
        args,
        client,
        tuning,
        metrics.clone(),
        cancel.clone(),
    ));
    Replica {
        metrics,
        cancel,
        task,
    }
}

/// Every shard as published: name → (resourceVersion, spec).
async fn shards(api: &ApiServer) -> Vec<(String, String, InventorySpec)> {
    let inv: Api<DynamicObject> =
        Api::namespaced_with(api.client().unwrap(), "rollcache", &inventory_resource());
    let mut out: Vec<_> = inv
        .list(&ListParams::default())
        .await
        .expect("list shards")
        .items
        .into_iter()
        .filter(|o| {
            let name = o.metadata.name.as_deref();
            name != Some(shard::CATALOG_NAME) && name != Some(shard::HEARTBEAT_NAME)
        })
        .map(|o| {
            let spec = serde_json::from_value(o.data["spec"].clone()).expect("spec");
            (
                o.metadata.name.unwrap(),
                o.metadata.resource_version.unwrap(),
                spec,
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn facts_of(shards: &[(String, String, InventorySpec)]) -> Vec<RevisionFact> {
    let mut all: Vec<RevisionFact> = shards
        .iter()
        .flat_map(|(name, _, spec)| codec::decode(name, spec).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    all.sort_by(|a, b| (&a.object, a.revision).cmp(&(&b.object, b.revision)));
    all
}

/// The facts the agent's own decoders read from `objects`, in the same order.
fn expected(objects: &[Value]) -> Vec<RevisionFact> {
    let mut all = Vec::new();
    for o in objects {
        let d = match o["kind"].as_str().unwrap() {
            "ReplicaSet" => {
                replicasets::decode(&serde_json::from_value::<ReplicaSet>(o.clone()).unwrap())
            }
            _ => controller_revisions::decode(
                &serde_json::from_value::<ControllerRevision>(o.clone()).unwrap(),
            ),
        };
        all.extend(d.facts);
    }
    all.sort_by(|a, b| (&a.object, a.revision).cmp(&(&b.object, b.revision)));
    all
}

async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut check: F) {
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "not within 10 s: {what}"
        );
        sleep(Duration::from_millis(50)).await;
    }
}

fn history_objects() -> Vec<Value> {
    let mut objects = Vec::new();
    for i in 0..12 {
        for rev in 1..=3 {
            let image = format!("ghcr.io/epics-containers/ioc-{i}:{rev}.0");
            objects.push(history::controller_revision(
                "bl45p",
                &format!("ioc-{i}"),
                rev,
                &[&image],
            ));
        }
    }
    for rev in 1..=2 {
        objects.push(history::replicaset(
            "bl46p",
            "archiver",
            rev,
            &[&format!("r/archiver:{rev}")],
            i32::from(rev == 2),
        ));
    }
    objects
}

/// A server with rollcache's CRDs and `history_objects()` as stored (the server's creation times
/// are part of the facts).
async fn with_history() -> (ApiServer, Vec<Value>) {
    let opts = ApiServerOptions {
        rollcache_crd: true,
        ..ApiServerOptions::default()
    };
    let api = ApiServer::start_with(opts)
        .await
        .expect("test API server starts");
    let objects = history_objects()
        .into_iter()
        .map(|o| api.apply(o).expect("history object"))
        .collect();
    (api, objects)
}

/// Waits until the shards decode to the facts of `objects`.
async fn published(api: &ApiServer, objects: &[Value]) {
    eventually("the history published", async || {
        facts_of(&shards(api).await) == expected(objects)
    })
    .await;
}

#[tokio::test]
async fn the_indexer_publishes_shards_that_decode_to_the_history() {
    let (api, mut objects) = with_history().await;
    let a = start(&api, "a");
    published(&api, &objects).await;
    let before = shards(&api).await;
    let bl45p = before
        .iter()
        .filter(|s| s.2.source_namespace == "bl45p")
        .count();
    assert!(bl45p > 1, "several shards for bl45p: {before:?}");
    assert!(
        before
            .iter()
            .all(|s| s.2.shards as usize == bl45p || s.2.source_namespace != "bl45p")
    );
    let written = a.metrics.writes.get();
    assert_eq!(written as usize, before.len());

    // A new revision of one IOC: one shard rewritten, the others untouched.
    let new =
        history::controller_revision("bl45p", "ioc-3", 4, &["ghcr.io/epics-containers/ioc-3:4.0"]);
    objects.push(api.apply(new).expect("new revision"));
    eventually("the new revision published", async || {
        facts_of(&shards(&api).await) == expected(&objects)
    })
    .await;
    let after = shards(&api).await;
    let changed: Vec<&str> = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b.1 != a.1)
        .map(|(b, _)| b.0.as_str())
        .collect();
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(a.metrics.writes.get(), written + 1);

    // A shard deleted by hand is back at the next resync, and only that one is written.
    let (gone, _, _) = &after[0];
    let inv: Api<DynamicObject> =
        Api::namespaced_with(api.client().unwrap(), "rollcache", &inventory_resource());
    inv.delete(gone, &Default::default())
        .await
        .expect("delete a shard");
    eventually("the deleted shard restored", async || {
        shards(&api).await.iter().any(|s| &s.0 == gone)
    })
    .await;
    assert_eq!(facts_of(&shards(&api).await), expected(&objects));
    assert_eq!(a.metrics.writes.get(), written + 2);

    // With ControllerRevisions unlistable the view is incomplete: bl46p's history going away
    // deletes nothing until every source is healthy again.
    api.set_resource_fault("controllerrevisions", Some(Fault::Status(500)));
    sleep(Duration::from_millis(500)).await;
    for o in objects.iter().filter(|o| o["kind"] == "ReplicaSet") {
        assert!(api.delete(
            "ReplicaSet",
            "bl46p",
            o["metadata"]["name"].as_str().unwrap()
        ));
    }
    sleep(Duration::from_secs(2)).await;
    let kept = shards(&api).await;
    assert!(
        kept.iter().any(|s| s.2.source_namespace == "bl46p"),
        "kept while incomplete: {kept:?}"
    );
    assert_eq!(a.metrics.deletes.get(), 0);
    api.set_resource_fault("controllerrevisions", None);
    eventually("bl46p's shards deleted", async || {
        shards(&api)
            .await
            .iter()
            .all(|s| s.2.source_namespace != "bl46p")
    })
    .await;
    assert!(a.metrics.deletes.get() >= 1);
    a.cancel.cancel();
    a.task.await.unwrap().expect("indexer ends cleanly");
}

#[tokio::test]
async fn a_lone_change_is_published_at_once_and_a_burst_is_paced() {
    let (api, mut objects) = with_history().await;
    let pace = Duration::from_secs(3);
    let tuned = Tuning {
        debounce: pace,
        resync: Duration::from_secs(600),
        ..tuning()
    };
    let a = start_tuned(&api, "a", tuned);
    published(&api, &objects).await;
    sleep(pace + Duration::from_millis(500)).await;

    // After a quiet spell a change waits for no window: well under the pace.
    let new =
        history::controller_revision("bl45p", "ioc-1", 4, &["ghcr.io/epics-containers/ioc-1:4.0"]);
    objects.push(api.apply(new).expect("new revision"));
    let written = Instant::now();
    published(&api, &objects).await;
    let took = written.elapsed();
    assert!(took < pace / 2, "a lone change waited {took:?}");

    // Five changes 200 ms apart, all within one pace: the first pass is already spent, so they
    // are published together at the end of the window, not one pass each.
    let passes = a.metrics.passes.get();
    for i in 5..10 {
        let image = format!("ghcr.io/epics-containers/ioc-{i}:4.0");
        let new = history::controller_revision("bl45p", &format!("ioc-{i}"), 4, &[&image]);
        objects.push(api.apply(new).expect("new revision"));
        sleep(Duration::from_millis(200)).await;
    }
    published(&api, &objects).await;
    let burst = a.metrics.passes.get() - passes;
    assert!(burst <= 2, "{burst} passes for a burst of 5 changes");
    a.cancel.cancel();
    a.task.await.unwrap().expect("indexer ends cleanly");
}

#[tokio::test]
async fn a_second_replica_writes_nothing_while_the_first_leads() {
    let (api, objects) = with_history().await;
    let a = start(&api, "a");
    eventually("a leads", async || a.metrics.leader.get() == 1).await;
    let b = start(&api, "b");
    published(&api, &objects).await;
    let published = shards(&api).await;
    sleep(Duration::from_secs(3)).await;
    assert_eq!((b.metrics.leader.get(), b.metrics.writes.get()), (0, 0));
    assert_eq!(b.metrics.ready.get(), 1, "a standby replica is ready too");
    assert_eq!(shards(&api).await, published, "nothing rewritten");

    // Failover: b leads within the lease duration and rewrites nothing that did not change.
    a.cancel.cancel();
    a.task.await.unwrap().expect("a ends cleanly");
    eventually("b leads", async || {
        b.metrics.leader.get() == 1 && b.metrics.passes.get() > 0
    })
    .await;
    assert_eq!(b.metrics.writes.get(), 0);
    assert_eq!(shards(&api).await, published);
    let new =
        history::controller_revision("bl45p", "ioc-0", 4, &["ghcr.io/epics-containers/ioc-0:4.0"]);
    api.apply(new).expect("new revision");
    eventually("b writes the change", async || b.metrics.writes.get() == 1).await;
    b.cancel.cancel();
    b.task.await.unwrap().expect("b ends cleanly");
}

#[tokio::test]
async fn a_release_that_never_decodes_is_named_and_holds_deletions_but_not_publishing() {
    let (api, objects) = with_history().await;
    let release = history::helm::release_json(
        "gw",
        "bl47p",
        1,
        "deployed",
        "2025-01-10T09:00:00Z",
        "",
        &[],
    );
    api.apply(history::helm::secret_with_payload(
        &release,
        b"not Helm's text",
    ))
    .expect("corrupt release");
    let a = start(&api, "a");
    eventually("published despite the corrupt release", async || {
        facts_of(&shards(&api).await) == expected(&objects)
    })
    .await;
    let all = shards(&api).await;
    let unknown: Vec<&String> = all.iter().flat_map(|s| &s.2.unresolved).collect();
    assert_eq!(
        unknown,
        vec!["Secret bl47p/sh.helm.release.v1.gw.v1"],
        "{all:?}"
    );
    let bl47p: Vec<_> = all
        .iter()
        .filter(|s| s.2.source_namespace == "bl47p")
        .collect();
    assert_eq!((bl47p.len(), bl47p[0].2.revisions), (1, 0));

    // While the release is unknown, bl46p's history going away deletes nothing; once it is
    // gone too, both namespaces' shards go.
    for o in objects.iter().filter(|o| o["kind"] == "ReplicaSet") {
        assert!(api.delete(
            "ReplicaSet",
            "bl46p",
            o["metadata"]["name"].as_str().unwrap()
        ));
    }
    sleep(Duration::from_secs(1)).await;
    assert!(
        shards(&api)
            .await
            .iter()
            .any(|s| s.2.source_namespace == "bl46p")
    );
    assert!(api.delete("Secret", "bl47p", "sh.helm.release.v1.gw.v1"));
    eventually("bl46p and bl47p deleted", async || {
        shards(&api)
            .await
            .iter()
            .all(|s| s.2.source_namespace == "bl45p")
    })
    .await;
    a.cancel.cancel();
    a.task.await.unwrap().expect("indexer ends cleanly");
}

#[tokio::test]
async fn without_the_crd_the_indexer_waits_and_publishes_once_it_is_installed() {
    let api = ApiServer::start().await.expect("test API server starts");
    let objects: Vec<Value> = history_objects()
        .into_iter()
        .map(|o| api.apply(o).expect("history object"))
        .collect();
    let a = start(&api, "a");
    eventually("a leads", async || a.metrics.leader.get() == 1).await;
    sleep(Duration::from_millis(500)).await;
    assert_eq!(a.metrics.writes.get(), 0);
    api.install_rollcache_crd();
    eventually("published once the CRD is there", async || {
        facts_of(&shards(&api).await) == expected(&objects)
    })
    .await;
    a.cancel.cancel();
    a.task.await.unwrap().expect("indexer ends cleanly");
}

/// The shard count each source namespace is published with.
fn counts(shards: &[(String, String, InventorySpec)]) -> Vec<(String, u32)> {
    let mut out: Vec<(String, u32)> = shards
        .iter()
        .map(|s| (s.2.source_namespace.clone(), s.2.shards))
        .collect();
    out.dedup();
    out
}

#[tokio::test]
async fn a_namespace_is_resharded_only_on_a_complete_view() {
    let (api, mut objects) = with_history().await;
    let a = start(&api, "a");
    published(&api, &objects).await;
    assert!(counts(&shards(&api).await).contains(&("bl46p".into(), 1)));

    // bl46p grows past one shard's budget while ControllerRevisions cannot be listed: its new
    // revisions are published in the shard count it has.
    api.set_resource_fault("controllerrevisions", Some(Fault::Status(500)));
    sleep(Duration::from_millis(500)).await;
    for rev in 3..=40 {
        let image = format!("r/archiver:{rev}");
        let rs = history::replicaset("bl46p", "archiver", rev, &[&image], 0);
        objects.push(api.apply(rs).expect("new revision"));
    }
    eventually("the new revisions published", async || {
        facts_of(&shards(&api).await) == expected(&objects)
    })
    .await;
    assert!(counts(&shards(&api).await).contains(&("bl46p".into(), 1)));

    // Complete again: split, the new set complete before the old one goes.
    api.set_resource_fault("controllerrevisions", None);
    eventually("bl46p resharded", async || {
        let c = counts(&shards(&api).await);
        c.iter().filter(|(ns, _)| ns == "bl46p").count() == 1 && !c.contains(&("bl46p".into(), 1))
    })
    .await;
    let now = shards(&api).await;
    assert_eq!(facts_of(&now), expected(&objects));
    let n = now
        .iter()
        .find(|s| s.2.source_namespace == "bl46p")
        .unwrap()
        .2
        .shards;
    assert_eq!(
        now.iter()
            .filter(|s| s.2.source_namespace == "bl46p")
            .count(),
        n as usize,
        "every shard of the new set, empty ones too"
    );
    a.cancel.cancel();
    a.task.await.unwrap().expect("indexer ends cleanly");
}

/// GET `path` on `addr`: (HTTP status, body).
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use rollcache::client::{ClientError, request};
    match request(
        addr,
        hyper::Method::GET,
        path,
        None,
        "get",
        Duration::from_secs(5),
    )
    .await
    {
        Ok(b) => (200, b),
        Err(ClientError::Status { status, body }) => (status, body),
        Err(e) => panic!("GET {path}: {e}"),
    }
}

#[tokio::test]
async fn the_listener_says_health_readiness_and_leadership() {
    let (api, objects) = with_history().await;
    // Replica sets cannot be listed: alive, not ready, nothing published.
    api.set_resource_fault("replicasets", Some(Fault::Status(403)));
    // A free port, then the indexer on it.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (metrics, cancel) = (Arc::new(IndexMetrics::default()), CancellationToken::new());
    let mut args = args("a");
    args.metrics_addr = addr;
    let task = tokio::spawn(run_with(
        args,
        api.client().unwrap(),
        tuning(),
        metrics.clone(),
        cancel.clone(),
    ));
    eventually("a leads", async || metrics.leader.get() == 1).await;
    assert_eq!(get(addr, "/healthz").await.0, 200);
    assert_eq!(get(addr, "/readyz").await.0, 503);
    assert_eq!(metrics.writes.get(), 0);
    api.set_resource_fault("replicasets", None);
    eventually("ready", async || get(addr, "/readyz").await.0 == 200).await;
    published(&api, &objects).await;
    let n = shards(&api).await.len();
    let (code, text) = get(addr, "/metrics").await;
    assert_eq!(code, 200);
    for sample in [
        "rollcache_index_leader 1".to_owned(),
        "rollcache_index_ready 1".to_owned(),
        format!("rollcache_index_shards {n}"),
        format!("rollcache_index_shard_writes_total {n}"),
    ] {
        assert!(text.lines().any(|l| l == sample), "{sample} in {text}");
    }
    eventually("the heartbeat written", async || heartbeat(&api).is_some()).await;
    let (_, text) = get(addr, "/metrics").await;
    for name in [
        "rollcache_index_catalog_writes_total",
        "rollcache_index_heartbeat_writes_total",
    ] {
        let n = text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<u64>().ok());
        assert!(n.is_some_and(|n| n >= 1), "{name} in {text}");
    }
    cancel.cancel();
    task.await.unwrap().expect("indexer ends cleanly");
}

/// An object's resourceVersion: the in-test API server's are one increasing counter, so they
/// tell the order of writes.
fn version(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("resourceVersion")
}

/// The heartbeat as published, with its resourceVersion.
fn heartbeat(api: &ApiServer) -> Option<(shard::Heartbeat, u64)> {
    let obj = api.get(shard::KIND, "rollcache", shard::HEARTBEAT_NAME)?;
    let beat = serde_json::from_value(obj["heartbeat"].clone()).expect("heartbeat");
    Some((beat, version(&obj)))
}

/// The catalog's resourceVersion.
fn catalog_version(api: &ApiServer) -> u64 {
    version(
        &api.get(shard::KIND, "rollcache", shard::CATALOG_NAME)
            .expect("catalog"),
    )
}

#[tokio::test]
async fn the_catalog_is_written_once_while_nothing_changes_and_the_heartbeat_every_resync() {
    let (api, mut objects) = with_history().await;
    let a = start(&api, "a");
    published(&api, &objects).await;
    eventually("the heartbeat vouches for the catalog", async || {
        let (Some(c), Some((b, _))) = (catalog(&api), heartbeat(&api)) else {
            return false;
        };
        b.catalog == c.content_digest() && b.resync_seconds == 1
    })
    .await;
    let (first, first_version) = (catalog(&api).unwrap(), catalog_version(&api));
    let (first_beat, _) = heartbeat(&api).unwrap();
    let (catalogs, beats) = (
        a.metrics.catalog_writes.get(),
        a.metrics.heartbeat_writes.get(),
    );
    // Three and a half resyncs of 1 s with nothing changing.
    sleep(Duration::from_millis(3500)).await;
    assert_eq!(a.metrics.catalog_writes.get(), catalogs, "no catalog write");
    assert_eq!(catalog_version(&api), first_version);
    assert_eq!(catalog(&api).unwrap(), first, "observedAt unchanged too");
    let (beat, _) = heartbeat(&api).unwrap();
    assert!(
        a.metrics.heartbeat_writes.get() >= beats + 3,
        "a heartbeat every resync: {} then {}",
        beats,
        a.metrics.heartbeat_writes.get()
    );
    assert_ne!(beat.observed_at, first_beat.observed_at);
    assert_eq!(beat.catalog, first.content_digest());

    // A change: its shard, then the catalog naming it, then the heartbeat naming that catalog.
    let before = shards(&api).await;
    let new =
        history::controller_revision("bl45p", "ioc-3", 4, &["ghcr.io/epics-containers/ioc-3:4.0"]);
    objects.push(api.apply(new).expect("new revision"));
    eventually("the new catalog vouched for", async || {
        let (Some(c), Some((b, _))) = (catalog(&api), heartbeat(&api)) else {
            return false;
        };
        c != first && b.catalog == c.content_digest()
    })
    .await;
    assert_eq!(facts_of(&shards(&api).await), expected(&objects));
    let after = shards(&api).await;
    let changed: Vec<u64> = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b.1 != a.1)
        .map(|(_, a)| a.1.parse().unwrap())
        .collect();
    assert_eq!(changed.len(), 1, "one shard rewritten");
    let (_, beat_version) = heartbeat(&api).unwrap();
    assert!(
        changed[0] < catalog_version(&api) && catalog_version(&api) < beat_version,
        "shard {} < catalog {} < heartbeat {beat_version}",
        changed[0],
        catalog_version(&api)
    );
    assert_eq!(a.metrics.catalog_writes.get(), catalogs + 1);
    a.cancel.cancel();
    a.task.await.unwrap().expect("indexer ends cleanly");
}

/// The catalog as published.
fn catalog(api: &ApiServer) -> Option<shard::Catalog> {
    let obj = api.get(shard::KIND, "rollcache", shard::CATALOG_NAME)?;
    Some(serde_json::from_value(obj["catalog"].clone()).expect("catalog"))
}

#[tokio::test]
async fn the_catalog_names_every_shard_by_digest_is_refreshed_and_restored() {
    let (api, objects) = with_history().await;
    let a = start(&api, "a");
    published(&api, &objects).await;
    let mut by_ns: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    eventually("the catalog names what is published", async || {
        by_ns.clear();
        for (_, _, s) in shards(&api).await {
            let digests = by_ns.entry(s.source_namespace.clone()).or_default();
            digests.resize(s.shards as usize, String::new());
            digests[s.shard as usize] = s.digest;
        }
        catalog(&api).is_some_and(|c| {
            c.namespaces.len() == by_ns.len()
                && c.namespaces.iter().all(|(ns, e)| {
                    by_ns.get(ns) == Some(&e.digests) && e.shards as usize == e.digests.len()
                })
        })
    })
    .await;
    let first = catalog(&api).unwrap();
    assert!(first.complete, "{first:?}");
    assert_eq!(first.resync_seconds, 1);
    assert_eq!(first.scope, None, "without --namespaces: every namespace");
    assert_eq!(
        first.namespaces.keys().collect::<Vec<_>>(),
        ["bl45p", "bl46p"]
    );
    eventually("the heartbeat vouches for it", async || {
        heartbeat(&api).is_some_and(|(b, _)| b.catalog == first.content_digest())
    })
    .await;
    let written = a.metrics.catalog_writes.get();
    assert!(api.delete(shard::KIND, "rollcache", shard::CATALOG_NAME));
    eventually("the catalog restored", async || catalog(&api).is_some()).await;
    assert_eq!(a.metrics.catalog_writes.get(), written + 1);
    assert_eq!(
        catalog(&api).unwrap().content_digest(),
        first.content_digest()
    );
    a.cancel.cancel();
    a.task.await.unwrap().expect("indexer ends cleanly");
}

/// `--namespaces`: only those namespaces' history is watched and published (a change elsewhere
/// never is), and the catalog's scope names them, one without history included; a name that is
/// not a namespace's is refused before anything is watched.
#[tokio::test]
async fn with_namespaces_only_those_are_published_and_the_catalog_names_its_scope() {
    let (api, mut objects) = with_history().await;
    let mut scoped = args("a");
    scoped.namespaces = vec!["bl48p".into(), "bl46p".into(), "bl46p".into()];
    let a = start_with(&api, scoped, tuning());
    objects.retain(|o| o["metadata"]["namespace"] == "bl46p");
    assert!(!objects.is_empty());
    published(&api, &objects).await;
    eventually("the catalog names the scope", async || {
        catalog(&api).is_some_and(|c| c.complete && c.namespaces.len() == 1)
    })
    .await;
    let c = catalog(&api).unwrap();
    assert_eq!(
        c.scope.as_deref(),
        Some(&["bl46p".to_owned(), "bl48p".to_owned()][..])
    );
    assert_eq!(c.namespaces.keys().collect::<Vec<_>>(), ["bl46p"]);
    assert!(c.covers("bl48p") && !c.covers("bl45p"));

    // A new revision outside the scope is not published; one inside is.
    let outside =
        history::controller_revision("bl45p", "ioc-0", 4, &["ghcr.io/epics-containers/ioc-0:4.0"]);
    api.apply(outside).expect("new revision");
    let inside = history::replicaset("bl46p", "archiver", 3, &["r/archiver:3"], 0);
    objects.push(api.apply(inside).expect("new revision"));
    published(&api, &objects).await;
    sleep(Duration::from_millis(500)).await;
    assert_eq!(facts_of(&shards(&api).await), expected(&objects));
    a.cancel.cancel();
    a.task.await.unwrap().expect("indexer ends cleanly");

    let mut bad = args("b");
    bad.namespaces = vec!["bl46p".into(), "BL_47".into()];
    let refused = start_with(&api, bad, tuning()).task.await.unwrap();
    let e = refused.expect_err("refused").to_string();
    assert!(
        e.contains("--namespaces: `BL_47` is not a namespace name"),
        "{e}"
    );
}

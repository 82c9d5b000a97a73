//! The indexer's writer: the store's facts as `RollcacheInventory` shards, written while this
//! replica leads, only where a digest changed, and shrunk only on a complete view.
//!
//! Nothing is written before every source has listed once: a shard rewritten from a partial list
//! would drop facts that agents still need. After that, a changed shard is written at once (the
//! store keeps last good facts through errors), but shards are deleted, and a namespace's shard
//! count changed, only when every source is listed and healthy and no object is unknown: an
//! incomplete view never shrinks what is published. Objects that never decoded cleanly are named
//! in their shard's `unresolved`, so that readers know their view of that namespace is incomplete.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::time::Duration;

use kube::Api;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::codec;
use crate::history::store::{HistorySnapshot, HistoryStore};
use crate::model::ObjectRef;
use rollcache_core::shard::{self, Catalog, CatalogEntry, Heartbeat, InventorySpec};

/// The field manager of every shard write.
pub const FIELD_MANAGER: &str = "rollcache-index";

/// The indexer's metrics, served on its `/metrics`.
#[derive(Debug, Default)]
pub struct IndexMetrics {
    pub leader: Gauge,
    pub shards: Gauge,
    pub writes: Counter,
    pub write_errors: Counter,
    pub deletes: Counter,
    /// Catalog writes: only when what it says changed.
    pub catalog_writes: Counter,
    /// Heartbeat writes: after a catalog write, and at least once per resync.
    pub heartbeat_writes: Counter,
    /// 1 once every source has listed (the indexer publishes from then on).
    pub ready: Gauge<i64, AtomicI64>,
    pub passes: Counter<u64, AtomicU64>,
}

impl IndexMetrics {
    pub fn register(self: &Arc<Self>, registry: &mut Registry) {
        registry.register(
            "rollcache_index_leader",
            "1 while this replica leads and writes",
            self.leader.clone(),
        );
        registry.register(
            "rollcache_index_shards",
            "Inventory shards published",
            self.shards.clone(),
        );
        registry.register(
            "rollcache_index_shard_writes",
            "Shards written (server-side apply)",
            self.writes.clone(),
        );
        registry.register(
            "rollcache_index_shard_write_errors",
            "Shard writes or deletes that failed",
            self.write_errors.clone(),
        );
        registry.register(
            "rollcache_index_shard_deletes",
            "Shards deleted (namespace gone or resharded)",
            self.deletes.clone(),
        );
        registry.register(
            "rollcache_index_catalog_writes",
            "Catalog writes (a change of what is published)",
            self.catalog_writes.clone(),
        );
        registry.register(
            "rollcache_index_heartbeat_writes",
            "Heartbeat writes (after a catalog write, and at least once per resync)",
            self.heartbeat_writes.clone(),
        );
        registry.register(
            "rollcache_index_ready",
            "1 once every history source has listed",
            self.ready.clone(),
        );
        registry.register(
            "rollcache_index_passes",
            "Publish passes run while leading",
            self.passes.clone(),
        );
    }
}

/// What the published shards are, as far as this replica knows: object name → spec.
pub struct Publisher {
    pub api: Api<DynamicObject>,
    pub budget: usize,
    pub metrics: Arc<IndexMetrics>,
    /// The heartbeat period the catalog announces (readers call it stale after a few).
    pub resync: Duration,
    /// The namespaces the indexer watches (None: all), announced in the catalog so that readers
    /// tell a namespace outside them (unknown) from one without history.
    pub scope: Option<Vec<String>>,
    published: BTreeMap<String, InventorySpec>,
    /// The catalog as last written or read, its time left out; None: write it at the next pass.
    catalog: Option<Catalog>,
    /// The heartbeat is written at the next pass (after a load and after a catalog write).
    beat_due: bool,
    listed_once: bool,
}

/// What one pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pass {
    pub written: usize,
    pub deleted: usize,
    /// Deletions held back because the view was incomplete.
    pub kept: usize,
    /// The view had not been complete once yet: nothing was written.
    pub waiting: bool,
}

impl Publisher {
    pub fn new(api: Api<DynamicObject>, budget: usize, metrics: Arc<IndexMetrics>) -> Self {
        Self {
            api,
            budget,
            metrics,
            resync: Tuning::default().resync,
            scope: None,
            published: BTreeMap::new(),
            catalog: None,
            beat_due: true,
            listed_once: false,
        }
    }

    /// Reads what is published (at start, on becoming leader: another replica wrote meanwhile, and
    /// every resync). The catalog is rewritten at the next pass only if what is published differs
    /// from it (edited, deleted, another leader's); the heartbeat is written then in any case.
    pub async fn load(&mut self) -> Result<(), kube::Error> {
        self.beat_due = true;
        let list = self.api.list(&ListParams::default()).await?;
        self.catalog = list
            .items
            .iter()
            .find(|o| o.metadata.name.as_deref() == Some(shard::CATALOG_NAME))
            .and_then(|o| codec::read_unsharded::<Catalog>(&o.data, "catalog", "").ok())
            .map(|c| Catalog {
                observed_at: String::new(),
                ..c
            });
        self.published = list
            .items
            .into_iter()
            .filter_map(|o| {
                let name = o.metadata.name?;
                // An undecodable spec counts as nothing published: it is rewritten.
                let spec = serde_json::from_value(o.data.get("spec")?.clone()).ok()?;
                Some((name, spec))
            })
            .collect();
        self.metrics.shards.set(self.published.len() as i64);
        Ok(())
    }

    /// Publishes `snap`, writing only while `leading` says so.
    pub async fn publish(
        &mut self,
        snap: &HistorySnapshot,
        leading: &watch::Receiver<bool>,
    ) -> Result<Pass, kube::Error> {
        let complete = snap.all_sources_fresh() && snap.complete();
        if !self.note_listed(snap) {
            return Ok(Pass {
                waiting: true,
                ..Pass::default()
            });
        }
        self.metrics.passes.inc();
        let mut grouped = shard::by_namespace(snap.objects.iter().map(|o| &**o));
        let mut unknown: BTreeMap<&str, Vec<&ObjectRef>> = BTreeMap::new();
        for u in snap.unresolved().filter(|u| u.holds_unpins()) {
            unknown
                .entry(u.object.namespace.as_str())
                .or_default()
                .push(&u.object);
        }
        for ns in unknown.keys() {
            grouped.entry(ns).or_default();
        }
        let mut wanted: BTreeMap<String, InventorySpec> = BTreeMap::new();
        for (ns, facts) in &grouped {
            let mut specs = codec::encode_namespace(ns, facts, self.budget);
            let published = self.published_count(ns);
            // Resharding replaces a namespace's whole set: only on a complete view.
            if !complete && let Some(n) = published.filter(|n| *n != specs.len() as u32) {
                specs = codec::encode_shards(ns, facts, n);
            }
            for mut s in specs {
                s.unresolved = unknown
                    .get(ns)
                    .into_iter()
                    .flatten()
                    .filter(|o| shard::bucket(o, s.shards) == s.shard)
                    .map(|o| o.to_string())
                    .collect();
                wanted.insert(shard::object_name(ns, s.shard, s.shards), s);
            }
        }
        let mut pass = Pass::default();
        for (name, spec) in &wanted {
            if self.published.get(name) == Some(spec) {
                continue;
            }
            if !*leading.borrow() {
                return Ok(pass);
            }
            let obj = inventory_object(name, Some(&spec.source_namespace), "spec", json!(spec));
            self.apply(name, &obj).await?;
            self.metrics.writes.inc();
            self.published.insert(name.clone(), spec.clone());
            pass.written += 1;
        }
        let stale: Vec<String> = self
            .published
            .keys()
            .filter(|n| !wanted.contains_key(*n))
            .cloned()
            .collect();
        if !complete {
            pass.kept = stale.len();
        } else {
            for name in stale {
                if !*leading.borrow() {
                    return Ok(pass);
                }
                match self.api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => {
                        self.metrics.write_errors.inc();
                        return Err(e);
                    }
                }
                self.metrics.deletes.inc();
                self.published.remove(&name);
                pass.deleted += 1;
            }
        }
        self.metrics.shards.set(self.published.len() as i64);
        self.write_catalog(&wanted, complete).await?;
        Ok(pass)
    }

    /// Writes the catalog of what is published now when it changed, then the heartbeat naming it
    /// (after a catalog write, and at the first pass after a load: at least once per resync). Only
    /// after a pass that wrote everything it wanted: a catalog never names a digest that is not
    /// published yet, and a heartbeat never vouches for a catalog not written yet.
    async fn write_catalog(
        &mut self,
        wanted: &BTreeMap<String, InventorySpec>,
        complete: bool,
    ) -> Result<(), kube::Error> {
        let catalog = Catalog {
            scope: self.scope.clone(),
            ..catalog_of(&self.published, wanted, complete, self.resync)
        };
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        if self.catalog.as_ref() != Some(&catalog) {
            self.write_changed_catalog(catalog, &now).await?;
        }
        if !self.beat_due {
            return Ok(());
        }
        let Some(written) = &self.catalog else {
            return Ok(());
        };
        let beat = Heartbeat {
            observed_at: now,
            resync_seconds: written.resync_seconds,
            catalog: written.content_digest(),
        };
        let obj = inventory_object(shard::HEARTBEAT_NAME, None, "heartbeat", json!(beat));
        self.apply(shard::HEARTBEAT_NAME, &obj).await?;
        self.metrics.heartbeat_writes.inc();
        self.beat_due = false;
        Ok(())
    }

    /// Writes `catalog` dated `now`; the heartbeat naming it is due.
    async fn write_changed_catalog(
        &mut self,
        catalog: Catalog,
        now: &str,
    ) -> Result<(), kube::Error> {
        let observed = Catalog {
            observed_at: now.to_owned(),
            ..catalog.clone()
        };
        let obj = inventory_object(shard::CATALOG_NAME, None, "catalog", json!(observed));
        self.apply(shard::CATALOG_NAME, &obj).await?;
        self.metrics.catalog_writes.inc();
        self.catalog = Some(catalog);
        self.beat_due = true;
        Ok(())
    }

    /// Writes `obj` as `name` by server-side apply, counting a failure.
    async fn apply(&self, name: &str, obj: &serde_json::Value) -> Result<(), kube::Error> {
        let ssa = PatchParams::apply(FIELD_MANAGER).force();
        match self.api.patch(name, &ssa, &Patch::Apply(obj)).await {
            Ok(_) => Ok(()),
            Err(e) => {
                self.metrics.write_errors.inc();
                Err(e)
            }
        }
    }

    /// Whether every source has listed since start, noting it in the readiness gauge. One object
    /// that never decodes does not count: it must not keep the inventory unpublished.
    pub fn note_listed(&mut self, snap: &HistorySnapshot) -> bool {
        self.listed_once |= snap.all_sources_fresh();
        self.metrics.ready.set(i64::from(self.listed_once));
        self.listed_once
    }

    /// The shard count `ns` is published with, when it has exactly one.
    fn published_count(&self, ns: &str) -> Option<u32> {
        let counts: BTreeSet<u32> = self
            .published
            .values()
            .filter(|s| s.source_namespace == ns)
            .map(|s| s.shards)
            .collect();
        (counts.len() == 1).then(|| *counts.first().expect("one"))
    }
}

/// The catalog of `published` (its time and scope left empty): each source namespace with the shard count
/// it is wanted with (else the one it is published with) and each shard's digest, empty where a
/// shard of that count is not published (a reader then sees the set incomplete).
pub fn catalog_of(
    published: &BTreeMap<String, InventorySpec>,
    wanted: &BTreeMap<String, InventorySpec>,
    complete: bool,
    resync: Duration,
) -> Catalog {
    let mut counts: BTreeMap<&str, u32> = BTreeMap::new();
    for s in published.values() {
        let n = counts.entry(&s.source_namespace).or_default();
        *n = (*n).max(s.shards);
    }
    for s in wanted.values() {
        counts.insert(&s.source_namespace, s.shards);
    }
    let namespaces = counts
        .into_iter()
        .filter(|(ns, _)| published.values().any(|s| s.source_namespace == *ns))
        .map(|(ns, n)| {
            let digests = (0..n)
                .map(|i| {
                    published
                        .get(&shard::object_name(ns, i, n))
                        .map(|s| s.digest.clone())
                        .unwrap_or_default()
                })
                .collect();
            (ns.to_owned(), CatalogEntry { shards: n, digests })
        })
        .collect();
    Catalog {
        observed_at: String::new(),
        resync_seconds: resync.as_secs().max(1),
        complete,
        namespaces,
        scope: None,
    }
}

/// How the indexer paces and sizes its writes.
#[derive(Clone, Copy, Debug)]
pub struct Tuning {
    /// Compressed bytes per shard before a namespace is split further.
    pub budget: usize,
    /// Passes are at least this far apart: a change after a quiet spell is published at once,
    /// changes coming faster are published together at the end of the window.
    pub debounce: Duration,
    /// A failed pass or load is retried after this long.
    pub retry: Duration,
    /// What is published is read again and compared this often, changes or not.
    pub resync: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            budget: shard::SHARD_BUDGET_BYTES,
            debounce: Duration::from_secs(1),
            retry: Duration::from_secs(5),
            resync: Duration::from_secs(300),
        }
    }
}

/// Publishes the store's facts while `leading`, until `cancel`.
pub async fn run(
    store: Arc<HistoryStore>,
    mut publisher: Publisher,
    mut leading: watch::Receiver<bool>,
    pacing: Tuning,
    cancel: CancellationToken,
) {
    publisher.resync = pacing.resync;
    let mut changes = store.subscribe();
    loop {
        publisher.metrics.leader.set(0);
        // A standby replica is ready once its history is listed too: a rollout waits for it.
        while !*leading.borrow() {
            publisher.note_listed(&store.snapshot());
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = leading.changed() => if r.is_err() { return },
                r = changes.changed() => if r.is_err() { return },
            }
        }
        publisher.metrics.leader.set(1);
        info!("leading: publishing the inventory");
        let mut loaded = false;
        let mut failing: Option<String> = None;
        let mut resync = tokio::time::interval(pacing.resync);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is now: the load below already reads what is published.
        resync.tick().await;
        while *leading.borrow() {
            let last_pass = tokio::time::Instant::now();
            let outcome = if loaded {
                publisher
                    .publish(&store.snapshot(), &leading)
                    .await
                    .map(Some)
            } else {
                publisher.load().await.map(|()| None)
            };
            let wait = match outcome {
                Ok(None) => {
                    loaded = true;
                    continue;
                }
                Ok(Some(pass)) => {
                    if failing.take().is_some() {
                        info!("publishing the inventory again");
                    }
                    if pass.written + pass.deleted > 0 {
                        info!(
                            written = pass.written,
                            deleted = pass.deleted,
                            kept = pass.kept,
                            "inventory published"
                        );
                    } else if pass.kept > 0 {
                        debug!(
                            kept = pass.kept,
                            "stale shards kept: the view is incomplete"
                        );
                    }
                    None
                }
                Err(e) => {
                    // Once per kind of failure, not once per retry (a missing CRD would repeat).
                    let text = match &e {
                        kube::Error::Api(s) if s.code == 404 => format!(
                            "{} answers 404: is the CRD installed (daemonset/fleet/crd-rollcacheinventories.yaml)?",
                            shard::PLURAL
                        ),
                        e => e.to_string(),
                    };
                    if failing.as_deref() != Some(text.as_str()) {
                        let every = humantime::format_duration(pacing.retry);
                        warn!(error = %text, "cannot publish the inventory; trying again every {every}");
                    }
                    failing = Some(text);
                    Some(pacing.retry)
                }
            };
            let retry = wait.unwrap_or_default();
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = leading.changed() => if r.is_err() { return },
                r = changes.changed() => {
                    if r.is_err() { return }
                    // Leading edge: a lone change waits for nothing; a burst is paced.
                    tokio::time::sleep_until(last_pass + pacing.debounce).await;
                }
                // Read what is published again: a shard deleted or edited by hand is restored,
                // however busy the history is.
                _ = resync.tick() => loaded = false,
                _ = tokio::time::sleep(retry), if wait.is_some() => {}
            }
        }
        info!("no longer leading: stopped writing");
    }
}

/// The `RollcacheInventory` `name` holding `content` in its top-level `field`: `spec` for a
/// shard (labelled with its `source_namespace`), `catalog` or `heartbeat` for the others.
fn inventory_object(
    name: &str,
    source_namespace: Option<&str>,
    field: &str,
    content: serde_json::Value,
) -> serde_json::Value {
    let mut obj = json!({
        "apiVersion": format!("{}/{}", shard::GROUP, shard::VERSION),
        "kind": shard::KIND,
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "rollcache"}},
    });
    if let Some(ns) = source_namespace {
        obj["metadata"]["labels"]["rollcache.io/source-namespace"] = json!(ns);
    }
    obj[field] = content;
    obj
}

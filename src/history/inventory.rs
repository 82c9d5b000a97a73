//! The inventory source of fleet mode (`history_from: inventory`): the `RollcacheInventory`
//! shards, catalog and heartbeat `rollcache index` publishes, listed and watched in one namespace, decoded,
//! and folded into the same store as the cluster's own sources, through `change`.
//!
//! The view (`view`) decides what the store holds and whether it is complete; this source's sink
//! feeds it the watch's events and when each arrived on this agent's monotonic clock, checks the
//! catalog's age every second (an indexer that stopped is only seen by its heartbeat no longer
//! arriving), and marks the source incomplete before any change that is not complete, so that no
//! snapshot between the two looks complete. The watch itself (backoff, the
//! error mark, a quiet resume after an outage told by a probe) is `drive`'s, as for every source.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use kube::api::{Api, DynamicObject};
use kube::runtime::watcher;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Decoded;
use super::change::{Change, fold};
use super::drive::{Sink, drive};
use super::store::{HistoryStore, SourceId, StatusKey};
use super::supervise::spawn_supervised;
use super::watch::WatchConfig;
use crate::model::{RevisionFact, SourceKind};

pub mod view;

use view::View;

/// The inventory source's identity in the store, `/status` and the metrics.
pub fn source_id(namespace: &str) -> SourceId {
    SourceId::new(
        SourceKind::Inventory,
        "rollcacheinventories",
        Some(namespace),
    )
}

/// How often the catalog's age is checked between events.
const AGE_CHECK: Duration = Duration::from_secs(1);

/// Starts the inventory source of `namespace` on `client` under its supervisor, paged and
/// probed as `watch` says, taking only the facts of `watch.namespaces` (empty: every one).
pub fn spawn_inventory_source(
    client: &kube::Client,
    namespace: &str,
    watch: &WatchConfig,
    store: &Arc<HistoryStore>,
    token: &CancellationToken,
    tasks: &mut JoinSet<()>,
) {
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        namespace,
        &crate::fleet::inventory_resource(),
    );
    let id = source_id(namespace);
    let (wc, probe) = (watch.inventory_config(), watch.probe_interval);
    let namespaces = watch.namespaces.clone();
    let (store_, token_) = (store.clone(), token.clone());
    spawn_supervised(
        tasks,
        store,
        StatusKey::Source(id.clone()),
        token,
        move || {
            run(
                api.clone(),
                wc.clone(),
                id.clone(),
                store_.clone(),
                token_.clone(),
                probe,
                namespaces.clone(),
            )
        },
    );
}

/// What the store was last given, to pass on only what changed.
struct Feeder {
    id: SourceId,
    view: View,
    in_store: Option<view::Facts>,
    incomplete: Option<String>,
}

impl Feeder {
    /// Evaluates the view and gives the store what changed; the first time, as one list.
    fn feed(&mut self, store: &HistoryStore) {
        let (now, local) = (SystemTime::now(), Instant::now());
        let outcome = self.view.evaluate(now, local);
        if outcome.incomplete != self.incomplete {
            match &outcome.incomplete {
                Some(why) => {
                    warn!(source = %self.id, reason = %why, "the inventory is incomplete: nothing is unpinned until it is complete again")
                }
                None => match self.view.clock_note(now, local) {
                    Some(note) => {
                        info!(source = %self.id, clock = %note, "the inventory is complete")
                    }
                    None => info!(source = %self.id, "the inventory is complete"),
                },
            }
        }
        // Incomplete before the change, complete only after it: no snapshot in between claims
        // more than it holds.
        if outcome.incomplete.is_some() {
            store.set_incomplete(&self.id, outcome.incomplete.clone());
        }
        let decoded = |facts: &std::sync::Arc<[RevisionFact]>| Decoded {
            facts: facts.to_vec(),
            problems: Vec::new(),
        };
        match &self.in_store {
            None => {
                fold(store, &self.id, Change::ResetBegin);
                for (object, facts) in &outcome.objects {
                    fold(
                        store,
                        &self.id,
                        Change::ResetApply(object.clone(), decoded(facts)),
                    );
                }
                fold(store, &self.id, Change::ResetDone);
            }
            Some(before) => {
                for (object, facts) in &outcome.objects {
                    if before.get(object) != Some(facts) {
                        fold(
                            store,
                            &self.id,
                            Change::Apply(object.clone(), decoded(facts)),
                        );
                    }
                }
                for object in before.keys().filter(|o| !outcome.objects.contains_key(*o)) {
                    fold(store, &self.id, Change::Delete(object.clone()));
                }
            }
        }
        if outcome.incomplete.is_none() {
            store.set_incomplete(&self.id, None);
        }
        self.incomplete = outcome.incomplete;
        self.in_store = Some(outcome.objects);
    }
}

/// The watch's events into the view, the view into the store; the catalog's age on the clock.
struct InventorySink {
    feeder: Feeder,
    /// Between `Init` and `InitDone`: the view is being rebuilt and says nothing yet.
    listing: bool,
    /// Whether the catalog was stale at the last check; None: not checked since the last event.
    catalog_stale: Option<bool>,
}

impl Sink<DynamicObject> for InventorySink {
    fn key(&self) -> StatusKey {
        StatusKey::Source(self.feeder.id.clone())
    }

    fn event(&mut self, store: &HistoryStore, event: watcher::Event<DynamicObject>) {
        let name = |o: &DynamicObject| o.metadata.name.clone().unwrap_or_default();
        let view = &mut self.feeder.view;
        match event {
            watcher::Event::Init => {
                self.listing = true;
                view.clear();
                // The first list is fed as one (counted then); a re-list only as what changed.
                if self.feeder.in_store.is_some() {
                    store.count_list(&self.feeder.id);
                }
            }
            watcher::Event::InitApply(o) => view.apply(&name(&o), &o.data),
            watcher::Event::InitDone => {
                self.listing = false;
                view.listed(Instant::now());
                self.feeder.feed(store);
            }
            watcher::Event::Apply(o) => {
                view.apply(&name(&o), &o.data);
                if !self.listing {
                    view.watched(Instant::now());
                    self.feeder.feed(store);
                }
            }
            watcher::Event::Delete(o) => {
                view.delete(&name(&o));
                if !self.listing {
                    self.feeder.feed(store);
                }
            }
        }
        self.catalog_stale = None;
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(AGE_CHECK)
    }

    /// An indexer that stopped is seen only by its heartbeat no longer arriving: fed when the
    /// catalog's freshness flips. Not before the first list, nor during a re-list (the view is
    /// half rebuilt).
    fn tick(&mut self, store: &HistoryStore) {
        if self.feeder.in_store.is_none() || self.listing {
            return;
        }
        let stale = self
            .feeder
            .view
            .catalog_problem(SystemTime::now(), Instant::now())
            .is_some();
        if self.catalog_stale != Some(stale) {
            self.catalog_stale = Some(stale);
            self.feeder.feed(store);
        }
    }
}

/// Watches the inventory into the store until `token` is cancelled.
async fn run(
    api: Api<DynamicObject>,
    wc: watcher::Config,
    id: SourceId,
    store: Arc<HistoryStore>,
    token: CancellationToken,
    probe_interval: Duration,
    namespaces: Vec<String>,
) {
    store.register(&id);
    let mut view = View::for_namespaces(&namespaces);
    // A restarted source keeps what it had given the store until the inventory says otherwise.
    view.seed(store.objects_of(&id));
    let sink = InventorySink {
        feeder: Feeder {
            id,
            view,
            in_store: None,
            incomplete: None,
        },
        listing: false,
        catalog_stale: None,
    };
    drive(api, wc, sink, store, token, probe_interval).await;
}

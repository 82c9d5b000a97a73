//! The inventory source of fleet mode (`history_from: inventory`): the `RollcacheInventory`
//! shards and catalog `rollcache index` publishes, listed and watched in one namespace, decoded,
//! and folded into the same store as the cluster's own sources, through `change`.
//!
//! The view (`view`) decides what the store holds and whether it is complete; this driver feeds
//! it the watch's events, checks the catalog's age every second (an indexer that stopped is only
//! seen by its catalog ageing), and marks the source incomplete before any change that is not
//! complete, so that no snapshot between the two looks complete.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Decoded;
use super::change::{Change, fold};
use super::store::{HistoryStore, SourceId, StatusKey};
use super::supervise::spawn_supervised;
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

/// Starts the inventory source of `namespace` on `client` under its supervisor.
pub fn spawn_inventory_source(
    client: &kube::Client,
    namespace: &str,
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
    let (store_, token_) = (store.clone(), token.clone());
    spawn_supervised(
        tasks,
        store,
        StatusKey::Source(id.clone()),
        token,
        move || run(api.clone(), id.clone(), store_.clone(), token_.clone()),
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
        let outcome = self.view.evaluate(SystemTime::now());
        if outcome.incomplete != self.incomplete {
            match &outcome.incomplete {
                Some(why) => {
                    warn!(source = %self.id, reason = %why, "the inventory is incomplete: nothing is unpinned until it is complete again")
                }
                None => info!(source = %self.id, "the inventory is complete"),
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

/// Watches the inventory into the store until `token` is cancelled.
async fn run(
    api: Api<DynamicObject>,
    id: SourceId,
    store: Arc<HistoryStore>,
    token: CancellationToken,
) {
    store.register(&id);
    let mut view = View::default();
    // A restarted source keeps what it had given the store until the inventory says otherwise.
    view.seed(store.objects_of(&id));
    let mut feeder = Feeder {
        id: id.clone(),
        view,
        in_store: None,
        incomplete: None,
    };
    let key = StatusKey::Source(id.clone());
    let mut stream = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut listing = false;
    let mut failing = false;
    let mut catalog_stale: Option<bool> = None;
    let mut ages = tokio::time::interval(AGE_CHECK);
    ages.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = ages.tick() => {
                if feeder.in_store.is_none() {
                    continue;
                }
                let stale = feeder.view.catalog_problem(SystemTime::now()).is_some();
                if catalog_stale != Some(stale) {
                    catalog_stale = Some(stale);
                    feeder.feed(&store);
                }
            }
            item = stream.next() => match item {
                Some(Ok(event)) => {
                    if failing {
                        info!(source = %id, "inventory watch resumed");
                        failing = false;
                        store.set_ok(&key);
                    }
                    let name = |o: &DynamicObject| o.metadata.name.clone().unwrap_or_default();
                    match event {
                        watcher::Event::Init => {
                            listing = true;
                            feeder.view.clear();
                        }
                        watcher::Event::InitApply(o) => feeder.view.apply(&name(&o), &o.data),
                        watcher::Event::InitDone => {
                            listing = false;
                            info!(source = %id, "listed");
                            feeder.feed(&store);
                        }
                        watcher::Event::Apply(o) => {
                            feeder.view.apply(&name(&o), &o.data);
                            if !listing {
                                feeder.feed(&store);
                            }
                        }
                        watcher::Event::Delete(o) => {
                            feeder.view.delete(&name(&o));
                            if !listing {
                                feeder.feed(&store);
                            }
                        }
                    }
                    catalog_stale = None;
                }
                Some(Err(e)) => {
                    if !failing {
                        warn!(source = %id, error = %e, "inventory watch failed; the source is in error (nothing is unpinned) until it answers again");
                        failing = true;
                    }
                    store.set_error(&key, e.to_string());
                }
                None => {
                    stream = watcher(api.clone(), watcher::Config::default())
                        .default_backoff()
                        .boxed();
                }
            }
        }
    }
}

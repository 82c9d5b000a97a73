//! The in-memory index of history facts: every source's objects → their `RevisionFact`s, each
//! source's health, and this node's facts, with a change signal for the reconcile loop.
//!
//! Sources fold watch events in with `apply` / `delete`, and a (re-)list with `reset_begin`,
//! `reset_apply`, `reset_done`: facts listed during a re-list are buffered and replace the
//! source's objects at `reset_done`, so objects that disappeared while nobody watched are
//! forgotten and nothing is forgotten before the new list is complete.
//!
//! Last good facts win (safety rule 8): an object whose new version decodes with problems keeps
//! the facts of its last clean version beside what the new one yields, until a clean version
//! arrives or the object is deleted (or missing from a complete re-list). An object with problems
//! that never decoded cleanly since start makes the view incomplete: what it used is unknown, so
//! nothing may be unpinned while it stays.
//! The lock is a plain `std::sync::RwLock`, never held across an await.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

use tokio::sync::watch;

use crate::model::{NodeFacts, ObjectRef, PodTemplate, RevisionFact};

use super::{DecodeProblem, Decoded, ProblemKind};

mod health;

pub use health::{SourceId, SourceStatus, StatusKey, UnresolvedObject};

/// An immutable view of the whole store, shared by `Arc`, cheap to take when nothing changed.
#[derive(Clone, Debug, Default)]
pub struct HistorySnapshot {
    /// The change generation this snapshot reflects.
    pub generation: u64,
    /// Facts per source object, in object order (each object's facts shared with the store; the
    /// object itself is named in its facts, so the view keeps no copy of the key).
    pub objects: Vec<Arc<[RevisionFact]>>,
    pub sources: BTreeMap<SourceId, SourceStatus>,
    pub node: Option<NodeFacts>,
    pub node_status: SourceStatus,
}

impl HistorySnapshot {
    pub fn facts(&self) -> impl Iterator<Item = &RevisionFact> {
        self.objects.iter().flat_map(|f| f.iter())
    }

    /// Every registered source is fresh (synced, not re-listing, not in error).
    pub fn all_sources_fresh(&self) -> bool {
        self.sources.values().all(SourceStatus::is_fresh)
    }

    /// No object with an unresolved problem that never decoded cleanly: every image the history
    /// could need is known, so one that no fact names may be unpinned.
    pub fn complete(&self) -> bool {
        self.sources.values().all(|s| s.never_good() == 0)
    }

    /// Every object with an unresolved decode problem, over all sources.
    pub fn unresolved(&self) -> impl Iterator<Item = &UnresolvedObject> {
        self.sources.values().flat_map(|s| s.unresolved.iter())
    }
}

type Objects = HashMap<ObjectRef, Arc<[RevisionFact]>>;

/// Why an object holds more than its latest version yields.
#[derive(Clone, Debug)]
struct Unresolved {
    /// Facts of the last version that decoded cleanly; None when none did since start.
    good: Option<Arc<[RevisionFact]>>,
    problems: Vec<DecodeProblem>,
    kept_facts: usize,
}

#[derive(Debug, Default)]
struct SourceState {
    objects: Objects,
    /// Objects whose latest version decoded with problems (usually none).
    unresolved: HashMap<ObjectRef, Unresolved>,
    /// Filled between `reset_begin` and `reset_done`.
    pending: Option<(Objects, HashMap<ObjectRef, Unresolved>)>,
    status: SourceStatus,
}

#[derive(Debug, Default)]
struct Inner {
    sources: BTreeMap<SourceId, SourceState>,
    node: Option<NodeFacts>,
    node_status: SourceStatus,
    /// Last snapshot; None when something changed since.
    snapshot: Option<Arc<HistorySnapshot>>,
    generation: u64,
    templates: Templates,
}

/// One shared copy of each distinct pod template among the facts held. Templates no fact uses
/// any more are dropped once the set has grown to twice what was in use at the last sweep.
#[derive(Debug, Default)]
struct Templates {
    set: HashSet<Arc<PodTemplate>>,
    in_use_at_sweep: usize,
}

impl Templates {
    /// The shared copy equal to `t` (`t` itself when it is the first of its kind).
    fn intern(&mut self, t: &Arc<PodTemplate>) -> Arc<PodTemplate> {
        if let Some(shared) = self.set.get(&**t) {
            return shared.clone();
        }
        self.set.insert(t.clone());
        self.sweep_if_grown();
        t.clone()
    }

    fn sweep_if_grown(&mut self) {
        if self.set.len() > 2 * self.in_use_at_sweep.max(512) {
            // Held by the set alone: no fact (in the store or in a snapshot) uses it.
            self.set.retain(|t| Arc::strong_count(t) > 1);
            self.in_use_at_sweep = self.set.len();
        }
    }
}

/// The store; share it as `Arc<HistoryStore>`.
#[derive(Debug)]
pub struct HistoryStore {
    inner: RwLock<Inner>,
    changed: watch::Sender<u64>,
}

impl Default for HistoryStore {
    fn default() -> Self {
        Self {
            inner: RwLock::new(Inner::default()),
            changed: watch::channel(0).0,
        }
    }
}

fn counted(
    decoded: Decoded,
    status: &mut SourceStatus,
    templates: &mut Templates,
) -> (Arc<[RevisionFact]>, Vec<DecodeProblem>) {
    for p in &decoded.problems {
        *status.problems.entry(p.kind).or_default() += 1;
    }
    let mut facts = decoded.facts;
    for f in &mut facts {
        f.shrink_to_fit();
        f.template = templates.intern(&f.template);
    }
    (facts.into(), decoded.problems)
}

/// What an object holds after a new version decoded into `facts` with `problems`, given what it
/// held before (`prev`, `prev_unresolved`): the new facts alone when it decoded cleanly; else
/// the new facts plus those of its last clean version that the new one does not repeat (same
/// workload and pod template), so nothing the object needed before is lost to a decode problem.
fn fold(
    object: &ObjectRef,
    prev: Option<&Arc<[RevisionFact]>>,
    prev_unresolved: Option<&Unresolved>,
    facts: Arc<[RevisionFact]>,
    problems: Vec<DecodeProblem>,
) -> (Arc<[RevisionFact]>, Option<Unresolved>) {
    if problems.is_empty() {
        if prev_unresolved.is_some() {
            tracing::info!(%object, "decodes cleanly again; its last good facts are no longer kept");
        }
        return (facts, None);
    }
    let good = match prev_unresolved {
        Some(u) => u.good.clone(),
        None => prev.cloned(),
    };
    let kept: Vec<RevisionFact> = good
        .iter()
        .flat_map(|g| g.iter())
        .filter(|old| {
            !facts
                .iter()
                .any(|new| new.workload == old.workload && new.template == old.template)
        })
        .cloned()
        .collect();
    let kept_facts = kept.len();
    if prev_unresolved.is_none() {
        match &good {
            Some(_) => tracing::warn!(
                %object,
                kept_facts,
                "decodes with problems; the facts of its last good version are kept until it decodes cleanly or is deleted"
            ),
            None if problems.iter().all(|p| p.kind.is_refusal()) => tracing::warn!(
                %object,
                "refused (over a cap, or naming another namespace): it describes nothing this node holds"
            ),
            None => tracing::warn!(
                %object,
                "decodes with problems and never decoded cleanly since start: nothing is unpinned while it stays so"
            ),
        }
    }
    let facts = if kept.is_empty() {
        facts
    } else {
        facts.iter().cloned().chain(kept).collect()
    };
    let unresolved = Unresolved {
        good,
        problems,
        kept_facts,
    };
    (facts, Some(unresolved))
}

impl HistoryStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        // Every mutation completes under the lock in one step, so a poisoned lock holds valid data.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the inner state; `significant` changes (facts, node, freshness) bump the
    /// generation and wake subscribers, others (counters, timestamps) only refresh snapshots.
    fn update<R>(&self, f: impl FnOnce(&mut Inner) -> (R, bool)) -> R {
        let mut inner = self.write();
        let (r, significant) = f(&mut inner);
        inner.snapshot = None;
        if significant {
            inner.generation += 1;
            let generation = inner.generation;
            drop(inner);
            self.changed.send_replace(generation);
        }
        r
    }

    /// Subscribes to changes: the value is the generation, bumped on every significant change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn generation(&self) -> u64 {
        self.read().generation
    }

    /// Makes a source known (unsynced) so that freshness checks wait for it.
    pub fn register(&self, id: &SourceId) {
        self.update(|inner| {
            let new = !inner.sources.contains_key(id);
            inner.sources.entry(id.clone()).or_default();
            ((), new)
        })
    }

    /// An object was added or changed: its facts replace the ones it had (when it decoded with
    /// problems, the facts of its last clean version stay beside them).
    pub fn apply(&self, id: &SourceId, object: ObjectRef, decoded: Decoded) {
        self.update(|inner| {
            let src = inner.sources.entry(id.clone()).or_default();
            let changed = apply_to(src, &mut inner.templates, object, decoded);
            ((), changed)
        })
    }

    /// An object was deleted: its facts go.
    pub fn delete(&self, id: &SourceId, object: &ObjectRef) {
        self.update(|inner| {
            let src = inner.sources.entry(id.clone()).or_default();
            let changed = src.objects.remove(object).is_some();
            if src.unresolved.remove(object).is_some() {
                refresh_unresolved(src);
            }
            let was_error = mark_flowing(&mut src.status);
            refresh_counts(src);
            ((), changed || was_error)
        })
    }

    /// A (re-)list starts: until `reset_done`, listed objects are buffered.
    pub fn reset_begin(&self, id: &SourceId) {
        self.update(|inner| {
            let src = inner.sources.entry(id.clone()).or_default();
            src.pending = Some(Default::default());
            src.status.lists += 1;
            // Not a sign that the API answers: kube's watcher announces a list before asking for
            // it, so a source in error stays so until the list delivers (each retry of a failing
            // list would otherwise flip it, and log, twice).
            let was_relisting = std::mem::replace(&mut src.status.relisting, true);
            ((), !was_relisting)
        })
    }

    /// A re-list a source folds in as changes, not as a reset (the fleet inventory): counted.
    pub fn count_list(&self, id: &SourceId) {
        self.update(|inner| {
            inner.sources.entry(id.clone()).or_default().status.lists += 1;
            ((), false)
        })
    }

    /// One object of the list in progress; folded with what the object held before the list,
    /// as `apply` does.
    pub fn reset_apply(&self, id: &SourceId, object: ObjectRef, decoded: Decoded) {
        self.update(|inner| {
            let src = inner.sources.entry(id.clone()).or_default();
            if src.pending.is_none() {
                // Without `reset_begin` (should not happen) the object is applied directly.
                let changed = apply_to(src, &mut inner.templates, object, decoded);
                return ((), changed);
            }
            let (facts, unresolved) = decode_into(src, &mut inner.templates, &object, decoded);
            src.status.last_event = Some(SystemTime::now());
            if let Some((objects, pending_unresolved)) = &mut src.pending {
                match unresolved {
                    Some(u) => pending_unresolved.insert(object.clone(), u),
                    None => pending_unresolved.remove(&object),
                };
                objects.insert(object, facts);
            }
            ((), false)
        })
    }

    /// The list is complete: it replaces the source's objects; the source is synced.
    pub fn reset_done(&self, id: &SourceId) {
        self.update(|inner| {
            let src = inner.sources.entry(id.clone()).or_default();
            if let Some((objects, unresolved)) = src.pending.take() {
                src.objects = objects;
                src.unresolved = unresolved;
                refresh_unresolved(src);
            }
            src.status.synced = true;
            src.status.relisting = false;
            mark_flowing(&mut src.status);
            refresh_counts(src);
            ((), true)
        })
    }

    /// Marks a source (or the node watch) in error; its facts stay as they were.
    pub fn set_error(&self, key: &StatusKey, message: String) {
        self.update(|inner| {
            let status = status_mut(inner, key);
            let was_error = std::mem::replace(&mut status.in_error, true);
            status.last_error = Some(message);
            ((), !was_error)
        })
    }

    /// Clears the error mark of a source (or the node watch): it answers again.
    pub fn set_ok(&self, key: &StatusKey) {
        self.update(|inner| {
            let status = status_mut(inner, key);
            let was_error = std::mem::replace(&mut status.in_error, false);
            ((), was_error)
        })
    }

    /// Says why a source's view is incomplete (None: it is complete); kept through events, unlike
    /// an error mark. A new reason wakes subscribers too, so that `/status` and the node's summary
    /// say the one that holds now (a shard missing, then a namespace the indexer does not index)
    /// even when the facts stay the same.
    pub fn set_incomplete(&self, id: &SourceId, reason: Option<String>) {
        self.update(|inner| {
            let status = &mut inner.sources.entry(id.clone()).or_default().status;
            let changed = status.incomplete != reason;
            status.incomplete = reason;
            ((), changed)
        })
    }

    /// Whether a source (or the node watch) is marked in error.
    pub fn in_error(&self, key: &StatusKey) -> bool {
        let inner = self.read();
        match key {
            StatusKey::Source(id) => inner.sources.get(id).is_some_and(|s| s.status.in_error),
            StatusKey::Node => inner.node_status.in_error,
        }
    }

    /// This node's facts from its Node object; None when the Node was deleted or not found in a
    /// complete list. `synced` says a list or event has been seen.
    pub fn set_node(&self, node: Option<NodeFacts>) {
        self.update(|inner| {
            let changed = inner.node != node;
            inner.node = node;
            let was_error = mark_flowing(&mut inner.node_status);
            inner.node_status.synced = true;
            inner.node_status.objects = usize::from(inner.node.is_some());
            ((), changed || was_error)
        })
    }

    /// Counts decode problems of a source that has no facts to apply (e.g. the node watch).
    pub fn count_problem(&self, key: &StatusKey, kind: ProblemKind) {
        self.update(|inner| {
            *status_mut(inner, key).problems.entry(kind).or_default() += 1;
            ((), false)
        })
    }

    /// The current view; the same `Arc` while nothing changes.
    pub fn snapshot(&self) -> Arc<HistorySnapshot> {
        if let Some(s) = &self.read().snapshot {
            return s.clone();
        }
        let mut inner = self.write();
        if let Some(s) = &inner.snapshot {
            return s.clone();
        }
        let mut keyed: Vec<(&ObjectRef, &Arc<[RevisionFact]>)> = inner
            .sources
            .values()
            .flat_map(|src| src.objects.iter())
            .filter(|(_, f)| !f.is_empty())
            .collect();
        keyed.sort_unstable_by(|a, b| a.0.cmp(b.0));
        // The same object through two sources (overlapping watches) counts once.
        keyed.dedup_by(|a, b| a.0 == b.0);
        let objects = keyed.into_iter().map(|(_, f)| f.clone()).collect();
        let snap = Arc::new(HistorySnapshot {
            generation: inner.generation,
            objects,
            sources: inner
                .sources
                .iter()
                .map(|(id, s)| (id.clone(), s.status.clone()))
                .collect(),
            node: inner.node.clone(),
            node_status: inner.node_status.clone(),
        });
        inner.snapshot = Some(snap.clone());
        snap
    }

    /// Status of one source, if registered.
    pub fn status(&self, id: &SourceId) -> Option<SourceStatus> {
        self.read().sources.get(id).map(|s| s.status.clone())
    }

    /// Every object one source holds, with its facts.
    pub fn objects_of(&self, id: &SourceId) -> Vec<(ObjectRef, Arc<[RevisionFact]>)> {
        let inner = self.read();
        inner.sources.get(id).map_or_else(Vec::new, |s| {
            s.objects
                .iter()
                .map(|(o, f)| (o.clone(), f.clone()))
                .collect()
        })
    }

    /// Facts currently indexed for one object.
    pub fn facts_of(&self, object: &ObjectRef) -> Option<Arc<[RevisionFact]>> {
        let inner = self.read();
        inner
            .sources
            .values()
            .find_map(|s| s.objects.get(object).cloned())
    }
}

fn status_mut<'a>(inner: &'a mut Inner, key: &StatusKey) -> &'a mut SourceStatus {
    match key {
        StatusKey::Source(id) => &mut inner.sources.entry(id.clone()).or_default().status,
        StatusKey::Node => &mut inner.node_status,
    }
}

/// The object's new facts, counted and folded with what it held (see [`fold`]).
fn decode_into(
    src: &mut SourceState,
    templates: &mut Templates,
    object: &ObjectRef,
    decoded: Decoded,
) -> (Arc<[RevisionFact]>, Option<Unresolved>) {
    let (facts, problems) = counted(decoded, &mut src.status, templates);
    fold(
        object,
        src.objects.get(object),
        src.unresolved.get(object),
        facts,
        problems,
    )
}

/// `apply` on one source: folds the object's new facts with what it held, marks the source
/// flowing, and says whether the view changed significantly.
fn apply_to(
    src: &mut SourceState,
    templates: &mut Templates,
    object: ObjectRef,
    decoded: Decoded,
) -> bool {
    let (facts, unresolved) = decode_into(src, templates, &object, decoded);
    let changed = src.objects.get(&object) != Some(&facts)
        || src.unresolved.contains_key(&object) != unresolved.is_some();
    let touched = match unresolved {
        Some(u) => {
            src.unresolved.insert(object.clone(), u);
            true
        }
        None => src.unresolved.remove(&object).is_some(),
    };
    if touched {
        refresh_unresolved(src);
    }
    src.objects.insert(object, facts);
    let was_error = mark_flowing(&mut src.status);
    refresh_counts(src);
    changed || was_error
}

/// Something arrived: the source answers. Returns whether it was in error.
fn mark_flowing(status: &mut SourceStatus) -> bool {
    status.last_event = Some(SystemTime::now());
    std::mem::replace(&mut status.in_error, false)
}

fn refresh_counts(src: &mut SourceState) {
    src.status.objects = src.objects.len();
    src.status.facts = src.objects.values().map(|f| f.len()).sum();
}

/// Rebuilds the status' list of unresolved objects (after a change to it, not on every event).
fn refresh_unresolved(src: &mut SourceState) {
    if src.unresolved.is_empty() && src.status.unresolved.is_empty() {
        return;
    }
    let mut unresolved: Vec<UnresolvedObject> = src
        .unresolved
        .iter()
        .map(|(object, u)| UnresolvedObject {
            object: object.clone(),
            problems: u.problems.clone(),
            kept_facts: u.kept_facts,
            ever_good: u.good.is_some(),
        })
        .collect();
    unresolved.sort_unstable_by(|a, b| a.object.cmp(&b.object));
    src.status.unresolved = unresolved.into();
}

#[cfg(test)]
mod tests;

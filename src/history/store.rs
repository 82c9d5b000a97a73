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

use crate::model::{NodeFacts, ObjectRef, PodTemplate, RevisionFact, SourceKind};

use super::{DecodeProblem, Decoded, ProblemKind};

/// One watched stream of objects: a resource, in one namespace or all of them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceId {
    pub kind: SourceKind,
    /// Kubernetes resource (`replicasets`, `secrets`, `configmaps`, ...) or another name for
    /// sources that are not watches (`files`).
    pub resource: String,
    /// None: all namespaces.
    pub namespace: Option<String>,
}

impl SourceId {
    pub fn new(kind: SourceKind, resource: &str, namespace: Option<&str>) -> Self {
        Self {
            kind,
            resource: resource.to_string(),
            namespace: namespace.map(str::to_string),
        }
    }
}

impl std::fmt::Display for SourceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} ({} in {ns})", self.kind.as_str(), self.resource),
            None => write!(f, "{} ({})", self.kind.as_str(), self.resource),
        }
    }
}

/// Which status an update is about: a fact source or this node's Node object.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum StatusKey {
    Source(SourceId),
    Node,
}

/// Health of one source.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SourceStatus {
    /// A complete list has been folded in since start.
    pub synced: bool,
    /// A re-list is in progress: the view is not complete until it is done.
    pub relisting: bool,
    /// The last attempt failed and nothing has flowed since.
    pub in_error: bool,
    pub last_error: Option<String>,
    /// When the last event (or list item) arrived.
    pub last_event: Option<SystemTime>,
    /// Objects currently indexed from this source.
    pub objects: usize,
    /// Facts currently indexed from this source.
    pub facts: usize,
    /// Lists started since start (the first one included): more than one means re-lists.
    pub lists: u64,
    /// Decode problems seen since start, by kind.
    pub problems: HashMap<ProblemKind, u64>,
    /// Objects whose latest version decoded with problems, in object order.
    pub unresolved: Arc<[UnresolvedObject]>,
}

/// An object whose latest version decoded with problems, and what it is held at meanwhile.
#[derive(Clone, Debug, PartialEq)]
pub struct UnresolvedObject {
    pub object: ObjectRef,
    pub problems: Vec<DecodeProblem>,
    /// Facts kept from the last version that decoded cleanly (beside what the latest yields).
    pub kept_facts: usize,
    /// A version decoded cleanly since start; when none did, what the object used is unknown.
    pub ever_good: bool,
}

impl UnresolvedObject {
    /// As `/status` shows it.
    pub fn report(&self) -> rollcache_core::status::UnresolvedReport {
        rollcache_core::status::UnresolvedReport {
            object: self.object.to_string(),
            problems: self
                .problems
                .iter()
                .map(|p| format!("{}: {}", p.kind, p.message))
                .collect(),
            kept_facts: self.kept_facts,
            ever_good: self.ever_good,
            holds_unpins: self.holds_unpins(),
        }
    }

    /// No version decoded cleanly since start and not every problem is a refusal (a cap, a
    /// foreign namespace): the object may stand for history of unknown content, so nothing is
    /// unpinned while it stays so. Refused objects do not hold unpins: otherwise anyone who may
    /// write one Secret labelled `owner=helm` could stop unpinning on every node.
    pub fn holds_unpins(&self) -> bool {
        !self.ever_good && !self.problems.iter().all(|p| p.kind.is_refusal())
    }
}

impl SourceStatus {
    /// Synced, not re-listing, not in error: the source's view can be trusted to be complete.
    pub fn is_fresh(&self) -> bool {
        self.synced && !self.relisting && !self.in_error
    }

    pub fn problems_total(&self) -> u64 {
        self.problems.values().sum()
    }

    /// Objects with unresolved problems that never decoded cleanly: what they need is unknown.
    pub fn never_good(&self) -> usize {
        self.unresolved.iter().filter(|u| u.holds_unpins()).count()
    }
}

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
mod tests {
    use super::*;
    use crate::history::DecodeProblem;
    use crate::model::WorkloadId;

    fn obj(name: &str) -> ObjectRef {
        ObjectRef::new("ReplicaSet", "ns", name)
    }

    fn decoded(name: &str, n: usize) -> Decoded {
        let facts = (0..n)
            .map(|i| RevisionFact {
                source: SourceKind::ReplicaSet,
                object: obj(name),
                workload: WorkloadId::new("Deployment", "ns", format!("{name}-{i}")),
                revision: Some(i as i64),
                created: None,
                helm_release: None,
                status: None,
                current: false,
                template: Default::default(),
            })
            .collect();
        Decoded {
            facts,
            problems: vec![],
        }
    }

    fn rs() -> SourceId {
        SourceId::new(SourceKind::ReplicaSet, "replicasets", None)
    }

    #[test]
    fn apply_delete_and_counts() {
        let store = HistoryStore::new();
        let id = rs();
        store.register(&id);
        assert!(!store.snapshot().all_sources_fresh());
        store.apply(&id, obj("a"), decoded("a", 2));
        store.apply(&id, obj("b"), decoded("b", 1));
        let st = store.status(&id).expect("registered");
        assert_eq!((st.objects, st.facts), (2, 3));
        store.delete(&id, &obj("a"));
        let snap = store.snapshot();
        assert_eq!(snap.facts().count(), 1);
        assert!(!snap.all_sources_fresh(), "never listed, so not synced");
    }

    #[test]
    fn snapshot_is_in_object_order_and_counts_an_object_once() {
        let store = HistoryStore::new();
        let all = rs();
        let one_ns = SourceId::new(SourceKind::ReplicaSet, "replicasets", Some("ns"));
        for name in ["c", "a", "b"] {
            store.apply(&all, obj(name), decoded(name, 1));
        }
        // The same object through an overlapping watch, and an object without facts.
        store.apply(&one_ns, obj("a"), decoded("a", 1));
        store.apply(&one_ns, obj("d"), decoded("d", 0));
        let snap = store.snapshot();
        let names: Vec<&str> = snap.facts().map(|f| f.object.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        // Facts are shared with the store, not copied.
        let held = store.facts_of(&obj("b")).expect("indexed");
        assert!(snap.objects.iter().any(|f| Arc::ptr_eq(f, &held)));
    }

    fn with_image(mut d: Decoded, image: &str) -> Decoded {
        for f in &mut d.facts {
            f.template = Arc::new(crate::model::PodTemplate {
                containers: vec![crate::model::ContainerImage {
                    name: "app".into(),
                    image: image.into(),
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
        d
    }

    #[test]
    fn equal_templates_are_held_once() {
        let store = HistoryStore::new();
        let id = rs();
        let helm = SourceId::new(SourceKind::HelmRelease, "secrets", None);
        store.apply(&id, obj("a"), with_image(decoded("a", 2), "reg/app:1"));
        store.reset_begin(&helm);
        store.reset_apply(&helm, obj("h"), with_image(decoded("h", 1), "reg/app:1"));
        store.reset_done(&helm);
        store.apply(&id, obj("b"), with_image(decoded("b", 1), "reg/app:2"));
        let snap = store.snapshot();
        let one = |o: &str| store.facts_of(&obj(o)).expect("indexed");
        let (a, h, b) = (one("a"), one("h"), one("b"));
        assert!(Arc::ptr_eq(&a[0].template, &a[1].template));
        assert!(
            Arc::ptr_eq(&a[0].template, &h[0].template),
            "across sources"
        );
        assert!(!Arc::ptr_eq(&a[0].template, &b[0].template));
        assert_eq!(b[0].template.containers[0].image, "reg/app:2");
        assert_eq!(snap.facts().count(), 4);
        assert_eq!(store.read().templates.set.len(), 2);
    }

    #[test]
    fn templates_no_fact_uses_are_dropped() {
        let store = HistoryStore::new();
        let id = rs();
        let kept = with_image(decoded("kept", 1), "reg/kept:1");
        store.apply(&id, obj("kept"), kept);
        for i in 0..5000 {
            let name = format!("o{i}");
            store.apply(
                &id,
                obj(&name),
                with_image(decoded(&name, 1), &format!("reg/app:{i}")),
            );
            store.delete(&id, &obj(&name));
        }
        let held = store.read().templates.set.len();
        assert!(held <= 2 * 512 + 1, "the set stays bounded: {held}");
        let kept = store.facts_of(&obj("kept")).expect("indexed");
        assert!(
            store
                .read()
                .templates
                .set
                .iter()
                .any(|t| Arc::ptr_eq(t, &kept[0].template)),
            "a template in use is never dropped"
        );
        // A template equal to the kept one is still shared after the sweeps.
        store.apply(
            &id,
            obj("again"),
            with_image(decoded("again", 1), "reg/kept:1"),
        );
        let again = store.facts_of(&obj("again")).expect("indexed");
        assert!(Arc::ptr_eq(&again[0].template, &kept[0].template));
    }

    #[test]
    fn relist_forgets_what_disappeared_only_when_done() {
        let store = HistoryStore::new();
        let id = rs();
        store.reset_begin(&id);
        store.reset_apply(&id, obj("a"), decoded("a", 1));
        store.reset_apply(&id, obj("b"), decoded("b", 1));
        assert_eq!(store.snapshot().facts().count(), 0, "buffered until done");
        store.reset_done(&id);
        assert!(store.snapshot().all_sources_fresh());
        assert_eq!(store.snapshot().facts().count(), 2);

        store.reset_begin(&id);
        store.reset_apply(&id, obj("b"), decoded("b", 1));
        let mid = store.snapshot();
        assert_eq!(mid.facts().count(), 2, "old view kept during re-list");
        assert!(!mid.all_sources_fresh(), "re-listing is not fresh");
        store.reset_done(&id);
        let snap = store.snapshot();
        assert!(store.facts_of(&obj("a")).is_none());
        assert_eq!(snap.facts().count(), 1);
        assert!(snap.all_sources_fresh());
    }

    #[test]
    fn errors_keep_facts_and_clear_when_events_flow() {
        let store = HistoryStore::new();
        let id = rs();
        store.reset_begin(&id);
        store.reset_apply(&id, obj("a"), decoded("a", 1));
        store.reset_done(&id);
        let key = StatusKey::Source(id.clone());
        store.set_error(&key, "connection refused".into());
        let snap = store.snapshot();
        assert!(!snap.all_sources_fresh());
        assert_eq!(snap.facts().count(), 1);
        assert_eq!(
            snap.sources[&id].last_error.as_deref(),
            Some("connection refused")
        );
        store.apply(&id, obj("b"), decoded("b", 1));
        assert!(store.snapshot().all_sources_fresh());
    }

    #[test]
    fn problems_are_counted() {
        let store = HistoryStore::new();
        let id = rs();
        let mut d = decoded("a", 1);
        d.problems.push(DecodeProblem {
            object: obj("a"),
            kind: ProblemKind::Yaml,
            message: "bad".into(),
        });
        store.apply(&id, obj("a"), d);
        let st = store.status(&id).expect("known");
        assert_eq!(st.problems.get(&ProblemKind::Yaml), Some(&1));
        assert_eq!(st.facts, 1);
    }

    fn broken(name: &str) -> Decoded {
        Decoded::skipped(obj(name), ProblemKind::Gzip, "release is not valid gzip")
    }

    fn workloads(store: &HistoryStore, name: &str) -> Vec<String> {
        let mut w: Vec<String> = store
            .facts_of(&obj(name))
            .map(|f| f.iter().map(|f| f.workload.name.clone()).collect())
            .unwrap_or_default();
        w.sort();
        w
    }

    #[test]
    fn a_version_that_fails_to_decode_keeps_the_last_good_facts_until_a_good_one() {
        let store = HistoryStore::new();
        let id = rs();
        store.apply(&id, obj("a"), decoded("a", 2));
        store.apply(&id, obj("a"), broken("a"));
        assert_eq!(
            workloads(&store, "a"),
            ["a-0", "a-1"],
            "last good facts kept"
        );
        let st = store.status(&id).expect("known");
        let [u] = &st.unresolved[..] else {
            panic!("one unresolved object: {:?}", st.unresolved)
        };
        assert_eq!((u.object.name.as_str(), u.kept_facts), ("a", 2));
        assert!(u.ever_good);
        assert_eq!(u.problems[0].kind, ProblemKind::Gzip);
        assert!(store.snapshot().complete(), "what it needs is known");
        // Still broken: still the last good facts, not those of the broken versions.
        store.apply(&id, obj("a"), broken("a"));
        assert_eq!(workloads(&store, "a"), ["a-0", "a-1"]);
        // Resolved: a good version replaces everything, as any update does.
        store.apply(&id, obj("a"), decoded("a", 1));
        assert_eq!(workloads(&store, "a"), ["a-0"]);
        assert!(store.status(&id).expect("known").unresolved.is_empty());
        // And a later broken version keeps that one, not the older.
        store.apply(&id, obj("a"), broken("a"));
        assert_eq!(workloads(&store, "a"), ["a-0"]);
    }

    #[test]
    fn deleting_an_object_with_a_problem_drops_its_kept_facts() {
        let store = HistoryStore::new();
        let id = rs();
        store.apply(&id, obj("a"), decoded("a", 1));
        store.apply(&id, obj("a"), broken("a"));
        store.delete(&id, &obj("a"));
        assert!(store.facts_of(&obj("a")).is_none());
        assert_eq!(store.snapshot().facts().count(), 0);
        assert!(store.status(&id).expect("known").unresolved.is_empty());
        // Coming back broken, it never decoded since: the view is incomplete.
        store.apply(&id, obj("a"), broken("a"));
        assert_eq!(store.snapshot().facts().count(), 0);
        assert!(!store.snapshot().complete());
    }

    #[test]
    fn a_partial_decode_keeps_the_old_facts_it_no_longer_yields() {
        let store = HistoryStore::new();
        let id = rs();
        store.apply(&id, obj("a"), decoded("a", 3));
        // One workload's document became unreadable: the others decode as before.
        let mut partial = decoded("a", 3);
        partial.facts.remove(1);
        partial.problems.push(DecodeProblem {
            object: obj("a"),
            kind: ProblemKind::Yaml,
            message: "document 2: bad indentation".into(),
        });
        store.apply(&id, obj("a"), partial);
        assert_eq!(workloads(&store, "a"), ["a-0", "a-1", "a-2"]);
        let facts = store.facts_of(&obj("a")).expect("indexed");
        assert_eq!(
            facts.len(),
            3,
            "facts the new version repeats are not doubled"
        );
        let st = store.status(&id).expect("known");
        assert_eq!(st.unresolved[0].kept_facts, 1);
        // A clean version without that workload: it goes.
        let mut clean = decoded("a", 3);
        clean.facts.remove(1);
        store.apply(&id, obj("a"), clean);
        assert_eq!(workloads(&store, "a"), ["a-0", "a-2"]);
    }

    #[test]
    fn an_object_that_never_decoded_makes_the_view_incomplete_until_it_does_or_goes() {
        let store = HistoryStore::new();
        let id = rs();
        store.reset_begin(&id);
        store.reset_apply(&id, obj("ok"), decoded("ok", 1));
        store.reset_apply(&id, obj("x"), broken("x"));
        store.reset_done(&id);
        let snap = store.snapshot();
        assert!(snap.all_sources_fresh(), "the source itself is fine");
        assert!(!snap.complete(), "what x needs is unknown");
        let u: Vec<_> = snap.unresolved().collect();
        assert_eq!(u.len(), 1);
        assert!(!u[0].ever_good);
        store.apply(&id, obj("x"), decoded("x", 1));
        assert!(store.snapshot().complete(), "resolved");
        store.apply(&id, obj("y"), broken("y"));
        assert!(!store.snapshot().complete());
        store.delete(&id, &obj("y"));
        assert!(store.snapshot().complete(), "deleted");
    }

    /// A release refused by a cap or for naming another namespace describes nothing trusted:
    /// it is reported but does not hold unpins (else one hostile Secret would stop them on every
    /// node). Beside it, an unreadable one that never decoded does.
    #[test]
    fn a_refused_object_is_reported_but_does_not_hold_unpins() {
        let store = HistoryStore::new();
        let id = rs();
        store.reset_begin(&id);
        store.reset_apply(&id, obj("ok"), decoded("ok", 1));
        for (name, kind) in [
            ("big", ProblemKind::TooLarge),
            ("bomb", ProblemKind::OverBudget),
            ("smuggler", ProblemKind::ForeignNamespace),
        ] {
            store.reset_apply(&id, obj(name), Decoded::skipped(obj(name), kind, "refused"));
        }
        store.reset_done(&id);
        let snap = store.snapshot();
        assert_eq!(snap.unresolved().count(), 3, "each is reported");
        assert!(snap.unresolved().all(|u| !u.ever_good && !u.holds_unpins()));
        assert!(snap.complete(), "refusals leave the view complete");
        // A refusal beside an unreadable part still holds: the object's content is unknown.
        let mut mixed = broken("mixed");
        mixed.problems.push(DecodeProblem {
            object: obj("mixed"),
            kind: ProblemKind::TooLarge,
            message: "refused".into(),
        });
        store.apply(&id, obj("mixed"), mixed);
        assert!(!store.snapshot().complete(), "control: unreadable holds");
    }

    #[test]
    fn a_relist_folds_like_apply_and_forgets_what_is_gone() {
        let store = HistoryStore::new();
        let id = rs();
        store.reset_begin(&id);
        store.reset_apply(&id, obj("a"), decoded("a", 2));
        store.reset_done(&id);
        // Re-listed broken: last good facts kept, before and after the list is done.
        store.reset_begin(&id);
        store.reset_apply(&id, obj("a"), broken("a"));
        assert_eq!(workloads(&store, "a"), ["a-0", "a-1"]);
        store.reset_done(&id);
        assert_eq!(workloads(&store, "a"), ["a-0", "a-1"]);
        assert!(store.snapshot().complete());
        assert_eq!(store.status(&id).expect("known").unresolved.len(), 1);
        // Re-listed broken again: still the last good facts.
        store.reset_begin(&id);
        store.reset_apply(&id, obj("a"), broken("a"));
        store.reset_done(&id);
        assert_eq!(workloads(&store, "a"), ["a-0", "a-1"]);
        // Missing from a complete re-list: deleted while nobody watched.
        store.reset_begin(&id);
        store.reset_done(&id);
        assert!(store.facts_of(&obj("a")).is_none());
        assert!(store.status(&id).expect("known").unresolved.is_empty());
        assert!(store.snapshot().complete());
    }

    #[tokio::test]
    async fn changes_wake_subscribers_and_snapshots_are_shared() {
        let store = HistoryStore::new();
        let id = rs();
        let mut rx = store.subscribe();
        let before = store.snapshot();
        assert!(Arc::ptr_eq(&before, &store.snapshot()));
        store.apply(&id, obj("a"), decoded("a", 1));
        tokio::time::timeout(std::time::Duration::from_secs(1), rx.changed())
            .await
            .expect("woken")
            .expect("sender alive");
        let gen1 = *rx.borrow_and_update();
        // Re-applying the same facts is not a significant change.
        store.apply(&id, obj("a"), decoded("a", 1));
        assert_eq!(store.generation(), gen1);
        assert!(!Arc::ptr_eq(&before, &store.snapshot()));
    }
}

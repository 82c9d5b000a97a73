//! The in-memory index of history facts: every source's objects → their `RevisionFact`s, each
//! source's health, and this node's facts, with a change signal for the reconcile loop.
//!
//! Sources fold watch events in with `apply` / `delete`, and a (re-)list with `reset_begin`,
//! `reset_apply`, `reset_done`: facts listed during a re-list are buffered and replace the
//! source's objects at `reset_done`, so objects that disappeared while nobody watched are
//! forgotten and nothing is forgotten before the new list is complete.
//! The lock is a plain `std::sync::RwLock`, never held across an await.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

use tokio::sync::watch;

use crate::model::{NodeFacts, ObjectRef, PodTemplate, RevisionFact, SourceKind};

use super::{Decoded, ProblemKind};

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
    /// The last few problems as text, each naming its object, newest last: what an operator
    /// needs to find the object (counts alone do not say which one).
    pub recent_problems: std::collections::VecDeque<String>,
}

/// Problems kept as text per source; bounded because a hostile namespace can make many.
pub const RECENT_PROBLEMS: usize = 10;

impl SourceStatus {
    /// Synced, not re-listing, not in error: the source's view can be trusted to be complete.
    pub fn is_fresh(&self) -> bool {
        self.synced && !self.relisting && !self.in_error
    }

    pub fn problems_total(&self) -> u64 {
        self.problems.values().sum()
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
}

#[derive(Debug, Default)]
struct SourceState {
    objects: HashMap<ObjectRef, Arc<[RevisionFact]>>,
    /// Filled between `reset_begin` and `reset_done`.
    pending: Option<HashMap<ObjectRef, Arc<[RevisionFact]>>>,
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
) -> Arc<[RevisionFact]> {
    for p in &decoded.problems {
        *status.problems.entry(p.kind).or_default() += 1;
        if status.recent_problems.len() == RECENT_PROBLEMS {
            status.recent_problems.pop_front();
        }
        let mut text = p.to_string();
        if text.len() > 400 {
            let cut = (0..=400)
                .rev()
                .find(|i| text.is_char_boundary(*i))
                .unwrap_or(0);
            text.truncate(cut);
            text.push('…');
        }
        status.recent_problems.push_back(text);
    }
    let mut facts = decoded.facts;
    for f in &mut facts {
        f.shrink_to_fit();
        f.template = templates.intern(&f.template);
    }
    facts.into()
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

    /// An object was added or changed: its facts replace the ones it had.
    pub fn apply(&self, id: &SourceId, object: ObjectRef, decoded: Decoded) {
        self.update(|inner| {
            let src = inner.sources.entry(id.clone()).or_default();
            let facts = counted(decoded, &mut src.status, &mut inner.templates);
            let changed = src.objects.get(&object) != Some(&facts);
            src.objects.insert(object, facts);
            let was_error = mark_flowing(&mut src.status);
            refresh_counts(src);
            ((), changed || was_error)
        })
    }

    /// An object was deleted: its facts go.
    pub fn delete(&self, id: &SourceId, object: &ObjectRef) {
        self.update(|inner| {
            let src = inner.sources.entry(id.clone()).or_default();
            let changed = src.objects.remove(object).is_some();
            let was_error = mark_flowing(&mut src.status);
            refresh_counts(src);
            ((), changed || was_error)
        })
    }

    /// A (re-)list starts: until `reset_done`, listed objects are buffered.
    pub fn reset_begin(&self, id: &SourceId) {
        self.update(|inner| {
            let src = inner.sources.entry(id.clone()).or_default();
            src.pending = Some(HashMap::new());
            src.status.lists += 1;
            let was_error = mark_flowing(&mut src.status);
            let was_relisting = std::mem::replace(&mut src.status.relisting, true);
            ((), was_error || !was_relisting)
        })
    }

    /// One object of the list in progress.
    pub fn reset_apply(&self, id: &SourceId, object: ObjectRef, decoded: Decoded) {
        self.update(|inner| {
            let src = inner.sources.entry(id.clone()).or_default();
            let facts = counted(decoded, &mut src.status, &mut inner.templates);
            src.status.last_event = Some(SystemTime::now());
            // Without `reset_begin` (should not happen) the object is applied directly.
            match &mut src.pending {
                Some(p) => {
                    p.insert(object, facts);
                }
                None => {
                    src.objects.insert(object, facts);
                    refresh_counts(src);
                }
            }
            ((), false)
        })
    }

    /// The list is complete: it replaces the source's objects; the source is synced.
    pub fn reset_done(&self, id: &SourceId) {
        self.update(|inner| {
            let src = inner.sources.entry(id.clone()).or_default();
            if let Some(p) = src.pending.take() {
                src.objects = p;
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

/// Something arrived: the source answers. Returns whether it was in error.
fn mark_flowing(status: &mut SourceStatus) -> bool {
    status.last_event = Some(SystemTime::now());
    std::mem::replace(&mut status.in_error, false)
}

fn refresh_counts(src: &mut SourceState) {
    src.status.objects = src.objects.len();
    src.status.facts = src.objects.values().map(|f| f.len()).sum();
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

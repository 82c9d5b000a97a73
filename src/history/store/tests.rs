use super::*;
use crate::history::DecodeProblem;
use crate::model::{SourceKind, WorkloadId};

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

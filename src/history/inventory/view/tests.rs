use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::model::{ContainerImage, PodTemplate, SourceKind, WorkloadId};
use rollcache_core::shard::CatalogEntry;

mod heartbeat;
mod scope;

fn fact(ns: &str, object: &str, image: &str) -> RevisionFact {
    RevisionFact {
        source: SourceKind::ControllerRevision,
        object: ObjectRef::new("ControllerRevision", ns, object),
        workload: WorkloadId::new("StatefulSet", ns, "ioc"),
        revision: Some(1),
        created: None,
        helm_release: None,
        status: None,
        current: false,
        template: Arc::new(PodTemplate {
            containers: vec![ContainerImage {
                name: "ioc".into(),
                image: image.into(),
                ..ContainerImage::default()
            }],
            ..PodTemplate::default()
        }),
    }
}

fn facts(ns: &str, ids: impl IntoIterator<Item = usize>) -> Vec<RevisionFact> {
    ids.into_iter()
        .map(|i| fact(ns, &format!("{ns}{i}"), &format!("r/{ns}:{i}")))
        .collect()
}

/// The two shards of `ns` for `facts` (one object each), as objects, and their catalog entry.
fn shards(ns: &str, facts: &[RevisionFact]) -> (Vec<(String, Value)>, CatalogEntry) {
    let by: Vec<(ObjectRef, Vec<RevisionFact>)> = facts
        .iter()
        .map(|f| (f.object.clone(), vec![f.clone()]))
        .collect();
    let grouped = by.iter().map(|(o, f)| (o, f.as_slice())).collect();
    let specs = codec::encode_shards(ns, &grouped, 2);
    let entry = CatalogEntry {
        shards: 2,
        digests: specs.iter().map(|s| s.digest.clone()).collect(),
    };
    let objects = specs
        .into_iter()
        .map(|s| {
            (
                shard::object_name(ns, s.shard, s.shards),
                json!({ "spec": s }),
            )
        })
        .collect();
    (objects, entry)
}

fn catalog(entries: &[(&str, &CatalogEntry)], at: SystemTime) -> Value {
    let c = Catalog {
        observed_at: humantime::format_rfc3339_seconds(at).to_string(),
        resync_seconds: 10,
        complete: true,
        scope: None,
        namespaces: entries
            .iter()
            .map(|(ns, e)| ((*ns).to_owned(), (*e).clone()))
            .collect(),
    };
    json!({ "catalog": c })
}

fn images(o: &Outcome) -> Vec<String> {
    let mut v: Vec<String> = o
        .objects
        .values()
        .flat_map(|f| f.iter())
        .map(|f| f.template.containers[0].image.clone())
        .collect();
    v.sort();
    v
}

/// A view of namespace `a` (objects a0..a3), complete at `now`.
fn complete_view(now: SystemTime) -> (View, Vec<(String, Value)>, CatalogEntry) {
    let (objects, entry) = shards("a", &facts("a", 0..4));
    let mut v = View::default();
    for (n, o) in &objects {
        v.apply(n, o);
    }
    v.apply(CATALOG_NAME, &catalog(&[("a", &entry)], now));
    let out = v.evaluate(now, Instant::now());
    assert_eq!(out.incomplete, None);
    assert_eq!(images(&out).len(), 4);
    (v, objects, entry)
}

#[test]
fn a_pruned_object_leaves_once_the_catalog_names_the_new_digests() {
    let now = SystemTime::now();
    let (mut v, _, _) = complete_view(now);
    let (new, entry) = shards("a", &facts("a", 1..4));
    for (n, o) in &new {
        v.apply(n, o);
    }
    let before = v.evaluate(now, Instant::now());
    assert!(
        before
            .incomplete
            .as_deref()
            .unwrap()
            .contains("differs from the catalog"),
        "digests not in the catalog yet"
    );
    assert_eq!(images(&before).len(), 4, "nothing leaves meanwhile");
    v.apply(CATALOG_NAME, &catalog(&[("a", &entry)], now));
    let out = v.evaluate(now, Instant::now());
    assert_eq!(out.incomplete, None);
    assert_eq!(images(&out), ["r/a:1", "r/a:2", "r/a:3"]);
}

#[test]
fn a_missing_shard_or_every_shard_deleted_keeps_the_facts() {
    let now = SystemTime::now();
    let (mut v, objects, _) = complete_view(now);
    v.delete(&objects[0].0);
    let out = v.evaluate(now, Instant::now());
    assert!(out.incomplete.as_deref().unwrap().contains("is missing"));
    assert_eq!(images(&out).len(), 4);
    v.delete(&objects[1].0);
    let out = v.evaluate(now, Instant::now());
    assert!(out.incomplete.is_some());
    assert_eq!(
        images(&out).len(),
        4,
        "shards alone would say the namespace is gone"
    );
    for (n, o) in &objects {
        v.apply(n, o);
    }
    assert_eq!(v.evaluate(now, Instant::now()).incomplete, None, "restored");
}

#[test]
fn a_namespace_leaves_only_when_a_fresh_catalog_no_longer_lists_it() {
    let now = SystemTime::now();
    let (mut v, objects, _) = complete_view(now);
    for (n, _) in &objects {
        v.delete(n);
    }
    v.delete(CATALOG_NAME);
    let out = v.evaluate(now, Instant::now());
    assert!(
        out.incomplete
            .as_deref()
            .unwrap()
            .contains("no inventory catalog")
    );
    assert_eq!(images(&out).len(), 4);
    // Stale (older than three resyncs of 10 s) and no longer listing it: still kept.
    v.apply(CATALOG_NAME, &catalog(&[], now - Duration::from_secs(31)));
    let out = v.evaluate(now, Instant::now());
    assert!(
        out.incomplete
            .as_deref()
            .unwrap()
            .contains("last refreshed")
    );
    assert_eq!(images(&out).len(), 4);
    // The control: a fresh catalog that does not list it, whatever shards of it are left.
    let (left_over, _) = shards("a", &facts("a", 0..1));
    v.apply(&left_over[0].0, &left_over[0].1);
    v.apply(CATALOG_NAME, &catalog(&[], now));
    let out = v.evaluate(now, Instant::now());
    assert_eq!(out.incomplete, None);
    assert!(out.objects.is_empty());
}

#[test]
fn a_corrupt_shard_keeps_its_last_good_facts_while_new_ones_are_added() {
    let now = SystemTime::now();
    let (mut v, objects, _) = complete_view(now);
    let (name, obj) = &objects[0];
    let mut bad = obj.clone();
    bad["spec"]["digest"] = json!(format!("sha256:{}", "0".repeat(64)));
    v.apply(name, &bad);
    // A new object, wherever it lands: its shard is applied unless it is the corrupt one.
    let (new, _) = shards("a", &facts("a", 0..5));
    for (n, o) in new.iter().filter(|(n, _)| n != name) {
        v.apply(n, o);
    }
    let out = v.evaluate(now, Instant::now());
    assert!(
        out.incomplete
            .as_deref()
            .unwrap()
            .contains("does not match")
    );
    let held = images(&out);
    for i in 0..4 {
        assert!(held.contains(&format!("r/a:{i}")), "{held:?}");
    }
}

#[test]
fn unresolved_objects_or_an_incomplete_indexer_make_the_view_incomplete() {
    let now = SystemTime::now();
    let (mut v, objects, entry) = complete_view(now);
    let (name, obj) = &objects[0];
    let mut marked = obj.clone();
    marked["spec"]["unresolved"] = json!(["Secret a/sh.helm.release.v1.x.v1"]);
    v.apply(name, &marked);
    assert!(
        v.evaluate(now, Instant::now())
            .incomplete
            .unwrap()
            .contains("could not decode")
    );
    v.apply(name, obj);
    assert_eq!(
        v.evaluate(now, Instant::now()).incomplete,
        None,
        "the control"
    );
    let mut c = catalog(&[("a", &entry)], now);
    c["catalog"]["complete"] = json!(false);
    v.apply(CATALOG_NAME, &c);
    assert!(
        v.evaluate(now, Instant::now())
            .incomplete
            .unwrap()
            .contains("incomplete")
    );
}

#[test]
fn equal_templates_of_different_shards_are_one_copy() {
    let now = SystemTime::now();
    let same: Vec<RevisionFact> = (0..6)
        .map(|i| fact("a", &format!("a{i}"), "r/a:same"))
        .collect();
    let (objects, _) = shards("a", &same);
    let mut v = View::default();
    for (n, o) in &objects {
        v.apply(n, o);
    }
    let out = v.evaluate(now, Instant::now());
    let templates: Vec<&Arc<PodTemplate>> = out
        .objects
        .values()
        .flat_map(|f| f.iter())
        .map(|f| &f.template)
        .collect();
    assert_eq!(templates.len(), 6);
    assert!(templates.iter().all(|t| Arc::ptr_eq(t, templates[0])));
}

/// The indexer's clock, the node's wall clock `skew` seconds off it (positive: ahead), and this
/// agent's monotonic clock, all read `secs` after the start.
struct Clocks {
    start: SystemTime,
    t0: Instant,
    skew: i64,
}

impl Clocks {
    fn new(skew: i64) -> Self {
        Self {
            start: SystemTime::now(),
            t0: Instant::now(),
            skew,
        }
    }

    fn indexer(&self, secs: u64) -> SystemTime {
        self.start + Duration::from_secs(secs)
    }

    fn local(&self, secs: u64) -> Instant {
        self.t0 + Duration::from_secs(secs)
    }

    fn wall(&self, secs: u64) -> SystemTime {
        let off = Duration::from_secs(self.skew.unsigned_abs());
        let at = self.indexer(secs);
        if self.skew >= 0 { at + off } else { at - off }
    }

    /// Why the view is incomplete on the node `secs` after the start, facts checked kept.
    fn evaluate(&self, v: &mut View, secs: u64) -> Option<String> {
        let out = v.evaluate(self.wall(secs), self.local(secs));
        assert_eq!(images(&out).len(), 4, "nothing leaves at {secs}s");
        out.incomplete
    }
}

/// A view of `a` (a0..a3) whose list ended `secs` after the start, finding the catalog the
/// indexer wrote at `written` seconds (resync 10 s, stale after 30 s).
fn listed(c: &Clocks, written: u64, secs: u64) -> (View, CatalogEntry) {
    let (objects, entry) = shards("a", &facts("a", 0..4));
    let mut v = View::default();
    relist(&mut v, c, &objects, &entry, written, secs);
    (v, entry)
}

fn relist(
    v: &mut View,
    c: &Clocks,
    objects: &[(String, Value)],
    entry: &CatalogEntry,
    written: u64,
    secs: u64,
) {
    v.clear();
    for (n, o) in objects {
        v.apply(n, o);
    }
    v.apply(CATALOG_NAME, &catalog(&[("a", entry)], c.indexer(written)));
    v.listed(c.local(secs));
}

/// The indexer's heartbeat written at `written` seconds, delivered by the watch at `secs`.
fn heartbeat(v: &mut View, c: &Clocks, entry: &CatalogEntry, written: u64, secs: u64) {
    v.apply(CATALOG_NAME, &catalog(&[("a", entry)], c.indexer(written)));
    v.watched(c.local(secs));
}

#[test]
fn a_node_clock_behind_by_an_hour_sees_a_dead_indexer_within_three_resyncs_of_its_list() {
    let c = Clocks::new(-3600);
    // The indexer wrote its last catalog at the start and died; the agent listed 5 s later.
    let (mut v, _) = listed(&c, 0, 5);
    assert_eq!(c.evaluate(&mut v, 5), None, "its observedAt is no evidence");
    assert_eq!(c.evaluate(&mut v, 35), None, "30 s after the list");
    for secs in [36, 600, 3599, 7200] {
        let why = c.evaluate(&mut v, secs).expect("stale");
        assert!(why.contains("as seen by this agent"), "{why}");
        assert!(why.contains("3 resyncs"), "{why}");
    }
}

#[test]
fn a_node_clock_ahead_by_an_hour_is_complete_from_the_first_heartbeat_it_sees() {
    let c = Clocks::new(3600);
    let (mut v, entry) = listed(&c, 0, 1);
    let why = c
        .evaluate(&mut v, 1)
        .expect("an hour old by this node's clock");
    assert!(why.contains("last refreshed"), "{why}");
    assert_eq!(
        v.clock_note(c.wall(1), c.local(1)),
        None,
        "no heartbeat yet"
    );
    heartbeat(&mut v, &c, &entry, 10, 10);
    assert_eq!(c.evaluate(&mut v, 10), None, "the heartbeat seen arriving");
    let note = v.clock_note(c.wall(20), c.local(20)).expect("noted");
    assert!(note.contains("about 1h ahead of the indexer's"), "{note}");
    for at in (20..=100).step_by(10) {
        heartbeat(&mut v, &c, &entry, at, at);
        assert_eq!(c.evaluate(&mut v, at + 9), None);
    }
    // The indexer stops after its heartbeat at 100 s.
    assert_eq!(c.evaluate(&mut v, 130), None);
    let why = c.evaluate(&mut v, 131).expect("stale");
    assert!(
        why.contains("not been refreshed for 31s as seen by this agent"),
        "{why}"
    );
}

#[test]
fn heartbeats_arriving_normally_are_never_stale_and_an_edit_is_no_heartbeat() {
    let c = Clocks::new(0);
    let (mut v, entry) = listed(&c, 0, 0);
    for secs in 0..1200 {
        if secs % 10 == 0 && secs > 0 {
            // Written at the end of a pass, delivered a moment later.
            heartbeat(&mut v, &c, &entry, secs - 1, secs);
        }
        assert_eq!(c.evaluate(&mut v, secs), None, "at {secs}s");
    }
    assert_eq!(v.clock_note(c.wall(1200), c.local(1200)), None);
    // The last heartbeat (written at 1189 s, seen at 1190 s) delivered again, as a label
    // edited by hand would be: no refresh.
    heartbeat(&mut v, &c, &entry, 1189, 1215);
    assert_eq!(c.evaluate(&mut v, 1220), None);
    let why = c
        .evaluate(&mut v, 1221)
        .expect("stale 30 s after the last change seen");
    assert!(why.contains("as seen by this agent"), "{why}");
}

#[test]
fn a_relist_keeps_what_was_heard_of_the_catalog_it_finds_again_and_starts_over_on_another() {
    let (objects, _) = shards("a", &facts("a", 0..4));
    // Clock behind: re-lists finding the catalog the agent already held do not restart the
    // count, or re-lists more often than the window would hide a dead indexer for ever.
    let c = Clocks::new(-3600);
    let (mut v, entry) = listed(&c, 0, 0);
    heartbeat(&mut v, &c, &entry, 10, 10);
    relist(&mut v, &c, &objects, &entry, 10, 25);
    assert_eq!(c.evaluate(&mut v, 40), None);
    let why = c
        .evaluate(&mut v, 41)
        .expect("30 s after the heartbeat, not the re-list");
    assert!(why.contains("as seen by this agent"), "{why}");
    // A re-list that finds a newer catalog: counted from the list's end.
    relist(&mut v, &c, &objects, &entry, 50, 60);
    assert_eq!(c.evaluate(&mut v, 90), None);
    assert!(c.evaluate(&mut v, 91).is_some());

    // Clock ahead: the heartbeat heard stays evidence across a re-list that finds it again...
    let c = Clocks::new(3600);
    let (mut v, entry) = listed(&c, 0, 0);
    heartbeat(&mut v, &c, &entry, 10, 10);
    relist(&mut v, &c, &objects, &entry, 10, 20);
    assert_eq!(
        c.evaluate(&mut v, 20),
        None,
        "the same catalog, heard arriving"
    );
    // ...but a catalog changed while unwatched was not seen arriving: its observedAt is all
    // there is again until the next heartbeat.
    relist(&mut v, &c, &objects, &entry, 25, 30);
    let why = c
        .evaluate(&mut v, 30)
        .expect("an hour old by this node's clock");
    assert!(why.contains("last refreshed"), "{why}");
    heartbeat(&mut v, &c, &entry, 35, 35);
    assert_eq!(c.evaluate(&mut v, 35), None);
    // A list that finds no catalog, then that same catalog put back: no heartbeat either.
    v.clear();
    for (n, o) in &objects {
        v.apply(n, o);
    }
    v.listed(c.local(40));
    assert!(
        c.evaluate(&mut v, 40)
            .unwrap()
            .contains("no inventory catalog")
    );
    heartbeat(&mut v, &c, &entry, 35, 45);
    assert!(c.evaluate(&mut v, 45).unwrap().contains("last refreshed"));
}

use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::model::{ContainerImage, PodTemplate, SourceKind, WorkloadId};
use rollcache_core::shard::CatalogEntry;

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
    let out = v.evaluate(now);
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
    let before = v.evaluate(now);
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
    let out = v.evaluate(now);
    assert_eq!(out.incomplete, None);
    assert_eq!(images(&out), ["r/a:1", "r/a:2", "r/a:3"]);
}

#[test]
fn a_missing_shard_or_every_shard_deleted_keeps_the_facts() {
    let now = SystemTime::now();
    let (mut v, objects, _) = complete_view(now);
    v.delete(&objects[0].0);
    let out = v.evaluate(now);
    assert!(out.incomplete.as_deref().unwrap().contains("is missing"));
    assert_eq!(images(&out).len(), 4);
    v.delete(&objects[1].0);
    let out = v.evaluate(now);
    assert!(out.incomplete.is_some());
    assert_eq!(
        images(&out).len(),
        4,
        "shards alone would say the namespace is gone"
    );
    for (n, o) in &objects {
        v.apply(n, o);
    }
    assert_eq!(v.evaluate(now).incomplete, None, "restored");
}

#[test]
fn a_namespace_leaves_only_when_a_fresh_catalog_no_longer_lists_it() {
    let now = SystemTime::now();
    let (mut v, objects, _) = complete_view(now);
    for (n, _) in &objects {
        v.delete(n);
    }
    v.delete(CATALOG_NAME);
    let out = v.evaluate(now);
    assert!(
        out.incomplete
            .as_deref()
            .unwrap()
            .contains("no inventory catalog")
    );
    assert_eq!(images(&out).len(), 4);
    // Stale (older than three resyncs of 10 s) and no longer listing it: still kept.
    v.apply(CATALOG_NAME, &catalog(&[], now - Duration::from_secs(31)));
    let out = v.evaluate(now);
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
    let out = v.evaluate(now);
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
    let out = v.evaluate(now);
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
        v.evaluate(now)
            .incomplete
            .unwrap()
            .contains("could not decode")
    );
    v.apply(name, obj);
    assert_eq!(v.evaluate(now).incomplete, None, "the control");
    let mut c = catalog(&[("a", &entry)], now);
    c["catalog"]["complete"] = json!(false);
    v.apply(CATALOG_NAME, &c);
    assert!(v.evaluate(now).incomplete.unwrap().contains("incomplete"));
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
    let out = v.evaluate(now);
    let templates: Vec<&Arc<PodTemplate>> = out
        .objects
        .values()
        .flat_map(|f| f.iter())
        .map(|f| &f.template)
        .collect();
    assert_eq!(templates.len(), 6);
    assert!(templates.iter().all(|t| Arc::ptr_eq(t, templates[0])));
}

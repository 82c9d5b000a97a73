//! The agent's `namespaces` against the indexer's scope: outside it a namespace is unknown
//! (incomplete, its facts kept), inside it the catalog decides, other namespaces are ignored.

use super::*;

/// A view taking `wanted`, with every namespace of `published` read and a fresh catalog of
/// them whose scope is `scope` (None: written without one, as an older indexer does).
fn view_of(wanted: &[&str], published: &[&str], scope: Option<&[&str]>, now: SystemTime) -> View {
    let wanted: Vec<String> = wanted.iter().map(|n| (*n).to_owned()).collect();
    let mut v = View::for_namespaces(&wanted);
    publish(&mut v, published, scope, now);
    v
}

/// Applies the shards of every namespace of `published` (objects `<ns>0..<ns>1`) and their
/// catalog with `scope`.
fn publish(v: &mut View, published: &[&str], scope: Option<&[&str]>, now: SystemTime) {
    let mut entries = Vec::new();
    for ns in published {
        let (objects, entry) = shards(ns, &facts(ns, 0..2));
        for (n, o) in &objects {
            v.apply(n, o);
        }
        entries.push((*ns, entry));
    }
    let entries: Vec<(&str, &CatalogEntry)> = entries.iter().map(|(n, e)| (*n, e)).collect();
    let mut c = catalog(&entries, now);
    if let Some(scope) = scope {
        c["catalog"]["scope"] = json!(scope);
    }
    v.apply(CATALOG_NAME, &c);
}

#[test]
fn a_namespace_the_indexer_does_not_index_is_incomplete_and_keeps_its_facts() {
    let now = SystemTime::now();
    // Complete while an unrestricted indexer published a, b and c.
    let mut v = view_of(&["a", "c"], &["a", "b", "c"], None, now);
    let out = v.evaluate(now, Instant::now());
    assert_eq!(out.incomplete, None);
    assert_eq!(images(&out), ["r/a:0", "r/a:1", "r/c:0", "r/c:1"]);
    // The indexer restarted with `--namespaces a,b`: c's shards gone, the catalog without c.
    for (n, _) in shards("c", &facts("c", 0..2)).0 {
        v.delete(&n);
    }
    publish(&mut v, &["a", "b"], Some(&["a", "b"]), now);
    let out = v.evaluate(now, Instant::now());
    assert_eq!(
        out.incomplete.as_deref(),
        Some(
            "the indexer does not index namespace c (it indexes a, b): nothing is unpinned; add it to `rollcache index --namespaces` or remove it from this agent's `namespaces`"
        )
    );
    assert_eq!(
        images(&out),
        ["r/a:0", "r/a:1", "r/c:0", "r/c:1"],
        "c is unknown, not without history"
    );
    // The control: the indexer takes c again and no longer lists it: its history is gone.
    publish(&mut v, &["a", "b"], Some(&["a", "b", "c"]), now);
    let out = v.evaluate(now, Instant::now());
    assert_eq!(out.incomplete, None);
    assert_eq!(images(&out), ["r/a:0", "r/a:1"]);
}

#[test]
fn several_namespaces_outside_the_scope_are_named_together() {
    let now = SystemTime::now();
    let mut v = view_of(&["d", "a", "c"], &["a"], Some(&["a", "b"]), now);
    let why = v.evaluate(now, Instant::now()).incomplete.unwrap();
    assert!(
        why.starts_with("the indexer does not index namespaces c, d (it indexes a, b)"),
        "{why}"
    );
    assert!(why.contains("add them to"), "{why}");
}

#[test]
fn inside_the_scope_the_view_is_complete_and_takes_only_its_namespaces() {
    let now = SystemTime::now();
    let mut v = view_of(&["a"], &["a", "b"], Some(&["a", "b"]), now);
    let out = v.evaluate(now, Instant::now());
    assert_eq!(out.incomplete, None);
    assert_eq!(images(&out), ["r/a:0", "r/a:1"]);
    // A namespace in scope without history (not listed) is gone, as without a scope.
    let mut v = view_of(&["a", "b"], &["a"], Some(&["a", "b"]), now);
    let out = v.evaluate(now, Instant::now());
    assert_eq!(out.incomplete, None);
    assert_eq!(images(&out), ["r/a:0", "r/a:1"]);
}

#[test]
fn a_restricted_agent_ignores_other_namespaces_shards() {
    let now = SystemTime::now();
    let mut v = view_of(&["a"], &["a", "b"], None, now);
    // b's shards missing or corrupt: not this agent's business.
    let (b, _) = shards("b", &facts("b", 0..2));
    v.delete(&b[0].0);
    let mut bad = b[1].1.clone();
    bad["spec"]["digest"] = json!(format!("sha256:{}", "0".repeat(64)));
    v.apply(&b[1].0, &bad);
    let out = v.evaluate(now, Instant::now());
    assert_eq!(out.incomplete, None);
    assert_eq!(images(&out), ["r/a:0", "r/a:1"]);
    // The control: an agent taking every namespace sees b incomplete.
    let mut all = view_of(&[], &["a", "b"], None, now);
    all.delete(&b[0].0);
    assert!(
        all.evaluate(now, Instant::now())
            .incomplete
            .unwrap()
            .contains("is missing")
    );
}

#[test]
fn an_old_catalog_without_a_scope_covers_every_namespace() {
    let now = SystemTime::now();
    let old = json!({"catalog": {"observedAt": humantime::format_rfc3339_seconds(now).to_string(),
        "resyncSeconds": 10, "complete": true, "namespaces": {}}});
    let mut v = View::for_namespaces(&["c".to_owned()]);
    v.seed(facts("c", 0..1).into_iter().map(|f| {
        let object = f.object.clone();
        (object, Arc::from(vec![f]))
    }));
    v.apply(CATALOG_NAME, &old);
    let out = v.evaluate(now, Instant::now());
    assert_eq!(out.incomplete, None, "c indexed, and without history");
    assert!(out.objects.is_empty());
    let mut all = view_of(&[], &["a", "b"], None, now);
    assert_eq!(all.evaluate(now, Instant::now()).incomplete, None);
}

#[test]
fn an_agent_taking_every_namespace_is_incomplete_with_a_restricted_indexer() {
    let now = SystemTime::now();
    let mut v = view_of(&[], &["a", "b"], None, now);
    assert_eq!(v.evaluate(now, Instant::now()).incomplete, None);
    // The indexer restarted with `--namespaces a`: b's shards deleted, the catalog without b.
    for (n, _) in shards("b", &facts("b", 0..2)).0 {
        v.delete(&n);
    }
    publish(&mut v, &["a"], Some(&["a"]), now);
    let out = v.evaluate(now, Instant::now());
    let why = out.incomplete.clone().unwrap();
    assert!(
        why.starts_with("this agent takes every namespace, but the indexer indexes only a"),
        "{why}"
    );
    assert_eq!(
        images(&out),
        ["r/a:0", "r/a:1", "r/b:0", "r/b:1"],
        "b is unknown, not without history"
    );
}

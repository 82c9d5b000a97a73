//! The indexer's heartbeat object: while present it, not the catalog's `observedAt`, is the
//! evidence of life, and the view is complete only with the catalog it vouches for.

use super::*;
use rollcache_core::shard::{HEARTBEAT_NAME, Heartbeat};

/// The heartbeat written at `written` seconds, vouching for the catalog of `entry`.
fn beat_of(c: &Clocks, entry: &CatalogEntry, written: u64) -> Value {
    let catalog: Catalog =
        serde_json::from_value(catalog(&[("a", entry)], c.indexer(0))["catalog"].clone()).unwrap();
    json!({ "heartbeat": Heartbeat {
        observed_at: humantime::format_rfc3339_seconds(c.indexer(written)).to_string(),
        resync_seconds: 10,
        catalog: catalog.content_digest(),
    }})
}

/// The heartbeat written at `written`, delivered by the watch at `secs`.
fn beat(v: &mut View, c: &Clocks, entry: &CatalogEntry, written: u64, secs: u64) {
    v.apply(HEARTBEAT_NAME, &beat_of(c, entry, written));
    v.watched(c.local(secs));
}

/// A view of `a` whose list ended at `secs`, finding the catalog written at 0 and the heartbeat
/// written at `written`.
fn listed_with_beat(c: &Clocks, written: u64, secs: u64) -> (View, CatalogEntry) {
    let (objects, entry) = shards("a", &facts("a", 0..4));
    let mut v = View::default();
    for (n, o) in &objects {
        v.apply(n, o);
    }
    v.apply(CATALOG_NAME, &catalog(&[("a", &entry)], c.indexer(0)));
    v.apply(HEARTBEAT_NAME, &beat_of(c, &entry, written));
    v.listed(c.local(secs));
    (v, entry)
}

#[test]
fn heartbeats_arriving_keep_an_unchanged_catalog_fresh_and_stopping_makes_it_stale() {
    let c = Clocks::new(0);
    let (mut v, entry) = listed_with_beat(&c, 0, 0);
    // The catalog is never rewritten: an hour old by its own observedAt.
    for secs in 0..3600 {
        if secs % 10 == 0 && secs > 0 {
            beat(&mut v, &c, &entry, secs - 1, secs);
        }
        assert_eq!(c.evaluate(&mut v, secs), None, "at {secs}s");
    }
    // The last heartbeat arrived at 3590 s: stale 30 s later on this agent's clock.
    assert_eq!(c.evaluate(&mut v, 3620), None);
    let why = c.evaluate(&mut v, 3621).expect("stale");
    assert!(why.contains("as seen by this agent"), "{why}");
    // The same heartbeat delivered again (an edit by hand) is no refresh.
    beat(&mut v, &c, &entry, 3589, 3625);
    assert!(c.evaluate(&mut v, 3626).is_some());
}

#[test]
fn heartbeats_stop_on_a_clock_behind_stale_within_three_resyncs_of_the_last_one() {
    let c = Clocks::new(-3600);
    let (mut v, entry) = listed_with_beat(&c, 0, 1);
    assert_eq!(c.evaluate(&mut v, 1), None, "its observedAt is no evidence");
    beat(&mut v, &c, &entry, 10, 10);
    beat(&mut v, &c, &entry, 20, 20);
    assert_eq!(c.evaluate(&mut v, 50), None);
    let why = c
        .evaluate(&mut v, 51)
        .expect("30 s after the last heartbeat");
    assert!(why.contains("as seen by this agent"), "{why}");
}

#[test]
fn a_listed_heartbeat_is_judged_by_its_observed_at_not_the_catalogs() {
    let c = Clocks::new(0);
    // Catalog written an hour ago, heartbeat a second ago: fresh (a one-shot `plan`).
    let (mut v, _) = listed_with_beat(&c, 3600, 3601);
    assert_eq!(c.evaluate(&mut v, 3601), None);
    // Heartbeat 31 s old when listed: stale by the wall clock, whatever the catalog says.
    let (mut v, _) = listed_with_beat(&c, 0, 31);
    let why = c.evaluate(&mut v, 31).expect("stale");
    assert!(why.contains("last refreshed 31s ago"), "{why}");
}

#[test]
fn a_catalog_write_seen_arriving_counts_as_a_sign_of_life() {
    let c = Clocks::new(0);
    let (mut v, entry) = listed_with_beat(&c, 0, 0);
    v.apply(CATALOG_NAME, &catalog(&[("a", &entry)], c.indexer(25)));
    v.watched(c.local(25));
    assert_eq!(c.evaluate(&mut v, 55), None, "30 s after the catalog write");
    assert!(c.evaluate(&mut v, 56).is_some());
}

#[test]
fn a_heartbeat_vouching_for_another_catalog_is_incomplete_until_it_arrives() {
    let c = Clocks::new(0);
    let (mut v, entry) = listed_with_beat(&c, 0, 0);
    assert_eq!(c.evaluate(&mut v, 0), None);
    // The indexer wrote a shard, the catalog naming it and the heartbeat; the watch delivers the
    // shard and the heartbeat first.
    let (new, new_entry) = shards("a", &facts("a", 1..4));
    for (n, o) in &new {
        v.apply(n, o);
    }
    beat(&mut v, &c, &new_entry, 5, 5);
    let why = c.evaluate(&mut v, 5).expect("another catalog");
    assert!(why.contains("vouches for another catalog"), "{why}");
    v.apply(CATALOG_NAME, &catalog(&[("a", &new_entry)], c.indexer(5)));
    v.watched(c.local(6));
    let out = v.evaluate(c.wall(6), c.local(6));
    assert_eq!(out.incomplete, None);
    assert_eq!(images(&out), ["r/a:1", "r/a:2", "r/a:3"]);
    // And back: the heartbeat for the old catalog while the new one is held.
    beat(&mut v, &c, &entry, 7, 7);
    let out = v.evaluate(c.wall(7), c.local(7));
    assert!(
        out.incomplete
            .as_deref()
            .unwrap()
            .contains("vouches for another catalog")
    );
    assert_eq!(images(&out).len(), 3, "nothing leaves");
}

#[test]
fn an_unreadable_heartbeat_is_incomplete() {
    let c = Clocks::new(0);
    let (mut v, _) = listed_with_beat(&c, 0, 0);
    v.apply(HEARTBEAT_NAME, &json!({"heartbeat": {"observedAt": 5}}));
    v.watched(c.local(1));
    let why = c.evaluate(&mut v, 1).expect("unreadable");
    assert!(why.contains("heartbeat is not readable"), "{why}");
}

#[test]
fn without_a_heartbeat_object_the_catalogs_own_observed_at_rules() {
    let c = Clocks::new(0);
    let (mut v, entry) = listed_with_beat(&c, 0, 0);
    v.delete(HEARTBEAT_NAME);
    // An unchanged catalog is no longer kept fresh by anything but its own rewrites.
    assert_eq!(c.evaluate(&mut v, 29), None);
    assert!(c.evaluate(&mut v, 31).is_some());
    heartbeat(&mut v, &c, &entry, 40, 40);
    assert_eq!(c.evaluate(&mut v, 70), None);
    assert!(c.evaluate(&mut v, 71).is_some());
}

#[test]
fn an_object_named_heartbeat_is_never_a_shard() {
    let now = SystemTime::now();
    let (mut v, _, _) = complete_view(now);
    // Shaped like a shard of a namespace `heartbeat`: still the heartbeat, not a shard.
    let (objects, _) = shards("heartbeat", &facts("heartbeat", 0..1));
    v.apply(HEARTBEAT_NAME, &objects[0].1);
    let out = v.evaluate(now, Instant::now());
    assert!(
        out.incomplete
            .as_deref()
            .unwrap()
            .contains("heartbeat has no `heartbeat` field")
    );
    assert!(!v.shards.contains_key(HEARTBEAT_NAME));
    assert!(images(&out).iter().all(|i| !i.contains("heartbeat")));
}

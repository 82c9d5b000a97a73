use std::sync::Arc;

use super::*;
use crate::model::{ContainerImage, PodTemplate, SourceKind, WorkloadId};

fn fact(ns: &str, object: &str, revision: i64, image: &str) -> RevisionFact {
    RevisionFact {
        source: SourceKind::ControllerRevision,
        object: ObjectRef::new("ControllerRevision", ns, object),
        workload: WorkloadId::new("StatefulSet", ns, "ioc"),
        revision: Some(revision),
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

fn objects(ns: &str, n: usize) -> Vec<Vec<RevisionFact>> {
    (0..n)
        .map(|i| {
            vec![fact(
                ns,
                &format!("ioc-{i}"),
                i as i64,
                &format!("r/ioc:{i}"),
            )]
        })
        .collect()
}

#[test]
fn buckets_are_deterministic_in_range_and_spread() {
    let refs: Vec<ObjectRef> = (0..4096)
        .map(|i| ObjectRef::new("ReplicaSet", "bl45p", format!("rs-{i}")))
        .collect();
    let mut counts = [0usize; 16];
    for r in &refs {
        let b = bucket(r, 16);
        assert_eq!(
            b,
            bucket(&ObjectRef::new("ReplicaSet", "bl45p", r.name.clone()), 16)
        );
        counts[b as usize] += 1;
    }
    // 256 expected per bucket; a hash this skewed would overfill one shard.
    assert!(
        counts.iter().all(|&c| (160..352).contains(&c)),
        "{counts:?}"
    );
    assert!(refs.iter().all(|r| bucket(r, 1) == 0));
}

#[test]
fn doubling_the_count_splits_each_shard_in_two() {
    // With powers of two, an object of shard k of n goes to k or k + n when n doubles: a
    // resize rewrites every shard but no object jumps between unrelated shards.
    for i in 0..2000 {
        let r = ObjectRef::new("Secret", "ns", format!("sh.helm.release.v1.r.v{i}"));
        for n in [1u32, 2, 4, 8, 64] {
            assert_eq!(bucket(&r, 2 * n) % n, bucket(&r, n), "{r} at {n}");
        }
    }
}

#[test]
fn the_same_facts_give_the_same_shards_and_one_change_touches_one_shard() {
    let before = objects("bl45p", 200);
    let mut after = before.clone();
    after[17][0] = fact("bl45p", "ioc-17", 17, "r/ioc:changed");
    let ns_before = by_namespace(before.iter().map(Vec::as_slice));
    let ns_after = by_namespace(after.iter().map(Vec::as_slice));
    let changed = bucket(&after[17][0].object, 8);
    for shard in 0..8 {
        let a = shard_facts(&ns_before["bl45p"], shard, 8);
        let b = shard_facts(&ns_after["bl45p"], shard, 8);
        assert_eq!(a == b, shard != changed, "shard {shard}");
    }
    // Order comes from the keys, not the order facts arrived in.
    let mut reversed = before.clone();
    reversed.reverse();
    let ns_reversed = by_namespace(reversed.iter().map(Vec::as_slice));
    for shard in 0..8 {
        assert_eq!(
            shard_facts(&ns_before["bl45p"], shard, 8),
            shard_facts(&ns_reversed["bl45p"], shard, 8)
        );
    }
    let all: usize = (0..8)
        .map(|s| shard_facts(&ns_before["bl45p"], s, 8).len())
        .sum();
    assert_eq!(all, 200, "every fact in exactly one shard");
}

#[test]
fn facts_are_grouped_by_the_namespace_of_their_object() {
    let mut all = objects("a", 3);
    all.extend(objects("b", 2));
    all.push(Vec::new());
    let grouped = by_namespace(all.iter().map(Vec::as_slice));
    let sizes: Vec<(&str, usize)> = grouped.iter().map(|(n, o)| (*n, o.len())).collect();
    assert_eq!(sizes, vec![("a", 3), ("b", 2)]);
}

#[test]
fn digests_are_sha256_of_the_bytes() {
    assert_eq!(
        digest(b""),
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_ne!(digest(b"[]"), digest(b"[ ]"));
}

#[test]
fn growth_doubles_up_to_the_cap() {
    assert_eq!(grow(1), Some(2));
    assert_eq!(grow(MAX_SHARDS / 2), Some(MAX_SHARDS));
    assert_eq!(grow(MAX_SHARDS), None);
}

#[test]
fn a_shard_whose_facts_leave_its_namespace_or_miscount_is_refused() {
    let facts: Vec<RevisionFact> = objects("a", 3).into_iter().flatten().collect();
    let spec = InventorySpec {
        source_namespace: "a".into(),
        shard: 0,
        shards: 1,
        objects: 3,
        revisions: 3,
        encoding: ENCODING.into(),
        data: String::new(),
        digest: String::new(),
        unresolved: Vec::new(),
    };
    assert_eq!(check_facts("a.1-0", &spec, &facts), Ok(()));
    let mut foreign = facts.clone();
    foreign.push(fact("b", "x", 1, "r/x:1"));
    let err = check_facts("a.1-0", &spec, &foreign).unwrap_err();
    assert!(matches!(err, ShardError::ForeignNamespace { .. }), "{err}");
    assert!(err.to_string().contains("a.1-0"), "{err}");
    let err = check_facts("a.1-0", &spec, &facts[..2]).unwrap_err();
    assert!(matches!(err, ShardError::Counts { .. }), "{err}");
    let halves = InventorySpec {
        shards: 2,
        ..spec.clone()
    };
    let other = facts
        .iter()
        .find(|f| bucket(&f.object, 2) == 1)
        .expect("one of three facts in shard 1 of 2");
    let err = check_facts("a.2-0", &halves, std::slice::from_ref(other)).unwrap_err();
    assert!(
        matches!(err, ShardError::Misplaced { belongs: 1, .. }),
        "{err}"
    );
}

#[test]
fn a_catalog_without_a_scope_covers_every_namespace_and_one_with_it_only_those() {
    let all = Catalog::default();
    assert!(all.covers("bl01") && all.covers("anything"));
    let scoped = Catalog {
        scope: Some(vec!["bl01".into(), "bl02".into()]),
        ..Catalog::default()
    };
    assert!(scoped.covers("bl01") && scoped.covers("bl02"));
    assert!(!scoped.covers("bl03"));
}

#[test]
fn a_catalogs_content_digest_leaves_out_its_time_and_covers_every_other_field() {
    let mut namespaces = BTreeMap::new();
    namespaces.insert(
        "bl45p".to_owned(),
        CatalogEntry {
            shards: 2,
            digests: vec![digest(b"a"), digest(b"b")],
        },
    );
    let c = Catalog {
        observed_at: "2026-01-01T00:00:00Z".into(),
        resync_seconds: 300,
        complete: true,
        namespaces,
        scope: None,
    };
    let d = c.content_digest();
    assert!(d.starts_with("sha256:") && d.len() == 71, "{d}");
    let later = Catalog {
        observed_at: "2026-01-01T01:00:00Z".into(),
        ..c.clone()
    };
    assert_eq!(later.content_digest(), d, "observedAt is left out");
    let mut others = vec![
        Catalog {
            resync_seconds: 60,
            ..c.clone()
        },
        Catalog {
            complete: false,
            ..c.clone()
        },
        Catalog {
            scope: Some(vec!["bl45p".into()]),
            ..c.clone()
        },
        Catalog {
            scope: Some(Vec::new()),
            ..c.clone()
        },
    ];
    let mut swapped = c.clone();
    swapped
        .namespaces
        .get_mut("bl45p")
        .unwrap()
        .digests
        .reverse();
    others.push(swapped);
    let mut renamed = c.clone();
    let entry = renamed.namespaces.remove("bl45p").unwrap();
    renamed.namespaces.insert("bl46p".into(), entry);
    others.push(renamed);
    let mut all: Vec<String> = others.iter().map(Catalog::content_digest).collect();
    all.push(d);
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "every change of content is another digest");
}

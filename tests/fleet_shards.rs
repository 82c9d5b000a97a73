//! Inventory shards end to end without a server: history objects from the test bed decoded by the
//! agent's decoders, sharded, encoded, decoded back to the same facts; hostile shards refused by
//! name, never a panic and never past the inflation cap.

use k8s_openapi::api::apps::v1::{ControllerRevision, ReplicaSet};
use k8s_openapi::api::core::v1::Secret;
use rollcache::fleet::codec;
use rollcache::history::{controller_revisions, helm, replicasets};
use rollcache::model::RevisionFact;
use rollcache::shard::{self, ENCODING, InventorySpec, ShardError};
use rollcache_testbed::{bombs, history};
use serde_json::Value;

fn decoded(obj: Value) -> Vec<RevisionFact> {
    let kind = obj["kind"].as_str().unwrap().to_owned();
    let d = match kind.as_str() {
        "ReplicaSet" => replicasets::decode(&serde_json::from_value::<ReplicaSet>(obj).unwrap()),
        "ControllerRevision" => controller_revisions::decode(
            &serde_json::from_value::<ControllerRevision>(obj).unwrap(),
        ),
        "Secret" => helm::decode_secret(&serde_json::from_value::<Secret>(obj).unwrap()),
        other => panic!("no decoder for {other}"),
    };
    assert!(d.problems.is_empty(), "{:?}", d.problems);
    assert!(!d.facts.is_empty());
    d.facts
}

/// Every object's facts: `iocs` StatefulSets of 10 revisions and a Deployment's ReplicaSets in
/// namespace `ns`, and Helm releases of one chart.
fn cluster(ns: &str, iocs: usize) -> Vec<Vec<RevisionFact>> {
    let mut out = Vec::new();
    for i in 0..iocs {
        for rev in 1..=10 {
            let image = format!("ghcr.io/epics-containers/ioc-{i}:{rev}.0");
            out.push(decoded(history::controller_revision(
                ns,
                &format!("ioc-{i}"),
                rev,
                &[&image],
            )));
        }
    }
    for rev in 1..=3 {
        let image = format!("registry.example/archiver:{rev}");
        out.push(decoded(history::replicaset(
            ns,
            "archiver",
            rev,
            &[&image],
            i32::from(rev == 3),
        )));
        out.push(decoded(history::helm::deployment_release(
            ns, "gateway", rev, &image,
        )));
    }
    out
}

fn flatten(specs: &[InventorySpec]) -> Vec<RevisionFact> {
    let mut all = Vec::new();
    for s in specs {
        let name = shard::object_name(&s.source_namespace, s.shard, s.shards);
        all.extend(codec::decode(&name, s).unwrap_or_else(|e| panic!("{e}")));
    }
    all
}

fn sorted(mut facts: Vec<RevisionFact>) -> Vec<RevisionFact> {
    facts.sort_by(|a, b| (&a.object, a.revision).cmp(&(&b.object, b.revision)));
    facts
}

#[test]
fn facts_survive_sharding_and_encoding_unchanged() {
    let mut objects = cluster("bl45p", 40);
    objects.extend(cluster("bl46p", 3));
    let grouped = shard::by_namespace(objects.iter().map(Vec::as_slice));
    assert_eq!(grouped.len(), 2);
    for (ns, facts) in &grouped {
        // A small budget forces several shards on test-sized data.
        let specs = codec::encode_namespace(ns, facts, 2048);
        assert!(specs.len().is_power_of_two(), "{}", specs.len());
        for s in &specs {
            assert_eq!(
                (s.source_namespace.as_str(), s.shards),
                (*ns, specs.len() as u32)
            );
            assert!(
                s.data.len() * 3 / 4 <= 2048 || s.shards == shard::MAX_SHARDS,
                "{ns} {}",
                s.shard
            );
        }
        let want: Vec<RevisionFact> = facts.values().flat_map(|f| f.iter().cloned()).collect();
        assert_eq!(sorted(flatten(&specs)), sorted(want), "{ns}");
        let objects: u64 = specs.iter().map(|s| s.objects).sum();
        assert_eq!(objects, facts.len() as u64);
    }
    let big = codec::encode_namespace("bl45p", &grouped["bl45p"], 2048);
    let small = codec::encode_namespace("bl46p", &grouped["bl46p"], 2048);
    assert!(big.len() > small.len(), "{} vs {}", big.len(), small.len());
    assert_eq!(
        codec::encode("bl45p", &grouped["bl45p"]).len(),
        1,
        "fits one default shard"
    );
}

#[test]
fn a_change_to_one_object_rewrites_only_its_shard() {
    let objects = cluster("bl45p", 40);
    let mut changed = objects.clone();
    changed[5] = decoded(history::controller_revision(
        "bl45p",
        "ioc-0",
        6,
        &["ghcr.io/x/changed:1"],
    ));
    let before = codec::encode_namespace(
        "bl45p",
        &shard::by_namespace(objects.iter().map(Vec::as_slice))["bl45p"],
        2048,
    );
    let after = codec::encode_namespace(
        "bl45p",
        &shard::by_namespace(changed.iter().map(Vec::as_slice))["bl45p"],
        2048,
    );
    assert_eq!(before.len(), after.len());
    let differ: Vec<u32> = before
        .iter()
        .zip(&after)
        .filter(|(a, b)| a.digest != b.digest)
        .map(|(a, _)| a.shard)
        .collect();
    assert_eq!(
        differ,
        vec![shard::bucket(&changed[5][0].object, after.len() as u32)]
    );
    // Same facts, same bytes: an unchanged shard is recognised by its digest alone.
    let again = codec::encode_namespace(
        "bl45p",
        &shard::by_namespace(objects.iter().map(Vec::as_slice))["bl45p"],
        2048,
    );
    assert_eq!(before, again);
}

fn spec_with(data: String, digest: String) -> InventorySpec {
    InventorySpec {
        source_namespace: "bl45p".into(),
        shard: 0,
        shards: 1,
        objects: 0,
        revisions: 0,
        encoding: ENCODING.into(),
        data,
        digest,
        unresolved: Vec::new(),
    }
}

fn refused(spec: &InventorySpec) -> ShardError {
    let err = codec::decode("bl45p.1-0", spec).expect_err("refused");
    assert!(
        err.to_string().starts_with("inventory shard bl45p.1-0: "),
        "{err}"
    );
    err
}

#[test]
fn a_shard_that_inflates_beyond_the_cap_is_refused() {
    // The 100 KB Helm bomb that inflates to 60 MB, put where a shard's data goes.
    let bomb = &bombs::named(&["flow-60mb"])[0];
    let err = refused(&spec_with(bomb.helm_text().to_owned(), "sha256:00".into()));
    assert_eq!(
        err,
        ShardError::Inflated {
            shard: "bl45p.1-0".into(),
            cap: codec::MAX_INFLATED
        }
    );
}

#[test]
fn hostile_or_corrupt_shards_are_errors_naming_the_shard() {
    let objects = cluster("bl45p", 2);
    let good = codec::encode(
        "bl45p",
        &shard::by_namespace(objects.iter().map(Vec::as_slice))["bl45p"],
    )
    .remove(0);

    let mut tampered = good.clone();
    tampered.digest = shard::digest(b"[]");
    assert!(matches!(refused(&tampered), ShardError::Digest { .. }));

    let mut wrong_encoding = good.clone();
    wrong_encoding.encoding = "json".into();
    assert!(matches!(
        refused(&wrong_encoding),
        ShardError::Encoding { .. }
    ));

    let mut miscounted = good.clone();
    miscounted.revisions += 1;
    assert!(matches!(refused(&miscounted), ShardError::Counts { .. }));

    let mut elsewhere = good.clone();
    elsewhere.source_namespace = "other".into();
    assert!(matches!(
        refused(&elsewhere),
        ShardError::ForeignNamespace { .. }
    ));

    assert!(matches!(
        refused(&spec_with("not base64!".into(), String::new())),
        ShardError::Base64 { .. }
    ));
    let not_gzip = history::b64(b"plain text, no gzip header");
    assert!(matches!(
        refused(&spec_with(not_gzip, String::new())),
        ShardError::Gzip { .. }
    ));

    // Deep nesting with a matching digest reaches the JSON decoder, which stops at its depth
    // limit instead of recursing on.
    let deep = bombs::deep_nesting(1 << 20);
    let deep = deep.trim_end().as_bytes();
    let err = refused(&spec_with(
        history::b64(&history::gzip(deep)),
        shard::digest(deep),
    ));
    assert!(matches!(err, ShardError::Json { .. }), "{err}");

    let huge = spec_with("A".repeat(codec::MAX_DATA_TEXT + 4), String::new());
    assert!(matches!(refused(&huge), ShardError::DataTooLarge { .. }));
}

#[test]
fn an_object_over_the_budget_alone_does_not_multiply_shards() {
    let objects = cluster("bl45p", 4);
    let grouped = shard::by_namespace(objects.iter().map(Vec::as_slice));
    // Smaller than any one object's facts compressed: splitting cannot help.
    let specs = codec::encode_namespace("bl45p", &grouped["bl45p"], 16);
    assert!(
        specs.len() < 4 * objects.len(),
        "{} shards for {} objects",
        specs.len(),
        objects.len()
    );
    assert!(specs.iter().any(|s| s.objects == 1));
    assert_eq!(
        sorted(flatten(&specs)).len(),
        objects.iter().map(Vec::len).sum::<usize>()
    );
}

/// The JSON inside `spec`'s data, as the indexer wrote it.
fn json_of(spec: &InventorySpec) -> Vec<u8> {
    use std::io::Read;
    let gz =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &spec.data).unwrap();
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .read_to_end(&mut out)
        .unwrap();
    out
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

    /// Corrupt JSON with a matching digest (a forged shard) reaches the fact decoder: it decodes
    /// to facts that pass every check, or is refused naming the shard; never a panic.
    #[test]
    fn forged_shards_decode_or_are_refused_by_name(
        flips in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>()), 1..6),
        digest_matches in proptest::prelude::any::<bool>(),
    ) {
        let objects = cluster("bl45p", 1);
        let good = codec::encode("bl45p", &shard::by_namespace(objects.iter().map(Vec::as_slice))["bl45p"]).remove(0);
        let mut json = json_of(&good);
        for (at, byte) in &flips {
            let i = at % json.len();
            json[i] = *byte;
        }
        let digest = if digest_matches { shard::digest(&json) } else { good.digest.clone() };
        let forged = InventorySpec { data: history::b64(&history::gzip(&json)), digest, ..good.clone() };
        match codec::decode("bl45p.1-0", &forged) {
            Ok(facts) => proptest::prop_assert!(facts.len() as u64 == forged.revisions),
            Err(e) => proptest::prop_assert!(e.to_string().starts_with("inventory shard bl45p.1-0: "), "{}", e),
        }
    }
}

#[test]
fn a_shard_holds_at_most_max_facts_and_a_reader_builds_no_more_than_counted() {
    let template = cluster("bl45p", 1).remove(0).remove(0);
    let many: Vec<Vec<RevisionFact>> = (0..shard::MAX_FACTS + 500)
        .map(|i| {
            let mut f = template.clone();
            f.object = rollcache::model::ObjectRef::new(
                "ControllerRevision",
                "bl45p",
                format!("ioc-rev{i}"),
            );
            vec![f]
        })
        .collect();
    let grouped = shard::by_namespace(many.iter().map(Vec::as_slice));
    // Alike facts compress far below the byte budget: the count splits them.
    let specs = codec::encode("bl45p", &grouped["bl45p"]);
    assert!(specs.len() >= 2, "{}", specs.len());
    assert!(specs.iter().all(|s| s.revisions <= shard::MAX_FACTS));
    assert_eq!(flatten(&specs).len(), many.len());

    // A spec that claims more than the cap is refused before its data is read.
    let mut claims = specs[0].clone();
    claims.revisions = shard::MAX_FACTS + 1;
    assert!(matches!(refused(&claims), ShardError::TooManyFacts { .. }));
    // A spec that claims fewer facts than its data holds stops at the claim.
    let mut fewer = specs[0].clone();
    fewer.revisions = 3;
    let err = refused(&fewer);
    assert!(
        err.to_string()
            .contains("more facts than the 3 the spec counts"),
        "{err}"
    );
}

//! Inputs fuzzing found to crash, hang or misdecode, kept so that they stay fixed: every file
//! under `tests/fuzz-regressions/<target>/` is replayed through that cargo-fuzz target's checks,
//! and each finding has a test stating the behaviour that fixed it.

mod fuzz_checks;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::ControllerRevision;
use rollcache::credentials::{
    DOCKER_CONFIG_JSON_KEY, Keyring, SECRET_TYPE_DOCKER_CONFIG_JSON, SecretRef,
};
use rollcache::history::{ProblemKind, controller_revisions};

const REGRESSIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz-regressions");

/// Far above what any of these inputs takes once fixed, far below what they took before.
const BOUND: Duration = Duration::from_secs(10);

#[test]
fn saved_inputs_replay_cleanly() {
    let mut replayed = 0;
    for entry in std::fs::read_dir(REGRESSIONS).expect("tests/fuzz-regressions") {
        let dir = entry.expect("directory entry").path();
        let Some(target) = dir.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !dir.is_dir() {
            continue;
        }
        assert!(
            fuzz_checks::TARGETS.contains(&target),
            "{} is not named after a fuzz target",
            dir.display()
        );
        for input in std::fs::read_dir(&dir).expect("target directory") {
            let path = input.expect("directory entry").path();
            replay(target, &path);
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no saved inputs under {REGRESSIONS}");
}

fn replay(target: &str, path: &Path) {
    let data = std::fs::read(path).expect("saved input");
    let started = Instant::now();
    fuzz_checks::replay(target, &data);
    let took = started.elapsed();
    assert!(took < BOUND, "{} took {took:?}", path.display());
}

fn docker_config(auths: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    let auths: serde_json::Map<String, serde_json::Value> = auths
        .iter()
        .map(|(k, user)| ((*k).to_owned(), serde_json::json!({ "username": user })))
        .collect();
    let json = serde_json::json!({ "auths": auths }).to_string();
    BTreeMap::from([(DOCKER_CONFIG_JSON_KEY.to_owned(), json.into_bytes())])
}

fn keyring(auths: &[(&str, &str)]) -> Keyring {
    let mut k = Keyring::new();
    let secret = SecretRef {
        namespace: "ns".into(),
        name: "pull".into(),
    };
    k.add_secret(
        &secret,
        SECRET_TYPE_DOCKER_CONFIG_JSON,
        &docker_config(auths),
    )
    .expect("a valid pull secret");
    k
}

/// Finding: glob matching of pull secret keys backtracked over every `*`, exponential in their
/// number (`a*a*…a*b` against a long label never finished). Fixed in `credentials::glob_match`
/// by Go's chunk-wise `filepath.Match`.
#[test]
fn many_stars_in_a_pull_secret_key_match_in_linear_time() {
    let key = format!("{}b.example.com", "a*".repeat(40));
    let k = keyring(&[(&key, "globbed")]);
    let started = Instant::now();
    let host = "a".repeat(200);
    assert!(k.lookup_name(&format!("{host}.example.com/x")).is_empty());
    let hit = k.lookup_name(&format!("{host}b.example.com/x"));
    assert_eq!(hit.len(), 1);
    assert_eq!(hit[0].username, "globbed");
    assert!(started.elapsed() < BOUND, "took {:?}", started.elapsed());
}

/// Finding: one stack frame per `*`: a key of a million stars overflowed the stack and aborted
/// the process. Fixed twice: `glob_match` no longer recurses, and keys whose host is longer
/// than any registry host (253 + port) are skipped like other non-registry keys.
#[test]
fn a_pull_secret_key_of_a_million_stars_is_skipped() {
    let huge = format!("{}.example.com", "*".repeat(1 << 20));
    let k = keyring(&[(&huge, "huge"), ("*.example.com", "wildcard")]);
    let hit = k.lookup_name("a.example.com/x");
    assert_eq!(hit.len(), 1);
    assert_eq!(hit[0].username, "wildcard");
    // A glob host at the length limit still works.
    let long = format!("{}.example.com", "*".repeat(240));
    let k = keyring(&[(&long, "long")]);
    assert_eq!(k.lookup_name("a.example.com/x").len(), 1);
}

/// Finding: a ControllerRevision whose controller owner reference has no name (the API server
/// rejects it, a file or an export does not) decoded into a fact for a nameless workload. Fixed
/// in `controller_revisions::decode`: reported with the revision's identity and skipped.
#[test]
fn controller_revision_with_a_nameless_owner_is_reported_and_skipped() {
    let data = std::fs::read(format!(
        "{REGRESSIONS}/controller_revision/owner-without-name.json"
    ))
    .expect("saved input");
    let cr: ControllerRevision = serde_json::from_slice(&data[1..]).expect("a ControllerRevision");
    let decoded = controller_revisions::decode(&cr);
    assert!(decoded.facts.is_empty());
    assert_eq!(decoded.problems.len(), 1, "{:?}", decoded.problems);
    let p = &decoded.problems[0];
    assert_eq!(p.kind, ProblemKind::InvalidField);
    assert_eq!(
        p.object,
        rollcache::history::meta::object_ref("ControllerRevision", &cr.metadata)
    );
    assert!(p.object.name.starts_with("bl45p-mo-ioc-01"), "{p}");
    assert!(p.message.contains("owner reference"), "{p}");
}

/// The same finding through the file source for ReplicaSets and Pods, whose workload is their
/// controller or themselves: a nameless one is reported with the file's document and skipped.
/// Fixed in `meta::owning_workload`, which both decoders use.
#[test]
fn replicasets_and_pods_without_a_workload_name_are_reported_and_skipped() {
    let text = "\
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: web-6d4cf56db6
  namespace: shop
  ownerReferences: [{apiVersion: apps/v1, kind: Deployment, name: '', uid: u, controller: true}]
spec: {template: {spec: {containers: [{name: web, image: 'nginx:1.27'}]}}}
---
apiVersion: v1
kind: Pod
metadata: {namespace: shop}
spec: {containers: [{name: web, image: 'nginx:1.27'}]}
---
apiVersion: v1
kind: Pod
metadata: {name: ok, namespace: shop}
spec: {containers: [{name: web, image: 'nginx:1.27'}]}
";
    let snap = fuzz_checks::files_yaml(text);
    let facts: Vec<_> = snap.facts().map(|f| f.workload.to_string()).collect();
    assert_eq!(facts, ["Pod/shop/ok"], "only the named pod is decoded");
    let problems: Vec<_> = snap.all_problems().collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert_eq!(
        problems[0].object.to_string(),
        "ReplicaSet shop/web-6d4cf56db6"
    );
    assert!(
        problems[0].message.contains("owner reference"),
        "{}",
        problems[0]
    );
    assert_eq!(problems[1].object.kind, "Pod");
    assert_eq!(problems[1].kind, ProblemKind::InvalidField);
}

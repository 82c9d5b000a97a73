//! Inputs fuzzing found to crash, hang or misdecode, kept so that they stay fixed: every file
//! under `tests/fuzz-regressions/<target>/` is replayed through that cargo-fuzz target's checks,
//! and each finding has a test stating the behaviour that fixed it.

mod fuzz_checks;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rollcache::credentials::{
    DOCKER_CONFIG_JSON_KEY, Keyring, SECRET_TYPE_DOCKER_CONFIG_JSON, SecretRef,
};

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

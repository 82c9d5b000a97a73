//! The workspace's layout rules, held by the build: the core stays pure, the test bed never ships,
//! every module says what it owns, and no source file grows past what one reader takes in.

use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn sources() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in ["src", "core/src", "testbed/src"] {
        rust_files(&root().join(dir), &mut out);
    }
    assert!(out.len() > 40, "{out:?}");
    out
}

/// The crate names in one `[section]` of a Cargo.toml.
fn dependencies(manifest: &str, section: &str) -> Vec<String> {
    let text = std::fs::read_to_string(root().join(manifest)).unwrap();
    text.split("\n[")
        .filter(|s| s.starts_with(&format!("{section}]")))
        .flat_map(|s| s.lines().skip(1))
        .filter_map(|l| l.split_once('=').map(|(name, _)| name.trim().to_owned()))
        .filter(|name| !name.is_empty() && !name.starts_with('#'))
        .collect()
}

#[test]
fn the_core_has_no_io_dependencies() {
    let deps = dependencies("core/Cargo.toml", "dependencies");
    assert!(deps.contains(&"serde".to_owned()), "{deps:?}");
    for io in [
        "tokio",
        "kube",
        "k8s-openapi",
        "tonic",
        "containerd-client",
        "notify",
        "hyper",
        "axum",
        "rollcache",
    ] {
        assert!(!deps.iter().any(|d| d == io), "core depends on {io}");
    }
}

#[test]
fn the_test_bed_is_a_dev_dependency_only() {
    let deps = dependencies("Cargo.toml", "dependencies");
    assert!(deps.contains(&"rollcache-core".to_owned()), "{deps:?}");
    assert!(!deps.iter().any(|d| d == "rollcache-testbed"), "{deps:?}");
    let dev = dependencies("Cargo.toml", "dev-dependencies");
    assert!(dev.contains(&"rollcache-testbed".to_owned()), "{dev:?}");
}

#[test]
fn every_module_opens_with_what_it_owns() {
    let unsaid: Vec<String> = sources()
        .into_iter()
        .filter(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            // Unit tests beside their module (`mod tests;`) say it with their file name.
            let first = text.lines().next().unwrap_or_default();
            !first.starts_with("//! ") && !p.ends_with("tests.rs")
        })
        .map(|p| p.strip_prefix(root()).unwrap().display().to_string())
        .collect();
    assert!(
        unsaid.is_empty(),
        "modules without a `//!` line: {unsaid:?}"
    );
}

#[test]
fn no_source_file_is_longer_than_one_reader_takes_in() {
    const MAX_LINES: usize = 560;
    let long: Vec<String> = sources()
        .into_iter()
        .filter_map(|p| {
            let n = std::fs::read_to_string(&p).unwrap().lines().count();
            (n > MAX_LINES).then(|| format!("{} ({n})", p.strip_prefix(root()).unwrap().display()))
        })
        .collect();
    assert!(long.is_empty(), "over {MAX_LINES} lines: {long:?}");
}

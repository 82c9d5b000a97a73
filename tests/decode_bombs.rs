//! Decompression and parser bombs in Helm release Secrets (safety rule 9): each is refused with
//! the right problem kind naming the object, the good objects beside it still decode, and
//! `rollcache plan --from` on a directory of them stays far below the agent's memory limit.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use rollcache::history::{files, helm};
use rollcache_testbed::bombs::{self, Bomb};

/// The DaemonSet's memory limit.
const LIMIT_BYTES: u64 = 128 * 1024 * 1024;

/// Built once per test binary: compressing 170 MB of bombs takes a few seconds.
fn all() -> &'static [Bomb] {
    static BOMBS: OnceLock<Vec<Bomb>> = OnceLock::new();
    BOMBS.get_or_init(bombs::all)
}

#[test]
fn each_bomb_is_refused_naming_the_release() {
    for b in all() {
        let stored = b.helm_text().len();
        assert!(
            stored < 1 << 20,
            "{}: the bomb fits in a Secret ({stored} bytes)",
            b.name
        );
        match b.expect {
            // The ~100 KB Secret that inflates to 60 MB.
            "too_large" => assert!(b.json_bytes > 50_000_000 && stored < 150_000),
            // The largest that passes the byte cap (billion laughs needs no size).
            _ if b.name != "laughs" => assert!(
                b.json_bytes <= helm::MAX_RELEASE_BYTES as usize
                    && b.json_bytes > helm::MAX_RELEASE_BYTES as usize - (1 << 20),
                "{}: {} bytes",
                b.name,
                b.json_bytes
            ),
            _ => {}
        }
        let s: Secret = serde_json::from_value(b.secret("tenant-b")).expect("a Secret");
        let started = Instant::now();
        let d = helm::decode_secret(&s);
        let took = started.elapsed();
        assert!(d.facts.is_empty(), "{}: {:?}", b.name, d.facts);
        assert_eq!(d.problems.len(), 1, "{}: {:?}", b.name, d.problems);
        let p = &d.problems[0];
        assert_eq!(p.kind.metric_label(), b.expect, "{}: {p}", b.name);
        assert_eq!(p.object.kind, "Secret");
        assert_eq!(p.object.namespace, "tenant-b");
        assert_eq!(p.object.name, format!("sh.helm.release.v1.{}.v1", b.name));
        let limit = if cfg!(debug_assertions) { 30 } else { 3 };
        assert!(
            took < Duration::from_secs(limit),
            "{}: took {took:?}",
            b.name
        );
    }
}

/// CONTROL: the same shapes, small enough to be honest, decode; so the budgets, not the shapes,
/// are what refuse the bombs.
#[test]
fn small_releases_of_the_same_shapes_still_decode() {
    let small = [
        bombs::flow_sequences(30_000),
        bombs::deep_nesting(100),
        format!(
            "{}---\nkind: Deployment\nmetadata: {{name: w}}\nspec: {{template: {{spec: {{containers: [{{name: c, image: r.example/w:1}}]}}}}}}\n",
            bombs::many_workloads(20_000)
        ),
    ];
    for (i, manifest) in small.iter().enumerate() {
        let json = bombs::release_with_manifest("ok", manifest);
        let text = rollcache_testbed::history::b64(&bombs::gzip(&json));
        let s: Secret =
            serde_json::from_value(bombs::release_secret("tenant-b", "ok", &text)).unwrap();
        let d = helm::decode_secret(&s);
        assert!(d.problems.is_empty(), "shape {i}: {:?}", d.problems);
        if i == 2 {
            assert!(d.facts.len() > 100, "{}", d.facts.len());
            assert!(d.facts.iter().all(|f| f.workload.namespace == "tenant-b"));
        }
    }
}

/// Bombs beside the exported fixture history: the fixture's facts are all still there. (The
/// cheap ones: the child-process test below runs every bomb beside the same history.)
#[test]
fn bombs_in_a_directory_are_skipped_and_the_history_beside_them_is_read() {
    let some = ["flow-60mb", "laughs", "many-hooks", "deep"];
    let dir = bomb_dir(&some);
    let clean = files::load_dir(Path::new("tests/fixtures/history"));
    let snap = files::load_dir(dir.path());
    assert_eq!(
        snap.facts().count(),
        clean.facts().count(),
        "every good fact is still decoded"
    );
    for b in all().iter().filter(|b| some.contains(&b.name)) {
        let name = format!("sh.helm.release.v1.{}.v1", b.name);
        let found: Vec<_> = snap
            .all_problems()
            .filter(|p| p.object.name == name)
            .collect();
        assert_eq!(found.len(), 1, "{name}: {found:?}");
        assert_eq!(found[0].kind.metric_label(), b.expect);
        assert_eq!(found[0].object.namespace, "tenant-b");
    }
}

/// `rollcache plan --from` on the bombs and the fixture history, as a child process: it names
/// every bomb in its output, plans the good history, and its peak RSS stays far below 128 MiB.
#[test]
fn plan_on_the_bomb_directory_stays_far_below_the_memory_limit() {
    let dir = bomb_dir(&[]);
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rollcache"))
        .args(["plan", "--from"])
        .arg(dir.path())
        .args(["--node", "bl45p-ws001", "--output", "json"])
        .env_remove("KUBECONFIG")
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rollcache plan");
    let pid = child.id();
    // VmHWM only grows; the last reading before exit is the peak up to a millisecond or so, and
    // the decode (the peak) is long over by then.
    let mut peak = 0;
    let output = loop {
        if let Some(kib) = vm_hwm_kib(pid) {
            peak = peak.max(kib * 1024);
        }
        if child.try_wait().expect("wait").is_some() {
            break child.wait_with_output().expect("output");
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON plan");
    let problems = plan["problems"].to_string();
    for b in all() {
        assert!(
            problems.contains(&format!("tenant-b/sh.helm.release.v1.{}.v1", b.name)),
            "{}: {problems}",
            b.name
        );
    }
    assert!(
        plan["revisions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["key"]["workload"]["name"] == "bl45p-mo-ioc-01"),
        "the good history is planned"
    );
    assert!(peak > 0, "VmHWM was read");
    // Three quarters of the limit: the daemon holds its history beside a decode.
    assert!(
        peak < LIMIT_BYTES / 4 * 3,
        "peak RSS {} MiB (limit {} MiB), took {:?}",
        peak >> 20,
        LIMIT_BYTES >> 20,
        started.elapsed()
    );
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The fixture history plus one JSON file per bomb named in `only` (every bomb when empty).
fn bomb_dir(only: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_dir(
        Path::new("tests/fixtures/history"),
        &dir.path().join("history"),
    );
    let bombs_dir = dir.path().join("bombs");
    std::fs::create_dir(&bombs_dir).unwrap();
    for b in all()
        .iter()
        .filter(|b| only.is_empty() || only.contains(&b.name))
    {
        std::fs::write(
            bombs_dir.join(format!("{}.json", b.name)),
            b.secret("tenant-b").to_string(),
        )
        .unwrap();
    }
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

//! The binary's way to its cluster, as kubectl's: `--kubeconfig`, `--context` (and
//! `ROLLCACHE_CONTEXT`) choose the API server; an unreachable, silent or refusing one ends a
//! one-shot command within seconds in one line; the daemon retries quietly; `run --from DIR`
//! without a cluster says in one line what to add.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rollcache_testbed::apiserver::{ApiServer, Fault};
use serde_json::json;

/// A kubeconfig with one context per `(name, server)`, the first current.
fn kubeconfig(dir: &Path, servers: &[(&str, &str)]) -> PathBuf {
    let mut text = String::from("apiVersion: v1\nkind: Config\nclusters:\n");
    for (name, server) in servers {
        text.push_str(&format!(
            "- name: {name}\n  cluster:\n    server: {server}\n"
        ));
    }
    text.push_str("users:\n- name: u\n  user: {}\ncontexts:\n");
    for (name, _) in servers {
        text.push_str(&format!(
            "- name: {name}\n  context:\n    cluster: {name}\n    user: u\n"
        ));
    }
    text.push_str(&format!("current-context: {}\n", servers[0].0));
    let path = dir.join("kubeconfig");
    std::fs::write(&path, text).unwrap();
    path
}

/// The binary with no cluster found by accident: no KUBECONFIG, an empty home, not in a pod.
fn rollcache(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rollcache"));
    cmd.env_remove("KUBECONFIG")
        .env_remove("ROLLCACHE_CONTEXT")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("RUST_LOG")
        .env("HOME", home)
        .stdin(Stdio::null());
    cmd
}

/// Runs `cmd` off the async runtime (the API servers answer on it), timing it.
async fn output(mut cmd: Command) -> (Output, Duration) {
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let out = cmd.output().unwrap();
        (out, started.elapsed())
    })
    .await
    .unwrap()
}

fn workload_names(plan: &serde_json::Value) -> Vec<String> {
    plan["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"]["workload"]["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn cluster_with(workload: &str) -> ApiServer {
    let api = ApiServer::start().await.unwrap();
    api.apply(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": format!("{workload}-1"), "namespace": "apps",
            "annotations": {"deployment.kubernetes.io/revision": "1"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                "name": workload, "uid": workload, "controller": true}]},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": workload}},
            "template": {"metadata": {"labels": {"app": workload}},
                "spec": {"containers": [{"name": "c",
                    "image": format!("registry.example/{workload}:1")}]}}},
    }))
    .unwrap();
    api
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_and_kubeconfig_choose_the_cluster_the_plan_reads() {
    let (a, b) = (cluster_with("alpha").await, cluster_with("beta").await);
    let home = tempfile::tempdir().unwrap();
    let config = kubeconfig(home.path(), &[("a", &a.url()), ("b", &b.url())]);
    let plan = |context: Option<(&str, &str)>| {
        let mut cmd = rollcache(home.path());
        cmd.args(["plan", "-o", "json", "--kubeconfig"])
            .arg(&config);
        match context {
            Some(("flag", name)) => {
                cmd.args(["--context", name]);
            }
            Some((_, name)) => {
                cmd.env("ROLLCACHE_CONTEXT", name);
            }
            None => {}
        }
        async move {
            let (out, _) = output(cmd).await;
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(out.status.success(), "{err}");
            workload_names(&serde_json::from_slice(&out.stdout).unwrap())
        }
    };
    assert_eq!(plan(None).await, ["alpha"], "the current context");
    assert_eq!(plan(Some(("flag", "b"))).await, ["beta"]);
    assert_eq!(plan(Some(("env", "b"))).await, ["beta"]);
    assert_eq!(plan(Some(("flag", "a"))).await, ["alpha"]);

    // KUBECONFIG is honoured too, and --context applies to it.
    let mut cmd = rollcache(home.path());
    cmd.args(["plan", "-o", "json", "--context", "b"])
        .env("KUBECONFIG", &config);
    let (out, _) = output(cmd).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names = workload_names(&serde_json::from_slice(&out.stdout).unwrap());
    assert_eq!(names, ["beta"]);

    // A context the kubeconfig lacks is one line naming the file.
    let mut cmd = rollcache(home.path());
    cmd.args(["plan", "--context", "nowhere", "--kubeconfig"])
        .arg(&config);
    let (out, _) = output(cmd).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&config.display().to_string()) && err.contains("nowhere"),
        "{err}"
    );
}

/// A free loopback port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn assert_one_clear_line(out: &Output, elapsed: Duration, url: &str, cause: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "error: cannot reach the Kubernetes API at {url}: {cause}"
        )),
        "{err}"
    );
    assert!(
        err.contains("--kubeconfig/--context") && err.contains("--from DIR"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_against_an_unreachable_api_fails_at_once_in_one_line() {
    let home = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}", closed_port());
    let config = kubeconfig(home.path(), &[("gone", &url)]);
    let mut cmd = rollcache(home.path());
    cmd.args(["plan", "--node", "n1"])
        .env("KUBECONFIG", &config);
    let (out, elapsed) = output(cmd).await;
    assert_one_clear_line(&out, elapsed, &url, "connection refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_against_a_silent_or_refusing_api_fails_in_one_line() {
    let api = cluster_with("alpha").await;
    let home = tempfile::tempdir().unwrap();
    let config = kubeconfig(home.path(), &[("t", &api.url())]);
    let url = api.url().trim_end_matches('/').to_owned();

    api.set_fault(Some(Fault::Hang));
    let mut cmd = rollcache(home.path());
    cmd.args(["plan", "--kubeconfig"]).arg(&config);
    let (out, elapsed) = output(cmd).await;
    assert_one_clear_line(&out, elapsed, &url, "no answer within 5s");

    api.set_fault(Some(Fault::Status(401)));
    let mut cmd = rollcache(home.path());
    cmd.args(["plan", "--kubeconfig"]).arg(&config);
    let (out, elapsed) = output(cmd).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && elapsed < Duration::from_secs(10));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "the Kubernetes API at {url} refused the credentials"
        )),
        "{err}"
    );

    // An API that answers every request with an error: no source lists, the plan gives up in
    // seconds saying why, each cause once.
    api.set_fault(Some(Fault::Status(503)));
    let mut cmd = rollcache(home.path());
    cmd.args(["plan", "--kubeconfig"]).arg(&config);
    let (out, elapsed) = output(cmd).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && elapsed < Duration::from_secs(15),
        "{elapsed:?} {err}"
    );
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: the Kubernetes API answers, but no history source could list"),
        "{err}"
    );
    assert!(last.contains("503"), "{err}");
    assert!(err.lines().count() <= 8, "{err}");

    // RBAC refusing Nodes is an answer: the plan goes on (the node is then unknown).
    api.set_fault(None);
    api.set_resource_fault("nodes", Some(Fault::Status(403)));
    let mut cmd = rollcache(home.path());
    cmd.args(["plan", "-o", "json", "--kubeconfig"])
        .arg(&config);
    let (out, _) = output(cmd).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names = workload_names(&serde_json::from_slice(&out.stdout).unwrap());
    assert_eq!(names, ["alpha"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_any_cluster_plan_and_run_say_what_to_add_in_one_line() {
    let home = tempfile::tempdir().unwrap();
    let history = home.path().join("history");
    std::fs::create_dir(&history).unwrap();

    let mut cmd = rollcache(home.path());
    cmd.args(["plan"]);
    let (out, elapsed) = output(cmd).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && elapsed < Duration::from_secs(10));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: no Kubernetes API configured"),
        "{err}"
    );
    assert!(err.contains("--from DIR"), "{err}");

    // `run --from DIR` reads the cluster too unless told not to: it says so before waiting for
    // containerd, in one line, instead of repeating kube's three causes.
    let mut cmd = rollcache(home.path());
    cmd.args(["run", "--socket", "/nonexistent/containerd.sock", "--from"])
        .arg(&history)
        .args([
            "--metrics-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.2:0",
        ]);
    let (out, elapsed) = output(cmd).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && elapsed < Duration::from_secs(10),
        "{err}"
    );
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: no Kubernetes API configured")
            && last.contains(&format!(
                "add --no-kubernetes to run from {} alone",
                history.display()
            )),
        "{err}"
    );
    assert!(last.len() < 300, "{last}");
    assert_eq!(
        err.matches("no Kubernetes API configured").count(),
        1,
        "{err}"
    );
}

/// Reads the daemon's stderr for `d`, then stops it (SIGTERM) and returns what it said.
async fn daemon_log(mut cmd: Command, d: Duration) -> String {
    tokio::task::spawn_blocking(move || {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(d);
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_retries_quietly_one_line_per_change_of_state() {
    let home = tempfile::tempdir().unwrap();
    let history = home.path().join("history");
    std::fs::create_dir(&history).unwrap();

    // No containerd, from a directory alone: it runs, and says once what is missing.
    let mut cmd = rollcache(home.path());
    cmd.args([
        "run",
        "--no-kubernetes",
        "--socket",
        "/nonexistent/containerd.sock",
    ])
    .arg("--from")
    .arg(&history)
    .args([
        "--metrics-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.2:0",
    ]);
    let log = daemon_log(cmd, Duration::from_secs(4)).await;
    let said = log.matches("container runtime not reachable").count();
    assert_eq!(said, 1, "{log}");
    assert!(log.contains("/nonexistent/containerd.sock"), "{log}");

    // An unreachable API (the sources start once containerd answers): each watch says it failed
    // once, not once per retry.
    let containerd = rollcache_testbed::containerd::Containerd::start_from_env()
        .await
        .expect("containerd for the test (ROLLCACHE_TEST_CONTAINERD)");
    let url = format!("http://127.0.0.1:{}", closed_port());
    let config = kubeconfig(home.path(), &[("gone", &url)]);
    let mut cmd = rollcache(home.path());
    cmd.args(["run", "--node", "n1", "--socket"])
        .arg(containerd.socket())
        .arg("--kubeconfig")
        .arg(&config)
        .args([
            "--metrics-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.2:0",
        ]);
    let log = daemon_log(cmd, Duration::from_secs(8)).await;
    let failed = log.lines().filter(|l| l.contains("watch failed")).count();
    // Five history sources and the Node watch.
    assert!((1..=6).contains(&failed), "{failed} lines: {log}");
    assert!(log.lines().count() < 20, "{log}");
    assert!(log.lines().all(|l| !l.contains("ERROR")), "{log}");
    // Once, the server and the root cause.
    let named = format!("cannot reach the Kubernetes API at {url}: connection refused");
    assert_eq!(log.matches(&named).count(), 1, "{log}");
}

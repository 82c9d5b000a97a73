//! `rollcache run` in-process for end-to-end tests: a config file in a temp dir (so that tests can
//! rewrite it), the in-test API server's client injected, listeners on free loopback ports, and
//! helpers to read `/status` and `/metrics`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rollcache::client::{ClientError, request};
use rollcache::commands::run::{BoundAddrs, RunOptions, run_with};
use rollcache::config::ConfigArgs;
use rollcache_testbed::apiserver::ApiServer;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Logs of the daemon under test go to the test's output (`RUST_LOG` filters; default warn).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Config settings of a test daemon: fast (no jitter, short grace and backoff), no disk budget
/// (the machine's own disk usage must not hold pulls back), listeners on free loopback ports.
pub fn base_settings(socket: &Path, node: Option<&str>) -> BTreeMap<String, String> {
    let mut s = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        s.insert(k.to_string(), v);
    };
    set("containerd_socket", format!("\"{}\"", socket.display()));
    // Port 0 on both: two addresses that differ only by host (the config rejects equal ones).
    set("metrics_addr", "\"127.0.0.1:0\"".into());
    set("admin_addr", "\"127.0.0.2:0\"".into());
    set("start_jitter", "0s".into());
    set("unpin_grace", "2s".into());
    set("backoff_initial", "300ms".into());
    set("backoff_max", "1s".into());
    set("resync_interval", "30s".into());
    set("pull_timeout", "60s".into());
    set("disk_budget_percent", "100".into());
    set("use_pull_secrets", "false".into());
    set("max_concurrent_pulls", "2".into());
    if let Some(n) = node {
        set("node_name", n.to_string());
    }
    s
}

pub fn yaml(settings: &BTreeMap<String, String>) -> String {
    settings
        .iter()
        .map(|(k, v)| format!("{k}: {v}\n"))
        .collect()
}

/// A daemon running in this process until `stop` (or drop, which cancels it).
pub struct TestDaemon {
    pub addrs: BoundAddrs,
    pub config_path: PathBuf,
    pub settings: BTreeMap<String, String>,
    cancel: CancellationToken,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl TestDaemon {
    /// Starts with `settings` (see `base_settings`) against `api`.
    pub async fn start(api: &ApiServer, settings: BTreeMap<String, String>) -> Self {
        let client = api.client().expect("kube client for the test API server");
        Self::start_with(Some(client), settings).await
    }

    /// Starts with `settings` and no Kubernetes client: for a directory source alone
    /// (`kubernetes: false`, `from_dir`).
    pub async fn start_without_api(settings: BTreeMap<String, String>) -> Self {
        Self::start_with(None, settings).await
    }

    async fn start_with(client: Option<kube::Client>, settings: BTreeMap<String, String>) -> Self {
        init_tracing();
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("config.yaml");
        std::fs::write(&config_path, yaml(&settings)).expect("write config");
        let args = ConfigArgs {
            config: Some(config_path.clone()),
            ..Default::default()
        };
        let (tx, rx) = oneshot::channel();
        let opts = RunOptions {
            kube_client: client,
            bound: Some(tx),
        };
        let cancel = CancellationToken::new();
        let handle = tokio::spawn(run_with(args, opts, cancel.clone()));
        let addrs = match tokio::time::timeout(Duration::from_secs(10), rx).await {
            Ok(Ok(a)) => a,
            _ => {
                cancel.cancel();
                let r = handle.await;
                panic!("the daemon did not bind its listeners: {r:?}");
            }
        };
        Self {
            addrs,
            config_path,
            settings,
            cancel,
            handle: Some(handle),
            _dir: dir,
        }
    }

    /// Rewrites the config file with `settings` (hot reload picks it up).
    pub fn rewrite_config(&mut self, settings: BTreeMap<String, String>) {
        // Write-and-rename, as a ConfigMap update replaces the file rather than editing it.
        let tmp = self.config_path.with_extension("tmp");
        std::fs::write(&tmp, yaml(&settings)).expect("write config");
        std::fs::rename(&tmp, &self.config_path).expect("replace config");
        self.settings = settings;
    }

    /// Cancels (as SIGTERM does) and waits; returns how long stopping took. The daemon must
    /// stop cleanly.
    pub async fn stop(mut self) -> Duration {
        let started = Instant::now();
        self.cancel.cancel();
        let handle = self.handle.take().expect("running");
        let r = tokio::time::timeout(Duration::from_secs(15), handle)
            .await
            .expect("the daemon stops within 15 s of cancel")
            .expect("the daemon task does not panic");
        r.expect("the daemon stops without error");
        started.elapsed()
    }

    pub async fn status(&self) -> Value {
        get_json(self.addrs.admin, "/status").await
    }

    /// `/metrics` once `name` reads `want` (or after 5 s, for the caller's assertion to report):
    /// a pull's completion is counted when its reply is collected, which may come a moment after
    /// containerd's image event already let the loop pin the image.
    pub async fn metrics_when(&self, name: &str, want: f64) -> String {
        let mut m = self.metrics().await;
        for _ in 0..50 {
            if metric(&m, name) == Some(want) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            m = self.metrics().await;
        }
        m
    }

    pub async fn metrics(&self) -> String {
        request(
            self.addrs.metrics,
            hyper::Method::GET,
            "/metrics",
            None,
            "metrics",
            HTTP_TIMEOUT,
        )
        .await
        .expect("GET /metrics")
    }

    /// Polls `/status` until `pred` holds; panics with the last status after `within`.
    pub async fn wait_status(
        &self,
        within: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        loop {
            let s = self.status().await;
            if pred(&s) {
                return s;
            }
            assert!(
                start.elapsed() < within,
                "timed out after {within:?} waiting for: {what}\nlast status: {s:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// POST /prefetch on the admin listener: (HTTP status, body).
    pub async fn prefetch(&self, body: &str) -> (u16, String) {
        match request(
            self.addrs.admin,
            hyper::Method::POST,
            "/prefetch",
            Some(body.to_string()),
            "prefetch",
            HTTP_TIMEOUT,
        )
        .await
        {
            Ok(b) => (202, b),
            Err(ClientError::Status { status, body }) => (status, body),
            Err(e) => panic!("POST /prefetch: {e}"),
        }
    }

    /// GET a path on the metrics listener: (HTTP status, body).
    pub async fn get(&self, path: &str) -> (u16, String) {
        match request(
            self.addrs.metrics,
            hyper::Method::GET,
            path,
            None,
            "get",
            HTTP_TIMEOUT,
        )
        .await
        {
            Ok(b) => (200, b),
            Err(ClientError::Status { status, body }) => (status, body),
            Err(e) => panic!("GET {path}: {e}"),
        }
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

pub async fn get_json(addr: SocketAddr, path: &str) -> Value {
    let body = request(addr, hyper::Method::GET, path, None, "status", HTTP_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
}

/// The value of one sample in OpenMetrics text, by its name with labels as printed
/// (`rollcache_revisions{readiness="offline_safe"}`); None when absent.
pub fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(sample)?;
        let value = rest.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// One revision of one workload in a `/status` report.
pub fn revision<'a>(
    status: &'a Value,
    kind: &str,
    namespace: &str,
    name: &str,
    number: i64,
) -> Option<&'a Value> {
    status["workloads"]
        .as_array()?
        .iter()
        .find(|w| w["kind"] == kind && w["namespace"] == namespace && w["name"] == name)?["revisions"]
        .as_array()?
        .iter()
        .find(|r| r["revision"] == number)
}

/// The readiness of a revision (`offline_safe`, `failed`, ...), if reported.
pub fn readiness(status: &Value, kind: &str, ns: &str, name: &str, number: i64) -> Option<String> {
    revision(status, kind, ns, name, number)?["readiness"]
        .as_str()
        .map(str::to_string)
}

/// Polls `f` every 20 ms until it returns true; returns the time it took.
pub async fn wait_until<F, Fut>(within: Duration, what: &str, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

/// How long a test waits for rollcache to pin an image.
pub const PIN_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

pub async fn api() -> rollcache_testbed::apiserver::ApiServer {
    rollcache_testbed::apiserver::ApiServer::start()
        .await
        .expect("test API server starts")
}

pub async fn cri_image(
    node: &rollcache::node::Node,
    reference: &str,
) -> Option<rollcache::node::ImageInfo> {
    rollcache::node::ImageRuntime::list(node)
        .await
        .expect("CRI list")
        .into_iter()
        .find(|i| i.repo_tags.iter().any(|t| t == reference))
}

/// Pinned by rollcache (not by someone else) right now.
pub async fn pinned_by_us(node: &rollcache::node::Node, reference: &str) -> bool {
    cri_image(node, reference)
        .await
        .is_some_and(|i| i.pinned && i.pin_owner == rollcache::node::PinOwner::Rollcache)
}

/// Still pinned by rollcache after `hold`, checked along the way.
pub async fn stays_pinned(
    node: &rollcache::node::Node,
    references: &[&str],
    hold: Duration,
    why: &str,
) {
    let until = Instant::now() + hold;
    while Instant::now() < until {
        for r in references {
            assert!(pinned_by_us(node, r).await, "{r} unpinned: {why}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Unpinned within `within`, and never deleted: how long it took.
pub async fn unpinned_not_deleted(
    node: &rollcache::node::Node,
    reference: &str,
    within: Duration,
) -> Duration {
    let took = wait_until(within, "the image is unpinned", || async {
        cri_image(node, reference).await.is_some_and(|i| !i.pinned)
    })
    .await;
    assert!(cri_image(node, reference).await.is_some(), "never deleted");
    took
}

pub async fn wait_pinned_by_us(
    node: &rollcache::node::Node,
    reference: &str,
) -> rollcache::node::ImageInfo {
    let start = Instant::now();
    loop {
        if let Some(i) = cri_image(node, reference).await
            && i.pinned
            && i.pin_owner == rollcache::node::PinOwner::Rollcache
        {
            return i;
        }
        assert!(
            start.elapsed() < PIN_WAIT,
            "{reference} not pulled and pinned within {PIN_WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `/status` lists at least one source, and every source has synced and is not in error.
pub fn sources_fresh(s: &serde_json::Value) -> bool {
    s["sources"].as_array().is_some_and(|a| {
        !a.is_empty()
            && a.iter()
                .all(|x| x["synced"] == true && x.get("error").is_none())
    })
}

//! What every benchmark shares: fresh containerds wired to one registry, a fast pusher of tiny
//! images, the reconcile daemon started in-process on a given runtime, and a runtime wrapper that
//! timestamps the daemon's calls.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use rollcache::config::Config;
use rollcache::history::store::HistoryStore;
use rollcache::history::watch::spawn_watchers;
use rollcache::http::StatusDoc;
use rollcache::node::{
    Deadlines, FsInfo, ImageInfo, ImageRuntime, Node, NodeError, PinOutcome, PullOutcome,
    RegistryAuth, UnpinOutcome,
};
use rollcache::reconcile::daemon::Daemon;
use rollcache_testbed::containerd::Containerd;
use rollcache_testbed::deps::ContainerdVersion;
use rollcache_testbed::registry::Registry;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub fn deadlines() -> Deadlines {
    Deadlines {
        call: Duration::from_secs(60),
        pull: Duration::from_secs(900),
    }
}

/// A fresh containerd that reaches `registry`, and a `Node` on it.
pub async fn fresh_containerd(
    version: ContainerdVersion,
    registry: &Registry,
) -> anyhow::Result<(Containerd, Node)> {
    let ctd = Containerd::start(version).await?;
    registry.write_hosts_toml(&ctd.hosts_dir())?;
    let node = Node::connect(ctd.socket(), deadlines());
    Ok((ctd, node))
}

/// Pulls `refs` by direct CRI PullImage calls, `in_flight` at a time.
pub async fn pull_all(node: &Node, refs: &[String], in_flight: usize) -> anyhow::Result<()> {
    futures::stream::iter(refs.iter())
        .map(|r| async move {
            node.cri()
                .pull(r, None)
                .await
                .with_context(|| format!("pulling {r}"))
        })
        .buffer_unordered(in_flight.max(1))
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// Waits until CRI lists every one of `refs` as present and pinned; polls every `every`.
pub async fn wait_pinned(
    node: &Node,
    refs: &[String],
    every: Duration,
    within: Duration,
) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let images = node.cri().list().await?;
        let pinned = refs
            .iter()
            .filter(|r| images.iter().any(|i| i.pinned && i.repo_tags.contains(r)))
            .count();
        if pinned == refs.len() {
            return Ok(());
        }
        anyhow::ensure!(
            start.elapsed() < within,
            "only {pinned} of {} images pinned after {within:?}",
            refs.len()
        );
        tokio::time::sleep(every).await;
    }
}

/// The daemon's reconcile loop and kube watchers, in-process, as `rollcache run` wires them
/// (without the HTTP listeners and config-file reload, which play no part in these figures).
pub struct RunningDaemon {
    pub store: Arc<HistoryStore>,
    pub status: watch::Receiver<StatusDoc>,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
    daemon: Option<tokio::task::JoinHandle<()>>,
    _config: watch::Sender<Arc<Config>>,
    _prefetch: mpsc::Sender<rollcache::http::PrefetchCommand>,
}

impl RunningDaemon {
    pub fn start(client: &kube::Client, runtime: Arc<dyn ImageRuntime>, cfg: Config) -> Self {
        let store = HistoryStore::new();
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        spawn_watchers(
            client,
            &rollcache::history::sources::watch_config(&cfg),
            &store,
            &cancel,
            &mut tasks,
        );
        let (config_tx, config_rx) = watch::channel(Arc::new(cfg));
        let (status_tx, status_rx) = watch::channel(StatusDoc::from_json(br#"{"starting":true}"#));
        let (prefetch_tx, prefetch_rx) = mpsc::channel(1);
        let daemon = Daemon::new(runtime, store.clone(), config_rx)
            .with_status(status_tx)
            .with_prefetch(prefetch_rx);
        let handle = tokio::spawn(daemon.run(cancel.clone()));
        Self {
            store,
            status: status_rx,
            cancel,
            tasks,
            daemon: Some(handle),
            _config: config_tx,
            _prefetch: prefetch_tx,
        }
    }

    /// Waits until every source has listed.
    pub async fn wait_synced(&self, within: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        loop {
            let snap = self.store.snapshot();
            if !snap.sources.is_empty() && snap.all_sources_fresh() {
                return Ok(start.elapsed());
            }
            anyhow::ensure!(
                start.elapsed() < within,
                "sources not synced after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(d) = self.daemon.take() {
            let _ = d.await;
        }
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// The daemon's configuration for benchmarks: start jitter off, no pull secrets, disk budget off
/// (100 %). The benchmark's containerds keep their images on the machine's own filesystem, whose
/// fill by other work must not hold the measured pulls back; the budget has its own tests.
pub fn bench_config(socket: &std::path::Path) -> Config {
    Config {
        containerd_socket: socket.to_path_buf(),
        start_jitter: Duration::ZERO,
        use_pull_secrets: false,
        disk_budget_percent: 100,
        ..Config::default()
    }
}

/// `Node` with every call the daemon makes timestamped.
pub struct Timed {
    pub inner: Node,
    pub pull_started: Mutex<HashMap<String, Instant>>,
    pub pull_done: Mutex<HashMap<String, Instant>>,
    pub lists: AtomicU64,
    pub statuses: AtomicU64,
    pub pulls: AtomicU64,
    pub pins: AtomicU64,
}

impl Timed {
    pub fn new(inner: Node) -> Self {
        Self {
            inner,
            pull_started: Mutex::default(),
            pull_done: Mutex::default(),
            lists: AtomicU64::new(0),
            statuses: AtomicU64::new(0),
            pulls: AtomicU64::new(0),
            pins: AtomicU64::new(0),
        }
    }

    pub fn started(&self, image: &str) -> Option<Instant> {
        self.pull_started.lock().ok()?.get(image).copied()
    }

    pub fn done(&self, image: &str) -> Option<Instant> {
        self.pull_done.lock().ok()?.get(image).copied()
    }
}

#[async_trait::async_trait]
impl ImageRuntime for Timed {
    async fn list(&self) -> Result<Vec<ImageInfo>, NodeError> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        self.inner.list().await
    }
    async fn status(&self, image: &str) -> Result<Option<ImageInfo>, NodeError> {
        self.statuses.fetch_add(1, Ordering::SeqCst);
        self.inner.status(image).await
    }
    async fn pull(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<PullOutcome, NodeError> {
        let now = Instant::now();
        self.pulls.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut m) = self.pull_started.lock() {
            m.insert(image.to_string(), now);
        }
        let r = self.inner.pull(image, auth).await;
        if let Ok(mut m) = self.pull_done.lock() {
            m.insert(image.to_string(), Instant::now());
        }
        r
    }
    async fn pin(&self, image: &str) -> Result<PinOutcome, NodeError> {
        self.pins.fetch_add(1, Ordering::SeqCst);
        self.inner.pin(image).await
    }
    async fn unpin(&self, image: &str) -> Result<UnpinOutcome, NodeError> {
        self.inner.unpin(image).await
    }
    async fn fs_info(&self) -> Result<FsInfo, NodeError> {
        self.inner.fs_info().await
    }
}

/// Pushes `count` tiny distinct images (`<registry>/tiny/img:tNNNN`, one shared 2 KiB layer and
/// an own config each) through the registry's HTTP API, far faster than one skopeo run per image.
pub async fn push_tiny(registry: &str, count: usize) -> anyhow::Result<Vec<String>> {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let base = format!("http://{registry}");
    let repo = "tiny/img";
    let (layer, diff_id) = tiny_layer()?;
    let layer_digest = upload_blob(&client, &base, repo, layer.clone()).await?;
    let layer_size = layer.len();
    let refs: Vec<String> = (0..count)
        .map(|i| format!("{registry}/{repo}:t{i:04}"))
        .collect();
    futures::stream::iter(0..count)
        .map(|i| {
            let (client, base, layer_digest, diff_id) = (&client, &base, &layer_digest, &diff_id);
            async move {
                let config = json!({
                    "architecture": "amd64", "os": "linux",
                    "config": {"Labels": {"io.rollcache.bench": format!("tiny-{i}")}},
                    "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                })
                .to_string();
                let config_size = config.len();
                let config_digest = upload_blob(client, base, repo, config.into_bytes()).await?;
                let manifest = json!({
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                               "digest": config_digest, "size": config_size},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                "digest": layer_digest, "size": layer_size}],
                })
                .to_string();
                let req = http::Request::put(format!("{base}/v2/{repo}/manifests/t{i:04}"))
                    .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                    .body(Full::new(Bytes::from(manifest)))?;
                let resp = client.request(req).await?;
                anyhow::ensure!(
                    resp.status().is_success(),
                    "manifest PUT answered {}",
                    resp.status()
                );
                anyhow::Ok(())
            }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(refs)
}

fn tiny_layer() -> anyhow::Result<(Vec<u8>, String)> {
    let mut tar = tar::Builder::new(Vec::new());
    let data = vec![b'x'; 2048];
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, "tiny.txt", data.as_slice())?;
    let tar = tar.into_inner()?;
    let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(&tar)));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar)?;
    Ok((gz.finish()?, diff_id))
}

async fn upload_blob(
    client: &Client<HttpConnector, Full<Bytes>>,
    base: &str,
    repo: &str,
    bytes: Vec<u8>,
) -> anyhow::Result<String> {
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    let req = http::Request::post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .body(Full::new(Bytes::new()))?;
    let resp = client.request(req).await?;
    anyhow::ensure!(
        resp.status().as_u16() == 202,
        "blob upload start answered {}",
        resp.status()
    );
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .context("blob upload answer without Location")?
        .to_string();
    let _ = resp.into_body().collect().await;
    let mut url = if location.starts_with("http") {
        location
    } else {
        format!("{base}{location}")
    };
    url.push(if url.contains('?') { '&' } else { '?' });
    url.push_str(&format!("digest={digest}"));
    let req = http::Request::put(url)
        .header("content-type", "application/octet-stream")
        .body(Full::new(Bytes::from(bytes)))?;
    let resp = client.request(req).await?;
    anyhow::ensure!(
        resp.status().is_success(),
        "blob PUT answered {}",
        resp.status()
    );
    let _ = resp.into_body().collect().await;
    Ok(digest)
}

/// GET `path` from 127.0.0.1:`port` (plain HTTP), body as text.
pub async fn http_get(port: u16, path: &str) -> anyhow::Result<String> {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let req = http::Request::get(format!("http://127.0.0.1:{port}{path}"))
        .body(Full::new(Bytes::new()))?;
    let resp = client.request(req).await?;
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

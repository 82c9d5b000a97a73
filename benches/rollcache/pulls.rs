//! Making images offline-safe: rollcache (revisions appear in the API server → all pinned, as CRI
//! reports it) against direct CRI PullImage calls, each run on a fresh containerd.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rollcache_testbed::apiserver::ApiServer;
use rollcache_testbed::deps::ContainerdVersion;
use rollcache_testbed::oci::{ImageSpec, OciLayout};
use rollcache_testbed::registry::Registry;

use crate::bed::{self, RunningDaemon};
use crate::history;

/// Images pushed to the registry, with their sizes.
pub struct PushedSet {
    pub refs: Vec<String>,
    /// Uncompressed layer bytes, each shared layer counted once.
    pub unpacked: u64,
    /// Bytes the registry serves, each shared layer counted once.
    pub compressed: u64,
}

/// Builds `specs` into the OCI layout at `dir` and pushes each to `registry` as `NAME:1`.
pub fn build_and_push(
    dir: &Path,
    registry: &str,
    specs: &[(String, ImageSpec)],
) -> anyhow::Result<PushedSet> {
    let mut layout = OciLayout::create(dir)?;
    let mut refs = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let (mut unpacked, mut compressed) = (0, 0);
    for (name, spec) in specs {
        let built = layout.image(spec)?;
        for l in &built.layers {
            if seen.insert(l.blob.digest.clone()) {
                unpacked += l.tar_size;
                compressed += l.blob.size;
            }
        }
        let name_tag = format!("{name}:1");
        layout.tag_and_push(&built.manifest, registry, &name_tag, None)?;
        refs.push(format!("{registry}/{name_tag}"));
    }
    Ok(PushedSet {
        refs,
        unpacked,
        compressed,
    })
}

/// Direct CRI pulls, `in_flight` at a time, on a fresh containerd.
pub async fn direct(
    version: ContainerdVersion,
    registry: &Registry,
    refs: &[String],
    in_flight: usize,
) -> anyhow::Result<Duration> {
    let (_ctd, node) = bed::fresh_containerd(version, registry).await?;
    let start = Instant::now();
    bed::pull_all(&node, refs, in_flight).await?;
    Ok(start.elapsed())
}

/// rollcache on a fresh containerd: the daemon runs and has listed an empty history; then one
/// ReplicaSet per image appears in the API server; done when CRI lists every image as pinned.
/// CRI is polled (every 10 ms) only once the daemon reports them all pinned, so that the polling
/// does not load containerd while it pulls.
pub async fn rollcache(
    version: ContainerdVersion,
    registry: &Registry,
    refs: &[String],
    max_concurrent_pulls: Option<usize>,
) -> anyhow::Result<Duration> {
    let (ctd, node) = bed::fresh_containerd(version, registry).await?;
    let api = ApiServer::start().await?;
    let mut cfg = bed::bench_config(&ctd.socket());
    if let Some(n) = max_concurrent_pulls {
        cfg.max_concurrent_pulls = n;
    }
    let daemon = RunningDaemon::start(&api.client()?, Arc::new(node.clone()), cfg);
    daemon.wait_synced(Duration::from_secs(30)).await?;
    let start = Instant::now();
    for (i, r) in refs.iter().enumerate() {
        api.apply(history::replicaset(
            "bench",
            &format!("app-{i:02}"),
            1,
            r,
            true,
        ))?;
    }
    let done = wait_done(&daemon, &node, refs).await;
    let took = start.elapsed();
    daemon.stop().await;
    done?;
    Ok(took)
}

async fn wait_done(
    daemon: &RunningDaemon,
    node: &rollcache::node::Node,
    refs: &[String],
) -> anyhow::Result<()> {
    let mut status = daemon.status.clone();
    let begin = Instant::now();
    loop {
        let doc: serde_json::Value =
            serde_json::from_slice(&status.borrow_and_update().json()).unwrap_or_default();
        let pinned = doc
            .get("images_pinned")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        if pinned as usize >= refs.len() {
            break;
        }
        anyhow::ensure!(
            begin.elapsed() < Duration::from_secs(1800),
            "not all pinned within 30 min"
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), status.changed()).await;
    }
    bed::wait_pinned(
        node,
        refs,
        Duration::from_millis(10),
        Duration::from_secs(60),
    )
    .await
}

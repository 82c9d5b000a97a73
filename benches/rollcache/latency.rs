//! Reaction latency: a revision appears in the API server → the daemon calls the runtime's pull
//! for its image (timestamped in-process by a wrapper around the real `Node`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use rollcache::testbed::apiserver::ApiServer;
use rollcache::testbed::deps::ContainerdVersion;
use rollcache::testbed::registry::Registry;

use crate::bed::{self, RunningDaemon, Timed};
use crate::history;

/// One Deployment gets `images.len()` new revisions, one after the other (each pulled before the
/// next appears); returns each revision's latency in milliseconds.
pub async fn reaction(
    version: ContainerdVersion,
    registry: &Registry,
    images: &[String],
) -> anyhow::Result<Vec<f64>> {
    let (ctd, node) = bed::fresh_containerd(version, registry).await?;
    let api = ApiServer::start().await?;
    let timed = Arc::new(Timed::new(node));
    let daemon = RunningDaemon::start(
        &api.client()?,
        timed.clone(),
        bed::bench_config(&ctd.socket()),
    );
    daemon.wait_synced(Duration::from_secs(30)).await?;
    let mut out = Vec::with_capacity(images.len());
    for (i, image) in images.iter().enumerate() {
        let rs = history::replicaset("bench", "latency", i as u32 + 1, image, true);
        let start = Instant::now();
        api.apply(rs)?;
        let started = wait_for(|| timed.started(image), image, "pull start").await?;
        out.push(started.saturating_duration_since(start).as_secs_f64() * 1000.0);
        wait_for(|| timed.done(image), image, "pull end").await?;
        // Do not run in lockstep with the daemon's loop.
        let pause = rand::rng().random_range(0..20);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    daemon.stop().await;
    Ok(out)
}

async fn wait_for(
    mut f: impl FnMut() -> Option<Instant>,
    image: &str,
    what: &str,
) -> anyhow::Result<Instant> {
    let begin = Instant::now();
    loop {
        if let Some(t) = f() {
            return Ok(t);
        }
        anyhow::ensure!(
            begin.elapsed() < Duration::from_secs(60),
            "no {what} for {image} within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

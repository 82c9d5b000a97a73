//! Reaction latency: a revision appears in the API server → the daemon calls the runtime's pull
//! for its image (timestamped in-process by a wrapper around the real `Node`). The clock starts
//! just before the object is handed to the API server (on a real server: before the create
//! request is sent).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use rollcache_testbed::deps::ContainerdVersion;
use rollcache_testbed::registry::Registry;

use crate::api::{History, Target};
use crate::bed::{self, RunningDaemon, Timed};
use crate::history;

/// One Deployment gets `images.len()` new revisions, one after the other (each pulled before the
/// next appears), in a fresh history named `name` on `target`; returns each revision's latency
/// in milliseconds.
pub async fn reaction(
    version: ContainerdVersion,
    registry: &Registry,
    images: &[String],
    target: &Target,
    name: &str,
) -> anyhow::Result<Vec<f64>> {
    let h = History::new(target, name, &["bench".to_string()]).await?;
    let out = run(version, registry, images, &h).await;
    h.clear().await?;
    out
}

async fn run(
    version: ContainerdVersion,
    registry: &Registry,
    images: &[String],
    h: &History,
) -> anyhow::Result<Vec<f64>> {
    let (ctd, node) = bed::fresh_containerd(version, registry).await?;
    let timed = Arc::new(Timed::new(node));
    let daemon = RunningDaemon::start(&h.client()?, timed.clone(), h.config(&ctd.socket()));
    daemon.wait_synced(Duration::from_secs(30)).await?;
    let ns = h.ns("bench");
    let mut out = Vec::with_capacity(images.len());
    for (i, image) in images.iter().enumerate() {
        let rs = history::replicaset(&ns, "latency", i as u32 + 1, image, true);
        let start = Instant::now();
        h.create(rs).await?;
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

//! Reaction latency, today vs through the indexer: new revisions of one Deployment on a small
//! history of their own, timed from the write to the API server to the pull request at the
//! registry (and, for the indexer alone, to its shard write).

use std::path::Path;
use std::time::{Duration, Instant};

use rollcache_testbed::deps::ContainerdVersion;
use rollcache_testbed::registry::Registry;
use serde_json::json;

use crate::fleet::{
    Mode, PENDING, Proc, env_u64, metric_any, spawn_agent, spawn_indexer, wait_planned,
    wait_published, write_kubeconfig,
};
use crate::stats::percentile;
use crate::{bed, history};

pub struct Latency {
    pub notes: Vec<String>,
    pub fleet_p99: Option<f64>,
}

/// New revisions of one Deployment, one at a time, on a small history of their own: the clock
/// starts just before the ReplicaSet is applied to the in-test server and stops when the
/// registry's access log shows the manifest request of its image (the pull call as the registry
/// sees it, through containerd). Today: the agent alone; the indexer's share: until its shard is
/// written; fleet: agent in inventory mode + indexer.
pub async fn latency(
    version: ContainerdVersion,
    registry: &Registry,
    tiny: &[String],
    work: &Path,
    fleet: bool,
) -> anyhow::Result<Latency> {
    let n = env_u64("BENCH_FLEET_LATENCY_SAMPLES", 30) as usize;
    anyhow::ensure!(
        tiny.len() >= 3 * n,
        "not enough tiny images for {n} samples"
    );
    let mut notes = vec![];
    let mut pooled = |name: &str, v: &[f64]| {
        notes.push(format!(
            "reaction latency, {name}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (n = {})",
            percentile(v, 50.0),
            percentile(v, 99.0),
            percentile(v, 100.0),
            v.len()
        ));
        percentile(v, 99.0)
    };
    let today = run_latency(version, registry, &tiny[..n], work, false, true).await?;
    pooled("today (revision → pull request at the registry)", &today.0);
    let index = run_latency(version, registry, &tiny[n..2 * n], work, true, false).await?;
    pooled(
        "the indexer's share (revision → its shard written)",
        &index.1,
    );
    let fleet_p99 = if fleet {
        let f = run_latency(version, registry, &tiny[2 * n..3 * n], work, true, true).await?;
        Some(pooled(
            "fleet (revision → indexer → agent → pull request at the registry)",
            &f.0,
        ))
    } else {
        notes.push(format!("reaction latency, fleet: {PENDING}"));
        None
    };
    notes.push("the indexer publishes a change after a quiet second at once and paces faster ones to one pass a second (src/fleet/publish.rs Tuning::debounce); the samples here are lone changes, 1.0-1.3 s apart; a change within a second of the last pass waits up to that second".into());
    Ok(Latency { notes, fleet_p99 })
}

/// (agent latencies to the registry, indexer latencies to the shard write), in ms.
async fn run_latency(
    version: ContainerdVersion,
    registry: &Registry,
    images: &[String],
    work: &Path,
    indexer: bool,
    agent: bool,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let api = crate::fleet::api_with_inventory_namespace().await?;
    api.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}))?;
    let kc = write_kubeconfig(&work.join("kubeconfig-latency"), &api.url())?;
    let (ctd, _node) = bed::fresh_containerd(version, registry).await?;
    let mut ix = match indexer {
        true => Some(spawn_indexer(
            &kc,
            "bench-index-l",
            work.join("index-l.log"),
        )?),
        false => None,
    };
    let mode = if indexer { Mode::Fleet } else { Mode::Today };
    let mut ag = match agent {
        true => Some(spawn_agent(
            mode,
            &kc,
            &ctd.socket(),
            100,
            work.join("agent-l.log"),
        )?),
        false => None,
    };
    let first = history::replicaset("bench", "latency", 1, &images[0], true);
    api.apply(first)?;
    if let Some(p) = &mut ix {
        wait_published(p, Duration::from_secs(120)).await?;
    }
    if let Some(p) = &mut ag {
        wait_planned(p, 1, Duration::from_secs(120)).await?;
    }
    let (mut to_pull, mut to_shard) = (Vec::new(), Vec::new());
    for (i, image) in images.iter().enumerate().skip(1) {
        let needle = format!(
            "/manifests/{}",
            image.rsplit(':').next().unwrap_or_default()
        );
        let writes = match &ix {
            Some(p) => shard_writes(p).await,
            None => 0.0,
        };
        let rs = history::replicaset("bench", "latency", i as u32 + 1, image, true);
        // Earlier sections may have pulled the same tag: only requests from now on count.
        let seen = log_lines(registry);
        let start = Instant::now();
        api.apply(rs)?;
        let (mut pulled, mut written) = (ag.is_none(), ix.is_none());
        while !(pulled && written) {
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(30),
                "revision {} not seen within 30 s",
                i + 1
            );
            if !pulled && pulled_from(registry, seen, &needle) {
                to_pull.push(start.elapsed().as_secs_f64() * 1000.0);
                pulled = true;
            }
            if let Some(p) = ix.as_ref().filter(|_| !written)
                && shard_writes(p).await > writes
            {
                to_shard.push(start.elapsed().as_secs_f64() * 1000.0);
                written = true;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Each sample a lone change (the indexer paces bursts to a pass a second), not in lockstep
        // with the agent's loop.
        let pause = 1000 + rand::random::<u64>() % 300;
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    for p in [&mut ix, &mut ag].into_iter().flatten() {
        p.alive()?;
    }
    drop((ag, ix, ctd));
    Ok((to_pull, to_shard))
}

pub async fn shard_writes(p: &Proc) -> f64 {
    metric_any(
        &p.metrics().await,
        &[
            "rollcache_index_shard_writes_total",
            "rollcache_index_shard_writes",
        ],
    )
    .unwrap_or(0.0)
}

fn log_lines(registry: &Registry) -> usize {
    std::fs::read_to_string(registry.log_path()).map_or(0, |log| log.lines().count())
}

/// Whether the registry's access log, after its first `skip` lines, shows a GET or HEAD (a pull;
/// the push was a PUT) for `needle`.
fn pulled_from(registry: &Registry, skip: usize, needle: &str) -> bool {
    std::fs::read_to_string(registry.log_path()).is_ok_and(|log| {
        log.lines()
            .skip(skip)
            .any(|l| (l.contains("\"GET ") || l.contains("\"HEAD ")) && l.contains(needle))
    })
}

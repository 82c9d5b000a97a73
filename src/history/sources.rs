//! Starting every enabled history source from the config, each under its supervisor.
//!
//! The Kubernetes watchers and the directory source all feed one `HistoryStore`.

use std::sync::Arc;

use anyhow::Context;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::dir_source::{NodeFromFiles, spawn_dir_source};
use super::store::HistoryStore;
use super::watch::{WatchConfig, spawn_watchers};
use crate::config::Config;

/// The watchers' settings from the config.
pub fn watch_config(cfg: &Config) -> WatchConfig {
    WatchConfig {
        namespaces: cfg.namespaces.clone(),
        replicasets: cfg.sources.replicasets,
        controller_revisions: cfg.sources.controller_revisions,
        helm_secrets: cfg.sources.helm_secrets,
        helm_configmaps: cfg.sources.helm_configmaps,
        pods: cfg.sources.pods,
        node_name: cfg.node_name.clone(),
        ..WatchConfig::default()
    }
}

/// A client from `KUBECONFIG` / `~/.kube/config`, or the in-cluster service account.
pub async fn client() -> anyhow::Result<kube::Client> {
    const HINT: &str = "cannot reach a Kubernetes API: set KUBECONFIG, run inside a cluster, or plan from a directory with --from DIR";
    let mut config = kube::Config::infer().await.context(HINT)?;
    tune_client_config(&mut config);
    kube::Client::try_from(config).context(HINT)
}

/// What rollcache changes in a kube client's defaults.
///
/// kube retries 429, 503 and 504 inside the request, for minutes (15 attempts, exponential up to
/// 1000 s): meanwhile a watcher whose stream ended reports no error, so its source would look
/// fresh while it has stopped seeing changes, and other sources' deletions could unpin. Without
/// it the error reaches the watcher at once: the source is marked in error and the watcher's own
/// backoff paces the retries.
pub fn tune_client_config(config: &mut kube::Config) {
    config.default_retry = false;
}

/// Start every enabled source (API watchers and the directory) into `store`.
pub async fn start_sources(
    cfg: &Config,
    store: &Arc<HistoryStore>,
    cancel: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<()> {
    start_sources_with(cfg, None, store, cancel, tasks).await
}

/// `start_sources` with a given Kubernetes client (None: from `KUBECONFIG` or in-cluster).
pub async fn start_sources_with(
    cfg: &Config,
    client: Option<kube::Client>,
    store: &Arc<HistoryStore>,
    cancel: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<()> {
    if cfg.kubernetes {
        let client = match client {
            Some(c) => c,
            None => self::client().await?,
        };
        spawn_watchers(&client, &watch_config(cfg), store, cancel, tasks);
    }
    if let Some(dir) = &cfg.from_dir {
        let node = NodeFromFiles {
            node_name: cfg.node_name.clone(),
            enabled: !cfg.kubernetes,
        };
        spawn_dir_source(dir, node, store, cancel, tasks)
            .with_context(|| format!("cannot watch directory source {}", dir.display()))?;
    }
    Ok(())
}

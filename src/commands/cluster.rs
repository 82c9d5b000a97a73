//! Connecting the history sources: the Kubernetes API (watchers) and a directory, both feeding one
//! `HistoryStore`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::commands::plan::History;
use crate::config::Config;
use crate::history::files;
use crate::history::store::{HistoryStore, SourceId};
use crate::history::watch::{WatchConfig, spawn_watchers};
use crate::model::SourceKind;

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
    kube::Client::try_default().await.context(
        "cannot reach a Kubernetes API: set KUBECONFIG, run inside a cluster, or plan from a directory with --from DIR",
    )
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
        let (mut changes, guard) = files::watch_dir(dir)
            .with_context(|| format!("cannot watch directory source {}", dir.display()))?;
        let id = SourceId::new(SourceKind::File, "files", None);
        store.register(&id);
        load_dir_into(dir, &id, store, cfg.node_name.as_deref(), !cfg.kubernetes);
        let (store, dir, cancel, node) = (
            store.clone(),
            dir.clone(),
            cancel.clone(),
            cfg.node_name.clone(),
        );
        let api = cfg.kubernetes;
        tasks.spawn(async move {
            let _guard = guard;
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    c = changes.recv() => if c.is_none() { return },
                }
                tracing::info!(dir = %dir.display(), "directory source changed; reloading");
                load_dir_into(&dir, &id, &store, node.as_deref(), !api);
            }
        });
    }
    Ok(())
}

/// Replace the directory source's objects with what the directory holds now.
fn load_dir_into(
    dir: &std::path::Path,
    id: &SourceId,
    store: &HistoryStore,
    node_name: Option<&str>,
    node_from_files: bool,
) {
    let snap = files::load_dir(dir);
    for p in &snap.problems {
        tracing::warn!(object = %p.object, kind = %p.kind, "skipped: {}", p.message);
        store.count_problem(
            &crate::history::store::StatusKey::Source(id.clone()),
            p.kind,
        );
    }
    store.reset_begin(id);
    let objects = snap.objects.len();
    for (object, decoded) in snap.objects {
        for p in &decoded.problems {
            tracing::warn!(object = %p.object, kind = %p.kind, "skipped: {}", p.message);
        }
        store.reset_apply(id, object, decoded);
    }
    store.reset_done(id);
    if node_from_files {
        let node = node_name.and_then(|n| snap.nodes.iter().find(|x| x.name == n).cloned());
        store.set_node(node);
    }
    tracing::info!(dir = %dir.display(), objects, "directory source loaded");
}

/// How long a one-shot command waits for every source to list.
const SYNC_TIMEOUT: Duration = Duration::from_secs(120);

/// List everything once (for `plan`): start the sources, wait until each has synced, stop.
pub async fn load_history(cfg: &Config) -> anyhow::Result<History> {
    let store = HistoryStore::new();
    let cancel = CancellationToken::new();
    let mut tasks = JoinSet::new();
    start_sources(cfg, &store, &cancel, &mut tasks).await?;
    let started = Instant::now();
    let mut rx = store.subscribe();
    let expect_node = cfg.kubernetes && cfg.node_name.is_some();
    loop {
        let snap = store.snapshot();
        let synced =
            snap.sources.values().all(|s| s.synced) && (!expect_node || snap.node_status.synced);
        if synced {
            break;
        }
        if started.elapsed() > SYNC_TIMEOUT {
            let waiting: Vec<String> = snap
                .sources
                .iter()
                .filter(|(_, s)| !s.synced)
                .map(|(id, s)| format!("{id}: {}", s.last_error.as_deref().unwrap_or("no answer")))
                .collect();
            cancel.cancel();
            anyhow::bail!(
                "sources did not sync within {SYNC_TIMEOUT:?}: {}",
                waiting.join("; ")
            );
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), rx.changed()).await;
    }
    cancel.cancel();
    while tasks.join_next().await.is_some() {}
    let snap = store.snapshot();
    Ok(History {
        facts: snap.facts().cloned().collect(),
        nodes: snap.node.clone().into_iter().collect(),
        problems: Vec::new(),
    })
}

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
use crate::history::store::{HistoryStore, SourceId, StatusKey};
use crate::history::supervise::{RestartBackoff, supervise};
use crate::history::watch::{WatchConfig, spawn_watchers};
use crate::model::SourceKind;
use crate::reconcile::planning::{Progress, expects_node};

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
        let (changes, guard) = files::watch_dir(dir)
            .with_context(|| format!("cannot watch directory source {}", dir.display()))?;
        let id = SourceId::new(SourceKind::File, "files", None);
        store.register(&id);
        let new_source = {
            let (dir, id, store) = (dir.clone(), id.clone(), store.clone());
            let (node_name, node_from_files) = (cfg.node_name.clone(), !cfg.kubernetes);
            move || DirSource {
                dir: dir.clone(),
                id: id.clone(),
                store: store.clone(),
                node_name: node_name.clone(),
                node_from_files,
                state: files::DirState::default(),
                root: root_identity(&dir),
            }
        };
        let mut source = new_source();
        source.load();
        let mut first = Some((source, (changes, guard)));
        let task_cancel = cancel.clone();
        tasks.spawn(supervise(
            id.to_string(),
            store.clone(),
            StatusKey::Source(id.clone()),
            cancel.clone(),
            RestartBackoff::default(),
            move || {
                // A restart starts without a watch: the root check sets a new one and reloads,
                // since changes made while the task was down were not seen.
                let (source, watch) = match first.take() {
                    Some((source, watch)) => (source, Some(watch)),
                    None => (new_source(), None),
                };
                source.run(watch, task_cancel.clone())
            },
        ));
    }
    Ok(())
}

/// How often the directory source checks that its root is still the directory it watches.
const ROOT_CHECK: Duration = Duration::from_secs(1);

/// The directory source: reloads on change, keeps what unreadable files held, and survives its
/// root being removed and recreated (a watch dies with the directory it was set on).
struct DirSource {
    dir: std::path::PathBuf,
    id: SourceId,
    store: Arc<HistoryStore>,
    node_name: Option<String>,
    node_from_files: bool,
    state: files::DirState,
    /// Device and inode of the root the watch was set on.
    root: Option<(u64, u64)>,
}

/// Device and inode of `dir` (through symlinks); None when it is not a directory now.
fn root_identity(dir: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir)
        .ok()
        .filter(|m| m.is_dir())
        .map(|m| (m.dev(), m.ino()))
}

type Watch = (tokio::sync::mpsc::Receiver<()>, files::DirWatch);

impl DirSource {
    async fn run(mut self, mut watch: Option<Watch>, cancel: CancellationToken) {
        let mut check = tokio::time::interval(ROOT_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let changed = tokio::select! {
                _ = cancel.cancelled() => return,
                c = next_change(&mut watch) => c,
                _ = check.tick() => false,
            };
            let now = root_identity(&self.dir);
            let Some(root) = now else {
                // Missing (or not a directory): what it held is unknown, not gone.
                let key = StatusKey::Source(self.id.clone());
                if !self.store.in_error(&key) {
                    tracing::warn!(dir = %self.dir.display(), "directory source root is missing; keeping what it held and unpinning nothing until it is back");
                }
                self.store.set_error(
                    &key,
                    format!(
                        "directory {} is missing; waiting for it to come back",
                        self.dir.display()
                    ),
                );
                watch = None;
                self.root = None;
                continue;
            };
            if watch.is_none() || self.root != Some(root) {
                match files::watch_dir(&self.dir) {
                    Ok(w) => watch = Some(w),
                    Err(e) => {
                        self.store
                            .set_error(&StatusKey::Source(self.id.clone()), e.to_string());
                        continue;
                    }
                }
                tracing::info!(dir = %self.dir.display(), "directory source root is back; watching it again");
                self.root = Some(root);
                // A directory being filled after it was created: changes from now on are
                // watched and reload again, but the first load should not see it empty.
                tokio::time::sleep(files::DEBOUNCE).await;
            } else if !changed {
                continue;
            }
            tracing::info!(dir = %self.dir.display(), "directory source changed; reloading");
            self.load();
        }
    }

    fn load(&mut self) {
        let nodes = self.state.load_into(&self.dir, &self.id, &self.store);
        if self.node_from_files {
            let node = self
                .node_name
                .as_deref()
                .and_then(|n| nodes.into_iter().find(|x| x.name == n));
            self.store.set_node(node);
        }
    }
}

/// The next change the watch reports (true); pending forever without a watch. A watch that
/// ended is dropped, so that the root check sets a new one.
async fn next_change(watch: &mut Option<Watch>) -> bool {
    let Some((rx, _)) = watch else {
        return std::future::pending().await;
    };
    if rx.recv().await.is_some() {
        return true;
    }
    *watch = None;
    false
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
    loop {
        let snap = store.snapshot();
        if Progress::new(&snap, expects_node(cfg)).answered() {
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
        problems: snap
            .unresolved()
            .flat_map(|u| u.problems.iter().cloned())
            .collect(),
        nodes: snap.node.clone().into_iter().collect(),
        node_error: snap
            .node_status
            .in_error
            .then(|| snap.node_status.last_error.clone().unwrap_or_default()),
    })
}

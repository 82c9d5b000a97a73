//! Hot reload of the config file. The file's directory is watched, not the file: a ConfigMap mount
//! swaps a `..data` symlink, which replaces the file without writing to it. A bad reload keeps the
//! last good config and says why.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{Config, args::ConfigArgs};

/// What one reload attempt did, for logs and metrics.
#[derive(Debug, Clone, PartialEq)]
pub enum ReloadOutcome {
    Applied { restart_needed: Vec<&'static str> },
    Unchanged,
    Rejected { error: String },
}

/// How long file events are collected before a reload: a ConfigMap update is several events.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Watch `args.config`'s directory and publish each good config on the returned channel. Returns
/// `None` when no config file is given. `on_outcome` sees every attempt (metrics hook).
pub fn spawn(
    args: ConfigArgs,
    initial: Arc<Config>,
    cancel: CancellationToken,
    on_outcome: impl Fn(&ReloadOutcome) + Send + 'static,
) -> anyhow::Result<(watch::Receiver<Arc<Config>>, tokio::task::JoinHandle<()>)> {
    let (tx, rx) = watch::channel(initial);
    let Some(path) = args.config.clone() else {
        let handle = tokio::spawn(async move {
            cancel.cancelled().await;
            drop(tx);
        });
        return Ok((rx, handle));
    };
    let dir = watched_dir(&path);
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok() {
            let _ = ev_tx.send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    tracing::info!(file = %path.display(), dir = %dir.display(), "watching config for changes");
    let handle = tokio::spawn(async move {
        let _watcher = watcher; // keep it alive as long as the task
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                ev = ev_rx.recv() => if ev.is_none() { return },
            }
            // Collect the burst of events a single update produces.
            tokio::time::sleep(DEBOUNCE).await;
            while ev_rx.try_recv().is_ok() {}
            let outcome = reload_once(&args, &tx);
            match &outcome {
                ReloadOutcome::Applied { restart_needed } if restart_needed.is_empty() => {
                    tracing::info!(file = %path.display(), "config reloaded")
                }
                ReloadOutcome::Applied { restart_needed } => tracing::warn!(
                    file = %path.display(),
                    options = ?restart_needed,
                    "config reloaded; these options only take effect after a restart"
                ),
                ReloadOutcome::Unchanged => {
                    tracing::debug!(file = %path.display(), "config unchanged")
                }
                ReloadOutcome::Rejected { error } => tracing::error!(
                    file = %path.display(),
                    %error,
                    "config reload rejected; keeping the last good config"
                ),
            }
            on_outcome(&outcome);
        }
    });
    Ok((rx, handle))
}

fn reload_once(args: &ConfigArgs, tx: &watch::Sender<Arc<Config>>) -> ReloadOutcome {
    match args.resolve() {
        Err(e) => ReloadOutcome::Rejected {
            error: e.to_string(),
        },
        Ok(new) => {
            let old = tx.borrow().clone();
            if *old == new {
                return ReloadOutcome::Unchanged;
            }
            for w in new.warnings() {
                tracing::warn!("{w}");
            }
            let restart_needed = old.restart_only_changes(&new);
            tx.send_replace(Arc::new(new));
            ReloadOutcome::Applied { restart_needed }
        }
    }
}

fn watched_dir(path: &std::path::Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

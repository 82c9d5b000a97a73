//! Hot reload of the config file; a bad reload keeps the last good config and says why.
//!
//! The file's directory is watched, not the file: a ConfigMap mount swaps a `..data` symlink,
//! which replaces the file without writing to it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Config, args::ConfigArgs};
use crate::history::dirwatch::{self, Depth};

/// What one reload attempt did, for logs and metrics.
#[derive(Debug, Clone, PartialEq)]
pub enum ReloadOutcome {
    Applied { restart_needed: Vec<&'static str> },
    Unchanged,
    Rejected { error: String },
}

/// Quiet time before a reload: a ConfigMap update is several events.
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
    let (mut changes, watch) = dirwatch::watch_dir(&dir, Depth::Entries, DEBOUNCE)?;
    tracing::info!(file = %path.display(), dir = %dir.display(), "watching config for changes");
    let handle = tokio::spawn(async move {
        let _watch = watch; // the watch lives as long as the task
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                ev = changes.recv() => if ev.is_none() { return },
            }
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

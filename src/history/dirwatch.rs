//! A debounced notify watch of one directory, for the directory source and the config reload.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Quiet time after the last change before a watch reports it.
pub const DEBOUNCE: Duration = Duration::from_millis(200);
/// A watch reports at the latest this long after the first of a burst of changes.
const MAX_DELAY: Duration = Duration::from_secs(2);

/// A directory that cannot be watched.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch directory {path}: {source}; check that it exists and is readable")]
pub struct WatchError {
    pub path: PathBuf,
    #[source]
    pub source: notify::Error,
}

/// How far below the directory changes count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Depth {
    /// The whole tree: a directory source's subdirectories hold objects too.
    Recursive,
    /// The directory's own entries: a config file's directory may be any directory.
    Entries,
}

/// Keeps a directory watch alive; dropping it stops the watch.
pub struct DirWatch {
    _watcher: notify::RecommendedWatcher,
    debouncer: tokio::task::JoinHandle<()>,
}

impl Drop for DirWatch {
    fn drop(&mut self) {
        self.debouncer.abort();
    }
}

/// Watches `dir` and sends one `()` per burst of changes, after `quiet` without another change
/// (and at most `MAX_DELAY` after its first). A ConfigMap mount's `..data` symlink swap is a
/// change of the directory's own entries. Reads (our own reloads open the files) are not
/// changes; a watch error is reported as one, since what changed is then unknown. Must be called
/// inside a tokio runtime. The receiver ends when the guard is dropped.
pub fn watch_dir(
    dir: &Path,
    depth: Depth,
    quiet: Duration,
) -> Result<(mpsc::Receiver<()>, DirWatch), WatchError> {
    let failed = |source| WatchError {
        path: dir.to_owned(),
        source,
    };
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<()>();
    let mut watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(ev) if is_read(&ev.kind) => {}
            Ok(_) => {
                let _ = raw_tx.send(());
            }
            Err(e) => {
                tracing::warn!(error = %e, "directory watch error; reloading to be safe");
                let _ = raw_tx.send(());
            }
        })
        .map_err(failed)?;
    let mode = match depth {
        Depth::Recursive => RecursiveMode::Recursive,
        Depth::Entries => RecursiveMode::NonRecursive,
    };
    watcher.watch(dir, mode).map_err(failed)?;
    let (tx, rx) = mpsc::channel(1);
    let debouncer = tokio::spawn(async move {
        while raw_rx.recv().await.is_some() {
            let deadline = tokio::time::Instant::now() + MAX_DELAY;
            loop {
                tokio::select! {
                    more = raw_rx.recv() => if more.is_none() { return },
                    _ = tokio::time::sleep(quiet) => break,
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            // A full channel already holds a pending notice: that one covers this burst too.
            if let Err(mpsc::error::TrySendError::Closed(())) = tx.try_send(()) {
                return;
            }
        }
    });
    Ok((
        rx,
        DirWatch {
            _watcher: watcher,
            debouncer,
        },
    ))
}

/// An access that is not the close of a write: opening and reading change nothing.
fn is_read(kind: &EventKind) -> bool {
    matches!(kind, EventKind::Access(a) if *a != AccessKind::Close(AccessMode::Write))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn noticed(rx: &mut mpsc::Receiver<()>, wait: Duration) -> bool {
        tokio::time::timeout(wait, rx.recv())
            .await
            .is_ok_and(|v| v.is_some())
    }

    /// The config reload's watch: its own entries only, and reading the file is not a change.
    #[tokio::test]
    async fn an_entries_watch_sees_its_files_not_reads_or_subdirectories() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::fs::write(d.join("config.yaml"), "a: 1\n").unwrap();
        let (mut rx, _watch) = watch_dir(d, Depth::Entries, DEBOUNCE).unwrap();

        let _ = std::fs::read_to_string(d.join("config.yaml")).unwrap();
        std::fs::write(d.join("sub/other.yaml"), "b: 2\n").unwrap();
        assert!(!noticed(&mut rx, Duration::from_millis(600)).await);

        std::fs::write(d.join("config.yaml"), "a: 2\n").unwrap();
        assert!(noticed(&mut rx, Duration::from_secs(3)).await);
    }
}

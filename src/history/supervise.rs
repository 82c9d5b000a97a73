//! Keeps each history source's task running, restarting it after a backoff when it fails.
//!
//! A task that panics or ends on its own marks its source in error (so nothing is unpinned on a
//! view it no longer keeps up to date) until it has listed again.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::store::{HistoryStore, StatusKey};

/// Delays between restarts of a task that keeps failing.
#[derive(Clone, Copy, Debug)]
pub struct RestartBackoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for RestartBackoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

/// Aborts the task when the supervisor itself is dropped or aborted (a JoinHandle does not).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The name logs give the source `key`.
pub fn key_name(key: &StatusKey) -> String {
    match key {
        StatusKey::Source(id) => id.to_string(),
        StatusKey::Node => "node".to_string(),
    }
}

/// Starts a source in `tasks`: registers it in `store` (so that freshness checks wait for it),
/// then keeps the task `make_task` makes running, with the default backoff, until `token` is
/// cancelled. Every source, Kubernetes watch or directory, is started this way.
pub fn spawn_supervised<F, Fut>(
    tasks: &mut JoinSet<()>,
    store: &Arc<HistoryStore>,
    key: StatusKey,
    token: &CancellationToken,
    make_task: F,
) where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    if let StatusKey::Source(id) = &key {
        store.register(id);
    }
    tasks.spawn(supervise(
        key_name(&key),
        store.clone(),
        key,
        token.clone(),
        RestartBackoff::default(),
        make_task,
    ));
}

/// Runs the task `make_task` makes, for the source `key`, until `token` is cancelled.
pub async fn supervise<F, Fut>(
    name: String,
    store: Arc<HistoryStore>,
    key: StatusKey,
    token: CancellationToken,
    backoff: RestartBackoff,
    mut make_task: F,
) where
    F: FnMut() -> Fut + Send,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut delay = backoff.initial;
    loop {
        let started = Instant::now();
        let mut task = AbortOnDrop(tokio::spawn(make_task()));
        let ended = tokio::select! {
            r = &mut task.0 => r,
            _ = token.cancelled() => return,
        };
        if token.is_cancelled() {
            return;
        }
        let why = match ended {
            Ok(()) => "ended on its own".to_string(),
            Err(e) if e.is_panic() => {
                let payload = e.into_panic();
                let text = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".into());
                format!("panicked: {text}")
            }
            Err(_) => "was cancelled".to_string(),
        };
        // A task that ran for a long while before failing starts again from the short delay.
        if started.elapsed() > backoff.max {
            delay = backoff.initial;
        }
        error!(source = %name, restart_in = ?delay, "the source's task {why}; the source is in error (nothing is unpinned) until it has listed again");
        store.set_error(&key, format!("source task {why}; restarting"));
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = token.cancelled() => return,
        }
        delay = delay.saturating_mul(2).min(backoff.max);
        info!(source = %name, "restarting the source's task");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use super::*;
    use crate::history::store::SourceId;
    use crate::model::SourceKind;

    async fn wait_for(what: &str, f: impl Fn() -> bool) {
        let start = std::time::Instant::now();
        while !f() {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Sets a flag when dropped: tells whether a task's future was dropped (aborted).
    struct Dropped(Arc<AtomicBool>);

    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_panicking_task_marks_its_source_in_error_and_is_restarted() {
        let store = HistoryStore::new();
        let id = SourceId::new(SourceKind::ReplicaSet, "replicasets", None);
        store.register(&id);
        let starts = Arc::new(AtomicU32::new(0));
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let go = Arc::new(Mutex::new(Some(go_rx)));
        let dropped = Arc::new(AtomicBool::new(false));
        let token = CancellationToken::new();
        let sup = tokio::spawn(supervise(
            "replicasets".into(),
            store.clone(),
            StatusKey::Source(id.clone()),
            token.clone(),
            RestartBackoff {
                initial: Duration::from_millis(20),
                max: Duration::from_millis(100),
            },
            {
                let (store, id, starts, dropped) =
                    (store.clone(), id.clone(), starts.clone(), dropped.clone());
                move || {
                    let n = starts.fetch_add(1, Ordering::SeqCst) + 1;
                    let go = go.lock().unwrap().take();
                    let (store, id, dropped) = (store.clone(), id.clone(), dropped.clone());
                    async move {
                        let _flag = Dropped(dropped);
                        store.reset_begin(&id);
                        store.reset_done(&id);
                        if let Some(go) = go {
                            let _ = go.await;
                            panic!("a decoder bug, run {n}");
                        }
                        std::future::pending::<()>().await
                    }
                }
            },
        ));
        wait_for("the first list", || store.snapshot().all_sources_fresh()).await;
        go_tx.send(()).unwrap();
        wait_for("the panic marks the source in error", || {
            store.in_error(&StatusKey::Source(id.clone()))
        })
        .await;
        assert!(!store.snapshot().all_sources_fresh());
        let err = store.status(&id).unwrap().last_error.unwrap();
        assert!(err.contains("panicked: a decoder bug, run 1"), "{err}");
        wait_for("restarted and listed again", || {
            starts.load(Ordering::SeqCst) == 2 && store.snapshot().all_sources_fresh()
        })
        .await;
        dropped.store(false, Ordering::SeqCst);
        token.cancel();
        sup.await.expect("the supervisor returns on cancel");
        wait_for("the running task is aborted with it", || {
            dropped.load(Ordering::SeqCst)
        })
        .await;
        assert_eq!(starts.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_task_that_ends_is_restarted_with_growing_delays() {
        let store = HistoryStore::new();
        let id = SourceId::new(SourceKind::File, "files", None);
        store.register(&id);
        let token = CancellationToken::new();
        let times = Arc::new(Mutex::new(Vec::new()));
        let sup = tokio::spawn(supervise(
            "files".into(),
            store.clone(),
            StatusKey::Source(id.clone()),
            token.clone(),
            RestartBackoff {
                initial: Duration::from_millis(20),
                max: Duration::from_millis(80),
            },
            {
                let times = times.clone();
                move || {
                    times.lock().unwrap().push(Instant::now());
                    async {}
                }
            },
        ));
        wait_for("five starts", || times.lock().unwrap().len() >= 5).await;
        token.cancel();
        sup.await.expect("returns on cancel");
        assert!(store.in_error(&StatusKey::Source(id)));
        let t = times.lock().unwrap().clone();
        let gaps: Vec<Duration> = t.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps[0] >= Duration::from_millis(20), "{gaps:?}");
        assert!(gaps[1] >= Duration::from_millis(40), "{gaps:?}");
        assert!(
            gaps[3] >= Duration::from_millis(80),
            "capped, not shorter: {gaps:?}"
        );
    }
}

//! The reconcile loop run whole on the in-memory runtime: a panicking pull, an unknown disk size,
//! and when the next pass is due.

use std::sync::atomic::Ordering;

use super::*;
use crate::config::Config;
use crate::history::store::HistoryStore;
use crate::node::{ImageInfo, NodeError, PullOutcome, RegistryAuth};

fn params() -> Params {
    Params {
        max_concurrent_pulls: 2,
        unpin_grace: Duration::from_secs(600),
        backoff_initial: Duration::from_secs(5),
        backoff_max: Duration::from_secs(300),
        over_disk_budget: true,
        disk_headroom: None,
        view_fresh: true,
    }
}

/// The in-memory runtime, except that the first pull panics (a bug in a runtime client).
struct PanicsOnFirstPull {
    inner: crate::node::memory::MemoryRuntime,
    pulls: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl ImageRuntime for PanicsOnFirstPull {
    async fn list(&self) -> Result<Vec<ImageInfo>, NodeError> {
        self.inner.list().await
    }
    async fn status(&self, image: &str) -> Result<Option<ImageInfo>, NodeError> {
        self.inner.status(image).await
    }
    async fn pull(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<PullOutcome, NodeError> {
        if self.pulls.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("runtime client bug");
        }
        self.inner.pull(image, auth).await
    }
    async fn pin(&self, image: &str) -> Result<crate::node::PinOutcome, NodeError> {
        self.inner.pin(image).await
    }
    async fn unpin(&self, image: &str) -> Result<crate::node::UnpinOutcome, NodeError> {
        self.inner.unpin(image).await
    }
    async fn fs_info(&self) -> Result<crate::node::FsInfo, NodeError> {
        self.inner.fs_info().await
    }
}

#[tokio::test]
async fn a_panicked_pull_frees_its_slot_and_is_retried() {
    let image = "reg.example/app:1";
    let runtime = Arc::new(PanicsOnFirstPull {
        inner: crate::node::memory::MemoryRuntime::new(),
        pulls: Default::default(),
    });
    runtime.inner.publish(image, 10);
    let cfg = Config {
        extra_images: vec![image.to_string()],
        start_jitter: Duration::ZERO,
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(50),
        max_concurrent_pulls: 1,
        ..Config::default()
    };
    let (_config_tx, config) = watch::channel(Arc::new(cfg));
    let daemon = Daemon::new(runtime.clone(), HistoryStore::new(), config);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(daemon.run(cancel.clone()));
    let start = Instant::now();
    loop {
        let held = runtime.inner.list().await.expect("list");
        if held
            .iter()
            .any(|i| i.pinned && i.repo_tags.iter().any(|t| t == image))
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the image was never pulled again after the panicked pull: {held:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(runtime.pulls.load(Ordering::SeqCst), 2);
    cancel.cancel();
    task.await.expect("the loop stops");
}

#[tokio::test]
async fn an_unknown_image_filesystem_size_is_reported_not_taken_as_fine() {
    let runtime = Arc::new(crate::node::memory::MemoryRuntime::new());
    let cfg = Config {
        resync_interval: Duration::from_millis(20),
        ..Config::default()
    };
    let (_config_tx, config) = watch::channel(Arc::new(cfg));
    let metrics = Arc::new(Metrics::new());
    let (status, mut docs) = watch::channel(StatusDoc::from_json(b"{}"));
    let daemon = Daemon::new(runtime.clone(), HistoryStore::new(), config)
        .with_metrics(metrics.clone())
        .with_status(status);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(daemon.run(cancel.clone()));
    async fn disk(docs: &mut watch::Receiver<StatusDoc>, known: bool) -> serde_json::Value {
        loop {
            docs.changed().await.expect("status");
            let v: serde_json::Value =
                serde_json::from_slice(&docs.borrow_and_update().json()).expect("JSON");
            if v["disk"]["size_unknown"].is_null() == known {
                return v["disk"].clone();
            }
        }
    }
    let d = tokio::time::timeout(Duration::from_secs(5), disk(&mut docs, false))
        .await
        .expect("reported");
    assert!(
        d["size_unknown"]
            .as_str()
            .is_some_and(|w| w.contains("capacity")),
        "{d}"
    );
    assert_eq!(metrics.image_fs_size_known.get(), 0);
    runtime.set_fs_info(crate::node::FsInfo {
        mountpoint: "/memory".into(),
        used_bytes: 0,
        inodes_used: None,
        capacity_bytes: Some(1 << 30),
        available_bytes: Some(1 << 29),
    });
    tokio::time::timeout(Duration::from_secs(5), disk(&mut docs, true))
        .await
        .expect("known again");
    assert_eq!(metrics.image_fs_size_known.get(), 1);
    cancel.cancel();
    task.await.expect("the loop stops");
}

#[test]
fn held_back_by_disk_wakes_soon_not_at_resync() {
    let now = Instant::now();
    let d = Decision {
        waiting: vec![("r/a:1".into(), Waiting::DiskBudget)],
        ..Default::default()
    };
    let at = next_wake(
        &d,
        &decide::State::default(),
        &params(),
        now,
        Duration::from_secs(300),
    );
    assert_eq!(at, now + DISK_RECHECK);
    let idle = next_wake(
        &Decision::default(),
        &decide::State::default(),
        &params(),
        now,
        Duration::from_secs(300),
    );
    assert_eq!(
        idle,
        now + Duration::from_secs(300),
        "nothing due: the periodic resync"
    );
}

//! The README's demo, run in a short mode: on a private containerd + registry with a directory
//! history, every held revision becomes offline-safe except the `imagePullPolicy: Always` one, and
//! with the registry gone the kubelet's path starts exactly those from the cache.

use rollcache::report::Readiness;
use rollcache_testbed::demo::{DemoOptions, history};
use rollcache_testbed::deps::ContainerdVersion;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_shows_offline_rollbacks_and_explains_the_exception() {
    let opts = DemoOptions {
        containerd: ContainerdVersion::from_env().expect("ROLLCACHE_TEST_CONTAINERD"),
        base_mib: 2,
        ..Default::default()
    };
    let out = rollcache_testbed::demo::run(opts)
        .await
        .expect("demo runs; if containerd is missing run `make test`");
    let summary = &out.before.report.summary;
    assert_eq!(
        summary.get(&Readiness::OfflineSafe),
        Some(&7),
        "{summary:?}"
    );
    assert_eq!(
        summary.get(&Readiness::NeedsRegistry),
        Some(&1),
        "{summary:?}"
    );
    assert_eq!(summary.len(), 2, "{summary:?}");
    assert_eq!(out.before.images_desired, 8);
    assert_eq!(out.before.images_pinned, 8);
    assert_eq!(out.failed_offline.len(), 1, "{:?}", out.failed_offline);
    assert!(out.failed_offline[0].0.contains(history::DASHBOARD));
    assert_eq!(out.started_offline.len(), 7, "{:?}", out.started_offline);
}

//! The runtime as a trigger: an image removed behind rollcache's back (an operator's `crictl rmi`)
//! is pulled and pinned again within seconds of containerd's image event, not at the next periodic
//! resync (set to an hour here).

mod common;

use std::time::{Duration, Instant};

use common::Bed;
use rollcache::config::ConfigArgs;
use rollcache::node::cri_api::image_service_client::ImageServiceClient;
use rollcache::node::cri_api::{ImageSpec, RemoveImageRequest};
use rollcache::node::{ImageRuntime, PinOwner, unix_channel};
use tokio_util::sync::CancellationToken;

async fn wait_pinned(bed: &Bed, reference: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(i)) = bed.node.status(reference).await
            && i.pinned
            && i.pin_owner == PinOwner::Rollcache
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_image_is_restored_on_the_runtime_event() {
    let mut bed = Bed::start().await;
    let (reference, _, _) = bed.push_small(7, "ops/console:1.0");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("deploy.yaml"),
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: console\n  namespace: ops\nspec:\n  template:\n    spec:\n      containers:\n      - name: main\n        image: {reference}\n        imagePullPolicy: IfNotPresent\n"
        ),
    )
    .unwrap();
    let args = ConfigArgs {
        containerd_socket: Some(bed.containerd.socket()),
        from_dir: Some(dir.path().to_owned()),
        no_kubernetes: true,
        start_jitter: Some("0s".into()),
        resync_interval: Some("1h".into()),
        // The test bed's containerd shares the machine's disk, whatever else fills it.
        disk_budget_percent: Some(100),
        metrics_addr: Some("127.0.0.1:0".into()),
        admin_addr: Some("127.0.0.1:1".into()),
        ..Default::default()
    };
    let cancel = CancellationToken::new();
    let daemon = tokio::spawn(rollcache::commands::run::run_until(args, cancel.clone()));
    assert!(
        wait_pinned(&bed, &reference, Duration::from_secs(20)).await,
        "first pull and pin"
    );

    // Remove it the way an operator would (CRI RemoveImage removes every name of the image).
    let mut cri = ImageServiceClient::new(unix_channel(&bed.containerd.socket()));
    cri.remove_image(RemoveImageRequest {
        image: Some(ImageSpec {
            image: reference.clone(),
            ..Default::default()
        }),
    })
    .await
    .unwrap();
    assert!(bed.node.status(&reference).await.unwrap().is_none(), "gone");
    let removed = Instant::now();
    assert!(
        wait_pinned(&bed, &reference, Duration::from_secs(10)).await,
        "restored long before the hourly resync"
    );
    eprintln!("restored {:?} after removal", removed.elapsed());
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), daemon)
        .await
        .expect("stops promptly")
        .unwrap()
        .unwrap();
}

//! Hot reload of the config file as a ConfigMap mount changes it: a `..data` symlink swap applies
//! the new config (`pull_timeout` included); a bad file is rejected and the last good config stays.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rollcache::commands::run::follow_pull_timeout;
use rollcache::config::ConfigArgs;
use rollcache::config::reload::{self, ReloadOutcome};
use rollcache::node::{Deadlines, Node};
use tokio_util::sync::CancellationToken;

/// Lay out a directory the way the kubelet mounts a ConfigMap: `..data -> ..<ts>`, and
/// `config.yaml -> ..data/config.yaml`.
fn write_configmap_version(dir: &Path, version: u32, content: &str) {
    let versioned = dir.join(format!("..v{version}"));
    std::fs::create_dir(&versioned).unwrap();
    std::fs::write(versioned.join("config.yaml"), content).unwrap();
    let tmp = dir.join("..data_tmp");
    symlink(format!("..v{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    let link = dir.join("config.yaml");
    if link.symlink_metadata().is_err() {
        symlink("..data/config.yaml", &link).unwrap();
    }
}

async fn wait_for<T>(mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..100 {
        if let Some(v) = f() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not reached within 5 s");
}

#[tokio::test]
async fn configmap_swap_is_applied_and_bad_reload_keeps_last_good() {
    let dir = tempfile::tempdir().unwrap();
    write_configmap_version(dir.path(), 1, "extra_images: [busybox:1.36]\n");
    let args = ConfigArgs {
        config: Some(dir.path().join("config.yaml")),
        ..Default::default()
    };
    let initial = Arc::new(args.resolve().unwrap());
    assert_eq!(initial.extra_images, vec!["busybox:1.36"]);

    let outcomes = Arc::new(Mutex::new(Vec::<ReloadOutcome>::new()));
    let seen = outcomes.clone();
    let cancel = CancellationToken::new();
    let (mut rx, task) = reload::spawn(args, initial, cancel.clone(), move |o| {
        seen.lock().unwrap().push(o.clone())
    })
    .unwrap();

    write_configmap_version(
        dir.path(),
        2,
        "extra_images: [busybox:1.36, alpine:3.20]\nunpin_grace: 1m\n",
    );
    tokio::time::timeout(Duration::from_secs(5), rx.changed())
        .await
        .expect("reload within 5 s")
        .unwrap();
    let cfg = rx.borrow_and_update().clone();
    assert_eq!(cfg.extra_images, vec!["busybox:1.36", "alpine:3.20"]);
    assert_eq!(cfg.unpin_grace, Duration::from_secs(60));

    // A typo'd key is rejected; the channel keeps the last good config.
    write_configmap_version(dir.path(), 3, "extra_imagez: [nope]\n");
    let err = wait_for(|| {
        outcomes.lock().unwrap().iter().find_map(|o| match o {
            ReloadOutcome::Rejected { error } => Some(error.clone()),
            _ => None,
        })
    })
    .await;
    assert!(err.contains("extra_imagez"), "{err}");
    assert!(!rx.has_changed().unwrap());
    assert_eq!(rx.borrow().extra_images.len(), 2);

    // A restart-only option is applied to the value but flagged.
    write_configmap_version(dir.path(), 4, "containerd_socket: /other.sock\n");
    tokio::time::timeout(Duration::from_secs(5), rx.changed())
        .await
        .expect("reload within 5 s")
        .unwrap();
    let flagged = wait_for(|| {
        outcomes.lock().unwrap().iter().find_map(|o| match o {
            ReloadOutcome::Applied { restart_needed } if !restart_needed.is_empty() => {
                Some(restart_needed.clone())
            }
            _ => None,
        })
    })
    .await;
    assert_eq!(flagged, vec!["containerd_socket"]);

    cancel.cancel();
    task.await.unwrap();
}

/// `pull_timeout` applies on reload: the runtime client's pull deadline follows the config (for
/// pulls started afterwards), without a restart.
#[tokio::test]
async fn pull_timeout_applies_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    write_configmap_version(dir.path(), 1, "pull_timeout: 10m\n");
    let args = ConfigArgs {
        config: Some(dir.path().join("config.yaml")),
        ..Default::default()
    };
    let initial = Arc::new(args.resolve().unwrap());
    let outcomes = Arc::new(Mutex::new(Vec::<ReloadOutcome>::new()));
    let seen = outcomes.clone();
    let cancel = CancellationToken::new();
    let (rx, task) = reload::spawn(args, initial.clone(), cancel.clone(), move |o| {
        seen.lock().unwrap().push(o.clone())
    })
    .unwrap();
    let node = Arc::new(Node::connect(
        dir.path().join("no-such.sock"),
        Deadlines {
            call: Duration::from_secs(10),
            pull: initial.pull_timeout,
        },
    ));
    let follow = tokio::spawn(follow_pull_timeout(node.clone(), rx, cancel.clone()));
    assert_eq!(node.pull_deadline(), Duration::from_secs(600));

    write_configmap_version(dir.path(), 2, "pull_timeout: 90s\n");
    wait_for(|| (node.pull_deadline() == Duration::from_secs(90)).then_some(())).await;
    assert!(
        outcomes.lock().unwrap().iter().all(
            |o| matches!(o, ReloadOutcome::Applied { restart_needed } if restart_needed.is_empty())
        ),
        "no restart asked for: {:?}",
        outcomes.lock().unwrap()
    );

    // Too long for a clock: rejected, the last good value stays.
    write_configmap_version(dir.path(), 3, "pull_timeout: 1000000000000y\n");
    let err = wait_for(|| {
        outcomes.lock().unwrap().iter().find_map(|o| match o {
            ReloadOutcome::Rejected { error } => Some(error.clone()),
            _ => None,
        })
    })
    .await;
    assert!(err.contains("pull_timeout"), "{err}");
    assert_eq!(node.pull_deadline(), Duration::from_secs(90));

    cancel.cancel();
    task.await.unwrap();
    follow.await.unwrap();
}

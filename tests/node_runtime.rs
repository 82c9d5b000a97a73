//! The node adapter against a real containerd (1.7 by default, 2.x with
//! `ROLLCACHE_TEST_CONTAINERD=2`) and a real registry, each test in its own temp dirs and ports.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rollcache::node::containerd::ImageRecord;
use rollcache::node::{
    Deadlines, ImageRuntime, MARKER_LABEL, Node, NodeError, PINNED_LABEL, PinOutcome, PinOwner,
    PullOutcome, RegistryAuth, UnpinOutcome,
};
use rollcache_testbed::oci::{ImageSpec, LayerSpec, Platform};

async fn records_of(node: &Node, id: &str, reference: &str) -> Vec<ImageRecord> {
    let repo = reference
        .rsplit_once(':')
        .map(|(r, _)| r)
        .unwrap_or(reference);
    node.containerd()
        .list()
        .await
        .expect("list records")
        .into_iter()
        .filter(|r| r.name == id || r.name == reference || r.name.starts_with(&format!("{repo}@")))
        .collect()
}

async fn cri_pinned(node: &Node, image: &str) -> bool {
    node.cri()
        .status(image)
        .await
        .unwrap()
        .expect("present")
        .pinned
}

#[tokio::test]
async fn pulls_a_large_image_by_tag_and_a_small_one_by_digest() {
    let mut bed = Bed::start().await;
    let big = ImageSpec {
        platform: Platform::linux_amd64(),
        layers: vec![
            LayerSpec::new(100, 40 * MIB, 0),
            LayerSpec::new(101, 12 * MIB, 0),
        ],
        label: "big".into(),
    };
    let (big_ref, big_built, big_digest) = bed.push(&big, "big/app:v1");
    assert!(big_built.compressed_size() >= 50 * MIB);
    let (small_ref, small_built, small_digest) = bed.push_small(2, "small/app:v1");

    let pulled = bed.node.pull(&big_ref, None).await.expect("pull by tag");
    let PullOutcome::Pulled(info) = pulled else {
        panic!("expected a pull: {pulled:?}")
    };
    assert_eq!(info.id, big_built.config_digest);
    assert_eq!(info.digest(), Some(big_digest.as_str()));
    assert!(info.repo_tags.contains(&big_ref), "{info:?}");
    assert!(info.size >= 50 * MIB, "size {}", info.size);

    let by_digest = format!("{}/small/app@{small_digest}", bed.registry.addr());
    let pulled = bed
        .node
        .pull(&by_digest, None)
        .await
        .expect("pull by digest");
    let PullOutcome::Pulled(info) = pulled else {
        panic!("expected a pull: {pulled:?}")
    };
    assert_eq!(info.id, small_built.config_digest);
    assert!(info.repo_digests.contains(&by_digest), "{info:?}");
    assert!(info.repo_tags.is_empty(), "pulled by digest only: {info:?}");
    assert!(
        bed.node.status(&small_ref).await.unwrap().is_none(),
        "the tag was never pulled"
    );

    let list = bed.node.list().await.unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    let fs = bed.node.fs_info().await.unwrap();
    // Usage is sampled periodically by containerd, so only its shape is checked here.
    assert!(!fs.mountpoint.is_empty(), "{fs:?}");
    assert!(
        fs.capacity_bytes.is_some_and(|c| c >= fs.used_bytes),
        "{fs:?}"
    );
}

#[tokio::test]
async fn multi_arch_index_resolves_to_the_node_platform() {
    let mut bed = Bed::start().await;
    let spec = |arch: Platform, seed| ImageSpec {
        platform: arch,
        layers: vec![LayerSpec::new(seed, 128 * 1024, 50)],
        label: "multi".into(),
    };
    let index = need(bed.layout.index(&[
        spec(Platform::linux_arm64(), 31),
        spec(Platform::linux_amd64(), 30),
    ]));
    let digest =
        need(
            bed.layout
                .tag_and_push(&index.index, &bed.registry.addr(), "multi/app:1", None),
        );
    assert_eq!(digest, index.index.digest);
    let reference = bed.reference("multi/app:1");
    let info = bed
        .node
        .pull(&reference, None)
        .await
        .unwrap()
        .image()
        .clone();
    let amd64 = index.for_platform(&Platform::linux_amd64()).unwrap();
    let arm64 = index.for_platform(&Platform::linux_arm64()).unwrap();
    assert_eq!(info.id, amd64.config_digest, "the amd64 image was chosen");
    assert_ne!(info.id, arm64.config_digest);
    assert_eq!(
        info.digest(),
        Some(index.index.digest.as_str()),
        "CRI reports the index digest"
    );
}

#[tokio::test]
async fn a_present_image_is_not_pulled_again() {
    let mut bed = Bed::start().await;
    let (reference, built, _) = bed.push_small(3, "cached/app:1");
    assert!(matches!(
        bed.node.pull(&reference, None).await.unwrap(),
        PullOutcome::Pulled(_)
    ));
    let manifest_gets = bed.registry.request_count("/v2/cached/app/manifests/");
    assert!(manifest_gets > 0, "the first pull fetched the manifest");

    let again = bed.node.pull(&reference, None).await.unwrap();
    assert!(matches!(again, PullOutcome::AlreadyPresent(_)), "{again:?}");
    assert_eq!(
        bed.registry.request_count("/v2/cached/app/manifests/"),
        manifest_gets
    );

    // And with the registry gone, the cached image still counts as present.
    bed.registry.stop();
    let offline = bed
        .node
        .pull(&reference, None)
        .await
        .expect("no registry needed");
    assert_eq!(
        offline,
        PullOutcome::AlreadyPresent(offline.image().clone())
    );
    assert_eq!(offline.image().id, built.config_digest);
}

#[tokio::test]
async fn pin_shows_in_cri_and_unpin_clears_it() {
    let mut bed = Bed::start().await;
    let (reference, built, _) = bed.push_small(4, "pin/app:1");
    bed.node.pull(&reference, None).await.unwrap();
    assert!(!cri_pinned(&bed.node, &reference).await);

    assert_eq!(bed.node.pin(&reference).await.unwrap(), PinOutcome::Pinned);
    assert!(
        bed.node.wait_pinned(&reference, true).await.unwrap(),
        "CRI reports pinned"
    );
    let records = records_of(&bed.node, &built.config_digest, &reference).await;
    assert_eq!(
        records.len(),
        3,
        "tag, repo@digest and config records: {records:?}"
    );
    for r in &records {
        assert_eq!(
            r.labels.get(PINNED_LABEL).map(String::as_str),
            Some("pinned"),
            "{r:?}"
        );
        assert_eq!(
            r.labels.get(MARKER_LABEL).map(String::as_str),
            Some("true"),
            "{r:?}"
        );
    }
    let listed = bed.node.list().await.unwrap();
    assert!(
        listed
            .iter()
            .all(|i| i.pinned && i.pin_owner == PinOwner::Rollcache),
        "{listed:?}"
    );
    assert_eq!(
        bed.node.pin(&reference).await.unwrap(),
        PinOutcome::AlreadyPinned
    );

    assert_eq!(
        bed.node.unpin(&reference).await.unwrap(),
        UnpinOutcome::Unpinned
    );
    assert!(
        bed.node.wait_pinned(&reference, false).await.unwrap(),
        "CRI reports unpinned"
    );
    for r in records_of(&bed.node, &built.config_digest, &reference).await {
        assert!(
            !r.labels.contains_key(PINNED_LABEL) && !r.labels.contains_key(MARKER_LABEL),
            "{r:?}"
        );
    }
    assert_eq!(
        bed.node.unpin(&reference).await.unwrap(),
        UnpinOutcome::NotPinned
    );
    assert!(
        bed.node.status(&reference).await.unwrap().is_some(),
        "unpin never deletes"
    );
}

/// Why rollcache labels every record: CRI reports an image pinned when ANY of its records carries
/// the label, so a pin is only gone when no record carries it.
#[tokio::test]
async fn any_labelled_record_pins_the_image() {
    let mut bed = Bed::start().await;
    let (reference, built, _) = bed.push_small(5, "records/app:1");
    bed.node.pull(&reference, None).await.unwrap();
    let records = records_of(&bed.node, &built.config_digest, &reference).await;
    let ctd = bed.node.containerd();
    for r in &records {
        ctd.update_labels(r, &[(PINNED_LABEL, Some("pinned"))])
            .await
            .unwrap();
        assert!(
            bed.node.wait_pinned(&reference, true).await.unwrap(),
            "only {} labelled",
            r.name
        );
        let fresh = records_of(&bed.node, &built.config_digest, &reference).await;
        let me = fresh.iter().find(|f| f.name == r.name).unwrap();
        ctd.update_labels(me, &[(PINNED_LABEL, None)])
            .await
            .unwrap();
        assert!(
            bed.node.wait_pinned(&reference, false).await.unwrap(),
            "label of {} removed",
            r.name
        );
    }
}

#[tokio::test]
async fn a_pin_set_by_someone_else_is_never_removed() {
    let mut bed = Bed::start().await;
    let (reference, built, _) = bed.push_small(6, "foreign/app:1");
    bed.node.pull(&reference, None).await.unwrap();
    // Another party (an operator with `ctr image label`) pins the tag record.
    let records = records_of(&bed.node, &built.config_digest, &reference).await;
    let tag = records.iter().find(|r| r.name == reference).unwrap();
    bed.node
        .containerd()
        .update_labels(tag, &[(PINNED_LABEL, Some("pinned"))])
        .await
        .unwrap();
    assert!(bed.node.wait_pinned(&reference, true).await.unwrap());

    let status = bed.node.status(&reference).await.unwrap().unwrap();
    assert_eq!(status.pin_owner, PinOwner::Other);
    assert_eq!(
        bed.node.pin(&reference).await.unwrap(),
        PinOutcome::PinnedByOther
    );
    assert_eq!(
        bed.node.unpin(&reference).await.unwrap(),
        UnpinOutcome::PinnedByOther
    );
    assert!(cri_pinned(&bed.node, &reference).await, "still pinned");
    for r in records_of(&bed.node, &built.config_digest, &reference).await {
        assert!(
            !r.labels.contains_key(MARKER_LABEL),
            "rollcache added no marker: {r:?}"
        );
        assert_eq!(
            r.labels.contains_key(PINNED_LABEL),
            r.name == reference,
            "{r:?}"
        );
    }
}

#[tokio::test]
async fn authenticated_pull_needs_the_credentials() {
    let mut bed = Bed::start_with(Some(("alice", "wonderland"))).await;
    let (reference, built, _) = bed.push_small(7, "private/app:1");

    let err = bed.node.pull(&reference, None).await.unwrap_err();
    assert!(matches!(err, NodeError::Unauthorized { .. }), "{err:?}");
    let wrong = RegistryAuth::basic("alice", "not-the-password");
    let err = bed.node.pull(&reference, Some(&wrong)).await.unwrap_err();
    assert!(matches!(err, NodeError::Unauthorized { .. }), "{err:?}");
    assert!(!err.to_string().contains("not-the-password"), "{err}");

    let right = RegistryAuth::basic("alice", "wonderland").with_server(bed.registry.addr());
    let info = bed.node.pull(&reference, Some(&right)).await.unwrap();
    assert_eq!(info.image().id, built.config_digest);
}

#[tokio::test]
async fn registry_down_fails_clearly_and_containerd_is_unharmed() {
    let mut bed = Bed::start().await;
    let (present, _, _) = bed.push_small(8, "down/app:1");
    let (absent, _, _) = bed.push_small(9, "down/app:2");
    bed.node.pull(&present, None).await.unwrap();
    bed.registry.stop();

    let node = Node::connect(
        bed.containerd.socket(),
        Deadlines {
            call: Duration::from_secs(10),
            pull: Duration::from_secs(20),
        },
    );
    let started = Instant::now();
    let err = node.pull(&absent, None).await.unwrap_err();
    assert!(
        matches!(err, NodeError::RegistryUnreachable { .. }),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "within the deadline"
    );
    assert!(err.to_string().contains(&absent), "{err}");
    assert_eq!(
        node.list().await.unwrap().len(),
        1,
        "containerd still answers"
    );

    bed.registry.start_again().await.unwrap();
    assert!(matches!(
        node.pull(&absent, None).await.unwrap(),
        PullOutcome::Pulled(_)
    ));
}

#[tokio::test]
async fn a_hung_registry_hits_the_deadline() {
    let bed = Bed::start().await;
    // A registry that accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    need(rollcache_testbed::registry::write_hosts_toml(
        &bed.containerd.hosts_dir(),
        &addr,
    ));
    let node = Node::connect(
        bed.containerd.socket(),
        Deadlines {
            call: Duration::from_secs(5),
            pull: Duration::from_secs(3),
        },
    );
    let started = Instant::now();
    let err = node
        .pull(&format!("{addr}/hung/app:1"), None)
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, NodeError::DeadlineExceeded { .. }), "{err:?}");
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(8),
        "{took:?}"
    );
    assert!(
        node.list().await.unwrap().is_empty(),
        "containerd still answers"
    );
    hold.abort();
}

#[tokio::test]
async fn nonexistent_and_malformed_references_fail_clearly() {
    let bed = Bed::start().await;
    let missing = bed.reference("nothing/here:1");
    let err = bed.node.pull(&missing, None).await.unwrap_err();
    assert!(matches!(err, NodeError::ImageNotFound { .. }), "{err:?}");
    assert!(err.to_string().contains(&missing), "{err}");

    for bad in ["UPPER/Case:1", "reg/app:tag:extra", "reg/app@sha256:nothex"] {
        let err = bed.node.pull(bad, None).await.unwrap_err();
        assert!(
            matches!(err, NodeError::InvalidReference { .. }),
            "{bad}: {err:?}"
        );
    }
    let err = bed.node.pin(&missing).await.unwrap_err();
    assert!(matches!(err, NodeError::ImageNotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn reconnects_after_containerd_restarts() {
    let mut bed = Bed::start().await;
    let (reference, _, _) = bed.push_small(10, "restart/app:1");
    bed.node.pull(&reference, None).await.unwrap();
    bed.node.pin(&reference).await.unwrap();

    bed.containerd.stop();
    let err = bed.node.list().await.unwrap_err();
    assert!(err.is_runtime_down(), "{err:?}");
    bed.containerd.restart().await.unwrap();

    let list = bed.node.list().await.expect("the same client reconnects");
    assert_eq!(list.len(), 1);
    assert!(
        list[0].pinned && list[0].pin_owner == PinOwner::Rollcache,
        "pins survive: {list:?}"
    );
}

#[tokio::test]
async fn pin_support_is_detected_and_leaves_no_trace() {
    let mut bed = Bed::start().await;
    let empty = bed.node.pin_support().await.unwrap();
    assert!(empty.honoured && !empty.verified, "{empty:?}");

    let (reference, _, _) = bed.push_small(11, "probe/app:1");
    bed.node.pull(&reference, None).await.unwrap();
    let support = bed.node.pin_support().await.unwrap();
    assert!(support.honoured && support.verified, "{support:?}");
    let after = bed.node.status(&reference).await.unwrap().unwrap();
    assert!(
        !after.pinned && after.pin_owner == PinOwner::None,
        "probe undone: {after:?}"
    );
}

#[tokio::test]
async fn a_missing_socket_is_reported_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::connect(dir.path().join("containerd.sock"), deadlines());
    let err = node.list().await.unwrap_err();
    assert!(matches!(err, NodeError::SocketMissing { .. }), "{err:?}");
    assert_eq!(err.metric_label(), "socket_missing");
}

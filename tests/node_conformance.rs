//! One conformance suite for the `ImageRuntime` contract, run against the in-memory runtime (which
//! the reconcile loop's unit tests use) and against the real `Node` on a private containerd and
//! registry: what one answers, the other answers too, or the loop's unit tests prove nothing.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rollcache::node::containerd::ImageRecord;
use rollcache::node::{
    ImageInfo, ImageRuntime, MemoryRuntime, Node, NodeError, PINNED_LABEL, PinOutcome, PinOwner,
    PullOutcome, UnpinOutcome,
};

/// A runtime under test and the registry behind it.
#[async_trait::async_trait]
trait Subject: Send {
    fn runtime(&self) -> &dyn ImageRuntime;
    /// Makes a small image pullable as `name_tag`; returns its tag and its digest reference.
    async fn publish(&mut self, seed: u8, name_tag: &str) -> (String, String);
    /// A reference in the same registry that nothing was published under.
    fn unpublished(&self, name_tag: &str) -> String;
    async fn set_registry_down(&mut self, down: bool);
    /// Pins the image the way another party would (`ctr image label`), without rollcache's marker.
    async fn pin_as_another_party(&mut self, reference: &str);
}

struct Memory(MemoryRuntime);

const MEMORY_REGISTRY: &str = "registry.memory.test";

#[async_trait::async_trait]
impl Subject for Memory {
    fn runtime(&self) -> &dyn ImageRuntime {
        &self.0
    }

    async fn publish(&mut self, seed: u8, name_tag: &str) -> (String, String) {
        let reference = self.unpublished(name_tag);
        let remote = self.0.publish(&reference, 1024 * u64::from(seed));
        let repo = reference.rsplit_once(':').map_or(&*reference, |(r, _)| r);
        (reference.clone(), format!("{repo}@{}", remote.digest))
    }

    fn unpublished(&self, name_tag: &str) -> String {
        format!("{MEMORY_REGISTRY}/{name_tag}")
    }

    async fn set_registry_down(&mut self, down: bool) {
        self.0.set_registry_down(down);
    }

    async fn pin_as_another_party(&mut self, reference: &str) {
        self.0.pin_by_other(reference).expect("present");
    }
}

struct Containerd(Bed);

#[async_trait::async_trait]
impl Subject for Containerd {
    fn runtime(&self) -> &dyn ImageRuntime {
        &self.0.node
    }

    async fn publish(&mut self, seed: u8, name_tag: &str) -> (String, String) {
        let (reference, _, digest) = self.0.push_small(u64::from(seed), name_tag);
        let repo = reference.rsplit_once(':').map_or(&*reference, |(r, _)| r);
        (reference.clone(), format!("{repo}@{digest}"))
    }

    fn unpublished(&self, name_tag: &str) -> String {
        self.0.reference(name_tag)
    }

    async fn set_registry_down(&mut self, down: bool) {
        if down {
            self.0.registry.stop();
        } else {
            self.0
                .registry
                .start_again()
                .await
                .expect("registry restarts");
        }
    }

    async fn pin_as_another_party(&mut self, reference: &str) {
        let node: &Node = &self.0.node;
        let record: ImageRecord = node
            .containerd()
            .list()
            .await
            .expect("list records")
            .into_iter()
            .find(|r| r.name == reference)
            .expect("the tag's record");
        node.containerd()
            .update_labels(&record, &[(PINNED_LABEL, Some("pinned"))])
            .await
            .expect("label");
    }
}

/// CRI reports a label change once containerd's image store has seen it: wait for it, briefly.
async fn settled(s: &dyn Subject, reference: &str, pinned: bool) -> ImageInfo {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let info = s
            .runtime()
            .status(reference)
            .await
            .expect("status")
            .expect("present");
        if info.pinned == pinned || Instant::now() > until {
            return info;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A pull makes an absent image present once; after that the registry is not needed for it, and
/// an absent image with the registry gone fails as unreachable until it is back.
async fn pull_once_then_from_the_cache(s: &mut dyn Subject) {
    let (first, _) = s.publish(1, "conf/app:1").await;
    let (second, _) = s.publish(2, "conf/app:2").await;
    let rt = s.runtime();
    assert_eq!(rt.status(&first).await.unwrap(), None, "not pulled yet");
    let PullOutcome::Pulled(info) = rt.pull(&first, None).await.unwrap() else {
        panic!("the first pull pulls");
    };
    assert!(info.repo_tags.contains(&first), "{info:?}");
    assert!(!info.pinned, "{info:?}");
    assert_eq!(info.pin_owner, PinOwner::None);
    let status = rt.status(&first).await.unwrap().expect("present");
    assert_eq!(status.id, info.id);
    let again = rt.pull(&first, None).await.unwrap();
    assert_eq!(again, PullOutcome::AlreadyPresent(status.clone()));

    s.set_registry_down(true).await;
    let rt = s.runtime();
    let offline = rt.pull(&first, None).await.expect("no registry needed");
    assert!(
        matches!(offline, PullOutcome::AlreadyPresent(_)),
        "{offline:?}"
    );
    let err = rt.pull(&second, None).await.unwrap_err();
    assert!(
        matches!(err, NodeError::RegistryUnreachable { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(&second), "{err}");
    assert_eq!(
        rt.list().await.unwrap().len(),
        1,
        "the runtime still answers"
    );

    s.set_registry_down(false).await;
    let rt = s.runtime();
    assert!(matches!(
        rt.pull(&second, None).await.unwrap(),
        PullOutcome::Pulled(_)
    ));
    let mut ids: Vec<String> = rt.list().await.unwrap().into_iter().map(|i| i.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 2, "{ids:?}");
}

/// A pull by digest names the digest, not the tag: the tag is not present until pulled.
async fn a_digest_pull_names_no_tag(s: &mut dyn Subject) {
    let (tag, digest) = s.publish(3, "conf/digest:1").await;
    let rt = s.runtime();
    let PullOutcome::Pulled(info) = rt.pull(&digest, None).await.unwrap() else {
        panic!("the first pull pulls");
    };
    assert!(info.repo_digests.contains(&digest), "{info:?}");
    assert!(info.repo_tags.is_empty(), "pulled by digest only: {info:?}");
    assert_eq!(
        rt.status(&tag).await.unwrap(),
        None,
        "the tag was never pulled"
    );
    let by_digest = rt.status(&digest).await.unwrap().expect("present");
    assert_eq!(by_digest.id, info.id);

    let PullOutcome::Pulled(tagged) = rt.pull(&tag, None).await.unwrap() else {
        panic!("the tag is pulled");
    };
    assert_eq!(tagged.id, info.id, "same image under both names");
    assert!(tagged.repo_tags.contains(&tag), "{tagged:?}");
}

/// rollcache's pins are rollcache's to remove; another party's pin is never touched.
async fn pins_belong_to_whoever_set_them(s: &mut dyn Subject) {
    let (ours, _) = s.publish(4, "conf/pin:1").await;
    let (theirs, _) = s.publish(5, "conf/other:1").await;
    for r in [&ours, &theirs] {
        s.runtime().pull(r, None).await.unwrap();
    }

    assert_eq!(s.runtime().pin(&ours).await.unwrap(), PinOutcome::Pinned);
    let info = settled(s, &ours, true).await;
    assert!(info.pinned, "{info:?}");
    assert_eq!(info.pin_owner, PinOwner::Rollcache);
    let listed = s.runtime().list().await.unwrap();
    let listed = listed.iter().find(|i| i.id == info.id).expect("listed");
    assert!(listed.pinned, "{listed:?}");
    assert_eq!(
        s.runtime().pin(&ours).await.unwrap(),
        PinOutcome::AlreadyPinned
    );
    assert_eq!(
        s.runtime().unpin(&ours).await.unwrap(),
        UnpinOutcome::Unpinned
    );
    let info = settled(s, &ours, false).await;
    assert!(!info.pinned, "{info:?}");
    assert_eq!(info.pin_owner, PinOwner::None);
    assert_eq!(
        s.runtime().unpin(&ours).await.unwrap(),
        UnpinOutcome::NotPinned
    );

    s.pin_as_another_party(&theirs).await;
    let info = settled(s, &theirs, true).await;
    assert_eq!(info.pin_owner, PinOwner::Other, "{info:?}");
    assert_eq!(
        s.runtime().pin(&theirs).await.unwrap(),
        PinOutcome::PinnedByOther
    );
    assert_eq!(
        s.runtime().unpin(&theirs).await.unwrap(),
        UnpinOutcome::PinnedByOther
    );
    let info = settled(s, &theirs, true).await;
    assert!(info.pinned, "another party's pin stays: {info:?}");
}

/// Missing images and malformed references fail with the same kinds of error, naming the image.
async fn failures_are_classified_alike(s: &mut dyn Subject) {
    let missing = s.unpublished("conf/nothing:1");
    let rt = s.runtime();
    assert_eq!(rt.status(&missing).await.unwrap(), None);
    let err = rt.pull(&missing, None).await.unwrap_err();
    assert!(matches!(err, NodeError::ImageNotFound { .. }), "{err:?}");
    assert!(err.to_string().contains(&missing), "{err}");
    for op in ["pin", "unpin"] {
        let err = match op {
            "pin" => rt.pin(&missing).await.map(|_| ()),
            _ => rt.unpin(&missing).await.map(|_| ()),
        }
        .unwrap_err();
        assert!(
            matches!(err, NodeError::ImageNotFound { .. }),
            "{op}: {err:?}"
        );
    }
    for bad in ["UPPER/Case:1", "reg/app:tag:extra", "reg/app@sha256:nothex"] {
        let err = rt.pull(bad, None).await.unwrap_err();
        assert!(
            matches!(err, NodeError::InvalidReference { .. }),
            "{bad}: {err:?}"
        );
    }
}

async fn memory() -> Memory {
    Memory(MemoryRuntime::new())
}

async fn containerd() -> Containerd {
    Containerd(Bed::start().await)
}

macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod on_memory {
            $(
                #[tokio::test]
                async fn $check() {
                    super::$check(&mut super::memory().await).await;
                }
            )*
        }
        mod on_containerd {
            $(
                #[tokio::test]
                async fn $check() {
                    super::$check(&mut super::containerd().await).await;
                }
            )*
        }
    };
}

conformance!(
    pull_once_then_from_the_cache,
    a_digest_pull_names_no_tag,
    pins_belong_to_whoever_set_them,
    failures_are_classified_alike,
);

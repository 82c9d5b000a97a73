//! An in-memory `ImageRuntime` twin (a registry and a node's image store) for unit tests of the
//! reconcile loop: same pin-ownership rules, injectable failures, a log of registry contacts.
//! `tests/node_conformance.rs` runs one suite against it and against the real `Node`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use sha2::{Digest, Sha256};

use super::{
    FsInfo, ImageInfo, ImageRuntime, NodeError, PinOutcome, PinOwner, PullOutcome, RegistryAuth,
    UnpinOutcome,
};

/// An image the fake registry serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteImage {
    pub reference: String,
    pub id: String,
    pub digest: String,
    pub size: u64,
    credentials: Option<(String, String)>,
}

#[derive(Default)]
struct State {
    registry: HashMap<String, RemoteImage>,
    images: BTreeMap<String, ImageInfo>,
    registry_down: bool,
    runtime_down: bool,
    fail_next: HashMap<String, NodeError>,
    registry_contacts: Vec<String>,
    fs: Option<FsInfo>,
}

/// The twin. Cheap to create; share it behind an `Arc`.
#[derive(Default)]
pub struct MemoryRuntime {
    state: Mutex<State>,
}

impl MemoryRuntime {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the state from the others.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `reference` pullable, `size` bytes.
    pub fn publish(&self, reference: &str, size: u64) -> RemoteImage {
        self.publish_inner(reference, size, None)
    }

    /// Makes `reference` pullable only with these credentials.
    pub fn publish_with_auth(
        &self,
        reference: &str,
        size: u64,
        user: &str,
        pass: &str,
    ) -> RemoteImage {
        self.publish_inner(reference, size, Some((user.into(), pass.into())))
    }

    fn publish_inner(
        &self,
        reference: &str,
        size: u64,
        creds: Option<(String, String)>,
    ) -> RemoteImage {
        let reference = normalize(reference);
        let remote = RemoteImage {
            id: fake_digest("config", &reference),
            digest: fake_digest("manifest", &reference),
            reference: reference.clone(),
            size,
            credentials: creds,
        };
        self.lock().registry.insert(reference, remote.clone());
        remote
    }

    /// Puts `reference` on the node directly (as if pulled before), without a registry contact.
    pub fn insert_present(&self, reference: &str, size: u64) -> ImageInfo {
        let remote = self.publish(reference, size);
        let info = info_of(&remote, remote.reference.contains('@'));
        self.lock().images.insert(info.id.clone(), info.clone());
        info
    }

    /// Pins `reference` as another party would (no rollcache marker).
    pub fn pin_by_other(&self, reference: &str) -> Result<(), NodeError> {
        let mut s = self.lock();
        let img = find_mut(&mut s.images, reference).ok_or_else(|| not_present(reference))?;
        img.pinned = true;
        img.pin_owner = PinOwner::Other;
        Ok(())
    }

    /// Makes every registry contact fail as unreachable (`true`) or work again (`false`).
    pub fn set_registry_down(&self, down: bool) {
        self.lock().registry_down = down;
    }

    /// Makes every call fail as if containerd were stopped.
    pub fn set_runtime_down(&self, down: bool) {
        self.lock().runtime_down = down;
    }

    /// The next pull of `reference` that reaches the registry fails with `error`.
    pub fn fail_next_pull(&self, reference: &str, error: NodeError) {
        self.lock().fail_next.insert(normalize(reference), error);
    }

    /// References for which the registry was contacted, in order.
    pub fn registry_contacts(&self) -> Vec<String> {
        self.lock().registry_contacts.clone()
    }

    pub fn set_fs_info(&self, fs: FsInfo) {
        self.lock().fs = Some(fs);
    }

    /// Deletes every unpinned image, as the kubelet's image GC would.
    pub fn garbage_collect(&self) -> Vec<String> {
        let mut s = self.lock();
        let gone: Vec<String> = s
            .images
            .values()
            .filter(|i| !i.pinned)
            .map(|i| i.id.clone())
            .collect();
        for id in &gone {
            s.images.remove(id);
        }
        gone
    }

    fn check_up(s: &State) -> Result<(), NodeError> {
        if s.runtime_down {
            return Err(NodeError::RuntimeUnavailable {
                socket: "memory".into(),
                op: "call",
                detail: "memory runtime set down".into(),
            });
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl ImageRuntime for MemoryRuntime {
    async fn list(&self) -> Result<Vec<ImageInfo>, NodeError> {
        let s = self.lock();
        Self::check_up(&s)?;
        Ok(s.images.values().cloned().collect())
    }

    async fn status(&self, image: &str) -> Result<Option<ImageInfo>, NodeError> {
        validate(image)?;
        let mut s = self.lock();
        Self::check_up(&s)?;
        Ok(find_mut(&mut s.images, image).map(|i| i.clone()))
    }

    async fn pull(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<PullOutcome, NodeError> {
        validate(image)?;
        let mut s = self.lock();
        Self::check_up(&s)?;
        if let Some(img) = find_mut(&mut s.images, image) {
            return Ok(PullOutcome::AlreadyPresent(img.clone()));
        }
        let reference = normalize(image);
        s.registry_contacts.push(reference.clone());
        if s.registry_down {
            return Err(NodeError::RegistryUnreachable {
                image: image.into(),
                detail: "memory registry set down".into(),
            });
        }
        if let Some(err) = s.fail_next.remove(&reference) {
            return Err(err);
        }
        let remote = s
            .registry
            .values()
            .find(|r| {
                r.reference == reference
                    || format!("{}@{}", repo_of(&r.reference), r.digest) == reference
            })
            .cloned()
            .ok_or_else(|| NodeError::ImageNotFound {
                image: image.into(),
                detail: "not in the memory registry".into(),
            })?;
        if let Some((user, pass)) = &remote.credentials {
            let ok = auth.is_some_and(|a| &a.username == user && &a.password == pass);
            if !ok {
                return Err(NodeError::Unauthorized {
                    image: image.into(),
                    detail: "memory registry needs credentials".into(),
                });
            }
        }
        // Like containerd: a pull by digest names the digest only, a pull by tag adds the tag.
        let by_digest = reference.contains('@');
        let info = info_of(&remote, by_digest);
        let entry = s
            .images
            .entry(info.id.clone())
            .or_insert_with(|| info.clone());
        if !by_digest && !entry.repo_tags.contains(&remote.reference) {
            entry.repo_tags.push(remote.reference.clone());
        }
        Ok(PullOutcome::Pulled(entry.clone()))
    }

    async fn pin(&self, image: &str) -> Result<PinOutcome, NodeError> {
        let mut s = self.lock();
        Self::check_up(&s)?;
        let img = find_mut(&mut s.images, image).ok_or_else(|| not_present(image))?;
        Ok(match img.pin_owner {
            PinOwner::Other => PinOutcome::PinnedByOther,
            PinOwner::Rollcache => PinOutcome::AlreadyPinned,
            PinOwner::None => {
                img.pinned = true;
                img.pin_owner = PinOwner::Rollcache;
                PinOutcome::Pinned
            }
        })
    }

    async fn unpin(&self, image: &str) -> Result<UnpinOutcome, NodeError> {
        let mut s = self.lock();
        Self::check_up(&s)?;
        let img = find_mut(&mut s.images, image).ok_or_else(|| not_present(image))?;
        Ok(match img.pin_owner {
            PinOwner::Other => UnpinOutcome::PinnedByOther,
            PinOwner::None => UnpinOutcome::NotPinned,
            PinOwner::Rollcache => {
                img.pinned = false;
                img.pin_owner = PinOwner::None;
                UnpinOutcome::Unpinned
            }
        })
    }

    async fn fs_info(&self) -> Result<FsInfo, NodeError> {
        let s = self.lock();
        Self::check_up(&s)?;
        Ok(s.fs.clone().unwrap_or_else(|| FsInfo {
            mountpoint: "/memory".into(),
            used_bytes: s.images.values().map(|i| i.size).sum(),
            inodes_used: None,
            capacity_bytes: None,
            available_bytes: None,
        }))
    }
}

fn fake_digest(kind: &str, reference: &str) -> String {
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(format!("{kind}:{reference}")))
    )
}

/// Adds `:latest` to a reference with neither tag nor digest.
fn normalize(reference: &str) -> String {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    if reference.contains('@') || last.contains(':') || reference.starts_with("sha256:") {
        reference.to_string()
    } else {
        format!("{reference}:latest")
    }
}

fn repo_of(reference: &str) -> &str {
    crate::image_ref::split_written(reference).0
}

fn info_of(remote: &RemoteImage, by_digest: bool) -> ImageInfo {
    ImageInfo {
        id: remote.id.clone(),
        repo_tags: if by_digest || remote.reference.contains('@') {
            vec![]
        } else {
            vec![remote.reference.clone()]
        },
        repo_digests: vec![format!("{}@{}", repo_of(&remote.reference), remote.digest)],
        size: remote.size,
        pinned: false,
        pin_owner: PinOwner::None,
    }
}

fn find_mut<'a>(
    images: &'a mut BTreeMap<String, ImageInfo>,
    image: &str,
) -> Option<&'a mut ImageInfo> {
    let wanted = normalize(image);
    images.values_mut().find(|i| {
        i.id == image || i.repo_tags.contains(&wanted) || i.repo_digests.iter().any(|d| d == image)
    })
}

fn not_present(image: &str) -> NodeError {
    NodeError::ImageNotFound {
        image: image.into(),
        detail: "not present on this node".into(),
    }
}

/// Rejects what containerd's reference parser rejects, with the same error kind.
fn validate(image: &str) -> Result<(), NodeError> {
    match crate::image_ref::ImageRef::parse(image) {
        Ok(_) => Ok(()),
        Err(e) => Err(NodeError::InvalidReference {
            image: image.into(),
            detail: e.reason,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pull_pin_unpin_follow_the_ownership_rules() {
        let rt = MemoryRuntime::new();
        rt.publish("reg/app:v1", 10);
        assert!(matches!(
            rt.pull("reg/app:v1", None).await.unwrap(),
            PullOutcome::Pulled(_)
        ));
        assert!(matches!(
            rt.pull("reg/app:v1", None).await.unwrap(),
            PullOutcome::AlreadyPresent(_)
        ));
        assert_eq!(rt.registry_contacts(), vec!["reg/app:v1".to_string()]);
        assert_eq!(rt.pin("reg/app:v1").await.unwrap(), PinOutcome::Pinned);
        assert_eq!(
            rt.pin("reg/app:v1").await.unwrap(),
            PinOutcome::AlreadyPinned
        );
        assert_eq!(
            rt.unpin("reg/app:v1").await.unwrap(),
            UnpinOutcome::Unpinned
        );
        assert_eq!(
            rt.unpin("reg/app:v1").await.unwrap(),
            UnpinOutcome::NotPinned
        );

        rt.insert_present("reg/base:1", 5);
        rt.pin_by_other("reg/base:1").unwrap();
        assert_eq!(
            rt.pin("reg/base:1").await.unwrap(),
            PinOutcome::PinnedByOther
        );
        assert_eq!(
            rt.unpin("reg/base:1").await.unwrap(),
            UnpinOutcome::PinnedByOther
        );
        assert_eq!(
            rt.garbage_collect().len(),
            1,
            "only the unpinned app image goes"
        );
    }

    #[tokio::test]
    async fn failures_are_injectable() {
        let rt = MemoryRuntime::new();
        rt.publish_with_auth("reg/private:1", 1, "u", "p");
        let err = rt.pull("reg/private:1", None).await.unwrap_err();
        assert_eq!(err.metric_label(), "unauthorized");
        rt.pull("reg/private:1", Some(&RegistryAuth::basic("u", "p")))
            .await
            .unwrap();
        rt.set_registry_down(true);
        let err = rt.pull("reg/other:1", None).await.unwrap_err();
        assert_eq!(err.metric_label(), "registry_unreachable");
        assert_eq!(
            rt.pull("Bad Ref", None).await.unwrap_err().metric_label(),
            "invalid_reference"
        );
    }
}

//! `Node`: the real `ImageRuntime` on containerd (CRI for images, the images service for pins).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::containerd::{ContainerdImages, ImageRecord};
use super::cri::CriImages;
use super::{
    Deadlines, FsInfo, ImageInfo, ImageRuntime, MARKER_LABEL, MARKER_VALUE, NodeError,
    PINNED_LABEL, PINNED_VALUE, PinOutcome, PinOwner, PinSupport, PullOutcome, RegistryAuth,
    UnpinOutcome, unix_channel,
};

/// How long the pinning probe waits for CRI to reflect a label change.
const PROBE_WAIT: Duration = Duration::from_secs(5);

/// The container runtime on one socket: CRI and containerd APIs over one channel.
#[derive(Clone)]
pub struct Node {
    cri: CriImages,
    containerd: ContainerdImages,
    socket: PathBuf,
}

impl Node {
    /// Prepares clients for `socket`; nothing is dialled until the first call.
    pub fn connect(socket: impl AsRef<Path>, deadlines: Deadlines) -> Self {
        let socket = socket.as_ref();
        let channel = unix_channel(socket);
        Self {
            cri: CriImages::new(channel.clone(), socket, deadlines),
            containerd: ContainerdImages::new(channel, socket, deadlines.call),
            socket: socket.to_path_buf(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Deadline of the pulls that start from now on (`pull_timeout` changed by a reload).
    pub fn set_pull_deadline(&self, deadline: std::time::Duration) {
        self.cri.set_pull_deadline(deadline);
    }

    pub fn pull_deadline(&self) -> std::time::Duration {
        self.cri.pull_deadline()
    }

    pub fn cri(&self) -> &CriImages {
        &self.cri
    }

    pub fn containerd(&self) -> &ContainerdImages {
        &self.containerd
    }

    /// Whether the runtime honours pin labels: by version, and, when an image is present, by
    /// pinning one and reading it back through CRI (the temporary pin is removed again).
    pub async fn pin_support(&self) -> Result<PinSupport, NodeError> {
        let version = self.containerd.version().await?;
        if !pin_honoured_by_version(&version) {
            return Ok(PinSupport {
                detail: format!(
                    "containerd {version} does not honour {PINNED_LABEL} (needs 1.7.10+ or 2.x): \
                     the kubelet's image GC may delete cached images; upgrade containerd"
                ),
                runtime_version: version,
                honoured: false,
                verified: false,
            });
        }
        let images = self.list().await?;
        // An image pinned already tells without changing anything.
        if let Some(img) = images.iter().find(|i| i.pin_owner != PinOwner::None) {
            let records = self.records_for(img).await?;
            if records.iter().any(has_pin) {
                return Ok(self.verdict(version, img.pinned, img.display_ref()));
            }
        }
        let Some(img) = images.iter().find(|i| i.pin_owner == PinOwner::None) else {
            return Ok(PinSupport {
                detail: format!(
                    "containerd {version} should honour pins; not verified (no image to try)"
                ),
                runtime_version: version,
                honoured: true,
                verified: false,
            });
        };
        let reference = img.id.clone();
        self.pin(&reference).await?;
        let seen = self.wait_pinned(&reference, true).await;
        let undo = self.unpin(&reference).await;
        let seen = seen?;
        undo?;
        // CRI applies the removal asynchronously too: until it shows, the image would look pinned
        // by someone else to the next list or status call.
        self.settle(&reference, false).await?;
        Ok(self.verdict(version, seen, &reference))
    }

    fn verdict(&self, version: String, seen: bool, image: &str) -> PinSupport {
        PinSupport {
            detail: if seen {
                format!("containerd {version} reports labelled image {image} as pinned")
            } else {
                format!(
                    "containerd {version} does not report labelled image {image} as pinned: \
                     the kubelet's image GC may delete cached images"
                )
            },
            runtime_version: version,
            honoured: seen,
            verified: true,
        }
    }

    /// Polls CRI until `image` reports `pinned == want` (CRI applies label changes asynchronously).
    pub async fn wait_pinned(&self, image: &str, want: bool) -> Result<bool, NodeError> {
        let start = tokio::time::Instant::now();
        loop {
            let pinned = self.cri.status(image).await?.is_some_and(|i| i.pinned);
            if pinned == want {
                return Ok(true);
            }
            if start.elapsed() > PROBE_WAIT {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until CRI shows a pin change containerd has made (`pinned` is the state it should
    /// show); warns when it does not within the probe's wait.
    pub async fn settle(&self, image: &str, pinned: bool) -> Result<(), NodeError> {
        if !self.wait_pinned(image, pinned).await? {
            tracing::warn!(
                image,
                pinned,
                "the labels are set, but CRI does not report the change yet; the kubelet sees it once CRI does"
            );
        }
        Ok(())
    }

    /// The containerd records of one CRI image: those named by its id, tags and repo digests.
    async fn records_for(&self, info: &ImageInfo) -> Result<Vec<ImageRecord>, NodeError> {
        let names = names_of(info);
        let wanted: Vec<&str> = names.iter().copied().collect();
        Ok(self
            .containerd
            .list_named(&wanted)
            .await?
            .into_iter()
            .filter(|r| names.contains(r.name.as_str()))
            .collect())
    }

    async fn present(&self, image: &str) -> Result<ImageInfo, NodeError> {
        self.cri
            .status(image)
            .await?
            .ok_or_else(|| NodeError::ImageNotFound {
                image: image.to_string(),
                detail: "not present on this node".into(),
            })
    }
}

#[async_trait::async_trait]
impl ImageRuntime for Node {
    async fn list(&self) -> Result<Vec<ImageInfo>, NodeError> {
        let images = self.cri.list().await?;
        let records = self.containerd.list().await?;
        let by_name: HashMap<&str, &ImageRecord> =
            records.iter().map(|r| (r.name.as_str(), r)).collect();
        Ok(images
            .into_iter()
            .map(|mut img| {
                let mine: Vec<&ImageRecord> = names_of(&img)
                    .iter()
                    .filter_map(|n| by_name.get(n).copied())
                    .collect();
                img.pin_owner = owner_of(img.pinned, &mine);
                img
            })
            .collect())
    }

    async fn status(&self, image: &str) -> Result<Option<ImageInfo>, NodeError> {
        let Some(mut img) = self.cri.status(image).await? else {
            return Ok(None);
        };
        let records = self.records_for(&img).await?;
        img.pin_owner = owner_of(img.pinned, &records.iter().collect::<Vec<_>>());
        Ok(Some(img))
    }

    async fn pull(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<PullOutcome, NodeError> {
        if let Some(img) = self.status(image).await? {
            return Ok(PullOutcome::AlreadyPresent(img));
        }
        let image_ref = self.cri.pull(image, auth).await?;
        tracing::debug!(image, image_ref, "pulled");
        let img = self
            .status(&image_ref)
            .await?
            .ok_or_else(|| NodeError::Runtime {
                op: "pull",
                subject: image.to_string(),
                code: tonic::Code::Unknown,
                message: format!("pulled as {image_ref} but the image is not listed afterwards"),
            })?;
        Ok(PullOutcome::Pulled(img))
    }

    async fn pin(&self, image: &str) -> Result<PinOutcome, NodeError> {
        let img = self.present(image).await?;
        let records = self.records_for(&img).await?;
        let refs: Vec<&ImageRecord> = records.iter().collect();
        match owner_of(img.pinned, &refs) {
            PinOwner::Other => {
                tracing::debug!(image, "pinned by another party; left alone");
                return Ok(PinOutcome::PinnedByOther);
            }
            PinOwner::Rollcache if records.iter().all(is_ours) => {
                return Ok(PinOutcome::AlreadyPinned);
            }
            PinOwner::Rollcache | PinOwner::None => {}
        }
        // Every record carries the label: CRI reports an image pinned when any of its refs is,
        // and a record left unlabelled would keep the image unpinned after a re-tag.
        for r in records.iter().filter(|r| !is_ours(r)) {
            self.containerd
                .update_labels(
                    r,
                    &[
                        (PINNED_LABEL, Some(PINNED_VALUE)),
                        (MARKER_LABEL, Some(MARKER_VALUE)),
                    ],
                )
                .await?;
        }
        tracing::debug!(image, id = %img.id, records = records.len(), "pinned");
        Ok(PinOutcome::Pinned)
    }

    async fn unpin(&self, image: &str) -> Result<UnpinOutcome, NodeError> {
        let img = self.present(image).await?;
        let records = self.records_for(&img).await?;
        let ours: Vec<&ImageRecord> = records.iter().filter(|r| has_marker(r)).collect();
        if ours.is_empty() {
            let refs: Vec<&ImageRecord> = records.iter().collect();
            return Ok(match owner_of(img.pinned, &refs) {
                PinOwner::None => UnpinOutcome::NotPinned,
                _ => UnpinOutcome::PinnedByOther,
            });
        }
        for r in ours {
            self.containerd
                .update_labels(r, &[(PINNED_LABEL, None), (MARKER_LABEL, None)])
                .await?;
        }
        tracing::debug!(image, id = %img.id, "unpinned");
        Ok(UnpinOutcome::Unpinned)
    }

    async fn fs_info(&self) -> Result<FsInfo, NodeError> {
        self.cri.fs_info().await
    }
}

fn names_of(img: &ImageInfo) -> HashSet<&str> {
    std::iter::once(img.id.as_str())
        .chain(img.repo_tags.iter().map(String::as_str))
        .chain(img.repo_digests.iter().map(String::as_str))
        .collect()
}

fn has_pin(r: &ImageRecord) -> bool {
    r.labels
        .get(PINNED_LABEL)
        .is_some_and(|v| v == PINNED_VALUE)
}

fn has_marker(r: &ImageRecord) -> bool {
    r.labels
        .get(MARKER_LABEL)
        .is_some_and(|v| v == MARKER_VALUE)
}

fn is_ours(r: &ImageRecord) -> bool {
    has_pin(r) && has_marker(r)
}

/// Who pinned an image, from its records' labels: a pin label without rollcache's marker, or a
/// CRI pin without any label (runtime config), is another party's.
fn owner_of(cri_pinned: bool, records: &[&ImageRecord]) -> PinOwner {
    if records.iter().any(|r| has_pin(r) && !has_marker(r)) {
        PinOwner::Other
    } else if records.iter().any(|r| is_ours(r)) {
        PinOwner::Rollcache
    } else if cri_pinned {
        PinOwner::Other
    } else {
        PinOwner::None
    }
}

/// containerd honours `io.cri-containerd.pinned` from 1.7.10 and in every 2.x.
pub fn pin_honoured_by_version(version: &str) -> bool {
    let v = version.trim().trim_start_matches('v');
    let mut parts = v
        .split(|c: char| !c.is_ascii_digit())
        .take(3)
        .map(|p| p.parse::<u64>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    let patch = parts.next().unwrap_or(0);
    major >= 2 || (major == 1 && (minor > 7 || (minor == 7 && patch >= 10)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_that_honour_pins() {
        for (v, want) in [
            ("1.7.24~ds1", true),
            ("v1.7.10", true),
            ("1.7.9", false),
            ("1.6.20~ds1", false),
            ("2.1.9+unknown", true),
            ("v2.0.0", true),
            ("", false),
        ] {
            assert_eq!(pin_honoured_by_version(v), want, "{v}");
        }
    }
}

//! Plain rollcache types the node adapter returns (no protobuf leaks out of `node`).

use std::time::Duration;

/// One image as the runtime reports it (CRI view plus who pinned it, from containerd labels).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImageInfo {
    /// The image id: the config digest (`sha256:…`).
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    /// Size as reported by CRI (unpacked content size known to containerd).
    pub size: u64,
    /// Whether CRI reports the image as pinned (kubelet GC skips it).
    pub pinned: bool,
    pub pin_owner: PinOwner,
}

impl ImageInfo {
    /// The most readable reference: first tag, else first repo digest, else the id.
    pub fn display_ref(&self) -> &str {
        self.repo_tags
            .first()
            .or(self.repo_digests.first())
            .map(String::as_str)
            .unwrap_or(&self.id)
    }

    /// The manifest digest (`sha256:…`) from the first repo digest, if any.
    pub fn digest(&self) -> Option<&str> {
        self.repo_digests
            .first()
            .and_then(|d| d.rsplit_once('@'))
            .map(|(_, digest)| digest)
    }
}

/// Who holds a pin on an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PinOwner {
    /// Not pinned.
    None,
    /// Pinned by rollcache (its marker label is present): rollcache may unpin it.
    Rollcache,
    /// Pinned by someone else (label without rollcache's marker, or pinned by runtime config):
    /// rollcache never touches it.
    Other,
}

/// What `pull` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullOutcome {
    /// The image was present already; the registry was not contacted.
    AlreadyPresent(ImageInfo),
    Pulled(ImageInfo),
}

impl PullOutcome {
    pub fn image(&self) -> &ImageInfo {
        match self {
            Self::AlreadyPresent(i) | Self::Pulled(i) => i,
        }
    }
}

/// What `pin` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PinOutcome {
    Pinned,
    AlreadyPinned,
    /// Another party pinned it; rollcache left it alone (it stays pinned).
    PinnedByOther,
}

/// What `unpin` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnpinOutcome {
    Unpinned,
    /// Not pinned at all; nothing to do.
    NotPinned,
    /// Another party pinned it; rollcache left the pin in place.
    PinnedByOther,
}

/// The image filesystem's usage.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FsInfo {
    pub mountpoint: String,
    pub used_bytes: u64,
    pub inodes_used: Option<u64>,
    /// Total and available bytes of the filesystem, when rollcache can see the mountpoint
    /// (CRI does not report them).
    pub capacity_bytes: Option<u64>,
    pub available_bytes: Option<u64>,
}

/// Whether the runtime honours the pin label.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PinSupport {
    /// The runtime's version string, e.g. `1.7.24`.
    pub runtime_version: String,
    pub honoured: bool,
    /// True when checked by pinning an image and reading it back through CRI, false when
    /// only the version was checked (no image to try with).
    pub verified: bool,
    pub detail: String,
}

/// Deadlines for runtime calls: a hung registry or runtime never hangs the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// Status, list, labels, fs info.
    pub call: Duration,
    /// Pulls (they download).
    pub pull: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            call: Duration::from_secs(10),
            pull: Duration::from_secs(600),
        }
    }
}

/// Registry credentials for one pull: one type from the pull secret to the CRI call.
pub use crate::credentials::RegistryAuth;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_debug_redacts_secrets() {
        let a = RegistryAuth::basic("alice", "s3cr3t-pw").with_server("reg:5000");
        let shown = format!("{a:?}");
        assert!(!shown.contains("s3cr3t-pw"), "{shown}");
        assert!(shown.contains("alice") && shown.contains("<redacted>"));
        let t = format!("{:?}", RegistryAuth::identity_token("tok-123"));
        assert!(!t.contains("tok-123"), "{t}");
    }

    #[test]
    fn display_ref_and_digest() {
        let i = ImageInfo {
            id: "sha256:c".into(),
            repo_tags: vec![],
            repo_digests: vec!["r/a@sha256:m".into()],
            size: 1,
            pinned: false,
            pin_owner: PinOwner::None,
        };
        assert_eq!(i.display_ref(), "r/a@sha256:m");
        assert_eq!(i.digest(), Some("sha256:m"));
    }
}

//! CRI ImageService client on containerd's socket: pull (with credentials), status, list, fs info.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::Channel;

use super::cri_api::{
    self, AuthConfig, ImageFsInfoRequest, ImageSpec, ImageStatusRequest, ListImagesRequest,
    PullImageRequest, image_service_client::ImageServiceClient,
};
use super::error::{CallContext, NodeError};
use super::types::{Deadlines, FsInfo, ImageInfo, PinOwner, RegistryAuth};
use super::{MAX_MESSAGE_BYTES, call, request};

/// The CRI image service of one runtime socket.
#[derive(Clone)]
pub struct CriImages {
    client: ImageServiceClient<Channel>,
    socket: Arc<PathBuf>,
    deadlines: Deadlines,
    /// The pull deadline in milliseconds, shared by clones: a config reload changes it for the
    /// pulls that start afterwards.
    pull_deadline_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl CriImages {
    pub fn new(channel: Channel, socket: &Path, deadlines: Deadlines) -> Self {
        Self {
            client: ImageServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES),
            socket: Arc::new(socket.to_path_buf()),
            deadlines,
            pull_deadline_ms: Arc::new(std::sync::atomic::AtomicU64::new(millis(deadlines.pull))),
        }
    }

    /// Deadline of the pulls that start from now on.
    pub fn set_pull_deadline(&self, deadline: Duration) {
        self.pull_deadline_ms
            .store(millis(deadline), std::sync::atomic::Ordering::Relaxed);
    }

    pub fn pull_deadline(&self) -> Duration {
        Duration::from_millis(
            self.pull_deadline_ms
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    fn ctx<'a>(&'a self, op: &'static str, subject: &'a str, long: bool) -> CallContext<'a> {
        CallContext {
            op,
            subject,
            socket: &self.socket,
            deadline: if long {
                self.pull_deadline()
            } else {
                self.deadlines.call
            },
        }
    }

    /// Pulls `image` (always contacting the registry) and returns the image ref containerd reports.
    pub async fn pull(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<String, NodeError> {
        let ctx = self.ctx("pull", image, true);
        let msg = PullImageRequest {
            image: Some(spec(image)),
            auth: auth.map(|a| AuthConfig {
                username: a.username.clone(),
                password: a.password.clone(),
                identity_token: a.identity_token.clone(),
                server_address: server_url(&a.server_address),
                ..Default::default()
            }),
            sandbox_config: None,
        };
        let mut client = self.client.clone();
        let resp = call(&ctx, client.pull_image(request(msg, ctx.deadline))).await?;
        Ok(resp.image_ref)
    }

    /// The image `image` (tag, digest reference or id), or `None` when it is not present.
    pub async fn status(&self, image: &str) -> Result<Option<ImageInfo>, NodeError> {
        let ctx = self.ctx("read image status", image, false);
        let msg = ImageStatusRequest {
            image: Some(spec(image)),
            verbose: false,
        };
        let mut client = self.client.clone();
        let resp = call(&ctx, client.image_status(request(msg, ctx.deadline))).await?;
        Ok(resp.image.map(from_cri))
    }

    /// All images, in one call.
    pub async fn list(&self) -> Result<Vec<ImageInfo>, NodeError> {
        let ctx = self.ctx("list images", "(all)", false);
        let mut client = self.client.clone();
        let resp = call(
            &ctx,
            client.list_images(request(ListImagesRequest { filter: None }, ctx.deadline)),
        )
        .await?;
        Ok(resp.images.into_iter().map(from_cri).collect())
    }

    /// Usage of the image filesystem (the first one CRI reports), plus capacity when the
    /// mountpoint is visible to rollcache.
    pub async fn fs_info(&self) -> Result<FsInfo, NodeError> {
        let ctx = self.ctx("read image filesystem info", "(image fs)", false);
        let mut client = self.client.clone();
        let resp = call(
            &ctx,
            client.image_fs_info(request(ImageFsInfoRequest {}, ctx.deadline)),
        )
        .await?;
        let Some(fs) = resp.image_filesystems.into_iter().next() else {
            return Err(NodeError::Runtime {
                op: ctx.op,
                subject: ctx.subject.to_string(),
                code: tonic::Code::Unknown,
                message: "the runtime reported no image filesystem".into(),
            });
        };
        let mountpoint = fs.fs_id.map(|f| f.mountpoint).unwrap_or_default();
        let (capacity_bytes, available_bytes) = capacity(&mountpoint);
        Ok(FsInfo {
            used_bytes: fs.used_bytes.map(|v| v.value).unwrap_or(0),
            inodes_used: fs.inodes_used.map(|v| v.value),
            mountpoint,
            capacity_bytes,
            available_bytes,
        })
    }
}

/// containerd compares the host of the parsed server address with the registry host, and a bare
/// `host:port` does not parse as a URL: give it a scheme.
fn server_url(server: &str) -> String {
    if server.is_empty() || server.contains("://") {
        server.to_string()
    } else {
        format!("https://{server}")
    }
}

fn spec(image: &str) -> ImageSpec {
    ImageSpec {
        image: image.to_string(),
        ..Default::default()
    }
}

fn from_cri(i: cri_api::Image) -> ImageInfo {
    ImageInfo {
        id: i.id,
        repo_tags: i.repo_tags,
        repo_digests: i.repo_digests,
        size: i.size,
        pinned: i.pinned,
        // Refined from containerd labels by `Node`; CRI alone cannot tell who pinned.
        pin_owner: if i.pinned {
            PinOwner::Other
        } else {
            PinOwner::None
        },
    }
}

/// Total and available bytes of the filesystem holding `path`, if it is visible here.
fn capacity(path: &str) -> (Option<u64>, Option<u64>) {
    if path.is_empty() {
        return (None, None);
    }
    match rustix::fs::statvfs(path) {
        Ok(s) => (
            Some(s.f_blocks.saturating_mul(s.f_frsize)),
            Some(s.f_bavail.saturating_mul(s.f_frsize)),
        ),
        Err(_) => (None, None),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

//! The node adapter: containerd's CRI ImageService and images service over one unix-socket
//! channel, behind the small `ImageRuntime` trait a reconcile loop uses (with an in-memory twin).

pub mod containerd;
pub mod cri;
pub mod error;
pub mod events;
pub mod memory;
mod runtime;
pub mod types;

pub mod cri_api {
    #![allow(clippy::all)]
    tonic::include_proto!("runtime.v1");
}

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::NodeError;
pub use memory::MemoryRuntime;
pub use runtime::{Node, pin_honoured_by_version};
pub use types::{
    Deadlines, FsInfo, ImageInfo, PinOutcome, PinOwner, PinSupport, PullOutcome, RegistryAuth,
    UnpinOutcome,
};

use error::CallContext;

/// containerd's default socket.
pub const DEFAULT_SOCKET: &str = "/run/containerd/containerd.sock";
/// The containerd namespace the CRI plugin (and so the kubelet) uses.
pub const K8S_NAMESPACE: &str = "k8s.io";
/// The label containerd's CRI plugin reads to report an image as pinned.
pub const PINNED_LABEL: &str = "io.cri-containerd.pinned";
pub const PINNED_VALUE: &str = "pinned";
/// rollcache's own marker next to the pin label: only pins carrying it are rollcache's to remove.
pub const MARKER_LABEL: &str = "io.rollcache.pinned";
pub const MARKER_VALUE: &str = "true";

const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Slack on top of the gRPC deadline before rollcache gives up locally.
const LOCAL_SLACK: Duration = Duration::from_millis(500);

/// What a reconcile loop needs from the container runtime.
#[async_trait::async_trait]
pub trait ImageRuntime: Send + Sync {
    /// Every image on the node, with pin state and owner.
    async fn list(&self) -> Result<Vec<ImageInfo>, NodeError>;
    /// One image by tag, digest reference or id; `None` when absent.
    async fn status(&self, image: &str) -> Result<Option<ImageInfo>, NodeError>;
    /// Makes `image` present: does not contact the registry when it already is.
    async fn pull(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<PullOutcome, NodeError>;
    /// Pins `image` with rollcache's marker, unless another party pinned it.
    async fn pin(&self, image: &str) -> Result<PinOutcome, NodeError>;
    /// Removes rollcache's pin from `image`; never another party's.
    async fn unpin(&self, image: &str) -> Result<UnpinOutcome, NodeError>;
    /// Image filesystem usage.
    async fn fs_info(&self) -> Result<FsInfo, NodeError>;
}

/// A lazy tonic channel over a unix socket: connects on first use and reconnects after the
/// runtime restarts. Pass it to any generated client's `new`.
pub fn unix_channel(socket: &Path) -> tonic::transport::Channel {
    let socket: PathBuf = socket.to_path_buf();
    // The URI is required by tonic but unused: the connector dials the socket.
    tonic::transport::Endpoint::from_static("http://containerd.sock")
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
}

fn request<T>(msg: T, deadline: Duration) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(deadline);
    req
}

/// Runs one call under its deadline (sent to the server as grpc-timeout and enforced here too)
/// and classifies failures.
async fn call<T>(
    ctx: &CallContext<'_>,
    fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, NodeError> {
    match tokio::time::timeout(ctx.deadline + LOCAL_SLACK, fut).await {
        Err(_) => Err(ctx.deadline_exceeded()),
        Ok(Err(status)) => Err(ctx.classify(&status)),
        Ok(Ok(resp)) => Ok(resp.into_inner()),
    }
}

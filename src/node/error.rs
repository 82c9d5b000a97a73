//! The node adapter's error: what failed, on what, and what to do; built from tonic statuses.

use std::error::Error as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A failed call to the container runtime.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NodeError {
    #[error(
        "containerd socket {socket} does not exist: is containerd running and the socket mounted? \
         (set --socket / ROLLCACHE_CONTAINERD_SOCKET)"
    )]
    SocketMissing { socket: PathBuf },
    #[error(
        "permission denied on containerd socket {socket}: run rollcache as root or grant it access \
         to the socket"
    )]
    PermissionDenied { socket: PathBuf },
    #[error(
        "containerd at {socket} is unavailable ({op}): {detail}; check that containerd is running"
    )]
    RuntimeUnavailable {
        socket: PathBuf,
        op: &'static str,
        detail: String,
    },
    #[error("image {image} not found: check the name, tag or digest ({detail})")]
    ImageNotFound { image: String, detail: String },
    #[error("registry refused {image} as unauthorized: check the pull credentials ({detail})")]
    Unauthorized { image: String, detail: String },
    #[error(
        "registry of {image} unreachable: check network, DNS and the registry; retried later ({detail})"
    )]
    RegistryUnreachable { image: String, detail: String },
    #[error(
        "{op} of {subject} did not finish within {deadline:?}: runtime or registry slow or hung; \
         retried later (raise the deadline for large images)"
    )]
    DeadlineExceeded {
        op: &'static str,
        subject: String,
        deadline: Duration,
    },
    #[error("invalid image reference {image:?}: {detail}")]
    InvalidReference { image: String, detail: String },
    #[error("containerd failed to {op} {subject}: {code:?}: {message}")]
    Runtime {
        op: &'static str,
        subject: String,
        code: tonic::Code,
        message: String,
    },
}

impl NodeError {
    /// A low-cardinality label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::SocketMissing { .. } => "socket_missing",
            Self::PermissionDenied { .. } => "permission_denied",
            Self::RuntimeUnavailable { .. } => "runtime_unavailable",
            Self::ImageNotFound { .. } => "image_not_found",
            Self::Unauthorized { .. } => "unauthorized",
            Self::RegistryUnreachable { .. } => "registry_unreachable",
            Self::DeadlineExceeded { .. } => "deadline_exceeded",
            Self::InvalidReference { .. } => "invalid_reference",
            Self::Runtime { .. } => "runtime_error",
        }
    }

    /// Whether trying again later may succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::RuntimeUnavailable { .. }
                | Self::RegistryUnreachable { .. }
                | Self::DeadlineExceeded { .. }
                | Self::SocketMissing { .. }
                | Self::Runtime { .. }
        )
    }

    /// Whether the runtime itself (not a registry or the image) is the problem.
    pub fn is_runtime_down(&self) -> bool {
        matches!(
            self,
            Self::SocketMissing { .. }
                | Self::PermissionDenied { .. }
                | Self::RuntimeUnavailable { .. }
        )
    }
}

/// What was being done when a status came back.
pub(crate) struct CallContext<'a> {
    pub op: &'static str,
    pub subject: &'a str,
    pub socket: &'a Path,
    pub deadline: Duration,
}

impl CallContext<'_> {
    pub(crate) fn deadline_exceeded(&self) -> NodeError {
        NodeError::DeadlineExceeded {
            op: self.op,
            subject: self.subject.to_string(),
            deadline: self.deadline,
        }
    }

    /// Classifies a tonic status from a call made in this context.
    pub(crate) fn classify(&self, status: &tonic::Status) -> NodeError {
        let message = status.message().to_string();
        let lower = message.to_lowercase();
        if status.code() == tonic::Code::DeadlineExceeded
            || (status.code() == tonic::Code::Cancelled && lower.contains("timeout expired"))
        {
            return self.deadline_exceeded();
        }
        // Statuses made by tonic from a connection failure carry the cause as their source;
        // statuses sent by containerd do not.
        if status.source().is_some() {
            return self.classify_transport(status);
        }
        let image = self.subject.to_string();
        if lower.contains("unauthorized")
            || lower.contains("401 ")
            || lower.contains("authorization failed")
            || lower.contains("no basic auth credentials")
        {
            return NodeError::Unauthorized {
                image,
                detail: message,
            };
        }
        if lower.contains("invalid reference format")
            || lower.contains("failed to parse image reference")
            || lower.contains("must be lowercase")
            || lower.contains("repository name must")
            || status.code() == tonic::Code::InvalidArgument
        {
            return NodeError::InvalidReference {
                image,
                detail: message,
            };
        }
        if status.code() == tonic::Code::NotFound || lower.contains("not found") {
            return NodeError::ImageNotFound {
                image,
                detail: message,
            };
        }
        if lower.contains("connection refused")
            || lower.contains("no such host")
            || lower.contains("i/o timeout")
            || lower.contains("dial tcp")
            || lower.contains("network is unreachable")
            || lower.contains("connection reset")
            || lower.contains("tls handshake")
        {
            return NodeError::RegistryUnreachable {
                image,
                detail: message,
            };
        }
        if status.code() == tonic::Code::Unavailable {
            return NodeError::RuntimeUnavailable {
                socket: self.socket.to_path_buf(),
                op: self.op,
                detail: message,
            };
        }
        NodeError::Runtime {
            op: self.op,
            subject: self.subject.to_string(),
            code: status.code(),
            message,
        }
    }

    fn classify_transport(&self, status: &tonic::Status) -> NodeError {
        let socket = self.socket.to_path_buf();
        let mut cause: Option<&(dyn std::error::Error + 'static)> = status.source();
        let mut chain = Vec::new();
        while let Some(err) = cause {
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                match io.kind() {
                    std::io::ErrorKind::NotFound => return NodeError::SocketMissing { socket },
                    std::io::ErrorKind::PermissionDenied => {
                        return NodeError::PermissionDenied { socket };
                    }
                    _ => {}
                }
            }
            chain.push(err.to_string());
            cause = err.source();
        }
        if !self.socket.exists() {
            return NodeError::SocketMissing { socket };
        }
        NodeError::RuntimeUnavailable {
            socket,
            op: self.op,
            detail: if chain.is_empty() {
                status.message().to_string()
            } else {
                chain.join(": ")
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> CallContext<'static> {
        CallContext {
            op: "pull",
            subject: "reg/app:v1",
            socket: Path::new("/nonexistent/containerd.sock"),
            deadline: Duration::from_secs(1),
        }
    }

    #[test]
    fn classifies_server_messages() {
        let cases = [
            (
                tonic::Code::Unknown,
                "failed to pull and unpack image \"x\": failed to resolve reference \"x\": pull access denied, repository does not exist or may require authorization: server message: insufficient_scope: authorization failed",
                "unauthorized",
            ),
            (
                tonic::Code::Unknown,
                "failed to resolve reference \"x\": unexpected status from HEAD request to http://r/v2/a/manifests/v1: 401 Unauthorized",
                "unauthorized",
            ),
            (
                tonic::Code::NotFound,
                "failed to resolve reference \"r/a:nope\": r/a:nope: not found",
                "image_not_found",
            ),
            (
                tonic::Code::Unknown,
                "failed to parse image reference \"UP\": invalid reference format: repository name must be lowercase",
                "invalid_reference",
            ),
            (
                tonic::Code::Unknown,
                "failed to do request: Head \"http://127.0.0.1:1/v2/a/manifests/v1\": dial tcp 127.0.0.1:1: connect: connection refused",
                "registry_unreachable",
            ),
            (
                tonic::Code::DeadlineExceeded,
                "context deadline exceeded",
                "deadline_exceeded",
            ),
            (tonic::Code::Internal, "boom", "runtime_error"),
        ];
        for (code, msg, label) in cases {
            let got = ctx().classify(&tonic::Status::new(code, msg));
            assert_eq!(got.metric_label(), label, "{msg}: {got}");
        }
    }

    #[test]
    fn classifies_connection_failures_by_their_io_cause() {
        let status =
            |kind| tonic::Status::from_error(Box::new(std::io::Error::new(kind, "connecting")));
        let got = ctx().classify(&status(std::io::ErrorKind::PermissionDenied));
        assert_eq!(got.metric_label(), "permission_denied", "{got}");
        let got = ctx().classify(&status(std::io::ErrorKind::NotFound));
        assert_eq!(got.metric_label(), "socket_missing", "{got}");
        // A refused connection on a socket path that does not exist either: the socket is missing.
        let got = ctx().classify(&status(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(got.metric_label(), "socket_missing", "{got}");
    }

    #[test]
    fn messages_say_what_to_do() {
        let e = ctx().classify(&tonic::Status::new(tonic::Code::NotFound, "x: not found"));
        let text = e.to_string();
        assert!(
            text.contains("reg/app:v1") && text.contains("check"),
            "{text}"
        );
    }
}

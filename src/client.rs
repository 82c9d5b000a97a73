//! A small HTTP client for the CLI's `status` and `prefetch`: they talk to the running daemon's
//! admin listener (localhost; in a cluster through `kubectl exec`).

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the rollcache daemon at {addr}: {detail}. Is `rollcache run` running on this node? \
         (in a cluster: kubectl exec -n rollcache-system ds/rollcache -- rollcache {cmd})"
    )]
    Unreachable {
        addr: SocketAddr,
        cmd: &'static str,
        detail: String,
    },
    #[error("the daemon answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("the daemon did not answer within {0:?}")]
    Timeout(Duration),
}

/// Send one request to the daemon and return the body of a 2xx answer.
pub async fn request(
    addr: SocketAddr,
    method: hyper::Method,
    path: &str,
    body: Option<String>,
    cmd: &'static str,
    timeout: Duration,
) -> Result<String, ClientError> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .expect("static request parts are valid");
    let unreachable = |detail: String| ClientError::Unreachable { addr, cmd, detail };
    let resp = tokio::time::timeout(timeout, client.request(req))
        .await
        .map_err(|_| ClientError::Timeout(timeout))?
        .map_err(|e| unreachable(e.to_string()))?;
    let status = resp.status();
    let bytes = tokio::time::timeout(timeout, resp.into_body().collect())
        .await
        .map_err(|_| ClientError::Timeout(timeout))?
        .map_err(|e| unreachable(e.to_string()))?
        .to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if status.is_success() {
        Ok(text)
    } else {
        Err(ClientError::Status {
            status: status.as_u16(),
            body: text,
        })
    }
}

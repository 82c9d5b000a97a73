//! HTTP: `/metrics`, `/healthz`, `/readyz` on the metrics listener (the pod network may scrape it);
//! `GET /status` and `POST /prefetch` on the admin listener, bound to localhost by default: the
//! status names every namespace's workloads, images and registries.
//!
//! Routers are public so tests drive them without a port. Handlers only translate HTTP: the
//! prefetch itself is a command sent to the reconcile loop, which answers what it queued.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use crate::metrics::{Metrics, PrefetchResult};

/// What `POST /prefetch` accepts. Exactly one scope: everything (empty body or `{}`), a namespace,
/// a workload, or explicit images.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefetchRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `KIND/NAME` or `NAME` (any kind), within `namespace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
}

/// Most images one request may name.
pub const MAX_PREFETCH_IMAGES: usize = 1000;
/// Largest request body accepted by the admin API.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

impl PrefetchRequest {
    pub fn validate(&self) -> Result<(), String> {
        if self.workload.is_some() && self.namespace.is_none() {
            return Err("`workload` needs `namespace`".into());
        }
        if !self.images.is_empty() && (self.namespace.is_some() || self.workload.is_some()) {
            return Err("give either `images` or a `namespace`/`workload` scope, not both".into());
        }
        if self.images.len() > MAX_PREFETCH_IMAGES {
            return Err(format!(
                "{} images named; at most {MAX_PREFETCH_IMAGES} per request",
                self.images.len()
            ));
        }
        Ok(())
    }
}

/// What the reconcile loop answers to a prefetch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefetchAccepted {
    /// Images queued for pull (or already present and now pinned), canonical references.
    pub images: Vec<String>,
    /// Images already present.
    pub already_present: usize,
}

/// A prefetch handed to the reconcile loop; the loop replies once it has queued the work.
#[derive(Debug)]
pub struct PrefetchCommand {
    pub request: PrefetchRequest,
    pub reply: oneshot::Sender<Result<PrefetchAccepted, String>>,
}

/// Liveness and readiness as the daemon decides them.
#[derive(Debug, Default)]
pub struct Health {
    /// The runtime answered and every enabled source has synced once.
    pub ready: AtomicBool,
    /// Since when the container runtime has not answered (None: it answers).
    pub runtime_down_since: std::sync::Mutex<Option<std::time::Instant>>,
}

/// How long the runtime may stay unreachable before `/healthz` fails. A hostPath socket mount
/// goes stale when containerd restarts (the host gets a new socket file); only a pod restart
/// mounts the new one, so liveness must fail for the kubelet to do it.
pub const RUNTIME_LIVENESS_GRACE: Duration = Duration::from_secs(120);

impl Health {
    pub fn runtime_answered(&self) {
        *self
            .runtime_down_since
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
    }

    pub fn runtime_failed(&self, now: std::time::Instant) {
        self.runtime_down_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(now);
    }

    /// Alive unless the runtime has been unreachable for longer than `grace`.
    pub fn alive(&self, now: std::time::Instant, grace: Duration) -> bool {
        match *self
            .runtime_down_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
        {
            Some(since) => now.duration_since(since) < grace,
            None => true,
        }
    }
}

#[derive(Clone)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    /// The latest `/status` document.
    pub status: watch::Receiver<StatusDoc>,
    pub prefetch: mpsc::Sender<PrefetchCommand>,
}

/// `/metrics`, `/healthz`, `/readyz`.
pub fn metrics_router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// `POST /prefetch`, `/status`.
pub fn admin_router(state: HttpState) -> Router {
    Router::new()
        .route("/prefetch", post(prefetch))
        .route("/status", get(status))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn metrics(State(s): State<HttpState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

async fn healthz(State(s): State<HttpState>) -> Response {
    if s.health
        .alive(std::time::Instant::now(), RUNTIME_LIVENESS_GRACE)
    {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "container runtime unreachable for too long: restart to re-mount its socket\n",
        )
            .into_response()
    }
}

async fn readyz(State(s): State<HttpState>) -> Response {
    if s.health.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: runtime unreachable or a source has not synced yet (see `rollcache status`)\n",
        )
            .into_response()
    }
}

/// The `/status` document as it is kept between passes: serialized and gzip-compressed. On a
/// large cluster the report is megabytes of repetitive JSON (about 500 bytes per revision);
/// compressed it is a tenth of that, and it is only expanded when a client asks.
#[derive(Clone, Debug)]
pub struct StatusDoc {
    gzip: axum::body::Bytes,
}

impl StatusDoc {
    pub fn from_json(json: &[u8]) -> Self {
        use std::io::Write as _;
        let mut enc = flate2::write::GzEncoder::new(
            Vec::with_capacity(json.len() / 8),
            flate2::Compression::fast(),
        );
        // Writing to a Vec cannot fail.
        let _ = enc.write_all(json);
        let gzip = enc.finish().unwrap_or_default();
        Self { gzip: gzip.into() }
    }

    /// Serializes `value` straight into the compressor: the JSON text never exists whole (on a
    /// large history it is megabytes, the compressed form about a tenth of that).
    pub fn from_value<T: serde::Serialize>(value: &T) -> Result<Self, serde_json::Error> {
        let mut writer = std::io::BufWriter::with_capacity(
            64 * 1024,
            flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()),
        );
        serde_json::to_writer(&mut writer, value)?;
        let enc = writer
            .into_inner()
            .map_err(|e| serde_json::Error::io(e.into_error()))?;
        let gzip = enc.finish().map_err(serde_json::Error::io)?;
        Ok(Self { gzip: gzip.into() })
    }

    /// The document as JSON.
    pub fn json(&self) -> Vec<u8> {
        use std::io::Read as _;
        let mut out = Vec::with_capacity(self.gzip.len() * 8);
        // Compressed in this process by `from_json` or `from_value`: it decompresses.
        let _ = flate2::read::GzDecoder::new(&self.gzip[..]).read_to_end(&mut out);
        out
    }

    /// The compressed bytes (a gzip member).
    pub fn gzip(&self) -> &axum::body::Bytes {
        &self.gzip
    }
}

fn accepts_gzip(headers: &header::HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or_default().trim();
            let refused = parts.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

async fn status(State(s): State<HttpState>, headers: header::HeaderMap) -> Response {
    let doc = s.status.borrow().clone();
    if accepts_gzip(&headers) {
        (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CONTENT_ENCODING, "gzip"),
                (header::VARY, "accept-encoding"),
            ],
            doc.gzip().clone(),
        )
            .into_response()
    } else {
        (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::VARY, "accept-encoding"),
            ],
            doc.json(),
        )
            .into_response()
    }
}

fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (code, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// How long a prefetch waits for the reconcile loop to take it.
const PREFETCH_REPLY_TIMEOUT: Duration = Duration::from_secs(30);

async fn prefetch(State(s): State<HttpState>, body: axum::body::Bytes) -> Response {
    let request: PrefetchRequest = if body.iter().all(u8::is_ascii_whitespace) {
        PrefetchRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                s.metrics.prefetch_answered(PrefetchResult::Invalid);
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("invalid request body: {e}"),
                );
            }
        }
    };
    if let Err(e) = request.validate() {
        s.metrics.prefetch_answered(PrefetchResult::Invalid);
        return error(StatusCode::BAD_REQUEST, e);
    }
    let (reply, rx) = oneshot::channel();
    let cmd = PrefetchCommand { request, reply };
    if s.prefetch.try_send(cmd).is_err() {
        s.metrics.prefetch_answered(PrefetchResult::Busy);
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the reconcile loop is busy or stopping; try again",
        );
    }
    match tokio::time::timeout(PREFETCH_REPLY_TIMEOUT, rx).await {
        Ok(Ok(Ok(accepted))) => {
            s.metrics.prefetch_answered(PrefetchResult::Accepted);
            (StatusCode::ACCEPTED, Json(accepted)).into_response()
        }
        Ok(Ok(Err(e))) => {
            s.metrics.prefetch_answered(PrefetchResult::Rejected);
            error(StatusCode::UNPROCESSABLE_ENTITY, e)
        }
        Ok(Err(_)) | Err(_) => {
            s.metrics.prefetch_answered(PrefetchResult::Timeout);
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the reconcile loop did not answer in time",
            )
        }
    }
}

/// Bind a listener on `addr` (port 0 picks a free port; read it from `local_addr`).
pub async fn bind(addr: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}; is another process using it?"))
}

/// Serve `router` on `addr` until `shutdown` fires.
pub async fn serve(
    addr: std::net::SocketAddr,
    router: Router,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    serve_on(bind(addr).await?, router, shutdown).await
}

/// Serve `router` on a bound listener until `shutdown` fires.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "listening");
    }
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}

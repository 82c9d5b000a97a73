//! The HTTP routers driven in-process: metrics, health, readiness, and the admin prefetch API with
//! hostile input.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use rollcache::http::{
    Health, HttpState, PrefetchAccepted, PrefetchCommand, StatusDoc, admin_router, metrics_router,
};
use rollcache::metrics::Metrics;
use tokio::sync::{mpsc, watch};
use tower::ServiceExt;

fn state() -> (HttpState, mpsc::Receiver<PrefetchCommand>) {
    let (tx, rx) = mpsc::channel(4);
    let (_s, status) = watch::channel(StatusDoc::from_json(br#"{"revisions":[]}"#));
    std::mem::forget(_s);
    (
        HttpState {
            metrics: Arc::new(Metrics::new()),
            health: Arc::new(Health::default()),
            status,
            prefetch: tx,
        },
        rx,
    )
}

async fn call(router: axum::Router, req: Request<Body>) -> (StatusCode, String) {
    let resp = router.oneshot(req).await.unwrap();
    let code = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (code, String::from_utf8_lossy(&body).into_owned())
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn post(body: impl Into<Body>) -> Request<Body> {
    Request::post("/prefetch")
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap()
}

#[tokio::test]
async fn metrics_health_and_readiness() {
    let (s, _rx) = state();
    let (code, text) = call(metrics_router(s.clone()), get("/metrics")).await;
    assert_eq!(code, StatusCode::OK);
    assert!(text.contains("rollcache_images_desired"), "{text}");
    assert_eq!(
        call(metrics_router(s.clone()), get("/healthz")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(metrics_router(s.clone()), get("/readyz")).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    s.health.ready.store(true, Ordering::Relaxed);
    assert_eq!(
        call(metrics_router(s.clone()), get("/readyz")).await.0,
        StatusCode::OK
    );
    let (code, text) = call(admin_router(s.clone()), get("/status")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(text, r#"{"revisions":[]}"#);
    // The status names every namespace's workloads and images: only the admin listener serves it.
    let (code, _) = call(metrics_router(s), get("/status")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

/// The status is kept compressed: clients that accept gzip get it as is, the others get JSON.
#[tokio::test]
async fn status_is_served_compressed_or_plain_as_the_client_asks() {
    use std::io::Read as _;
    let value = serde_json::json!({
        "report": (0..2000).map(|i| serde_json::json!({"workload": format!("ns/app-{i}"), "readiness": "offline-ready"})).collect::<Vec<_>>()
    });
    let json = serde_json::to_vec(&value).unwrap();
    // The daemon serializes straight into the compressor; the result is the same document.
    let doc = StatusDoc::from_value(&value).unwrap();
    assert_eq!(doc.json(), json);
    assert_eq!(StatusDoc::from_json(&json).json(), json);
    let (mut s, _rx) = state();
    let (tx, rx) = watch::channel(doc);
    s.status = rx;
    assert!(
        tx.borrow().gzip().len() * 10 < json.len(),
        "kept compressed: {} of {} bytes",
        tx.borrow().gzip().len(),
        json.len()
    );
    let (code, text) = call(admin_router(s.clone()), get("/status")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(text.as_bytes(), &json[..]);
    for accept in ["gzip", "br, gzip;q=0.8", "*"] {
        let req = Request::get("/status")
            .header("accept-encoding", accept)
            .body(Body::empty())
            .unwrap();
        let resp = admin_router(s.clone()).oneshot(req).await.unwrap();
        assert_eq!(resp.headers()["content-encoding"], "gzip", "{accept}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, json, "{accept}");
    }
    let req = Request::get("/status")
        .header("accept-encoding", "gzip;q=0, identity")
        .body(Body::empty())
        .unwrap();
    let resp = admin_router(s).oneshot(req).await.unwrap();
    assert!(resp.headers().get("content-encoding").is_none());
}

#[test]
fn liveness_fails_only_after_the_runtime_is_gone_for_the_grace_period() {
    use std::time::{Duration, Instant};
    let h = Health::default();
    let t0 = Instant::now();
    let grace = Duration::from_secs(120);
    assert!(h.alive(t0, grace));
    h.runtime_failed(t0);
    h.runtime_failed(t0 + Duration::from_secs(60)); // keeps the first failure time
    assert!(h.alive(t0 + Duration::from_secs(119), grace));
    assert!(!h.alive(t0 + Duration::from_secs(120), grace));
    h.runtime_answered();
    assert!(h.alive(t0 + Duration::from_secs(500), grace));
}

#[tokio::test]
async fn healthz_reports_a_runtime_gone_too_long() {
    let (s, _rx) = state();
    s.health
        .runtime_failed(std::time::Instant::now() - rollcache::http::RUNTIME_LIVENESS_GRACE);
    let (code, text) = call(metrics_router(s), get("/healthz")).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert!(text.contains("runtime"), "{text}");
}

#[tokio::test]
async fn prefetch_is_not_on_the_metrics_listener() {
    let (s, _rx) = state();
    let (code, _) = call(metrics_router(s), post("{}")).await;
    assert_ne!(code, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn prefetch_rejects_hostile_input() {
    let (s, mut rx) = state();
    let many: Vec<String> = (0..1001).map(|i| format!("img{i}")).collect();
    let cases = [
        ("not json".to_string(), StatusCode::BAD_REQUEST),
        (r#"{"imagez":["a"]}"#.to_string(), StatusCode::BAD_REQUEST),
        (r#"{"workload":"x"}"#.to_string(), StatusCode::BAD_REQUEST),
        (
            r#"{"namespace":"a","images":["b"]}"#.to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            serde_json::json!({ "images": many }).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!(r#"{{"images":["{}"]}}"#, "a".repeat(300 * 1024)),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    for (body, want) in cases {
        let (code, text) = call(admin_router(s.clone()), post(body.clone())).await;
        assert_eq!(code, want, "{}: {text}", &body[..body.len().min(60)]);
    }
    assert!(
        rx.try_recv().is_err(),
        "no invalid request reaches the loop"
    );
    let metrics = s.metrics.encode();
    assert!(
        metrics.contains("rollcache_prefetch_requests_total{result=\"invalid\"} 5"),
        "{metrics}"
    );
}

#[tokio::test]
async fn prefetch_goes_to_the_loop_and_returns_its_answer() {
    let (s, mut rx) = state();
    let lp = tokio::spawn(async move {
        let cmd = rx.recv().await.unwrap();
        assert_eq!(cmd.request.images, vec!["busybox:1.36"]);
        cmd.reply
            .send(Ok(PrefetchAccepted {
                images: vec!["docker.io/library/busybox:1.36".into()],
                already_present: 0,
            }))
            .unwrap();
        // A second request the loop refuses.
        let cmd = rx.recv().await.unwrap();
        cmd.reply.send(Err("unknown workload".into())).unwrap();
    });
    let (code, text) = call(
        admin_router(s.clone()),
        post(r#"{"images":["busybox:1.36"]}"#),
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{text}");
    assert!(text.contains("docker.io/library/busybox:1.36"));
    let (code, text) = call(
        admin_router(s.clone()),
        post(r#"{"namespace":"a","workload":"Deployment/x"}"#),
    )
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(text.contains("unknown workload"));
    lp.await.unwrap();
    // With the loop gone, the API says so instead of hanging.
    let (code, _) = call(admin_router(s), post("")).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
}

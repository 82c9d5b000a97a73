//! The test API server's HTTP side: connections (cut by outages), routing of request paths to
//! resources, query decoding, and `Status` answers.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::Shared;
use super::discovery;
use super::faults::fault_response;
use super::list::{Filter, get_one, list};
use super::resources::RESOURCES;
use super::selector::{FieldSelector, LabelSelector};
use super::watches::start_watch;
use super::writes::{WriteReq, handle_write};

/// Larger bodies are refused, as the real server's 3 MiB request limit does.
const MAX_BODY: usize = 3 << 20;

pub(super) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let sock = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok((sock, _)) => sock,
                Err(e) => {
                    tracing::debug!(error = %e, "test API server accept failed");
                    continue;
                }
            },
        };
        let epoch = {
            let o = shared.down_tx.borrow();
            if o.down {
                drop(sock);
                continue;
            }
            o.epoch
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut down = shared.down_tx.subscribe();
            let svc_shared = shared.clone();
            let svc = hyper::service::service_fn(move |req| {
                let shared = svc_shared.clone();
                async move { Ok::<_, Infallible>(handle(shared, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(sock), svc);
            // Dropping the connection future closes the socket: that is how an outage cuts streams.
            tokio::select! {
                r = conn => if let Err(e) = r { tracing::debug!(error = %e, "test API server connection ended") },
                _ = async { let _ = down.wait_for(|o| o.down || o.epoch != epoch).await; } => {}
                _ = shared.shutdown.cancelled() => {}
            }
        });
    }
}

pub(super) fn json_response(shared: &Shared, code: StatusCode, body: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    shared
        .bytes
        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(bytes))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// A `Status` object as the real server sends for failures.
pub(super) fn status(code: u16, reason: &str, message: &str, details: Option<Value>) -> Value {
    let mut s = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    });
    if let Some(d) = details {
        s["details"] = d;
    }
    s["code"] = json!(code);
    s
}

pub(super) fn status_response(
    shared: &Shared,
    code: StatusCode,
    reason: &str,
    message: &str,
) -> Response<Body> {
    json_response(shared, code, &status(code.as_u16(), reason, message, None))
}

/// What a request path names.
pub(super) struct Target {
    pub(super) resource: usize,
    pub(super) namespace: Option<String>,
    pub(super) name: Option<String>,
    /// The request is for the object's `/status` subresource.
    pub(super) status: bool,
}

fn route(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let (rest, status) = match rest {
        [head @ .., "status"] if head.len() == 2 || head.len() == 4 => (head, true),
        _ => (rest, false),
    };
    let (namespace, plural, name) = match rest {
        [plural] => (None, *plural, None),
        ["namespaces", ns, plural] => (Some(*ns), *plural, None),
        ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name)),
        [plural, name] => (None, *plural, Some(*name)),
        _ => return None,
    };
    let resource = RESOURCES
        .iter()
        .position(|r| r.group == group && r.version == version && r.plural == plural)?;
    let def = &RESOURCES[resource];
    // `/api/v1/namespaces/NAME` is a Namespace; a namespaced kind needs its namespace for a name.
    if name.is_some() && def.namespaced != namespace.is_some() {
        return None;
    }
    if namespace.is_some() && !def.namespaced {
        return None;
    }
    if status && !def.status {
        return None;
    }
    Some(Target {
        resource,
        namespace: namespace.map(str::to_string),
        name: name.map(str::to_string),
        status,
    })
}

/// Whether the real server knows the group/version of a path: unknown resources of a built-in
/// group get a `Status`; unknown groups, and custom resource groups, a plain-text 404.
fn known_group_version(path: &str) -> bool {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["api", "v1", ..] => true,
        ["apis", group, version, ..] => RESOURCES
            .iter()
            .any(|r| r.group == *group && r.version == *version && !r.crd),
        _ => false,
    }
}

fn plain_not_found(shared: &Shared) -> Response<Body> {
    let body = b"404 page not found\n".to_vec();
    shared.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Body::from(body))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

fn query_params(req: &Request<Incoming>) -> BTreeMap<String, String> {
    let q = req.uri().query().unwrap_or("");
    serde_urlencoded_pairs(q)
}

fn serde_urlencoded_pairs(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The address a client reached, for `/api`'s serverAddressByClientCIDRs.
fn shared_addr(req: &Request<Incoming>) -> String {
    req.headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string()
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    shared.requests.fetch_add(1, Ordering::Relaxed);
    let path = req.uri().path().to_string();
    if path == "/version" {
        return json_response(
            &shared,
            StatusCode::OK,
            &json!({"major": "1", "minor": "35", "gitVersion": "v1.35.0-rollcache-testbed", "platform": "linux/amd64"}),
        );
    }
    let crd_installed = shared.lock().crd_installed;
    if req.method() == Method::GET
        && let Some(doc) = discovery::document(&path, crd_installed, &shared_addr(&req))
    {
        return json_response(&shared, StatusCode::OK, &doc);
    }
    let target = match route(&path) {
        Some(t) if !RESOURCES[t.resource].crd || crd_installed => t,
        _ if known_group_version(&path) => {
            return status_response(
                &shared,
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource",
            );
        }
        _ => return plain_not_found(&shared),
    };
    let params = query_params(&req);
    if req.method() != Method::GET {
        if let Some(r) = fault_response(&shared, target.resource, false).await {
            return r;
        }
        let method = req.method().clone();
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let (content_type, user_agent) = (header("content-type"), header("user-agent"));
        let body = match axum::body::to_bytes(Body::new(req.into_body()), MAX_BODY).await {
            Ok(b) => b,
            Err(e) => {
                return status_response(
                    &shared,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "RequestEntityTooLarge",
                    &format!("the request body could not be read: {e}"),
                );
            }
        };
        let write = WriteReq {
            method: &method,
            content_type: &content_type,
            user_agent: &user_agent,
            params: &params,
            body: &body,
        };
        return handle_write(&shared, &target, &write);
    }
    let is_watch = params.get("watch").is_some_and(|w| w == "true" || w == "1");
    if is_watch {
        shared.watch_requests.fetch_add(1, Ordering::Relaxed);
    }
    if let Some(r) = fault_response(&shared, target.resource, is_watch).await {
        return r;
    }
    let def = &RESOURCES[target.resource];
    if let Some(name) = &target.name {
        return get_one(&shared, &target, def, name);
    }
    let labels = match LabelSelector::parse(params.get("labelSelector").map_or("", String::as_str))
    {
        Ok(s) => s,
        Err(e) => return status_response(&shared, StatusCode::BAD_REQUEST, "BadRequest", &e),
    };
    let fields = match FieldSelector::parse(
        params.get("fieldSelector").map_or("", String::as_str),
        def.fields,
    ) {
        Ok(s) => s,
        Err(e) => return status_response(&shared, StatusCode::BAD_REQUEST, "BadRequest", &e),
    };
    let filter = Filter {
        resource: target.resource,
        namespace: target.namespace.clone(),
        labels,
        fields,
    };
    if is_watch {
        return start_watch(shared, filter, &params);
    }
    list(&shared, &filter, &params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let t = route("/api/v1/pods").expect("pods");
        assert_eq!(RESOURCES[t.resource].kind, "Pod");
        assert!(t.namespace.is_none() && t.name.is_none());
        let t = route("/apis/apps/v1/namespaces/ns/replicasets/web-1").expect("rs");
        assert_eq!(RESOURCES[t.resource].kind, "ReplicaSet");
        assert_eq!(t.namespace.as_deref(), Some("ns"));
        assert_eq!(t.name.as_deref(), Some("web-1"));
        let t = route("/api/v1/nodes/n1").expect("node");
        assert_eq!(t.name.as_deref(), Some("n1"));
        assert!(route("/api/v1/namespaces/ns/nodes").is_none());
        assert!(route("/api/v1/pods/x").is_none());
        assert!(route("/apis/apps/v1/widgets").is_none());
        let t = route("/apis/rollcache.io/v1alpha1/rollcachenodes/n1/status").expect("status");
        assert_eq!(RESOURCES[t.resource].kind, "RollcacheNode");
        assert!(t.status && t.name.as_deref() == Some("n1"));
        assert!(route("/api/v1/namespaces/ns/configmaps/c/status").is_none());
        let t = route("/apis/events.k8s.io/v1/namespaces/ns/events").expect("events");
        assert_eq!(RESOURCES[t.resource].api_version(), "events.k8s.io/v1");
    }

    #[test]
    fn query_decoding() {
        let q =
            serde_urlencoded_pairs("labelSelector=owner%3Dhelm%2Ctier+in+%28a%2Cb%29&watch=true&x");
        assert_eq!(q["labelSelector"], "owner=helm,tier in (a,b)");
        assert_eq!(q["watch"], "true");
        assert_eq!(q["x"], "");
    }
}

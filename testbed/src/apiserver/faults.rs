//! Faults the test API server can be told to show: RBAC denial, throttling, server errors, hangs,
//! failing or empty watches, answered as the real server words them.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use axum::body::Body;
use http::{Response, StatusCode};
use serde_json::json;

use super::Shared;
use super::resources::{RESOURCES, ResourceDef};
use super::routes::{json_response, status};
use super::watches::expired_event;

/// How the server misbehaves, for every resource or for one; set with [`ApiServer::set_fault`] or
/// [`ApiServer::set_resource_fault`], lifted with `None`. Watches open when a fault is set end (or
/// stall, for [`Fault::Hang`]), so that clients meet the fault when they watch again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Every request is answered with a `Status` of this code, as the real server words it:
    /// 403 Forbidden (RBAC denied), 429 TooManyRequests (with `Retry-After`), 500 InternalError,
    /// 503 ServiceUnavailable; other codes get a generic reason.
    Status(u16),
    /// Requests are accepted and not answered, and open watches stall (no events, no bookmarks)
    /// until the fault is lifted; then waiting requests are answered and stalled watches close.
    Hang,
    /// Lists and gets answer normally; every watch request fails with a `Status` of this code.
    /// 410 comes as the real server sends it (an `ERROR` event `Expired` in a 200 stream), which
    /// makes clients re-list: lists keep succeeding while watches never do.
    WatchesFail(u16),
    /// Lists and gets answer normally; every watch is answered 200 and closed at once, empty.
    WatchesClosed,
}

/// The faults in force: per resource (by index), else global.
#[derive(Clone, Debug, Default)]
pub(super) struct Faults {
    pub(super) global: Option<Fault>,
    pub(super) per_resource: BTreeMap<usize, Fault>,
}

impl Faults {
    pub(super) fn for_resource(&self, resource: usize) -> Option<&Fault> {
        self.per_resource.get(&resource).or(self.global.as_ref())
    }
}

/// The answer a fault in force gives instead of the normal one, after waiting out a hang.
pub(super) async fn fault_response(
    shared: &Shared,
    resource: usize,
    is_watch: bool,
) -> Option<Response<Body>> {
    let mut faults = shared.faults_tx.subscribe();
    let fault = loop {
        let fault = faults.borrow_and_update().for_resource(resource).cloned();
        if fault != Some(Fault::Hang) {
            break fault;
        }
        tokio::select! {
            r = faults.changed() => if r.is_err() { return None },
            _ = shared.shutdown.cancelled() => return None,
        }
    };
    let def = &RESOURCES[resource];
    match fault? {
        Fault::Status(code) => Some(fault_status(shared, def, code)),
        Fault::WatchesFail(410) if is_watch => {
            let msg = "The resourceVersion for the provided watch is too old.";
            let line = expired_event(msg);
            shared.bytes.fetch_add(line.len() as u64, Ordering::Relaxed);
            Some(
                Response::builder()
                    .status(StatusCode::OK)
                    .header("content-type", "application/json")
                    .body(Body::from(line))
                    .unwrap_or_else(|_| Response::new(Body::empty())),
            )
        }
        Fault::WatchesFail(code) if is_watch => Some(fault_status(shared, def, code)),
        Fault::WatchesClosed if is_watch => Some(
            Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/json")
                .body(Body::empty())
                .unwrap_or_else(|_| Response::new(Body::empty())),
        ),
        Fault::Hang | Fault::WatchesFail(_) | Fault::WatchesClosed => None,
    }
}

/// A failure `Status` worded as the real server words it for `code`.
fn fault_status(shared: &Shared, def: &ResourceDef, code: u16) -> Response<Body> {
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut details = json!({"kind": def.plural});
    if !def.group.is_empty() {
        details["group"] = json!(def.group);
    }
    let (reason, message) = match code.as_u16() {
        403 => (
            "Forbidden",
            format!(
                "{} is forbidden: User \"system:serviceaccount:rollcache:rollcache\" cannot list resource \"{}\" in API group \"{}\" at the cluster scope",
                def.qualified(),
                def.plural,
                def.group
            ),
        ),
        429 => {
            details["retryAfterSeconds"] = json!(1);
            (
                "TooManyRequests",
                "the server has received too many requests and has asked us to try again later"
                    .to_string(),
            )
        }
        500 => (
            "InternalError",
            "Internal error occurred: etcdserver: request timed out".to_string(),
        ),
        503 => (
            "ServiceUnavailable",
            "the server is currently unable to handle the request".to_string(),
        ),
        410 => ("Expired", "too old resource version".to_string()),
        _ => ("Unknown", format!("the server answered {code}")),
    };
    let body = status(code.as_u16(), reason, &message, Some(details));
    let mut resp = json_response(shared, code, &body);
    if code == StatusCode::TOO_MANY_REQUESTS {
        resp.headers_mut()
            .insert("retry-after", http::HeaderValue::from_static("1"));
    }
    resp
}

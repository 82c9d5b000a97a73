//! Watches of the test API server: ordered events from a resource version, selector transitions,
//! bookmarks, `timeoutSeconds`, and `410 Expired` for what the retained window no longer holds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use http::{Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::faults::Fault;
use super::list::Filter;
use super::resources::{RESOURCES, ResourceDef};
use super::routes::{status, status_response};
use super::{EventType, Shared};

/// An empty object of the resource's kind carrying only a resourceVersion, as bookmarks do.
/// Go encodes the non-omitempty fields of an empty object too; the shapes are copied from a real
/// API server (1.36).
fn bookmark_object(def: &ResourceDef, rv: u64, initial_end: bool) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let mut obj = json!({"kind": def.kind, "apiVersion": def.api_version(), "metadata": meta});
    let template = json!({"metadata": {}, "spec": {"containers": null}});
    match def.kind {
        "Pod" => {
            obj["spec"] = json!({"containers": null});
            obj["status"] = json!({});
        }
        "ReplicaSet" => {
            obj["spec"] = json!({"selector": null, "template": template});
            obj["status"] = json!({"replicas": 0});
        }
        "Deployment" | "DaemonSet" => {
            obj["spec"] = json!({"selector": null, "template": template});
            obj["status"] = json!({});
        }
        "StatefulSet" => {
            obj["spec"] = json!({"selector": null, "template": template, "serviceName": ""});
            obj["status"] = json!({"replicas": 0});
        }
        "ControllerRevision" => {
            obj["data"] = Value::Null;
            obj["revision"] = json!(0);
        }
        "Node" => {
            obj["spec"] = json!({});
            obj["status"] = json!({
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
                "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "",
                    "osImage": "", "containerRuntimeVersion": "", "kubeletVersion": "",
                    "kubeProxyVersion": "", "operatingSystem": "", "architecture": ""},
            });
        }
        "Namespace" => {
            obj["spec"] = json!({});
            obj["status"] = json!({});
        }
        _ => {}
    }
    obj
}

pub(super) fn event_line(kind: &str, object: &Value) -> Vec<u8> {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    line.push(b'\n');
    line
}

/// The `ERROR` event of a watch that cannot go on from where it is: the client must list again.
pub(super) fn expired_event(message: &str) -> Vec<u8> {
    event_line("ERROR", &status(410, "Expired", message, None))
}

pub(super) fn start_watch(
    shared: Arc<Shared>,
    filter: Filter,
    params: &BTreeMap<String, String>,
) -> Response<Body> {
    let rv_param = params.get("resourceVersion").cloned().unwrap_or_default();
    let start_rv = if rv_param.is_empty() || rv_param == "0" {
        None
    } else {
        match rv_param.parse::<u64>() {
            Ok(rv) => Some(rv),
            Err(_) => {
                return status_response(
                    &shared,
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("resourceVersion: Invalid value: \"{rv_param}\": must be a number"),
                );
            }
        }
    };
    let opts = WatchOpts {
        start_rv,
        bookmarks: params
            .get("allowWatchBookmarks")
            .is_some_and(|b| b == "true" || b == "1"),
        send_initial_events: params.get("sendInitialEvents").is_some_and(|b| b == "true"),
        timeout: params
            .get("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .map(Duration::from_secs),
    };
    let (tx, rx) = mpsc::channel::<Result<Vec<u8>, std::io::Error>>(64);
    tokio::spawn(watch_loop(shared, filter, opts, tx));
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(body)
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

struct WatchOpts {
    start_rv: Option<u64>,
    bookmarks: bool,
    send_initial_events: bool,
    timeout: Option<Duration>,
}

type WatchTx = mpsc::Sender<Result<Vec<u8>, std::io::Error>>;

async fn send(shared: &Shared, tx: &WatchTx, line: Vec<u8>) -> bool {
    shared.bytes.fetch_add(line.len() as u64, Ordering::Relaxed);
    tx.send(Ok(line)).await.is_ok()
}

async fn watch_loop(shared: Arc<Shared>, filter: Filter, opts: WatchOpts, tx: WatchTx) {
    let def = &RESOURCES[filter.resource];
    let mut changes = shared.rv_tx.subscribe();
    changes.borrow_and_update();
    let mut faults = shared.faults_tx.subscribe();
    faults.borrow_and_update();
    let deadline = tokio::time::sleep(opts.timeout.unwrap_or(Duration::from_secs(24 * 3600)));
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + shared.opts.bookmark_interval,
        shared.opts.bookmark_interval,
    );

    // Where to start: an explicit resource version, or "now" after synthetic ADDED events for what
    // exists (resourceVersion absent or "0", as the real server does).
    let mut last = match opts.start_rv {
        Some(rv) => {
            let floor = shared.lock().floor;
            if rv < floor {
                let msg = format!("too old resource version: {rv} ({floor})");
                let _ = send(&shared, &tx, expired_event(&msg)).await;
                return;
            }
            rv
        }
        None => {
            let (objs, rv) = {
                let st = shared.lock();
                let objs: Vec<Arc<Value>> = st
                    .objects
                    .iter()
                    .filter(|((res, _), obj)| {
                        let ns = obj
                            .pointer("/metadata/namespace")
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        filter.in_scope(*res, ns) && filter.matches(obj)
                    })
                    .map(|(_, o)| o.clone())
                    .collect();
                (objs, st.rv)
            };
            for o in objs {
                if !send(&shared, &tx, event_line("ADDED", &o)).await {
                    return;
                }
            }
            if opts.send_initial_events && opts.bookmarks {
                let bm = bookmark_object(def, rv, true);
                if !send(&shared, &tx, event_line("BOOKMARK", &bm)).await {
                    return;
                }
            }
            rv
        }
    };

    loop {
        changes.borrow_and_update();
        let (batch, current, lost) = {
            let st = shared.lock();
            let first = st.events.partition_point(|e| e.rv <= last);
            // Events this watch has not seen were dropped from the window: it cannot continue.
            // (every resource version has exactly one event, so a gap means events were dropped).
            let lost = st.events.front().is_some_and(|e| e.rv > last + 1);
            let batch: Vec<(EventType, Arc<Value>, Option<Arc<Value>>)> = st
                .events
                .range(first..)
                .filter(|e| filter.in_scope(e.resource, &e.namespace))
                .map(|e| (e.kind, e.object.clone(), e.prev.clone()))
                .collect();
            (batch, st.rv, lost.then_some(st.floor))
        };
        if let Some(floor) = lost {
            let msg = format!("too old resource version: {last} ({floor})");
            let _ = send(&shared, &tx, expired_event(&msg)).await;
            return;
        }
        for (kind, obj, prev) in batch {
            let now = filter.matches(&obj);
            let before = prev.as_deref().is_some_and(|p| filter.matches(p));
            // Selector transitions: entering is ADDED, leaving is DELETED, as the real server does.
            let ty = match kind {
                EventType::Added if now => "ADDED",
                EventType::Modified if now && before => "MODIFIED",
                EventType::Modified if now => "ADDED",
                EventType::Modified if before => "DELETED",
                EventType::Deleted if before => "DELETED",
                _ => continue,
            };
            if !send(&shared, &tx, event_line(ty, &obj)).await {
                return;
            }
        }
        last = current;
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = tick.tick(), if opts.bookmarks => {
                if !send(&shared, &tx, event_line("BOOKMARK", &bookmark_object(def, last, false))).await {
                    return;
                }
            }
            _ = &mut deadline => {
                // The real server sends a last bookmark as the watch times out, so that the
                // client resumes from the newest resource version.
                if opts.bookmarks {
                    let _ = send(&shared, &tx, event_line("BOOKMARK", &bookmark_object(def, last, false))).await;
                }
                return;
            }
            r = faults.changed() => {
                if r.is_err() {
                    return;
                }
                let fault = faults.borrow_and_update().for_resource(filter.resource).cloned();
                match fault {
                    None => {}
                    // Stalled: nothing more until the fault is lifted, then the stream ends.
                    Some(Fault::Hang) => {
                        tokio::select! {
                            _ = faults.wait_for(|f| f.for_resource(filter.resource) != Some(&Fault::Hang)) => {}
                            _ = shared.shutdown.cancelled() => {}
                            _ = tx.closed() => {}
                        }
                        return;
                    }
                    // The client watches again and meets the fault.
                    Some(_) => return,
                }
            }
            _ = shared.shutdown.cancelled() => return,
            _ = tx.closed() => return,
        }
    }
}

//! Events on the Node for the transitions a person should see (`kubectl events --for node/NAME`),
//! through kube's `Recorder`: its own task fed by a bounded queue, so that a slow, absent or
//! forbidding API never holds a pass back.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, ObjectReference};
use kube::api::Api;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::{EventReason, EventResult, Metrics};
use crate::model::WorkloadId;
use rollcache_core::transitions::{Batch, Transition};

/// `reportingController` of every Event rollcache writes.
pub const REPORTING_CONTROLLER: &str = "rollcache.io/agent";
/// Events sent for one pass; the rest are summarised in one more.
pub const MAX_PER_PASS: usize = 10;
/// Passes' batches waiting for the API; beyond that a pass's batch is dropped and counted.
const QUEUE: usize = 8;
/// Distinct (reason, workload) notes remembered before the Recorder starts afresh.
const NOTES_MAX: usize = 1024;

/// The passes' end of the queue.
#[derive(Clone)]
pub struct EventSender {
    tx: mpsc::Sender<Batch>,
    metrics: Arc<Metrics>,
}

/// A queue from the passes to `emit`.
pub fn channel(metrics: Arc<Metrics>) -> (EventSender, mpsc::Receiver<Batch>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    (EventSender { tx, metrics }, rx)
}

impl EventSender {
    /// Queues a pass's transitions (at most `MAX_PER_PASS` Events and one for the rest); never
    /// waits: a full queue drops them, counted.
    pub fn send(&self, transitions: Vec<Transition>) {
        let batch = Batch::of(transitions, MAX_PER_PASS);
        if batch.is_empty() {
            return;
        }
        if let Err(e) = self.tx.try_send(batch) {
            let batch = match e {
                mpsc::error::TrySendError::Full(b) | mpsc::error::TrySendError::Closed(b) => b,
            };
            for t in &batch.shown {
                self.metrics.event_finished(t.into(), EventResult::Dropped);
            }
            if batch.more_note().is_some() {
                self.metrics
                    .event_finished(EventReason::MoreTransitions, EventResult::Dropped);
            }
        }
    }
}

/// Writes the queued transitions as Events regarding Node `node` (namespace `default`, where a
/// cluster-scoped object's Events go) until `cancel`.
pub async fn emit(
    client: kube::Client,
    node: String,
    mut rx: mpsc::Receiver<Batch>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let mut w = Writer {
        recorder: recorder(&client, &node),
        client: client.clone(),
        nodes: Api::all(client),
        regarding: None,
        node,
        notes: HashMap::new(),
        failing: None,
    };
    loop {
        let batch = tokio::select! {
            _ = cancel.cancelled() => return,
            b = rx.recv() => match b { Some(b) => b, None => return },
        };
        for t in &batch.shown {
            let ev = Event {
                type_: event_type(t.is_warning()),
                reason: t.reason().into(),
                note: Some(t.note()),
                action: action(t).into(),
                secondary: t.workload().map(workload_ref),
            };
            let result = w.publish(&ev).await;
            metrics.event_finished(t.into(), result);
        }
        if let Some(note) = batch.more_note() {
            let ev = Event {
                type_: event_type(batch.more_warns),
                reason: EventReason::MoreTransitions.as_str().into(),
                note: Some(note),
                action: "Report".into(),
                secondary: None,
            };
            let result = w.publish(&ev).await;
            metrics.event_finished(EventReason::MoreTransitions, result);
        }
    }
}

struct Writer {
    recorder: Recorder,
    client: kube::Client,
    nodes: Api<Node>,
    /// The Node with its uid, once read.
    regarding: Option<ObjectReference>,
    node: String,
    /// The note last sent per (reason, related workload): the Recorder folds repeats of one key
    /// into a series and keeps the first note, so a different note needs a fresh Recorder.
    notes: HashMap<(String, Option<String>), String>,
    /// The failure last logged, said again only when it changes.
    failing: Option<String>,
}

impl Writer {
    async fn publish(&mut self, ev: &Event) -> EventResult {
        let regarding = self.regarding().await;
        let key = (
            ev.reason.clone(),
            ev.secondary
                .as_ref()
                .map(|s| format!("{:?}/{:?}/{:?}", s.kind, s.namespace, s.name)),
        );
        let note = ev.note.clone().unwrap_or_default();
        if self.notes.get(&key).is_some_and(|n| *n != note) || self.notes.len() >= NOTES_MAX {
            self.recorder = recorder(&self.client, &self.node);
            self.notes.clear();
        }
        match self.recorder.publish(ev, &regarding).await {
            Ok(()) => {
                self.notes.insert(key, note);
                if self.failing.take().is_some() {
                    tracing::info!(node = %self.node, "Events on the Node are written again");
                }
                EventResult::Published
            }
            Err(e) => {
                let (result, line) = match &e {
                    kube::Error::Api(s) if s.code == 403 => (
                        EventResult::Denied,
                        format!(
                            "Events on Node {} are not allowed: {}; grant create and patch on events.k8s.io events in namespace default, or turn them off with --node-events=false; everything else carries on",
                            self.node, s.message
                        ),
                    ),
                    e => (
                        EventResult::Failed,
                        format!(
                            "Events on Node {} not written: {e}; everything else carries on, logged again when the error changes",
                            self.node
                        ),
                    ),
                };
                if self.failing.as_ref() != Some(&line) {
                    tracing::warn!("{line}");
                    self.failing = Some(line);
                }
                result
            }
        }
    }

    /// The Node as the Events' subject: with its uid once a read succeeds, by name until then
    /// (which `kubectl events --for node/NAME` matches too).
    async fn regarding(&mut self) -> ObjectReference {
        if let Some(r) = &self.regarding {
            return r.clone();
        }
        let mut r = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(self.node.clone()),
            ..Default::default()
        };
        if let Ok(n) = self.nodes.get(&self.node).await {
            r.uid = n.metadata.uid;
            self.regarding = Some(r.clone());
        }
        r
    }
}

fn recorder(client: &kube::Client, node: &str) -> Recorder {
    Recorder::new(
        client.clone(),
        Reporter {
            controller: REPORTING_CONTROLLER.into(),
            instance: Some(node.to_owned()),
        },
    )
}

fn event_type(warning: bool) -> EventType {
    if warning {
        EventType::Warning
    } else {
        EventType::Normal
    }
}

/// What rollcache does about it (the Event's `action`).
fn action(t: &Transition) -> &'static str {
    match t {
        Transition::RevisionNotOfflineSafe { .. } | Transition::RevisionOfflineSafe { .. } => {
            "CheckReadiness"
        }
        Transition::PinnedImageRemoved { .. } => "Pull",
        Transition::PinnedImageRepulled { .. } => "Pin",
    }
}

/// The workload as the Event's related object.
fn workload_ref(w: &WorkloadId) -> ObjectReference {
    let api_version = match w.kind.as_str() {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" => "apps/v1",
        "Job" | "CronJob" => "batch/v1",
        _ => "v1",
    };
    ObjectReference {
        api_version: Some(api_version.into()),
        kind: Some(w.kind.clone()),
        namespace: Some(w.namespace.clone()),
        name: Some(w.name.clone()),
        ..Default::default()
    }
}

//! This node's summary published cluster-wide as the `RollcacheNode` named after it (owned by the
//! Node, server-side applied to `/status`): on change, at most every 10 s, refreshed every 5 min.
//! Its own task, reading the `/status` channel: a slow or absent API never holds a pass back.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::http::StatusDoc;
use crate::reconcile::unix_now;
use crate::status::Status;
use rollcache_core::summary::NodeSummary;

pub const GROUP: &str = "rollcache.io";
pub const VERSION: &str = "v1alpha1";
pub const KIND: &str = "RollcacheNode";
pub const PLURAL: &str = "rollcachenodes";
const FIELD_MANAGER: &str = "rollcache";

/// Changes closer together than this are published as one.
const MIN_INTERVAL: Duration = Duration::from_secs(10);
/// An unchanged summary is sent again this often, so that `observedAt` says the agent is alive.
const REFRESH: Duration = Duration::from_secs(300);
/// After any other API error.
const ERROR_RETRY: Duration = Duration::from_secs(30);

/// The `RollcacheNode` resource, for clients of the API.
pub fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, KIND), PLURAL)
}

enum Failure {
    /// The resource is not served: the CRD is not installed.
    NoCrd,
    Api(String),
}

/// Publishes `node`'s summary from the `/status` documents on `status` until `cancel`; without
/// the CRD, looks again every `crd_retry` (the resync interval).
pub async fn publish(
    client: kube::Client,
    node: String,
    mut status: watch::Receiver<StatusDoc>,
    crd_retry: Duration,
    cancel: CancellationToken,
) {
    let mut target = Target {
        nodes: Api::all(client.clone()),
        summaries: Api::all_with(client, &resource()),
        node,
        owned: false,
    };
    let mut last: Option<(NodeSummary, Instant)> = None;
    // When to try again after a failure, and the line that said so (said again only if it changes).
    let mut failing: Option<(Instant, String)> = None;
    status.mark_changed();
    loop {
        let wake = match (&failing, &last) {
            (Some((at, _)), _) => *at,
            (None, Some((_, sent))) => *sent + REFRESH,
            (None, None) => Instant::now() + Duration::from_secs(86_400),
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = status.changed(), if failing.is_none() => if r.is_err() { return },
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
        let Some(summary) = summary_of(&status.borrow_and_update()) else {
            continue;
        };
        let unchanged = last
            .as_ref()
            .is_some_and(|(l, sent)| l.same_as(&summary) && sent.elapsed() < REFRESH);
        if unchanged && failing.is_none() {
            continue;
        }
        match target.apply(&summary).await {
            Ok(()) => {
                if failing.take().is_some() || last.is_none() {
                    tracing::info!(node = %target.node, state = %summary.state, "RollcacheNode published; updated on change");
                }
                last = Some((summary, Instant::now()));
            }
            Err(f) => {
                let (retry, line) = match f {
                    Failure::NoCrd => (
                        crd_retry,
                        format!(
                            "the RollcacheNode CRD (rollcachenodes.{GROUP}) is not installed: this node's summary is not published; everything else carries on, and publishing starts once it is installed"
                        ),
                    ),
                    Failure::Api(e) => (
                        ERROR_RETRY,
                        format!(
                            "RollcacheNode {} not published: {e}; retrying, logged again when the error changes",
                            target.node
                        ),
                    ),
                };
                if failing.as_ref().map(|(_, said)| said) != Some(&line) {
                    tracing::warn!("{line}");
                }
                failing = Some((Instant::now() + retry, line));
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(MIN_INTERVAL) => {}
        }
    }
}

/// The summary of a pass's document; None before the first pass.
fn summary_of(doc: &StatusDoc) -> Option<NodeSummary> {
    let status: Status = serde_json::from_slice(&doc.json()).ok()?;
    Some(NodeSummary::of(
        &status,
        status.history_generation,
        unix_now(),
    ))
}

struct Target {
    nodes: Api<Node>,
    summaries: Api<DynamicObject>,
    node: String,
    /// The object exists with its owner reference (as far as this agent knows).
    owned: bool,
}

impl Target {
    async fn apply(&mut self, summary: &NodeSummary) -> Result<(), Failure> {
        if !self.owned {
            self.apply_object().await?;
            self.owned = true;
        }
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let body = json!({
            "apiVersion": format!("{GROUP}/{VERSION}"), "kind": KIND,
            "metadata": {"name": self.node}, "status": summary,
        });
        match self
            .summaries
            .patch_status(&self.node, &params, &Patch::Apply(&body))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                // Deleted meanwhile (with its Node, or by hand): made again on the next try.
                self.owned = false;
                Err(match e {
                    kube::Error::Api(s) if s.code == 404 => {
                        Failure::Api(format!("{KIND} {} is gone: applied again", self.node))
                    }
                    e => Failure::Api(e.to_string()),
                })
            }
        }
    }

    /// The object itself, owned by the Node (whose uid only a `get` tells), so that it goes
    /// when the Node goes.
    async fn apply_object(&self) -> Result<(), Failure> {
        let node = self.nodes.get(&self.node).await.map_err(|e| match e {
            kube::Error::Api(s) if s.code == 404 => {
                Failure::Api(format!("Node {} not found: nothing to own it", self.node))
            }
            e => Failure::Api(format!("reading Node {}: {e}", self.node)),
        })?;
        let uid = node.metadata.uid.unwrap_or_default();
        let body = json!({
            "apiVersion": format!("{GROUP}/{VERSION}"), "kind": KIND,
            "metadata": {"name": self.node, "ownerReferences": [{
                "apiVersion": "v1", "kind": "Node", "name": self.node, "uid": uid,
                "controller": false, "blockOwnerDeletion": false,
            }]},
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match self
            .summaries
            .patch(&self.node, &params, &Patch::Apply(&body))
            .await
        {
            Ok(_) => Ok(()),
            // The plain-text 404 of an unserved resource: `is_not_found()` cannot tell it.
            Err(kube::Error::Api(s)) if s.code == 404 => Err(Failure::NoCrd),
            Err(e) => Err(Failure::Api(e.to_string())),
        }
    }
}

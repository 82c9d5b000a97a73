//! History read once for `rollcache plan`: a directory loaded, or every source listed.

use super::progress::{Progress, expects_node};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::sources::start_sources;
use super::store::HistoryStore;
use super::{DecodeProblem, files};
use crate::config::Config;
use crate::model::{NodeFacts, RevisionFact};

/// What a plan is computed from.
pub struct History {
    pub facts: Vec<RevisionFact>,
    pub nodes: Vec<NodeFacts>,
    /// Why this node's Node object could not be read (the node watch's error), if so.
    pub node_error: Option<String>,
    /// What could not be decoded: shown with the plan, which may lack what those objects need.
    pub problems: Vec<DecodeProblem>,
    /// Why a source's view is incomplete (the inventory's: a namespace the indexer does not
    /// index, a stale catalog), each naming its source: what was read may lack what is asked.
    pub incomplete: Vec<String>,
}

/// Load a directory source, logging every problem with the object it came from.
pub fn load_dir(dir: &std::path::Path) -> anyhow::Result<History> {
    anyhow::ensure!(
        dir.is_dir(),
        "--from {}: not a directory (give a folder of YAML/JSON objects as `kubectl get -o yaml` prints them)",
        dir.display()
    );
    let snap = files::load_dir(dir);
    for p in snap.all_problems() {
        tracing::warn!(object = %p.object, kind = %p.kind, "skipped: {}", p.message);
    }
    Ok(History {
        facts: snap.facts().cloned().collect(),
        problems: snap.all_problems().cloned().collect(),
        nodes: snap.nodes,
        node_error: None,
        incomplete: Vec::new(),
    })
}

/// How long a one-shot command waits for every source to list.
const SYNC_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a one-shot command waits while every source fails (the API refusing or erring on
/// everything) before it gives up: a slow list that makes progress waits up to `SYNC_TIMEOUT`.
const ALL_FAILING_TIMEOUT: Duration = Duration::from_secs(8);

/// When no source has listed and every one is in error: their errors, each once, with the
/// sources that had it.
fn every_source_failing(snap: &super::store::HistorySnapshot) -> Option<String> {
    let mut by_error: Vec<(String, Vec<String>)> = Vec::new();
    for (id, s) in &snap.sources {
        if s.synced || !s.in_error {
            return None;
        }
        let error = brief(s.last_error.as_deref().unwrap_or_default());
        match by_error.iter_mut().find(|(e, _)| *e == error) {
            Some((_, ids)) => ids.push(id.to_string()),
            None => by_error.push((error, vec![id.to_string()])),
        }
    }
    let parts: Vec<String> = by_error
        .into_iter()
        .map(|(error, ids)| format!("{}: {error}", ids.join(", ")))
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// A kube API error without the `Status` it carries printed in full: its message and its code.
fn brief(error: &str) -> String {
    let Some((text, status)) = error.split_once(" (Status {") else {
        return error.to_owned();
    };
    let code = status
        .split_once("code: ")
        .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
        .filter(|c| !c.is_empty());
    match code {
        Some(code) => format!("{text} ({code})"),
        None => text.to_owned(),
    }
}

/// List everything once (for `plan`): start the sources (the API's through `client`, one that
/// answered [`super::sources::one_shot_client`]'s check), wait until each has synced, stop.
/// Read once, the fleet inventory's catalog is judged fresh by the `observedAt` of the indexer's
/// heartbeat (the catalog's own, from an older indexer) on this machine's wall clock alone: no
/// heartbeat is seen arriving (see `inventory::view`).
pub async fn load_history(cfg: &Config, client: Option<kube::Client>) -> anyhow::Result<History> {
    let store = HistoryStore::new();
    let cancel = CancellationToken::new();
    let mut tasks = JoinSet::new();
    start_sources(cfg, client, &store, &cancel, &mut tasks).await?;
    let started = Instant::now();
    let mut rx = store.subscribe();
    loop {
        let snap = store.snapshot();
        if Progress::new(&snap, expects_node(cfg)).answered() {
            break;
        }
        if started.elapsed() > ALL_FAILING_TIMEOUT
            && let Some(why) = every_source_failing(&snap)
        {
            cancel.cancel();
            anyhow::bail!(
                "the Kubernetes API answers, but no history source could list within {}s: {why}",
                ALL_FAILING_TIMEOUT.as_secs()
            );
        }
        if started.elapsed() > SYNC_TIMEOUT {
            let waiting: Vec<String> = snap
                .sources
                .iter()
                .filter(|(_, s)| !s.synced)
                .map(|(id, s)| format!("{id}: {}", s.last_error.as_deref().unwrap_or("no answer")))
                .collect();
            cancel.cancel();
            anyhow::bail!(
                "sources did not sync within {SYNC_TIMEOUT:?}: {}",
                waiting.join("; ")
            );
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), rx.changed()).await;
    }
    cancel.cancel();
    while tasks.join_next().await.is_some() {}
    let snap = store.snapshot();
    let mut incomplete = Vec::new();
    for (id, s) in &snap.sources {
        if let Some(why) = &s.incomplete {
            tracing::warn!(source = %id, reason = %why, "the view is incomplete: the plan holds what was read");
            incomplete.push(format!("{id}: {why}"));
        }
    }
    Ok(History {
        incomplete,
        facts: snap.facts().cloned().collect(),
        problems: snap
            .unresolved()
            .flat_map(|u| u.problems.iter().cloned())
            .collect(),
        nodes: snap.node.clone().into_iter().collect(),
        node_error: snap
            .node_status
            .in_error
            .then(|| snap.node_status.last_error.clone().unwrap_or_default()),
    })
}

#[cfg(test)]
mod tests {
    use super::brief;

    #[test]
    fn an_api_error_is_told_by_its_message_and_code() {
        let kube = "failed to perform initial object list: ApiError: the server is currently unable to handle the request: ServiceUnavailable (Status { status: Some(Failure), code: 503, message: \"x\" })";
        assert_eq!(
            brief(kube),
            "failed to perform initial object list: ApiError: the server is currently unable to handle the request: ServiceUnavailable (503)"
        );
        assert_eq!(brief("client error (Connect)"), "client error (Connect)");
    }
}

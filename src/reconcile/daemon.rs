//! The reconcile loop: one task, several triggers (history changed, config changed, a pull finished,
//! a manual prefetch, a deadline such as a backoff or grace period running out, the periodic
//! resync). Each pass plans from a fresh snapshot, lists the runtime once, decides, and acts.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::decide::{self, Decision, Params, Waiting};
use crate::history::store::HistoryStore;
use crate::http::{Health, PrefetchCommand, StatusDoc};
use crate::metrics::Metrics;
use crate::node::ImageRuntime;

use super::credentials::Credentials;
use super::node_events::EventSender;
use super::pass::Planned;
use super::publish::Counted;
use super::pulls::Pulls;

/// How often the disk is looked at again while pulls are held back by the budget.
pub(super) const DISK_RECHECK: Duration = Duration::from_secs(30);

/// The reconcile loop and what it works with. Built with `Daemon::new` and the `with_*` setters;
/// `run` consumes it.
pub struct Daemon {
    pub(super) runtime: Arc<dyn ImageRuntime>,
    pub(super) credentials: Option<Arc<dyn Credentials>>,
    pub(super) store: Arc<HistoryStore>,
    pub(super) config: watch::Receiver<Arc<Config>>,
    pub(super) node: NodeSetup,
    pub(super) out: Outputs,
    triggers: Triggers,
}

/// What is known about this node's runtime and Node object before the loop starts.
#[derive(Clone, Copy, Debug)]
pub(super) struct NodeSetup {
    /// Whether the runtime honours the pin label (detected at start).
    pub(super) can_pin: bool,
    /// A Node object should describe this node (running against the API or a directory, named).
    pub(super) expect_node: bool,
}

/// Where the loop reports: metrics, health, the `/status` document, and Events on the Node.
pub(super) struct Outputs {
    pub(super) metrics: Arc<Metrics>,
    pub(super) health: Arc<Health>,
    pub(super) status: watch::Sender<StatusDoc>,
    /// None: no Events (turned off, or no API or node name).
    pub(super) events: Option<EventSender>,
}

/// Triggers besides history and config changes.
struct Triggers {
    /// Manual prefetches from the admin API; None when there is none.
    prefetch: Option<mpsc::Receiver<PrefetchCommand>>,
    /// Wake-ups from the runtime (image events, reconnects); None when not watched.
    runtime_events: Option<mpsc::Receiver<()>>,
}

impl Daemon {
    /// A loop on `runtime` for the history in `store` and the config from `config`, with its own
    /// metrics, health and status, no credentials, no prefetch or runtime events, a runtime that
    /// honours pins, and no Node object expected; the setters change that.
    pub fn new(
        runtime: Arc<dyn ImageRuntime>,
        store: Arc<HistoryStore>,
        config: watch::Receiver<Arc<Config>>,
    ) -> Self {
        Self {
            runtime,
            credentials: None,
            store,
            config,
            node: NodeSetup {
                can_pin: true,
                expect_node: false,
            },
            out: Outputs {
                metrics: Arc::new(Metrics::new()),
                health: Arc::new(Health::default()),
                status: watch::channel(StatusDoc::from_json(br#"{"starting":true}"#)).0,
                events: None,
            },
            triggers: Triggers {
                prefetch: None,
                runtime_events: None,
            },
        }
    }

    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.out.metrics = metrics;
        self
    }

    pub fn with_health(mut self, health: Arc<Health>) -> Self {
        self.out.health = health;
        self
    }

    /// Where each pass publishes the `/status` document.
    pub fn with_status(mut self, status: watch::Sender<StatusDoc>) -> Self {
        self.out.status = status;
        self
    }

    pub fn with_prefetch(mut self, prefetch: mpsc::Receiver<PrefetchCommand>) -> Self {
        self.triggers.prefetch = Some(prefetch);
        self
    }

    pub fn with_credentials(mut self, credentials: Option<Arc<dyn Credentials>>) -> Self {
        self.credentials = credentials;
        self
    }

    /// Whether the runtime honours the pin label (detected at start).
    pub fn with_can_pin(mut self, can_pin: bool) -> Self {
        self.node.can_pin = can_pin;
        self
    }

    /// Whether a Node object should describe this node (see `history::progress::expects_node`).
    pub fn expecting_node(mut self, expect_node: bool) -> Self {
        self.node.expect_node = expect_node;
        self
    }

    /// Where each pass sends its transitions, to become Events on the Node.
    pub fn with_node_events(mut self, events: EventSender) -> Self {
        self.out.events = Some(events);
        self
    }

    /// Wake-ups from the runtime (image events, reconnects).
    pub fn with_runtime_events(mut self, events: mpsc::Receiver<()>) -> Self {
        self.triggers.runtime_events = Some(events);
        self
    }

    /// Run until `cancel`: then stop starting pulls, cancel those in flight, and return.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut st = LoopState::default();
        let mut store_rx = self.store.subscribe();
        let mut wake = Instant::now();
        loop {
            let resync = self.config.borrow().resync_interval;
            let deadline = wake.min(decide::later(Instant::now(), resync));
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                Some(done) = st.pulls.join_next(), if !st.pulls.is_empty() => {
                    self.pull_joined(&mut st, done);
                }
                Some(()) = recv_opt(&mut self.triggers.runtime_events) => {}
                Some(cmd) = recv_opt(&mut self.triggers.prefetch) => {
                    let answer = self.prefetch_cmd(&mut st, &cmd.request).await;
                    let _ = cmd.reply.send(answer);
                }
                r = store_rx.changed() => if r.is_err() { break },
                r = self.config.changed() => {
                    if r.is_err() { break }
                    st.planned.invalidate();
                }
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
            wake = self.pass(&mut st).await;
        }
        let in_flight = st.pulls.cancel_all().await;
        tracing::info!(
            cancelled_pulls = in_flight,
            "reconcile loop stopped; in-flight pulls cancelled (containerd discards partial content)"
        );
    }
}

/// What the loop carries from one pass to the next.
#[derive(Default)]
pub(super) struct LoopState {
    pub(super) decide: decide::State,
    pub(super) pulls: Pulls,
    pub(super) planned: Planned,
    /// Images named by a manual prefetch: held until restart (persist them in `extra_images`).
    pub(super) manual: BTreeSet<String>,
    /// Why the image filesystem's size was unknown at the last look (logged once per change).
    pub(super) fs_unknown: Option<String>,
    pub(super) counted: Counted,
    /// What the last passes saw, for the transitions sent as Events.
    pub(super) transitions: rollcache_core::transitions::Watch,
}

async fn recv_opt<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The earliest moment something becomes due: a jitter or backoff running out, a grace period
/// ending, the periodic resync.
pub(super) fn next_wake(
    d: &Decision,
    st: &decide::State,
    p: &Params,
    now: Instant,
    resync: Duration,
) -> Instant {
    let mut at = decide::later(now, resync);
    for (_, w) in &d.waiting {
        match w {
            Waiting::Jitter { until } => at = at.min(*until),
            Waiting::Backoff { retry_at, .. } | Waiting::RegistryBackoff { retry_at, .. } => {
                at = at.min(*retry_at)
            }
            // Disk usage changes without any event: look again soon.
            Waiting::DiskBudget => at = at.min(now + DISK_RECHECK),
            _ => {}
        }
    }
    if p.view_fresh {
        for since in st.unneeded_since.values() {
            at = at.min(decide::later(*since, p.unpin_grace));
        }
    }
    at.max(now + Duration::from_millis(10))
}

#[cfg(test)]
mod tests;

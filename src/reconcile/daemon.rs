//! The reconcile loop: one task, several triggers (history changed, config changed, a pull finished,
//! a manual prefetch, a deadline such as a backoff or grace period running out, the periodic
//! resync). Each pass plans from a fresh snapshot, lists the runtime once, decides, and acts.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::history::store::{HistorySnapshot, HistoryStore};
use crate::http::{Health, PrefetchAccepted, PrefetchCommand, PrefetchRequest};
use crate::image_ref::ImageRef;
use crate::inventory::Inventory;
use crate::metrics::{Metrics, ProblemLabel, ReadinessLabel, SourceLabel};
use crate::model::NodeFacts;
use crate::node::RegistryAuth;
use crate::node::{ImageInfo, ImageRuntime, NodeError, PinOwner, PullOutcome};
use crate::plan::{DesiredImage, Plan, PlanConfig};
use crate::reconcile::decide::{self, Decision, Held, Params, Waiting, Want};
use crate::report::{self, DiskHealth, Readiness, SourceHealth, Status};

/// Where pull credentials come from (imagePullSecrets of the templates and service accounts).
#[async_trait::async_trait]
pub trait Credentials: Send + Sync {
    /// One set per namespace whose workloads need `image`, each from that namespace's secrets
    /// alone and in the kubelet's order (empty: that namespace's pods would pull anonymously).
    /// Sets are never merged: one namespace's secrets never pull for another (rule 10).
    async fn for_image(&self, image: &DesiredImage) -> Vec<NamespaceAuths>;
}

/// The credentials of one namespace for one image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceAuths {
    pub namespace: String,
    pub auths: Vec<RegistryAuth>,
}

/// How often the disk is looked at again while pulls are held back by the budget.
const DISK_RECHECK: Duration = Duration::from_secs(30);

/// How long to wait before asking an unreachable runtime again.
const RUNTIME_RETRY: Duration = Duration::from_secs(5);

pub struct Daemon {
    pub runtime: Arc<dyn ImageRuntime>,
    pub store: Arc<HistoryStore>,
    pub config: watch::Receiver<Arc<Config>>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub status: watch::Sender<crate::http::StatusDoc>,
    pub prefetch: mpsc::Receiver<PrefetchCommand>,
    pub credentials: Option<Arc<dyn Credentials>>,
    /// Whether the runtime honours the pin label (detected at start).
    pub can_pin: bool,
    /// Expect a Node object (running against the API with a node name).
    pub expect_node: bool,
    /// Wake-ups from the runtime (image events, reconnects); None when not watched.
    pub runtime_events: Option<mpsc::Receiver<()>>,
}

type PullResult = (Want, Result<PullOutcome, NodeError>, Duration);

#[derive(Default)]
struct LoopState {
    decide: decide::State,
    /// Images named by a manual prefetch: held until restart (persist them in `extra_images`).
    manual: BTreeSet<String>,
    size_hints: HashMap<String, u64>,
    pulls: JoinSet<PullResult>,
    pull_refs: HashMap<String, DesiredImage>,
    plan: Option<Arc<Plan>>,
    inventory: Option<Arc<Inventory>>,
    /// History generation the plan was built from; None forces a rebuild.
    planned_generation: Option<u64>,
    logged_problems: HashSet<String>,
    problem_counts: HashMap<(String, String), u64>,
    source_errors_seen: HashMap<String, String>,
}

impl Daemon {
    /// Run until `cancel`: then stop starting pulls, cancel those in flight, and return.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut st = LoopState::default();
        let mut store_rx = self.store.subscribe();
        let mut wake = Instant::now();
        loop {
            let resync = self.config.borrow().resync_interval;
            let deadline = wake.min(Instant::now() + resync);
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                Some(done) = st.pulls.join_next(), if !st.pulls.is_empty() => {
                    if let Ok(done) = done {
                        self.pull_finished(&mut st, done);
                    }
                }
                Some(()) = recv_opt(&mut self.runtime_events) => {}
                Some(cmd) = self.prefetch.recv() => {
                    let answer = self.prefetch_cmd(&mut st, &cmd.request).await;
                    let _ = cmd.reply.send(answer);
                }
                r = store_rx.changed() => if r.is_err() { break },
                r = self.config.changed() => {
                    if r.is_err() { break }
                    st.planned_generation = None;
                }
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
            wake = self.pass(&mut st).await;
        }
        let in_flight = st.pulls.len();
        st.pulls.abort_all();
        while st.pulls.join_next().await.is_some() {}
        tracing::info!(
            cancelled_pulls = in_flight,
            "reconcile loop stopped; in-flight pulls cancelled (containerd discards partial content)"
        );
    }

    fn pull_finished(&self, st: &mut LoopState, (want, result, took): PullResult) {
        st.decide.in_flight.remove(&want.reference);
        st.pull_refs.remove(&want.reference);
        let cfg = self.config.borrow().clone();
        let params = params(&cfg, false, false);
        match result {
            Ok(outcome) => {
                let info = outcome.image();
                st.size_hints.insert(want.reference.clone(), info.size);
                decide::record_success(&mut st.decide, &want);
                if let PullOutcome::Pulled(_) = outcome {
                    self.metrics.pull_duration.observe(took.as_secs_f64());
                    self.metrics.pulled_bytes.inc_by(info.size);
                }
                Metrics::result(&self.metrics.pulls, "success");
                tracing::info!(
                    image = %want.reference,
                    digest = info.digest().unwrap_or("-"),
                    size = info.size,
                    seconds = took.as_secs_f64(),
                    "pulled"
                );
            }
            Err(e) => {
                Metrics::result(&self.metrics.pulls, e.metric_label());
                let registry_down = matches!(
                    e,
                    NodeError::RegistryUnreachable { .. } | NodeError::DeadlineExceeded { .. }
                );
                decide::record_failure(
                    &mut st.decide,
                    &want,
                    e.to_string(),
                    registry_down,
                    &params,
                    Instant::now(),
                );
                let retry = st.decide.failures.get(&want.reference).map(|f| {
                    f.retry_at
                        .saturating_duration_since(Instant::now())
                        .as_secs()
                });
                tracing::warn!(image = %want.reference, error = %e, retry_in_seconds = ?retry, "pull failed");
            }
        }
    }

    /// One pass: plan, look, decide, act, report. Returns when the next pass is due at the latest.
    async fn pass(&self, st: &mut LoopState) -> Instant {
        let cfg = self.config.borrow().clone();
        let snap = self.store.snapshot();
        self.refresh_plan(st, &cfg, &snap);
        let plan = st.plan.clone().expect("refresh_plan sets a plan");
        let now = Instant::now();

        let listed = self.runtime.list().await;
        let infos = match listed {
            Ok(infos) => {
                self.health.runtime_answered();
                infos
            }
            Err(e) => {
                self.health.runtime_failed(now);
                tracing::warn!(error = %e, "container runtime unreachable; nothing is pulled, pinned or unpinned until it answers");
                Metrics::result(&self.metrics.reconciles, "runtime_unreachable");
                self.health.ready.store(false, Ordering::Relaxed);
                self.publish(
                    st,
                    &cfg,
                    &snap,
                    &plan,
                    &[],
                    None,
                    Some(e.to_string()),
                    &HashMap::new(),
                );
                return now + RUNTIME_RETRY;
            }
        };
        let held: Vec<Held> = infos.iter().map(held_of).collect();
        let fs = self.runtime.fs_info().await.ok();
        let over_budget = fs.as_ref().is_some_and(|f| {
            decide::over_disk_budget(
                f.used_bytes,
                f.capacity_bytes,
                f.available_bytes,
                cfg.disk_budget_percent,
            )
        });
        let view_fresh = view_fresh(&snap, self.expect_node);
        let p = params(&cfg, over_budget, view_fresh);
        let wants: Vec<Want> = plan
            .images
            .iter()
            .map(|d| Want {
                reference: d.reference.clone(),
                registry: ImageRef::parse(&d.reference)
                    .map(|r| r.registry_host().to_string())
                    .unwrap_or_default(),
            })
            .collect();
        let jitter = cfg.start_jitter;
        let d = decide::decide(&wants, &held, &mut st.decide, &p, now, || {
            if jitter.is_zero() {
                Duration::ZERO
            } else {
                rand::rng().random_range(Duration::ZERO..=jitter)
            }
        });
        let mut held = held;
        self.act(st, &plan, &wants, &d, &mut held).await;

        let waiting: HashMap<String, Waiting> = d.waiting.iter().cloned().collect();
        self.publish(
            st,
            &cfg,
            &snap,
            &plan,
            &held,
            fs.as_ref().map(|f| (f, over_budget)),
            None,
            &waiting,
        );
        let ready = snap.sources.values().all(|s| s.synced)
            && (!self.expect_node || snap.node_status.synced);
        self.health.ready.store(ready, Ordering::Relaxed);
        Metrics::result(&self.metrics.reconciles, "success");
        self.metrics.last_reconcile_timestamp.set(unix_now() as f64);
        next_wake(&d, &st.decide, &p, now, cfg.resync_interval)
    }

    async fn act(
        &self,
        st: &mut LoopState,
        plan: &Plan,
        wants: &[Want],
        d: &Decision,
        held: &mut [Held],
    ) {
        for reference in &d.pull {
            let Some(desired) = plan
                .images
                .iter()
                .find(|i| &i.reference == reference)
                .cloned()
            else {
                continue;
            };
            let want = wants
                .iter()
                .find(|w| &w.reference == reference)
                .cloned()
                .expect("wanted");
            st.decide.in_flight.insert(reference.clone());
            st.pull_refs.insert(reference.clone(), desired.clone());
            let runtime = self.runtime.clone();
            let creds = self.credentials.clone();
            tracing::info!(image = %reference, priority = ?desired.priority, "pull started");
            st.pulls.spawn(async move {
                let started = Instant::now();
                let sets = match &creds {
                    Some(c) => c.for_image(&desired).await,
                    None => Vec::new(),
                };
                let result = pull_with(&*runtime, &desired.pull_ref, &sets).await;
                (want, result, started.elapsed())
            });
        }
        for id in &d.pin {
            match self.runtime.pin(id).await {
                Ok(outcome) => {
                    Metrics::result(&self.metrics.pins, "success");
                    tracing::info!(image = %image_name(held, id), ?outcome, "pinned");
                    if let Some(h) = held.iter_mut().find(|h| &h.id == id) {
                        h.pinned = true;
                        h.pinned_by_us = matches!(outcome, crate::node::PinOutcome::Pinned);
                    }
                }
                Err(e) => {
                    Metrics::result(&self.metrics.pins, e.metric_label());
                    tracing::warn!(image = %image_name(held, id), error = %e, "pin failed; retried next pass");
                }
            }
        }
        for id in &d.unpin {
            match self.runtime.unpin(id).await {
                Ok(outcome) => {
                    Metrics::result(&self.metrics.unpins, "success");
                    tracing::info!(image = %image_name(held, id), ?outcome, "unpinned: no retained revision needs it any more (the image stays; kubelet GC may now remove it)");
                    st.decide.unneeded_since.remove(id);
                    if let Some(h) = held.iter_mut().find(|h| &h.id == id) {
                        h.pinned = false;
                        h.pinned_by_us = false;
                    }
                }
                Err(e) => {
                    Metrics::result(&self.metrics.unpins, e.metric_label());
                    tracing::warn!(image = %image_name(held, id), error = %e, "unpin failed; retried next pass");
                }
            }
        }
    }

    /// Rebuild inventory and plan when history or config changed since the last pass.
    fn refresh_plan(&self, st: &mut LoopState, cfg: &Config, snap: &HistorySnapshot) {
        let generation = snap.generation;
        if st.planned_generation == Some(generation) && st.plan.is_some() {
            return;
        }
        // The old inventory and plan go first: the new ones are built in the memory they free,
        // instead of beside them (on a large history, each is megabytes).
        st.inventory = None;
        st.plan = None;
        let (inventory, problems) = Inventory::build(snap.facts());
        for p in problems {
            let text = p.to_string();
            if st.logged_problems.insert(text.clone()) {
                tracing::warn!(object = %p.object, kind = %p.kind, "skipped: {}", p.message);
                self.metrics
                    .decode_problems
                    .get_or_create(&ProblemLabel {
                        source: "inventory".into(),
                        kind: p.kind.metric_label().into(),
                    })
                    .inc();
            }
        }
        let node = snap.node.clone().unwrap_or_else(|| NodeFacts {
            name: cfg.node_name.clone().unwrap_or_default(),
            ..Default::default()
        });
        let mut extra = cfg.extra_images.clone();
        extra.extend(st.manual.iter().cloned());
        let pcfg = PlanConfig {
            hold_everything: cfg.hold_everything,
            extra_images: extra,
        };
        let plan = crate::plan::plan(&inventory, &node, &pcfg, &st.size_hints);
        st.plan = Some(Arc::new(plan));
        st.inventory = Some(Arc::new(inventory));
        st.planned_generation = Some(generation);
    }

    async fn prefetch_cmd(
        &self,
        st: &mut LoopState,
        req: &PrefetchRequest,
    ) -> Result<PrefetchAccepted, String> {
        let mut chosen = Vec::new();
        if !req.images.is_empty() {
            for image in &req.images {
                let r = ImageRef::parse(image).map_err(|e| format!("`{image}`: {e}"))?;
                chosen.push(r.canonical());
            }
            st.manual.extend(chosen.iter().cloned());
            st.planned_generation = None;
        } else {
            let plan = st
                .plan
                .clone()
                .ok_or("no plan yet: the daemon is starting")?;
            let matches_scope = |d: &DesiredImage| {
                req.namespace.is_none()
                    || d.needed_by.iter().any(|k| {
                        Some(&k.workload.namespace) == req.namespace.as_ref()
                            && req
                                .workload
                                .as_ref()
                                .is_none_or(|w| workload_matches(w, &k.workload))
                    })
            };
            chosen = plan
                .images
                .iter()
                .filter(|d| matches_scope(d))
                .map(|d| d.reference.clone())
                .collect();
            if chosen.is_empty() && req.namespace.is_some() {
                return Err(format!(
                    "nothing this node holds belongs to {}{}",
                    req.namespace.as_deref().unwrap_or_default(),
                    req.workload
                        .as_deref()
                        .map(|w| format!("/{w}"))
                        .unwrap_or_default()
                ));
            }
        }
        // A manual trigger skips backoff and jitter for what it names.
        for r in &chosen {
            st.decide.failures.remove(r);
            st.decide.not_before.insert(r.clone(), Instant::now());
        }
        st.decide.registry_failures.clear();
        // Present ones are only pinned (if needed) by the pass that follows. A runtime that does
        // not answer now counts none as present; the pass retries it anyway.
        let held: Vec<Held> = match self.runtime.list().await {
            Ok(infos) => infos.iter().map(held_of).collect(),
            Err(_) => Vec::new(),
        };
        let already_present = chosen
            .iter()
            .filter(|r| decide::find_held(&held, r).is_some())
            .count();
        tracing::info!(images = chosen.len(), already_present, scope = ?req, "manual prefetch");
        Ok(PrefetchAccepted {
            already_present,
            images: chosen,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn publish(
        &self,
        st: &mut LoopState,
        cfg: &Config,
        snap: &HistorySnapshot,
        plan: &Plan,
        held: &[Held],
        fs: Option<(&crate::node::FsInfo, bool)>,
        runtime_error: Option<String>,
        waiting: &HashMap<String, Waiting>,
    ) {
        let inventory = st.inventory.clone().unwrap_or_default();
        let revisions = report_inputs(&inventory, plan);
        let view = report::NodeView {
            held,
            waiting,
            can_pin: self.can_pin,
            view_fresh: view_fresh(snap, self.expect_node),
            credential_policy: cfg.credential_verification_policy,
            credential_allowlist: &cfg.credential_verification_allowlist,
            now: Instant::now(),
        };
        let rep = report::build(&revisions, &view);
        let present: Vec<&Held> = plan
            .images
            .iter()
            .filter_map(|d| decide::find_held(held, &d.reference))
            .collect();
        let sources = self.source_health(st, snap);
        let status = Status {
            node: cfg.node_name.clone().unwrap_or_default(),
            generated_at: unix_now(),
            runtime_reachable: runtime_error.is_none(),
            runtime_error,
            can_pin: self.can_pin,
            sources,
            disk: DiskHealth {
                used_bytes: fs.map_or(0, |(f, _)| f.used_bytes),
                capacity_bytes: fs.and_then(|(f, _)| f.capacity_bytes),
                available_bytes: fs.and_then(|(f, _)| f.available_bytes),
                budget_percent: cfg.disk_budget_percent,
                over_budget: fs.is_some_and(|(_, over)| over),
            },
            images_desired: plan.images.len(),
            images_present: present.len(),
            images_pinned: present.iter().filter(|h| h.pinned).count(),
            pulls_in_flight: st.pulls.len(),
            report: rep,
        };
        let m = &self.metrics;
        m.images_desired.set(status.images_desired as i64);
        m.images_present.set(status.images_present as i64);
        m.images_missing
            .set((status.images_desired - status.images_present) as i64);
        m.images_pinned.set(status.images_pinned as i64);
        for r in Readiness::ALL {
            let n = status.report.summary.get(&r).copied().unwrap_or(0);
            m.revisions
                .get_or_create(&ReadinessLabel {
                    readiness: r.as_str().into(),
                })
                .set(n as i64);
        }
        m.image_fs_used_bytes.set(status.disk.used_bytes as i64);
        m.image_fs_capacity_bytes
            .set(status.disk.capacity_bytes.unwrap_or(0) as i64);
        m.disk_budget_ratio
            .set(f64::from(cfg.disk_budget_percent) / 100.0);
        m.disk_budget_reached
            .set(i64::from(status.disk.over_budget));
        m.runtime_can_pin.set(i64::from(self.can_pin));
        match crate::http::StatusDoc::from_value(&status) {
            Ok(doc) => {
                drop(status);
                self.status.send_replace(doc);
            }
            // Serializing plain data into memory does not fail; if it ever did, the last
            // document stays served rather than an empty one.
            Err(e) => tracing::error!(error = %e, "status document not updated"),
        }
    }

    /// Source health for `/status`, and the source metrics (counters advance by what is new).
    fn source_health(&self, st: &mut LoopState, snap: &HistorySnapshot) -> Vec<SourceHealth> {
        let mut out = Vec::new();
        let mut synced_by_kind: HashMap<String, bool> = HashMap::new();
        let node_entry = self
            .expect_node
            .then_some(("node".to_string(), &snap.node_status));
        let entries = snap
            .sources
            .iter()
            .map(|(id, s)| (id.to_string(), s))
            .chain(node_entry);
        for (name, s) in entries {
            let kind = name.split(' ').next().unwrap_or(&name).to_string();
            *synced_by_kind.entry(kind.clone()).or_insert(true) &= s.is_fresh();
            if s.in_error {
                let err = s.last_error.clone().unwrap_or_default();
                if st.source_errors_seen.get(&name) != Some(&err) {
                    self.metrics
                        .source_errors
                        .get_or_create(&SourceLabel {
                            source: kind.clone(),
                        })
                        .inc();
                    st.source_errors_seen.insert(name.clone(), err);
                }
            } else {
                st.source_errors_seen.remove(&name);
            }
            for (pk, n) in &s.problems {
                let key = (name.clone(), pk.metric_label().to_string());
                let seen = st.problem_counts.entry(key).or_default();
                if *n > *seen {
                    self.metrics
                        .decode_problems
                        .get_or_create(&ProblemLabel {
                            source: kind.clone(),
                            kind: pk.metric_label().into(),
                        })
                        .inc_by(*n - *seen);
                    *seen = *n;
                }
            }
            out.push(SourceHealth {
                source: name,
                synced: s.synced,
                error: if s.in_error {
                    s.last_error.clone()
                } else {
                    None
                },
                objects: s.objects,
                problems: s.problems_total(),
                recent_problems: s.recent_problems.iter().cloned().collect(),
            });
        }
        for (kind, synced) in synced_by_kind {
            self.metrics
                .source_synced
                .get_or_create(&SourceLabel { source: kind })
                .set(i64::from(synced));
        }
        out
    }
}

async fn recv_opt(rx: &mut Option<mpsc::Receiver<()>>) -> Option<()> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Tries each namespace's credentials in turn, each credential in the kubelet's order; then
/// anonymous once, when some namespace has none for this image (its pods would pull that way) or
/// no namespace asks (extra and manual images). A namespace's credentials are only ever used for
/// an image that namespace's workloads need: `sets` comes from those workloads alone.
async fn pull_with(
    runtime: &dyn ImageRuntime,
    image: &str,
    sets: &[NamespaceAuths],
) -> Result<PullOutcome, NodeError> {
    let mut last = None;
    for set in sets {
        for auth in &set.auths {
            match runtime.pull(image, Some(auth)).await {
                Ok(o) => return Ok(o),
                Err(e @ NodeError::Unauthorized { .. }) => {
                    tracing::debug!(image, namespace = %set.namespace, "a pull secret of this namespace was refused; trying the next");
                    last = Some(e)
                }
                Err(e) => return Err(e),
            }
        }
    }
    if sets.is_empty() || sets.iter().any(|s| s.auths.is_empty()) {
        return runtime.pull(image, None).await;
    }
    Err(last.expect("at least one credential was tried"))
}

fn workload_matches(selector: &str, w: &crate::model::WorkloadId) -> bool {
    match selector.split_once('/') {
        Some((kind, name)) => kind.eq_ignore_ascii_case(&w.kind) && name == w.name,
        None => selector == w.name,
    }
}

fn held_of(i: &ImageInfo) -> Held {
    Held {
        id: i.id.clone(),
        tags: i.repo_tags.clone(),
        digests: i.repo_digests.clone(),
        pinned: i.pinned,
        pinned_by_us: i.pin_owner == PinOwner::Rollcache,
        size: i.size,
    }
}

fn image_name(held: &[Held], id: &str) -> String {
    held.iter()
        .find(|h| h.id == id)
        .and_then(|h| h.tags.first().or(h.digests.first()).cloned())
        .unwrap_or_else(|| id.to_string())
}

fn view_fresh(snap: &HistorySnapshot, expect_node: bool) -> bool {
    snap.all_sources_fresh() && (!expect_node || snap.node_status.is_fresh())
}

fn params(cfg: &Config, over_disk_budget: bool, view_fresh: bool) -> Params {
    Params {
        max_concurrent_pulls: cfg.max_concurrent_pulls,
        unpin_grace: cfg.unpin_grace,
        backoff_initial: cfg.backoff_initial,
        backoff_max: cfg.backoff_max,
        over_disk_budget,
        view_fresh,
    }
}

/// The earliest moment something becomes due: a jitter or backoff running out, a grace period
/// ending, the periodic resync.
fn next_wake(
    d: &Decision,
    st: &decide::State,
    p: &Params,
    now: Instant,
    resync: Duration,
) -> Instant {
    let mut at = now + resync;
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
            at = at.min(*since + p.unpin_grace);
        }
    }
    at.max(now + Duration::from_millis(10))
}

fn report_inputs(inv: &Inventory, plan: &Plan) -> Vec<report::RevisionInput> {
    let not_here: HashMap<_, _> = plan
        .revisions
        .iter()
        .map(|r| (&r.key, (r.wanted, r.not_held.clone())))
        .collect();
    let mut out = Vec::new();
    for w in &inv.workloads {
        for r in &w.revisions {
            let (wanted, reason) = not_here.get(&r.key).cloned().unwrap_or((false, None));
            let reason = reason.map(|n| n.to_string());
            out.push(report::RevisionInput {
                workload: w.id.clone(),
                helm_release: w.helm_release.clone(),
                revision: r.number,
                helm_revision: r.helm_versions.first().copied(),
                status: r.status.clone(),
                current: r.current,
                sources: r
                    .sources
                    .iter()
                    .map(|s| s.kind.as_str().to_string())
                    .collect(),
                images: r
                    .images
                    .iter()
                    .map(|i| report::ImageInput {
                        container: i.container.clone(),
                        reference: i
                            .image
                            .as_ref()
                            .map(|r| r.canonical())
                            .ok_or_else(|| i.error.clone().unwrap_or_else(|| i.written.clone())),
                        pull_policy: i.pull_policy.as_str().to_string(),
                    })
                    .collect(),
                has_pull_secrets: !r.pull_secrets.is_empty(),
                not_here: if wanted {
                    None
                } else {
                    Some(reason.unwrap_or_else(|| "not scheduled on this node".into()))
                },
            });
        }
    }
    out
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Params {
        Params {
            max_concurrent_pulls: 2,
            unpin_grace: Duration::from_secs(600),
            backoff_initial: Duration::from_secs(5),
            backoff_max: Duration::from_secs(300),
            over_disk_budget: true,
            view_fresh: true,
        }
    }

    #[test]
    fn held_back_by_disk_wakes_soon_not_at_resync() {
        let now = Instant::now();
        let d = Decision {
            waiting: vec![("r/a:1".into(), Waiting::DiskBudget)],
            ..Default::default()
        };
        let at = next_wake(
            &d,
            &decide::State::default(),
            &params(),
            now,
            Duration::from_secs(300),
        );
        assert_eq!(at, now + DISK_RECHECK);
        let idle = next_wake(
            &Decision::default(),
            &decide::State::default(),
            &params(),
            now,
            Duration::from_secs(300),
        );
        assert_eq!(
            idle,
            now + Duration::from_secs(300),
            "nothing due: the periodic resync"
        );
    }
}

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
use crate::decide::{self, Decision, Held, Params, Waiting, Want};
use crate::history::store::{HistorySnapshot, HistoryStore};
use crate::http::{Health, PrefetchAccepted, PrefetchCommand, PrefetchRequest};
use crate::image_ref::ImageRef;
use crate::inventory::Inventory;
use crate::metrics::{Metrics, ProblemLabel, ReadinessLabel, SourceLabel};
use crate::model::NodeFacts;
use crate::node::RegistryAuth;
use crate::node::{ImageInfo, ImageRuntime, NodeError, PinOwner, PullOutcome};
use crate::plan::{DesiredImage, NotHeld, Plan, PlanConfig, ThisNode};
use crate::report::{self, Readiness};
use crate::status::{DiskHealth, SourceHealth, Status};

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
    /// Sizes of images pulled before, by reference; only those the plan wants are kept.
    size_hints: HashMap<String, u64>,
    pulls: JoinSet<PullResult>,
    /// What each pull task pulls, so that a task that panics or is aborted frees its slot.
    pull_tasks: HashMap<tokio::task::Id, Want>,
    plan: Option<Arc<Plan>>,
    inventory: Option<Arc<Inventory>>,
    /// History generation the plan was built from; None forces a rebuild.
    planned_generation: Option<u64>,
    /// Why the image filesystem's size was unknown at the last look (logged once per change).
    fs_unknown: Option<String>,
    /// Problems of the current inventory already logged (those that went away are forgotten).
    logged_problems: HashSet<String>,
    /// Per source and problem kind, what the metric has counted; per source, the error counted.
    /// Both hold registered sources only.
    problem_counts: HashMap<(String, String), u64>,
    source_errors_seen: HashMap<String, String>,
}

/// Images a manual prefetch may hold at once (until restart): the admin API is outside input.
const MAX_MANUAL_IMAGES: usize = 1024;

impl Daemon {
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
                Some(done) = st.pulls.join_next_with_id(), if !st.pulls.is_empty() => {
                    match done {
                        Ok((id, done)) => {
                            st.pull_tasks.remove(&id);
                            self.pull_finished(&mut st, done);
                        }
                        Err(e) => self.pull_task_failed(&mut st, e),
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

    /// A pull task that panicked or was aborted: its slot is freed and the image retried with
    /// backoff, as after a failed pull.
    fn pull_task_failed(&self, st: &mut LoopState, e: tokio::task::JoinError) {
        let Some(want) = st.pull_tasks.remove(&e.id()) else {
            return;
        };
        st.decide.in_flight.remove(&want.reference);
        let what = if e.is_panic() {
            "panicked"
        } else {
            "was cancelled"
        };
        let cfg = self.config.borrow().clone();
        let params = params(&cfg, false, false);
        decide::record_failure(
            &mut st.decide,
            &want,
            format!("the pull task {what}"),
            false,
            &params,
            Instant::now(),
        );
        Metrics::result(&self.metrics.pulls, "task_failed");
        tracing::error!(image = %want.reference, "pull task {what}; retried with backoff");
    }

    fn pull_finished(&self, st: &mut LoopState, (want, result, took): PullResult) {
        st.decide.in_flight.remove(&want.reference);
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
        let (fs, fs_unknown) = match self.runtime.fs_info().await {
            Ok(f) if f.capacity_bytes.is_some_and(|c| c > 0) => (Some(f), None),
            Ok(f) => (
                Some(f),
                Some("the runtime does not report the image filesystem's capacity".to_string()),
            ),
            Err(e) => (None, Some(format!("image filesystem info failed: {e}"))),
        };
        if fs_unknown.is_some() != st.fs_unknown.is_some() {
            match &fs_unknown {
                Some(why) => {
                    tracing::warn!(reason = %why, "the image filesystem's size is unknown: the disk budget cannot be enforced")
                }
                None => tracing::info!(
                    "the image filesystem's size is known again: the disk budget is enforced"
                ),
            }
        }
        st.fs_unknown = fs_unknown;
        let over_budget = fs.as_ref().is_some_and(|f| {
            decide::over_disk_budget(
                f.used_bytes,
                f.capacity_bytes,
                f.available_bytes,
                cfg.disk_budget_percent,
            )
        });
        // An object that never decoded may need any image: unpin nothing while one exists.
        let view_fresh = view_fresh(&snap, self.expect_node);
        let mut p = params(&cfg, over_budget, view_fresh);
        p.disk_headroom = fs.as_ref().and_then(|f| {
            decide::disk_headroom(
                f.used_bytes,
                f.capacity_bytes,
                f.available_bytes,
                cfg.disk_budget_percent,
            )
        });
        let wants: Vec<Want> = plan
            .images
            .iter()
            .map(|d| Want {
                reference: d.reference.clone(),
                registry: ImageRef::parse(&d.reference)
                    .map(|r| r.registry_host().to_string())
                    .unwrap_or_default(),
                size_hint: d.size_bytes,
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
            // Held back counts too when only the pulls in flight fill the remaining room.
            fs.as_ref().map(|f| {
                let held_back = d.waiting.iter().any(|(_, w)| *w == Waiting::DiskBudget);
                (f, over_budget || held_back)
            }),
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
            let runtime = self.runtime.clone();
            let creds = self.credentials.clone();
            tracing::info!(image = %reference, priority = ?desired.priority, "pull started");
            let task_want = want.clone();
            let task = st.pulls.spawn(async move {
                let started = Instant::now();
                let sets = match &creds {
                    Some(c) => c.for_image(&desired).await,
                    None => Vec::new(),
                };
                let result = pull_with(&*runtime, &desired.pull_ref, &sets).await;
                (task_want, result, started.elapsed())
            });
            st.pull_tasks.insert(task.id(), want);
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
        let mut current = HashSet::with_capacity(problems.len());
        for p in problems {
            let text = p.to_string();
            let new = !st.logged_problems.contains(&text);
            current.insert(text);
            if new {
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
        let nameless = NodeFacts::default();
        let name = cfg.node_name.as_deref().unwrap_or_default();
        let node = match &snap.node {
            Some(n) => ThisNode::Known(n),
            None if self.expect_node => ThisNode::Unknown {
                name,
                reason: unknown_node_reason(name, &snap.node_status),
            },
            None => ThisNode::Known(&nameless),
        };
        let mut extra = cfg.extra_images.clone();
        extra.extend(st.manual.iter().cloned());
        let pcfg = PlanConfig {
            hold_everything: cfg.hold_everything,
            extra_images: extra,
        };
        st.logged_problems = current;
        let plan = crate::plan::plan_for(&inventory, &node, &pcfg, &st.size_hints);
        let wanted: HashSet<&str> = plan.images.iter().map(|d| d.reference.as_str()).collect();
        st.size_hints.retain(|r, _| wanted.contains(r.as_str()));
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
            let held = st.manual.len() + chosen.iter().filter(|r| !st.manual.contains(*r)).count();
            if held > MAX_MANUAL_IMAGES {
                return Err(format!(
                    "a manual prefetch holds at most {MAX_MANUAL_IMAGES} images until restart ({held} asked); list the ones to keep in `extra_images`"
                ));
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
            node_state: plan.node_state.clone(),
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
                size_unknown: st.fs_unknown.clone(),
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
        m.image_fs_size_known
            .set(i64::from(status.disk.size_unknown.is_none()));
        m.runtime_can_pin.set(i64::from(self.can_pin));
        m.set_node_state(&status.node_state);
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
        let mut unresolved_by_kind: HashMap<String, usize> = HashMap::new();
        let node_entry =
            self.expect_node
                .then_some(("node", "node".to_string(), &snap.node_status));
        let entries = snap
            .sources
            .iter()
            .map(|(id, s)| (id.kind.as_str(), id.to_string(), s))
            .chain(node_entry);
        for (kind, name, s) in entries {
            let kind = kind.to_string();
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
                unresolved: s.unresolved.iter().map(|u| u.report()).collect(),
            });
            *unresolved_by_kind.entry(kind).or_default() += s.unresolved.len();
        }
        let names: HashSet<&str> = out.iter().map(|h| h.source.as_str()).collect();
        st.source_errors_seen
            .retain(|name, _| names.contains(name.as_str()));
        st.problem_counts
            .retain(|(name, _), _| names.contains(name.as_str()));
        for (kind, synced) in synced_by_kind {
            self.metrics
                .source_synced
                .get_or_create(&SourceLabel { source: kind })
                .set(i64::from(synced));
        }
        for (kind, n) in unresolved_by_kind {
            self.metrics
                .unresolved_objects
                .get_or_create(&SourceLabel { source: kind })
                .set(n as i64);
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

/// Fresh enough to unpin: every source fresh, no object that never decoded (it may describe
/// anything) and, when a Node is expected, that Node known. A node without its Node object cannot
/// tell which constrained revisions it holds, so their pins stay until it is back.
fn view_fresh(snap: &HistorySnapshot, expect_node: bool) -> bool {
    snap.all_sources_fresh()
        && snap.complete()
        && (!expect_node || (snap.node_status.is_fresh() && snap.node.is_some()))
}

/// Why the expected Node object is not known, for the plan and the report.
fn unknown_node_reason(name: &str, status: &crate::history::store::SourceStatus) -> String {
    match (&status.last_error, status.in_error, status.synced) {
        (Some(e), true, _) => format!("Node object {name} cannot be read: {e}"),
        (_, _, false) => format!("Node object {name} not listed yet"),
        _ => format!("Node object {name} not found"),
    }
}

fn params(cfg: &Config, over_disk_budget: bool, view_fresh: bool) -> Params {
    Params {
        max_concurrent_pulls: cfg.max_concurrent_pulls,
        unpin_grace: cfg.unpin_grace,
        backoff_initial: cfg.backoff_initial,
        backoff_max: cfg.backoff_max,
        over_disk_budget,
        disk_headroom: None,
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
            let node_unknown = matches!(reason, Some(NotHeld::NodeUnknown { .. }));
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
                node_unknown,
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
            disk_headroom: None,
            view_fresh: true,
        }
    }

    /// The in-memory runtime, except that the first pull panics (a bug in a runtime client).
    struct PanicsOnFirstPull {
        inner: crate::node::memory::MemoryRuntime,
        pulls: std::sync::atomic::AtomicU32,
    }

    #[async_trait::async_trait]
    impl ImageRuntime for PanicsOnFirstPull {
        async fn list(&self) -> Result<Vec<ImageInfo>, NodeError> {
            self.inner.list().await
        }
        async fn status(&self, image: &str) -> Result<Option<ImageInfo>, NodeError> {
            self.inner.status(image).await
        }
        async fn pull(
            &self,
            image: &str,
            auth: Option<&RegistryAuth>,
        ) -> Result<PullOutcome, NodeError> {
            if self.pulls.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("runtime client bug");
            }
            self.inner.pull(image, auth).await
        }
        async fn pin(&self, image: &str) -> Result<crate::node::PinOutcome, NodeError> {
            self.inner.pin(image).await
        }
        async fn unpin(&self, image: &str) -> Result<crate::node::UnpinOutcome, NodeError> {
            self.inner.unpin(image).await
        }
        async fn fs_info(&self) -> Result<crate::node::FsInfo, NodeError> {
            self.inner.fs_info().await
        }
    }

    #[tokio::test]
    async fn a_panicked_pull_frees_its_slot_and_is_retried() {
        let image = "reg.example/app:1";
        let runtime = Arc::new(PanicsOnFirstPull {
            inner: crate::node::memory::MemoryRuntime::new(),
            pulls: Default::default(),
        });
        runtime.inner.publish(image, 10);
        let cfg = Config {
            extra_images: vec![image.to_string()],
            start_jitter: Duration::ZERO,
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_millis(50),
            max_concurrent_pulls: 1,
            ..Config::default()
        };
        let (_config_tx, config) = watch::channel(Arc::new(cfg));
        let (_prefetch_tx, prefetch) = mpsc::channel(1);
        let metrics = Arc::new(Metrics::new());
        let daemon = Daemon {
            runtime: runtime.clone(),
            store: HistoryStore::new(),
            config,
            metrics: metrics.clone(),
            health: Arc::new(Health::default()),
            status: watch::channel(crate::http::StatusDoc::from_json(b"{}")).0,
            prefetch,
            credentials: None,
            can_pin: true,
            expect_node: false,
            runtime_events: None,
        };
        let cancel = CancellationToken::new();
        let task = tokio::spawn(daemon.run(cancel.clone()));
        let start = Instant::now();
        loop {
            let held = runtime.inner.list().await.expect("list");
            if held
                .iter()
                .any(|i| i.pinned && i.repo_tags.iter().any(|t| t == image))
            {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the image was never pulled again after the panicked pull: {held:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(runtime.pulls.load(Ordering::SeqCst), 2);
        cancel.cancel();
        task.await.expect("the loop stops");
    }

    #[tokio::test]
    async fn an_unknown_image_filesystem_size_is_reported_not_taken_as_fine() {
        let runtime = Arc::new(crate::node::memory::MemoryRuntime::new());
        let cfg = Config {
            resync_interval: Duration::from_millis(20),
            ..Config::default()
        };
        let (_config_tx, config) = watch::channel(Arc::new(cfg));
        let (_prefetch_tx, prefetch) = mpsc::channel(1);
        let metrics = Arc::new(Metrics::new());
        let (status, mut docs) = watch::channel(crate::http::StatusDoc::from_json(b"{}"));
        let daemon = Daemon {
            runtime: runtime.clone(),
            store: HistoryStore::new(),
            config,
            metrics: metrics.clone(),
            health: Arc::new(Health::default()),
            status,
            prefetch,
            credentials: None,
            can_pin: true,
            expect_node: false,
            runtime_events: None,
        };
        let cancel = CancellationToken::new();
        let task = tokio::spawn(daemon.run(cancel.clone()));
        async fn disk(
            docs: &mut watch::Receiver<crate::http::StatusDoc>,
            known: bool,
        ) -> serde_json::Value {
            loop {
                docs.changed().await.expect("status");
                let v: serde_json::Value =
                    serde_json::from_slice(&docs.borrow_and_update().json()).expect("JSON");
                if v["disk"]["size_unknown"].is_null() == known {
                    return v["disk"].clone();
                }
            }
        }
        let d = tokio::time::timeout(Duration::from_secs(5), disk(&mut docs, false))
            .await
            .expect("reported");
        assert!(
            d["size_unknown"]
                .as_str()
                .is_some_and(|w| w.contains("capacity")),
            "{d}"
        );
        assert_eq!(metrics.image_fs_size_known.get(), 0);
        runtime.set_fs_info(crate::node::FsInfo {
            mountpoint: "/memory".into(),
            used_bytes: 0,
            inodes_used: None,
            capacity_bytes: Some(1 << 30),
            available_bytes: Some(1 << 29),
        });
        tokio::time::timeout(Duration::from_secs(5), disk(&mut docs, true))
            .await
            .expect("known again");
        assert_eq!(metrics.image_fs_size_known.get(), 1);
        cancel.cancel();
        task.await.expect("the loop stops");
    }

    /// Manual prefetches hold their images until restart: their number is capped, since every
    /// request adds to it.
    #[tokio::test]
    async fn images_held_by_manual_prefetch_are_bounded() {
        let (_config_tx, config) = watch::channel(Arc::new(Config {
            start_jitter: Duration::from_secs(3600),
            ..Config::default()
        }));
        let (_prefetch_tx, prefetch) = mpsc::channel(1);
        let daemon = Daemon {
            runtime: Arc::new(crate::node::memory::MemoryRuntime::new()),
            store: HistoryStore::new(),
            config,
            metrics: Arc::new(Metrics::new()),
            health: Arc::new(Health::default()),
            status: watch::channel(crate::http::StatusDoc::from_json(b"{}")).0,
            prefetch,
            credentials: None,
            can_pin: true,
            expect_node: false,
            runtime_events: None,
        };
        let mut st = LoopState::default();
        let batch = |from: usize, n: usize| PrefetchRequest {
            images: (from..from + n)
                .map(|i| format!("reg.example/app:{i}"))
                .collect(),
            ..Default::default()
        };
        daemon
            .prefetch_cmd(&mut st, &batch(0, 1000))
            .await
            .expect("1000 held");
        daemon
            .prefetch_cmd(&mut st, &batch(500, 524))
            .await
            .expect("asking again for held images adds only the new ones");
        assert_eq!(st.manual.len(), MAX_MANUAL_IMAGES);
        let e = daemon
            .prefetch_cmd(&mut st, &batch(5000, 1))
            .await
            .expect_err("over the cap");
        assert!(e.contains("extra_images"), "{e}");
        assert_eq!(st.manual.len(), MAX_MANUAL_IMAGES);
        daemon
            .prefetch_cmd(&mut st, &batch(0, 3))
            .await
            .expect("held ones can still be asked for");
    }

    #[test]
    fn unknown_node_says_why() {
        use crate::history::store::SourceStatus;
        let listing = SourceStatus::default();
        assert_eq!(
            unknown_node_reason("n1", &listing),
            "Node object n1 not listed yet"
        );
        let gone = SourceStatus {
            synced: true,
            ..SourceStatus::default()
        };
        assert_eq!(unknown_node_reason("n1", &gone), "Node object n1 not found");
        // RBAC denying nodes: the watch never lists, and says why.
        let denied = SourceStatus {
            in_error: true,
            last_error: Some("nodes \"n1\" is forbidden".into()),
            ..SourceStatus::default()
        };
        assert_eq!(
            unknown_node_reason("n1", &denied),
            "Node object n1 cannot be read: nodes \"n1\" is forbidden"
        );
    }

    #[test]
    fn a_missing_node_makes_the_view_unfit_for_unpinning() {
        let mut snap = HistorySnapshot::default();
        snap.node_status.synced = true;
        assert!(view_fresh(&snap, false), "no Node expected");
        assert!(!view_fresh(&snap, true), "Node expected and missing");
        snap.node = Some(NodeFacts::default());
        assert!(view_fresh(&snap, true));
        snap.node_status.in_error = true;
        assert!(!view_fresh(&snap, true), "node watch in error");
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

//! One reconcile pass: plan from a fresh snapshot (when history or config changed), list the
//! runtime and look at the disk once, decide, act (start pulls, pin, unpin), publish.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::config::Config;
use crate::decide::{self, Decision, Held, Params, Waiting, Want};
use crate::history::store::HistorySnapshot;
use crate::image_ref::ImageRef;
use crate::inventory::Inventory;
use crate::metrics::{OpResult, ReconcileResult, Source};
use crate::node::{FsInfo, ImageInfo, PinOutcome, PinOwner};
use crate::plan::Plan;

use super::daemon::{Daemon, LoopState, next_wake};
use super::planning::{NodeLookup, plan_for_node};
use super::publish::PassView;
use crate::history::progress::Progress;

/// How long to wait before asking an unreachable runtime again.
const RUNTIME_RETRY: Duration = Duration::from_secs(5);

/// The plan and the inventory it came from, kept until history or config changes.
#[derive(Default)]
pub(super) struct Planned {
    pub(super) plan: Option<Arc<Plan>>,
    pub(super) inventory: Option<Arc<Inventory>>,
    /// History generation the plan was built from; None forces a rebuild.
    generation: Option<u64>,
    /// Sizes of images pulled before, by reference; only those the plan wants are kept.
    pub(super) size_hints: HashMap<String, u64>,
    /// Problems of the current inventory already logged (those that went away are forgotten).
    logged_problems: HashSet<String>,
}

impl Planned {
    /// The next pass plans again (the config or the manual images changed).
    pub(super) fn invalidate(&mut self) {
        self.generation = None;
    }
}

impl Daemon {
    /// One pass: plan, look, decide, act, report. Returns when the next pass is due at the latest.
    pub(super) async fn pass(&self, st: &mut LoopState) -> Instant {
        let cfg = self.config.borrow().clone();
        let snap = self.store.snapshot();
        self.refresh_plan(st, &cfg, &snap);
        let plan = st.planned.plan.clone().expect("refresh_plan sets a plan");
        let now = Instant::now();
        let progress = Progress::new(&snap, self.node.expect_node);

        let infos = match self.runtime.list().await {
            Ok(infos) => {
                self.out.health.runtime_answered();
                infos
            }
            Err(e) => {
                self.out.health.runtime_failed(now);
                tracing::warn!(error = %e, "container runtime unreachable; nothing is pulled, pinned or unpinned until it answers");
                self.out
                    .metrics
                    .reconcile_finished(ReconcileResult::RuntimeUnreachable);
                self.out.health.ready.store(false, Ordering::Relaxed);
                let view = PassView {
                    cfg: &cfg,
                    snap: &snap,
                    plan: &plan,
                    held: &[],
                    disk: None,
                    runtime_error: Some(e.to_string()),
                    waiting: &HashMap::new(),
                };
                self.publish(st, view);
                return now + RUNTIME_RETRY;
            }
        };
        let mut held: Vec<Held> = infos.iter().map(held_of).collect();
        let fs = self.look_at_disk(st).await;
        let over_budget = fs.as_ref().is_some_and(|f| {
            decide::over_disk_budget(
                f.used_bytes,
                f.capacity_bytes,
                f.available_bytes,
                cfg.disk_budget_percent,
            )
        });
        // An object that never decoded may need any image: unpin nothing while one exists.
        let mut p = params(&cfg, over_budget, progress.fresh());
        p.disk_headroom = fs.as_ref().and_then(|f| {
            decide::disk_headroom(
                f.used_bytes,
                f.capacity_bytes,
                f.available_bytes,
                cfg.disk_budget_percent,
            )
        });
        let wants = wants_of(&plan);
        let jitter = cfg.start_jitter;
        let d = decide::decide(&wants, &held, &mut st.decide, &p, now, || {
            if jitter.is_zero() {
                Duration::ZERO
            } else {
                rand::rng().random_range(Duration::ZERO..=jitter)
            }
        });
        self.act(st, &plan, &wants, &d, &mut held).await;

        let waiting: HashMap<String, Waiting> = d.waiting.iter().cloned().collect();
        // Held back counts too when only the pulls in flight fill the remaining room.
        let held_back = d.waiting.iter().any(|(_, w)| *w == Waiting::DiskBudget);
        let view = PassView {
            cfg: &cfg,
            snap: &snap,
            plan: &plan,
            held: &held,
            disk: fs.as_ref().map(|f| (f, over_budget || held_back)),
            runtime_error: None,
            waiting: &waiting,
        };
        self.publish(st, view);

        self.out
            .health
            .ready
            .store(progress.listed(), Ordering::Relaxed);
        self.out
            .metrics
            .reconcile_finished(ReconcileResult::Success);
        next_wake(&d, &st.decide, &p, now, cfg.resync_interval)
    }

    /// The image filesystem as the runtime reports it; says once when its size becomes unknown,
    /// and once when it is known again.
    async fn look_at_disk(&self, st: &mut LoopState) -> Option<FsInfo> {
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
        fs
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
            self.start_pull(st, desired, want);
        }
        let metrics = &self.out.metrics;
        for id in &d.pin {
            let result = self.runtime.pin(id).await;
            metrics.pin_finished(OpResult::of(&result));
            match result {
                Ok(outcome) => {
                    tracing::info!(image = %image_name(held, id), ?outcome, "pinned");
                    if let Some(h) = held.iter_mut().find(|h| &h.id == id) {
                        h.pinned = true;
                        h.pinned_by_us = matches!(outcome, PinOutcome::Pinned);
                    }
                }
                Err(e) => {
                    tracing::warn!(image = %image_name(held, id), error = %e, "pin failed; retried next pass");
                }
            }
        }
        for id in &d.unpin {
            let result = self.runtime.unpin(id).await;
            metrics.unpin_finished(OpResult::of(&result));
            match result {
                Ok(outcome) => {
                    tracing::info!(image = %image_name(held, id), ?outcome, "unpinned: no retained revision needs it any more (the image stays; kubelet GC may now remove it)");
                    st.decide.unneeded_since.remove(id);
                    if let Some(h) = held.iter_mut().find(|h| &h.id == id) {
                        h.pinned = false;
                        h.pinned_by_us = false;
                    }
                }
                Err(e) => {
                    tracing::warn!(image = %image_name(held, id), error = %e, "unpin failed; retried next pass");
                }
            }
        }
    }

    /// Rebuild inventory and plan when history or config changed since the last pass.
    fn refresh_plan(&self, st: &mut LoopState, cfg: &Config, snap: &HistorySnapshot) {
        let planned = &mut st.planned;
        if planned.generation == Some(snap.generation) && planned.plan.is_some() {
            return;
        }
        // The old inventory and plan go first: the new ones are built in the memory they free,
        // instead of beside them (on a large history, each is megabytes).
        planned.inventory = None;
        planned.plan = None;
        let (inventory, problems) = Inventory::build(snap.facts());
        let mut current = HashSet::with_capacity(problems.len());
        for p in problems {
            let text = p.to_string();
            let new = !planned.logged_problems.contains(&text);
            current.insert(text);
            if new {
                tracing::warn!(object = %p.object, kind = %p.kind, "skipped: {}", p.message);
                self.out
                    .metrics
                    .decode_problems_found(Source::Inventory, p.kind, 1);
            }
        }
        planned.logged_problems = current;
        let node = NodeLookup::in_snapshot(snap, cfg, self.node.expect_node);
        let manual = st.manual.iter().cloned();
        let plan = plan_for_node(&inventory, &node, cfg, manual, &planned.size_hints);
        let wanted: HashSet<&str> = plan.images.iter().map(|d| d.reference.as_str()).collect();
        planned
            .size_hints
            .retain(|r, _| wanted.contains(r.as_str()));
        planned.plan = Some(Arc::new(plan));
        planned.inventory = Some(Arc::new(inventory));
        planned.generation = Some(snap.generation);
    }
}

/// What the plan wants, as `decide` takes it.
fn wants_of(plan: &Plan) -> Vec<Want> {
    plan.images
        .iter()
        .map(|d| Want {
            reference: d.reference.clone(),
            registry: ImageRef::parse(&d.reference)
                .map(|r| r.registry_host().to_string())
                .unwrap_or_default(),
            size_hint: d.size_bytes,
        })
        .collect()
}

pub(super) fn params(cfg: &Config, over_disk_budget: bool, view_fresh: bool) -> Params {
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

pub(super) fn held_of(i: &ImageInfo) -> Held {
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

//! What a pass tells the world: the `/status` document (readiness report, sources, disk) and the
//! metrics that mirror it.

use std::collections::{HashMap, HashSet};
use std::time::{Instant, SystemTime};

use rollcache_core::problem::ProblemKind;

use crate::config::Config;
use crate::decide::{self, Held, Waiting};
use crate::history::store::HistorySnapshot;
use crate::http::StatusDoc;
use crate::inventory::Inventory;
use crate::metrics::Source;
use crate::node::FsInfo;
use crate::plan::{NotHeld, Plan};
use crate::report;
use crate::status::{DiskHealth, SourceHealth, Status};

use super::daemon::{Daemon, LoopState};
use crate::history::progress::Progress;

/// What one pass saw, for `/status` and the metrics.
pub(super) struct PassView<'a> {
    pub(super) cfg: &'a Config,
    pub(super) snap: &'a HistorySnapshot,
    pub(super) plan: &'a Plan,
    /// The images the runtime holds (none when it did not answer).
    pub(super) held: &'a [Held],
    /// The image filesystem, and whether pulls are held back by the disk budget; None when
    /// the runtime did not say.
    pub(super) disk: Option<(&'a FsInfo, bool)>,
    /// Why the runtime did not answer, if so.
    pub(super) runtime_error: Option<String>,
    /// Why each image not pulled yet waits.
    pub(super) waiting: &'a HashMap<String, Waiting>,
}

/// What the source counters have counted so far, so that each pass adds only what is new. Both
/// hold registered sources only.
#[derive(Default)]
pub(super) struct Counted {
    /// Per source and problem kind, the problems counted.
    problems: HashMap<(String, ProblemKind), u64>,
    /// Per source, the error counted.
    errors: HashMap<String, String>,
}

impl Daemon {
    pub(super) fn publish(&self, st: &mut LoopState, v: PassView<'_>) {
        let PassView {
            cfg,
            snap,
            plan,
            held,
            disk,
            runtime_error,
            waiting,
        } = v;
        let inventory = st.planned.inventory.clone().unwrap_or_default();
        let revisions = report_inputs(&inventory, plan);
        let view = report::NodeView {
            held,
            waiting,
            can_pin: self.node.can_pin,
            view_fresh: Progress::new(snap, self.node.expect_node).fresh(),
            credential_policy: cfg.credential_verification_policy,
            credential_allowlist: &cfg.credential_verification_allowlist,
            now: Instant::now(),
        };
        let rep = report::build(&revisions, &view);
        // A runtime that did not answer holds nothing: not a loss, so not observed.
        if let Some(events) = self.out.events.as_ref().filter(|_| runtime_error.is_none()) {
            let wanted: Vec<&str> = plan.images.iter().map(|d| d.reference.as_str()).collect();
            events.send(st.transitions.observe(&rep, held, &wanted));
        }
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
            history_generation: snap.generation,
            runtime_reachable: runtime_error.is_none(),
            runtime_error,
            can_pin: self.node.can_pin,
            sources,
            disk: DiskHealth {
                used_bytes: disk.map_or(0, |(f, _)| f.used_bytes),
                capacity_bytes: disk.and_then(|(f, _)| f.capacity_bytes),
                available_bytes: disk.and_then(|(f, _)| f.available_bytes),
                budget_percent: cfg.disk_budget_percent,
                over_budget: disk.is_some_and(|(_, over)| over),
                size_unknown: st.fs_unknown.clone(),
            },
            images_desired: plan.images.len(),
            images_present: present.len(),
            images_pinned: present.iter().filter(|h| h.pinned).count(),
            pulls_in_flight: st.pulls.len(),
            report: rep,
        };
        let m = &self.out.metrics;
        m.set_images(
            status.images_desired,
            status.images_present,
            status.images_pinned,
        );
        m.set_revisions(&status.report.summary);
        m.set_needs_registry(&status.report);
        m.set_disk(&status.disk);
        m.set_can_pin(self.node.can_pin);
        m.set_node_state(&status.node_state);
        match StatusDoc::from_value(&status) {
            Ok(doc) => {
                drop(status);
                self.out.status.send_replace(doc);
            }
            // Serializing plain data into memory does not fail; if it ever did, the last
            // document stays served rather than an empty one.
            Err(e) => tracing::error!(error = %e, "status document not updated"),
        }
    }

    /// Source health for `/status`, and the source metrics (counters advance by what is new).
    fn source_health(&self, st: &mut LoopState, snap: &HistorySnapshot) -> Vec<SourceHealth> {
        let metrics = &self.out.metrics;
        let counted = &mut st.counted;
        let mut out = Vec::new();
        let mut synced_by_source: HashMap<Source, bool> = HashMap::new();
        let mut unresolved_by_source: HashMap<Source, usize> = HashMap::new();
        let node_entry =
            self.node
                .expect_node
                .then_some(("node".to_string(), Source::Node, &snap.node_status));
        let entries = snap
            .sources
            .iter()
            .map(|(id, s)| (id.to_string(), Source::History(id.kind), s))
            .chain(node_entry);
        for (name, source, s) in entries {
            *synced_by_source.entry(source).or_insert(true) &= s.is_fresh();
            if s.in_error {
                let err = s.last_error.clone().unwrap_or_default();
                if counted.errors.get(&name) != Some(&err) {
                    metrics.source_failed(source);
                    counted.errors.insert(name.clone(), err);
                }
            } else {
                counted.errors.remove(&name);
            }
            for (kind, n) in &s.problems {
                let seen = counted.problems.entry((name.clone(), *kind)).or_default();
                if *n > *seen {
                    metrics.decode_problems_found(source, *kind, *n - *seen);
                    *seen = *n;
                }
            }
            out.push(SourceHealth {
                source: name,
                synced: s.synced,
                error: if s.in_error {
                    s.last_error.clone()
                } else {
                    s.incomplete.clone()
                },
                objects: s.objects,
                problems: s.problems_total(),
                unresolved: s.unresolved.iter().map(|u| u.report()).collect(),
            });
            *unresolved_by_source.entry(source).or_default() += s.unresolved.len();
        }
        let names: HashSet<&str> = out.iter().map(|h| h.source.as_str()).collect();
        counted
            .errors
            .retain(|name, _| names.contains(name.as_str()));
        counted
            .problems
            .retain(|(name, _), _| names.contains(name.as_str()));
        for (source, synced) in synced_by_source {
            metrics.set_source_synced(source, synced);
        }
        for (source, n) in unresolved_by_source {
            metrics.set_unresolved(source, n);
        }
        out
    }
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

/// Now, in Unix seconds (0 for a clock before 1970), for what the agent stamps and publishes.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

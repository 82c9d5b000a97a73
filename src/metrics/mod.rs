//! Every Prometheus metric rollcache exports, registered in one place (OpenMetrics text).
//!
//! Names start with `rollcache_`, units are in the names, labels stay low-cardinality: no image
//! references or digests as labels (the `/status` report carries those), except on the capped
//! `revision_needs_registry` series, which exist so that an alert can name the container to fix.

mod labels;
mod needs_registry;

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

pub use labels::{
    ErrorKind, EventReason, EventResult, NodeStateValue, OpResult, PrefetchResult, Problem,
    ReadinessValue, ReconcileResult, ReloadResult, Source,
};
use labels::{
    EventLabel, NeedsRegistryLabel, NodeStateLabel, OpResultLabel, PrefetchResultLabel,
    ProblemLabel, ReadinessLabel, ReconcileResultLabel, ReloadResultLabel, SourceLabel,
};
pub use needs_registry::NEEDS_REGISTRY_SERIES_MAX;
use rollcache_core::problem::ProblemKind;

use crate::report::Readiness;
use crate::status::DiskHealth;

/// The metric families; the daemon, the HTTP handlers and the config reload change them through
/// the verbs below.
pub struct Metrics {
    registry: Registry,
    pub(crate) images_desired: Gauge,
    pub(crate) images_present: Gauge,
    pub(crate) images_missing: Gauge,
    pub(crate) images_pinned: Gauge,
    pub(crate) revisions: Family<ReadinessLabel, Gauge>,
    pub(crate) needs_registry: Family<NeedsRegistryLabel, Gauge>,
    pub(crate) needs_registry_omitted: Gauge,
    /// The `needs_registry` series the last pass set, so that the next removes only what is gone
    /// (a scrape never sees them all cleared).
    pub(crate) needs_registry_shown: Mutex<HashSet<NeedsRegistryLabel>>,
    pub(crate) pulls: Family<OpResultLabel, Counter>,
    pub(crate) pull_duration: Histogram,
    pub(crate) pulled_bytes: Counter,
    pub(crate) pins: Family<OpResultLabel, Counter>,
    pub(crate) unpins: Family<OpResultLabel, Counter>,
    pub(crate) source_synced: Family<SourceLabel, Gauge>,
    pub(crate) source_errors: Family<SourceLabel, Counter>,
    pub(crate) decode_problems: Family<ProblemLabel, Counter>,
    pub(crate) unresolved_objects: Family<SourceLabel, Gauge>,
    pub(crate) image_fs_used_bytes: Gauge,
    pub(crate) image_fs_capacity_bytes: Gauge,
    pub(crate) disk_budget_ratio: Gauge<f64, AtomicU64>,
    pub(crate) disk_budget_reached: Gauge,
    pub(crate) image_fs_size_known: Gauge,
    pub(crate) last_reconcile_timestamp: Gauge<f64, AtomicU64>,
    pub(crate) reconciles: Family<ReconcileResultLabel, Counter>,
    pub(crate) runtime_can_pin: Gauge,
    pub(crate) node_state: Family<NodeStateLabel, Gauge>,
    pub(crate) config_reloads: Family<ReloadResultLabel, Counter>,
    pub(crate) prefetch_requests: Family<PrefetchResultLabel, Counter>,
    pub(crate) events: Family<EventLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("rollcache");
        let m = Metrics {
            images_desired: Gauge::default(),
            images_present: Gauge::default(),
            images_missing: Gauge::default(),
            images_pinned: Gauge::default(),
            revisions: Family::default(),
            needs_registry: Family::default(),
            needs_registry_omitted: Gauge::default(),
            needs_registry_shown: Mutex::default(),
            pulls: Family::default(),
            pull_duration: Histogram::new(exponential_buckets(0.25, 2.0, 14)),
            pulled_bytes: Counter::default(),
            pins: Family::default(),
            unpins: Family::default(),
            source_synced: Family::default(),
            source_errors: Family::default(),
            decode_problems: Family::default(),
            unresolved_objects: Family::default(),
            image_fs_used_bytes: Gauge::default(),
            image_fs_capacity_bytes: Gauge::default(),
            disk_budget_ratio: Gauge::default(),
            disk_budget_reached: Gauge::default(),
            image_fs_size_known: Gauge::default(),
            last_reconcile_timestamp: Gauge::default(),
            reconciles: Family::default(),
            runtime_can_pin: Gauge::default(),
            node_state: Family::default(),
            config_reloads: Family::default(),
            prefetch_requests: Family::default(),
            events: Family::default(),
            registry: Registry::default(),
        };
        r.register(
            "images_desired",
            "Images this node should hold (plan)",
            m.images_desired.clone(),
        );
        r.register(
            "images_present",
            "Desired images present in containerd",
            m.images_present.clone(),
        );
        r.register(
            "images_missing",
            "Desired images not present in containerd",
            m.images_missing.clone(),
        );
        r.register(
            "images_pinned",
            "Desired images present and pinned against kubelet image GC",
            m.images_pinned.clone(),
        );
        r.register(
            "revisions",
            "Revisions wanted on this node, by rollback readiness",
            m.revisions.clone(),
        );
        r.register(
            "revision_needs_registry",
            "1 for each image of a revision that is cached but still needs the registry, and why",
            m.needs_registry.clone(),
        );
        r.register(
            "revision_needs_registry_omitted",
            "Images of revisions needing the registry left out of revision_needs_registry by its cap",
            m.needs_registry_omitted.clone(),
        );
        r.register("pulls", "Image pulls by result", m.pulls.clone());
        r.register_with_unit(
            "pull_duration",
            "Duration of image pulls through CRI",
            Unit::Seconds,
            m.pull_duration.clone(),
        );
        r.register_with_unit(
            "pulled",
            "Bytes of images pulled (image size as reported by the runtime)",
            Unit::Bytes,
            m.pulled_bytes.clone(),
        );
        r.register("pins", "Pin operations by result", m.pins.clone());
        r.register("unpins", "Unpin operations by result", m.unpins.clone());
        r.register(
            "source_synced",
            "1 when the history source has completed its initial list and is not in error",
            m.source_synced.clone(),
        );
        r.register(
            "source_errors",
            "Errors watching a history source",
            m.source_errors.clone(),
        );
        r.register(
            "decode_problems",
            "Objects (or parts) skipped because they could not be decoded",
            m.decode_problems.clone(),
        );
        r.register(
            "history_unresolved_objects",
            "Objects whose latest version cannot be decoded: their last good facts are kept",
            m.unresolved_objects.clone(),
        );
        r.register_with_unit(
            "image_fs_used",
            "Bytes used on the image filesystem",
            Unit::Bytes,
            m.image_fs_used_bytes.clone(),
        );
        r.register_with_unit(
            "image_fs_capacity",
            "Capacity of the image filesystem (0 when unknown)",
            Unit::Bytes,
            m.image_fs_capacity_bytes.clone(),
        );
        r.register(
            "disk_budget_ratio",
            "Configured share of the image filesystem above which no pull starts",
            m.disk_budget_ratio.clone(),
        );
        r.register(
            "disk_budget_reached",
            "1 when pulls are held back by the disk budget",
            m.disk_budget_reached.clone(),
        );
        r.register(
            "image_fs_size_known",
            "0 when the image filesystem's size is unknown, so that the disk budget cannot be enforced",
            m.image_fs_size_known.clone(),
        );
        r.register_with_unit(
            "last_reconcile_timestamp",
            "Unix time of the last successful reconcile",
            Unit::Seconds,
            m.last_reconcile_timestamp.clone(),
        );
        r.register(
            "reconciles",
            "Reconcile passes by result",
            m.reconciles.clone(),
        );
        r.register(
            "runtime_can_pin",
            "1 when the container runtime honours the pinned label",
            m.runtime_can_pin.clone(),
        );
        r.register(
            "node_state",
            "1 when this node is in the state: unknown (no Node object), cordoned, or under a node-condition taint; planning ignores all but unknown",
            m.node_state.clone(),
        );
        r.register(
            "config_reloads",
            "Config file reloads by result",
            m.config_reloads.clone(),
        );
        r.register(
            "prefetch_requests",
            "Manual prefetch requests by result",
            m.prefetch_requests.clone(),
        );
        r.register(
            "events",
            "Events on the Node by reason and result",
            m.events.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    pub fn pull_finished(&self, result: OpResult) {
        self.pulls.get_or_create(&OpResultLabel { result }).inc();
    }

    /// A pull that transferred the image (not one that found it present).
    pub fn image_pulled(&self, took: Duration, bytes: u64) {
        self.pull_duration.observe(took.as_secs_f64());
        self.pulled_bytes.inc_by(bytes);
    }

    pub fn pin_finished(&self, result: OpResult) {
        self.pins.get_or_create(&OpResultLabel { result }).inc();
    }

    pub fn unpin_finished(&self, result: OpResult) {
        self.unpins.get_or_create(&OpResultLabel { result }).inc();
    }

    /// A pass ended; a successful one also stamps the time of the last reconcile.
    pub fn reconcile_finished(&self, result: ReconcileResult) {
        self.reconciles
            .get_or_create(&ReconcileResultLabel { result })
            .inc();
        if result == ReconcileResult::Success {
            let now = crate::reconcile::unix_now();
            self.last_reconcile_timestamp.set(now as f64);
        }
    }

    pub fn config_reloaded(&self, result: ReloadResult) {
        self.config_reloads
            .get_or_create(&ReloadResultLabel { result })
            .inc();
    }

    pub fn prefetch_answered(&self, result: PrefetchResult) {
        self.prefetch_requests
            .get_or_create(&PrefetchResultLabel { result })
            .inc();
    }

    pub fn event_finished(&self, reason: EventReason, result: EventResult) {
        self.events
            .get_or_create(&EventLabel { reason, result })
            .inc();
    }

    /// The images the plan wants, how many of them are present, and how many of those pinned.
    pub fn set_images(&self, desired: usize, present: usize, pinned: usize) {
        self.images_desired.set(desired as i64);
        self.images_present.set(present as i64);
        self.images_missing
            .set(desired.saturating_sub(present) as i64);
        self.images_pinned.set(pinned as i64);
    }

    /// Revisions by readiness; every readiness is exported, 0 when none is in it.
    pub fn set_revisions(&self, summary: &std::collections::BTreeMap<Readiness, usize>) {
        for r in Readiness::ALL {
            let n = summary.get(&r).copied().unwrap_or(0);
            self.revisions
                .get_or_create(&ReadinessLabel {
                    readiness: ReadinessValue(r),
                })
                .set(n as i64);
        }
    }

    pub fn set_disk(&self, disk: &DiskHealth) {
        self.image_fs_used_bytes.set(disk.used_bytes as i64);
        self.image_fs_capacity_bytes
            .set(disk.capacity_bytes.unwrap_or(0) as i64);
        self.disk_budget_ratio
            .set(f64::from(disk.budget_percent) / 100.0);
        self.disk_budget_reached.set(i64::from(disk.over_budget));
        self.image_fs_size_known
            .set(i64::from(disk.size_unknown.is_none()));
    }

    pub fn set_can_pin(&self, can_pin: bool) {
        self.runtime_can_pin.set(i64::from(can_pin));
    }

    /// Every state is always exported (0 or 1), so that alerts see it clear.
    pub fn set_node_state(&self, n: &crate::plan::NodeState) {
        let taint = |key: &str| {
            n.ignored_taints
                .iter()
                .any(|t| t.split(':').next() == Some(key))
        };
        use NodeStateValue as S;
        let states = [
            (S::Unknown, !n.known),
            (S::Cordoned, n.cordoned),
            (S::NotReady, taint("node.kubernetes.io/not-ready")),
            (S::Unreachable, taint("node.kubernetes.io/unreachable")),
            (
                S::MemoryPressure,
                taint("node.kubernetes.io/memory-pressure"),
            ),
            (S::DiskPressure, taint("node.kubernetes.io/disk-pressure")),
            (S::PidPressure, taint("node.kubernetes.io/pid-pressure")),
            (
                S::NetworkUnavailable,
                taint("node.kubernetes.io/network-unavailable"),
            ),
        ];
        for (state, on) in states {
            self.node_state
                .get_or_create(&NodeStateLabel { state })
                .set(i64::from(on));
        }
    }

    pub fn set_source_synced(&self, source: Source, synced: bool) {
        self.source_synced
            .get_or_create(&SourceLabel { source })
            .set(i64::from(synced));
    }

    pub fn source_failed(&self, source: Source) {
        self.source_errors
            .get_or_create(&SourceLabel { source })
            .inc();
    }

    /// `n` more objects (or parts) of `source` skipped as undecodable.
    pub fn decode_problems_found(&self, source: Source, kind: ProblemKind, n: u64) {
        self.decode_problems
            .get_or_create(&ProblemLabel {
                source,
                kind: Problem(kind),
            })
            .inc_by(n);
    }

    pub fn set_unresolved(&self, source: Source, objects: usize) {
        self.unresolved_objects
            .get_or_create(&SourceLabel { source })
            .set(objects as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let m = Metrics::new();
        m.pull_finished(OpResult::Success);
        m.image_pulled(Duration::from_secs_f64(1.5), 42);
        m.set_revisions(&[(Readiness::OfflineSafe, 3)].into());
        let text = m.encode();
        for needle in [
            "rollcache_pulls_total{result=\"success\"} 1",
            "rollcache_pull_duration_seconds_bucket",
            "rollcache_pulled_bytes_total 42",
            "rollcache_revisions{readiness=\"offline_safe\"} 3",
            "rollcache_image_fs_used_bytes",
            "rollcache_disk_budget_ratio 0",
            "rollcache_last_reconcile_timestamp_seconds",
            "# EOF",
        ] {
            assert!(text.contains(needle), "missing {needle} in:\n{text}");
        }
    }

    /// The typed label values print as the documented strings that alerts and dashboards match.
    #[test]
    fn label_values_print_as_documented() {
        let m = Metrics::new();
        let refused = crate::node::NodeError::Unauthorized {
            image: "reg.example/app:1".into(),
            detail: "denied".into(),
        };
        m.pull_finished(OpResult::of::<()>(&Err(refused)));
        m.pull_finished(OpResult::TaskFailed);
        m.unpin_finished(OpResult::Success);
        m.reconcile_finished(ReconcileResult::RuntimeUnreachable);
        m.config_reloaded(ReloadResult::Rejected);
        m.prefetch_answered(PrefetchResult::Timeout);
        m.event_finished(EventReason::RevisionNotOfflineSafe, EventResult::Denied);
        m.set_source_synced(Source::History(crate::model::SourceKind::HelmRelease), true);
        m.source_failed(Source::Node);
        m.decode_problems_found(Source::Inventory, ProblemKind::InvalidImageRef, 2);
        m.set_node_state(&crate::plan::NodeState {
            ignored_taints: vec!["node.kubernetes.io/memory-pressure:NoSchedule".into()],
            ..Default::default()
        });
        let text = m.encode();
        for needle in [
            "rollcache_pulls_total{result=\"unauthorized\"} 1",
            "rollcache_pulls_total{result=\"task_failed\"} 1",
            "rollcache_unpins_total{result=\"success\"} 1",
            "rollcache_reconciles_total{result=\"runtime_unreachable\"} 1",
            "rollcache_config_reloads_total{result=\"rejected\"} 1",
            "rollcache_prefetch_requests_total{result=\"timeout\"} 1",
            "rollcache_events_total{reason=\"RevisionNotOfflineSafe\",result=\"denied\"} 1",
            "rollcache_source_synced{source=\"helm\"} 1",
            "rollcache_source_errors_total{source=\"node\"} 1",
            "rollcache_decode_problems_total{source=\"inventory\",kind=\"invalid_image_ref\"} 2",
            "rollcache_node_state{state=\"memory_pressure\"} 1",
            "rollcache_node_state{state=\"unknown\"} 0",
        ] {
            assert!(text.contains(needle), "missing {needle} in:\n{text}");
        }
    }
}

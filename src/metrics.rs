//! Every Prometheus metric rollcache exports, registered in one place (OpenMetrics text).
//!
//! Names start with `rollcache_`, units are in the names, labels stay low-cardinality: no image
//! references or digests as labels (the `/status` report carries those).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadinessLabel {
    pub readiness: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeStateLabel {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProblemLabel {
    pub source: String,
    pub kind: String,
}

pub struct Metrics {
    registry: Registry,
    pub images_desired: Gauge,
    pub images_present: Gauge,
    pub images_missing: Gauge,
    pub images_pinned: Gauge,
    pub revisions: Family<ReadinessLabel, Gauge>,
    pub pulls: Family<ResultLabel, Counter>,
    pub pull_duration: Histogram,
    pub pulled_bytes: Counter,
    pub pins: Family<ResultLabel, Counter>,
    pub unpins: Family<ResultLabel, Counter>,
    pub source_synced: Family<SourceLabel, Gauge>,
    pub source_errors: Family<SourceLabel, Counter>,
    pub decode_problems: Family<ProblemLabel, Counter>,
    pub unresolved_objects: Family<SourceLabel, Gauge>,
    pub image_fs_used_bytes: Gauge,
    pub image_fs_capacity_bytes: Gauge,
    pub disk_budget_ratio: Gauge<f64, AtomicU64>,
    pub disk_budget_reached: Gauge,
    pub image_fs_size_known: Gauge,
    pub last_reconcile_timestamp: Gauge<f64, AtomicU64>,
    pub reconciles: Family<ResultLabel, Counter>,
    pub runtime_can_pin: Gauge,
    pub node_state: Family<NodeStateLabel, Gauge>,
    pub config_reloads: Family<ResultLabel, Counter>,
    pub prefetch_requests: Family<ResultLabel, Counter>,
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
        Metrics { registry: r, ..m }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// Every state is always exported (0 or 1), so that alerts see it clear.
    pub fn set_node_state(&self, n: &crate::plan::NodeState) {
        let taint = |key: &str| {
            n.ignored_taints
                .iter()
                .any(|t| t.split(':').next() == Some(key))
        };
        let states = [
            ("unknown", !n.known),
            ("cordoned", n.cordoned),
            ("not_ready", taint("node.kubernetes.io/not-ready")),
            ("unreachable", taint("node.kubernetes.io/unreachable")),
            (
                "memory_pressure",
                taint("node.kubernetes.io/memory-pressure"),
            ),
            ("disk_pressure", taint("node.kubernetes.io/disk-pressure")),
            ("pid_pressure", taint("node.kubernetes.io/pid-pressure")),
            (
                "network_unavailable",
                taint("node.kubernetes.io/network-unavailable"),
            ),
        ];
        for (state, on) in states {
            self.node_state
                .get_or_create(&NodeStateLabel {
                    state: state.to_owned(),
                })
                .set(i64::from(on));
        }
    }

    pub fn result(family: &Family<ResultLabel, Counter>, result: &str) {
        family
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let m = Metrics::new();
        Metrics::result(&m.pulls, "success");
        m.pull_duration.observe(1.5);
        m.pulled_bytes.inc_by(42);
        m.revisions
            .get_or_create(&ReadinessLabel {
                readiness: "offline_safe".into(),
            })
            .set(3);
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
}

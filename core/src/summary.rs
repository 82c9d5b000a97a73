//! The node's summary as the cluster sees it (`RollcacheNode` status): counts, the revisions that
//! are not offline-safe and why, the node's state in one word, built from the `/status` document.

use serde::{Deserialize, Serialize};

use crate::report::Readiness;
use crate::status::Status;

/// At most this many not-offline-safe revisions are named; the rest are counted.
pub const MAX_LISTED: usize = 20;

/// What `RollcacheNode.status` holds. `observed_at` aside, two summaries of the same node state
/// are equal, which is what lets the publisher skip unchanged ones.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSummary {
    pub images: ImageCounts,
    pub revisions: RevisionCounts,
    /// The held revisions that are not offline-safe, first `MAX_LISTED` of them.
    pub not_offline_safe: Vec<NotSafe>,
    /// How many more are not offline-safe than `not_offline_safe` names.
    pub not_offline_safe_more: usize,
    /// `Ready`, `NotReady`, `Cordoned`, `NodeMissing`, `Stale`, `SourceError`, `CannotPin` or
    /// `RuntimeDown`: the most pressing one.
    pub state: String,
    pub message: String,
    /// The history store generation the summary reflects.
    pub history_generation: u64,
    /// RFC 3339, UTC.
    pub observed_at: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageCounts {
    pub desired: usize,
    pub present: usize,
    pub pinned: usize,
}

/// Revisions held on this node, by readiness.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionCounts {
    pub total: usize,
    pub offline_safe: usize,
    pub needs_registry: usize,
    pub failed: usize,
    /// Pulling, missing, disk budget, cannot pin, stale.
    pub other: usize,
}

/// One held revision a rollback to which would not start from the cache alone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotSafe {
    /// `Kind/namespace/name`.
    pub workload: String,
    /// The controller's revision number (what `kubectl rollout undo --to-revision` takes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm_release: Option<String>,
    /// The newest Helm release revision whose manifest holds this template (what `helm
    /// rollback` takes); a separate number, since the two count differently.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm_revision: Option<i64>,
    pub readiness: String,
    pub reason: String,
}

impl NodeSummary {
    /// `status` summarised at `history_generation`, observed at `now_unix` (seconds).
    pub fn of(status: &Status, history_generation: u64, now_unix: i64) -> Self {
        let count = |r: Readiness| status.report.summary.get(&r).copied().unwrap_or(0);
        let total: usize = status.report.summary.values().sum();
        let (safe, needs_registry, failed) = (
            count(Readiness::OfflineSafe),
            count(Readiness::NeedsRegistry),
            count(Readiness::Failed),
        );
        let mut not_safe = Vec::new();
        let mut more = 0;
        for w in &status.report.workloads {
            for r in &w.revisions {
                let Some(readiness) = r.readiness.filter(|r| *r != Readiness::OfflineSafe) else {
                    continue;
                };
                if not_safe.len() == MAX_LISTED {
                    more += 1;
                    continue;
                }
                not_safe.push(NotSafe {
                    workload: format!("{}/{}/{}", w.kind, w.namespace, w.name),
                    revision: r.revision,
                    helm_release: w.helm_release.clone(),
                    helm_revision: r.helm_revision,
                    readiness: readiness.as_str().to_owned(),
                    reason: r.reasons.join("; "),
                });
            }
        }
        let (state, message) = state_of(status, total - safe);
        NodeSummary {
            images: ImageCounts {
                desired: status.images_desired,
                present: status.images_present,
                pinned: status.images_pinned,
            },
            revisions: RevisionCounts {
                total,
                offline_safe: safe,
                needs_registry,
                failed,
                other: total - safe - needs_registry - failed,
            },
            not_offline_safe: not_safe,
            not_offline_safe_more: more,
            state: state.to_owned(),
            message,
            history_generation,
            observed_at: rfc3339(now_unix),
        }
    }

    /// Equal but for when it was observed.
    pub fn same_as(&self, other: &NodeSummary) -> bool {
        NodeSummary {
            observed_at: String::new(),
            ..self.clone()
        } == NodeSummary {
            observed_at: String::new(),
            ..other.clone()
        }
    }
}

/// The most pressing state first: without a runtime or a Node nothing else is meaningful.
fn state_of(s: &Status, not_safe: usize) -> (&'static str, String) {
    if !s.runtime_reachable {
        let e = s.runtime_error.as_deref().unwrap_or("no answer");
        return ("RuntimeDown", format!("container runtime unreachable: {e}"));
    }
    if !s.node_state.known {
        let why = s
            .node_state
            .unknown_reason
            .as_deref()
            .unwrap_or("no Node object");
        return ("NodeMissing", format!("Node object unknown: {why}"));
    }
    if let Some(src) = s.sources.iter().find(|src| src.error.is_some()) {
        let e = src.error.as_deref().unwrap_or_default();
        return ("SourceError", format!("history source {}: {e}", src.source));
    }
    if let Some(src) = s.sources.iter().find(|src| !src.synced) {
        let msg = format!(
            "history source {} not synced: the view may be outdated",
            src.source
        );
        return ("Stale", msg);
    }
    if !s.can_pin {
        let msg = "runtime cannot pin images (needs containerd >= 1.7.10 or 2.x)".to_owned();
        return ("CannotPin", msg);
    }
    let revisions = format!("{not_safe} held revision(s) not offline-safe");
    if s.node_state.cordoned {
        return (
            "Cordoned",
            format!("node cordoned (ignored by the plan); {revisions}"),
        );
    }
    if not_safe > 0 {
        return ("NotReady", revisions);
    }
    ("Ready", "every held revision is offline-safe".to_owned())
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (days to civil date: Howard Hinnant's algorithm).
pub fn rfc3339(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Report, RevisionReport, WorkloadReport};
    use crate::status::SourceHealth;

    fn revision(n: i64, readiness: Readiness, reason: &str) -> RevisionReport {
        RevisionReport {
            revision: Some(n),
            helm_revision: None,
            status: None,
            current: false,
            sources: vec![],
            readiness: Some(readiness),
            not_here: None,
            node_unknown: false,
            reasons: if reason.is_empty() {
                vec![]
            } else {
                vec![reason.to_owned()]
            },
            images: vec![],
        }
    }

    fn status(revisions: Vec<RevisionReport>) -> Status {
        let mut summary = std::collections::BTreeMap::new();
        for r in &revisions {
            *summary.entry(r.readiness.expect("held")).or_default() += 1;
        }
        Status {
            runtime_reachable: true,
            can_pin: true,
            images_desired: 3,
            images_present: 2,
            images_pinned: 1,
            sources: vec![SourceHealth {
                source: "statefulsets".into(),
                synced: true,
                ..SourceHealth::default()
            }],
            report: Report {
                workloads: vec![WorkloadReport {
                    kind: "StatefulSet".into(),
                    namespace: "ioc".into(),
                    name: "bl01".into(),
                    helm_release: None,
                    revisions,
                }],
                summary,
            },
            ..Status::default()
        }
    }

    #[test]
    fn counts_by_readiness_and_names_what_is_not_offline_safe() {
        let s = status(vec![
            revision(1, Readiness::OfflineSafe, ""),
            revision(
                2,
                Readiness::NeedsRegistry,
                "ioc (repo/ioc:latest): pull policy Always",
            ),
            revision(3, Readiness::Failed, "pull failed"),
            revision(4, Readiness::Pulling, "pulling"),
        ]);
        let sum = NodeSummary::of(&s, 7, 0);
        assert_eq!(
            sum.images,
            ImageCounts {
                desired: 3,
                present: 2,
                pinned: 1
            }
        );
        assert_eq!(
            sum.revisions,
            RevisionCounts {
                total: 4,
                offline_safe: 1,
                needs_registry: 1,
                failed: 1,
                other: 1
            }
        );
        assert_eq!(sum.not_offline_safe.len(), 3);
        let first = &sum.not_offline_safe[0];
        assert_eq!(first.workload, "StatefulSet/ioc/bl01");
        assert_eq!(
            (first.revision, first.readiness.as_str()),
            (Some(2), "needs_registry")
        );
        assert!(first.reason.contains("pull policy Always"), "{first:?}");
        assert_eq!(
            (sum.state.as_str(), sum.history_generation),
            ("NotReady", 7)
        );
        assert_eq!(sum.observed_at, "1970-01-01T00:00:00Z");
    }

    /// `kubectl rollout undo --to-revision` and `helm rollback` count differently: a revision is
    /// named by each number it has, never one standing in for the other.
    #[test]
    fn controller_and_helm_revision_numbers_are_kept_apart() {
        let mut helm_only = revision(0, Readiness::NeedsRegistry, "pull policy Always");
        (helm_only.revision, helm_only.helm_revision) = (None, Some(5));
        let mut both = revision(3, Readiness::Missing, "missing");
        both.helm_revision = Some(7);
        let sum = NodeSummary::of(&status(vec![helm_only, both]), 1, 0);
        let numbers: Vec<_> = sum
            .not_offline_safe
            .iter()
            .map(|n| (n.revision, n.helm_revision))
            .collect();
        assert_eq!(numbers, [(None, Some(5)), (Some(3), Some(7))]);
    }

    #[test]
    fn names_at_most_twenty_and_counts_the_rest() {
        let revs = (1..=25)
            .map(|n| revision(n, Readiness::Missing, "missing"))
            .collect();
        let sum = NodeSummary::of(&status(revs), 1, 0);
        assert_eq!(
            (sum.not_offline_safe.len(), sum.not_offline_safe_more),
            (MAX_LISTED, 5)
        );
        assert_eq!(sum.revisions.other, 25);
    }

    #[test]
    fn the_state_word_says_the_most_pressing_thing() {
        let ok = status(vec![revision(1, Readiness::OfflineSafe, "")]);
        assert_eq!(NodeSummary::of(&ok, 1, 0).state, "Ready");
        let mut s = ok.clone();
        s.node_state.cordoned = true;
        assert_eq!(NodeSummary::of(&s, 1, 0).state, "Cordoned");
        s.can_pin = false;
        assert_eq!(NodeSummary::of(&s, 1, 0).state, "CannotPin");
        s.sources[0].synced = false;
        assert_eq!(NodeSummary::of(&s, 1, 0).state, "Stale");
        s.sources[0].error = Some("forbidden".into());
        let sum = NodeSummary::of(&s, 1, 0);
        assert_eq!(sum.state, "SourceError");
        assert!(
            sum.message.contains("statefulsets: forbidden"),
            "{}",
            sum.message
        );
        s.node_state.known = false;
        assert_eq!(NodeSummary::of(&s, 1, 0).state, "NodeMissing");
        s.runtime_reachable = false;
        assert_eq!(NodeSummary::of(&s, 1, 0).state, "RuntimeDown");
    }

    #[test]
    fn same_as_ignores_only_the_time() {
        let s = status(vec![revision(1, Readiness::OfflineSafe, "")]);
        let a = NodeSummary::of(&s, 1, 0);
        assert!(a.same_as(&NodeSummary::of(&s, 1, 99)));
        assert!(!a.same_as(&NodeSummary::of(&s, 2, 0)));
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(1_798_000_000), "2026-12-23T04:26:40Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}

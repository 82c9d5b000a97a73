//! The node's status document (`GET /status`, `rollcache status`): sources, disk, runtime and the
//! readiness report, and its table for people.

use serde::{Deserialize, Serialize};

use crate::report::Report;
use crate::text::{Column, table_within};

/// A history source's health as `/status` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceHealth {
    pub source: String,
    pub synced: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub objects: usize,
    pub problems: u64,
    /// Objects whose latest version could not be decoded (completely): their last good facts
    /// are kept, and nothing they may need is unpinned, until they decode again or go.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unresolved: Vec<UnresolvedReport>,
}

/// One object with an unresolved decode problem, as `/status` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnresolvedReport {
    pub object: String,
    pub problems: Vec<String>,
    /// Facts kept from the object's last version that decoded cleanly.
    pub kept_facts: usize,
    /// False: no version decoded cleanly since start.
    pub ever_good: bool,
    /// Never decoded and not refused by a cap: nothing at all is unpinned meanwhile.
    #[serde(default)]
    pub holds_unpins: bool,
}

/// Disk usage of the image filesystem against the budget.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DiskHealth {
    /// Bytes the runtime's images take.
    pub used_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity_bytes: Option<u64>,
    /// Free bytes of the whole filesystem (other users included), as the kubelet counts them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    pub budget_percent: u8,
    pub over_budget: bool,
    /// Why the filesystem's size is unknown (so the budget is not enforced); absent when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_unknown: Option<String>,
}

/// Everything `GET /status` returns and `rollcache status` prints.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub node: String,
    /// Known or not (and why), cordoned, weather taints: what the plan ignored or waits for.
    #[serde(default)]
    pub node_state: crate::plan::NodeState,
    /// Unix seconds.
    pub generated_at: i64,
    /// The history store generation the document reflects.
    #[serde(default)]
    pub history_generation: u64,
    pub runtime_reachable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_error: Option<String>,
    pub can_pin: bool,
    pub sources: Vec<SourceHealth>,
    pub disk: DiskHealth,
    pub images_desired: usize,
    pub images_present: usize,
    pub images_pinned: usize,
    /// Pulls running now (never more than `max_concurrent_pulls`).
    #[serde(default)]
    pub pulls_in_flight: usize,
    #[serde(flatten)]
    pub report: Report,
}

/// The readiness table for people, every cell whole.
pub fn render_table(s: &Status) -> String {
    render_table_within(s, None)
}

/// The readiness table with its rows in at most `width` characters when given: long workload
/// names lose their middle, long revisions and reasons their end (`-o wide` shows them whole).
pub fn render_table_within(s: &Status, width: Option<usize>) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let summary: Vec<String> = s
        .report
        .summary
        .iter()
        .map(|(r, n)| format!("{n} {}", r.as_str()))
        .collect();
    let _ = writeln!(
        out,
        "node {}: {} of {} desired images present, {} pinned; revisions: {}",
        if s.node.is_empty() { "-" } else { &s.node },
        s.images_present,
        s.images_desired,
        s.images_pinned,
        if summary.is_empty() {
            "none".to_string()
        } else {
            summary.join(", ")
        }
    );
    if !s.runtime_reachable {
        let _ = writeln!(
            out,
            "runtime: UNREACHABLE {}",
            s.runtime_error.as_deref().unwrap_or("")
        );
    } else if !s.can_pin {
        let _ = writeln!(
            out,
            "runtime: cannot pin images (needs containerd >= 1.7.10 or 2.x): kubelet GC may delete cached images"
        );
    }
    for src in s
        .sources
        .iter()
        .filter(|src| !src.synced || src.error.is_some())
    {
        let _ = writeln!(
            out,
            "source {}: {}{}",
            src.source,
            if src.synced { "synced" } else { "NOT SYNCED" },
            src.error
                .as_deref()
                .map(|e| format!(", error: {e}"))
                .unwrap_or_default()
        );
    }
    if let Some(n) = s.node_state.summary() {
        let _ = writeln!(out, "node: {n}");
    }
    for u in s.sources.iter().flat_map(|src| &src.unresolved) {
        let _ = writeln!(
            out,
            "history: {} cannot be decoded ({}): {}",
            u.object,
            u.problems.join("; "),
            if u.ever_good {
                format!("its last good facts are kept ({} kept)", u.kept_facts)
            } else if !u.holds_unpins {
                "refused; it describes nothing this node holds".to_string()
            } else {
                "nothing is unpinned until it decodes or is deleted".to_string()
            }
        );
    }
    if s.disk.over_budget {
        let _ = writeln!(
            out,
            "disk: image filesystem above the {}% budget: new pulls are held back",
            s.disk.budget_percent
        );
    }
    let mut rows = Vec::new();
    for w in &s.report.workloads {
        let name = format!("{}/{}/{}", w.kind, w.namespace, w.name);
        for r in &w.revisions {
            let mut rev = r.revision.map(|n| n.to_string()).unwrap_or("-".into());
            if let (Some(rel), Some(h)) = (&w.helm_release, r.helm_revision) {
                rev = format!("{rev} (helm {rel} v{h})");
            }
            let status = match (&r.status, r.current) {
                (Some(st), true) => format!("{st}, current"),
                (Some(st), false) => st.clone(),
                (None, true) => "current".into(),
                (None, false) => "retained".into(),
            };
            let (readiness, why) = match (&r.readiness, &r.not_here) {
                (Some(rd), _) => (
                    rd.as_str().to_string(),
                    r.reasons.first().cloned().unwrap_or_default(),
                ),
                (None, Some(n)) if r.node_unknown => ("node_unknown".into(), n.clone()),
                (None, Some(n)) => ("not_on_this_node".into(), n.clone()),
                (None, None) => ("-".into(), String::new()),
            };
            rows.push([name.clone(), rev, status, readiness, why]);
        }
    }
    let columns = [
        // Floors that leave the reason room in 100 columns beside the two fixed columns.
        Column::left("WORKLOAD").shrinks_in_the_middle().down_to(28),
        Column::left("REVISION").shrinks().down_to(14),
        Column::left("STATUS"),
        Column::left("READINESS"),
        Column::left("WHY").wraps().down_to(18),
    ];
    out.push_str(&table_within("", &columns, &rows, width));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_objects_that_cannot_be_decoded() {
        let unresolved = |ever_good| UnresolvedReport {
            object: "Secret apps/sh.helm.release.v1.shop.v2".into(),
            problems: vec!["gzip: release is not valid gzip".into()],
            kept_facts: 1,
            ever_good,
            holds_unpins: !ever_good,
        };
        let mut s = Status {
            runtime_reachable: true,
            can_pin: true,
            sources: vec![SourceHealth {
                source: "helm (secrets)".into(),
                synced: true,
                unresolved: vec![unresolved(true)],
                ..Default::default()
            }],
            ..Default::default()
        };
        let table = render_table(&s);
        assert!(
            table.contains("Secret apps/sh.helm.release.v1.shop.v2 cannot be decoded (gzip: release is not valid gzip): its last good facts are kept (1 kept)"),
            "{table}"
        );
        s.sources[0].unresolved = vec![unresolved(false)];
        assert!(
            render_table(&s).contains("nothing is unpinned until it decodes or is deleted"),
            "{}",
            render_table(&s)
        );
        s.sources[0].unresolved[0].holds_unpins = false;
        assert!(
            render_table(&s).contains("refused; it describes nothing this node holds"),
            "{}",
            render_table(&s)
        );
    }

    #[test]
    fn the_table_fits_100_columns_and_wide_keeps_every_cell_whole() {
        use crate::report::{Readiness, RevisionReport, WorkloadReport};
        let name = "bl45p-ea-ioc-01-with-a-name-as-long-as-facilities-give-them";
        let why = "container ioc: imagePullPolicy Always (the default for untagged images): the kubelet goes to the registry";
        let s = Status {
            node: "bl45p-ws001".into(),
            runtime_reachable: true,
            can_pin: true,
            report: Report {
                workloads: vec![WorkloadReport {
                    kind: "StatefulSet".into(),
                    namespace: "bl45p-beamline-namespace".into(),
                    name: name.into(),
                    helm_release: Some(name.into()),
                    revisions: vec![RevisionReport {
                        revision: Some(3),
                        helm_revision: Some(12),
                        status: Some("deployed".into()),
                        current: true,
                        sources: vec![],
                        readiness: Some(Readiness::NeedsRegistry),
                        not_here: None,
                        node_unknown: false,
                        reasons: vec![why.into()],
                        images: vec![],
                    }],
                }],
                summary: Default::default(),
            },
            ..Default::default()
        };
        let narrow = render_table_within(&s, Some(100));
        let rows: Vec<&str> = narrow.lines().skip(1).collect();
        for row in &rows {
            assert!(
                row.chars().count() <= 100,
                "{row:?} ({})",
                row.chars().count()
            );
        }
        // The kind and the name's end still tell the workload; the fixed columns stay whole; the
        // reason goes on over the next lines, whole.
        assert!(rows[1].starts_with("StatefulSet/"), "{narrow}");
        assert!(rows[1].contains("…ies-give-them"), "{narrow}");
        assert!(
            rows[1].contains("deployed, current  needs_registry"),
            "{narrow}"
        );
        let at = rows[0].find("WHY").unwrap();
        let reason: Vec<String> = rows[1..]
            .iter()
            .map(|r| r.chars().skip(at).collect::<String>().trim().to_owned())
            .collect();
        assert_eq!(reason.join(" "), why, "{narrow}");
        let wide = render_table(&s);
        assert!(wide.contains(&format!("StatefulSet/bl45p-beamline-namespace/{name}")));
        assert!(wide.contains(&format!("3 (helm {name} v12)")));
        assert!(wide.contains(why), "{wide}");
    }
}

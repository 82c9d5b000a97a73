//! The plan for people (`render_table`) and for scripts (`render_json`).

use std::collections::HashMap;
use std::fmt::Write as _;

use rollcache_core::text::{Column, clip, human_size, table_within};

use crate::inventory::RevisionKey;
use crate::plan::{Plan, PlannedRevision, Tier};

/// A stable, aligned text view: one block per image in pull order, then the revisions this node
/// does not hold and why, then problems; every value whole (`-o wide`).
pub fn render_table(plan: &Plan) -> String {
    render_table_within(plan, None)
}

/// [`render_table`] with the image blocks and the table of revisions not held in at most `width`
/// characters a line when given: references lose their middle (registry and tag or digest stay),
/// other values their end. Messages (the node line, problems) stay whole for the terminal to wrap.
pub fn render_table_within(plan: &Plan, width: Option<usize>) -> String {
    let by_key: HashMap<&RevisionKey, &PlannedRevision> =
        plan.revisions.iter().map(|r| (&r.key, r)).collect();
    let wanted = plan.revisions.iter().filter(|r| r.wanted).count();
    let mut out = String::new();
    let mode = if plan.hold_everything {
        "holding every revision"
    } else {
        "scheduling-aware"
    };
    let _ = writeln!(
        out,
        "Node {} ({mode}): {} images for {wanted} of {} revisions",
        display_or(&plan.node, "(unnamed)"),
        plan.images.len(),
        plan.revisions.len()
    );
    if let Some(n) = plan.node_state.summary() {
        let _ = writeln!(out, "Node state: {n}");
    }

    let digits = plan.images.len().to_string().len();
    let room = |used: usize| width.map(|w| w.saturating_sub(used));
    for (i, img) in plan.images.iter().enumerate() {
        let reference = fit(&img.reference, room(digits + 2), true);
        let _ = writeln!(out, "\n{:>digits$}. {reference}", i + 1);
        let pad = " ".repeat(digits + 2);
        let value_room = room(digits + 2 + 11);
        let mut field = |name: &str, value: &str| {
            let value = fit(value, value_room, name == "pulls");
            let _ = writeln!(out, "{pad}{name:<11}{value}");
        };
        let tier = match img.tier {
            Tier::Current => "current revision",
            Tier::Extra => "extra image",
            Tier::Retained => "retained revision",
        };
        field("priority", &format!("{} ({tier})", img.priority));
        field(
            "size",
            &img.size_bytes
                .map_or_else(|| "unknown".to_owned(), human_size),
        );
        if img.pull_ref != img.reference {
            field("pulls", &img.pull_ref);
        }
        let needed: Vec<String> = img
            .needed_by
            .iter()
            .map(|k| match by_key.get(k) {
                Some(r) => format!("{} {} {}", k.workload.kind, ns_name(k), r.label()),
                None => k.to_string(),
            })
            .collect();
        if img.extra {
            field("needed by", "extra_images (configuration)");
        }
        for (j, n) in needed.iter().enumerate() {
            field(
                if j == 0 && !img.extra {
                    "needed by"
                } else {
                    ""
                },
                n,
            );
        }
        if !img.pull_secrets.is_empty() {
            let s: Vec<String> = img.pull_secrets.iter().map(|s| s.to_string()).collect();
            field("secrets", &s.join(", "));
        }
        let policies: Vec<&str> = img.pull_policies.iter().map(|p| p.as_str()).collect();
        if !policies.is_empty() {
            field("policy", &policies.join(", "));
        }
        if img.never_pulled {
            field(
                "note",
                "imagePullPolicy Never: the kubelet never pulls it; held as found on the node",
            );
        }
    }

    let skipped: Vec<&PlannedRevision> = plan.revisions.iter().filter(|r| !r.wanted).collect();
    if !skipped.is_empty() {
        let _ = writeln!(
            out,
            "\nRevisions not held on this node ({}):",
            skipped.len()
        );
        let rows: Vec<[String; 3]> = skipped
            .iter()
            .map(|r| {
                [
                    format!("{} {}", r.key.workload.kind, ns_name(&r.key)),
                    r.label(),
                    r.not_held
                        .as_ref()
                        .map_or_else(|| "-".to_owned(), |n| n.to_string()),
                ]
            })
            .collect();
        let columns = [
            Column::left("WORKLOAD").shrinks_in_the_middle().down_to(28),
            Column::left("REVISION").shrinks(),
            Column::left("WHY").wraps(),
        ];
        out.push_str(&table_within("  ", &columns, &rows, width));
    }

    if !plan.problems.is_empty() {
        let _ = writeln!(out, "\nProblems ({}):", plan.problems.len());
        for p in &plan.problems {
            match &p.revision {
                Some(k) => {
                    let _ = writeln!(out, "  {k}: {}", p.message);
                }
                None => {
                    let _ = writeln!(out, "  {}", p.message);
                }
            }
        }
    }
    out
}

/// The plan as pretty JSON (`--output json`).
pub fn render_json(plan: &Plan) -> String {
    // A Plan holds only strings, numbers and lists: serialising it cannot fail.
    serde_json::to_string_pretty(plan).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// `value` in `room` characters, if limited: references keep both ends, the rest its start.
fn fit(value: &str, room: Option<usize>, reference: bool) -> String {
    match room {
        Some(room) => clip(value, room.max(20), reference),
        None => value.to_owned(),
    }
}

fn ns_name(k: &RevisionKey) -> String {
    if k.workload.namespace.is_empty() {
        k.workload.name.clone()
    } else {
        format!("{}/{}", k.workload.namespace, k.workload.name)
    }
}

fn display_or<'a>(s: &'a str, fallback: &'a str) -> &'a str {
    if s.is_empty() { fallback } else { s }
}

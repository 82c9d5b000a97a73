//! `rollcache check-rollback`: would a rollback start from the cache on every node its pods could
//! be scheduled on? The history listed once (as `plan`), the target planned for every Node by the
//! agent's own planning path, each eligible node answered from its `RollcacheNode`.

use std::collections::HashMap;
use std::time::Duration;

use rollcache_core::rollback::{
    LookupError, NodeAnswer, Selector, Target, TargetRevision, age_text, answer, find_target,
    workload_kind,
};
use rollcache_core::text::{Column, table_within};
use serde::Serialize;

use crate::commands::cluster::{CLUSTER_HINT, list_nodes, list_summaries};
use crate::commands::{Exit, Output, to_yaml, with_hint};
use crate::config::{Config, HistoryFrom, KubeArgs, SourcesConfig};
use crate::history::once;
use crate::history::sources::one_shot_client;
use crate::inventory::Inventory;
use crate::reconcile::planning::{NodeLookup, plan_for_node};
use crate::reconcile::unix_now;

#[derive(Debug, clap::Args)]
pub struct CheckRollbackArgs {
    #[command(flatten)]
    pub kube: KubeArgs,
    /// The workload, as kubectl names it: deployment|statefulset|daemonset (deploy, sts, ds)/NAME.
    #[arg(
        value_name = "KIND/NAME",
        required_unless_present = "helm_release",
        conflicts_with = "helm_release"
    )]
    pub workload: Option<String>,
    /// A Helm release instead: every workload its manifest at that revision holds.
    #[arg(long, value_name = "NAME")]
    pub helm_release: Option<String>,
    /// The namespace of the workload or release [default: the kubeconfig context's, else `default`]
    #[arg(long, short = 'n', value_name = "NS")]
    pub namespace: Option<String>,
    /// The revision to roll back to [default: the previous one, as `kubectl rollout undo` and
    /// `helm rollback` pick it].
    #[arg(long, value_name = "N")]
    pub to_revision: Option<i64>,
    /// A node summary older than this is not believed (agents refresh theirs every 5 min).
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = crate::commands::node::duration)]
    pub max_age: Duration,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Where the history comes from: the cluster's objects, or the fleet inventory [default: cluster]
    #[arg(long, env = "ROLLCACHE_HISTORY_FROM", value_enum)]
    pub history_from: Option<HistoryFrom>,
    /// Namespace of the inventory [default: POD_NAMESPACE, else rollcache]
    #[arg(long, env = "ROLLCACHE_INVENTORY_NAMESPACE", value_name = "NAME")]
    pub inventory_namespace: Option<String>,
}

/// A node the target's pods could not be scheduled on, and why.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct NotEligible {
    node: String,
    reason: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    /// `Kind/namespace/name` or `helm release namespace/name`.
    target: String,
    #[serde(flatten)]
    revision: Target,
    /// Every eligible node is ready and fresh, and there is at least one.
    ready: bool,
    nodes: Vec<NodeAnswer>,
    not_eligible: Vec<NotEligible>,
}

/// Exit 0 ready, 1 not ready, 2 no answer.
pub async fn run(args: CheckRollbackArgs) -> anyhow::Result<()> {
    let report = check(&args).await.map_err(Exit::no_answer)?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Yaml => print!("{}", to_yaml(&report)?),
        Output::Table | Output::Wide => print!("{}", table(&report, args.output)),
    }
    if report.ready {
        Ok(())
    } else {
        Err(Exit {
            code: Exit::NOT_READY,
            message: String::new(),
        }
        .into())
    }
}

/// What `args` name, in `namespace`; a workload that kubectl would not understand is a usage error.
fn selector(args: &CheckRollbackArgs, namespace: String) -> Result<Selector, Exit> {
    if let Some(name) = &args.helm_release {
        return Ok(Selector::HelmRelease {
            namespace,
            name: name.clone(),
        });
    }
    let text = args.workload.as_deref().unwrap_or_default();
    let usage = || {
        Exit::lookup(format!(
            "{text:?}: give the workload as KIND/NAME, KIND one of deployment, statefulset, daemonset (deploy, sts, ds)"
        ))
    };
    let (kind, name) = text.split_once('/').ok_or_else(usage)?;
    let kind = workload_kind(kind).ok_or_else(usage)?;
    if name.is_empty() {
        return Err(usage());
    }
    Ok(Selector::Workload {
        kind: kind.to_owned(),
        namespace,
        name: name.to_owned(),
    })
}

async fn check(args: &CheckRollbackArgs) -> anyhow::Result<Report> {
    // A usage error is told before the cluster is asked anything.
    selector(args, String::new())?;
    let client = one_shot_client(&args.kube)
        .await
        .map_err(|e| with_hint(e, CLUSTER_HINT))?;
    // As kubectl: the context's namespace unless one is given (the client knows it, or `default`).
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let selector = selector(args, namespace.clone())?;
    // The summaries first: without the CRD there is nothing to answer from.
    let summaries = list_summaries(&client).await?;
    let nodes = list_nodes(&client).await?;
    // Only the history that numbers the target's revisions: less to list, and no Secrets read
    // (which many users may not) unless a Helm release is asked about.
    let kind = match &selector {
        Selector::Workload { kind, .. } => Some(kind.as_str()),
        Selector::HelmRelease { .. } => None,
    };
    let cfg = Config {
        namespaces: vec![namespace],
        sources: SourcesConfig {
            replicasets: kind == Some("Deployment"),
            controller_revisions: matches!(kind, Some("StatefulSet" | "DaemonSet")),
            helm_secrets: kind.is_none(),
            helm_configmaps: kind.is_none(),
            pods: false,
        },
        history_from: args.history_from.unwrap_or_default(),
        inventory_namespace: args.inventory_namespace.clone(),
        ..Config::default()
    };
    let history = once::load_history(&cfg, Some(client)).await?;
    let (inventory, _) = Inventory::build(&history.facts);
    let target = find_target(&inventory, &selector, args.to_revision).map_err(|e| {
        // What was read may lack it: say why first (a namespace the indexer does not index).
        if let Some(why) = history.incomplete.first() {
            return Exit::lookup(format!("{e}; the history read is incomplete: {why}"));
        }
        // Where it looked, since a workload only Helm knows of has no controller history yet.
        let looked = match (&e, kind) {
            (LookupError::NotFound(_), Some("Deployment")) => "ReplicaSets",
            (LookupError::NotFound(_), Some(_)) => "ControllerRevisions",
            _ => return Exit::lookup(e.to_string()),
        };
        Exit::lookup(format!(
            "{e} (no {looked} of it; for what a Helm release deployed, use --helm-release RELEASE)"
        ))
    })?;

    let (now, max_age) = (unix_now(), args.max_age.as_secs() as i64);
    let mut answers = Vec::new();
    let mut not_eligible = Vec::new();
    for node in &nodes {
        // The agent's own path, as if planning on that node: what it would hold is where the
        // target's pods could be scheduled (cordon ignored, as the agent ignores it).
        let lookup = NodeLookup {
            name: &node.name,
            expected: true,
            facts: Some(node),
            listed: true,
            error: None,
        };
        let plan = plan_for_node(&inventory, &lookup, &cfg, [], &HashMap::new());
        let mut here: Vec<&TargetRevision> = Vec::new();
        let mut why_not = None;
        for t in &target.revisions {
            let planned = t.key.as_ref().and_then(|k| plan.revision(k));
            match planned {
                Some(p) if p.wanted => here.push(t),
                Some(p) => {
                    why_not = why_not.or_else(|| p.not_held.as_ref().map(|r| r.to_string()));
                }
                None => {}
            }
        }
        if here.is_empty() {
            not_eligible.push(NotEligible {
                node: node.name.clone(),
                reason: why_not.unwrap_or_else(|| "not scheduled here".into()),
            });
            continue;
        }
        answers.push(answer(
            &node.name,
            summaries.get(&node.name),
            &here,
            now,
            max_age,
        ));
    }
    Ok(Report {
        target: selector.to_string(),
        ready: !answers.is_empty() && answers.iter().all(|a| a.ready),
        revision: target,
        nodes: answers,
        not_eligible,
    })
}

fn table(r: &Report, output: Output) -> String {
    let wide = output == Output::Wide;
    let mut out = format!(
        "Rollback of {} to revision {}\n",
        r.target, r.revision.revision
    );
    if r.revision.previous {
        let tool = match r.target.starts_with("helm release") {
            true => "`helm rollback`",
            false => "`kubectl rollout undo`",
        };
        out.push_str(&format!(
            "(the previous revision: what {tool} picks without a number)\n"
        ));
    }
    if r.revision.revisions.len() > 1 || r.target.starts_with("helm release") {
        let names: Vec<String> = r
            .revision
            .revisions
            .iter()
            .map(TargetRevision::label)
            .collect();
        out.push_str(&format!("Workloads: {}\n", names.join(", ")));
    }
    let mut columns = vec![Column::left("NODE").shrinks(), Column::left("READY")];
    if wide {
        columns.push(Column::left("STATE"));
    }
    columns.extend([Column::left("REASON").shrinks(), Column::right("OBSERVED")]);
    let rows: Vec<Vec<String>> = r
        .nodes
        .iter()
        .map(|a| {
            let mut row = vec![a.node.clone(), if a.ready { "yes" } else { "no" }.into()];
            if wide {
                row.push(a.state.clone());
            }
            row.push(a.reason.clone());
            row.push(
                a.age_seconds
                    .map_or_else(|| "-".into(), |s| format!("{} ago", age_text(s))),
            );
            row
        })
        .collect();
    if !rows.is_empty() {
        out.push_str(&table_within("", &columns, &rows, output.width()));
    }
    if !r.not_eligible.is_empty() {
        out.push_str(&not_eligible_line(&r.not_eligible, output.width()));
    }
    let ready = r.nodes.iter().filter(|a| a.ready).count();
    out.push_str(&match (r.ready, r.nodes.len()) {
        (_, 0) => "NOT READY: no node could run this revision\n".to_owned(),
        (true, n) => format!("READY: starts from the cache on all {n} eligible node(s)\n"),
        (false, n) => format!(
            "NOT READY: {} of {n} eligible node(s) would need the registry or cannot tell\n",
            n - ready
        ),
    });
    out
}

/// The footer naming the nodes left out: in `width`, as many names as fit and how many more
/// (`-o wide` names every one, with why).
fn not_eligible_line(nodes: &[NotEligible], width: Option<usize>) -> String {
    let mut line = format!(
        "{} node(s) not eligible (its pods cannot be scheduled there): ",
        nodes.len()
    );
    for (i, e) in nodes.iter().enumerate() {
        let name = match width {
            None => format!("{} ({})", e.node, e.reason),
            Some(_) => e.node.clone(),
        };
        let sep = if i == 0 { "" } else { ", " };
        let left = nodes.len() - i;
        let more = format!(" and {} more (-o wide lists them)", left - 1);
        let fits = width.is_none_or(|w| {
            let tail = if left > 1 { more.len() } else { 0 };
            line.chars().count() + sep.len() + name.chars().count() + tail <= w
        });
        if !fits {
            line.push_str(&format!(" and {left} more (-o wide lists them)"));
            break;
        }
        line.push_str(sep);
        line.push_str(&name);
    }
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_footer_fits_the_table_width_and_counts_the_rest() {
        let nodes: Vec<NotEligible> = (0..40)
            .map(|i| NotEligible {
                node: format!("ws{i:03}"),
                reason: "nodeSelector location=bl01, node has location=bl02".into(),
            })
            .collect();
        let line = not_eligible_line(&nodes, Some(100));
        assert!(line.trim_end().chars().count() <= 100, "{line}");
        assert!(line.starts_with("40 node(s) not eligible"), "{line}");
        assert!(
            line.trim_end().ends_with(" more (-o wide lists them)"),
            "{line}"
        );
        let wide = not_eligible_line(&nodes, None);
        assert!(wide.contains("ws039 (nodeSelector location=bl01"), "{wide}");
        let two = not_eligible_line(&nodes[..2], Some(100));
        assert_eq!(
            two,
            "2 node(s) not eligible (its pods cannot be scheduled there): ws000, ws001\n"
        );
    }
}

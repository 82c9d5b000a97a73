//! `rollcache plan`: a dry run of what this node would hold and why; nothing is pulled or pinned.
//!
//! The history comes from a directory of exported objects or from the cluster.

use std::collections::HashMap;

use anyhow::Context;

use crate::commands::Output;
use crate::config::{Config, ConfigArgs};
use crate::history::once::{self, History};
use crate::inventory::Inventory;
use crate::model::NodeFacts;
use crate::plan::{Plan, PlanConfig, ThisNode};

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// This node's facts: the named Node object from the history when there is one; Err(why) when a
/// node is named but its Node object is missing or unreadable (the node is unknown); a node with
/// no name, labels or taints when none is named.
pub fn node_facts(
    cfg: &Config,
    nodes: &[NodeFacts],
    node_error: Option<&str>,
) -> Result<NodeFacts, String> {
    let Some(name) = cfg.node_name.clone().filter(|n| !n.is_empty()) else {
        return Ok(NodeFacts::default());
    };
    if let Some(n) = nodes.iter().find(|n| n.name == name) {
        return Ok(n.clone());
    }
    let reason = match node_error {
        Some(e) => format!("Node object {name} cannot be read: {e}"),
        None => format!("Node object {name} not found"),
    };
    tracing::warn!(node = %name, "{reason}: revisions with scheduling constraints are shown waiting for it");
    Err(reason)
}

pub fn compute(cfg: &Config, history: &History) -> Plan {
    let (inventory, problems) = Inventory::build(&history.facts);
    for p in problems {
        tracing::warn!(object = %p.object, kind = %p.kind, "skipped: {}", p.message);
    }
    let pcfg = PlanConfig {
        hold_everything: cfg.hold_everything,
        extra_images: cfg.extra_images.clone(),
    };
    let name = cfg.node_name.as_deref().unwrap_or_default();
    let found = node_facts(cfg, &history.nodes, history.node_error.as_deref());
    let node = match &found {
        Ok(n) => ThisNode::Known(n),
        Err(reason) => ThisNode::Unknown {
            name,
            reason: reason.clone(),
        },
    };
    let mut plan = crate::plan::plan_for(&inventory, &node, &pcfg, &HashMap::new());
    plan.problems
        .extend(history.problems.iter().map(|p| crate::plan::PlanProblem {
            revision: None,
            message: format!("cannot be decoded, {p}"),
        }));
    plan
}

pub async fn run(args: PlanArgs) -> anyhow::Result<()> {
    let cfg = args.config.resolve().context("invalid configuration")?;
    // With --from, plan from the directory alone (a dry run needs no cluster).
    let history = match &cfg.from_dir {
        Some(dir) => once::load_dir(dir)?,
        None => once::load_history(&cfg).await?,
    };
    let plan = compute(&cfg, &history);
    match args.output {
        Output::Table => print!("{}", crate::plan_view::render_table(&plan)),
        Output::Json => println!("{}", crate::plan_view::render_json(&plan)),
    }
    Ok(())
}

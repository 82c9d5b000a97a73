//! `rollcache plan`: what this node would hold and why — from a directory of exported objects or
//! from the cluster. A dry run: nothing is pulled or pinned.

use std::collections::HashMap;

use anyhow::Context;

use crate::config::{Config, ConfigArgs};
use crate::history::{DecodeProblem, files};
use crate::inventory::Inventory;
use crate::model::{NodeFacts, RevisionFact};
use crate::plan::Plan;
use crate::reconcile::planning::{NodeLookup, plan_for_node};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    #[default]
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// What a plan is computed from.
pub struct History {
    pub facts: Vec<RevisionFact>,
    pub nodes: Vec<NodeFacts>,
    /// Why this node's Node object could not be read (the node watch's error), if so.
    pub node_error: Option<String>,
    /// What could not be decoded: shown with the plan, which may lack what those objects need.
    pub problems: Vec<DecodeProblem>,
}

/// Load a directory source, logging every problem with the object it came from.
pub fn load_dir(dir: &std::path::Path) -> anyhow::Result<History> {
    anyhow::ensure!(
        dir.is_dir(),
        "--from {}: not a directory (give a folder of YAML/JSON objects as `kubectl get -o yaml` prints them)",
        dir.display()
    );
    let snap = files::load_dir(dir);
    for p in snap.all_problems() {
        tracing::warn!(object = %p.object, kind = %p.kind, "skipped: {}", p.message);
    }
    Ok(History {
        facts: snap.facts().cloned().collect(),
        problems: snap.all_problems().cloned().collect(),
        nodes: snap.nodes,
        node_error: None,
    })
}

pub fn compute(cfg: &Config, history: &History) -> Plan {
    let (inventory, problems) = Inventory::build(&history.facts);
    for p in problems {
        tracing::warn!(object = %p.object, kind = %p.kind, "skipped: {}", p.message);
    }
    let node = NodeLookup::among(cfg, &history.nodes, history.node_error.as_deref());
    let mut plan = plan_for_node(&inventory, &node, cfg, [], &HashMap::new());
    if let Some(reason) = &plan.node_state.unknown_reason {
        tracing::warn!(node = %node.name, "{reason}: revisions with scheduling constraints are shown waiting for it");
    }
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
        Some(dir) => load_dir(dir)?,
        None => crate::commands::cluster::load_history(&cfg).await?,
    };
    let plan = compute(&cfg, &history);
    match args.output {
        Output::Table => print!("{}", crate::plan_view::render_table(&plan)),
        Output::Json => println!("{}", crate::plan_view::render_json(&plan)),
    }
    Ok(())
}

//! `rollcache plan`: what this node would hold and why — from a directory of exported objects or
//! from the cluster. A dry run: nothing is pulled or pinned.

use std::collections::HashMap;

use anyhow::Context;

use crate::config::{Config, ConfigArgs};
use crate::history::files;
use crate::inventory::Inventory;
use crate::model::{NodeFacts, RevisionFact};
use crate::plan::{Plan, PlanConfig};

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
    /// Objects (or parts) that were skipped, each naming the object; shown with the plan.
    pub problems: Vec<crate::history::DecodeProblem>,
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
    })
}

/// This node's facts: the named Node object from the history when there is one, else a node with
/// only a name (no labels, no taints).
pub fn node_facts(cfg: &Config, nodes: &[NodeFacts]) -> NodeFacts {
    let name = cfg.node_name.clone().unwrap_or_default();
    match nodes.iter().find(|n| n.name == name) {
        Some(n) => n.clone(),
        None => {
            if !name.is_empty() {
                tracing::warn!(node = %name, "no Node object with this name in the history: planning for a node without labels or taints");
            }
            NodeFacts {
                name,
                ..Default::default()
            }
        }
    }
}

pub fn compute(cfg: &Config, history: &History) -> Plan {
    let (inventory, problems) = Inventory::build(&history.facts);
    for p in problems {
        tracing::warn!(object = %p.object, kind = %p.kind, "skipped: {}", p.message);
    }
    let node = node_facts(cfg, &history.nodes);
    let pcfg = PlanConfig {
        hold_everything: cfg.hold_everything,
        extra_images: cfg.extra_images.clone(),
    };
    crate::plan::plan(&inventory, &node, &pcfg, &HashMap::new())
}

pub async fn run(args: PlanArgs) -> anyhow::Result<()> {
    let cfg = args.config.resolve().context("invalid configuration")?;
    // With --from, plan from the directory alone (a dry run needs no cluster).
    let history = match &cfg.from_dir {
        Some(dir) => load_dir(dir)?,
        None => crate::commands::cluster::load_history(&cfg).await?,
    };
    let mut plan = compute(&cfg, &history);
    plan.problems
        .extend(history.problems.iter().map(|p| crate::plan::PlanProblem {
            revision: None,
            message: p.to_string(),
        }));
    match args.output {
        Output::Table => print!("{}", crate::plan_view::render_table(&plan)),
        Output::Json => println!("{}", crate::plan_view::render_json(&plan)),
    }
    Ok(())
}

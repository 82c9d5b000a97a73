//! `rollcache plan`: a dry run of what this node would hold and why; nothing is pulled or pinned.
//!
//! The history comes from a directory of exported objects or from the cluster.

use std::collections::HashMap;

use anyhow::Context;

use crate::commands::Output;
use crate::commands::{to_yaml, with_hint};
use crate::config::{Config, ConfigArgs};
use crate::history::once::{self, History};
use crate::history::sources::one_shot_client;
use crate::inventory::Inventory;
use crate::plan::Plan;
use crate::reconcile::planning::{NodeLookup, plan_for_node};

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// What a plan that cannot reach its cluster suggests.
const PLAN_HINT: &str =
    "check --kubeconfig/--context, or use --from DIR for a dry run without a cluster";

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
        Some(dir) => once::load_dir(dir)?,
        None => {
            let client = one_shot_client(&args.config.kube)
                .await
                .map_err(|e| with_hint(e, PLAN_HINT))?;
            once::load_history(&cfg, Some(client)).await?
        }
    };
    let plan = compute(&cfg, &history);
    match args.output {
        Output::Table | Output::Wide => print!(
            "{}",
            crate::plan_view::render_table_within(&plan, args.output.width())
        ),
        Output::Json => println!("{}", crate::plan_view::render_json(&plan)),
        Output::Yaml => print!("{}", to_yaml(&plan)?),
    }
    Ok(())
}

//! `rollcache cluster`: every Node with the summary its agent published (`RollcacheNode`), one
//! table; and the reading of Nodes and summaries `check-rollback` shares.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DynamicObject, ListParams};
use rollcache_core::rollback::{ClusterRow, age_text};
use rollcache_core::summary::NodeSummary;
use rollcache_core::text::{Column, table_within};
use serde::Serialize;

use crate::commands::{Exit, Output, to_yaml, with_hint};
use crate::config::KubeArgs;
use crate::history::nodes;
use crate::history::sources::one_shot_client;
use crate::model::NodeFacts;
use crate::reconcile::node_summary::{GROUP, KIND, resource};
use crate::reconcile::unix_now;

#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub kube: KubeArgs,
    /// A summary older than this is marked stale (its agent refreshes it every 5 min).
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = crate::commands::node::duration)]
    pub max_age: Duration,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// What a command that reads summaries suggests when it cannot reach the cluster.
pub const CLUSTER_HINT: &str = "check --kubeconfig/--context";

/// The CRD is not installed: one line saying so and how to install it.
pub fn no_crd() -> Exit {
    Exit::lookup(format!(
        "the {KIND} CRD (rollcachenodes.{GROUP}) is not installed, so no node publishes a summary: install it with `kubectl apply -f daemonset/base/crd-rollcachenodes.yaml` (the Helm chart installs it)"
    ))
}

/// Every Node, as the planner sees them, by name.
pub async fn list_nodes(client: &kube::Client) -> anyhow::Result<Vec<NodeFacts>> {
    let api: Api<Node> = Api::all(client.clone());
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| anyhow::anyhow!("listing Nodes: {e}"))?;
    let mut facts: Vec<NodeFacts> = list.items.iter().map(nodes::decode).collect();
    facts.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(facts)
}

/// Every published summary by node name. A summary that cannot be read is named, counted in
/// the log and left out (its node then shows no summary).
pub async fn list_summaries(
    client: &kube::Client,
) -> anyhow::Result<BTreeMap<String, NodeSummary>> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource());
    let list = match api.list(&ListParams::default()).await {
        Ok(l) => l,
        // The plain-text 404 of an unserved resource: `is_not_found()` cannot tell it.
        Err(kube::Error::Api(s)) if s.code == 404 => return Err(no_crd().into()),
        Err(e) => anyhow::bail!("listing {KIND}s: {e}"),
    };
    let mut out = BTreeMap::new();
    let mut unreadable = 0;
    for o in list.items {
        let name = o.metadata.name.clone().unwrap_or_default();
        let Some(status) = o.data.get("status") else {
            continue;
        };
        match serde_json::from_value::<NodeSummary>(status.clone()) {
            Ok(s) => {
                out.insert(name, s);
            }
            Err(e) => {
                unreadable += 1;
                tracing::warn!(object = %format!("{KIND} {name}"), "skipped: status unreadable: {e}");
            }
        }
    }
    if unreadable > 0 {
        tracing::warn!("{unreadable} {KIND}(s) skipped: their status could not be read");
    }
    Ok(out)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ClusterDoc {
    max_age_seconds: u64,
    nodes: Vec<ClusterRow>,
}

/// Exit code 2 when it cannot answer, as `check-rollback`.
pub async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    show(args).await.map_err(Exit::no_answer)
}

async fn show(args: ClusterArgs) -> anyhow::Result<()> {
    let client = one_shot_client(&args.kube)
        .await
        .map_err(|e| with_hint(e, CLUSTER_HINT))?;
    let (nodes, mut summaries) = (list_nodes(&client).await?, list_summaries(&client).await?);
    let (now, max_age) = (unix_now(), args.max_age.as_secs() as i64);
    let rows: Vec<ClusterRow> = nodes
        .iter()
        .map(|n| ClusterRow::of(&n.name, summaries.remove(&n.name), now, max_age))
        .collect();
    let doc = ClusterDoc {
        max_age_seconds: args.max_age.as_secs(),
        nodes: rows,
    };
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&doc)?),
        Output::Yaml => print!("{}", to_yaml(&doc)?),
        Output::Table | Output::Wide => print!("{}", table(&doc.nodes, args.output)),
    }
    Ok(())
}

fn table(rows: &[ClusterRow], output: Output) -> String {
    let wide = output == Output::Wide;
    let mut columns = vec![
        Column::left("NODE").shrinks(),
        Column::right("DESIRED"),
        Column::right("PINNED"),
        Column::right("SAFE"),
        Column::right("NEEDS-REGISTRY"),
        Column::right("FAILED"),
        Column::left("STATE"),
        Column::right("AGE"),
    ];
    if wide {
        columns.extend([Column::right("GENERATION"), Column::left("MESSAGE")]);
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let num = |f: fn(&NodeSummary) -> usize| {
                r.summary
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |s| f(s).to_string())
            };
            let mut row = vec![
                r.node.clone(),
                num(|s| s.images.desired),
                num(|s| s.images.pinned),
                num(|s| s.revisions.offline_safe),
                num(|s| s.revisions.needs_registry),
                num(|s| s.revisions.failed),
                r.state_cell(),
                r.age_seconds.map_or_else(|| "-".to_owned(), age_text),
            ];
            if wide {
                let s = r.summary.as_ref();
                row.push(s.map_or_else(|| "-".into(), |s| s.history_generation.to_string()));
                row.push(s.map_or_else(
                    || {
                        "no RollcacheNode: rollcache is not running on this node, or not publishing"
                            .into()
                    },
                    |s| s.message.clone(),
                ));
            }
            row
        })
        .collect();
    table_within("", &columns, &cells, output.width())
}

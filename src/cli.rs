//! The command line's shape: clap definitions and the dispatch to `rollcache::commands`.
//!
//! Every flag has a `ROLLCACHE_…` env twin. New subcommands are new `Command` variants.

use clap::{Parser, Subcommand, ValueEnum};
use rollcache::commands::{self, check_rollback, cluster, node, plan, status};

#[derive(Debug, Parser)]
#[command(
    name = "rollcache",
    version,
    about = "Keeps every image of every retained Kubernetes \
    revision cached and pinned on each node, so rollbacks work offline"
)]
pub struct Cli {
    /// Log format on stderr (filter with RUST_LOG, e.g. `info,rollcache=debug`).
    #[arg(
        long,
        global = true,
        env = "ROLLCACHE_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: watch history, pull and pin what this node needs, report readiness.
    Run(commands::run::RunArgs),
    /// Dry run: what this node would hold and why (from the cluster, or a directory with --from).
    Plan(plan::PlanArgs),
    /// The running daemon's rollback-readiness report, per workload and revision.
    Status(status::StatusArgs),
    /// Ask the running daemon to pull and pin now: everything, a namespace, a workload, or images.
    Prefetch(status::PrefetchArgs),
    /// Talk to this node's container runtime directly (list, pull, pin, unpin, check).
    Node(node::NodeArgs),
    /// Would a rollback start from the cache on every node its pods could run on? (exit 0 yes,
    /// 1 no, 2 no answer)
    CheckRollback(check_rollback::CheckRollbackArgs),
    /// Every node with the summary its agent published (RollcacheNode), one table.
    Cluster(cluster::ClusterArgs),
    /// Fleet mode (preview): publish the cluster's history as RollcacheInventory shards (one leader).
    Index(commands::index::IndexArgs),
}

impl Command {
    /// Whether the command's output is an answer for scripts (`check-rollback`, `cluster`).
    pub fn answers(&self) -> bool {
        matches!(self, Command::CheckRollback(_) | Command::Cluster(_))
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => commands::run::run(args).await,
        Command::Plan(args) => plan::run(args).await,
        Command::Status(args) => status::status(args).await,
        Command::Prefetch(args) => status::prefetch(args).await,
        Command::Node(args) => Ok(node::run(&args, &mut std::io::stdout().lock()).await?),
        Command::CheckRollback(args) => check_rollback::run(args).await,
        Command::Cluster(args) => cluster::run(args).await,
        Command::Index(args) => commands::index::run(args).await,
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use rollcache::node::DEFAULT_SOCKET;

    use super::*;

    #[test]
    fn flags_have_env_twins_and_defaults() {
        let cli = Cli::try_parse_from(["rollcache", "node", "pin", "a:1", "--call-timeout", "3s"])
            .unwrap();
        let Command::Node(args) = cli.command else {
            panic!("not node")
        };
        assert_eq!(args.call_timeout, Duration::from_secs(3));
        assert_eq!(args.pull_timeout, Duration::from_secs(600));
        assert_eq!(args.socket, PathBuf::from(DEFAULT_SOCKET));
        assert!(Cli::try_parse_from(["rollcache", "node", "pin"]).is_err());
        assert!(node::duration("-3s").is_err());
    }

    #[test]
    fn every_command_on_the_api_takes_kubeconfig_and_context_and_every_output_takes_yaml() {
        for command in ["run", "plan", "cluster"] {
            let cli = Cli::try_parse_from([
                "rollcache",
                command,
                "--kubeconfig",
                "/tmp/kc",
                "--context",
                "b",
            ])
            .unwrap();
            let kube = match cli.command {
                Command::Run(a) => a.config.kube,
                Command::Plan(a) => a.config.kube,
                Command::Cluster(a) => a.kube,
                _ => panic!("{command}"),
            };
            assert_eq!(kube.kubeconfig, Some(PathBuf::from("/tmp/kc")), "{command}");
            assert_eq!(kube.context.as_deref(), Some("b"), "{command}");
        }
        for args in [
            &["plan", "-o", "yaml"][..],
            &["status", "-o", "yaml"],
            &["prefetch", "-o", "yaml"],
            &["node", "list", "-o", "yaml"],
            &["node", "check", "--output", "wide"],
            &["cluster", "-o", "yaml"],
            &["check-rollback", "sts/x", "-n", "ns", "-o", "yaml"],
            &[
                "check-rollback",
                "--helm-release",
                "r",
                "--kubeconfig",
                "/tmp/kc",
            ],
            &[
                "check-rollback",
                "ds/x",
                "--context",
                "b",
                "--max-age",
                "1h",
            ],
        ] {
            let parsed =
                Cli::try_parse_from(std::iter::once("rollcache").chain(args.iter().copied()));
            assert!(parsed.is_ok(), "{args:?}: {parsed:?}");
        }
    }

    #[test]
    fn durations_read_as_before() {
        for (text, secs) in [("10s", 10), ("2m", 120), ("1h30m", 5400), ("1h 30m", 5400)] {
            assert_eq!(
                node::duration(text),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
        }
    }
}

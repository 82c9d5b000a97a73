//! Command line: clap definitions (every flag has a `ROLLCACHE_…` env twin) and their execution.
//! New subcommands (`run`, `plan`, `status`, `prefetch`) are new `Command` variants.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use rollcache::node::{
    DEFAULT_SOCKET, Deadlines, ImageInfo, ImageRuntime, Node, NodeError, PinOwner, PullOutcome,
    RegistryAuth,
};

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
    Run(rollcache::commands::run::RunArgs),
    /// Dry run: what this node would hold and why (from the cluster, or a directory with --from).
    Plan(rollcache::commands::plan::PlanArgs),
    /// The running daemon's rollback-readiness report, per workload and revision.
    Status(rollcache::commands::status::StatusArgs),
    /// Ask the running daemon to pull and pin now: everything, a namespace, a workload, or images.
    Prefetch(rollcache::commands::status::PrefetchArgs),
    /// Talk to this node's container runtime directly (list, pull, pin, unpin, check).
    Node(NodeArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// containerd's socket (CRI and containerd API).
    #[arg(long, env = "ROLLCACHE_CONTAINERD_SOCKET", default_value = DEFAULT_SOCKET, global = true)]
    pub socket: PathBuf,
    /// Output format.
    #[arg(
        long,
        env = "ROLLCACHE_OUTPUT",
        value_enum,
        default_value = "table",
        global = true
    )]
    pub output: Output,
    /// Deadline of each runtime call except pulls (e.g. `10s`).
    #[arg(long, env = "ROLLCACHE_CALL_TIMEOUT", default_value = "10s", value_parser = parse_duration, global = true)]
    pub call_timeout: Duration,
    /// Deadline of each pull (e.g. `10m`).
    #[arg(long, env = "ROLLCACHE_PULL_TIMEOUT", default_value = "10m", value_parser = parse_duration, global = true)]
    pub pull_timeout: Duration,
    #[command(subcommand)]
    pub action: NodeAction,
}

#[derive(Debug, Subcommand)]
pub enum NodeAction {
    /// List images: reference, digest, size, pinned, and whether rollcache manages the pin.
    List,
    /// Pull images (skipped when present already).
    Pull {
        #[arg(required = true)]
        images: Vec<String>,
        /// Registry user name for these pulls.
        #[arg(long, env = "ROLLCACHE_REGISTRY_USERNAME")]
        username: Option<String>,
        /// Registry password or token (prefer the env var over the flag).
        #[arg(long, env = "ROLLCACHE_REGISTRY_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// Pin images with rollcache's marker (never over another party's pin).
    Pin {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Remove rollcache's pin (never another party's); images are never deleted.
    Unpin {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Check whether the runtime honours pins.
    Check,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
    #[error("encoding JSON output: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Command(#[from] anyhow::Error),
    #[error("{failed} of {total} images failed (see above)")]
    SomeFailed { failed: usize, total: usize },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d: jiff::SignedDuration = s
        .parse()
        .map_err(|e| format!("invalid duration {s:?} (use e.g. 10s, 2m): {e}"))?;
    Duration::try_from(d).map_err(|_| format!("duration {s:?} must not be negative"))
}

pub async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Run(args) => Ok(rollcache::commands::run::run(args).await?),
        Command::Plan(args) => Ok(rollcache::commands::plan::run(args).await?),
        Command::Status(args) => Ok(rollcache::commands::status::status(args).await?),
        Command::Prefetch(args) => Ok(rollcache::commands::status::prefetch(args).await?),
        Command::Node(args) => node(&args, &mut std::io::stdout().lock()).await,
    }
}

/// Runs one `rollcache node …` command, writing its output to `out`.
pub async fn node(args: &NodeArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let node = Node::connect(
        &args.socket,
        Deadlines {
            call: args.call_timeout,
            pull: args.pull_timeout,
        },
    );
    match &args.action {
        NodeAction::List => {
            let mut images = node.list().await?;
            images.sort_by(|a, b| a.display_ref().cmp(b.display_ref()));
            print_list(&images, args.output, out)
        }
        NodeAction::Check => {
            let support = node.pin_support().await?;
            match args.output {
                Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(&support)?)?,
                Output::Table => writeln!(out, "{}", support.detail)?,
            }
            Ok(())
        }
        NodeAction::Pull {
            images,
            username,
            password,
        } => {
            let auth = username
                .as_ref()
                .map(|u| RegistryAuth::basic(u.clone(), password.clone().unwrap_or_default()));
            let mut results = Vec::new();
            for image in images {
                let r = node.pull(image, auth.as_ref()).await.map(|o| match o {
                    PullOutcome::AlreadyPresent(i) => ("already present", Some(i)),
                    PullOutcome::Pulled(i) => ("pulled", Some(i)),
                });
                results.push((image.clone(), r));
            }
            print_results(results, args.output, out)
        }
        NodeAction::Pin { images } => {
            let mut results = Vec::new();
            for image in images {
                let r = node.pin(image).await;
                if matches!(r, Ok(rollcache::node::PinOutcome::Pinned)) {
                    settle(&node, image, true).await;
                }
                results.push((image.clone(), r.map(|o| (pin_word(o), None))));
            }
            print_results(results, args.output, out)
        }
        NodeAction::Unpin { images } => {
            let mut results = Vec::new();
            for image in images {
                let r = node.unpin(image).await;
                if matches!(r, Ok(rollcache::node::UnpinOutcome::Unpinned)) {
                    settle(&node, image, false).await;
                }
                results.push((image.clone(), r.map(|o| (unpin_word(o), None))));
            }
            print_results(results, args.output, out)
        }
    }
}

/// Waits until CRI (what the kubelet asks) shows a pin change containerd has made: CRI applies
/// label changes a moment later, and the command should not return before it does.
async fn settle(node: &Node, image: &str, pinned: bool) {
    if let Err(e) = node.settle(image, pinned).await {
        tracing::warn!(image, error = %e, "could not read the image back through CRI");
    }
}

fn pin_word(o: rollcache::node::PinOutcome) -> &'static str {
    use rollcache::node::PinOutcome::*;
    match o {
        Pinned => "pinned",
        AlreadyPinned => "already pinned",
        PinnedByOther => "pinned by another party (left alone)",
    }
}

fn unpin_word(o: rollcache::node::UnpinOutcome) -> &'static str {
    use rollcache::node::UnpinOutcome::*;
    match o {
        Unpinned => "unpinned",
        NotPinned => "not pinned",
        PinnedByOther => "pinned by another party (left alone)",
    }
}

type ImageResult = Result<(&'static str, Option<ImageInfo>), NodeError>;

fn print_results(
    results: Vec<(String, ImageResult)>,
    output: Output,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let total = results.len();
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    match output {
        Output::Json => {
            let rows: Vec<serde_json::Value> = results
                .iter()
                .map(|(image, r)| match r {
                    Ok((word, info)) => serde_json::json!({
                        "image": image, "result": word,
                        "id": info.as_ref().map(|i| &i.id),
                        "digest": info.as_ref().and_then(|i| i.digest()),
                    }),
                    Err(e) => serde_json::json!({
                        "image": image, "result": "error", "error": e.to_string(),
                        "error_kind": e.metric_label(),
                    }),
                })
                .collect();
            writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        }
        Output::Table => {
            for (image, r) in &results {
                match r {
                    Ok((word, _)) => writeln!(out, "{image}\t{word}")?,
                    Err(e) => writeln!(out, "{image}\terror: {e}")?,
                }
            }
        }
    }
    if failed > 0 {
        return Err(CliError::SomeFailed { failed, total });
    }
    Ok(())
}

fn print_list(images: &[ImageInfo], output: Output, out: &mut dyn Write) -> Result<(), CliError> {
    match output {
        Output::Json => {
            let rows: Vec<serde_json::Value> = images
                .iter()
                .map(|i| {
                    serde_json::json!({
                        "reference": i.display_ref(),
                        "id": i.id,
                        "digest": i.digest(),
                        "repo_tags": i.repo_tags,
                        "repo_digests": i.repo_digests,
                        "size": i.size,
                        "pinned": i.pinned,
                        "pin_owner": i.pin_owner,
                        "managed": i.pin_owner == PinOwner::Rollcache,
                    })
                })
                .collect();
            writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        }
        Output::Table => {
            let refw = images
                .iter()
                .map(|i| i.display_ref().len())
                .max()
                .unwrap_or(0)
                .max("REFERENCE".len());
            writeln!(
                out,
                "{:refw$}  {:19}  {:>9}  {:6}  MANAGED",
                "REFERENCE", "DIGEST", "SIZE", "PINNED"
            )?;
            for i in images {
                let digest = i.digest().unwrap_or("-");
                let short = digest.get(..19).unwrap_or(digest);
                let managed = match i.pin_owner {
                    PinOwner::Rollcache => "rollcache",
                    PinOwner::Other => "other",
                    PinOwner::None => "-",
                };
                writeln!(
                    out,
                    "{:refw$}  {:19}  {:>9}  {:6}  {}",
                    i.display_ref(),
                    short,
                    human_size(i.size),
                    if i.pinned { "yes" } else { "no" },
                    managed
                )?;
            }
        }
    }
    Ok(())
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
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
        assert!(parse_duration("-3s").is_err());
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(50 * 1024 * 1024), "50.0 MiB");
    }
}

//! `rollcache node`: list, pull, pin, unpin and check on this node's image store, by hand.
//!
//! It goes through the same runtime adapter as the daemon.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use rollcache_core::text::{Column, human_size, table_within};

use crate::commands::{Output, YamlError, to_yaml};
use crate::config::parse_duration;
use crate::node::{
    DEFAULT_SOCKET, Deadlines, ImageInfo, ImageRuntime, Node, NodeError, PinOwner, PullOutcome,
    RegistryAuth,
};

/// `sha256:` and the first 12 hex digits: enough to tell images apart in a table.
const DIGEST_WIDTH: usize = 19;

#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// containerd's socket (CRI and containerd API).
    #[arg(long, env = "ROLLCACHE_CONTAINERD_SOCKET", default_value = DEFAULT_SOCKET, global = true)]
    pub socket: PathBuf,
    /// Output format.
    #[arg(
        long,
        short,
        env = "ROLLCACHE_OUTPUT",
        value_enum,
        default_value = "table",
        global = true
    )]
    pub output: Output,
    /// Deadline of each runtime call except pulls (e.g. `10s`).
    #[arg(long, env = "ROLLCACHE_CALL_TIMEOUT", default_value = "10s", value_parser = duration, global = true)]
    pub call_timeout: Duration,
    /// Deadline of each pull (e.g. `10m`).
    #[arg(long, env = "ROLLCACHE_PULL_TIMEOUT", default_value = "10m", value_parser = duration, global = true)]
    pub pull_timeout: Duration,
    #[command(subcommand)]
    pub action: NodeAction,
}

#[derive(Debug, clap::Subcommand)]
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

/// Why a `rollcache node` command failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeCommandError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
    #[error("encoding JSON output: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Yaml(#[from] YamlError),
    #[error("{failed} of {total} images failed (see above)")]
    SomeFailed { failed: usize, total: usize },
}

/// Runs one `rollcache node …` command, writing its output to `out`.
pub async fn run(args: &NodeArgs, out: &mut dyn Write) -> Result<(), NodeCommandError> {
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
                Output::Yaml => write!(out, "{}", to_yaml(&support)?)?,
                Output::Table | Output::Wide => writeln!(out, "{}", support.detail)?,
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
                if matches!(r, Ok(crate::node::PinOutcome::Pinned)) {
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
                if matches!(r, Ok(crate::node::UnpinOutcome::Unpinned)) {
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

fn pin_word(o: crate::node::PinOutcome) -> &'static str {
    use crate::node::PinOutcome::*;
    match o {
        Pinned => "pinned",
        AlreadyPinned => "already pinned",
        PinnedByOther => "pinned by another party (left alone)",
    }
}

fn unpin_word(o: crate::node::UnpinOutcome) -> &'static str {
    use crate::node::UnpinOutcome::*;
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
) -> Result<(), NodeCommandError> {
    let total = results.len();
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    match output {
        Output::Json | Output::Yaml => {
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
            write_document(&rows, output, out)?;
        }
        Output::Table | Output::Wide => {
            for (image, r) in &results {
                match r {
                    Ok((word, _)) => writeln!(out, "{image}\t{word}")?,
                    Err(e) => writeln!(out, "{image}\terror: {e}")?,
                }
            }
        }
    }
    if failed > 0 {
        return Err(NodeCommandError::SomeFailed { failed, total });
    }
    Ok(())
}

fn print_list(
    images: &[ImageInfo],
    output: Output,
    out: &mut dyn Write,
) -> Result<(), NodeCommandError> {
    match output {
        Output::Json | Output::Yaml => {
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
            write_document(&rows, output, out)?;
        }
        Output::Table | Output::Wide => {
            let rows: Vec<[String; 5]> = images
                .iter()
                .map(|i| {
                    let digest = i.digest().unwrap_or("-");
                    let managed = match i.pin_owner {
                        PinOwner::Rollcache => "rollcache",
                        PinOwner::Other => "other",
                        PinOwner::None => "-",
                    };
                    [
                        i.display_ref().to_owned(),
                        digest.get(..DIGEST_WIDTH).unwrap_or(digest).to_owned(),
                        human_size(i.size),
                        if i.pinned { "yes" } else { "no" }.to_owned(),
                        managed.to_owned(),
                    ]
                })
                .collect();
            let columns = [
                Column::left("REFERENCE").shrinks_in_the_middle(),
                Column::left("DIGEST").at_least(DIGEST_WIDTH),
                Column::right("SIZE").at_least(9),
                Column::left("PINNED"),
                Column::left("MANAGED"),
            ];
            write!(out, "{}", table_within("", &columns, &rows, output.width()))?;
        }
    }
    Ok(())
}

/// A list of rows as `-o json` or `-o yaml` prints it.
fn write_document(
    rows: &[serde_json::Value],
    output: Output,
    out: &mut dyn Write,
) -> Result<(), NodeCommandError> {
    if output == Output::Yaml {
        write!(out, "{}", to_yaml(&rows)?)?;
    } else {
        writeln!(out, "{}", serde_json::to_string_pretty(rows)?)?;
    }
    Ok(())
}

/// A command-line duration in the config file's syntax (`10s`, `2m`, `1h30m`, `1h 30m`).
pub fn duration(s: &str) -> Result<Duration, String> {
    parse_duration("duration", s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(tag: &str, digest: Option<&str>, size: u64, owner: PinOwner) -> ImageInfo {
        ImageInfo {
            id: "sha256:0".into(),
            repo_tags: vec![tag.into()],
            repo_digests: digest.map(|d| format!("r/x@{d}")).into_iter().collect(),
            size,
            pinned: owner != PinOwner::None,
            pin_owner: owner,
        }
    }

    /// The layout `node list` has always printed: a fixed digest column of 19 characters and a
    /// right-aligned size column of at least 9.
    #[test]
    fn the_list_table_keeps_its_layout() {
        let images = [
            image(
                "reg.example/app:1",
                Some("sha256:0123456789abcdef0123"),
                50 * 1024 * 1024,
                PinOwner::Rollcache,
            ),
            image("b:2", None, 512, PinOwner::None),
        ];
        let mut out = Vec::new();
        print_list(&images, Output::Table, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\
REFERENCE          DIGEST                    SIZE  PINNED  MANAGED
reg.example/app:1  sha256:0123456789ab   50.0 MiB  yes     rollcache
b:2                -                        512 B  no      -
"
        );
    }
}

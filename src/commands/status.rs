//! `rollcache status` and `rollcache prefetch`: the running daemon's report and prefetch trigger.
//!
//! Both talk to the daemon's admin listener.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;

use crate::client;
use crate::commands::{Output, to_yaml};
use crate::http::{PrefetchAccepted, PrefetchRequest};
use crate::status::{Status, render_table_within};

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The daemon's admin address.
    #[arg(long, env = "ROLLCACHE_ADMIN_ADDR", default_value = "127.0.0.1:9848")]
    pub addr: SocketAddr,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, clap::Args)]
pub struct PrefetchArgs {
    /// The daemon's admin address.
    #[arg(long, env = "ROLLCACHE_ADMIN_ADDR", default_value = "127.0.0.1:9848")]
    pub addr: SocketAddr,
    /// Only images of workloads in this namespace.
    #[arg(long, short)]
    pub namespace: Option<String>,
    /// Only images of this workload (`KIND/NAME` or `NAME`), with --namespace.
    #[arg(long, short, requires = "namespace")]
    pub workload: Option<String>,
    /// Explicit images to pull and pin now (held until restart; use `extra_images` to keep them).
    #[arg(conflicts_with_all = ["namespace", "workload"])]
    pub images: Vec<String>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

const TIMEOUT: Duration = Duration::from_secs(40);

pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let body = client::request(
        args.addr,
        hyper::Method::GET,
        "/status",
        None,
        "status",
        TIMEOUT,
    )
    .await?;
    match args.output {
        Output::Json => println!("{body}"),
        // The daemon's document as it is, fields this CLI does not know included.
        Output::Yaml => {
            let doc: serde_json::Value =
                serde_json::from_str(&body).context("the daemon's /status answer is not JSON")?;
            print!("{}", to_yaml(&doc)?);
        }
        Output::Table | Output::Wide => {
            let status: Status = serde_json::from_str(&body)
                .context("the daemon's /status answer is not a status report (still starting?)")?;
            print!("{}", render_table_within(&status, args.output.width()));
        }
    }
    Ok(())
}

pub async fn prefetch(args: PrefetchArgs) -> anyhow::Result<()> {
    let req = PrefetchRequest {
        namespace: args.namespace,
        workload: args.workload,
        images: args.images,
    };
    req.validate().map_err(anyhow::Error::msg)?;
    let body = serde_json::to_string(&req)?;
    let answer = client::request(
        args.addr,
        hyper::Method::POST,
        "/prefetch",
        Some(body),
        "prefetch",
        TIMEOUT,
    )
    .await?;
    match args.output {
        Output::Json => println!("{answer}"),
        Output::Yaml => {
            let doc: serde_json::Value = serde_json::from_str(&answer)
                .context("the daemon's /prefetch answer is not JSON")?;
            print!("{}", to_yaml(&doc)?);
        }
        Output::Table | Output::Wide => {
            let a: PrefetchAccepted = serde_json::from_str(&answer)?;
            println!("prefetch queued for {} image(s):", a.images.len());
            for i in a.images {
                println!("  {i}");
            }
        }
    }
    Ok(())
}

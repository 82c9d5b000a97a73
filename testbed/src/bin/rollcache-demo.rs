//! `rollcache-demo`: rollcache's whole job on a private containerd + registry and a realistic
//! history, no cluster needed; then the registry goes away and the node shows which rollbacks
//! still work. `make demo` runs it.

use std::path::PathBuf;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use rollcache_testbed::demo::{DemoOptions, run};

#[derive(Debug, Parser)]
#[command(name = "rollcache-demo", version, about)]
struct DemoArgs {
    /// containerd version of the demo (`1.7` or `2`), from `scripts/install-deps.sh`'s cache.
    #[arg(long, env = "ROLLCACHE_TEST_CONTAINERD", default_value = "1.7")]
    containerd: String,
    /// Size of the images' shared base layer in MiB.
    #[arg(long, default_value_t = 16)]
    base_mib: u64,
    /// Keep the generated history in this directory (try `rollcache plan --from DIR` on it).
    #[arg(long, value_name = "DIR")]
    keep_history: Option<PathBuf>,
}

#[tokio::main]
async fn main() {
    let args = DemoArgs::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = async {
        let opts = DemoOptions {
            containerd: args.containerd.parse()?,
            base_mib: args.base_mib,
            keep_history: args.keep_history,
            ..Default::default()
        };
        run(opts).await.map(|_| ())
    }
    .await;
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

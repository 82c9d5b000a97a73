//! rollcache's binary: parses the command line, sets up logging, runs the command.
#![forbid(unsafe_code)]

mod cli;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() {
    // Before any thread starts allocating.
    rollcache::memory::use_one_arena();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    runtime.block_on(async_main());
}

async fn async_main() {
    let cli = cli::Cli::parse();
    // Noisy transport crates stay at warn unless RUST_LOG says otherwise. kube's watcher warns
    // on every retry of a 403; rollcache's own watch log says it once per change of state.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,hyper=warn,h2=warn,tower=warn,rustls=warn,kube_runtime::watcher=error")
    });
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        cli::LogFormat::Text => fmt.init(),
        cli::LogFormat::Json => fmt.json().init(),
    }
    if let Err(e) = cli::run(cli).await {
        // The whole cause chain on one line, without a backtrace: this is for people.
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

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
    // on every retry of a 403, its client logs an error for every failed request (each retry of
    // an unreachable API) and a warning for every watch the server closes, and the TLS verifier
    // one for every certificate it rejects; rollcache's own watch log and a one-shot command's
    // single error line say it once.
    // A command whose output is its answer (and exit code) keeps the history's progress lines
    // (one per source listed) out of it; their warnings still show.
    let history = if cli.command.answers() {
        ",rollcache::history=warn"
    } else {
        ""
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "info,hyper=warn,h2=warn,tower=warn,rustls=warn,kube_runtime::watcher=error,kube_client::client=error,kube_client::client::tls=warn,kube_client::client::builder=off,rustls_platform_verifier=off{history}",
        ))
    });
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        cli::LogFormat::Text => fmt.init(),
        cli::LogFormat::Json => fmt.json().init(),
    }
    if let Err(e) = cli::run(cli).await {
        let code = match e.downcast_ref::<rollcache::commands::Exit>() {
            Some(exit) if exit.message.is_empty() => std::process::exit(exit.code),
            Some(exit) => exit.code,
            None => 1,
        };
        // The whole cause chain on one line, without a backtrace: this is for people.
        eprintln!("error: {e:#}");
        std::process::exit(code);
    }
}

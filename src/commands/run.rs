//! `rollcache run`: the daemon. Wires config (with hot reload), history sources, the container
//! runtime, the reconcile loop and the HTTP listeners under one shutdown token.
//!
//! SIGTERM or SIGINT: stop starting pulls, cancel those in flight, close the listeners, exit 0. A
//! second signal exits at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::commands::with_hint;
use crate::config::ConfigArgs;
use crate::config::reload;
use crate::history::progress::expects_node;
use crate::history::secrets::SecretReader;
use crate::history::sources;
use crate::history::store::HistoryStore;
use crate::http::{self, Health, HttpState, StatusDoc};
use crate::metrics::Metrics;
use crate::node::{Deadlines, ImageRuntime, Node};
use crate::reconcile::credentials::{Credentials, KubeCredentials};
use crate::reconcile::daemon::Daemon;
use crate::reconcile::{node_events, node_summary};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// How long cached pull secrets are reused before they are read again.
const SECRET_TTL: Duration = Duration::from_secs(60);
/// Freed memory goes back to the system this long after the last reconcile pass of a burst.
const MEMORY_TRIM_QUIET: Duration = Duration::from_secs(3);

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    spawn_signal_handler(cancel.clone(), "no new pulls, cancelling those in flight");
    run_until(args.config, cancel).await
}

/// What an embedder (tests, the demo) may hand the daemon instead of it finding them itself.
#[derive(Default)]
pub struct RunOptions {
    /// The Kubernetes client to use instead of `KUBECONFIG` / the in-cluster service account.
    pub kube_client: Option<kube::Client>,
    /// Told the addresses the listeners are bound to (with port 0 in the config, the only way
    /// to learn them).
    pub bound: Option<oneshot::Sender<BoundAddrs>>,
}

/// Where the daemon's listeners are bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoundAddrs {
    pub metrics: SocketAddr,
    pub admin: SocketAddr,
}

/// The daemon until `cancel` fires (tests and the demo cancel it themselves).
pub async fn run_until(args: ConfigArgs, cancel: CancellationToken) -> anyhow::Result<()> {
    run_with(args, RunOptions::default(), cancel).await
}

/// `run_until` with an injected Kubernetes client and/or a report of the bound addresses.
pub async fn run_with(
    args: ConfigArgs,
    opts: RunOptions,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let cfg = Arc::new(args.resolve().context("invalid configuration")?);
    // Before anything waits (containerd may be missing too): a cluster that is not configured at
    // all is a mistake to say at once, in one line. An unreachable one is retried by the watchers.
    let (client, api_url) = match (opts.kube_client.clone(), cfg.kubernetes) {
        (Some(c), true) => (Some(c), None),
        (None, true) => {
            let hint = |e| with_hint(e, &run_hint(&cfg));
            let config = sources::kube_config(&args.kube).await.map_err(hint)?;
            let url = config.cluster_url.to_string();
            (Some(sources::client_from(config).map_err(hint)?), Some(url))
        }
        (_, false) => (None, None),
    };
    for w in cfg.warnings() {
        tracing::warn!("{w}");
    }
    tracing::info!(
        node = cfg.node_name.as_deref().unwrap_or("-"),
        socket = %cfg.containerd_socket.display(),
        kubernetes = cfg.kubernetes,
        from_dir = ?cfg.from_dir,
        "rollcache starting"
    );
    if cfg.kubernetes && cfg.node_name.is_none() {
        tracing::warn!(
            "no node name (NODE_NAME / --node): scheduling constraints are checked against a node without labels or taints"
        );
    }
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());

    // Listeners first: a port that cannot be bound is fatal before anything else starts, and
    // /healthz answers (with /readyz saying why not ready) while the runtime is still awaited.
    let metrics_listener = http::bind(cfg.metrics_addr).await?;
    let admin_listener = http::bind(cfg.admin_addr).await?;
    let bound = BoundAddrs {
        metrics: metrics_listener.local_addr()?,
        admin: admin_listener.local_addr()?,
    };
    let (status_tx, status_rx) = watch::channel(StatusDoc::from_json(br#"{"starting":true}"#));
    let (prefetch_tx, prefetch_rx) = mpsc::channel(16);
    let state = HttpState {
        metrics: metrics.clone(),
        health: health.clone(),
        status: status_rx,
        prefetch: prefetch_tx,
    };
    let mut servers = JoinSet::new();
    servers.spawn(http::serve_on(
        metrics_listener,
        http::metrics_router(state.clone()),
        cancel.clone(),
    ));
    servers.spawn(http::serve_on(
        admin_listener,
        http::admin_router(state),
        cancel.clone(),
    ));
    if let Some(tx) = opts.bound {
        let _ = tx.send(bound);
    }

    let reload_metrics = metrics.clone();
    let (config_rx, reload_task) = reload::spawn(args, cfg.clone(), cancel.clone(), move |o| {
        reload_metrics.config_reloaded(o.into());
    })?;

    let node = Node::connect(
        &cfg.containerd_socket,
        Deadlines {
            pull: cfg.pull_timeout,
            ..Deadlines::default()
        },
    );
    let can_pin = detect_pinning(&node, &cfg.containerd_socket, &health, &cancel).await;
    metrics.set_can_pin(can_pin);
    let node = Arc::new(node);
    let runtime: Arc<dyn ImageRuntime> = node.clone();

    let store = HistoryStore::new();
    let mut tasks = JoinSet::new();
    tasks.spawn(follow_pull_timeout(node, config_rx.clone(), cancel.clone()));
    sources::start_sources(&cfg, client.clone(), &store, &cancel, &mut tasks).await?;
    if let (Some(client), Some(url)) = (&client, api_url) {
        tasks.spawn(say_if_unreachable(client.clone(), url));
    }
    if let (Some(client), Some(node)) = (&client, &cfg.node_name) {
        tasks.spawn(node_summary::publish(
            client.clone(),
            node.clone(),
            status_tx.subscribe(),
            cfg.resync_interval,
            cancel.clone(),
        ));
    }
    let node_events = match (&client, &cfg.node_name) {
        (Some(client), Some(node)) if cfg.node_events => {
            let (tx, rx) = node_events::channel(metrics.clone());
            tasks.spawn(node_events::emit(
                client.clone(),
                node.clone(),
                rx,
                metrics.clone(),
                cancel.clone(),
            ));
            Some(tx)
        }
        _ => None,
    };
    let credentials: Option<Arc<dyn Credentials>> = match client {
        Some(client) if cfg.use_pull_secrets => Some(Arc::new(KubeCredentials {
            reader: SecretReader::new(client, SECRET_TTL),
        })),
        _ => None,
    };

    tasks.spawn(crate::memory::trim_after_bursts(
        status_tx.subscribe(),
        MEMORY_TRIM_QUIET,
        cancel.clone(),
    ));
    let mut daemon = Daemon::new(runtime, store, config_rx)
        .with_metrics(metrics)
        .with_health(health)
        .with_status(status_tx)
        .with_prefetch(prefetch_rx)
        .with_credentials(credentials)
        .with_can_pin(can_pin)
        .expecting_node(expects_node(&cfg))
        .with_runtime_events(crate::node::events::watch_image_events(
            cfg.containerd_socket.clone(),
            cancel.clone(),
        ));
    if let Some(events) = node_events {
        daemon = daemon.with_node_events(events);
    }
    let loop_cancel = cancel.clone();
    let mut daemon_task = tokio::spawn(daemon.run(loop_cancel));

    // A listener that fails is fatal: say so and stop everything.
    let result = tokio::select! {
        Some(r) = servers.join_next() => {
            cancel.cancel();
            match r {
                Ok(Err(e)) => Err(e),
                Ok(Ok(())) => Ok(()),
                Err(e) => Err(anyhow::anyhow!("listener task failed: {e}")),
            }
        }
        r = &mut daemon_task => {
            cancel.cancel();
            r.map_err(|e| anyhow::anyhow!("reconcile loop failed: {e}"))
        }
    };
    cancel.cancel();
    if !daemon_task.is_finished() {
        let _ = daemon_task.await;
    }
    while servers.join_next().await.is_some() {}
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    let _ = reload_task.await;
    tracing::info!("rollcache stopped");
    result
}

/// Once at start, the API server and the root cause when it cannot be reached: the watches'
/// own lines name the source, not the server, and are not repeated while they retry.
async fn say_if_unreachable(client: kube::Client, url: String) {
    if let Err(e) = sources::check_answers(&client, &url).await {
        tracing::warn!(
            "{e}; the watches retry with backoff, their sources in error (nothing is unpinned) until it answers"
        );
    }
}

/// What a daemon without a cluster to read should be given.
fn run_hint(cfg: &crate::config::Config) -> String {
    match &cfg.from_dir {
        Some(dir) => format!(
            "add --no-kubernetes to run from {} alone, or --kubeconfig/--context to read the cluster too",
            dir.display()
        ),
        None => "give --kubeconfig/--context, run in the cluster, or run from a directory with --from DIR --no-kubernetes".to_owned(),
    }
}

/// Applies `pull_timeout` from reloaded configs to the pulls that start afterwards.
pub async fn follow_pull_timeout(
    node: Arc<Node>,
    mut config: watch::Receiver<Arc<crate::config::Config>>,
    cancel: CancellationToken,
) {
    loop {
        let timeout = config.borrow_and_update().pull_timeout;
        if node.pull_deadline() != timeout {
            tracing::info!(pull_timeout = ?timeout, "pull timeout applied to the pulls that start from now on");
            node.set_pull_deadline(timeout);
        }
        tokio::select! {
            r = config.changed() => if r.is_err() { return },
            _ = cancel.cancelled() => return,
        }
    }
}

/// Ask the runtime whether it honours pins, retrying with backoff while it is unreachable: one
/// log line per different error, not one per attempt.
async fn detect_pinning(
    node: &Node,
    socket: &std::path::Path,
    health: &Health,
    cancel: &CancellationToken,
) -> bool {
    let mut delay = Duration::from_millis(500);
    let mut last_error: Option<String> = None;
    loop {
        match node.pin_support().await {
            Ok(s) => {
                health.runtime_answered();
                if s.honoured {
                    tracing::info!(runtime = %s.runtime_version, verified = s.verified, "runtime honours image pins");
                } else {
                    tracing::error!(runtime = %s.runtime_version, detail = %s.detail, "runtime does NOT honour image pins (needs containerd >= 1.7.10 or 2.x): images are cached but kubelet GC may delete them");
                }
                return s.honoured;
            }
            Err(e) => {
                health.runtime_failed(std::time::Instant::now());
                let error = e.to_string();
                if last_error.as_deref() == Some(error.as_str()) {
                    tracing::debug!(error, retry_in = ?delay, "container runtime still not reachable");
                } else {
                    tracing::warn!(socket = %socket.display(), error, "container runtime not reachable (is containerd running on this socket? --socket PATH); retrying with backoff, logged again when the error changes");
                    last_error = Some(error);
                }
                tokio::select! {
                    _ = cancel.cancelled() => return false,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// SIGTERM or SIGINT cancels `cancel`, saying `stopping` (what the command stops); a second exits.
pub(crate) fn spawn_signal_handler(cancel: CancellationToken, stopping: &'static str) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot install the SIGTERM handler");
                    return;
                }
            };
        for n in 0.. {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            if n == 0 {
                tracing::info!("shutting down: {stopping} (send again to exit at once)");
                cancel.cancel();
            } else {
                tracing::warn!("second signal: exiting at once");
                std::process::exit(130);
            }
        }
    });
}

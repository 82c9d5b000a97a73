//! `rollcache index`: the optional cluster-level indexer. Watches the history once (the agent's
//! sources and decoders, no Node, no runtime) and, while it leads, publishes the facts as
//! `RollcacheInventory` shards in its own namespace; serves /metrics, /healthz and /readyz.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use prometheus_client::registry::Registry;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::commands::node::duration;
use crate::config::{KubeArgs, is_namespace_name};
use crate::fleet::lease::Elector;
use crate::fleet::publish::{self, IndexMetrics, Publisher, Tuning};
use crate::history::sources;
use crate::history::store::HistoryStore;
use crate::history::watch::{WatchConfig, spawn_watchers};
use crate::http;

#[derive(Debug, Clone, clap::Args)]
pub struct IndexArgs {
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Namespace the shards and the Lease live in [default: POD_NAMESPACE, else rollcache]
    #[arg(long, env = "ROLLCACHE_NAMESPACE", value_name = "NAME")]
    pub namespace: Option<String>,
    /// Namespaces whose history is indexed, comma-separated [default: all]
    #[arg(long, env = "ROLLCACHE_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// This replica's name in the Lease [default: POD_NAME, else the host name]
    #[arg(long, env = "ROLLCACHE_IDENTITY", value_name = "NAME")]
    pub identity: Option<String>,
    /// The Lease the replicas elect a leader with
    #[arg(long, env = "ROLLCACHE_LEASE_NAME", default_value = "rollcache-index")]
    pub lease_name: String,
    /// How long a leader holds the Lease without renewing it (renewed every third of it)
    #[arg(long, env = "ROLLCACHE_LEASE_DURATION", default_value = "15s", value_parser = duration)]
    pub lease_duration: Duration,
    /// Listener for /metrics, /healthz and /readyz
    #[arg(
        long,
        env = "ROLLCACHE_INDEX_METRICS_ADDR",
        default_value = "0.0.0.0:9102"
    )]
    pub metrics_addr: SocketAddr,
}

impl IndexArgs {
    fn namespace(&self) -> String {
        self.namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "rollcache".to_owned())
    }

    /// The namespaces to index, sorted and checked as the agent's `namespaces` are; empty: all.
    pub fn scope(&self) -> anyhow::Result<Vec<String>> {
        let mut scope: Vec<String> = self
            .namespaces
            .iter()
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .collect();
        if let Some(bad) = scope.iter().find(|n| !is_namespace_name(n)) {
            anyhow::bail!("--namespaces: `{bad}` is not a namespace name");
        }
        scope.sort_unstable();
        scope.dedup();
        Ok(scope)
    }

    fn identity(&self) -> anyhow::Result<String> {
        self.identity
            .clone()
            .or_else(|| std::env::var("POD_NAME").ok())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .filter(|n| !n.is_empty())
            .context(
                "no identity: pass --identity or set POD_NAME (the downward API's metadata.name)",
            )
    }
}

pub use crate::fleet::inventory_resource;

/// The history the indexer watches: the controllers' history and Helm releases of `scope`'s
/// namespaces (one watcher per namespace and resource; empty: every namespace); no Pods and no
/// Node (they are per node, the agents' own).
pub fn watch_config(scope: &[String]) -> WatchConfig {
    WatchConfig {
        namespaces: scope.to_vec(),
        pods: false,
        node_name: None,
        ..WatchConfig::default()
    }
}

pub async fn run(args: IndexArgs) -> anyhow::Result<()> {
    // A bad flag is told before the cluster is asked anything.
    args.scope()?;
    let cancel = CancellationToken::new();
    let stopping = "no more writes, releasing the lease";
    crate::commands::run::spawn_signal_handler(cancel.clone(), stopping);
    let config = sources::kube_config(&args.kube).await?;
    let client = sources::client_from(config)?;
    run_with(args, client, Tuning::default(), Arc::default(), cancel).await
}

/// The indexer on `client` until `cancel`: sources, election, publisher, listener.
pub async fn run_with(
    args: IndexArgs,
    client: kube::Client,
    tuning: Tuning,
    metrics: Arc<IndexMetrics>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let namespace = args.namespace();
    let identity = args.identity()?;
    let scope = args.scope()?;
    anyhow::ensure!(
        args.lease_duration >= Duration::from_secs(2),
        "--lease-duration {} is too short: at least 2s (renewed every third of it)",
        humantime::format_duration(args.lease_duration)
    );
    match scope.as_slice() {
        [] => tracing::info!("indexing every namespace"),
        s => tracing::info!(namespaces = %s.join(","), "indexing only these namespaces"),
    }
    let store = HistoryStore::new();
    let mut tasks = JoinSet::new();
    spawn_watchers(&client, &watch_config(&scope), &store, &cancel, &mut tasks);

    let elector = Elector {
        api: Api::<Lease>::namespaced(client.clone(), &namespace),
        name: args.lease_name.clone(),
        identity,
        duration: args.lease_duration,
    };
    let (leading, election) = elector.spawn(cancel.clone());
    let inventories = Api::namespaced_with(client, &namespace, &inventory_resource());
    let mut publisher = Publisher::new(inventories, tuning.budget, metrics.clone());
    publisher.scope = (!scope.is_empty()).then_some(scope);
    tasks.spawn(publish::run(
        store,
        publisher,
        leading,
        tuning,
        cancel.clone(),
    ));

    let listener = http::bind(args.metrics_addr).await?;
    let router = router(metrics);
    let served = http::serve_on(listener, router, cancel.clone()).await;
    cancel.cancel();
    // The elector clears the Lease's holder as it ends; wait for it so that it happens.
    let _ = election.await;
    while tasks.join_next().await.is_some() {}
    served
}

fn router(metrics: Arc<IndexMetrics>) -> Router {
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let registry = Arc::new(registry);
    let ready = metrics.clone();
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move {
                    let mut text = String::new();
                    match prometheus_client::encoding::text::encode(&mut text, &registry) {
                        Ok(()) => (StatusCode::OK, text),
                        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                    }
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.ready.get() == 1;
                async move {
                    if ready {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "history not listed yet")
                    }
                }
            }),
        )
}

//! Starting every enabled history source from the config, each under its supervisor.
//!
//! The Kubernetes watchers and the directory source all feed one `HistoryStore`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kube::Api;
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::dir_source::{NodeFromFiles, spawn_dir_source};
use super::inventory::spawn_inventory_source;
use super::store::HistoryStore;
use super::watch::{WatchConfig, spawn_watchers};
use crate::config::{Config, HistoryFrom, KubeArgs};

/// The watchers' settings from the config. Reading the inventory, only this node's Node and the
/// Pods on this node are watched (in `namespaces`, one watcher each, as the history would be):
/// the history objects (and every Secret and ConfigMap) are the indexer's to read, and the
/// inventory source takes only `namespaces`' facts.
pub fn watch_config(cfg: &Config) -> WatchConfig {
    if cfg.history_from == HistoryFrom::Inventory {
        return WatchConfig {
            namespaces: cfg.namespaces.clone(),
            replicasets: false,
            controller_revisions: false,
            helm_secrets: false,
            helm_configmaps: false,
            pods: cfg.sources.pods,
            pods_on_node: true,
            node_name: cfg.node_name.clone(),
            ..WatchConfig::default()
        };
    }
    WatchConfig {
        namespaces: cfg.namespaces.clone(),
        replicasets: cfg.sources.replicasets,
        controller_revisions: cfg.sources.controller_revisions,
        helm_secrets: cfg.sources.helm_secrets,
        helm_configmaps: cfg.sources.helm_configmaps,
        pods: cfg.sources.pods,
        node_name: cfg.node_name.clone(),
        ..WatchConfig::default()
    }
}

/// Why no Kubernetes client could be made or the API did not answer: each one line, naming the
/// kubeconfig or the server and the cause, for people at a terminal.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error(
        "no Kubernetes API configured: no --kubeconfig, no KUBECONFIG or ~/.kube/config, and not in a cluster (KUBERNETES_SERVICE_HOST unset)"
    )]
    NotConfigured,
    #[error("cannot use the kubeconfig {source_name}: {cause}")]
    Kubeconfig { source_name: String, cause: String },
    #[error("cannot use the in-cluster service account: {0}")]
    InCluster(String),
    #[error("cannot reach the Kubernetes API at {url}: {cause}")]
    Unreachable { url: String, cause: String },
    #[error("cannot make a client for the Kubernetes API at {url}: {cause}")]
    Client { url: String, cause: String },
    #[error("the Kubernetes API at {url} refused the credentials: {cause}")]
    Unauthorized { url: String, cause: String },
}

/// How long a one-shot command waits for the API server to connect and answer its first request.
pub const ONE_SHOT_PATIENCE: Duration = Duration::from_secs(5);

/// The client configuration `args` name, as kubectl picks it: `--kubeconfig` (else `KUBECONFIG`,
/// else `~/.kube/config`) at `--context` (else its current context), or the in-cluster service
/// account when no kubeconfig exists and no context is asked for.
pub async fn kube_config(args: &KubeArgs) -> Result<kube::Config, KubeError> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..KubeConfigOptions::default()
    };
    let from_env = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty());
    let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".kube/config"));
    let bad = |source_name: String| {
        move |e: kube::config::KubeconfigError| KubeError::Kubeconfig {
            source_name,
            cause: cause(&e),
        }
    };
    let mut config = if let Some(path) = &args.kubeconfig {
        let name = path.display().to_string();
        let file = Kubeconfig::read_from(path).map_err(bad(name.clone()))?;
        kube::Config::from_custom_kubeconfig(file, &options)
            .await
            .map_err(bad(name))?
    } else if let Some(value) = from_env {
        let name = format!("KUBECONFIG={}", value.to_string_lossy());
        kube::Config::from_kubeconfig(&options)
            .await
            .map_err(bad(name))?
    } else if let Some(path) = home.filter(|p| p.exists() || args.context.is_some()) {
        kube::Config::from_kubeconfig(&options)
            .await
            .map_err(bad(path.display().to_string()))?
    } else if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        kube::Config::incluster().map_err(|e| KubeError::InCluster(cause(&e)))?
    } else {
        return Err(KubeError::NotConfigured);
    };
    config.apply_debug_overrides();
    tune_client_config(&mut config);
    Ok(config)
}

/// A client for a one-shot command, checked with one request: an unreachable or hanging server,
/// or refused credentials, is one error within seconds rather than watchers retrying forever.
pub async fn one_shot_client(args: &KubeArgs) -> Result<kube::Client, KubeError> {
    let mut config = kube_config(args).await?;
    config.connect_timeout = Some(ONE_SHOT_PATIENCE);
    let url = config.cluster_url.to_string();
    let client = client_from(config)?;
    check_answers(&client, &url).await?;
    Ok(client)
}

/// A client on `config`; it connects on its first request. The daemon's watchers retry an
/// unreachable API with backoff, saying so once per change of state.
pub fn client_from(config: kube::Config) -> Result<kube::Client, KubeError> {
    let url = config.cluster_url.to_string();
    kube::Client::try_from(config).map_err(|e| KubeError::Client {
        url,
        cause: cause(&e),
    })
}

/// One cheap request (a list of at most one Node). Any answer from the server, a refusal by RBAC
/// included, shows it is there; only the transport failing, silence or 401 stop a command.
pub async fn check_answers(client: &kube::Client, url: &str) -> Result<(), KubeError> {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let unreachable = |cause: String| KubeError::Unreachable {
        url: url.trim_end_matches('/').to_owned(),
        cause,
    };
    match tokio::time::timeout(
        ONE_SHOT_PATIENCE,
        nodes.list(&ListParams::default().limit(1)),
    )
    .await
    {
        Err(_) => Err(unreachable(format!(
            "no answer within {}s",
            ONE_SHOT_PATIENCE.as_secs()
        ))),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(kube::Error::Api(status))) if status.code == 401 => Err(KubeError::Unauthorized {
            url: url.trim_end_matches('/').to_owned(),
            cause: format!("{} ({})", status.message, status.code),
        }),
        Ok(Err(kube::Error::Api(_))) => Ok(()),
        Ok(Err(e)) => Err(unreachable(cause(&e))),
    }
}

/// The root cause of `e` in a few words: the innermost error of the chain (the socket's, the
/// resolver's, the TLS handshake's), without the `(os error N)` suffix people do not need.
pub fn cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = e;
    let mut io_kind = None;
    loop {
        if let Some(io) = inner.downcast_ref::<std::io::Error>() {
            io_kind = Some(io.kind());
        }
        match inner.source() {
            Some(next) => inner = next,
            None => break,
        }
    }
    let text = match io_kind {
        Some(std::io::ErrorKind::ConnectionRefused) => "connection refused".to_owned(),
        Some(std::io::ErrorKind::TimedOut) => "connection timed out".to_owned(),
        _ => inner.to_string(),
    };
    match text.find(" (os error") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// What rollcache changes in a kube client's defaults.
///
/// kube retries 429, 503 and 504 inside the request, for minutes (15 attempts, exponential up to
/// 1000 s): meanwhile a watcher whose stream ended reports no error, so its source would look
/// fresh while it has stopped seeing changes, and other sources' deletions could unpin. Without
/// it the error reaches the watcher at once: the source is marked in error and the watcher's own
/// backoff paces the retries.
pub fn tune_client_config(config: &mut kube::Config) {
    config.default_retry = false;
}

/// Start every enabled source (API watchers with `client`, the directory) into `store`.
pub async fn start_sources(
    cfg: &Config,
    client: Option<kube::Client>,
    store: &Arc<HistoryStore>,
    cancel: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<()> {
    if cfg.kubernetes {
        let client = client.context("the Kubernetes API is on but no client was given")?;
        let watch = watch_config(cfg);
        spawn_watchers(&client, &watch, store, cancel, tasks);
        if cfg.history_from == HistoryFrom::Inventory {
            let ns = cfg.inventory_namespace();
            spawn_inventory_source(&client, &ns, &watch, store, cancel, tasks);
        }
    }
    if let Some(dir) = &cfg.from_dir {
        let node = NodeFromFiles {
            node_name: cfg.node_name.clone(),
            enabled: !cfg.kubernetes,
        };
        spawn_dir_source(dir, node, store, cancel, tasks)
            .with_context(|| format!("cannot watch directory source {}", dir.display()))?;
    }
    Ok(())
}

//! Command-line flags of `rollcache run` / `plan`, each with an environment twin; they override the
//! config file.

use std::path::PathBuf;

use super::{Config, CredentialVerificationPolicy, FileConfig, HistoryFrom, Result};

/// Which Kubernetes API a command talks to, as kubectl chooses it: every command that reads the
/// cluster flattens these.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct KubeArgs {
    /// kubeconfig file [default: KUBECONFIG, else ~/.kube/config, else the in-cluster service account]
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// kubeconfig context to use [default: the kubeconfig's current context]
    #[arg(long, env = "ROLLCACHE_CONTEXT", value_name = "NAME")]
    pub context: Option<String>,
}

#[derive(Clone, Debug, Default, clap::Args)]
pub struct ConfigArgs {
    #[command(flatten)]
    pub kube: KubeArgs,
    /// YAML config file (a mounted ConfigMap); its directory is watched and reloaded on change.
    #[arg(long, env = "ROLLCACHE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This node's name (from the downward API in a DaemonSet).
    #[arg(long = "node", env = "NODE_NAME", value_name = "NAME")]
    pub node_name: Option<String>,
    /// containerd's socket (CRI and containerd API) [default: /run/containerd/containerd.sock]
    #[arg(
        long = "socket",
        env = "ROLLCACHE_CONTAINERD_SOCKET",
        value_name = "PATH"
    )]
    pub containerd_socket: Option<PathBuf>,
    /// Namespaces to watch, comma-separated [default: all]
    #[arg(long, env = "ROLLCACHE_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Option<Vec<String>>,
    /// Read history from a directory of exported objects (YAML/JSON, as `kubectl get -o yaml`).
    #[arg(long = "from", env = "ROLLCACHE_FROM_DIR", value_name = "DIR")]
    pub from_dir: Option<PathBuf>,
    /// Do not contact the Kubernetes API (with --from only).
    #[arg(long, env = "ROLLCACHE_NO_KUBERNETES")]
    pub no_kubernetes: bool,
    /// Where history comes from: the cluster's objects, or the indexer's inventory [default: cluster]
    #[arg(long, env = "ROLLCACHE_HISTORY_FROM", value_enum)]
    pub history_from: Option<HistoryFrom>,
    /// Namespace of the inventory [default: POD_NAMESPACE, else rollcache]
    #[arg(long, env = "ROLLCACHE_INVENTORY_NAMESPACE", value_name = "NAME")]
    pub inventory_namespace: Option<String>,
    /// Hold every image, ignoring scheduling constraints.
    #[arg(long, env = "ROLLCACHE_HOLD_EVERYTHING")]
    pub hold_everything: bool,
    /// Images every node holds regardless of history, comma-separated.
    #[arg(long, env = "ROLLCACHE_EXTRA_IMAGES", value_delimiter = ',')]
    pub extra_images: Option<Vec<String>>,
    /// Pulls in flight at once [default: 2]
    #[arg(long, env = "ROLLCACHE_MAX_CONCURRENT_PULLS")]
    pub max_concurrent_pulls: Option<usize>,
    /// Deadline for one pull [default: 10m]
    #[arg(long, env = "ROLLCACHE_PULL_TIMEOUT")]
    pub pull_timeout: Option<String>,
    /// Time an image must be unneeded before its pin is removed [default: 10m]
    #[arg(long, env = "ROLLCACHE_UNPIN_GRACE")]
    pub unpin_grace: Option<String>,
    /// No new pull above this image-filesystem usage, percent [default: 80]
    #[arg(long, env = "ROLLCACHE_DISK_BUDGET_PERCENT")]
    pub disk_budget_percent: Option<u8>,
    /// Full resync period [default: 5m]
    #[arg(long, env = "ROLLCACHE_RESYNC_INTERVAL")]
    pub resync_interval: Option<String>,
    /// Upper bound of the random delay before this node's first pulls [default: 10s]
    #[arg(long, env = "ROLLCACHE_START_JITTER")]
    pub start_jitter: Option<String>,
    /// First retry delay after a failed pull [default: 5s]
    #[arg(long, env = "ROLLCACHE_BACKOFF_INITIAL")]
    pub backoff_initial: Option<String>,
    /// Longest retry delay [default: 5m]
    #[arg(long, env = "ROLLCACHE_BACKOFF_MAX")]
    pub backoff_max: Option<String>,
    /// Do not read imagePullSecrets (public images only; no Secret access needed).
    #[arg(long, env = "ROLLCACHE_NO_PULL_SECRETS")]
    pub no_pull_secrets: bool,
    /// Write Events on this node's Node object for transitions a person should see [default: true]
    #[arg(long, env = "ROLLCACHE_NODE_EVENTS", value_name = "BOOL")]
    pub node_events: Option<bool>,
    /// The kubelet's imagePullCredentialsVerificationPolicy on this node [default: never-verify-preloaded-images]
    #[arg(long, env = "ROLLCACHE_CREDENTIAL_VERIFICATION_POLICY", value_enum)]
    pub credential_verification_policy: Option<CredentialVerificationPolicy>,
    /// Images the kubelet's verification allowlist exempts, comma-separated (`prefix*` allowed).
    #[arg(
        long,
        env = "ROLLCACHE_CREDENTIAL_VERIFICATION_ALLOWLIST",
        value_delimiter = ','
    )]
    pub credential_verification_allowlist: Option<Vec<String>>,
    /// Listen address for /metrics, /healthz, /readyz, /status [default: 0.0.0.0:9847]
    #[arg(long, env = "ROLLCACHE_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Listen address for the admin API (POST /prefetch) [default: 127.0.0.1:9848]
    #[arg(long, env = "ROLLCACHE_ADMIN_ADDR")]
    pub admin_addr: Option<String>,
}

impl ConfigArgs {
    /// Read the file (if any), lay the flags over it, validate.
    pub fn resolve(&self) -> Result<Config> {
        let file = match &self.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        self.resolve_with(&file)
    }

    pub fn resolve_with(&self, file: &FileConfig) -> Result<Config> {
        let mut c = Config::from_file(&self.over(file))?;
        c.namespaces.retain(|n| !n.is_empty());
        c.validate()?;
        Ok(c)
    }

    /// The file's values with every flag (or environment variable) that is set laid over them, so
    /// that one parser reads both.
    fn over(&self, file: &FileConfig) -> FileConfig {
        let mut f = file.clone();
        macro_rules! take {
            ($($field:ident),*) => { $( if self.$field.is_some() { f.$field = self.$field.clone(); } )* };
        }
        take!(
            node_name,
            containerd_socket,
            namespaces,
            from_dir,
            history_from,
            inventory_namespace,
            extra_images,
            max_concurrent_pulls,
            pull_timeout,
            unpin_grace,
            disk_budget_percent,
            resync_interval,
            start_jitter,
            backoff_initial,
            backoff_max,
            credential_verification_policy,
            credential_verification_allowlist,
            node_events,
            metrics_addr,
            admin_addr
        );
        // Switches only ever move away from the default.
        if self.no_kubernetes {
            f.kubernetes = Some(false);
        }
        if self.hold_everything {
            f.hold_everything = Some(true);
        }
        if self.no_pull_secrets {
            f.use_pull_secrets = Some(false);
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn flags_override_file() {
        let file = FileConfig::parse("max_concurrent_pulls: 3\nunpin_grace: 1m\n").unwrap();
        let args = ConfigArgs {
            max_concurrent_pulls: Some(5),
            ..Default::default()
        };
        let c = args.resolve_with(&file).unwrap();
        assert_eq!(c.max_concurrent_pulls, 5);
        assert_eq!(c.unpin_grace, Duration::from_secs(60));
    }

    #[test]
    fn invalid_flag_is_reported() {
        let args = ConfigArgs {
            admin_addr: Some("nowhere".into()),
            ..Default::default()
        };
        let e = args
            .resolve_with(&FileConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("admin_addr"), "{e}");
    }
}

//! One `Config` from file + env + flags (flags and env win over the file), validated with clear errors.
//!
//! The file is YAML (a ConfigMap mount in a cluster). Unknown keys are errors, so a typo never
//! silently falls back to a default. Which options can change while running is stated per field;
//! the others need a restart, and a reload that changes them says so.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod args;
pub mod reload;

pub use args::{ConfigArgs, KubeArgs};

/// Default containerd socket, the kubelet's own.
pub const DEFAULT_SOCKET: &str = "/run/containerd/containerd.sock";

/// The longest any duration option may be: far beyond any sensible setting, and always safe to
/// add to a clock reading (a larger one could overflow it).
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The shortest `unpin_grace`: a pin must outlive at least the moment of noticing a change.
pub const MIN_UNPIN_GRACE: Duration = Duration::from_secs(1);

/// Below this `unpin_grace` works but is risky in production (see [`Config::warnings`]).
pub const SHORT_UNPIN_GRACE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config option `{option}`: {message}")]
    Invalid {
        option: &'static str,
        message: String,
    },
}

pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

pub use rollcache_core::report::CredentialVerificationPolicy;

/// Which history sources are watched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesConfig {
    pub replicasets: bool,
    pub controller_revisions: bool,
    /// Helm releases stored as Secrets (needs get/list/watch on Secrets).
    pub helm_secrets: bool,
    /// Helm releases stored as ConfigMaps (`HELM_DRIVER=configmap`).
    pub helm_configmaps: bool,
    pub pods: bool,
}

impl Default for SourcesConfig {
    fn default() -> Self {
        SourcesConfig {
            replicasets: true,
            controller_revisions: true,
            helm_secrets: true,
            helm_configmaps: true,
            pods: true,
        }
    }
}

/// Where the agent reads history from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum HistoryFrom {
    /// Every ReplicaSet, ControllerRevision, Helm release and Pod of the cluster (one process).
    #[default]
    Cluster,
    /// The `RollcacheInventory` shards `rollcache index` publishes, this node's Node and its Pods.
    Inventory,
}

/// Namespace of the inventory when neither the option nor `POD_NAMESPACE` names one.
pub const DEFAULT_INVENTORY_NAMESPACE: &str = "rollcache";

/// The resolved configuration every component reads. Tests construct it directly.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Config {
    /// This node's name (downward API `NODE_NAME`). Restart to change.
    pub node_name: Option<String>,
    /// containerd's socket, serving both CRI and containerd's own API. Restart to change.
    pub containerd_socket: PathBuf,
    /// Namespaces to watch; empty means all. Restart to change.
    pub namespaces: Vec<String>,
    /// Restart to change.
    pub sources: SourcesConfig,
    /// Read history from this directory instead of (or, with a cluster, besides) the API. Restart
    /// to change.
    pub from_dir: Option<PathBuf>,
    /// Use the Kubernetes API at all (off for a pure directory source). Restart to change.
    pub kubernetes: bool,
    /// The cluster's history objects, or the indexer's inventory (fleet mode). Restart to change.
    pub history_from: HistoryFrom,
    /// Where the inventory is read; None: `POD_NAMESPACE`, else `rollcache`. Restart to change.
    pub inventory_namespace: Option<String>,
    /// Hold every image regardless of scheduling constraints. Reloadable.
    pub hold_everything: bool,
    /// Images every node holds regardless of history (e.g. before an upgrade window). Reloadable.
    pub extra_images: Vec<String>,
    /// Pulls in flight at once. Reloadable.
    pub max_concurrent_pulls: usize,
    /// Deadline for one pull. Reloadable.
    #[serde(serialize_with = "human_duration")]
    pub pull_timeout: Duration,
    /// How long an image must be unneeded before its pin is removed. Reloadable.
    #[serde(serialize_with = "human_duration")]
    pub unpin_grace: Duration,
    /// No new pull starts while the image filesystem is fuller than this share (percent). Reloadable.
    pub disk_budget_percent: u8,
    /// Full resync period. Reloadable.
    #[serde(serialize_with = "human_duration")]
    pub resync_interval: Duration,
    /// Upper bound of the random delay before this node's first pulls (spreads a fleet). Reloadable.
    #[serde(serialize_with = "human_duration")]
    pub start_jitter: Duration,
    /// First retry delay after a failed pull; doubles per failure up to `backoff_max`. Reloadable.
    #[serde(serialize_with = "human_duration")]
    pub backoff_initial: Duration,
    #[serde(serialize_with = "human_duration")]
    pub backoff_max: Duration,
    /// Read imagePullSecrets (and service accounts') to pull private images. Restart to change.
    pub use_pull_secrets: bool,
    /// The node's kubelet credential verification policy. Reloadable.
    pub credential_verification_policy: CredentialVerificationPolicy,
    /// Images the kubelet's allowlist exempts (`NeverVerifyAllowlistedImages`); prefixes end in `*`.
    pub credential_verification_allowlist: Vec<String>,
    /// Events on this node's Node object for transitions a person should see. Restart to change.
    pub node_events: bool,
    /// `/metrics`, `/healthz`, `/readyz`, `/status`. Restart to change.
    pub metrics_addr: SocketAddr,
    /// `POST /prefetch` (and `/status`); localhost-only by default. Restart to change.
    pub admin_addr: SocketAddr,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_name: None,
            containerd_socket: PathBuf::from(DEFAULT_SOCKET),
            namespaces: Vec::new(),
            sources: SourcesConfig::default(),
            from_dir: None,
            kubernetes: true,
            history_from: HistoryFrom::Cluster,
            inventory_namespace: None,
            hold_everything: false,
            extra_images: Vec::new(),
            max_concurrent_pulls: 2,
            pull_timeout: Duration::from_secs(600),
            unpin_grace: Duration::from_secs(600),
            disk_budget_percent: 80,
            resync_interval: Duration::from_secs(300),
            start_jitter: Duration::from_secs(10),
            backoff_initial: Duration::from_secs(5),
            backoff_max: Duration::from_secs(300),
            use_pull_secrets: true,
            credential_verification_policy: CredentialVerificationPolicy::default(),
            credential_verification_allowlist: Vec::new(),
            node_events: true,
            metrics_addr: "0.0.0.0:9847".parse().expect("valid literal"),
            admin_addr: "127.0.0.1:9848".parse().expect("valid literal"),
        }
    }
}

/// The config file: every key optional, unknown keys rejected.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub node_name: Option<String>,
    pub containerd_socket: Option<PathBuf>,
    pub namespaces: Option<Vec<String>>,
    pub sources: Option<SourcesConfig>,
    pub from_dir: Option<PathBuf>,
    pub kubernetes: Option<bool>,
    pub history_from: Option<HistoryFrom>,
    pub inventory_namespace: Option<String>,
    pub hold_everything: Option<bool>,
    pub extra_images: Option<Vec<String>>,
    pub max_concurrent_pulls: Option<usize>,
    pub pull_timeout: Option<String>,
    pub unpin_grace: Option<String>,
    pub disk_budget_percent: Option<u8>,
    pub resync_interval: Option<String>,
    pub start_jitter: Option<String>,
    pub backoff_initial: Option<String>,
    pub backoff_max: Option<String>,
    pub use_pull_secrets: Option<bool>,
    pub credential_verification_policy: Option<CredentialVerificationPolicy>,
    pub credential_verification_allowlist: Option<Vec<String>>,
    pub node_events: Option<bool>,
    pub metrics_addr: Option<String>,
    pub admin_addr: Option<String>,
}

/// Config files larger than this are refused (a ConfigMap holds at most 1 MiB).
const MAX_FILE_BYTES: u64 = 1 << 20;

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig> {
        let read_err = |source| ConfigError::Read {
            path: path.to_owned(),
            source,
        };
        let len = std::fs::metadata(path).map_err(read_err)?.len();
        if len > MAX_FILE_BYTES {
            return Err(ConfigError::Parse {
                path: path.to_owned(),
                message: format!("{len} bytes, more than the {MAX_FILE_BYTES} allowed"),
            });
        }
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        Self::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    pub fn parse(text: &str) -> std::result::Result<FileConfig, String> {
        if text.trim().is_empty() {
            return Ok(FileConfig::default());
        }
        serde_saphyr::from_str(text).map_err(|e| e.to_string())
    }
}

/// Whether `ns` is a namespace name (an RFC 1123 label), as `namespaces` and
/// `rollcache index --namespaces` take them.
pub fn is_namespace_name(ns: &str) -> bool {
    !ns.is_empty()
        && ns.len() <= 63
        && ns
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn human_duration<S: serde::Serializer>(
    d: &Duration,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*d))
}

/// Parse a duration such as `90s`, `10m`, `1h 30m` (humantime syntax).
pub fn parse_duration(option: &'static str, value: &str) -> Result<Duration> {
    humantime::parse_duration(value.trim()).map_err(|e| ConfigError::Invalid {
        option,
        message: format!("`{value}` is not a duration ({e}); write e.g. `30s`, `10m`, `1h`"),
    })
}

fn parse_addr(option: &'static str, value: &str) -> Result<SocketAddr> {
    value.trim().parse().map_err(|e| ConfigError::Invalid {
        option,
        message: format!("`{value}` is not an address ({e}); write e.g. `127.0.0.1:9848`"),
    })
}

impl Config {
    /// Lay the file's values over the defaults.
    pub fn from_file(file: &FileConfig) -> Result<Config> {
        let mut c = Config::default();
        macro_rules! take {
            ($($field:ident),*) => { $( if let Some(v) = &file.$field { c.$field = v.clone(); } )* };
        }
        take!(
            containerd_socket,
            namespaces,
            sources,
            kubernetes,
            history_from,
            hold_everything,
            extra_images,
            max_concurrent_pulls,
            disk_budget_percent,
            use_pull_secrets,
            credential_verification_policy,
            credential_verification_allowlist,
            node_events
        );
        c.node_name = file.node_name.clone();
        c.from_dir = file.from_dir.clone();
        c.inventory_namespace = file.inventory_namespace.clone().filter(|n| !n.is_empty());
        macro_rules! duration {
            ($($field:ident),*) => { $( if let Some(v) = &file.$field {
                c.$field = parse_duration(stringify!($field), v)?;
            } )* };
        }
        duration!(
            pull_timeout,
            unpin_grace,
            resync_interval,
            start_jitter,
            backoff_initial,
            backoff_max
        );
        if let Some(v) = &file.metrics_addr {
            c.metrics_addr = parse_addr("metrics_addr", v)?;
        }
        if let Some(v) = &file.admin_addr {
            c.admin_addr = parse_addr("admin_addr", v)?;
        }
        Ok(c)
    }

    /// Check cross-field rules; every message names the option and a fix.
    pub fn validate(&self) -> Result<()> {
        let invalid = |option, message: String| Err(ConfigError::Invalid { option, message });
        if self.max_concurrent_pulls == 0 || self.max_concurrent_pulls > 64 {
            return invalid(
                "max_concurrent_pulls",
                format!("{} is out of range 1..=64", self.max_concurrent_pulls),
            );
        }
        if self.disk_budget_percent == 0 || self.disk_budget_percent > 100 {
            return invalid(
                "disk_budget_percent",
                format!(
                    "{} is out of range 1..=100 (keep it below the kubelet's image GC high threshold, 85 by default)",
                    self.disk_budget_percent
                ),
            );
        }
        for (option, d) in [
            ("pull_timeout", self.pull_timeout),
            ("unpin_grace", self.unpin_grace),
            ("resync_interval", self.resync_interval),
            ("start_jitter", self.start_jitter),
            ("backoff_initial", self.backoff_initial),
            ("backoff_max", self.backoff_max),
        ] {
            if d > MAX_DURATION {
                return invalid(
                    option,
                    format!(
                        "{} is too long: at most {}",
                        humantime::format_duration(d),
                        humantime::format_duration(MAX_DURATION)
                    ),
                );
            }
        }
        if self.unpin_grace < MIN_UNPIN_GRACE {
            return invalid(
                "unpin_grace",
                format!(
                    "{} is too short: at least 1s (minutes in production)",
                    humantime::format_duration(self.unpin_grace)
                ),
            );
        }
        if self.pull_timeout < Duration::from_secs(1) {
            return invalid("pull_timeout", "must be at least 1s".into());
        }
        if self.backoff_initial.is_zero() || self.backoff_max < self.backoff_initial {
            return invalid(
                "backoff_max",
                format!(
                    "backoff_initial ({:?}) must be > 0 and <= backoff_max ({:?})",
                    self.backoff_initial, self.backoff_max
                ),
            );
        }
        if self.resync_interval < Duration::from_secs(1) {
            return invalid("resync_interval", "must be at least 1s".into());
        }
        if !self.kubernetes && self.from_dir.is_none() {
            return invalid(
                "kubernetes",
                "with the Kubernetes API off, `from_dir` must name a directory source".into(),
            );
        }
        if self.metrics_addr == self.admin_addr {
            return invalid(
                "admin_addr",
                format!(
                    "must differ from metrics_addr ({}): the admin listener is separate",
                    self.metrics_addr
                ),
            );
        }
        if self.history_from == HistoryFrom::Inventory && !self.kubernetes {
            return invalid(
                "history_from",
                "`inventory` reads the cluster's inventory: it needs the Kubernetes API (kubernetes: true)".into(),
            );
        }
        if let Some(ns) = &self.inventory_namespace
            && !is_namespace_name(ns)
        {
            return invalid(
                "inventory_namespace",
                format!("`{ns}` is not a namespace name"),
            );
        }
        for ns in &self.namespaces {
            if !is_namespace_name(ns) {
                return invalid("namespaces", format!("`{ns}` is not a namespace name"));
            }
        }
        Ok(())
    }

    /// Settings that are valid but risky, one sentence each, for the log.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.unpin_grace < SHORT_UNPIN_GRACE {
            w.push(format!(
                "unpin_grace is {}: shorter than 1m, an image is unpinned (and kubelet GC may delete it) soon after its revision leaves history, leaving little time to notice and roll back; minutes are advised",
                humantime::format_duration(self.unpin_grace)
            ));
        }
        w
    }

    /// The namespace the inventory is read from: the option, else `POD_NAMESPACE`, else
    /// `rollcache` (where `rollcache index` publishes by the same rule).
    pub fn inventory_namespace(&self) -> String {
        self.inventory_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| DEFAULT_INVENTORY_NAMESPACE.to_owned())
    }

    /// Names of options whose change a reload cannot apply (they need a restart).
    pub fn restart_only_changes(&self, new: &Config) -> Vec<&'static str> {
        let mut v = Vec::new();
        macro_rules! cmp {
            ($($field:ident),*) => { $( if self.$field != new.$field { v.push(stringify!($field)); } )* };
        }
        cmp!(
            node_name,
            containerd_socket,
            namespaces,
            sources,
            from_dir,
            kubernetes,
            history_from,
            inventory_namespace,
            use_pull_secrets,
            node_events,
            metrics_addr,
            admin_addr
        );
        v
    }
}

#[cfg(test)]
mod tests;

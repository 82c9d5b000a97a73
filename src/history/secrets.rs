//! On-demand reads for pull credentials: a Secret by namespace/name and a ServiceAccount's
//! `imagePullSecrets`, behind a small TTL cache. Returns raw type and data; turning docker configs
//! into registry credentials happens in `credentials.rs`. Secret data is never logged (the
//! `Debug` form of [`RawSecret`] shows only key names).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::{Api, Client};
use tokio::time::Instant;

/// Errors of the on-demand reads; each names the object.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SecretError {
    #[error("{kind} {namespace}/{name} not found")]
    NotFound {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    #[error(
        "not allowed to read {kind} {namespace}/{name}: grant get on {kind}s to rollcache's ServiceAccount, or turn pull-secret reading off"
    )]
    Forbidden {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    #[error("cannot read {kind} {namespace}/{name} from the API server: {message}; will retry")]
    Api {
        kind: &'static str,
        namespace: String,
        name: String,
        message: String,
    },
}

impl SecretError {
    /// Low-cardinality label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            SecretError::NotFound { .. } => "not_found",
            SecretError::Forbidden { .. } => "forbidden",
            SecretError::Api { .. } => "api",
        }
    }
}

/// A Secret's type and decoded data.
#[derive(Clone, PartialEq, Eq)]
pub struct RawSecret {
    /// `type`, e.g. `kubernetes.io/dockerconfigjson`; `Opaque` when absent.
    pub type_: String,
    pub data: BTreeMap<String, Vec<u8>>,
}

impl std::fmt::Debug for RawSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawSecret")
            .field("type_", &self.type_)
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .finish()
    }
}

type Key = (String, String);
/// Answers kept per cache. Keys come from workloads (any namespace user can name secrets and
/// accounts), so the caches are bounded: when full, expired answers go first, then the one that
/// expires soonest.
pub const MAX_CACHED: usize = 4096;
/// Answers with the instant they expire.
type Cache<T> = Mutex<HashMap<Key, (Instant, Result<T, SecretError>)>>;

/// Reads Secrets and ServiceAccounts, caching answers (found and not found) for `ttl`.
pub struct SecretReader {
    client: Client,
    ttl: Duration,
    secrets: Cache<Arc<RawSecret>>,
    accounts: Cache<Arc<[String]>>,
}

impl std::fmt::Debug for SecretReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretReader")
            .field("ttl", &self.ttl)
            .finish()
    }
}

fn classify(kind: &'static str, namespace: &str, name: &str, e: kube::Error) -> SecretError {
    let (namespace, name) = (namespace.to_string(), name.to_string());
    match &e {
        kube::Error::Api(s) if s.code == 404 => SecretError::NotFound {
            kind,
            namespace,
            name,
        },
        kube::Error::Api(s) if s.code == 403 => SecretError::Forbidden {
            kind,
            namespace,
            name,
        },
        _ => SecretError::Api {
            kind,
            namespace,
            name,
            message: e.to_string(),
        },
    }
}

/// Answers worth remembering: the object, or a definite "not found" / "forbidden".
fn cacheable<T>(r: &Result<T, SecretError>) -> bool {
    !matches!(r, Err(SecretError::Api { .. }))
}

fn remember<T>(map: &Cache<T>, key: Key, until: Instant, r: Result<T, SecretError>) {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    if map.len() >= MAX_CACHED && !map.contains_key(&key) {
        let now = Instant::now();
        map.retain(|_, (t, _)| *t > now);
        if map.len() >= MAX_CACHED
            && let Some(k) = map
                .iter()
                .min_by_key(|(_, (t, _))| *t)
                .map(|(k, _)| k.clone())
        {
            map.remove(&k);
        }
    }
    map.insert(key, (until, r));
}

/// Entries in a cache.
fn cache_len<T>(map: &Cache<T>) -> usize {
    map.lock().unwrap_or_else(|e| e.into_inner()).len()
}

fn cached<T: Clone>(map: &Cache<T>, key: &Key) -> Option<Result<T, SecretError>> {
    let map = map.lock().unwrap_or_else(|e| e.into_inner());
    map.get(key)
        .filter(|(until, _)| Instant::now() < *until)
        .map(|(_, r)| r.clone())
}

impl SecretReader {
    pub fn new(client: Client, ttl: Duration) -> Self {
        Self {
            client,
            ttl,
            secrets: Mutex::new(HashMap::new()),
            accounts: Mutex::new(HashMap::new()),
        }
    }

    /// A Secret's type and data.
    pub async fn secret(&self, namespace: &str, name: &str) -> Result<Arc<RawSecret>, SecretError> {
        let key = (namespace.to_string(), name.to_string());
        if let Some(r) = cached(&self.secrets, &key) {
            return r;
        }
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let r = match api.get(name).await {
            Ok(s) => Ok(Arc::new(RawSecret {
                type_: s.type_.unwrap_or_else(|| "Opaque".to_string()),
                data: s
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect(),
            })),
            Err(e) => Err(classify("Secret", namespace, name, e)),
        };
        if cacheable(&r) {
            remember(&self.secrets, key, Instant::now() + self.ttl, r.clone());
        }
        r
    }

    /// Names of a ServiceAccount's `imagePullSecrets` (`default` when `service_account` is None).
    pub async fn image_pull_secrets(
        &self,
        namespace: &str,
        service_account: Option<&str>,
    ) -> Result<Arc<[String]>, SecretError> {
        let name = service_account.unwrap_or("default");
        let key = (namespace.to_string(), name.to_string());
        if let Some(r) = cached(&self.accounts, &key) {
            return r;
        }
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        let r = match api.get(name).await {
            Ok(sa) => Ok(sa
                .image_pull_secrets
                .unwrap_or_default()
                .into_iter()
                .map(|r| r.name)
                .filter(|n| !n.is_empty())
                .collect::<Vec<_>>()
                .into()),
            Err(e) => Err(classify("ServiceAccount", namespace, name, e)),
        };
        if cacheable(&r) {
            remember(&self.accounts, key, Instant::now() + self.ttl, r.clone());
        }
        r
    }

    /// Answers cached now (secrets, service accounts).
    pub fn cached_counts(&self) -> (usize, usize) {
        (cache_len(&self.secrets), cache_len(&self.accounts))
    }

    /// Forgets every cached answer (e.g. after a pull failed with an auth error).
    pub fn clear(&self) {
        self.secrets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.accounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

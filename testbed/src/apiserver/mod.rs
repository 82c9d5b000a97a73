//! An in-process Kubernetes API server on 127.0.0.1 speaking the real list/watch wire protocol,
//! so that production kube-rs code (`Api`, `watcher`) runs against it unchanged.
//!
//! It serves GET, list (selectors, `limit`/`continue`) and watch (ordered events, bookmarks,
//! `timeoutSeconds`, `410 Expired` for resource versions older than its retained window) for the
//! resources rollcache reads, discovery, and the writes rollcache makes (`writes`: create,
//! replace, merge patch, server-side apply, delete, on objects and `/status`), for events and for
//! its `RollcacheNode` custom resource, served once its CRD is installed
//! ([`ApiServerOptions::rollcache_crd`], [`ApiServer::install_rollcache_crd`]). Tests put objects
//! in place with [`ApiServer::apply`] and [`ApiServer::delete`]; [`ApiServer::compact`] and [`ApiServer::set_down`] provoke what a real
//! cluster does under stress, and [`ApiServer::set_fault`] / [`ApiServer::set_resource_fault`]
//! make it misbehave at the HTTP level ([`Fault`]: RBAC denial, throttling, server errors, hangs,
//! broken watches). Byte and request counters let benchmarks measure watch traffic.

mod discovery;
mod faults;
mod fields;
mod list;
mod resources;
mod routes;
mod selector;
mod store;
mod strategy;
mod watches;
mod writes;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use faults::Faults;
use resources::{RESOURCES, etcd_key, resource_by_kind};

pub use faults::Fault;
pub use resources::{ROLLCACHE_GROUP, ROLLCACHE_VERSION};
pub use selector::{FieldSelector, LabelSelector};

/// Errors of the test API server's controls.
#[derive(Debug, thiserror::Error)]
pub enum ApiServerError {
    #[error("cannot bind the test API server on 127.0.0.1: {0}; is the loopback interface up?")]
    Bind(#[source] std::io::Error),
    #[error("object rejected: {0}; give apiVersion, kind, metadata.name (and a served kind)")]
    BadObject(String),
    #[error("cannot serialize object for the test API server: {0}")]
    Serialize(#[source] serde_json::Error),
    #[error("cannot build a kube client for the test API server at {url}: {source}")]
    Client {
        url: String,
        #[source]
        source: kube::Error,
    },
}

/// Tunables; the defaults behave like a real API server, tests shorten the bookmark interval.
#[derive(Clone, Debug)]
pub struct ApiServerOptions {
    /// How often an idle watch that asked for bookmarks gets one.
    pub bookmark_interval: Duration,
    /// How many change events are kept for watches to resume from; older resource versions get
    /// `410 Expired`.
    pub retained_events: usize,
    /// Start with rollcache's CRD installed; without it `rollcachenodes` answers 404 until
    /// [`ApiServer::install_rollcache_crd`].
    pub rollcache_crd: bool,
}

impl Default for ApiServerOptions {
    fn default() -> Self {
        Self {
            bookmark_interval: Duration::from_secs(5),
            retained_events: 100_000,
            rollcache_crd: false,
        }
    }
}

/// Key of a stored object: resource index and the etcd-style key (`ns/name` or `name`), which also
/// gives the real server's list order.
type ObjKey = (usize, String);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EventType {
    Added,
    Modified,
    Deleted,
}

#[derive(Debug)]
struct StoredEvent {
    rv: u64,
    resource: usize,
    namespace: String,
    kind: EventType,
    object: Arc<Value>,
    /// The object before this change (for selector transitions on MODIFIED).
    prev: Option<Arc<Value>>,
}

/// Outage switch; every change of `epoch` closes the connections open at that time.
#[derive(Debug, Default, Clone, Copy)]
struct Outage {
    down: bool,
    epoch: u64,
}

#[derive(Debug, Default)]
struct State {
    rv: u64,
    uids: u64,
    objects: BTreeMap<ObjKey, Arc<Value>>,
    events: VecDeque<StoredEvent>,
    /// Watches and continue tokens from a resource version below this get `410 Expired`.
    floor: u64,
    /// Whether rollcache's CRD is installed (its resource served and discovered).
    crd_installed: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    rv_tx: watch::Sender<u64>,
    down_tx: watch::Sender<Outage>,
    faults_tx: watch::Sender<Faults>,
    shutdown: CancellationToken,
    opts: ApiServerOptions,
    requests: AtomicU64,
    watch_requests: AtomicU64,
    bytes: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (every mutation is one step).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Traffic counters, for benchmarks of what watches cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApiServerStats {
    /// HTTP requests answered (lists, gets and watches).
    pub requests: u64,
    pub watch_requests: u64,
    /// Response body bytes sent, watch streams included.
    pub bytes: u64,
}

/// The running server; stops when dropped.
#[derive(Debug)]
pub struct ApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

impl ApiServer {
    /// Starts with default options on a free port of 127.0.0.1.
    pub async fn start() -> Result<Self, ApiServerError> {
        Self::start_with(ApiServerOptions::default()).await
    }

    pub async fn start_with(opts: ApiServerOptions) -> Result<Self, ApiServerError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(ApiServerError::Bind)?;
        let addr = listener.local_addr().map_err(ApiServerError::Bind)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                crd_installed: opts.rollcache_crd,
                ..State::default()
            }),
            rv_tx: watch::channel(0).0,
            down_tx: watch::channel(Outage::default()).0,
            faults_tx: watch::channel(Faults::default()).0,
            shutdown: CancellationToken::new(),
            opts,
            requests: AtomicU64::new(0),
            watch_requests: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        });
        tokio::spawn(routes::accept_loop(listener, shared.clone()));
        let server = Self { shared, addr };
        for ns in ["default", "kube-system"] {
            server.apply(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            )?;
        }
        Ok(server)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client pointed at this server (default namespace `default`), with the settings
    /// rollcache's own client has.
    pub fn client(&self) -> Result<kube::Client, ApiServerError> {
        let url = self.url();
        let uri: http::Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| ApiServerError::BadObject(e.to_string()))?;
        let mut config = kube::Config::new(uri);
        rollcache::history::sources::tune_client_config(&mut config);
        kube::Client::try_from(config).map_err(|source| ApiServerError::Client { url, source })
    }

    /// Creates or replaces an object (JSON with apiVersion, kind, metadata.name; namespace defaults
    /// to `default`). Sets uid and creationTimestamp on create and a new resourceVersion always,
    /// from one counter shared by all kinds, as etcd does. Returns the stored object.
    pub fn apply(&self, mut obj: Value) -> Result<Value, ApiServerError> {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default().to_string();
        let kind = obj["kind"].as_str().unwrap_or_default().to_string();
        let res = resource_by_kind(&api_version, &kind).ok_or_else(|| {
            ApiServerError::BadObject(format!("{api_version} {kind} is not served"))
        })?;
        let def = &RESOURCES[res];
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ApiServerError::BadObject("metadata.name is missing".into()))?
            .to_string();
        if !obj["metadata"].is_object() {
            return Err(ApiServerError::BadObject(
                "metadata is not an object".into(),
            ));
        }
        let namespace = if def.namespaced {
            obj.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .unwrap_or("default")
                .to_string()
        } else {
            String::new()
        };
        if kind == "Secret" && obj.get("type").is_none_or(Value::is_null) {
            obj["type"] = json!("Opaque");
        }
        let key = (res, etcd_key(def, &namespace, &name));
        let mut st = self.shared.lock();
        if def.crd && !st.crd_installed {
            return Err(ApiServerError::BadObject(format!(
                "no matches for kind \"{kind}\" in version \"{api_version}\": install the CRD first"
            )));
        }
        let prev = st.objects.get(&key).cloned();
        let meta = &mut obj["metadata"];
        if def.namespaced {
            meta["namespace"] = json!(namespace);
        }
        match &prev {
            Some(p) => {
                meta["uid"] = p["metadata"]["uid"].clone();
                meta["creationTimestamp"] = p["metadata"]["creationTimestamp"].clone();
            }
            None => {
                st.uids += 1;
                let meta = &mut obj["metadata"];
                meta["uid"] = json!(format!("00000000-0000-4000-8000-{:012x}", st.uids));
                meta["creationTimestamp"] = json!(now_rfc3339());
            }
        }
        let stored = self.shared.commit(&mut st, key, namespace, obj);
        Ok((*stored).clone())
    }

    /// Serializes a typed object (k8s-openapi types carry apiVersion and kind) and applies it.
    pub fn apply_object<K: serde::Serialize>(&self, obj: &K) -> Result<Value, ApiServerError> {
        self.apply(serde_json::to_value(obj).map_err(ApiServerError::Serialize)?)
    }

    /// Deletes an object by kind (`Pod`, `ReplicaSet`, ...), namespace ("" for cluster-scoped) and
    /// name, and only it: what it owns stays, so a test sets the scene exactly (a DELETE through
    /// the API takes dependents with it, as the garbage collector would). Returns whether it
    /// existed.
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) -> bool {
        let Some(res) = RESOURCES.iter().position(|r| r.kind == kind) else {
            return false;
        };
        let def = &RESOURCES[res];
        let namespace = if def.namespaced { namespace } else { "" };
        let key = (res, etcd_key(def, namespace, name));
        let mut st = self.shared.lock();
        self.shared
            .remove(&mut st, &key, namespace, false)
            .is_some()
    }

    /// Installs rollcache's CustomResourceDefinitions, as `kubectl apply` of them would: from now
    /// on `rollcachenodes` and `rollcacheinventories` are served and discovered. Before, their
    /// paths answer 404 as on a cluster without the CRDs.
    pub fn install_rollcache_crd(&self) {
        let mut st = self.shared.lock();
        st.crd_installed = true;
    }

    /// Removes the CRD: its objects are deleted (watchers see DELETED) and its paths answer 404.
    pub fn uninstall_rollcache_crd(&self) {
        let mut st = self.shared.lock();
        let keys: Vec<ObjKey> = st
            .objects
            .keys()
            .filter(|(r, _)| RESOURCES[*r].crd)
            .cloned()
            .collect();
        for key in keys {
            // Namespaced objects are keyed `namespace/name`; watchers filter on the namespace.
            let namespace = match key.1.split_once('/') {
                Some((ns, _)) if RESOURCES[key.0].namespaced => ns.to_owned(),
                _ => String::new(),
            };
            self.shared.remove(&mut st, &key, &namespace, false);
        }
        st.crd_installed = false;
    }

    pub fn rollcache_crd_installed(&self) -> bool {
        self.shared.lock().crd_installed
    }
}

impl ApiServer {
    /// Forgets the change history: watches and continue tokens from any resource version older
    /// than the current one get `410 Expired` from now on. Running watches are not disturbed.
    pub fn compact(&self) {
        let mut st = self.shared.lock();
        st.floor = st.rv;
    }

    /// Simulates an outage: while down, connections are closed without an answer (clients see
    /// the connection refused or reset) and streams in progress are cut.
    pub fn set_down(&self, down: bool) {
        self.shared.down_tx.send_modify(|o| {
            o.down = down;
            o.epoch += 1;
        });
    }

    /// Makes every resource misbehave as `fault` says (None: answer normally again). A fault set
    /// for one resource with [`ApiServer::set_resource_fault`] takes precedence.
    pub fn set_fault(&self, fault: Option<Fault>) {
        self.shared.faults_tx.send_modify(|f| f.global = fault);
    }

    /// Makes one resource, by its plural (`secrets`, `replicasets`, ...; the first served with it)
    /// or its `plural.group` (`events.events.k8s.io`), misbehave as `fault` says (None: back to
    /// the global behaviour). Panics on a resource that is not served, as a test naming one has a
    /// typo.
    pub fn set_resource_fault(&self, plural: &str, fault: Option<Fault>) {
        let res = RESOURCES
            .iter()
            .position(|r| r.plural == plural || r.qualified() == plural)
            .unwrap_or_else(|| panic!("the test API server does not serve `{plural}`"));
        self.shared.faults_tx.send_modify(|f| match fault {
            Some(fault) => {
                f.per_resource.insert(res, fault);
            }
            None => {
                f.per_resource.remove(&res);
            }
        });
    }

    /// Closes every open connection (watches in progress end abruptly) without refusing new ones,
    /// like a load balancer or network blip would.
    pub fn cut_connections(&self) {
        self.shared.down_tx.send_modify(|o| o.epoch += 1);
    }

    /// The newest resource version.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// An object as stored, by kind, namespace and name.
    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let res = RESOURCES.iter().position(|r| r.kind == kind)?;
        let def = &RESOURCES[res];
        let namespace = if def.namespaced { namespace } else { "" };
        let st = self.shared.lock();
        st.objects
            .get(&(res, etcd_key(def, namespace, name)))
            .map(|v| (**v).clone())
    }

    pub fn request_count(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    pub fn bytes_served(&self) -> u64 {
        self.shared.bytes.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> ApiServerStats {
        ApiServerStats {
            requests: self.shared.requests.load(Ordering::Relaxed),
            watch_requests: self.shared.watch_requests.load(Ordering::Relaxed),
            bytes: self.shared.bytes.load(Ordering::Relaxed),
        }
    }

    pub fn reset_stats(&self) {
        self.shared.requests.store(0, Ordering::Relaxed);
        self.shared.watch_requests.store(0, Ordering::Relaxed);
        self.shared.bytes.store(0, Ordering::Relaxed);
    }
}

/// How kube-rs addresses rollcache's custom resource (`Api::all_with(client, &this)`).
pub fn rollcache_node_resource() -> kube::api::ApiResource {
    let gvk = kube::api::GroupVersionKind::gvk(ROLLCACHE_GROUP, ROLLCACHE_VERSION, "RollcacheNode");
    kube::api::ApiResource::from_gvk_with_plural(&gvk, "rollcachenodes")
}

/// The `RollcacheInventory` resource (the fleet inventory's shards) for a `DynamicObject` API.
pub fn rollcache_inventory_resource() -> kube::api::ApiResource {
    let gvk =
        kube::api::GroupVersionKind::gvk(ROLLCACHE_GROUP, ROLLCACHE_VERSION, "RollcacheInventory");
    kube::api::ApiResource::from_gvk_with_plural(&gvk, "rollcacheinventories")
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

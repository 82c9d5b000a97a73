//! An in-process Kubernetes API server on 127.0.0.1 speaking the real list/watch wire protocol,
//! so that production kube-rs code (`Api`, `watcher`) runs against it unchanged.
//!
//! It serves GET, list (selectors, `limit`/`continue`) and watch (ordered events, bookmarks,
//! `timeoutSeconds`, `410 Expired` for resource versions older than its retained window) for the
//! resources rollcache reads. Objects are put in place with [`ApiServer::apply`] and
//! [`ApiServer::delete`]; [`ApiServer::compact`] and [`ApiServer::set_down`] provoke what a real
//! cluster does under stress, and [`ApiServer::set_fault`] / [`ApiServer::set_resource_fault`]
//! make it misbehave at the HTTP level ([`Fault`]: RBAC denial, throttling, server errors, hangs,
//! broken watches). Byte and request counters let benchmarks measure watch traffic.

mod selector;

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use base64::Engine as _;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

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
}

impl Default for ApiServerOptions {
    fn default() -> Self {
        Self {
            bookmark_interval: Duration::from_secs(5),
            retained_events: 100_000,
        }
    }
}

/// A served resource.
#[derive(Debug)]
struct ResourceDef {
    group: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    /// Field selector labels besides `metadata.name` / `metadata.namespace`.
    fields: &'static [&'static str],
}

impl ResourceDef {
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            "v1".to_string()
        } else {
            format!("{}/v1", self.group)
        }
    }

    /// `pods` or `replicasets.apps`, as NotFound messages name it.
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

const RESOURCES: &[ResourceDef] = &[
    ResourceDef {
        group: "",
        plural: "pods",
        kind: "Pod",
        namespaced: true,
        fields: &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
    },
    ResourceDef {
        group: "",
        plural: "secrets",
        kind: "Secret",
        namespaced: true,
        fields: &["type"],
    },
    ResourceDef {
        group: "",
        plural: "configmaps",
        kind: "ConfigMap",
        namespaced: true,
        fields: &[],
    },
    ResourceDef {
        group: "",
        plural: "nodes",
        kind: "Node",
        namespaced: false,
        fields: &["spec.unschedulable"],
    },
    ResourceDef {
        group: "",
        plural: "serviceaccounts",
        kind: "ServiceAccount",
        namespaced: true,
        fields: &[],
    },
    ResourceDef {
        group: "",
        plural: "namespaces",
        kind: "Namespace",
        namespaced: false,
        fields: &["status.phase"],
    },
    ResourceDef {
        group: "apps",
        plural: "replicasets",
        kind: "ReplicaSet",
        namespaced: true,
        fields: &["status.replicas"],
    },
    ResourceDef {
        group: "apps",
        plural: "controllerrevisions",
        kind: "ControllerRevision",
        namespaced: true,
        fields: &[],
    },
    ResourceDef {
        group: "apps",
        plural: "deployments",
        kind: "Deployment",
        namespaced: true,
        fields: &[],
    },
    ResourceDef {
        group: "apps",
        plural: "statefulsets",
        kind: "StatefulSet",
        namespaced: true,
        fields: &[],
    },
    ResourceDef {
        group: "apps",
        plural: "daemonsets",
        kind: "DaemonSet",
        namespaced: true,
        fields: &[],
    },
];

fn resource_by_kind(api_version: &str, kind: &str) -> Option<usize> {
    RESOURCES
        .iter()
        .position(|r| r.kind == kind && r.api_version() == api_version)
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
}

/// How the server misbehaves, for every resource or for one; set with [`ApiServer::set_fault`] or
/// [`ApiServer::set_resource_fault`], lifted with `None`. Watches open when a fault is set end (or
/// stall, for [`Fault::Hang`]), so that clients meet the fault when they watch again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Every request is answered with a `Status` of this code, as the real server words it:
    /// 403 Forbidden (RBAC denied), 429 TooManyRequests (with `Retry-After`), 500 InternalError,
    /// 503 ServiceUnavailable; other codes get a generic reason.
    Status(u16),
    /// Requests are accepted and not answered, and open watches stall (no events, no bookmarks)
    /// until the fault is lifted; then waiting requests are answered and stalled watches close.
    Hang,
    /// Lists and gets answer normally; every watch request fails with a `Status` of this code.
    /// 410 comes as the real server sends it (an `ERROR` event `Expired` in a 200 stream), which
    /// makes clients re-list: lists keep succeeding while watches never do.
    WatchesFail(u16),
    /// Lists and gets answer normally; every watch is answered 200 and closed at once, empty.
    WatchesClosed,
}

/// The faults in force: per resource (by index), else global.
#[derive(Clone, Debug, Default)]
struct Faults {
    global: Option<Fault>,
    per_resource: BTreeMap<usize, Fault>,
}

impl Faults {
    fn for_resource(&self, resource: usize) -> Option<&Fault> {
        self.per_resource.get(&resource).or(self.global.as_ref())
    }
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
            state: Mutex::new(State::default()),
            rv_tx: watch::channel(0).0,
            down_tx: watch::channel(Outage::default()).0,
            faults_tx: watch::channel(Faults::default()).0,
            shutdown: CancellationToken::new(),
            opts,
            requests: AtomicU64::new(0),
            watch_requests: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        });
        tokio::spawn(accept_loop(listener, shared.clone()));
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
        st.rv += 1;
        let rv = st.rv;
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
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let stored = Arc::new(obj);
        st.objects.insert(key, stored.clone());
        let kind = if prev.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.record(&mut st, res, namespace, kind, stored.clone(), prev);
        drop(st);
        self.shared.rv_tx.send_replace(rv);
        Ok((*stored).clone())
    }

    /// Serializes a typed object (k8s-openapi types carry apiVersion and kind) and applies it.
    pub fn apply_object<K: serde::Serialize>(&self, obj: &K) -> Result<Value, ApiServerError> {
        self.apply(serde_json::to_value(obj).map_err(ApiServerError::Serialize)?)
    }

    /// Deletes an object by kind (`Pod`, `ReplicaSet`, ...), namespace ("" for cluster-scoped) and
    /// name. Returns whether it existed.
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) -> bool {
        let Some(res) = RESOURCES.iter().position(|r| r.kind == kind) else {
            return false;
        };
        let def = &RESOURCES[res];
        let namespace = if def.namespaced { namespace } else { "" };
        let key = (res, etcd_key(def, namespace, name));
        let mut st = self.shared.lock();
        let Some(prev) = st.objects.remove(&key) else {
            return false;
        };
        st.rv += 1;
        let rv = st.rv;
        // A DELETED event carries the object at the deletion's resource version.
        let mut gone = (*prev).clone();
        gone["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.record(
            &mut st,
            res,
            namespace.to_string(),
            EventType::Deleted,
            Arc::new(gone),
            Some(prev),
        );
        drop(st);
        self.shared.rv_tx.send_replace(rv);
        true
    }

    fn record(
        &self,
        st: &mut State,
        resource: usize,
        namespace: String,
        kind: EventType,
        object: Arc<Value>,
        prev: Option<Arc<Value>>,
    ) {
        let rv = st.rv;
        st.events.push_back(StoredEvent {
            rv,
            resource,
            namespace,
            kind,
            object,
            prev,
        });
        while st.events.len() > self.shared.opts.retained_events {
            if let Some(old) = st.events.pop_front() {
                st.floor = st.floor.max(old.rv);
            }
        }
    }

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

    /// Makes one resource, by its plural (`secrets`, `replicasets`, ...), misbehave as `fault`
    /// says (None: back to the global behaviour). Panics on a resource that is not served, as a
    /// test naming one has a typo.
    pub fn set_resource_fault(&self, plural: &str, fault: Option<Fault>) {
        let res = RESOURCES
            .iter()
            .position(|r| r.plural == plural)
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

fn etcd_key(def: &ResourceDef, namespace: &str, name: &str) -> String {
    if def.namespaced {
        format!("{namespace}/{name}")
    } else {
        name.to_string()
    }
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let sock = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok((sock, _)) => sock,
                Err(e) => {
                    tracing::debug!(error = %e, "test API server accept failed");
                    continue;
                }
            },
        };
        let epoch = {
            let o = shared.down_tx.borrow();
            if o.down {
                drop(sock);
                continue;
            }
            o.epoch
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut down = shared.down_tx.subscribe();
            let svc_shared = shared.clone();
            let svc = hyper::service::service_fn(move |req| {
                let shared = svc_shared.clone();
                async move { Ok::<_, Infallible>(handle(shared, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(sock), svc);
            // Dropping the connection future closes the socket: that is how an outage cuts streams.
            tokio::select! {
                r = conn => if let Err(e) = r { tracing::debug!(error = %e, "test API server connection ended") },
                _ = async { let _ = down.wait_for(|o| o.down || o.epoch != epoch).await; } => {}
                _ = shared.shutdown.cancelled() => {}
            }
        });
    }
}

fn json_response(shared: &Shared, code: StatusCode, body: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    shared
        .bytes
        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(bytes))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// A `Status` object as the real server sends for failures.
fn status(code: u16, reason: &str, message: &str, details: Option<Value>) -> Value {
    let mut s = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    });
    if let Some(d) = details {
        s["details"] = d;
    }
    s["code"] = json!(code);
    s
}

fn status_response(
    shared: &Shared,
    code: StatusCode,
    reason: &str,
    message: &str,
) -> Response<Body> {
    json_response(shared, code, &status(code.as_u16(), reason, message, None))
}

/// What a request path names.
struct Target {
    resource: usize,
    namespace: Option<String>,
    name: Option<String>,
}

fn route(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, "v1", rest @ ..] => (*group, rest),
        _ => return None,
    };
    let (namespace, plural, name) = match rest {
        [plural] => (None, *plural, None),
        ["namespaces", ns, plural] => (Some(*ns), *plural, None),
        ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name)),
        [plural, name] => (None, *plural, Some(*name)),
        _ => return None,
    };
    let resource = RESOURCES
        .iter()
        .position(|r| r.group == group && r.plural == plural)?;
    let def = &RESOURCES[resource];
    // `/api/v1/namespaces/NAME` is a Namespace; a namespaced kind needs its namespace for a name.
    if name.is_some() && def.namespaced != namespace.is_some() {
        return None;
    }
    if namespace.is_some() && !def.namespaced {
        return None;
    }
    Some(Target {
        resource,
        namespace: namespace.map(str::to_string),
        name: name.map(str::to_string),
    })
}

fn query_params(req: &Request<Incoming>) -> BTreeMap<String, String> {
    let q = req.uri().query().unwrap_or("");
    serde_urlencoded_pairs(q)
}

fn serde_urlencoded_pairs(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    shared.requests.fetch_add(1, Ordering::Relaxed);
    let path = req.uri().path().to_string();
    if path == "/version" {
        return json_response(
            &shared,
            StatusCode::OK,
            &json!({"major": "1", "minor": "35", "gitVersion": "v1.35.0-rollcache-testbed", "platform": "linux/amd64"}),
        );
    }
    let Some(target) = route(&path) else {
        let body = b"404 page not found\n".to_vec();
        shared.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
        return Response::builder()
            .status(StatusCode::NOT_FOUND)
            .header("content-type", "text/plain; charset=utf-8")
            .body(Body::from(body))
            .unwrap_or_else(|_| Response::new(Body::empty()));
    };
    if req.method() != Method::GET {
        return status_response(
            &shared,
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!(
                "the server does not allow this method on the requested resource ({})",
                req.method()
            ),
        );
    }
    let params = query_params(&req);
    let is_watch = params.get("watch").is_some_and(|w| w == "true" || w == "1");
    if is_watch {
        shared.watch_requests.fetch_add(1, Ordering::Relaxed);
    }
    if let Some(r) = fault_response(&shared, target.resource, is_watch).await {
        return r;
    }
    let def = &RESOURCES[target.resource];
    if let Some(name) = &target.name {
        return get_one(&shared, &target, def, name);
    }
    let labels = match LabelSelector::parse(params.get("labelSelector").map_or("", String::as_str))
    {
        Ok(s) => s,
        Err(e) => return status_response(&shared, StatusCode::BAD_REQUEST, "BadRequest", &e),
    };
    let fields = match FieldSelector::parse(
        params.get("fieldSelector").map_or("", String::as_str),
        def.fields,
    ) {
        Ok(s) => s,
        Err(e) => return status_response(&shared, StatusCode::BAD_REQUEST, "BadRequest", &e),
    };
    let filter = Filter {
        resource: target.resource,
        namespace: target.namespace.clone(),
        labels,
        fields,
    };
    if is_watch {
        return start_watch(shared, filter, &params);
    }
    list(&shared, &filter, &params)
}

/// The answer a fault in force gives instead of the normal one, after waiting out a hang.
async fn fault_response(
    shared: &Shared,
    resource: usize,
    is_watch: bool,
) -> Option<Response<Body>> {
    let mut faults = shared.faults_tx.subscribe();
    let fault = loop {
        let fault = faults.borrow_and_update().for_resource(resource).cloned();
        if fault != Some(Fault::Hang) {
            break fault;
        }
        tokio::select! {
            r = faults.changed() => if r.is_err() { return None },
            _ = shared.shutdown.cancelled() => return None,
        }
    };
    let def = &RESOURCES[resource];
    match fault? {
        Fault::Status(code) => Some(fault_status(shared, def, code)),
        Fault::WatchesFail(410) if is_watch => {
            let msg = "The resourceVersion for the provided watch is too old.";
            let line = event_line("ERROR", &status(410, "Expired", msg, None));
            shared.bytes.fetch_add(line.len() as u64, Ordering::Relaxed);
            Some(
                Response::builder()
                    .status(StatusCode::OK)
                    .header("content-type", "application/json")
                    .body(Body::from(line))
                    .unwrap_or_else(|_| Response::new(Body::empty())),
            )
        }
        Fault::WatchesFail(code) if is_watch => Some(fault_status(shared, def, code)),
        Fault::WatchesClosed if is_watch => Some(
            Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/json")
                .body(Body::empty())
                .unwrap_or_else(|_| Response::new(Body::empty())),
        ),
        Fault::Hang | Fault::WatchesFail(_) | Fault::WatchesClosed => None,
    }
}

/// A failure `Status` worded as the real server words it for `code`.
fn fault_status(shared: &Shared, def: &ResourceDef, code: u16) -> Response<Body> {
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut details = json!({"kind": def.plural});
    if !def.group.is_empty() {
        details["group"] = json!(def.group);
    }
    let (reason, message) = match code.as_u16() {
        403 => (
            "Forbidden",
            format!(
                "{} is forbidden: User \"system:serviceaccount:rollcache:rollcache\" cannot list resource \"{}\" in API group \"{}\" at the cluster scope",
                def.qualified(),
                def.plural,
                def.group
            ),
        ),
        429 => {
            details["retryAfterSeconds"] = json!(1);
            (
                "TooManyRequests",
                "the server has received too many requests and has asked us to try again later"
                    .to_string(),
            )
        }
        500 => (
            "InternalError",
            "Internal error occurred: etcdserver: request timed out".to_string(),
        ),
        503 => (
            "ServiceUnavailable",
            "the server is currently unable to handle the request".to_string(),
        ),
        410 => ("Expired", "too old resource version".to_string()),
        _ => ("Unknown", format!("the server answered {code}")),
    };
    let body = status(code.as_u16(), reason, &message, Some(details));
    let mut resp = json_response(shared, code, &body);
    if code == StatusCode::TOO_MANY_REQUESTS {
        resp.headers_mut()
            .insert("retry-after", http::HeaderValue::from_static("1"));
    }
    resp
}

fn get_one(shared: &Shared, target: &Target, def: &ResourceDef, name: &str) -> Response<Body> {
    let key = (
        target.resource,
        etcd_key(def, target.namespace.as_deref().unwrap_or(""), name),
    );
    let found = shared.lock().objects.get(&key).cloned();
    match found {
        Some(obj) => json_response(shared, StatusCode::OK, &obj),
        None => {
            let mut details = json!({"name": name});
            if !def.group.is_empty() {
                details["group"] = json!(def.group);
            }
            details["kind"] = json!(def.plural);
            let msg = format!("{} \"{name}\" not found", def.qualified());
            json_response(
                shared,
                StatusCode::NOT_FOUND,
                &status(404, "NotFound", &msg, Some(details)),
            )
        }
    }
}

struct Filter {
    resource: usize,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn in_scope(&self, resource: usize, namespace: &str) -> bool {
        resource == self.resource && self.namespace.as_deref().is_none_or(|ns| ns == namespace)
    }

    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    v: String,
    rv: u64,
    start: String,
}

fn list(shared: &Shared, filter: &Filter, params: &BTreeMap<String, String>) -> Response<Body> {
    let def = &RESOURCES[filter.resource];
    let limit = params
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let token = match params.get("continue").filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => match base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(c.trim_end_matches('='))
            .ok()
            .and_then(|b| serde_json::from_slice::<ContinueToken>(&b).ok())
        {
            Some(t) => Some(t),
            None => {
                return status_response(
                    shared,
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
                );
            }
        },
    };
    let st = shared.lock();
    if let Some(t) = &token
        && t.rv < st.floor
    {
        drop(st);
        return status_response(
            shared,
            StatusCode::GONE,
            "Expired",
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
        );
    }
    if params.get("resourceVersionMatch").map(String::as_str) == Some("Exact")
        && let Some(rv) = params
            .get("resourceVersion")
            .and_then(|r| r.parse::<u64>().ok())
        && rv < st.floor
    {
        let floor = st.floor;
        drop(st);
        return status_response(
            shared,
            StatusCode::GONE,
            "Expired",
            &format!("The resourceVersion for the provided list is too old. ({rv} < {floor})"),
        );
    }
    // Pages after the first report the first page's resourceVersion so that a watch started from
    // it replays whatever changed meanwhile (events are idempotent for clients).
    let list_rv = token.as_ref().map_or(st.rv, |t| t.rv);
    let prefix_ns = filter.namespace.as_ref().map(|ns| format!("{ns}/"));
    // The token's start key is relative to the list's prefix (`/name` within a namespace,
    // `/ns/name` across namespaces), as the real server writes it.
    let start = token.as_ref().map(|t| {
        let rel = t.start.strip_prefix('/').unwrap_or(&t.start);
        format!("{}{rel}", prefix_ns.as_deref().unwrap_or(""))
    });
    let lower = (filter.resource, start.unwrap_or_default());
    let mut items = Vec::new();
    let mut last_key = None;
    let mut more = false;
    let mut remaining = 0u64;
    for ((res, key), obj) in st.objects.range(lower..) {
        if *res != filter.resource {
            break;
        }
        if let Some(p) = &prefix_ns
            && !key.starts_with(p.as_str())
        {
            continue;
        }
        if !filter.matches(obj) {
            continue;
        }
        if limit.is_some_and(|l| items.len() >= l) {
            more = true;
            remaining += 1;
            continue;
        }
        let mut item = (**obj).clone();
        // Items of a list carry no kind/apiVersion, as the real server encodes them.
        if let Some(m) = item.as_object_mut() {
            m.remove("kind");
            m.remove("apiVersion");
        }
        items.push(item);
        last_key = Some(key.clone());
    }
    drop(st);
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if more && let Some(last) = last_key {
        let rel = prefix_ns
            .as_deref()
            .and_then(|p| last.strip_prefix(p))
            .unwrap_or(&last);
        let token = ContinueToken {
            v: "meta.k8s.io/v1".into(),
            rv: list_rv,
            start: format!("/{rel}\u{0}"),
        };
        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&token).unwrap_or_default());
        metadata["continue"] = json!(encoded);
        if filter.labels.is_empty() && filter.fields.is_empty() {
            metadata["remainingItemCount"] = json!(remaining);
        }
    }
    let body = json!({
        "kind": format!("{}List", def.kind),
        "apiVersion": def.api_version(),
        "metadata": metadata,
        "items": items,
    });
    json_response(shared, StatusCode::OK, &body)
}

/// An empty object of the resource's kind carrying only a resourceVersion, as bookmarks do.
/// Go encodes the non-omitempty fields of an empty object too; the shapes are copied from a real
/// API server (1.36).
fn bookmark_object(def: &ResourceDef, rv: u64, initial_end: bool) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let mut obj = json!({"kind": def.kind, "apiVersion": def.api_version(), "metadata": meta});
    let template = json!({"metadata": {}, "spec": {"containers": null}});
    match def.kind {
        "Pod" => {
            obj["spec"] = json!({"containers": null});
            obj["status"] = json!({});
        }
        "ReplicaSet" => {
            obj["spec"] = json!({"selector": null, "template": template});
            obj["status"] = json!({"replicas": 0});
        }
        "Deployment" | "DaemonSet" => {
            obj["spec"] = json!({"selector": null, "template": template});
            obj["status"] = json!({});
        }
        "StatefulSet" => {
            obj["spec"] = json!({"selector": null, "template": template, "serviceName": ""});
            obj["status"] = json!({"replicas": 0});
        }
        "ControllerRevision" => {
            obj["data"] = Value::Null;
            obj["revision"] = json!(0);
        }
        "Node" => {
            obj["spec"] = json!({});
            obj["status"] = json!({
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
                "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "",
                    "osImage": "", "containerRuntimeVersion": "", "kubeletVersion": "",
                    "kubeProxyVersion": "", "operatingSystem": "", "architecture": ""},
            });
        }
        "Namespace" => {
            obj["spec"] = json!({});
            obj["status"] = json!({});
        }
        _ => {}
    }
    obj
}

fn event_line(kind: &str, object: &Value) -> Vec<u8> {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    line.push(b'\n');
    line
}

fn start_watch(
    shared: Arc<Shared>,
    filter: Filter,
    params: &BTreeMap<String, String>,
) -> Response<Body> {
    let rv_param = params.get("resourceVersion").cloned().unwrap_or_default();
    let start_rv = if rv_param.is_empty() || rv_param == "0" {
        None
    } else {
        match rv_param.parse::<u64>() {
            Ok(rv) => Some(rv),
            Err(_) => {
                return status_response(
                    &shared,
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("resourceVersion: Invalid value: \"{rv_param}\": must be a number"),
                );
            }
        }
    };
    let opts = WatchOpts {
        start_rv,
        bookmarks: params
            .get("allowWatchBookmarks")
            .is_some_and(|b| b == "true" || b == "1"),
        send_initial_events: params.get("sendInitialEvents").is_some_and(|b| b == "true"),
        timeout: params
            .get("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .map(Duration::from_secs),
    };
    let (tx, rx) = mpsc::channel::<Result<Vec<u8>, std::io::Error>>(64);
    tokio::spawn(watch_loop(shared, filter, opts, tx));
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(body)
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

struct WatchOpts {
    start_rv: Option<u64>,
    bookmarks: bool,
    send_initial_events: bool,
    timeout: Option<Duration>,
}

type WatchTx = mpsc::Sender<Result<Vec<u8>, std::io::Error>>;

async fn send(shared: &Shared, tx: &WatchTx, line: Vec<u8>) -> bool {
    shared.bytes.fetch_add(line.len() as u64, Ordering::Relaxed);
    tx.send(Ok(line)).await.is_ok()
}

async fn watch_loop(shared: Arc<Shared>, filter: Filter, opts: WatchOpts, tx: WatchTx) {
    let def = &RESOURCES[filter.resource];
    let mut changes = shared.rv_tx.subscribe();
    changes.borrow_and_update();
    let mut faults = shared.faults_tx.subscribe();
    faults.borrow_and_update();
    let deadline = tokio::time::sleep(opts.timeout.unwrap_or(Duration::from_secs(24 * 3600)));
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + shared.opts.bookmark_interval,
        shared.opts.bookmark_interval,
    );

    // Where to start: an explicit resource version, or "now" after synthetic ADDED events for what
    // exists (resourceVersion absent or "0", as the real server does).
    let mut last = match opts.start_rv {
        Some(rv) => {
            let floor = shared.lock().floor;
            if rv < floor {
                let msg = format!("too old resource version: {rv} ({floor})");
                let _ = send(
                    &shared,
                    &tx,
                    event_line("ERROR", &status(410, "Expired", &msg, None)),
                )
                .await;
                return;
            }
            rv
        }
        None => {
            let (objs, rv) = {
                let st = shared.lock();
                let objs: Vec<Arc<Value>> = st
                    .objects
                    .iter()
                    .filter(|((res, _), obj)| {
                        let ns = obj
                            .pointer("/metadata/namespace")
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        filter.in_scope(*res, ns) && filter.matches(obj)
                    })
                    .map(|(_, o)| o.clone())
                    .collect();
                (objs, st.rv)
            };
            for o in objs {
                if !send(&shared, &tx, event_line("ADDED", &o)).await {
                    return;
                }
            }
            if opts.send_initial_events && opts.bookmarks {
                let bm = bookmark_object(def, rv, true);
                if !send(&shared, &tx, event_line("BOOKMARK", &bm)).await {
                    return;
                }
            }
            rv
        }
    };

    loop {
        changes.borrow_and_update();
        let (batch, current, lost) = {
            let st = shared.lock();
            let first = st.events.partition_point(|e| e.rv <= last);
            // Events this watch has not seen were dropped from the window: it cannot continue.
            // (every resource version has exactly one event, so a gap means events were dropped).
            let lost = st.events.front().is_some_and(|e| e.rv > last + 1);
            let batch: Vec<(EventType, Arc<Value>, Option<Arc<Value>>)> = st
                .events
                .range(first..)
                .filter(|e| filter.in_scope(e.resource, &e.namespace))
                .map(|e| (e.kind, e.object.clone(), e.prev.clone()))
                .collect();
            (batch, st.rv, lost.then_some(st.floor))
        };
        if let Some(floor) = lost {
            let msg = format!("too old resource version: {last} ({floor})");
            let _ = send(
                &shared,
                &tx,
                event_line("ERROR", &status(410, "Expired", &msg, None)),
            )
            .await;
            return;
        }
        for (kind, obj, prev) in batch {
            let now = filter.matches(&obj);
            let before = prev.as_deref().is_some_and(|p| filter.matches(p));
            // Selector transitions: entering is ADDED, leaving is DELETED, as the real server does.
            let ty = match kind {
                EventType::Added if now => "ADDED",
                EventType::Modified if now && before => "MODIFIED",
                EventType::Modified if now => "ADDED",
                EventType::Modified if before => "DELETED",
                EventType::Deleted if before => "DELETED",
                _ => continue,
            };
            if !send(&shared, &tx, event_line(ty, &obj)).await {
                return;
            }
        }
        last = current;
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = tick.tick(), if opts.bookmarks => {
                if !send(&shared, &tx, event_line("BOOKMARK", &bookmark_object(def, last, false))).await {
                    return;
                }
            }
            _ = &mut deadline => {
                // The real server sends a last bookmark as the watch times out, so that the
                // client resumes from the newest resource version.
                if opts.bookmarks {
                    let _ = send(&shared, &tx, event_line("BOOKMARK", &bookmark_object(def, last, false))).await;
                }
                return;
            }
            r = faults.changed() => {
                if r.is_err() {
                    return;
                }
                let fault = faults.borrow_and_update().for_resource(filter.resource).cloned();
                match fault {
                    None => {}
                    // Stalled: nothing more until the fault is lifted, then the stream ends.
                    Some(Fault::Hang) => {
                        tokio::select! {
                            _ = faults.wait_for(|f| f.for_resource(filter.resource) != Some(&Fault::Hang)) => {}
                            _ = shared.shutdown.cancelled() => {}
                            _ = tx.closed() => {}
                        }
                        return;
                    }
                    // The client watches again and meets the fault.
                    Some(_) => return,
                }
            }
            _ = shared.shutdown.cancelled() => return,
            _ = tx.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let t = route("/api/v1/pods").expect("pods");
        assert_eq!(RESOURCES[t.resource].kind, "Pod");
        assert!(t.namespace.is_none() && t.name.is_none());
        let t = route("/apis/apps/v1/namespaces/ns/replicasets/web-1").expect("rs");
        assert_eq!(RESOURCES[t.resource].kind, "ReplicaSet");
        assert_eq!(t.namespace.as_deref(), Some("ns"));
        assert_eq!(t.name.as_deref(), Some("web-1"));
        let t = route("/api/v1/nodes/n1").expect("node");
        assert_eq!(t.name.as_deref(), Some("n1"));
        assert!(route("/api/v1/namespaces/ns/nodes").is_none());
        assert!(route("/api/v1/pods/x").is_none());
        assert!(route("/apis/apps/v1/widgets").is_none());
    }

    #[test]
    fn query_decoding() {
        let q =
            serde_urlencoded_pairs("labelSelector=owner%3Dhelm%2Ctier+in+%28a%2Cb%29&watch=true&x");
        assert_eq!(q["labelSelector"], "owner=helm,tier in (a,b)");
        assert_eq!(q["watch"], "true");
        assert_eq!(q["x"], "");
    }
}

//! Where the Kubernetes figures' history lives: a fresh in-test API server per history, or — when
//! `KUBECONFIG` points at one — a real API server, where each history is a set of namespaces of
//! its own (`<run>-<history>-<name>`), every object labelled with the run, deleted afterwards.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use rollcache::config::Config;
use rollcache::history::watch::{HELM_OWNER_SELECTOR, HELM_SECRET_TYPE_SELECTOR};
use rollcache_testbed::apiserver::ApiServer;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::bed;

/// The label every object and namespace the benchmark creates on a real server carries; its value
/// is the run's id, which also prefixes the namespaces.
pub const RUN_LABEL: &str = "rollcache.io/bench-run";

/// Objects created at once through a real API server.
pub const IN_FLIGHT: usize = 16;

/// Which API server the Kubernetes figures are taken against.
#[derive(Clone)]
pub enum Target {
    /// `rollcache_testbed::apiserver::ApiServer`, a fresh one per history.
    InTest,
    /// The API server `KUBECONFIG` points at.
    Real(Arc<RealApi>),
}

impl Target {
    /// Appended to section titles.
    pub fn title(&self) -> String {
        match self {
            Target::InTest => String::new(),
            Target::Real(r) => format!(" (real API server: {}, version {})", r.url, r.version),
        }
    }

    /// Appended to target names.
    pub fn check_suffix(&self) -> &'static str {
        match self {
            Target::InTest => "",
            Target::Real(_) => " (real API server)",
        }
    }

    pub fn is_real(&self) -> bool {
        matches!(self, Target::Real(_))
    }
}

/// A real API server, reached with the user's `KUBECONFIG`.
pub struct RealApi {
    client: kube::Client,
    /// The user's `KUBECONFIG`, passed on unchanged to child processes when no proxy is used.
    kubeconfig: OsString,
    pub url: String,
    pub version: String,
    /// This run's id: namespace prefix and value of `RUN_LABEL`.
    pub run: String,
    /// The daemon watches cluster-wide (as the DaemonSet does by default) when the server holds
    /// no history objects of its own; otherwise only the run's namespaces.
    pub cluster_wide: bool,
    /// Why not cluster-wide, when not.
    pub other_history: Option<String>,
    /// Namespaces of earlier runs still on the server (not touched).
    pub leftovers: usize,
    /// Counts the bytes the child receives, when TLS still verifies through it.
    proxy: Result<Proxy, String>,
    /// Namespaces created and not yet deleted, for the final clean-up.
    live: Mutex<BTreeSet<String>>,
    _dir: tempfile::TempDir,
}

impl RealApi {
    /// Connects with `KUBECONFIG` and checks that the server answers and is safe to use.
    pub async fn connect(kubeconfig: OsString) -> anyhow::Result<Self> {
        let shown = kubeconfig.to_string_lossy().into_owned();
        let unset = "unset KUBECONFIG (KUBECONFIG= make bench) to take the Kubernetes figures against the in-test API server only";
        let config = kube::Config::from_kubeconfig(&KubeConfigOptions::default())
            .await
            .with_context(|| format!("KUBECONFIG={shown}: cannot load the kubeconfig; {unset}"))?;
        let url = config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_string();
        let client = kube::Client::try_from(config.clone())
            .with_context(|| format!("KUBECONFIG={shown}: cannot build a client for {url}"))?;
        let version = tokio::time::timeout(Duration::from_secs(15), client.apiserver_version())
            .await
            .map_err(|_| anyhow::anyhow!("no answer within 15 s"))
            .and_then(|r| r.map_err(anyhow::Error::from))
            .with_context(|| {
                format!("KUBECONFIG={shown} points at {url}, which does not answer GET /version; start that API server or {unset}")
            })?
            .git_version;

        // A cluster with a controller manager would act on the history as the controllers wrote
        // it: its garbage collector deletes ReplicaSets and ControllerRevisions whose owner does
        // not exist, and its ReplicaSet controller starts pods for the current ones.
        let leases: kube::Api<Lease> = kube::Api::namespaced(client.clone(), "kube-system");
        if let Ok(Some(_)) = leases.get_opt("kube-controller-manager").await {
            anyhow::bail!(
                "KUBECONFIG={shown} points at {url}, a cluster with a running controller manager \
                 (Lease kube-system/kube-controller-manager): the benchmark's ReplicaSets and \
                 ControllerRevisions, written as controllers write them, would be deleted by its \
                 garbage collector (their owners do not exist) and get pods from its ReplicaSet \
                 controller. Point KUBECONFIG at an API server without controllers, or {unset}"
            );
        }

        let run = format!("rcb-{:08x}", rand::random::<u32>());
        let other_history = other_history(&client).await?;
        let namespaces: kube::Api<Namespace> = kube::Api::all(client.clone());
        let leftovers = namespaces
            .list_metadata(&ListParams::default().labels(RUN_LABEL))
            .await
            .context("listing namespaces")?
            .items
            .len();
        let dir = tempfile::Builder::new()
            .prefix("rc-bench-kube-")
            .tempdir()?;
        let proxy = Proxy::start(&config, dir.path()).await;
        Ok(Self {
            client,
            kubeconfig,
            url,
            version,
            run,
            cluster_wide: other_history.is_none(),
            other_history,
            leftovers,
            proxy,
            live: Mutex::default(),
            _dir: dir,
        })
    }

    /// What the report says about the server and how it is used.
    pub fn describe(&self) -> Vec<String> {
        let mut out = vec![format!(
            "real API server: {} (version {}), run id {} (namespaces {}-*, label {RUN_LABEL}={}; deleted afterwards)",
            self.url, self.version, self.run, self.run, self.run
        )];
        out.push(match &self.other_history {
            None => "real API server: the daemon watches cluster-wide, as the DaemonSet does by default (the server held no other history objects)".into(),
            Some(why) => format!("real API server: the daemon watches only the run's namespaces (5 watches per namespace): the server holds other history ({why})"),
        });
        if self.leftovers > 0 {
            out.push(format!(
                "real API server: {} namespaces of earlier runs are still there (not touched; remove with kubectl delete namespace -l {RUN_LABEL})",
                self.leftovers
            ));
        }
        out.push(match &self.proxy {
            Ok(_) => "real API server: the child's traffic is counted by a TCP proxy on 127.0.0.1 in front of the server (TLS verified end to end)".into(),
            Err(why) => format!("real API server: the child's traffic is not measured ({why})"),
        });
        out
    }

    /// The client the benchmark itself uses on this server.
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// Why the child's traffic cannot be counted, if it cannot.
    pub fn proxy_error(&self) -> Option<&str> {
        self.proxy.as_ref().err().map(String::as_str)
    }

    /// Deletes whatever namespaces of this run are left (after an error).
    pub async fn cleanup(&self) {
        let left: Vec<String> = self
            .live
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default();
        let namespaces: kube::Api<Namespace> = kube::Api::all(self.client.clone());
        for ns in left {
            let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
        }
    }
}

/// Whether the server holds history objects the daemon would see cluster-wide: ReplicaSets,
/// ControllerRevisions, Pods, Helm release Secrets and ConfigMaps (with rollcache's selectors).
async fn other_history(client: &kube::Client) -> anyhow::Result<Option<String>> {
    let one = ListParams::default().limit(1);
    let helm = ListParams::default().limit(1).labels(HELM_OWNER_SELECTOR);
    let mut found = Vec::new();
    if !kube::Api::<ReplicaSet>::all(client.clone())
        .list_metadata(&one)
        .await?
        .items
        .is_empty()
    {
        found.push("ReplicaSets");
    }
    if !kube::Api::<ControllerRevision>::all(client.clone())
        .list_metadata(&one)
        .await?
        .items
        .is_empty()
    {
        found.push("ControllerRevisions");
    }
    if !kube::Api::<Pod>::all(client.clone())
        .list_metadata(&one)
        .await?
        .items
        .is_empty()
    {
        found.push("Pods");
    }
    if !kube::Api::<Secret>::all(client.clone())
        .list_metadata(&helm.clone().fields(HELM_SECRET_TYPE_SELECTOR))
        .await?
        .items
        .is_empty()
    {
        found.push("Helm release Secrets");
    }
    if !kube::Api::<ConfigMap>::all(client.clone())
        .list_metadata(&helm)
        .await?
        .items
        .is_empty()
    {
        found.push("Helm release ConfigMaps");
    }
    Ok((!found.is_empty()).then(|| found.join(", ")))
}

fn resource(kind: &str) -> Option<ApiResource> {
    Some(match kind {
        "ReplicaSet" => ApiResource::erase::<ReplicaSet>(&()),
        "ControllerRevision" => ApiResource::erase::<ControllerRevision>(&()),
        "Secret" => ApiResource::erase::<Secret>(&()),
        "ConfigMap" => ApiResource::erase::<ConfigMap>(&()),
        _ => return None,
    })
}

/// What a bulk creation did.
pub struct Filled {
    pub objects: usize,
    pub bytes: usize,
    pub took: Duration,
}

/// Network traffic of the child process' connections to the API server.
pub struct Traffic {
    pub bytes: u64,
    /// HTTP requests (known to the in-test server only).
    pub requests: Option<u64>,
    /// TCP connections (through the counting proxy only).
    pub connections: Option<u64>,
}

/// One history the daemon sees: its own in-test API server, or its own namespaces on the real one.
pub struct History {
    place: Place,
}

enum Place {
    InTest(ApiServer),
    Real {
        api: Arc<RealApi>,
        prefix: String,
        namespaces: Vec<String>,
        kinds: Mutex<BTreeSet<String>>,
        cleared: bool,
    },
}

impl History {
    /// A new, empty history named `name` with the namespaces `bases` (prefixed on a real server,
    /// where they are created now).
    pub async fn new(target: &Target, name: &str, bases: &[String]) -> anyhow::Result<Self> {
        let place = match target {
            Target::InTest => Place::InTest(ApiServer::start().await?),
            Target::Real(api) => {
                let prefix = format!("{}-{name}-", api.run);
                let namespaces: Vec<String> =
                    bases.iter().map(|b| format!("{prefix}{b}")).collect();
                let nsapi: kube::Api<Namespace> = kube::Api::all(api.client.clone());
                for ns in &namespaces {
                    let obj: Namespace = serde_json::from_value(json!({
                        "apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": ns, "labels": {RUN_LABEL: api.run}}
                    }))?;
                    nsapi
                        .create(&PostParams::default(), &obj)
                        .await
                        .with_context(|| format!("creating namespace {ns} on {}", api.url))?;
                    api.live.lock().expect("not poisoned").insert(ns.clone());
                }
                Place::Real {
                    api: api.clone(),
                    prefix,
                    namespaces,
                    kinds: Mutex::default(),
                    cleared: false,
                }
            }
        };
        Ok(Self { place })
    }

    /// The namespace to use for `base`.
    pub fn ns(&self, base: &str) -> String {
        format!("{}{base}", self.prefix())
    }

    pub fn prefix(&self) -> &str {
        match &self.place {
            Place::InTest(_) => "",
            Place::Real { prefix, .. } => prefix,
        }
    }

    pub fn client(&self) -> anyhow::Result<kube::Client> {
        Ok(match &self.place {
            Place::InTest(api) => api.client()?,
            Place::Real { api, .. } => api.client.clone(),
        })
    }

    /// Namespaces the daemon watches (empty: all).
    pub fn watch_namespaces(&self) -> Vec<String> {
        match &self.place {
            Place::Real {
                api, namespaces, ..
            } if !api.cluster_wide => namespaces.clone(),
            _ => Vec::new(),
        }
    }

    /// The daemon's configuration for this history (see `bed::bench_config`).
    pub fn config(&self, socket: &Path) -> Config {
        Config {
            namespaces: self.watch_namespaces(),
            ..bed::bench_config(socket)
        }
    }

    /// Creates one object given as Kubernetes serves it (status included: on a real server it is
    /// written through `/status` after the create, as a controller would).
    pub async fn create(&self, obj: Value) -> anyhow::Result<()> {
        match &self.place {
            Place::InTest(api) => {
                api.apply(obj)?;
                Ok(())
            }
            Place::Real {
                api,
                namespaces,
                kinds,
                ..
            } => {
                let kind = obj["kind"].as_str().unwrap_or_default().to_string();
                let ns = obj
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("default")
                    .to_string();
                anyhow::ensure!(
                    namespaces.contains(&ns),
                    "{kind} in namespace {ns}, which is not one of this history's"
                );
                let ar = resource(&kind)
                    .with_context(|| format!("{kind} is not created by the benchmark"))?;
                kinds.lock().expect("not poisoned").insert(kind.clone());
                create_real(&api.client, &api.run, &ar, &ns, obj).await
            }
        }
    }

    /// Creates every object `generate` emits; on a real server `IN_FLIGHT` at a time, with
    /// progress on stderr (`total` is the expected count, for the progress line only).
    pub async fn fill<G>(&self, what: &str, total: usize, generate: G) -> anyhow::Result<Filled>
    where
        G: FnOnce(&mut dyn FnMut(Value)) + Send + 'static,
    {
        let start = Instant::now();
        let (mut objects, mut bytes) = (0usize, 0usize);
        if let Place::InTest(api) = &self.place {
            let mut failed = None;
            generate(&mut |obj: Value| {
                objects += 1;
                bytes += obj.to_string().len();
                if let Err(e) = api.apply(obj) {
                    failed.get_or_insert(e);
                }
            });
            if let Some(e) = failed {
                return Err(e.into());
            }
            return Ok(Filled {
                objects,
                bytes,
                took: start.elapsed(),
            });
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<Value>(4 * IN_FLIGHT);
        let producer = tokio::task::spawn_blocking(move || {
            generate(&mut |obj: Value| {
                // A closed channel means creating failed; the error comes from the consumer.
                let _ = tx.blocking_send(obj);
            })
        });
        let stream =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) });
        let created = stream
            .map(|obj| async move {
                let n = obj.to_string().len();
                self.create(obj).await.map(|()| n)
            })
            .buffer_unordered(IN_FLIGHT);
        let mut created = std::pin::pin!(created);
        let mut last = Instant::now();
        while let Some(n) = created.next().await {
            bytes += n?;
            objects += 1;
            if last.elapsed() >= Duration::from_secs(10) || objects == total {
                last = Instant::now();
                let secs = start.elapsed().as_secs_f64();
                crate::progress(&format!(
                    "  {what}: {objects} / {total} objects created ({:.0} MiB) in {secs:.0} s, {:.0} objects/s",
                    bytes as f64 / (1024.0 * 1024.0),
                    objects as f64 / secs.max(0.001)
                ));
            }
        }
        producer.await?;
        Ok(Filled {
            objects,
            bytes,
            took: start.elapsed(),
        })
    }

    /// The KUBECONFIG for a child process: a file for the in-test server, the counting proxy's
    /// kubeconfig or else the user's own for a real one.
    pub fn child_kubeconfig(&self, work: &Path) -> anyhow::Result<OsString> {
        match &self.place {
            Place::InTest(api) => {
                let path = work.join("kubeconfig");
                std::fs::write(
                    &path,
                    format!(
                        "apiVersion: v1\nkind: Config\nclusters:\n- name: bench\n  cluster:\n    server: {}\nusers:\n- name: bench\n  user: {{}}\ncontexts:\n- name: bench\n  context:\n    cluster: bench\n    user: bench\ncurrent-context: bench\n",
                        api.url()
                    ),
                )?;
                Ok(path.into_os_string())
            }
            Place::Real { api, .. } => Ok(match &api.proxy {
                Ok(p) => p.kubeconfig.clone().into_os_string(),
                Err(_) => api.kubeconfig.clone(),
            }),
        }
    }

    pub fn reset_traffic(&self) {
        match &self.place {
            Place::InTest(api) => api.reset_stats(),
            Place::Real { api, .. } => {
                if let Ok(p) = &api.proxy {
                    p.counter.reset();
                }
            }
        }
    }

    /// What the child received since `reset_traffic` (None: not measurable here).
    pub fn traffic(&self) -> Option<Traffic> {
        match &self.place {
            Place::InTest(api) => {
                let s = api.stats();
                Some(Traffic {
                    bytes: s.bytes,
                    requests: Some(s.requests),
                    connections: None,
                })
            }
            Place::Real { api, .. } => api.proxy.as_ref().ok().map(|p| Traffic {
                bytes: p.counter.bytes(),
                requests: None,
                connections: Some(p.counter.connections()),
            }),
        }
    }

    /// Deletes the history: on a real server every object it created (deletecollection per
    /// namespace and kind, by the run's label), checked gone, then its namespaces.
    pub async fn clear(mut self) -> anyhow::Result<()> {
        let Place::Real {
            api,
            namespaces,
            kinds,
            cleared,
            ..
        } = &mut self.place
        else {
            return Ok(());
        };
        let selector = format!("{RUN_LABEL}={}", api.run);
        let kinds: Vec<String> = kinds
            .get_mut()
            .expect("not poisoned")
            .iter()
            .cloned()
            .collect();
        for ns in namespaces.iter() {
            for kind in &kinds {
                let ar = resource(kind).expect("created kinds are known");
                let dynapi: kube::Api<DynamicObject> =
                    kube::Api::namespaced_with(api.client.clone(), ns, &ar);
                let lp = ListParams::default().labels(&selector);
                let dp = DeleteParams::default();
                retry(|| dynapi.delete_collection(&dp, &lp))
                    .await
                    .with_context(|| format!("deleting the benchmark's {kind}s in {ns}"))?;
                let left = dynapi.list_metadata(&lp.clone().limit(1)).await?;
                anyhow::ensure!(
                    left.items.is_empty(),
                    "{kind}s of the benchmark still in {ns} after deletecollection"
                );
            }
        }
        let nsapi: kube::Api<Namespace> = kube::Api::all(api.client.clone());
        for ns in namespaces.iter() {
            match nsapi.delete(ns, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.is_not_found() => {}
                Err(e) => return Err(e).with_context(|| format!("deleting namespace {ns}")),
            }
            api.live.lock().expect("not poisoned").remove(ns);
        }
        *cleared = true;
        Ok(())
    }
}

impl Drop for History {
    fn drop(&mut self) {
        if let Place::Real {
            cleared: false,
            namespaces,
            ..
        } = &self.place
        {
            crate::progress(&format!(
                "  {} namespaces left for the final clean-up",
                namespaces.len()
            ));
        }
    }
}

async fn create_real(
    client: &kube::Client,
    run: &str,
    ar: &ApiResource,
    ns: &str,
    mut obj: Value,
) -> anyhow::Result<()> {
    obj["metadata"]["labels"][RUN_LABEL] = json!(run);
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // The API server drops status on create; controllers write it through /status.
    let status = match obj.as_object_mut() {
        Some(map) if ar.kind == "ReplicaSet" => map.remove("status"),
        _ => None,
    };
    let dynobj: DynamicObject = serde_json::from_value(obj)?;
    let api: kube::Api<DynamicObject> = kube::Api::namespaced_with(client.clone(), ns, ar);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match api.create(&PostParams::default(), &dynobj).await {
            Ok(_) => break,
            // A retried create whose first attempt did arrive.
            Err(kube::Error::Api(s)) if s.is_already_exists() && attempt > 1 => break,
            Err(e) if attempt < 5 && transient(&e) => {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("creating {} {ns}/{name}", ar.kind));
            }
        }
    }
    if let Some(status) = status {
        let patch = Patch::Merge(json!({ "status": status }));
        let pp = PatchParams::default();
        retry(|| api.patch_status(&name, &pp, &patch))
            .await
            .with_context(|| format!("writing the status of {} {ns}/{name}", ar.kind))?;
    }
    Ok(())
}

fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 429 || s.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

async fn retry<T, F, Fut>(mut f: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match f().await {
            Err(e) if attempt < 5 && transient(&e) => {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            r => return r,
        }
    }
}

/// A TCP proxy on 127.0.0.1 in front of `upstream` counting the bytes it sends back and the
/// connections made through it: one per process measured, so that processes' bytes are told apart
/// (HTTP framing included, and TLS records where TLS runs through it).
pub struct Counter {
    pub addr: std::net::SocketAddr,
    down: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    cancel: CancellationToken,
}

impl Drop for Counter {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Counter {
    pub async fn start(upstream: impl ToString) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (down, connections) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let cancel = CancellationToken::new();
        tokio::spawn(accept(
            listener,
            upstream.to_string(),
            down.clone(),
            connections.clone(),
            cancel.clone(),
        ));
        Ok(Self {
            addr,
            down,
            connections,
            cancel,
        })
    }

    /// The proxy's URL for a plain-HTTP server.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn bytes(&self) -> u64 {
        self.down.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    fn reset(&self) {
        self.down.store(0, Ordering::SeqCst);
        self.connections.store(0, Ordering::SeqCst);
    }
}

/// A counting proxy in front of the API server, with a kubeconfig pointing at it. TLS still runs
/// end to end between client and server, so it only works when the server's certificate covers
/// 127.0.0.1 (checked with a request through it).
struct Proxy {
    kubeconfig: PathBuf,
    counter: Counter,
}

impl Proxy {
    async fn start(config: &kube::Config, dir: &Path) -> Result<Self, String> {
        let url = &config.cluster_url;
        let host = url.host().ok_or("the server URL has no host")?;
        let scheme = url.scheme_str().unwrap_or("https");
        let port = url
            .port_u16()
            .unwrap_or(if scheme == "http" { 80 } else { 443 });
        let upstream = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let counter = Counter::start(upstream)
            .await
            .map_err(|e| format!("cannot listen on 127.0.0.1: {e}"))?;
        let local = counter.addr;
        let proxy = Self {
            kubeconfig: dir.join("kubeconfig-proxy"),
            counter,
        };

        // The user's kubeconfig, merged as kube reads it, with the current cluster's server
        // moved to the proxy (same scheme and path).
        let mut kc = Kubeconfig::read().map_err(|e| format!("cannot read the kubeconfig: {e}"))?;
        let context = kc
            .current_context
            .clone()
            .ok_or("the kubeconfig has no current-context")?;
        let cluster_name = kc
            .contexts
            .iter()
            .find(|c| c.name == context)
            .and_then(|c| c.context.as_ref())
            .map(|c| c.cluster.clone())
            .ok_or("the current context has no cluster")?;
        let cluster = kc
            .clusters
            .iter_mut()
            .find(|c| c.name == cluster_name)
            .and_then(|c| c.cluster.as_mut())
            .ok_or("the current context's cluster is not in the kubeconfig")?;
        let path = url
            .path_and_query()
            .map_or("", |p| p.as_str())
            .trim_end_matches('/');
        cluster.server = Some(format!("{scheme}://{local}{path}"));
        let text = serde_json::to_string_pretty(&kc).map_err(|e| e.to_string())?;
        write_private(&proxy.kubeconfig, &text).map_err(|e| e.to_string())?;

        let through = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| format!("the proxy's kubeconfig does not load: {e}"))?;
        let client = kube::Client::try_from(through).map_err(|e| e.to_string())?;
        match tokio::time::timeout(Duration::from_secs(15), client.apiserver_version()).await {
            Ok(Ok(_)) => Ok(proxy),
            Ok(Err(e)) => Err(format!(
                "a request through a counting proxy on {local} failed, so TLS does not verify for 127.0.0.1 with this server's certificate: {e}"
            )),
            Err(_) => Err("a request through a counting proxy did not answer in 15 s".into()),
        }
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

pub async fn accept(
    listener: TcpListener,
    upstream: String,
    down: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    cancel: CancellationToken,
) {
    loop {
        let client = tokio::select! {
            _ = cancel.cancelled() => return,
            a = listener.accept() => match a {
                Ok((c, _)) => c,
                Err(_) => continue,
            },
        };
        connections.fetch_add(1, Ordering::SeqCst);
        let (upstream, down, cancel) = (upstream.clone(), down.clone(), cancel.clone());
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(&upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            let up = Arc::new(AtomicU64::new(0));
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = async { tokio::join!(pump(sr, cw, down), pump(cr, sw, up)) } => {}
            }
        });
    }
}

/// Copies `from` to `to` until end of stream, counting the bytes.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    count: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                count.fetch_add(n as u64, Ordering::Relaxed);
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

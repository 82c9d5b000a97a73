//! The Kubernetes watchers: one per resource and namespace, each object decoded, then dropped.
//!
//! Failures never stop a source: kube's default backoff paces retries, a `410 Gone` makes the
//! watcher re-list (the store forgets what disappeared at the end of the list), and the source is
//! marked in error meanwhile so that nothing is unpinned on a stale view. A watch that resumes
//! from its resourceVersion emits nothing (bookmarks are absorbed by the watcher), so a source in
//! error is also cleared when the watcher's retry has been due for a second without a new error
//! and a probe list answers; anything that arrives first clears it at once. Each watcher runs
//! under `supervise`, which restarts it (source in error meanwhile) if it panics.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use kube::api::Api;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::change::{Change, fold};
use super::drive::{Sink, drive};
use super::store::{HistoryStore, SourceId, StatusKey};
use super::supervise::spawn_supervised;
use super::{Decoded, controller_revisions, helm, meta, nodes, pods, replicasets};
use crate::model::{NodeFacts, ObjectRef, SourceKind};

/// Label selector of Helm release Secrets and ConfigMaps.
pub const HELM_OWNER_SELECTOR: &str = "owner=helm";
/// Objects per list page for Helm release Secrets and ConfigMaps.
pub const HELM_PAGE_SIZE: u32 = 100;
/// Field selector of Helm release Secrets.
pub const HELM_SECRET_TYPE_SELECTOR: &str = "type=helm.sh/release.v1";

/// Which sources run, where, and how they page and recover.
#[derive(Clone, Debug)]
pub struct WatchConfig {
    /// Namespaces to watch, one watcher per namespace and resource; empty means all namespaces.
    pub namespaces: Vec<String>,
    pub replicasets: bool,
    pub controller_revisions: bool,
    /// Helm release Secrets; off for least privilege (no Secret access needed).
    pub helm_secrets: bool,
    pub helm_configmaps: bool,
    pub pods: bool,
    /// Pods on this node only (`spec.nodeName=` `node_name`), as fleet mode watches them.
    pub pods_on_node: bool,
    /// This node's name (`NODE_NAME`); its Node object gives labels and taints.
    pub node_name: Option<String>,
    /// Objects per list page.
    pub page_size: u32,
    /// Server-side watch timeout in seconds; None uses kube's default (290 s).
    pub watch_timeout: Option<u32>,
    /// Serve lists from the API server's watch cache (resourceVersion=0): much cheaper for the
    /// server with thousands of nodes; the watch that follows catches up anyway.
    pub any_semantic: bool,
    /// While a source is in error, how often to check whether the API answers again.
    pub probe_interval: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            replicasets: true,
            controller_revisions: true,
            helm_secrets: true,
            helm_configmaps: true,
            pods: true,
            pods_on_node: false,
            node_name: None,
            page_size: 500,
            watch_timeout: None,
            any_semantic: true,
            probe_interval: Duration::from_secs(5),
        }
    }
}

impl WatchConfig {
    /// The watcher settings every source shares (page size, list semantic, timeout).
    pub fn watcher_config(&self) -> watcher::Config {
        let mut wc = watcher::Config::default().page_size(self.page_size);
        if self.any_semantic {
            wc = wc.any_semantic();
        }
        if let Some(t) = self.watch_timeout {
            wc = wc.timeout(t);
        }
        wc
    }

    /// Helm release Secrets only: the server filters, so other Secrets never reach rollcache.
    pub fn helm_secrets_config(&self) -> watcher::Config {
        // Release Secrets are large (a compressed manifest each): smaller pages keep the peak
        // memory of a list low; the number of requests hardly matters.
        self.watcher_config()
            .page_size(self.page_size.min(HELM_PAGE_SIZE))
            .labels(HELM_OWNER_SELECTOR)
            .fields(HELM_SECRET_TYPE_SELECTOR)
    }

    /// The fleet inventory's shards and catalog (bookmarks on, as for every source).
    pub fn inventory_config(&self) -> watcher::Config {
        // A shard, like a release Secret, may be a quarter MiB: pages as small as theirs.
        self.watcher_config()
            .page_size(self.page_size.min(HELM_PAGE_SIZE))
    }

    /// Helm release ConfigMaps (`HELM_DRIVER=configmap`) only.
    pub fn helm_configmaps_config(&self) -> watcher::Config {
        self.watcher_config()
            .page_size(self.page_size.min(HELM_PAGE_SIZE))
            .labels(HELM_OWNER_SELECTOR)
    }
}

/// Starts every configured source in `tasks`; all stop when `token` is cancelled. Each source is
/// registered in the store first, so that freshness checks wait for all of them.
pub fn spawn_watchers(
    client: &Client,
    cfg: &WatchConfig,
    store: &Arc<HistoryStore>,
    token: &CancellationToken,
    tasks: &mut JoinSet<()>,
) {
    let namespaces: Vec<Option<&str>> = if cfg.namespaces.is_empty() {
        vec![None]
    } else {
        cfg.namespaces.iter().map(|n| Some(n.as_str())).collect()
    };
    let base = cfg.watcher_config();
    let mut spawner = Spawner {
        client,
        store,
        token,
        tasks,
        probe_interval: cfg.probe_interval,
    };
    for ns in namespaces {
        let id = |kind, resource| SourceId::new(kind, resource, ns);
        if cfg.replicasets {
            spawner.source::<ReplicaSet>(
                ns,
                base.clone(),
                id(SourceKind::ReplicaSet, "replicasets"),
                replicasets::decode,
            );
        }
        if cfg.controller_revisions {
            spawner.source::<ControllerRevision>(
                ns,
                base.clone(),
                id(SourceKind::ControllerRevision, "controllerrevisions"),
                controller_revisions::decode,
            );
        }
        if cfg.helm_secrets {
            spawner.source::<Secret>(
                ns,
                cfg.helm_secrets_config(),
                id(SourceKind::HelmRelease, "secrets"),
                helm::decode_secret,
            );
        }
        if cfg.helm_configmaps {
            spawner.source::<ConfigMap>(
                ns,
                cfg.helm_configmaps_config(),
                id(SourceKind::HelmRelease, "configmaps"),
                helm::decode_configmap,
            );
        }
        if cfg.pods {
            let wc = match (&cfg.node_name, cfg.pods_on_node) {
                (Some(node), true) => base.clone().fields(&format!("spec.nodeName={node}")),
                _ => base.clone(),
            };
            spawner.source::<Pod>(ns, wc, id(SourceKind::Pod, "pods"), pods::decode);
        }
    }
    if let Some(name) = &cfg.node_name {
        let (api, name, store_, token_, probe) = (
            Api::all(client.clone()),
            name.clone(),
            store.clone(),
            token.clone(),
            cfg.probe_interval,
        );
        spawn_supervised(tasks, store, StatusKey::Node, token, move || {
            run_node(
                api.clone(),
                name.clone(),
                nodes::decode,
                store_.clone(),
                token_.clone(),
                probe,
            )
        });
    }
}

/// What the watchers one `spawn_watchers` starts share.
struct Spawner<'a> {
    client: &'a Client,
    store: &'a Arc<HistoryStore>,
    token: &'a CancellationToken,
    tasks: &'a mut JoinSet<()>,
    probe_interval: Duration,
}

impl Spawner<'_> {
    /// Starts the watcher of resource `K` in namespace `ns` (None: all), under its supervisor.
    fn source<K>(
        &mut self,
        ns: Option<&str>,
        wc: watcher::Config,
        id: SourceId,
        decode: fn(&K) -> Decoded,
    ) where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + Debug
            + Send
            + Sync
            + 'static,
    {
        let api: Api<K> = match ns {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        let (store, token, probe) = (self.store.clone(), self.token.clone(), self.probe_interval);
        let key = StatusKey::Source(id.clone());
        spawn_supervised(self.tasks, self.store, key, self.token, move || {
            run_source(
                api.clone(),
                wc.clone(),
                id.clone(),
                decode,
                store.clone(),
                token.clone(),
                probe,
            )
        });
    }
}

/// Watches one resource into the store until `token` is cancelled.
pub async fn run_source<K>(
    api: Api<K>,
    wc: watcher::Config,
    id: SourceId,
    decode: fn(&K) -> Decoded,
    store: Arc<HistoryStore>,
    token: CancellationToken,
    probe_interval: Duration,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    store.register(&id);
    let sink = FactSink { id, decode };
    drive(api, wc, sink, store, token, probe_interval).await;
}

/// Watches this node's Node object (by name) into the store until `token` is cancelled.
pub async fn run_node(
    api: Api<Node>,
    node_name: String,
    decode: fn(&Node) -> NodeFacts,
    store: Arc<HistoryStore>,
    token: CancellationToken,
    probe_interval: Duration,
) {
    let wc = watcher::Config::default().fields(&format!("metadata.name={node_name}"));
    let sink = NodeSink {
        decode,
        listed: None,
        name: node_name,
    };
    drive(api, wc, sink, store, token, probe_interval).await;
}

struct FactSink<K> {
    id: SourceId,
    decode: fn(&K) -> Decoded,
}

impl<K: Resource<DynamicType = ()> + Send> FactSink<K> {
    /// The object's identity and facts; the object itself is dropped here, before the store
    /// takes the facts.
    fn decode(&self, obj: K) -> (ObjectRef, Decoded) {
        (meta::object_ref_of(&obj), (self.decode)(&obj))
    }
}

impl<K: Resource<DynamicType = ()> + Send> Sink<K> for FactSink<K> {
    fn key(&self) -> StatusKey {
        StatusKey::Source(self.id.clone())
    }

    fn event(&mut self, store: &HistoryStore, event: watcher::Event<K>) {
        let change = match event {
            watcher::Event::Init => Change::ResetBegin,
            watcher::Event::InitApply(obj) => {
                let (object, decoded) = self.decode(obj);
                Change::ResetApply(object, decoded)
            }
            watcher::Event::InitDone => Change::ResetDone,
            watcher::Event::Apply(obj) => {
                let (object, decoded) = self.decode(obj);
                Change::Apply(object, decoded)
            }
            watcher::Event::Delete(obj) => Change::Delete(meta::object_ref_of(&obj)),
        };
        fold(store, &self.id, change);
    }
}

struct NodeSink {
    decode: fn(&Node) -> NodeFacts,
    /// The Node seen during a list in progress.
    listed: Option<NodeFacts>,
    name: String,
}

impl Sink<Node> for NodeSink {
    fn key(&self) -> StatusKey {
        StatusKey::Node
    }

    fn event(&mut self, store: &HistoryStore, event: watcher::Event<Node>) {
        match event {
            watcher::Event::Init => self.listed = None,
            watcher::Event::InitApply(n) => self.listed = Some((self.decode)(&n)),
            watcher::Event::InitDone => {
                if self.listed.is_none() {
                    warn!(
                        node = %self.name,
                        "this node's Node object was not found: the node is unknown; nothing is unpinned and revisions with scheduling constraints wait until it appears"
                    );
                }
                store.set_node(self.listed.take());
            }
            watcher::Event::Apply(n) => store.set_node(Some((self.decode)(&n))),
            watcher::Event::Delete(n) => {
                warn!(node = %n.name_any(), "this node's Node object was deleted: the node is unknown; nothing is unpinned and revisions with scheduling constraints wait until it is back");
                store.set_node(None);
            }
        }
    }
}

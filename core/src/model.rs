//! The domain model shared by history, inventory, plan and report: plain values, no I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A workload as Kubernetes names it: the controller that owns the pods (Deployment, StatefulSet,
/// DaemonSet, Job, CronJob), or a bare Pod / ReplicaSet that has no owner.
///
/// Shared, not copied: facts, inventory, plan and report all name workloads, so a clone is a
/// reference count. Fields read through `Deref` (`id.kind`, `id.namespace`, `id.name`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkloadId(Arc<WorkloadIdParts>);

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WorkloadIdParts {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl WorkloadId {
    pub fn new(
        kind: impl Into<String>,
        namespace: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        Self(Arc::new(WorkloadIdParts {
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        }))
    }
}

impl std::ops::Deref for WorkloadId {
    type Target = WorkloadIdParts;
    fn deref(&self) -> &WorkloadIdParts {
        &self.0
    }
}

impl std::fmt::Debug for WorkloadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadId")
            .field("kind", &self.kind)
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .finish()
    }
}

impl std::fmt::Display for WorkloadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

/// Which kind of history object a fact came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    ReplicaSet,
    ControllerRevision,
    /// A Helm release stored as a Secret (`helm.sh/release.v1`) or ConfigMap (`owner=helm`).
    HelmRelease,
    Pod,
    /// Objects read from a directory (`--from DIR`); the fact keeps the kind it was decoded as.
    File,
    /// `extra_images` from the config or a manual prefetch.
    Config,
    /// The fleet inventory (`RollcacheInventory` shards): a source, never a fact's own kind.
    Inventory,
}

impl SourceKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            SourceKind::ReplicaSet => "replicaset",
            SourceKind::ControllerRevision => "controllerrevision",
            SourceKind::HelmRelease => "helm",
            SourceKind::Pod => "pod",
            SourceKind::File => "file",
            SourceKind::Config => "config",
            SourceKind::Inventory => "inventory",
        }
    }
}

/// The identity of one object a source watches (a ReplicaSet, a release Secret, a file, ...).
/// Every fact is filed under the object it came from, so that deleting or re-listing that object
/// replaces exactly its facts. Shared like `WorkloadId`: a clone is a reference count.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ObjectRef(Arc<ObjectRefParts>);

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectRefParts {
    /// Kubernetes kind of the object (`ReplicaSet`, `Secret`, `ConfigMap`, ...).
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    pub fn new(
        kind: impl Into<String>,
        namespace: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        Self(Arc::new(ObjectRefParts {
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        }))
    }
}

impl std::ops::Deref for ObjectRef {
    type Target = ObjectRefParts;
    fn deref(&self) -> &ObjectRefParts {
        &self.0
    }
}

impl std::fmt::Debug for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectRef")
            .field("kind", &self.kind)
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .finish()
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// One revision of one workload as one source object describes it. A Helm release yields one fact
/// per workload in its manifest (and hooks); a ReplicaSet yields one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RevisionFact {
    pub source: SourceKind,
    /// The object this fact was decoded from.
    pub object: ObjectRef,
    pub workload: WorkloadId,
    /// Revision number within its source: `deployment.kubernetes.io/revision`, ControllerRevision
    /// `revision`, Helm release `version`. None for pods and config.
    pub revision: Option<i64>,
    /// Creation time of the source object (seconds since the epoch), when known.
    pub created: Option<i64>,
    /// Helm release name when the workload belongs to a release.
    pub helm_release: Option<String>,
    /// Helm release status (`deployed`, `superseded`, `failed`, `pending-upgrade`, ...).
    pub status: Option<String>,
    /// The source says this revision is what runs now: a deployed Helm release, a running pod, a
    /// ReplicaSet with replicas > 0.
    pub current: bool,
    /// Shared: the store keeps one copy of each distinct template (a Helm release and the
    /// ReplicaSet of the same revision, or releases that left a workload alone, describe the same).
    pub template: Arc<PodTemplate>,
}

impl RevisionFact {
    /// Gives back the spare capacity decoding left in the fact's vectors: facts are held for as
    /// long as their object exists, tens of thousands of them on a large cluster.
    /// A template shared already is left as it is.
    pub fn shrink_to_fit(&mut self) {
        let Some(t) = Arc::get_mut(&mut self.template) else {
            return;
        };
        t.containers.shrink_to_fit();
        t.image_pull_secrets.shrink_to_fit();
        t.scheduling.required_terms.shrink_to_fit();
        t.scheduling.tolerations.shrink_to_fit();
    }
}

/// What a pod template needs from a node, reduced to what rollcache acts on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PodTemplate {
    /// Init containers first (with `init: true`), then containers, in manifest order.
    pub containers: Vec<ContainerImage>,
    /// Names of `imagePullSecrets` in the workload's namespace.
    pub image_pull_secrets: Vec<String>,
    /// `serviceAccountName` (its imagePullSecrets count too); None means `default`.
    pub service_account: Option<String>,
    pub scheduling: Scheduling,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ContainerImage {
    pub name: String,
    /// The image reference exactly as written in the template.
    pub image: String,
    /// `imagePullPolicy` as written (`Always`, `IfNotPresent`, `Never`), None when absent.
    pub pull_policy: Option<String>,
    pub init: bool,
    /// For pods: `status.containerStatuses[].imageID`, the digest the container actually runs.
    pub image_id: Option<String>,
}

/// Scheduling constraints that decide whether a pod could land on a node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Scheduling {
    pub node_name: Option<String>,
    pub node_selector: BTreeMap<String, String>,
    /// `affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms`
    /// (ORed). Empty means no constraint.
    pub required_terms: Vec<NodeSelectorTerm>,
    pub tolerations: Vec<Toleration>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeSelectorTerm {
    /// ANDed requirements on node labels.
    pub match_expressions: Vec<NodeSelectorRequirement>,
    /// ANDed requirements on node fields (only `metadata.name` exists).
    pub match_fields: Vec<NodeSelectorRequirement>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeSelectorRequirement {
    pub key: String,
    /// `In`, `NotIn`, `Exists`, `DoesNotExist`, `Gt`, `Lt`.
    pub operator: String,
    pub values: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Toleration {
    pub key: Option<String>,
    /// `Exists` or `Equal` (the default when absent).
    pub operator: Option<String>,
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule`, `NoExecute`; None tolerates every effect.
    pub effect: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Taint {
    pub key: String,
    pub value: Option<String>,
    pub effect: String,
}

/// This node as the plan sees it (from its Node object, or given on the command line).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFacts {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    /// `spec.unschedulable` (cordoned): reported, never planned on.
    #[serde(default)]
    pub unschedulable: bool,
}

/// A Secret by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SecretRef {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

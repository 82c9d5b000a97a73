//! The resources the test API server serves: group, version, plural, kind, scope, selectable
//! fields, subresources, and rollcache's own custom resources (served once their CRDs are installed).

/// A served resource.
#[derive(Debug)]
pub(super) struct ResourceDef {
    pub(super) group: &'static str,
    pub(super) version: &'static str,
    pub(super) plural: &'static str,
    pub(super) kind: &'static str,
    pub(super) namespaced: bool,
    /// Field selector labels besides `metadata.name` / `metadata.namespace`.
    pub(super) fields: &'static [&'static str],
    /// Served only while its CustomResourceDefinition is installed.
    pub(super) crd: bool,
    /// Has a `/status` subresource: writes to the object keep the stored status, writes to
    /// `/status` change nothing else.
    pub(super) status: bool,
    /// The server keeps `metadata.generation`, bumped when anything but metadata and status changes.
    pub(super) generation: bool,
}

impl ResourceDef {
    pub(super) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pods` or `replicasets.apps`, as NotFound messages name it.
    pub(super) fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// rollcache's custom resources' group and version (`RollcacheNode`, `RollcacheInventory`).
pub const ROLLCACHE_GROUP: &str = "rollcache.io";
pub const ROLLCACHE_VERSION: &str = "v1alpha1";

pub(super) const RESOURCES: &[ResourceDef] = &[
    ResourceDef {
        group: "",
        version: "v1",
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
        crd: false,
        status: true,
        generation: false,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "secrets",
        kind: "Secret",
        namespaced: true,
        fields: &["type"],
        crd: false,
        status: false,
        generation: false,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "configmaps",
        kind: "ConfigMap",
        namespaced: true,
        fields: &[],
        crd: false,
        status: false,
        generation: false,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "nodes",
        kind: "Node",
        namespaced: false,
        fields: &["spec.unschedulable"],
        crd: false,
        status: true,
        generation: false,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "serviceaccounts",
        kind: "ServiceAccount",
        namespaced: true,
        fields: &[],
        crd: false,
        status: false,
        generation: false,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "namespaces",
        kind: "Namespace",
        namespaced: false,
        fields: &["status.phase"],
        crd: false,
        status: true,
        generation: false,
    },
    ResourceDef {
        group: "apps",
        version: "v1",
        plural: "replicasets",
        kind: "ReplicaSet",
        namespaced: true,
        fields: &["status.replicas"],
        crd: false,
        status: true,
        generation: true,
    },
    ResourceDef {
        group: "apps",
        version: "v1",
        plural: "controllerrevisions",
        kind: "ControllerRevision",
        namespaced: true,
        fields: &[],
        crd: false,
        status: false,
        generation: false,
    },
    ResourceDef {
        group: "apps",
        version: "v1",
        plural: "deployments",
        kind: "Deployment",
        namespaced: true,
        fields: &[],
        crd: false,
        status: true,
        generation: true,
    },
    ResourceDef {
        group: "apps",
        version: "v1",
        plural: "statefulsets",
        kind: "StatefulSet",
        namespaced: true,
        fields: &[],
        crd: false,
        status: true,
        generation: true,
    },
    ResourceDef {
        group: "apps",
        version: "v1",
        plural: "daemonsets",
        kind: "DaemonSet",
        namespaced: true,
        fields: &[],
        crd: false,
        status: true,
        generation: true,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "events",
        kind: "Event",
        namespaced: true,
        fields: &[
            "involvedObject.kind",
            "involvedObject.name",
            "reason",
            "type",
        ],
        crd: false,
        status: false,
        generation: false,
    },
    // What kube-runtime's event `Recorder` writes (POST, then merge patches of its series).
    ResourceDef {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        kind: "Event",
        namespaced: true,
        fields: &["regarding.kind", "regarding.name", "reason", "type"],
        crd: false,
        status: false,
        generation: false,
    },
    ResourceDef {
        group: ROLLCACHE_GROUP,
        version: ROLLCACHE_VERSION,
        plural: "rollcachenodes",
        kind: "RollcacheNode",
        namespaced: false,
        fields: &[],
        crd: true,
        status: true,
        generation: true,
    },
    // The fleet inventory's shards, in rollcache's own namespace (spec only, no status).
    ResourceDef {
        group: ROLLCACHE_GROUP,
        version: ROLLCACHE_VERSION,
        plural: "rollcacheinventories",
        kind: "RollcacheInventory",
        namespaced: true,
        fields: &[],
        crd: true,
        status: false,
        generation: true,
    },
    // What the indexer's replicas elect a leader with.
    ResourceDef {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        kind: "Lease",
        namespaced: true,
        fields: &[],
        crd: false,
        status: false,
        generation: false,
    },
];

pub(super) fn resource_by_kind(api_version: &str, kind: &str) -> Option<usize> {
    RESOURCES
        .iter()
        .position(|r| r.kind == kind && r.api_version() == api_version)
}

pub(super) fn etcd_key(def: &ResourceDef, namespace: &str, name: &str) -> String {
    if def.namespaced {
        format!("{namespace}/{name}")
    } else {
        name.to_string()
    }
}

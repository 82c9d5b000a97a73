//! The resources the test API server serves: group, plural, kind, scope and selectable fields.

/// A served resource.
#[derive(Debug)]
pub(super) struct ResourceDef {
    pub(super) group: &'static str,
    pub(super) plural: &'static str,
    pub(super) kind: &'static str,
    pub(super) namespaced: bool,
    /// Field selector labels besides `metadata.name` / `metadata.namespace`.
    pub(super) fields: &'static [&'static str],
}

impl ResourceDef {
    pub(super) fn api_version(&self) -> String {
        if self.group.is_empty() {
            "v1".to_string()
        } else {
            format!("{}/v1", self.group)
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

pub(super) const RESOURCES: &[ResourceDef] = &[
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

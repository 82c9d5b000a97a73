//! Workload history as the controllers write it: the Deployment controller's ReplicaSets, the
//! StatefulSet and DaemonSet controllers' ControllerRevisions, and the pod specs inside them.

use serde_json::{Value, json};

/// Containers `c0`, `c1`, … running `images`, with `imagePullPolicy` only when given (the API
/// server defaults it otherwise).
pub fn containers(images: &[&str], policy: Option<&str>) -> Value {
    Value::Array(
        images
            .iter()
            .enumerate()
            .map(|(i, image)| {
                let mut c = json!({"name": format!("c{i}"), "image": image});
                if let Some(p) = policy {
                    c["imagePullPolicy"] = json!(p);
                }
                c
            })
            .collect(),
    )
}

/// The controller's entry in `metadata.ownerReferences`.
#[derive(Clone, Debug)]
pub struct Owner {
    pub kind: String,
    pub name: String,
    pub uid: String,
    /// Controllers set it; hand-written objects often leave it out.
    pub block_owner_deletion: bool,
}

impl Owner {
    /// An `apps/v1` controller with a uid derived from its kind and name.
    pub fn new(kind: &str, name: &str) -> Self {
        Owner {
            kind: kind.into(),
            name: name.into(),
            uid: format!("uid-{kind}-{name}"),
            block_owner_deletion: false,
        }
    }

    pub fn references(&self) -> Value {
        let mut r = json!({
            "apiVersion": "apps/v1", "kind": self.kind, "name": self.name,
            "uid": self.uid, "controller": true,
        });
        if self.block_owner_deletion {
            r["blockOwnerDeletion"] = json!(true);
        }
        json!([r])
    }
}

/// Labels plus one more, for the hash labels controllers add to the template's labels.
fn with_label(labels: &Value, key: &str, value: Option<&str>) -> Value {
    let mut labels = labels.clone();
    if let Some(v) = value {
        labels[key] = json!(v);
    }
    labels
}

/// Revision `revision` of a Deployment as the controller stores it: the ReplicaSet carrying the
/// revision annotation, the pod template and an owner reference to the Deployment.
#[derive(Clone, Debug)]
pub struct ReplicaSet {
    pub namespace: String,
    pub owner: Owner,
    pub revision: i64,
    /// Pods wanted: 0 for a retained old revision.
    pub replicas: i32,
    /// The Deployment's selector, which its pod template carries as labels.
    pub labels: Value,
    /// `pod-template-hash`: the controller names the ReplicaSet `{deployment}-{hash}` and adds
    /// the hash to its selector; without one it is named `{deployment}-{revision}`.
    pub template_hash: Option<String>,
    pub created: Option<String>,
    pub spec: Value,
}

impl ReplicaSet {
    pub fn new(namespace: &str, deployment: &str, revision: i64, spec: Value) -> Self {
        ReplicaSet {
            namespace: namespace.into(),
            owner: Owner::new("Deployment", deployment),
            revision,
            replicas: 0,
            labels: json!({"app": deployment}),
            template_hash: None,
            created: None,
            spec,
        }
    }

    pub fn name(&self) -> String {
        match &self.template_hash {
            Some(hash) => format!("{}-{hash}", self.owner.name),
            None => format!("{}-{}", self.owner.name, self.revision),
        }
    }

    pub fn build(&self) -> Value {
        let labels = with_label(
            &self.labels,
            "pod-template-hash",
            self.template_hash.as_deref(),
        );
        let mut rs = json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {
                "name": self.name(), "namespace": self.namespace,
                "annotations": {"deployment.kubernetes.io/revision": self.revision.to_string()},
                "labels": labels,
                "ownerReferences": self.owner.references(),
            },
            "spec": {
                "replicas": self.replicas,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": self.spec},
            },
            "status": {"replicas": self.replicas},
        });
        if let Some(t) = &self.created {
            rs["metadata"]["creationTimestamp"] = json!(t);
        }
        rs
    }
}

/// Revision `revision` of a StatefulSet or DaemonSet as its controller stores it: a
/// ControllerRevision whose `data` is the patch that restores the pod template
/// (`{"spec": {"template": {…, "$patch": "replace"}}}`).
#[derive(Clone, Debug)]
pub struct ControllerRevision {
    pub namespace: String,
    pub owner: Owner,
    pub revision: i64,
    /// The owner's pod template (`metadata` and `spec`); its labels label the revision too.
    pub template: Value,
    /// The template's hash: the controller names the revision `{owner}-{hash}` and labels it
    /// with the hash; without one it is named `{owner}-rev{revision}`.
    pub hash: Option<String>,
    pub created: Option<String>,
}

impl ControllerRevision {
    pub fn new(namespace: &str, owner: Owner, revision: i64, template: Value) -> Self {
        ControllerRevision {
            namespace: namespace.into(),
            owner,
            revision,
            template,
            hash: None,
            created: None,
        }
    }

    pub fn name(&self) -> String {
        match &self.hash {
            Some(hash) => format!("{}-{hash}", self.owner.name),
            None => format!("{}-rev{}", self.owner.name, self.revision),
        }
    }

    pub fn build(&self) -> Value {
        // The StatefulSet controller labels with `controller.kubernetes.io/hash`, the DaemonSet
        // controller with `controller-revision-hash`.
        let hash_label = if self.owner.kind == "DaemonSet" {
            "controller-revision-hash"
        } else {
            "controller.kubernetes.io/hash"
        };
        let labels = with_label(
            &self.template["metadata"]["labels"],
            hash_label,
            self.hash.as_deref(),
        );
        let mut patch = self.template.clone();
        patch["$patch"] = json!("replace");
        let mut cr = json!({
            "apiVersion": "apps/v1", "kind": "ControllerRevision",
            "metadata": {
                "name": self.name(), "namespace": self.namespace,
                "labels": labels,
                "ownerReferences": self.owner.references(),
            },
            "revision": self.revision,
            "data": {"spec": {"template": patch}},
        });
        if let Some(t) = &self.created {
            cr["metadata"]["creationTimestamp"] = json!(t);
        }
        cr
    }
}

/// Revision `revision` of Deployment `deploy`: a ReplicaSet with `replicas` (0 = retained old
/// revision) running `images`, named `{deploy}-{revision}`.
pub fn replicaset(ns: &str, deploy: &str, revision: i64, images: &[&str], replicas: i32) -> Value {
    ReplicaSet {
        replicas,
        ..ReplicaSet::new(
            ns,
            deploy,
            revision,
            json!({"containers": containers(images, None)}),
        )
    }
    .build()
}

/// Revision `revision` of StatefulSet `sts` as its ControllerRevision, named `{sts}-rev{revision}`.
pub fn controller_revision(ns: &str, sts: &str, revision: i64, images: &[&str]) -> Value {
    let template = json!({
        "metadata": {"labels": {"app": sts}},
        "spec": {"containers": containers(images, None)},
    });
    ControllerRevision::new(ns, Owner::new("StatefulSet", sts), revision, template).build()
}

/// The pod spec inside a ReplicaSet or ControllerRevision, to add constraints or policies.
pub fn pod_spec(obj: &mut Value) -> &mut Value {
    let path = if obj["kind"] == "ControllerRevision" {
        "/data/spec/template/spec"
    } else {
        "/spec/template/spec"
    };
    obj.pointer_mut(path).expect("object has a pod spec")
}

/// Sets `imagePullPolicy` on every container.
pub fn with_pull_policy(mut obj: Value, policy: &str) -> Value {
    for c in pod_spec(&mut obj)["containers"]
        .as_array_mut()
        .expect("containers")
    {
        c["imagePullPolicy"] = json!(policy);
    }
    obj
}

pub fn with_node_selector(mut obj: Value, selector: Value) -> Value {
    pod_spec(&mut obj)["nodeSelector"] = selector;
    obj
}

/// A bare Pod (no owner) running `spec`; callers [`merge`](super::merge) in a status or owner.
pub fn pod(ns: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    })
}

//! Kubernetes objects as the controllers write them, for the in-test API server: ReplicaSets
//! (Deployment history), ControllerRevisions (StatefulSet history), Nodes, Helm release Secrets.

use serde_json::{Value, json};

fn containers(images: &[&str], policy: Option<&str>) -> Value {
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

fn owner(kind: &str, name: &str) -> Value {
    json!([{
        "apiVersion": "apps/v1", "kind": kind, "name": name,
        "uid": format!("uid-{kind}-{name}"), "controller": true,
    }])
}

/// Revision `revision` of Deployment `deploy`: a ReplicaSet with `replicas` (0 = retained old
/// revision) running `images`.
pub fn replicaset(ns: &str, deploy: &str, revision: i64, images: &[&str], replicas: i32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {
            "name": format!("{deploy}-{revision}"), "namespace": ns,
            "annotations": {"deployment.kubernetes.io/revision": revision.to_string()},
            "labels": {"app": deploy},
            "ownerReferences": owner("Deployment", deploy),
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": deploy}},
            "template": {
                "metadata": {"labels": {"app": deploy}},
                "spec": {"containers": containers(images, None)},
            },
        },
        "status": {"replicas": replicas},
    })
}

/// Revision `revision` of StatefulSet `sts` as its ControllerRevision.
pub fn controller_revision(ns: &str, sts: &str, revision: i64, images: &[&str]) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "ControllerRevision",
        "metadata": {
            "name": format!("{sts}-rev{revision}"), "namespace": ns,
            "labels": {"app": sts},
            "ownerReferences": owner("StatefulSet", sts),
        },
        "revision": revision,
        "data": {"spec": {"template": {
            "$patch": "replace",
            "metadata": {"labels": {"app": sts}},
            "spec": {"containers": containers(images, None)},
        }}},
    })
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

pub fn node(name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {},
    })
}

/// A Helm release Secret (version `version`) of a chart rendering one Deployment running `image`.
pub fn helm_release(ns: &str, release: &str, version: i64, image: &str) -> Value {
    let manifest = format!(
        "---\n# Source: app/templates/deployment.yaml\napiVersion: apps/v1\nkind: Deployment\n\
         metadata:\n  name: {release}\nspec:\n  selector:\n    matchLabels:\n      app: {release}\n  \
         template:\n    metadata:\n      labels:\n        app: {release}\n    spec:\n      \
         containers:\n        - name: app\n          image: {image}\n"
    );
    let json = super::helm_gen::release_json(
        release,
        ns,
        version,
        "deployed",
        "2025-01-10T09:00:00Z",
        &manifest,
        &[],
    );
    serde_json::to_value(super::helm_gen::secret(&json)).expect("secret as JSON")
}

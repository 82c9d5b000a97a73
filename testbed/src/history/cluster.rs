//! Cluster objects beside the workload history: Nodes, image pull Secrets, and the summary
//! rollcache publishes per node.

use serde_json::{Value, json};

use super::b64;

/// A Node with `labels` and an empty spec (schedulable, untainted).
pub fn node(name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {},
    })
}

/// A `kubernetes.io/dockerconfigjson` Secret holding `user`/`pass` for `registry`.
pub fn pull_secret(ns: &str, name: &str, registry: &str, user: &str, pass: &str) -> Value {
    let config = json!({"auths": {registry: {"username": user, "password": pass}}});
    json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": name, "namespace": ns},
        "data": {".dockerconfigjson": b64(config.to_string().as_bytes())}})
}

/// rollcache's summary of a node (`rollcache.io/v1alpha1` `RollcacheNode`, named after it),
/// owned by the Node so that it goes when the Node goes; `extra` adds top-level fields such as
/// `spec` and `status`.
pub fn rollcache_node(node: &str, node_uid: &str, extra: Value) -> Value {
    let mut obj = json!({
        "apiVersion": "rollcache.io/v1alpha1", "kind": "RollcacheNode",
        "metadata": {"name": node, "labels": {"app": "rollcache"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": node_uid}]},
    });
    if let (Some(o), Some(e)) = (obj.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    obj
}

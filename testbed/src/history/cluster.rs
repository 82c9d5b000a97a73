//! Cluster objects beside the workload history: Nodes and image pull Secrets.

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

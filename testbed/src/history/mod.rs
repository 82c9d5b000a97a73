//! History objects exactly as Kubernetes and Helm store them, built once for the tests, the
//! benchmarks and the demo: the controllers' ReplicaSets and ControllerRevisions, Pods, Nodes,
//! pull Secrets, and Helm's release Secrets and ConfigMaps.

mod apps;
mod cluster;
pub mod helm;
mod recorded;

use std::io::Write;

use base64::Engine;
use serde_json::{Value, json};

pub use apps::*;
pub use cluster::*;
pub use recorded::recorded;

/// Standard padded base64, as Secret data travels on the wire and as Helm encodes its releases.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// gzip at Go's default level, as Helm compresses its releases.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    gzip_at(bytes, flate2::Compression::default())
}

/// gzip at `level`.
pub fn gzip_at(bytes: &[u8], level: flate2::Compression) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), level);
    enc.write_all(bytes).expect("gzip to memory");
    enc.finish().expect("gzip to memory")
}

/// Applies `patch` to `obj` as a JSON merge patch (RFC 7386): objects merge key by key, `null`
/// removes a key, anything else replaces. How callers add the fields only they need.
pub fn merge(obj: &mut Value, patch: Value) {
    let Value::Object(patch) = patch else {
        *obj = patch;
        return;
    };
    if !obj.is_object() {
        *obj = json!({});
    }
    let Some(target) = obj.as_object_mut() else {
        return;
    };
    for (key, value) in patch {
        if value.is_null() {
            target.remove(&key);
        } else {
            merge(target.entry(key).or_insert(Value::Null), value);
        }
    }
}

/// Objects as `kubectl get KIND -o json` prints them: a `v1` `List`.
pub fn list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_is_a_json_merge_patch() {
        let mut obj = json!({"a": {"b": 1, "c": 2}, "d": [1], "e": "x"});
        merge(
            &mut obj,
            json!({"a": {"b": 3, "c": null, "f": {"g": true}}, "d": [2], "h": 4}),
        );
        assert_eq!(
            obj,
            json!({"a": {"b": 3, "f": {"g": true}}, "d": [2], "e": "x", "h": 4})
        );
    }
}

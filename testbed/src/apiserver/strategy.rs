//! The registry strategies the real server applies to a write: what of a body is kept (status
//! on the object, only status on `/status`), server-set metadata and generation, Go's encoding
//! defaults, merge patches, and when a write changes nothing.

use serde_json::{Value, json};

use super::resources::ResourceDef;

/// The registry strategy: what of `incoming` a write may change, on top of `old`.
pub(super) fn prepare(
    def: &ResourceDef,
    old: Option<&Value>,
    mut new: Value,
    status_sub: bool,
) -> Value {
    let status_of = |o: Option<&Value>| o.and_then(|o| o.get("status")).cloned();
    if status_sub {
        // `/status` changes only status; metadata (labels included) and spec stay as stored.
        let status = new.get("status").cloned();
        let managed = new["metadata"].get("managedFields").cloned();
        new = old.cloned().unwrap_or_else(|| json!({}));
        put_opt(&mut new, "status", status);
        put_opt(&mut new["metadata"], "managedFields", managed);
    } else if def.status {
        let kept = match old {
            Some(_) => status_of(old),
            // Status is cleared on create, except where the real server lets it through.
            None => match def.kind {
                "Node" => new.get("status").cloned(),
                "Namespace" => Some(json!({"phase": "Active"})),
                "Pod" => Some(json!({"phase": "Pending"})),
                _ => None,
            },
        };
        put_opt(&mut new, "status", kept);
    }
    let meta = &mut new["metadata"];
    if let Some(o) = old {
        for k in ["uid", "creationTimestamp", "generation", "resourceVersion"] {
            put_opt(meta, k, o["metadata"].get(k).cloned());
        }
    }
    if def.generation {
        let strip = |o: &Value| {
            let mut o = o.clone();
            if let Some(m) = o.as_object_mut() {
                m.remove("metadata");
                m.remove("status");
            }
            o
        };
        let generation = match old {
            None => 1,
            Some(o) => {
                let g = o["metadata"]["generation"].as_i64().unwrap_or(1);
                if strip(o) == strip(&new) { g } else { g + 1 }
            }
        };
        new["metadata"]["generation"] = json!(generation);
    }
    new
}

/// Go encodes these fields of an events.k8s.io Event even when unset; they are no one's fields.
pub(super) fn go_defaults(def: &ResourceDef, obj: &mut Value) {
    if def.group == "events.k8s.io" {
        for (k, v) in [
            ("deprecatedFirstTimestamp", Value::Null),
            ("deprecatedLastTimestamp", Value::Null),
            ("deprecatedSource", json!({})),
        ] {
            if obj.get(k).is_none() {
                obj[k] = v;
            }
        }
    }
}

fn put_opt(obj: &mut Value, key: &str, v: Option<Value>) {
    match v {
        Some(v) => obj[key] = v,
        None => {
            if let Some(m) = obj.as_object_mut() {
                m.remove(key);
            }
        }
    }
}

/// Equal but for resourceVersion and managedFields times: the real server then writes nothing.
pub(super) fn same(a: &Value, b: &Value) -> bool {
    let norm = |o: &Value| {
        let mut o = o.clone();
        if let Some(m) = o["metadata"].as_object_mut() {
            m.remove("resourceVersion");
            if let Some(Value::Array(list)) = m.get_mut("managedFields") {
                for e in list {
                    if let Some(e) = e.as_object_mut() {
                        e.remove("time");
                    }
                }
            }
        }
        o
    };
    norm(a) == norm(b)
}

/// RFC 7386: objects merge, `null` removes, everything else replaces.
pub(super) fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    for (k, v) in p {
        if v.is_null() {
            if let Some(m) = target.as_object_mut() {
                m.remove(k);
            }
        } else {
            merge_patch(&mut target[k.as_str()], v);
        }
    }
}

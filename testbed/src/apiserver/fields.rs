//! Field ownership as server-side apply keeps it in `metadata.managedFields`, simplified: objects
//! merge key by key, lists and scalars are atomic (a CRD's default), an update owns (`.`) the
//! objects it creates; conflicts, forced takeovers and removal of fields a manager stopped
//! applying follow the real server.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

/// A field, as keys from the object's root (`["status", "desired"]`).
pub(super) type Path = Vec<String>;
pub(super) type FieldSet = BTreeSet<Path>;

/// The path element that stands for an object itself (`.` in `FieldsV1`).
const SELF: &str = ".";

/// Metadata the server owns: never part of what a manager sets.
const SERVER_META: &[&str] = &[
    "name",
    "namespace",
    "generateName",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// Whether a field belongs to the part a write may change: `status` on `/status`, everything
/// else on the object when the resource has a status subresource.
pub(super) fn in_scope(path: &Path, status_sub: bool, has_status: bool) -> bool {
    let is_status = path.first().is_some_and(|k| k == "status");
    if status_sub {
        is_status
    } else {
        !(has_status && is_status)
    }
}

/// The leaf fields an object sets.
pub(super) fn leaves(obj: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    if let Some(m) = obj.as_object() {
        for (k, v) in m {
            if k == "apiVersion" || k == "kind" {
                continue;
            }
            let mut path = vec![k.clone()];
            if k == "metadata" {
                for (mk, mv) in v.as_object().into_iter().flatten() {
                    if !SERVER_META.contains(&mk.as_str()) {
                        path.push(mk.clone());
                        walk(mv, &mut path, &mut out);
                        path.pop();
                    }
                }
                continue;
            }
            walk(v, &mut path, &mut out);
        }
    }
    out
}

/// Object references in events are atomic structs in the real schema: owned whole.
fn atomic(path: &Path) -> bool {
    path.len() == 1 && matches!(path[0].as_str(), "regarding" | "related" | "involvedObject")
}

fn walk(v: &Value, path: &mut Path, out: &mut FieldSet) {
    match v.as_object() {
        Some(m) if !m.is_empty() && !atomic(path) => {
            for (k, child) in m {
                path.push(k.clone());
                walk(child, path, out);
                path.pop();
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

/// Fields whose values differ between two objects (what an update changed).
pub(super) fn changed(old: Option<&Value>, new: &Value) -> FieldSet {
    let mut all = leaves(new);
    if let Some(o) = old {
        all.extend(leaves(o));
    }
    let mut out: FieldSet = all
        .into_iter()
        .filter(|p| old.and_then(|o| get(o, p)) != get(new, p))
        .collect();
    created_objects(new, old, &mut Vec::new(), &mut out);
    out
}

/// Marks (`.`) each object an update brings into being, as the real server records it: the
/// writer then owns the map itself, not only its keys.
fn created_objects(new: &Value, old: Option<&Value>, path: &mut Path, out: &mut FieldSet) {
    let Some(m) = new.as_object().filter(|m| !m.is_empty() && !atomic(path)) else {
        return;
    };
    let is_new = old
        .and_then(|o| get(o, path))
        .is_none_or(|v| !v.is_object());
    if is_new && !path.is_empty() && path.as_slice() != ["metadata"] {
        let mut own = path.clone();
        own.push(SELF.to_string());
        out.insert(own);
    }
    for (k, child) in m {
        if path.is_empty() && (k == "apiVersion" || k == "kind") {
            continue;
        }
        if path.as_slice() == ["metadata"] && SERVER_META.contains(&k.as_str()) {
            continue;
        }
        path.push(k.clone());
        created_objects(child, old, path, out);
        path.pop();
    }
}

/// Whether two fields overlap: the same, or one inside the other.
pub(super) fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

pub(super) fn get<'a>(obj: &'a Value, path: &Path) -> Option<&'a Value> {
    path.iter().try_fold(obj, |v, k| v.as_object()?.get(k))
}

pub(super) fn set(obj: &mut Value, path: &Path, value: Value) {
    let mut cur = obj;
    for k in &path[..path.len().saturating_sub(1)] {
        if !cur.get(k).is_some_and(Value::is_object) {
            cur[k.as_str()] = json!({});
        }
        cur = &mut cur[k.as_str()];
    }
    if let Some(last) = path.last() {
        // An empty object in a configuration claims the field, it does not erase what is there.
        if value.as_object().is_some_and(Map::is_empty)
            && cur.get(last).is_some_and(Value::is_object)
        {
            return;
        }
        cur[last.as_str()] = value;
    }
}

/// Removes a field, and the objects it leaves empty (the real server prunes them too).
pub(super) fn remove(obj: &mut Value, path: &Path) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    if let Some(Value::Object(m)) = parents
        .iter()
        .try_fold(&mut *obj, |v, k| v.as_object_mut()?.get_mut(k))
    {
        m.remove(last);
        if m.is_empty() && !parents.is_empty() {
            remove(obj, &parents.to_vec());
        }
    }
}

/// A field set in the `FieldsV1` form: `{"f:status": {"f:desired": {}}}`.
pub(super) fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = json!({});
    for path in set {
        let mut cur = &mut root;
        for k in path {
            let key = if k == SELF {
                SELF.to_string()
            } else {
                format!("f:{k}")
            };
            cur = &mut cur[key];
            if !cur.is_object() {
                *cur = json!({});
            }
        }
    }
    root
}

pub(super) fn from_fields_v1(v: &Value) -> FieldSet {
    fn go(v: &Value, path: &mut Path, out: &mut FieldSet) {
        let children: Vec<(&String, &Value)> = v
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.starts_with("f:") || k.as_str() == SELF)
            .collect();
        if children.is_empty() {
            if !path.is_empty() {
                out.insert(path.clone());
            }
            return;
        }
        for (k, child) in children {
            path.push(k.strip_prefix("f:").unwrap_or(k).to_string());
            go(child, path, out);
            path.pop();
        }
    }
    let mut out = FieldSet::new();
    go(v, &mut Vec::new(), &mut out);
    out
}

/// One `managedFields` entry.
#[derive(Clone, Debug)]
pub(super) struct Entry {
    pub(super) manager: String,
    pub(super) apply: bool,
    pub(super) subresource: bool,
    pub(super) api_version: String,
    pub(super) time: String,
    pub(super) fields: FieldSet,
}

impl Entry {
    fn same_owner(&self, manager: &str, apply: bool, subresource: bool) -> bool {
        self.manager == manager && self.apply == apply && self.subresource == subresource
    }

    /// How the real server names the owner in a conflict.
    fn describe(&self) -> String {
        let mut s = format!("conflict with \"{}\"", self.manager);
        if !self.apply {
            s.push_str(&format!(" using {}", self.api_version));
        }
        if self.subresource {
            s.push_str(" with subresource \"status\"");
        }
        s
    }
}

pub(super) fn entries(obj: &Value) -> Vec<Entry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| Entry {
            manager: e["manager"].as_str().unwrap_or("").to_string(),
            apply: e["operation"] == "Apply",
            subresource: e["subresource"] == "status",
            api_version: e["apiVersion"].as_str().unwrap_or("").to_string(),
            time: e["time"].as_str().unwrap_or("").to_string(),
            fields: from_fields_v1(&e["fieldsV1"]),
        })
        .collect()
}

/// Writes the entries in the real server's order: appliers first, then by time, manager,
/// subresource.
pub(super) fn write_entries(obj: &mut Value, entries: &[Entry]) {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| {
        (!a.apply, &a.time, &a.manager, &a.api_version, a.subresource).cmp(&(
            !b.apply,
            &b.time,
            &b.manager,
            &b.api_version,
            b.subresource,
        ))
    });
    let list: Vec<Value> = sorted
        .into_iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": if e.apply { "Apply" } else { "Update" },
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&e.fields),
            });
            if e.subresource {
                v["subresource"] = json!("status");
            }
            v
        })
        .collect();
    if list.is_empty() {
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("managedFields");
        }
    } else {
        obj["metadata"]["managedFields"] = Value::Array(list);
    }
}

/// Who writes, and to which part.
pub(super) struct Writer<'a> {
    pub(super) manager: &'a str,
    pub(super) subresource: bool,
    pub(super) api_version: &'a str,
    pub(super) time: &'a str,
}

/// Records an update (create, PUT, merge patch): the fields it changed become the writer's, and
/// no one else's.
pub(super) fn record_update(entries: &mut Vec<Entry>, w: &Writer<'_>, changed: FieldSet) {
    if changed.is_empty() {
        return;
    }
    for e in entries.iter_mut() {
        e.fields.retain(|p| !changed.iter().any(|c| overlaps(p, c)));
    }
    match entries
        .iter_mut()
        .find(|e| e.same_owner(w.manager, false, w.subresource))
    {
        Some(e) => {
            e.fields.extend(changed);
            e.time = w.time.to_string();
        }
        None => entries.push(Entry {
            manager: w.manager.to_string(),
            apply: false,
            subresource: w.subresource,
            api_version: w.api_version.to_string(),
            time: w.time.to_string(),
            fields: changed,
        }),
    }
    entries.retain(|e| !e.fields.is_empty());
}

/// A field another manager owns with a different value: `(owner description, .dotted.path)`.
pub(super) type Conflict = (String, String);

/// Server-side apply of `config` (already cut to the writable part) onto `live`: returns the new
/// object with its managed fields, or the conflicts when `force` is not given.
pub(super) fn apply(
    live: &Value,
    config: &Value,
    w: &Writer<'_>,
    force: bool,
) -> Result<Value, Vec<Conflict>> {
    let applied = leaves(config);
    let mut entries = entries(live);
    let mut conflicts = Vec::new();
    for p in &applied {
        if get(live, p) == get(config, p) {
            continue;
        }
        for e in &entries {
            if !e.same_owner(w.manager, true, w.subresource)
                && e.fields.iter().any(|f| overlaps(f, p))
            {
                conflicts.push((e.describe(), format!(".{}", p.join("."))));
            }
        }
    }
    if !conflicts.is_empty() {
        if !force {
            return Err(conflicts);
        }
        for e in entries.iter_mut() {
            if !e.same_owner(w.manager, true, w.subresource) {
                e.fields.retain(|f| {
                    !applied
                        .iter()
                        .any(|p| overlaps(f, p) && get(live, p) != get(config, p))
                });
            }
        }
    }
    let mut obj = live.clone();
    let previous = entries
        .iter()
        .find(|e| e.same_owner(w.manager, true, w.subresource))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    for p in previous.difference(&applied) {
        let shared = entries.iter().any(|e| {
            !e.same_owner(w.manager, true, w.subresource) && e.fields.iter().any(|f| overlaps(f, p))
        });
        if !shared {
            remove(&mut obj, p);
        }
    }
    for p in &applied {
        if let Some(v) = get(config, p) {
            set(&mut obj, p, v.clone());
        }
    }
    entries.retain(|e| !e.same_owner(w.manager, true, w.subresource));
    entries.push(Entry {
        manager: w.manager.to_string(),
        apply: true,
        subresource: w.subresource,
        api_version: w.api_version.to_string(),
        time: w.time.to_string(),
        fields: applied,
    });
    write_entries(&mut obj, &entries);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Path {
        s.split('.').map(str::to_string).collect()
    }

    #[test]
    fn fields_v1_round_trip_and_leaves() {
        let obj = json!({"apiVersion": "x/v1", "kind": "K",
            "metadata": {"name": "n", "uid": "u", "labels": {"a": "1"}},
            "status": {"desired": 3, "notSafe": [{"r": 1}], "empty": {}}});
        let set = leaves(&obj);
        let want: FieldSet = [
            p("metadata.labels.a"),
            p("status.desired"),
            p("status.notSafe"),
            p("status.empty"),
        ]
        .into_iter()
        .collect();
        assert_eq!(set, want);
        assert_eq!(from_fields_v1(&to_fields_v1(&set)), set);
    }

    #[test]
    fn apply_removes_what_the_manager_stopped_applying_and_detects_conflicts() {
        let w = Writer {
            manager: "agent",
            subresource: true,
            api_version: "x/v1",
            time: "t",
        };
        let live = json!({"metadata": {"name": "n"}});
        let first = json!({"status": {"desired": 3, "reason": "r"}});
        let obj = apply(&live, &first, &w, false).expect("first apply");
        let second = json!({"status": {"desired": 4}});
        let obj = apply(&obj, &second, &w, false).expect("second apply");
        assert_eq!(obj["status"], json!({"desired": 4}));
        let other = Writer {
            manager: "other",
            ..w
        };
        let err = apply(&obj, &json!({"status": {"desired": 5}}), &other, false)
            .expect_err("another manager's field");
        assert_eq!(
            err,
            vec![(
                "conflict with \"agent\" with subresource \"status\"".to_string(),
                ".status.desired".to_string()
            )]
        );
        // Same value: shared, no conflict.
        apply(&obj, &json!({"status": {"desired": 4}}), &other, false).expect("same value");
        let forced = apply(&obj, &json!({"status": {"desired": 5}}), &other, true).expect("force");
        assert_eq!(forced["status"]["desired"], 5);
        let owners = entries(&forced);
        assert_eq!(
            owners.len(),
            1,
            "the takeover leaves agent nothing: {owners:?}"
        );
        assert_eq!(owners[0].manager, "other");
    }
}

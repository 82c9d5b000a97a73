//! Writes as the real server answers them: POST, PUT (409 on a stale resourceVersion), PATCH
//! (server-side apply, merge patch) and DELETE, on an object and on its `/status`, with the
//! strategies of the real registry (status kept on the object, only status on `/status`,
//! generation, server-set metadata, no-op writes that change nothing).

use std::collections::BTreeMap;

use axum::body::Body;
use http::{Method, Response, StatusCode};
use serde_json::{Value, json};

use super::fields::{self, Writer};
use super::resources::{RESOURCES, ResourceDef, etcd_key};
use super::routes::{Target, json_response, status, status_response};
use super::strategy::{go_defaults, merge_patch, prepare, same};
use super::{Shared, now_rfc3339};

/// A write request, decoded.
pub(super) struct WriteReq<'a> {
    pub(super) method: &'a Method,
    pub(super) content_type: &'a str,
    pub(super) user_agent: &'a str,
    pub(super) params: &'a BTreeMap<String, String>,
    pub(super) body: &'a [u8],
}

fn not_found(shared: &Shared, def: &ResourceDef, name: &str) -> Response<Body> {
    let msg = format!("{} \"{name}\" not found", def.qualified());
    json_response(
        shared,
        StatusCode::NOT_FOUND,
        &status(404, "NotFound", &msg, Some(details(def, name))),
    )
}

fn details(def: &ResourceDef, name: &str) -> Value {
    let mut d = json!({"name": name});
    if !def.group.is_empty() {
        d["group"] = json!(def.group);
    }
    d["kind"] = json!(def.plural);
    d
}

fn bad_request(shared: &Shared, msg: &str) -> Response<Body> {
    status_response(shared, StatusCode::BAD_REQUEST, "BadRequest", msg)
}

pub(super) fn handle_write(shared: &Shared, target: &Target, req: &WriteReq<'_>) -> Response<Body> {
    let def = &RESOURCES[target.resource];
    let name = target.name.as_deref();
    let m = req.method;
    match name {
        None if m == Method::POST && !target.status => create(shared, target, def, req),
        Some(n) if m == Method::PUT || m == Method::PATCH => {
            write_named(shared, target, def, n, req)
        }
        Some(n) if m == Method::DELETE && !target.status => delete(shared, target, def, n, req),
        _ => status_response(
            shared,
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!("the server does not allow this method on the requested resource ({m})"),
        ),
    }
}

/// The body as an object of the URL's kind, or why not (a 400 BadRequest).
fn parse_body(def: &ResourceDef, body: &[u8]) -> Result<Value, String> {
    let obj: Value = serde_json::from_slice(body).map_err(|e| {
        format!("the body of the request is not valid JSON for the test API server: {e}")
    })?;
    if !obj.is_object() {
        return Err("the body of the request is not an object".into());
    }
    let want = def.api_version();
    if let Some(av) = obj["apiVersion"].as_str()
        && av != want
    {
        return Err(format!(
            "the API version in the data ({av}) does not match the expected API version ({want})"
        ));
    }
    Ok(obj)
}

/// A body of another kind: 422 Invalid naming the field, as the real server answers.
fn wrong_kind(shared: &Shared, def: &ResourceDef, body: &Value) -> Option<Response<Body>> {
    let kind = body["kind"].as_str().filter(|k| *k != def.kind)?;
    let name = body["metadata"]["name"].as_str().unwrap_or("");
    let qualified = if def.group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{}", def.group)
    };
    let cause = format!("Invalid value: \"{kind}\": must be {}", def.kind);
    let msg = format!("{qualified} \"{name}\" is invalid: kind: {cause}");
    let mut d = json!({"name": name, "kind": kind,
        "causes": [{"reason": "FieldValueInvalid", "message": cause, "field": "kind"}]});
    if !def.group.is_empty() {
        d["group"] = json!(def.group);
    }
    Some(json_response(
        shared,
        StatusCode::UNPROCESSABLE_ENTITY,
        &status(422, "Invalid", &msg, Some(d)),
    ))
}

/// `dryRun=All`: answer as the write would, store nothing.
fn dry_run(req: &WriteReq<'_>) -> bool {
    req.params.get("dryRun").is_some_and(|d| d == "All")
}

/// The manager a write is recorded under: `fieldManager`, else the User-Agent's product, as the
/// real server derives it.
fn manager<'a>(req: &'a WriteReq<'_>) -> &'a str {
    match req.params.get("fieldManager") {
        Some(m) => m,
        None => req.user_agent.split('/').next().unwrap_or(""),
    }
}

fn create(
    shared: &Shared,
    target: &Target,
    def: &ResourceDef,
    req: &WriteReq<'_>,
) -> Response<Body> {
    let mut obj = match parse_body(def, req.body) {
        Ok(o) => o,
        Err(e) => return bad_request(shared, &e),
    };
    if let Some(r) = wrong_kind(shared, def, &obj) {
        return r;
    }
    obj["apiVersion"] = json!(def.api_version());
    obj["kind"] = json!(def.kind);
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    let namespace = target.namespace.clone().unwrap_or_default();
    if def.namespaced {
        match obj["metadata"]["namespace"].as_str() {
            Some(ns) if !ns.is_empty() && ns != namespace => {
                return bad_request(
                    shared,
                    "the namespace of the provided object does not match the namespace sent on the request",
                );
            }
            _ => obj["metadata"]["namespace"] = json!(namespace),
        }
    } else if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("namespace");
    }
    let mut st = shared.lock();
    let mut name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    if name.is_empty() {
        let Some(prefix) = obj["metadata"]["generateName"]
            .as_str()
            .filter(|g| !g.is_empty())
        else {
            drop(st);
            let qualified = if def.group.is_empty() {
                def.kind.to_string()
            } else {
                format!("{}.{}", def.kind, def.group)
            };
            let msg = format!(
                "{qualified} \"\" is invalid: metadata.name: Required value: name or generateName is required"
            );
            let mut s = status(422, "Invalid", &msg, None);
            s["details"] = json!({"kind": def.kind, "causes": [{"reason": "FieldValueRequired",
                "message": "Required value: name or generateName is required", "field": "metadata.name"}]});
            if !def.group.is_empty() {
                s["details"]["group"] = json!(def.group);
            }
            return json_response(shared, StatusCode::UNPROCESSABLE_ENTITY, &s);
        };
        name = format!("{prefix}{:05x}", (st.uids * 7919 + 12345) % 0xfffff);
        obj["metadata"]["name"] = json!(name);
    }
    let key = (target.resource, etcd_key(def, &namespace, &name));
    if st.objects.contains_key(&key) {
        drop(st);
        let msg = format!("{} \"{name}\" already exists", def.qualified());
        return json_response(
            shared,
            StatusCode::CONFLICT,
            &status(409, "AlreadyExists", &msg, Some(details(def, &name))),
        );
    }
    let mut obj = prepare(def, None, obj, false);
    st.uids += 1;
    obj["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{:012x}", st.uids));
    obj["metadata"]["creationTimestamp"] = json!(now_rfc3339());
    let time = now_rfc3339();
    let w = Writer {
        manager: manager(req),
        subresource: false,
        api_version: &def.api_version(),
        time: &time,
    };
    let mut entries = Vec::new();
    fields::record_update(&mut entries, &w, fields::changed(None, &obj));
    fields::write_entries(&mut obj, &entries);
    go_defaults(def, &mut obj);
    if dry_run(req) {
        drop(st);
        return json_response(shared, StatusCode::CREATED, &obj);
    }
    let stored = shared.commit(&mut st, key, namespace, obj);
    drop(st);
    json_response(shared, StatusCode::CREATED, &stored)
}

/// PUT and PATCH of a named object or its `/status`.
fn write_named(
    shared: &Shared,
    target: &Target,
    def: &ResourceDef,
    name: &str,
    req: &WriteReq<'_>,
) -> Response<Body> {
    let ct = req.content_type.split(';').next().unwrap_or("").trim();
    let is_apply = req.method == Method::PATCH && ct == "application/apply-patch+yaml";
    if req.method == Method::PATCH
        && !matches!(
            ct,
            "application/apply-patch+yaml"
                | "application/merge-patch+json"
                | "application/strategic-merge-patch+json"
        )
        || (ct == "application/strategic-merge-patch+json" && def.crd)
    {
        // JSON patch is left out; strategic merge is not served for custom resources.
        return status_response(
            shared,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
        );
    }
    let manager = manager(req).to_string();
    // Apply takes no manager from the User-Agent: it must be named.
    if is_apply && req.params.get("fieldManager").is_none_or(String::is_empty) {
        let mut s = status(
            422,
            "Invalid",
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            None,
        );
        s["details"] = json!({"group": "meta.k8s.io", "kind": "PatchOptions", "causes": [{
            "reason": "FieldValueRequired", "message": "Required value: is required for apply patch",
            "field": "fieldManager"}]});
        return json_response(shared, StatusCode::UNPROCESSABLE_ENTITY, &s);
    }
    let body = match parse_body(def, req.body) {
        Ok(b) => b,
        Err(e) => return bad_request(shared, &e),
    };
    if let Some(r) = wrong_kind(shared, def, &body) {
        return r;
    }
    let is_merge = req.method == Method::PATCH && !is_apply;
    if is_apply && (body.get("apiVersion").is_none() || body.get("kind").is_none()) {
        let av = body["apiVersion"].as_str().unwrap_or("/");
        let kind = body["kind"].as_str().unwrap_or("");
        return bad_request(shared, &format!("invalid object type: {av}, Kind={kind}"));
    }
    // A merge patch may leave the name out, not change it.
    let body_name = body["metadata"]["name"].as_str();
    if !is_merge || body_name.is_some() {
        let body_name = body_name.unwrap_or("");
        if body_name != name {
            return bad_request(
                shared,
                &format!(
                    "the name of the object ({body_name}) does not match the name on the URL ({name})"
                ),
            );
        }
    }
    let namespace = target.namespace.clone().unwrap_or_default();
    let key = (target.resource, etcd_key(def, &namespace, name));
    let mut st = shared.lock();
    let old = st.objects.get(&key).cloned();
    // A resourceVersion in the body is a precondition, for every kind of write.
    let wanted_rv = body["metadata"]["resourceVersion"].as_str().unwrap_or("");
    if let Some(o) = &old
        && !wanted_rv.is_empty()
        && Some(wanted_rv) != o["metadata"]["resourceVersion"].as_str()
    {
        drop(st);
        let msg = format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            def.qualified()
        );
        return json_response(
            shared,
            StatusCode::CONFLICT,
            &status(409, "Conflict", &msg, Some(details(def, name))),
        );
    }
    // Custom resources allow no unconditional replace.
    if def.crd && old.is_some() && req.method == Method::PUT && wanted_rv.is_empty() {
        drop(st);
        let field = "metadata.resourceVersion";
        let cause = "Invalid value: 0: must be specified for an update";
        let msg = format!(
            "{} \"{name}\" is invalid: {field}: {cause}",
            def.qualified()
        );
        let mut d = details(def, name);
        d["causes"] = json!([{"reason": "FieldValueInvalid", "message": cause, "field": field}]);
        return json_response(
            shared,
            StatusCode::UNPROCESSABLE_ENTITY,
            &status(422, "Invalid", &msg, Some(d)),
        );
    }
    let time = now_rfc3339();
    let api_version = def.api_version();
    let w = Writer {
        manager: &manager,
        subresource: target.status,
        api_version: &api_version,
        time: &time,
    };
    let in_scope = |p: &fields::Path| fields::in_scope(p, target.status, def.status);
    let new = match (&old, is_apply) {
        (None, true) if !target.status => {
            // Apply is an upsert: a new object is created from the configuration.
            st.uids += 1;
            let mut base = json!({"apiVersion": api_version, "kind": def.kind,
                "metadata": {"name": name, "uid": format!("00000000-0000-4000-8000-{:012x}", st.uids),
                    "creationTimestamp": now_rfc3339()}});
            if def.namespaced {
                base["metadata"]["namespace"] = json!(namespace);
            }
            apply_scoped(&base, &body, &w, req, in_scope).map(|o| prepare(def, None, o, false))
        }
        (None, _) => {
            drop(st);
            return not_found(shared, def, name);
        }
        (Some(old), true) => apply_scoped(old, &body, &w, req, in_scope)
            .map(|o| prepare(def, Some(&**old), o, target.status)),
        (Some(old), false) => {
            let mut incoming = if is_merge {
                let mut o = (**old).clone();
                merge_patch(&mut o, &body);
                o
            } else {
                body
            };
            incoming["apiVersion"] = json!(api_version);
            incoming["kind"] = json!(def.kind);
            incoming["metadata"]["name"] = json!(name);
            if def.namespaced {
                incoming["metadata"]["namespace"] = json!(namespace);
            }
            // The stored managedFields stand unless the writer replaces them on purpose.
            if incoming["metadata"].get("managedFields").is_none() {
                incoming["metadata"]["managedFields"] = old["metadata"]
                    .get("managedFields")
                    .cloned()
                    .unwrap_or(json!([]));
            }
            let mut new = prepare(def, Some(&**old), incoming, target.status);
            let mut entries = fields::entries(&new);
            let changed = fields::changed(Some(&**old), &new);
            fields::record_update(
                &mut entries,
                &w,
                changed.into_iter().filter(in_scope).collect(),
            );
            fields::write_entries(&mut new, &entries);
            Ok(new)
        }
    };
    let mut new = match new {
        Ok(n) => n,
        Err(conflicts) => {
            drop(st);
            return conflict_response(shared, &conflicts);
        }
    };
    go_defaults(def, &mut new);
    if let Some(old) = &old
        && same(old, &new)
    {
        drop(st);
        return json_response(shared, StatusCode::OK, old);
    }
    let code = if old.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    if dry_run(req) {
        drop(st);
        return json_response(shared, code, &new);
    }
    let stored = shared.commit(&mut st, key, namespace, new);
    drop(st);
    json_response(shared, code, &stored)
}

fn apply_scoped(
    live: &Value,
    body: &Value,
    w: &Writer<'_>,
    req: &WriteReq<'_>,
    in_scope: impl Fn(&fields::Path) -> bool,
) -> Result<Value, Vec<fields::Conflict>> {
    // What the strategy would throw away is not applied, and so not owned (the SSA reset fields).
    let mut config = json!({});
    for p in fields::leaves(body).into_iter().filter(|p| in_scope(p)) {
        if let Some(v) = fields::get(body, &p) {
            fields::set(&mut config, &p, v.clone());
        }
    }
    let force = req.params.get("force").is_some_and(|f| f == "true");
    fields::apply(live, &config, w, force)
}

fn conflict_response(shared: &Shared, conflicts: &[fields::Conflict]) -> Response<Body> {
    let n = conflicts.len();
    let list: Vec<String> = conflicts
        .iter()
        .map(|(who, f)| format!("{who}: {f}"))
        .collect();
    let msg = if n == 1 {
        format!("Apply failed with 1 conflict: {}", list[0])
    } else {
        format!("Apply failed with {n} conflicts: {}", list.join("\n"))
    };
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(who, f)| json!({"reason": "FieldManagerConflict", "message": who, "field": f}))
        .collect();
    json_response(
        shared,
        StatusCode::CONFLICT,
        &status(409, "Conflict", &msg, Some(json!({"causes": causes}))),
    )
}

/// A DELETE; dependents go too unless the body asks to orphan them (they then keep their
/// ownerReferences, which the real garbage collector would strip).
fn delete(
    shared: &Shared,
    target: &Target,
    def: &ResourceDef,
    name: &str,
    req: &WriteReq<'_>,
) -> Response<Body> {
    let orphan = serde_json::from_slice::<Value>(req.body)
        .ok()
        .is_some_and(|b| b["propagationPolicy"] == "Orphan" || b["orphanDependents"] == true)
        || req.params.get("propagationPolicy").map(String::as_str) == Some("Orphan");
    let namespace = target.namespace.clone().unwrap_or_default();
    let key = (target.resource, etcd_key(def, &namespace, name));
    let mut st = shared.lock();
    let gone = if dry_run(req) {
        st.objects.get(&key).cloned()
    } else {
        shared.remove(&mut st, &key, &namespace, !orphan)
    };
    let Some(gone) = gone else {
        drop(st);
        return not_found(shared, def, name);
    };
    drop(st);
    let mut d = details(def, name);
    d["uid"] = gone["metadata"]["uid"].clone();
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": d});
    json_response(shared, StatusCode::OK, &body)
}

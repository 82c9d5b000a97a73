//! Reads of the test API server: GET of one object, and lists with selectors and
//! `limit`/`continue` pages, in etcd key order.

use std::collections::BTreeMap;

use axum::body::Body;
use base64::Engine as _;
use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::Shared;
use super::resources::{RESOURCES, ResourceDef, etcd_key};
use super::routes::{Target, json_response, status, status_response};
use super::selector::{FieldSelector, LabelSelector};

pub(super) fn get_one(
    shared: &Shared,
    target: &Target,
    def: &ResourceDef,
    name: &str,
) -> Response<Body> {
    let key = (
        target.resource,
        etcd_key(def, target.namespace.as_deref().unwrap_or(""), name),
    );
    let found = shared.lock().objects.get(&key).cloned();
    match found {
        Some(obj) => json_response(shared, StatusCode::OK, &obj),
        None => {
            let mut details = json!({"name": name});
            if !def.group.is_empty() {
                details["group"] = json!(def.group);
            }
            details["kind"] = json!(def.plural);
            let msg = format!("{} \"{name}\" not found", def.qualified());
            json_response(
                shared,
                StatusCode::NOT_FOUND,
                &status(404, "NotFound", &msg, Some(details)),
            )
        }
    }
}

pub(super) struct Filter {
    pub(super) resource: usize,
    pub(super) namespace: Option<String>,
    pub(super) labels: LabelSelector,
    pub(super) fields: FieldSelector,
}

impl Filter {
    pub(super) fn in_scope(&self, resource: usize, namespace: &str) -> bool {
        resource == self.resource && self.namespace.as_deref().is_none_or(|ns| ns == namespace)
    }

    pub(super) fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    v: String,
    rv: u64,
    start: String,
}

pub(super) fn list(
    shared: &Shared,
    filter: &Filter,
    params: &BTreeMap<String, String>,
) -> Response<Body> {
    let def = &RESOURCES[filter.resource];
    let limit = params
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let token = match params.get("continue").filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => match base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(c.trim_end_matches('='))
            .ok()
            .and_then(|b| serde_json::from_slice::<ContinueToken>(&b).ok())
        {
            Some(t) => Some(t),
            None => {
                return status_response(
                    shared,
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
                );
            }
        },
    };
    let st = shared.lock();
    if let Some(t) = &token
        && t.rv < st.floor
    {
        drop(st);
        return status_response(
            shared,
            StatusCode::GONE,
            "Expired",
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
        );
    }
    if params.get("resourceVersionMatch").map(String::as_str) == Some("Exact")
        && let Some(rv) = params
            .get("resourceVersion")
            .and_then(|r| r.parse::<u64>().ok())
        && rv < st.floor
    {
        let floor = st.floor;
        drop(st);
        return status_response(
            shared,
            StatusCode::GONE,
            "Expired",
            &format!("The resourceVersion for the provided list is too old. ({rv} < {floor})"),
        );
    }
    // Pages after the first report the first page's resourceVersion so that a watch started from
    // it replays whatever changed meanwhile (events are idempotent for clients).
    let list_rv = token.as_ref().map_or(st.rv, |t| t.rv);
    let prefix_ns = filter.namespace.as_ref().map(|ns| format!("{ns}/"));
    // The token's start key is relative to the list's prefix (`/name` within a namespace,
    // `/ns/name` across namespaces), as the real server writes it.
    let start = token.as_ref().map(|t| {
        let rel = t.start.strip_prefix('/').unwrap_or(&t.start);
        format!("{}{rel}", prefix_ns.as_deref().unwrap_or(""))
    });
    let lower = (filter.resource, start.unwrap_or_default());
    let mut items = Vec::new();
    let mut last_key = None;
    let mut more = false;
    let mut remaining = 0u64;
    for ((res, key), obj) in st.objects.range(lower..) {
        if *res != filter.resource {
            break;
        }
        if let Some(p) = &prefix_ns
            && !key.starts_with(p.as_str())
        {
            continue;
        }
        if !filter.matches(obj) {
            continue;
        }
        if limit.is_some_and(|l| items.len() >= l) {
            more = true;
            remaining += 1;
            continue;
        }
        let mut item = (**obj).clone();
        // Items of a list carry no kind/apiVersion, as the real server encodes them.
        if let Some(m) = item.as_object_mut() {
            m.remove("kind");
            m.remove("apiVersion");
        }
        items.push(item);
        last_key = Some(key.clone());
    }
    drop(st);
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if more && let Some(last) = last_key {
        let rel = prefix_ns
            .as_deref()
            .and_then(|p| last.strip_prefix(p))
            .unwrap_or(&last);
        let token = ContinueToken {
            v: "meta.k8s.io/v1".into(),
            rv: list_rv,
            start: format!("/{rel}\u{0}"),
        };
        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&token).unwrap_or_default());
        metadata["continue"] = json!(encoded);
        if filter.labels.is_empty() && filter.fields.is_empty() {
            metadata["remainingItemCount"] = json!(remaining);
        }
    }
    let body = json!({
        "kind": format!("{}List", def.kind),
        "apiVersion": def.api_version(),
        "metadata": metadata,
        "items": items,
    });
    json_response(shared, StatusCode::OK, &body)
}

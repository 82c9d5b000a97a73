//! Discovery as the real server answers it without aggregation: `/api`, `/api/v1`, `/apis`,
//! `/apis/GROUP` and `/apis/GROUP/VERSION`, rollcache's group only while its CRD is installed.

use serde_json::{Value, json};

use super::resources::{RESOURCES, ResourceDef};

/// The verbs the test server answers on a resource and on its `/status`.
const VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];
const STATUS_VERBS: &[&str] = &["get", "patch", "update"];

fn served(crd_installed: bool) -> impl Iterator<Item = &'static ResourceDef> {
    RESOURCES.iter().filter(move |r| !r.crd || crd_installed)
}

/// Groups in the order first served (apps, events.k8s.io, rollcache.io), core excluded.
fn groups(crd_installed: bool) -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in served(crd_installed).filter(|r| !r.group.is_empty()) {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

fn group_doc(group: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
}

/// The discovery document for a path, or None where the real server has nothing (its plain
/// `404 page not found`, as for a group whose CRD is not installed).
pub(super) fn document(path: &str, crd_installed: bool, server: &str) -> Option<Value> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["api"] => Some(json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server}],
        })),
        ["apis"] => {
            let groups: Vec<Value> = groups(crd_installed)
                .into_iter()
                .map(|(g, v)| group_doc(g, v))
                .collect();
            Some(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
        }
        ["apis", group] => {
            let (g, v) = groups(crd_installed)
                .into_iter()
                .find(|(g, _)| g == group)?;
            let mut doc = group_doc(g, v);
            doc["kind"] = json!("APIGroup");
            doc["apiVersion"] = json!("v1");
            Some(doc)
        }
        ["api", "v1"] => Some(resource_list("", "v1", crd_installed)),
        ["apis", group, version] => groups(crd_installed)
            .contains(&(*group, *version))
            .then(|| resource_list(group, version, crd_installed)),
        _ => None,
    }
}

fn resource_list(group: &str, version: &str, crd_installed: bool) -> Value {
    let mut resources = Vec::new();
    for r in served(crd_installed).filter(|r| r.group == group && r.version == version) {
        resources.push(json!({
            "name": r.plural,
            "singularName": r.kind.to_lowercase(),
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": VERBS,
        }));
        if r.status {
            resources.push(json!({
                "name": format!("{}/status", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": STATUS_VERBS,
            }));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

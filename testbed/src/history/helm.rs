//! Helm releases as Helm 3/4 stores them: the release JSON, gzip then base64, under `release` in a
//! `helm.sh/release.v1` Secret (which the API base64s once more on the wire) or in a ConfigMap.

use serde_json::{Value, json};

use super::{b64, gzip};

/// The `modifiedAt` label the generated releases carry (2025-01-10 09:00 UTC).
const MODIFIED_AT: &str = "1736499600";

pub struct Hook<'a> {
    pub name: &'a str,
    pub kind: &'a str,
    pub path: &'a str,
    pub manifest: &'a str,
    pub events: &'a [&'a str],
}

/// Release JSON with the fields Helm 4 writes (chart trimmed); callers [`merge`](super::merge)
/// in a chart, values or dates of their own.
pub fn release_json(
    name: &str,
    namespace: &str,
    version: i64,
    status: &str,
    last_deployed: &str,
    manifest: &str,
    hooks: &[Hook<'_>],
) -> Value {
    json!({
        "name": name,
        "info": {
            "first_deployed": "2025-01-10T09:00:00.123456789Z",
            "last_deployed": last_deployed,
            "deleted": "",
            "description": "Upgrade complete",
            "status": status,
        },
        "chart": {"metadata": {"name": "ioc-instance", "version": "0.3.0", "apiVersion": "v2"},
                  "templates": null, "values": {}},
        "config": {},
        "manifest": manifest,
        "hooks": hooks.iter().map(|h| json!({
            "name": h.name, "kind": h.kind, "path": h.path, "manifest": h.manifest,
            "events": h.events, "last_run": {"started_at": "", "completed_at": "", "phase": ""},
            "delete_policies": ["before-hook-creation"],
        })).collect::<Vec<_>>(),
        "version": version,
        "namespace": namespace,
        "apply_method": "ssa",
    })
}

/// What Helm stores under `release`: base64(gzip(JSON)).
pub fn helm_text(release: &Value) -> String {
    b64(&gzip(release.to_string().as_bytes()))
}

/// The object's name, namespace and labels as Helm's storage driver sets them.
fn metadata(release: &Value) -> Value {
    let name = release["name"].as_str().unwrap_or_default();
    let version = release["version"].as_i64().unwrap_or_default();
    let status = release["info"]["status"].as_str().unwrap_or("deployed");
    json!({
        "name": format!("sh.helm.release.v1.{name}.v{version}"),
        "namespace": release["namespace"],
        "labels": {"modifiedAt": MODIFIED_AT, "name": name, "owner": "helm",
                   "status": status, "version": version.to_string()},
    })
}

/// The release Secret holding `payload` (Helm's text, or anything in its place) as the API
/// serves it.
pub fn secret_with_payload(release: &Value, payload: &[u8]) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
        "metadata": metadata(release),
        "data": {"release": b64(payload)},
    })
}

pub fn secret(release: &Value) -> Value {
    secret_with_payload(release, helm_text(release).as_bytes())
}

/// The release ConfigMap (Helm's `--storage configmap`): Helm's text as it is, no second base64.
pub fn configmap(release: &Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": metadata(release),
        "data": {"release": helm_text(release)},
    })
}

/// The Secret as `kubectl get secret -o yaml` prints it (data base64-encoded once more).
pub fn secret_yaml(release: &Value) -> String {
    let meta = metadata(release);
    let mut out = String::from("apiVersion: v1\ndata:\n");
    out += &format!("  release: {}\n", b64(helm_text(release).as_bytes()));
    out += "kind: Secret\nmetadata:\n  creationTimestamp: \"2025-01-10T09:00:01Z\"\n  labels:\n";
    for (k, v) in meta["labels"].as_object().into_iter().flatten() {
        out += &format!("    {k}: \"{}\"\n", v.as_str().unwrap_or_default());
    }
    out += &format!(
        "  name: {}\n  namespace: {}\n  resourceVersion: \"1234\"\n  uid: 0b5e3c52-5d2f-4c39-9f0e-3c1b1f7c2a10\ntype: helm.sh/release.v1\n",
        meta["name"].as_str().unwrap_or_default(),
        release["namespace"].as_str().unwrap_or_default()
    );
    out
}

/// A StatefulSet document as a chart renders it, with an init container.
pub fn statefulset_doc(name: &str, image: &str) -> String {
    format!(
        "# Source: ioc-instance/templates/statefulset.yaml
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {name}
spec:
  serviceName: {name}
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      initContainers:
        - name: load-config
          image: ghcr.io/epics-containers/ioc-config-loader:1.2.0
      containers:
        - name: ioc
          image: {image}
          imagePullPolicy: IfNotPresent
"
    )
}

/// Release Secret `version` of a chart rendering one Deployment `release` running `image`.
pub fn deployment_release(ns: &str, release: &str, version: i64, image: &str) -> Value {
    let manifest = format!(
        "---\n# Source: app/templates/deployment.yaml\napiVersion: apps/v1\nkind: Deployment\n\
         metadata:\n  name: {release}\nspec:\n  selector:\n    matchLabels:\n      app: {release}\n  \
         template:\n    metadata:\n      labels:\n        app: {release}\n    spec:\n      \
         containers:\n        - name: app\n          image: {image}\n"
    );
    let json = release_json(
        release,
        ns,
        version,
        "deployed",
        "2025-01-10T09:00:00Z",
        &manifest,
        &[],
    );
    secret(&json)
}

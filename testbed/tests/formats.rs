//! The history builders write what Kubernetes and Helm write: every field a built object has is
//! a field the recorded objects in `tests/fixtures/history` (written by a real API server, Helm 4
//! and kubectl) have too, and the labels and annotations that carry meaning are the same.

use std::collections::BTreeSet;
use std::io::Read;

use base64::Engine;
use rollcache_testbed::history::{
    ControllerRevision, Owner, ReplicaSet, containers, helm, node, pod, recorded, replicaset,
};
use serde_json::{Value, json};

/// Every field path of `v` (`.spec.template.spec.containers[].image`); the keys of label,
/// annotation and selector maps are data, not format, so paths stop there.
fn paths(v: &Value) -> BTreeSet<String> {
    fn walk(v: &Value, at: String, out: &mut BTreeSet<String>) {
        let data = [
            ".labels",
            ".annotations",
            ".matchLabels",
            ".nodeSelector",
            ".config",
            ".values",
        ];
        out.insert(at.clone());
        if data.iter().any(|d| at.ends_with(d)) {
            return;
        }
        match v {
            Value::Object(m) => m
                .iter()
                .for_each(|(k, v)| walk(v, format!("{at}.{k}"), out)),
            Value::Array(a) => a.iter().for_each(|v| walk(v, format!("{at}[]"), out)),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(v, String::new(), &mut out);
    out
}

fn all_paths(objects: &[Value]) -> BTreeSet<String> {
    objects.iter().flat_map(paths).collect()
}

#[track_caller]
fn assert_fields_recorded(built: &Value, real: &[Value]) {
    let known = all_paths(real);
    let extra: Vec<_> = paths(built).difference(&known).cloned().collect();
    assert!(extra.is_empty(), "fields no recorded object has: {extra:?}");
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn b64_decode(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64")
}

/// The release JSON inside a release Secret as the API serves it.
fn release_in(secret: &Value) -> Value {
    let helm_text = b64_decode(secret["data"]["release"].as_str().expect("data.release"));
    let gz = b64_decode(std::str::from_utf8(&helm_text).expect("Helm's text"));
    let mut json = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut json)
        .expect("gzip");
    serde_json::from_str(&json).expect("release JSON")
}

#[test]
fn replicasets_are_what_the_deployment_controller_writes() {
    let real = recorded::<Value>("apps/replicasets.json");
    let hashed = ReplicaSet {
        template_hash: Some("6m2vdhd6dr".into()),
        created: Some("2026-11-25T09:58:44Z".into()),
        owner: Owner {
            block_owner_deletion: true,
            ..Owner::new("Deployment", "web")
        },
        ..ReplicaSet::new(
            "ns",
            "web",
            2,
            json!({"containers": containers(&["a:1"], None)}),
        )
    }
    .build();
    for built in [hashed.clone(), replicaset("ns", "web", 1, &["a:1"], 1)] {
        assert_fields_recorded(&built, &real);
        let annotations = &built["metadata"]["annotations"];
        assert!(keys(annotations).contains("deployment.kubernetes.io/revision"));
        assert!(real.iter().all(|r| {
            keys(&r["metadata"]["annotations"]).contains("deployment.kubernetes.io/revision")
        }));
    }
    assert_eq!(hashed["metadata"]["name"], "web-6m2vdhd6dr");
    for r in &real {
        assert!(keys(&r["metadata"]["labels"]).contains("pod-template-hash"));
        assert_eq!(
            r["spec"]["selector"]["matchLabels"],
            r["metadata"]["labels"]
        );
    }
    assert_eq!(
        hashed["spec"]["selector"]["matchLabels"],
        hashed["metadata"]["labels"]
    );
    assert_eq!(
        hashed["metadata"]["labels"]["pod-template-hash"],
        "6m2vdhd6dr"
    );
}

#[test]
fn controller_revisions_are_the_controllers_patch_of_the_template() {
    let real: Vec<Value> = recorded("apps/controllerrevisions.yaml");
    let template = json!({
        "metadata": {"labels": {"app": "db"}},
        "spec": {"containers": containers(&["a:1"], Some("IfNotPresent"))},
    });
    let built = ControllerRevision {
        hash: Some("52x9tz2fvj".into()),
        created: Some("2026-11-25T09:58:41Z".into()),
        ..ControllerRevision::new("ns", Owner::new("StatefulSet", "db"), 2, template)
    }
    .build();
    assert_fields_recorded(&built, &real);
    assert_eq!(built["data"]["spec"]["template"]["$patch"], "replace");
    let sts: Vec<_> = real
        .iter()
        .filter(|r| r["metadata"]["ownerReferences"][0]["kind"] == "StatefulSet")
        .collect();
    assert!(!sts.is_empty());
    for r in sts {
        assert!(keys(&r["metadata"]["labels"]).contains("controller.kubernetes.io/hash"));
    }
    assert_eq!(
        built["metadata"]["labels"]["controller.kubernetes.io/hash"],
        "52x9tz2fvj"
    );
}

#[test]
fn nodes_and_pods_have_only_recorded_fields() {
    assert_fields_recorded(
        &node("n", json!({"kubernetes.io/os": "linux"})),
        &recorded::<Value>("core/nodes.yaml"),
    );
    let spec = json!({"containers": containers(&["a:1"], None), "nodeName": "n"});
    assert_fields_recorded(&pod("ns", "p", spec), &recorded::<Value>("core/pods.yaml"));
}

/// Helm 4's own Secrets and ConfigMaps: the same labels, type and data key, and a release JSON
/// whose fields Helm writes. Helm 3 writes `info.deleted` even when empty, which Helm 4 leaves
/// out; the builder keeps it, as both are read alike.
#[test]
fn helm_releases_are_what_helm_stores() {
    let hook = helm::Hook {
        name: "backup",
        kind: "Job",
        path: "c/templates/backup-hook.yaml",
        manifest: "apiVersion: batch/v1\nkind: Job\n",
        events: &["pre-upgrade"],
    };
    let release = helm::release_json(
        "ioc",
        "ns",
        2,
        "superseded",
        "2025-01-10T09:05:00Z",
        "---\n",
        &[hook],
    );
    let secret = helm::secret(&release);
    let configmap = helm::configmap(&release);
    for (built, file) in [
        (&secret, "helm/release-secrets.yaml"),
        (&configmap, "helm/release-configmaps.yaml"),
    ] {
        let real = recorded(file);
        assert_fields_recorded(built, &real);
        for r in &real {
            assert_eq!(
                keys(&r["metadata"]["labels"]),
                keys(&built["metadata"]["labels"])
            );
            assert_eq!(r["type"], built["type"]);
            assert_eq!(keys(&r["data"]), keys(&built["data"]));
        }
    }
    assert_eq!(secret["type"], "helm.sh/release.v1");
    assert_eq!(secret["metadata"]["name"], "sh.helm.release.v1.ioc.v2");
    let labels = &secret["metadata"]["labels"];
    assert_eq!(
        (
            &labels["owner"],
            &labels["name"],
            &labels["status"],
            &labels["version"]
        ),
        (
            &json!("helm"),
            &json!("ioc"),
            &json!("superseded"),
            &json!("2")
        )
    );

    assert_eq!(release_in(&secret), release);
    let real: Vec<Value> = recorded::<Value>("helm/release-secrets.yaml")
        .iter()
        .map(release_in)
        .collect();
    let known = all_paths(&real);
    let extra: Vec<_> = paths(&release).difference(&known).cloned().collect();
    assert_eq!(extra, vec![".info.deleted"]);
}

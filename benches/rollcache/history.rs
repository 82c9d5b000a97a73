//! The benchmarks' history at realistic sizes, built by the test bed's history builders:
//! ReplicaSets of Deployments, ControllerRevisions of StatefulSets and Helm release Secrets with
//! pod specs and manifests as big as real charts make them.

use rollcache_testbed::history::{ControllerRevision, Owner, ReplicaSet, helm, merge};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn short_hash(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..5])
}

fn uid(text: &str) -> String {
    let h = hex::encode(&Sha256::digest(text.as_bytes())[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A pod spec as controllers copy it into their revisions: probes, resources, env, mounts.
pub fn pod_spec(app: &str, image: &str) -> Value {
    json!({
        "containers": [{
            "name": "app",
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"},
                      {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}],
            "env": [
                {"name": "APP_NAME", "value": app},
                {"name": "LOG_LEVEL", "value": "info"},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
                {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": format!("{app}-db"), "key": "password"}}}
            ],
            "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}, "requests": {"cpu": "100m", "memory": "128Mi"}},
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"},
                              "initialDelaySeconds": 10, "periodSeconds": 10, "timeoutSeconds": 1,
                              "successThreshold": 1, "failureThreshold": 3},
            "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http", "scheme": "HTTP"},
                               "periodSeconds": 5, "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3},
            "volumeMounts": [{"name": "config", "mountPath": "/etc/app", "readOnly": true}],
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
            "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                "runAsNonRoot": true, "capabilities": {"drop": ["ALL"]}}
        }],
        "volumes": [{"name": "config", "configMap": {"name": format!("{app}-config"), "defaultMode": 420}}],
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": "default",
        "securityContext": {},
        "schedulerName": "default-scheduler"
    })
}

/// The controller of `app` in `ns`, with the uid the API server would have given it.
fn owner(kind: &str, ns: &str, app: &str) -> Owner {
    let short = if kind == "Deployment" {
        "deploy"
    } else {
        "sts"
    };
    Owner {
        uid: uid(&format!("{short}/{ns}/{app}")),
        block_owner_deletion: true,
        ..Owner::new(kind, app)
    }
}

/// ReplicaSet number `revision` of Deployment `app` (scaled to 0 unless `current`).
pub fn replicaset(ns: &str, app: &str, revision: u32, image: &str, current: bool) -> Value {
    let replicas = i32::from(current);
    let mut rs = ReplicaSet {
        owner: owner("Deployment", ns, app),
        replicas,
        labels: json!({"app.kubernetes.io/name": app}),
        template_hash: Some(short_hash(&format!("{ns}/{app}/{revision}/{image}"))),
        ..ReplicaSet::new(ns, app, revision.into(), pod_spec(app, image))
    }
    .build();
    // What the Deployment controller and Helm add beside the revision.
    merge(
        &mut rs,
        json!({
            "metadata": {"annotations": {
                "deployment.kubernetes.io/desired-replicas": "1",
                "deployment.kubernetes.io/max-replicas": "2",
                "meta.helm.sh/release-name": app,
                "meta.helm.sh/release-namespace": ns
            }},
            "status": {"fullyLabeledReplicas": replicas, "readyReplicas": replicas,
                       "availableReplicas": replicas, "observedGeneration": 1}
        }),
    );
    rs
}

/// ControllerRevision number `revision` of StatefulSet `app`.
pub fn controller_revision(ns: &str, app: &str, revision: u32, image: &str) -> Value {
    let template = json!({
        "metadata": {"labels": {"app.kubernetes.io/name": app}},
        "spec": pod_spec(app, image)
    });
    ControllerRevision {
        hash: Some(short_hash(&format!("{ns}/{app}/{revision}/{image}"))),
        ..ControllerRevision::new(ns, owner("StatefulSet", ns, app), revision.into(), template)
    }
    .build()
}

/// A chart's rendered manifest of about `size` bytes: a Service, a ConfigMap of application
/// settings (the bulk, moderately compressible) and the workload.
pub fn manifest(ns: &str, app: &str, kind: &str, image: &str, size: usize) -> String {
    let mut out = format!(
        "---\n# Source: app/templates/service.yaml\napiVersion: v1\nkind: Service\nmetadata:\n  name: {app}\n  namespace: {ns}\nspec:\n  ports:\n    - port: 80\n      targetPort: http\n  selector:\n    app.kubernetes.io/name: {app}\n---\n# Source: app/templates/configmap.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {app}-config\ndata:\n  app.conf: |\n"
    );
    let mut i = 0u64;
    while out.len() < size.saturating_sub(1200) {
        let h = short_hash(&format!("{app}/{i}"));
        out += &format!(
            "    section_{:03}.setting_{i:05} = \"{h}\"  # tuned for {app}\n",
            i % 97
        );
        i += 1;
    }
    out += &format!(
        "---\n# Source: app/templates/workload.yaml\napiVersion: apps/v1\nkind: {kind}\nmetadata:\n  name: {app}\n  namespace: {ns}\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app.kubernetes.io/name: {app}\n  template:\n    metadata:\n      labels:\n        app.kubernetes.io/name: {app}\n    spec:\n      containers:\n        - name: app\n          image: {image}\n          imagePullPolicy: IfNotPresent\n          ports:\n            - name: http\n              containerPort: 8080\n          resources:\n            limits:\n              cpu: 500m\n              memory: 256Mi\n            requests:\n              cpu: 100m\n              memory: 128Mi\n          volumeMounts:\n            - name: config\n              mountPath: /etc/app\n      volumes:\n        - name: config\n          configMap:\n            name: {app}-config\n"
    );
    out
}

/// Helm's release Secret for `version` of release `app` (Helm 4 layout: base64(gzip(JSON))).
pub fn helm_secret(ns: &str, app: &str, version: u32, latest: bool, manifest: &str) -> Value {
    let status = if latest { "deployed" } else { "superseded" };
    let deployed = format!("2025-02-{:02}T09:00:00.123456789Z", version.min(28));
    let mut release = helm::release_json(app, ns, version.into(), status, &deployed, manifest, &[]);
    merge(
        &mut release,
        json!({
            "chart": {"metadata": {"name": "app", "version": format!("1.{version}.0")}},
            "config": {"image": {"tag": format!("v{version}")}}
        }),
    );
    helm::secret(&release)
}

/// The scale history: `workloads` workloads of `revisions` revisions each, spread over 20
/// namespaces (`{ns_prefix}team-00` …); even ones Deployments (ReplicaSets), odd ones StatefulSets (ControllerRevisions);
/// every workload is also a Helm release with one Secret per revision carrying a manifest of
/// `manifest_bytes`. `image(w, r)` names revision r of workload w's image.
pub fn scale_objects(
    ns_prefix: &str,
    workloads: usize,
    revisions: u32,
    manifest_bytes: usize,
    image: impl Fn(usize, u32) -> String,
    sink: &mut dyn FnMut(Value),
) {
    for w in 0..workloads {
        let ns = format!("{ns_prefix}team-{:02}", w % 20);
        let app = format!("app-{w:04}");
        let deployment = w % 2 == 0;
        for r in 1..=revisions {
            let img = image(w, r);
            let latest = r == revisions;
            if deployment {
                sink(replicaset(&ns, &app, r, &img, latest));
            } else {
                sink(controller_revision(&ns, &app, r, &img));
            }
            let kind = if deployment {
                "Deployment"
            } else {
                "StatefulSet"
            };
            let m = manifest(&ns, &app, kind, &img, manifest_bytes);
            sink(helm_secret(&ns, &app, r, latest, &m));
        }
    }
}

/// The 20 namespaces the scale and start-up histories spread over (before any prefix).
pub fn team_namespaces() -> Vec<String> {
    (0..20).map(|i| format!("team-{i:02}")).collect()
}

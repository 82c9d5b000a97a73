//! A realistic deployment history written the way Kubernetes and Helm store it, as
//! `kubectl get -o json` prints it: an EPICS IOC deployed with Helm as a StatefulSet over three
//! releases (with a pre-upgrade hook Job) and its ControllerRevisions, a Deployment with old
//! ReplicaSets, a dashboard with `imagePullPolicy: Always`, and the node's Node object.

use std::path::Path;

use serde_json::{Value, json};

use crate::history::{ControllerRevision, Owner, ReplicaSet, helm, list, merge, node};

pub const NAMESPACE: &str = "bl01";
pub const NODE: &str = "bl01-ws001";
pub const IOC: &str = "bl01-ioc-motion";
pub const ARCHIVER: &str = "archiver";
pub const DASHBOARD: &str = "dashboard";

/// The image names the history uses, relative to the registry (`REGISTRY/NAME:TAG`).
pub struct Images {
    pub ioc: [String; 3],
    pub ioc_tools: String,
    pub archiver: [String; 3],
    pub dashboard: String,
}

impl Images {
    pub fn new(registry: &str) -> Self {
        Images {
            ioc: ["1.0.0", "1.1.0", "1.2.0"].map(|t| format!("{registry}/epics/ioc-motion:{t}")),
            ioc_tools: format!("{registry}/epics/ioc-tools:1.0.0"),
            archiver: ["2.0.0", "2.1.0", "2.2.0"].map(|t| format!("{registry}/epics/archiver:{t}")),
            dashboard: format!("{registry}/web/dashboard:latest"),
        }
    }
}

fn ts(day: u32) -> String {
    format!("2026-11-{day:02}T09:00:00Z")
}

fn pod_spec(image: &str, policy: &str, node_selector: Option<Value>) -> Value {
    let mut spec = json!({
        "containers": [{
            "name": "main",
            "image": image,
            "imagePullPolicy": policy,
        }],
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
    });
    if let Some(sel) = node_selector {
        spec["nodeSelector"] = sel;
    }
    spec
}

fn ioc_statefulset(image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": IOC, "namespace": NAMESPACE, "labels": {"app.kubernetes.io/managed-by": "Helm"}},
        "spec": {
            "replicas": 1,
            "serviceName": IOC,
            "selector": {"matchLabels": {"app": IOC}},
            "template": {
                "metadata": {"labels": {"app": IOC}},
                "spec": pod_spec(image, "IfNotPresent", Some(json!({"beamline": NAMESPACE}))),
            },
        },
    })
}

fn hook_job(image: &str) -> String {
    format!(
        "# Source: ioc-instance/templates/autosave-backup.yaml\napiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {IOC}-autosave-backup\n  annotations:\n    helm.sh/hook: pre-upgrade,pre-rollback\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      nodeSelector:\n        beamline: {NAMESPACE}\n      containers:\n      - name: backup\n        image: {image}\n        imagePullPolicy: IfNotPresent\n"
    )
}

/// Release `version` of the IOC's chart, with its pre-upgrade hook Job.
fn ioc_release(version: i64, status: &str, image: &str, tools: &str) -> std::io::Result<Value> {
    let manifest = format!(
        "---\n# Source: ioc-instance/templates/service.yaml\napiVersion: v1\nkind: Service\nmetadata:\n  name: {IOC}\nspec:\n  clusterIP: None\n  selector:\n    app: {IOC}\n---\n# Source: ioc-instance/templates/statefulset.yaml\n{}",
        serde_json::to_string_pretty(&ioc_statefulset(image))?
    );
    let hook_name = format!("{IOC}-autosave-backup");
    let hook = helm::Hook {
        name: &hook_name,
        kind: "Job",
        path: "ioc-instance/templates/autosave-backup.yaml",
        manifest: &hook_job(tools),
        events: &["pre-upgrade", "pre-rollback"],
    };
    let deployed = ts(version as u32 * 3);
    let mut release = helm::release_json(
        IOC,
        NAMESPACE,
        version,
        status,
        &deployed,
        &manifest,
        &[hook],
    );
    merge(
        &mut release,
        json!({
            "info": {
                "first_deployed": ts(1),
                "description": if version == 1 { "Install complete" } else { "Upgrade complete" },
            },
            "chart": {"metadata": {"version": "3.1.0"}},
            "config": {"image": {"tag": image.rsplit(':').next().unwrap_or_default()}},
        }),
    );
    let mut secret = helm::secret(&release);
    secret["metadata"]["creationTimestamp"] = json!(deployed);
    Ok(secret)
}

/// The owner reference of the demo's controllers, as the API server would have given them uids.
fn owner(kind: &str, name: &str) -> Owner {
    Owner {
        uid: format!("00000000-0000-4000-8000-{:012x}", name.len()),
        block_owner_deletion: true,
        ..Owner::new(kind, name)
    }
}

fn controller_revision(revision: i64, image: &str) -> Value {
    let template = ioc_statefulset(image)["spec"]["template"].clone();
    ControllerRevision {
        hash: Some(format!("{:08x}", revision * 7919)),
        created: Some(ts(revision as u32 * 3)),
        ..ControllerRevision::new(NAMESPACE, owner("StatefulSet", IOC), revision, template)
    }
    .build()
}

fn replica_set(workload: &str, revision: i64, image: &str, policy: &str, current: bool) -> Value {
    ReplicaSet {
        owner: owner("Deployment", workload),
        replicas: i32::from(current),
        template_hash: Some(format!(
            "{:010x}",
            revision * 104729 + workload.len() as i64
        )),
        created: Some(ts(revision as u32 * 2)),
        ..ReplicaSet::new(NAMESPACE, workload, revision, pod_spec(image, policy, None))
    }
    .build()
}

/// Write the history into `dir` (one file per kind, as `kubectl get KIND -o json > FILE`).
pub fn write(dir: &Path, images: &Images) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let statuses = ["superseded", "superseded", "deployed"];
    let secrets = (0..3)
        .map(|i| ioc_release(i as i64 + 1, statuses[i], &images.ioc[i], &images.ioc_tools))
        .collect::<std::io::Result<Vec<_>>>()?;
    let revisions = (0..3)
        .map(|i| controller_revision(i as i64 + 1, &images.ioc[i]))
        .collect();
    let mut rs: Vec<Value> = (0..3)
        .map(|i| {
            replica_set(
                ARCHIVER,
                i as i64 + 1,
                &images.archiver[i],
                "IfNotPresent",
                i == 2,
            )
        })
        .collect();
    rs.push(replica_set(DASHBOARD, 1, &images.dashboard, "Always", true));
    let node = node(
        NODE,
        json!({"beamline": NAMESPACE, "kubernetes.io/hostname": NODE, "kubernetes.io/os": "linux"}),
    );
    let files = [
        ("helm-releases.json", list(secrets)),
        ("controllerrevisions.json", list(revisions)),
        ("replicasets.json", list(rs)),
        ("nodes.json", list(vec![node])),
    ];
    for (name, value) in files {
        std::fs::write(dir.join(name), serde_json::to_vec_pretty(&value)?)?;
    }
    Ok(())
}

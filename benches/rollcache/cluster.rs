//! A living cluster around the benchmark's history: Nodes whose kubelets report their status
//! every few minutes and Pods whose status changes at a set rate. An idle hour of a real cluster
//! carries these besides watch bookmarks, and an agent pays for the part its watches select.

use std::time::{Duration, Instant, SystemTime};

use rollcache_testbed::apiserver::ApiServer;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::history::pod_spec;

/// The cluster's shape and how it moves while no revision changes.
#[derive(Clone, Debug)]
pub struct Living {
    pub nodes: usize,
    /// Pods of DaemonSets on every node (a CNI, kube-proxy, a node exporter).
    pub daemon_pods_per_node: usize,
    /// How often each kubelet writes its Node's status when nothing else changes (the kubelet's
    /// `nodeStatusReportFrequency`, 5 min by default).
    pub heartbeat: Duration,
    /// Pod status changes per hour over the whole cluster (readiness flips, restarts).
    pub pod_changes_per_hour: f64,
}

pub fn node_name(i: usize) -> String {
    format!("node-{i:03}")
}

fn hex(text: &str, bytes: usize) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..bytes])
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A Node as a kubelet reports it: labels, conditions, capacity, and the 50 images the kubelet
/// lists at most (`nodeStatusMaxImages`), which make most of its size.
pub fn node(i: usize, heartbeat: &str) -> Value {
    let name = node_name(i);
    let condition = |kind: &str, status: &str, reason: &str| {
        json!({"type": kind, "status": status, "lastHeartbeatTime": heartbeat,
               "lastTransitionTime": "2026-01-05T08:00:00Z", "reason": reason,
               "message": format!("kubelet reports {reason}")})
    };
    let images: Vec<Value> = (0..50)
        .map(|k| {
            let repo = format!("registry.example.org/beamline-{:02}/ioc-{k:02}", k % 7);
            json!({"names": [format!("{repo}@sha256:{}", hex(&format!("{i}/{k}"), 32)),
                             format!("{repo}:2026.{}.{k}", k % 12 + 1)],
                   "sizeBytes": 40_000_000 + k * 1_000_003})
        })
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": name,
            "uid": format!("{}-0000-4000-8000-{}", hex(&name, 4), hex(&name, 6)),
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                       "kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
                       "beta.kubernetes.io/arch": "amd64",
                       "topology.kubernetes.io/zone": format!("hall-{}", i % 4),
                       "beamline": format!("bl{:02}", i % 24)},
            "annotations": {"node.alpha.kubernetes.io/ttl": "0",
                            "volumes.kubernetes.io/controller-managed-attach-detach": "true"}
        },
        "spec": {"podCIDR": format!("10.{}.{}.0/24", 64 + i / 256, i % 256),
                 "podCIDRs": [format!("10.{}.{}.0/24", 64 + i / 256, i % 256)]},
        "status": {
            "capacity": {"cpu": "32", "memory": "131899652Ki", "pods": "110",
                         "ephemeral-storage": "479151816Ki", "hugepages-1Gi": "0", "hugepages-2Mi": "0"},
            "allocatable": {"cpu": "32", "memory": "131797252Ki", "pods": "110",
                            "ephemeral-storage": "441586141473", "hugepages-1Gi": "0", "hugepages-2Mi": "0"},
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID"),
                condition("Ready", "True", "KubeletReady")
            ],
            "addresses": [{"type": "InternalIP", "address": format!("172.23.{}.{}", i / 250, i % 250 + 1)},
                          {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {"machineID": hex(&format!("m{i}"), 16), "systemUUID": hex(&format!("s{i}"), 16),
                         "bootID": hex(&format!("b{i}"), 16), "kernelVersion": "6.12.48-1-amd64",
                         "osImage": "Debian GNU/Linux 13 (trixie)", "containerRuntimeVersion": "containerd://1.7.24",
                         "kubeletVersion": "v1.35.0", "kubeProxyVersion": "", "operatingSystem": "linux",
                         "architecture": "amd64"},
            "images": images
        }
    })
}

/// A running Pod of `app` on `node` (what its controller and the kubelet have written).
fn pod(ns: &str, name: &str, app: &str, owner: (&str, &str), node: &str, image: &str) -> Value {
    let mut spec = pod_spec(app, image);
    spec["nodeName"] = json!(node);
    spec["enableServiceLinks"] = json!(true);
    spec["priority"] = json!(0);
    spec["preemptionPolicy"] = json!("PreemptLowerPriority");
    spec["tolerations"] = json!([
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
    ]);
    let since = "2026-01-05T08:01:00Z";
    let cond = |kind: &str| json!({"type": kind, "status": "True", "lastProbeTime": null, "lastTransitionTime": since});
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": ns,
            "uid": format!("{}-0000-4000-8000-{}", hex(name, 4), hex(&format!("{ns}/{name}"), 6)),
            "labels": {"app.kubernetes.io/name": app, "pod-template-hash": hex(app, 5)},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner.0, "name": owner.1,
                                 "uid": format!("{}-0000-4000-8000-{}", hex(owner.1, 4), hex(owner.1, 6)),
                                 "controller": true, "blockOwnerDeletion": true}]
        },
        "spec": spec,
        "status": {
            "phase": "Running",
            "conditions": [cond("PodReadyToStartContainers"), cond("Initialized"), cond("Ready"),
                           cond("ContainersReady"), cond("PodScheduled")],
            "hostIP": "172.23.0.1", "hostIPs": [{"ip": "172.23.0.1"}],
            "podIP": "10.64.0.17", "podIPs": [{"ip": "10.64.0.17"}],
            "startTime": since, "qosClass": "Burstable",
            "containerStatuses": [{
                "name": "app", "ready": true, "started": true, "restartCount": 0,
                "state": {"running": {"startedAt": since}},
                "image": image, "imageID": format!("{image}@sha256:{}", hex(image, 32)),
                "containerID": format!("containerd://{}", hex(name, 32))
            }]
        }
    })
}

/// The Nodes and Pods of the cluster: one Pod per workload (its current revision), spread over the
/// Nodes, and the DaemonSets' Pods on every Node. `image(w)` is workload w's current image;
/// DaemonSet Pods run the first workloads' images, so that no image is added to the plan.
pub struct Population {
    pub pods: Vec<Value>,
}

impl Living {
    pub fn populate(
        &self,
        api: &ApiServer,
        workloads: usize,
        image: impl Fn(usize) -> String,
    ) -> anyhow::Result<Population> {
        let now = rfc3339(SystemTime::now());
        for i in 0..self.nodes {
            api.apply(node(i, &now))?;
        }
        let mut pods = Vec::new();
        for w in 0..workloads {
            let (ns, app) = (format!("team-{:02}", w % 20), format!("app-{w:04}"));
            let (owner, name) = if w % 2 == 0 {
                let rs = format!("{app}-{}", hex(&app, 5));
                (
                    ("ReplicaSet", rs.clone()),
                    format!("{rs}-{}", &hex(&app, 3)[..5]),
                )
            } else {
                (("StatefulSet", app.clone()), format!("{app}-0"))
            };
            let node = node_name(w % self.nodes.max(1));
            pods.push(pod(&ns, &name, &app, (owner.0, &owner.1), &node, &image(w)));
        }
        for i in 0..self.nodes {
            for d in 0..self.daemon_pods_per_node {
                let ds = format!("node-agent-{d}");
                let name = format!("{ds}-{}", &hex(&format!("{d}/{i}"), 3)[..5]);
                let img = image(d % workloads.max(1));
                pods.push(pod(
                    "kube-system",
                    &name,
                    &ds,
                    ("DaemonSet", &ds),
                    &node_name(i),
                    &img,
                ));
            }
        }
        for p in &pods {
            api.apply(p.clone())?;
        }
        Ok(Population { pods })
    }

    /// Moves the cluster until `until`: every Node's status written every `heartbeat` (Nodes
    /// spread evenly over the period), and Pod status changes at `pod_changes_per_hour`, taken in
    /// turn over every Pod. Returns (Node status writes, Pod status writes).
    pub async fn churn(
        &self,
        api: &ApiServer,
        population: &mut Population,
        until: Instant,
    ) -> anyhow::Result<(u64, u64)> {
        let start = Instant::now();
        let period = self.heartbeat.as_secs_f64();
        let (mut node_writes, mut pod_writes) = (0u64, 0u64);
        let mut next_node = vec![0u64; self.nodes];
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        while Instant::now() < until {
            tick.tick().await;
            let t = start.elapsed().as_secs_f64();
            let now = rfc3339(SystemTime::now());
            for (i, beats) in next_node.iter_mut().enumerate() {
                // Half a slot in, so that a window of one period holds each Node's write once.
                let due = period * ((i as f64 + 0.5) / self.nodes as f64 + *beats as f64);
                if t >= due {
                    api.apply(node(i, &now))?;
                    *beats += 1;
                    node_writes += 1;
                }
            }
            let due = (t * self.pod_changes_per_hour / 3600.0) as u64;
            while pod_writes < due && !population.pods.is_empty() {
                let n = population.pods.len();
                let p = &mut population.pods[pod_writes as usize % n];
                // A readiness flip: the kubelet writes Ready and ContainersReady.
                let ready = p["status"]["conditions"][2]["status"] == "True";
                let status = if ready { "False" } else { "True" };
                for c in [2, 3] {
                    p["status"]["conditions"][c]["status"] = json!(status);
                    p["status"]["conditions"][c]["lastTransitionTime"] = json!(now);
                }
                p["status"]["containerStatuses"][0]["ready"] = json!(!ready);
                api.apply(p.clone())?;
                pod_writes += 1;
            }
        }
        Ok((node_writes, pod_writes))
    }
}

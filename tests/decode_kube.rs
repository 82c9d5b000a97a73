//! ReplicaSet, ControllerRevision, Pod, Node and pod-template decoding, on objects exported from a
//! real API server and on edge cases.

use k8s_openapi::api::apps::v1::{ControllerRevision, ReplicaSet};
use k8s_openapi::api::core::v1::{Node, Pod, PodSpec};
use rollcache::history::{ProblemKind, controller_revisions, nodes, pods, replicasets, template};
use rollcache::model::{ObjectRef, SourceKind};
use rollcache_testbed::history;
use serde_json::{Value, json};

#[test]
fn replicasets_of_a_deployment() {
    let rss: Vec<ReplicaSet> = history::recorded("apps/replicasets.json");
    assert_eq!(rss.len(), 4);
    let mut seen = Vec::new();
    for rs in &rss {
        let d = replicasets::decode(rs);
        assert!(d.problems.is_empty(), "{:?}", d.problems);
        let [f] = d.facts.as_slice() else {
            panic!("one fact per ReplicaSet: {:?}", d.facts)
        };
        assert_eq!(f.source, SourceKind::ReplicaSet);
        assert_eq!(f.object.kind, "ReplicaSet");
        assert_eq!(f.object.name, rs.metadata.name.clone().unwrap());
        assert_eq!(f.workload.kind, "Deployment");
        assert_eq!(f.workload.name, "bl45p-archiver");
        assert_eq!(f.workload.namespace, "bl45p");
        assert!(f.created.is_some());
        let c = &f.template.containers[0];
        seen.push((
            f.revision.unwrap(),
            f.current,
            c.image.clone(),
            c.pull_policy.clone(),
        ));
        assert_eq!(
            f.template
                .scheduling
                .node_selector
                .get("kubernetes.io/os")
                .map(String::as_str),
            Some("linux")
        );
    }
    seen.sort();
    let policies: Vec<_> = seen.iter().map(|s| (s.0, s.1, s.3.as_deref())).collect();
    assert_eq!(
        policies,
        vec![
            (1, false, Some("IfNotPresent")),
            (2, false, Some("IfNotPresent")),
            (3, false, Some("Always")),
            (4, true, Some("IfNotPresent")),
        ]
    );
    assert!(seen[2].2.ends_with(":latest"));
    assert!(seen[3].2.contains("@sha256:"));
}

fn bare_rs(annotations: Value, replicas: Value, status_replicas: i64) -> ReplicaSet {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "lonely", "namespace": "ns", "annotations": annotations,
                     "creationTimestamp": "2025-01-10T09:00:00Z"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"a": "b"}},
                 "template": {"spec": {"containers": [{"name": "c", "image": "reg.example/c:1"}]}}},
        "status": {"replicas": status_replicas}
    }))
    .unwrap()
}

#[test]
fn replicaset_without_owner_is_its_own_workload_and_bad_revision_is_kept_unnumbered() {
    let d = replicasets::decode(&bare_rs(
        json!({"deployment.kubernetes.io/revision": "three"}),
        json!(0),
        1,
    ));
    assert_eq!(d.facts.len(), 1);
    let f = &d.facts[0];
    assert_eq!(
        (f.workload.kind.as_str(), f.workload.name.as_str()),
        ("ReplicaSet", "lonely")
    );
    assert_eq!(f.revision, None);
    assert_eq!(f.created, Some(1_736_499_600));
    // Scaled to 0 but a pod still terminating: still current.
    assert!(f.current);
    assert_eq!(d.problems.len(), 1);
    assert_eq!(d.problems[0].kind, ProblemKind::InvalidField);
    assert_eq!(d.problems[0].object.name, "lonely");

    let d = replicasets::decode(&bare_rs(json!({}), json!(0), 0));
    assert!(!d.facts[0].current);
    assert!(d.problems.is_empty());
    let d = replicasets::decode(&bare_rs(json!({}), Value::Null, 0));
    assert!(d.facts[0].current, "spec.replicas defaults to 1");
}

#[test]
fn controller_revisions_of_statefulsets_and_daemonsets() {
    let crs: Vec<ControllerRevision> = history::recorded("apps/controllerrevisions.yaml");
    assert_eq!(crs.len(), 5);
    let mut sts = Vec::new();
    let mut ds = Vec::new();
    for cr in &crs {
        let d = controller_revisions::decode(cr);
        assert!(d.problems.is_empty(), "{:?}", d.problems);
        let [f] = d.facts.as_slice() else {
            panic!("{:?}", d.facts)
        };
        assert_eq!(f.source, SourceKind::ControllerRevision);
        assert_eq!(f.revision, Some(cr.revision));
        assert!(!f.current);
        match f.workload.kind.as_str() {
            "StatefulSet" => {
                assert_eq!(f.workload.name, "bl45p-mo-ioc-01");
                assert!(f.template.containers[0].init);
                assert_eq!(f.template.containers[0].name, "load-config");
                assert_eq!(f.template.image_pull_secrets, vec!["ghcr-pull"]);
                assert_eq!(f.template.scheduling.required_terms.len(), 1);
                sts.push((f.revision.unwrap(), f.template.containers[1].image.clone()));
            }
            "DaemonSet" => {
                assert_eq!(
                    f.template.containers[0].pull_policy.as_deref(),
                    Some("Always")
                );
                assert_eq!(
                    f.template.scheduling.tolerations[0].operator.as_deref(),
                    Some("Exists")
                );
                ds.push((f.revision.unwrap(), f.template.containers[0].image.clone()));
            }
            other => panic!("unexpected owner {other}"),
        }
    }
    sts.sort();
    ds.sort();
    assert_eq!(sts.iter().map(|s| s.0).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(sts[0].1.ends_with(":2024.11.1") && sts[2].1.ends_with(":2025.1.1"));
    assert_eq!(
        ds,
        vec![
            (1, "quay.io/prometheus/node-exporter:v1.8.2".to_owned()),
            (2, "quay.io/prometheus/node-exporter:v1.9.1".to_owned()),
        ]
    );
}

/// `kubectl delete sts --cascade=orphan` (and `ds`): the garbage collector removes the owner
/// references; the revisions stay under the workload their hash label and name say.
#[test]
fn orphaned_controller_revisions_stay_under_their_workload() {
    let crs: Vec<ControllerRevision> = history::recorded("apps/controllerrevisions.yaml");
    let mut workloads = Vec::new();
    for mut cr in crs {
        let owned = controller_revisions::decode(&cr);
        cr.metadata.owner_references = None;
        let orphan = controller_revisions::decode(&cr);
        assert!(orphan.problems.is_empty(), "{:?}", orphan.problems);
        let ([o], [f]) = (owned.facts.as_slice(), orphan.facts.as_slice()) else {
            panic!("one fact each: {:?} {:?}", owned.facts, orphan.facts)
        };
        assert_eq!(f, o, "the same fact with or without the owner");
        workloads.push(f.workload.to_string());
    }
    workloads.dedup();
    assert_eq!(
        workloads,
        [
            "StatefulSet/bl45p/bl45p-mo-ioc-01",
            "DaemonSet/bl45p/node-exporter"
        ]
    );
    // A hash label that does not end the name is not trusted for the workload's name.
    let mut odd = cr(
        None,
        json!({"spec": {"template": {"spec": {"containers": []}}}}),
    );
    odd.metadata.labels = Some([("controller.kubernetes.io/hash".into(), "zzz".into())].into());
    let d = controller_revisions::decode(&odd);
    assert_eq!(d.facts[0].workload.kind, "ControllerRevision");
}

fn cr(owner_kind: Option<&str>, data: Value) -> ControllerRevision {
    let owners = owner_kind.map(|k| {
        json!([{"apiVersion": "apps/v1", "kind": k, "name": "owner", "uid": "u", "controller": true}])
    });
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "ControllerRevision",
        "metadata": {"name": "owner-abc", "namespace": "ns", "ownerReferences": owners},
        "data": data, "revision": 4
    }))
    .unwrap()
}

#[test]
fn controller_revision_edge_cases() {
    // A template without the $patch marker is read the same.
    let ok =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i:1"}]}}}});
    let d = controller_revisions::decode(&cr(Some("StatefulSet"), ok.clone()));
    assert_eq!(d.facts[0].template.containers[0].image, "i:1");
    // Orphaned without the controllers' hash labels: kept, as its own workload.
    let d = controller_revisions::decode(&cr(None, ok));
    assert!(d.problems.is_empty());
    assert_eq!(d.facts[0].workload.kind, "ControllerRevision");
    assert_eq!(d.facts[0].workload.name, "owner-abc");
    // A StatefulSet revision without a template is a problem...
    let d = controller_revisions::decode(&cr(Some("StatefulSet"), json!({"spec": {}})));
    assert!(d.facts.is_empty());
    assert_eq!(d.problems[0].kind, ProblemKind::MissingField);
    assert_eq!(d.problems[0].object.name, "owner-abc");
    // ...another controller's differently shaped revision is not.
    let d = controller_revisions::decode(&cr(Some("VirtualMachine"), json!({"spec": {}})));
    assert!(d.facts.is_empty() && d.problems.is_empty());
    // Wrong types inside the template are a problem, not a panic.
    let d = controller_revisions::decode(&cr(
        Some("DaemonSet"),
        json!({"spec": {"template": {"spec": {"containers": "nope"}}}}),
    ));
    assert!(d.facts.is_empty());
    assert_eq!(d.problems[0].kind, ProblemKind::InvalidField);
}

#[test]
fn pods_with_their_digests() {
    let pods: Vec<Pod> = history::recorded("core/pods.yaml");
    assert_eq!(pods.len(), 2);
    for pod in &pods {
        let d = pods::decode(pod);
        assert!(d.problems.is_empty(), "{:?}", d.problems);
        let f = &d.facts[0];
        assert_eq!(f.source, SourceKind::Pod);
        assert!(f.current);
        assert_eq!(f.revision, None);
        for c in &f.template.containers {
            let id = c.image_id.as_deref().expect("every container has run");
            assert!(!id.starts_with("docker-pullable://"), "{id}");
            assert!(id.contains("@sha256:"), "{id}");
            let repo = c.image.split([':', '@']).next().unwrap();
            assert!(id.starts_with(repo), "{id} is the digest of {}", c.image);
        }
        match f.workload.kind.as_str() {
            "StatefulSet" => {
                assert_eq!(f.workload.name, "bl45p-mo-ioc-01");
                assert_eq!(
                    f.template.scheduling.node_name.as_deref(),
                    Some("bl45p-ws001")
                );
                assert!(f.template.containers[0].init);
            }
            "ReplicaSet" => assert!(f.workload.name.starts_with("bl45p-archiver-")),
            other => panic!("unexpected owner {other}"),
        }
    }
}

#[test]
fn bare_and_finished_pods() {
    let pod = |phase: &str| -> Pod {
        let mut pod = history::pod(
            "ns",
            "debug",
            json!({"containers": [{"name": "c", "image": "i:1"}, {"name": "d", "image": "j:1"}],
                   "ephemeralContainers": [{"name": "e", "image": "debugger:1"}]}),
        );
        history::merge(
            &mut pod,
            json!({"status": {"phase": phase, "containerStatuses": [
                {"name": "d", "image": "j:1", "imageID": "", "ready": false, "restartCount": 0},
                {"name": "c", "image": "i:1", "imageID": "docker.io/library/i@sha256:ab", "ready": true, "restartCount": 0}]}}),
        );
        serde_json::from_value(pod).unwrap()
    };
    let d = pods::decode(&pod("Pending"));
    let f = &d.facts[0];
    assert_eq!(
        (f.workload.kind.as_str(), f.workload.name.as_str()),
        ("Pod", "debug")
    );
    assert!(f.current);
    // Ephemeral containers are not part of what a rollback needs.
    assert_eq!(f.template.containers.len(), 2);
    assert_eq!(
        f.template.containers[0].image_id.as_deref(),
        Some("docker.io/library/i@sha256:ab")
    );
    assert_eq!(f.template.containers[1].image_id, None);
    for phase in ["Succeeded", "Failed", "Unknown"] {
        assert!(!pods::decode(&pod(phase)).facts[0].current, "{phase}");
    }
}

#[test]
fn nodes_labels_and_taints() {
    let ns: Vec<Node> = history::recorded("core/nodes.yaml");
    let facts: Vec<_> = ns.iter().map(nodes::decode).collect();
    let ws = facts
        .iter()
        .find(|n| n.name == "bl45p-ws001")
        .expect("workstation");
    assert_eq!(ws.labels.get("beamline").map(String::as_str), Some("bl45p"));
    assert_eq!(ws.taints.len(), 1);
    assert_eq!(ws.taints[0].key, "beamline");
    assert_eq!(ws.taints[0].value.as_deref(), Some("bl45p"));
    assert_eq!(ws.taints[0].effect, "NoSchedule");
    let worker = facts
        .iter()
        .find(|n| n.name == "k8s-worker-01")
        .expect("worker");
    assert!(worker.taints.is_empty());
    assert!(!worker.labels.contains_key("beamline"));
}

fn object() -> ObjectRef {
    ObjectRef::new("Test", "ns", "t")
}

/// The typed and the JSON path reduce the same pod spec to the same template.
#[test]
fn typed_and_json_pod_specs_agree() {
    let spec = json!({
        "serviceAccount": "old-style",
        "nodeName": "n1",
        "nodeSelector": {"disk": "ssd"},
        "imagePullSecrets": [{"name": "a"}, {"name": ""}, {"name": "b"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["x", "y"]}]},
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]}}},
        "tolerations": [{"operator": "Exists"}, {"key": "k", "value": "v", "effect": "NoExecute", "tolerationSeconds": 30}],
        "initContainers": [{"name": "i1", "image": "init:1", "imagePullPolicy": "Always"}],
        "containers": [{"name": "c1", "image": "app:1"}, {"name": "c2"}],
        "ephemeralContainers": [{"name": "e", "image": "dbg:1"}]
    });
    let typed: PodSpec = serde_json::from_value(spec.clone()).unwrap();
    let (a, pa) = template::from_pod_spec(&typed, &object());
    let (b, pb) = template::from_spec_value(&spec, &object()).unwrap();
    assert_eq!(a, b);
    assert_eq!(pa, pb);
    assert_eq!(pa.len(), 1);
    assert_eq!(pa[0].kind, ProblemKind::MissingField);
    assert!(pa[0].message.contains("c2"));
    let names: Vec<_> = a
        .containers
        .iter()
        .map(|c| (c.name.as_str(), c.init))
        .collect();
    assert_eq!(names, vec![("i1", true), ("c1", false)]);
    assert_eq!(a.service_account.as_deref(), Some("old-style"));
    assert_eq!(a.image_pull_secrets, vec!["a", "b"]);
    assert_eq!(a.scheduling.required_terms.len(), 2);
    assert_eq!(
        a.scheduling.required_terms[1].match_fields[0].values,
        vec!["n1"]
    );
    assert_eq!(a.scheduling.tolerations.len(), 2);
}

#[test]
fn workload_values_find_their_pod_spec() {
    let c = json!({"containers": [{"name": "c", "image": "x:1"}]});
    let cases = [
        json!({"kind": "Deployment", "spec": {"template": {"spec": c}}}),
        json!({"kind": "StatefulSet", "spec": {"template": {"spec": c}}}),
        json!({"kind": "DaemonSet", "spec": {"template": {"spec": c}}}),
        json!({"kind": "ReplicaSet", "spec": {"template": {"spec": c}}}),
        json!({"kind": "Job", "spec": {"template": {"spec": c}}}),
        json!({"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": {"spec": c}}}}}),
        json!({"kind": "Pod", "spec": c}),
    ];
    for w in &cases {
        let (t, p) = template::from_workload_value(w, &object()).unwrap();
        assert!(p.is_empty());
        assert_eq!(t.containers[0].image, "x:1", "{w}");
    }
    let err = template::from_workload_value(&json!({"kind": "Service", "spec": {}}), &object())
        .unwrap_err();
    assert_eq!(err.kind, ProblemKind::UnknownKind);
    let err = template::from_workload_value(
        &json!({"kind": "CronJob", "spec": {"template": {"spec": c}}}),
        &object(),
    )
    .unwrap_err();
    assert_eq!(err.kind, ProblemKind::MissingField);
}

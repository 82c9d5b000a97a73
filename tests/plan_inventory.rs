//! The inventory merges what several sources say about one revision, and orders revisions.

use rollcache::history::ProblemKind;
use rollcache::inventory::{Inventory, PullPolicy};
use rollcache::model::{
    ContainerImage, NodeSelectorRequirement, NodeSelectorTerm, ObjectRef, PodTemplate,
    RevisionFact, Scheduling, SourceKind, Toleration, WorkloadId,
};

fn wid(kind: &str, name: &str) -> WorkloadId {
    WorkloadId::new(kind, "shop", name)
}

fn obj(kind: &str, name: &str) -> ObjectRef {
    ObjectRef::new(kind, "shop", name)
}

fn container(name: &str, image: &str, policy: Option<&str>) -> ContainerImage {
    ContainerImage {
        name: name.into(),
        image: image.into(),
        pull_policy: policy.map(Into::into),
        ..Default::default()
    }
}

fn template(images: &[(&str, Option<&str>)]) -> PodTemplate {
    PodTemplate {
        containers: images
            .iter()
            .enumerate()
            .map(|(i, (img, p))| container(&format!("c{i}"), img, *p))
            .collect(),
        image_pull_secrets: vec!["regcred".into()],
        ..Default::default()
    }
}

fn rs(name: &str, deploy: &str, rev: i64, created: i64, t: PodTemplate) -> RevisionFact {
    RevisionFact {
        source: SourceKind::ReplicaSet,
        object: obj("ReplicaSet", name),
        workload: wid("Deployment", deploy),
        revision: Some(rev),
        created: Some(created),
        helm_release: None,
        status: None,
        current: false,
        template: t.into(),
    }
}

fn helm(
    release: &str,
    version: i64,
    status: &str,
    workload: WorkloadId,
    t: PodTemplate,
) -> RevisionFact {
    RevisionFact {
        source: SourceKind::HelmRelease,
        object: ObjectRef::new(
            "Secret",
            "shop",
            format!("sh.helm.release.v1.{release}.v{version}"),
        ),
        workload,
        revision: Some(version),
        created: Some(1000 + version),
        helm_release: Some(release.into()),
        status: Some(status.into()),
        current: status == "deployed",
        template: t.into(),
    }
}

fn cr(name: &str, sts: &str, rev: i64, t: PodTemplate) -> RevisionFact {
    RevisionFact {
        source: SourceKind::ControllerRevision,
        object: obj("ControllerRevision", name),
        workload: wid("StatefulSet", sts),
        revision: Some(rev),
        created: Some(rev * 10),
        helm_release: None,
        status: None,
        current: false,
        template: t.into(),
    }
}

fn pod(name: &str, owner: WorkloadId, t: PodTemplate) -> RevisionFact {
    RevisionFact {
        source: SourceKind::Pod,
        object: obj("Pod", name),
        workload: owner,
        revision: None,
        created: Some(5000),
        helm_release: None,
        status: Some("Running".into()),
        current: true,
        template: t.into(),
    }
}

#[test]
fn a_replicaset_and_a_helm_release_of_one_template_are_one_revision() {
    // The API server defaulted the ReplicaSet's pull policy; the chart did not write one.
    let from_api = template(&[("nginx:1.25", Some("IfNotPresent"))]);
    let from_chart = template(&[("docker.io/library/nginx:1.25", None)]);
    let facts = vec![
        rs("web-abc", "web", 3, 100, from_api),
        helm("shop", 7, "deployed", wid("Deployment", "web"), from_chart),
    ];
    let (inv, problems) = Inventory::build(&facts);
    assert!(problems.is_empty());
    assert_eq!(inv.workloads.len(), 1);
    let w = &inv.workloads[0];
    assert_eq!(w.helm_release.as_deref(), Some("shop"));
    assert_eq!(w.revisions.len(), 1);
    let r = &w.revisions[0];
    assert_eq!(r.number, Some(3));
    assert_eq!(r.helm_versions, [7]);
    assert_eq!(r.status.as_deref(), Some("deployed"));
    assert!(r.current);
    assert_eq!(r.sources.len(), 2);
    assert_eq!(
        r.images[0].image.as_ref().unwrap().canonical(),
        "docker.io/library/nginx:1.25"
    );
    assert_eq!(r.images[0].pull_policy, PullPolicy::IfNotPresent);
}

#[test]
fn different_templates_stay_apart_and_sort_newest_first() {
    let facts = vec![
        rs("web-1", "web", 1, 100, template(&[("nginx:1.23", None)])),
        rs("web-3", "web", 3, 300, template(&[("nginx:1.25", None)])),
        rs("web-2", "web", 2, 200, template(&[("nginx:1.24", None)])),
        helm(
            "shop",
            5,
            "superseded",
            wid("Deployment", "web"),
            template(&[("nginx:1.24", None)]),
        ),
        helm(
            "shop",
            6,
            "deployed",
            wid("Deployment", "web"),
            template(&[("nginx:1.25", None)]),
        ),
        // Older Helm history whose ReplicaSet was pruned.
        helm(
            "shop",
            4,
            "superseded",
            wid("Deployment", "web"),
            template(&[("nginx:1.22", None)]),
        ),
    ];
    let (inv, _) = Inventory::build(&facts);
    let w = &inv.workloads[0];
    let summary: Vec<(Option<i64>, Vec<i64>, String)> = w
        .revisions
        .iter()
        .map(|r| {
            (
                r.number,
                r.helm_versions.clone(),
                r.images[0].written.clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (Some(3), vec![6], "nginx:1.25".to_owned()),
            (Some(2), vec![5], "nginx:1.24".to_owned()),
            (Some(1), vec![], "nginx:1.23".to_owned()),
            (None, vec![4], "nginx:1.22".to_owned()),
        ]
    );
    assert!(w.revisions[0].current);
    assert!(w.revisions[1..].iter().all(|r| !r.current));
    assert_eq!(w.revisions[1].status.as_deref(), Some("superseded"));
}

#[test]
fn the_result_does_not_depend_on_fact_order() {
    let mut facts = vec![
        rs("web-1", "web", 1, 100, template(&[("nginx:1.23", None)])),
        rs("web-2", "web", 2, 200, template(&[("nginx:1.24", None)])),
        helm(
            "shop",
            2,
            "deployed",
            wid("Deployment", "web"),
            template(&[("nginx:1.24", None)]),
        ),
        cr("db-1", "db", 1, template(&[("postgres:16.1", None)])),
        cr("db-2", "db", 2, template(&[("postgres:16.2", None)])),
        pod(
            "web-2-x",
            wid("ReplicaSet", "web-2"),
            template(&[("nginx:1.24", Some("IfNotPresent"))]),
        ),
        pod("loose", wid("Pod", "loose"), template(&[("busybox", None)])),
    ];
    let (a, _) = Inventory::build(&facts);
    facts.reverse();
    let (b, _) = Inventory::build(&facts);
    assert_eq!(a, b);
    facts.rotate_left(3);
    let (c, _) = Inventory::build(&facts);
    assert_eq!(a, c);
}

#[test]
fn the_highest_controller_revision_is_current() {
    let facts = vec![
        cr("db-5", "db", 5, template(&[("postgres:16.1", None)])),
        cr("db-7", "db", 7, template(&[("postgres:16.2", None)])),
        helm(
            "db",
            3,
            "superseded",
            wid("StatefulSet", "db"),
            template(&[("postgres:16.2", None)]),
        ),
    ];
    let (inv, _) = Inventory::build(&facts);
    let revs = &inv.workloads[0].revisions;
    assert_eq!(revs.len(), 2);
    assert_eq!(revs[0].number, Some(7));
    assert!(revs[0].current, "highest ControllerRevision runs");
    assert_eq!(revs[0].helm_versions, [3]);
    assert!(!revs[1].current);
}

#[test]
fn pods_join_the_revision_of_their_replicaset() {
    let mut running = template(&[("nginx:1.24", Some("IfNotPresent"))]);
    // What the scheduler and admission add to a pod never changes its revision.
    running.scheduling.node_name = Some("node-a".into());
    running.service_account = Some("default".into());
    running.scheduling.tolerations.push(Toleration {
        key: Some("node.kubernetes.io/not-ready".into()),
        operator: Some("Exists".into()),
        effect: Some("NoExecute".into()),
        value: None,
    });
    running.containers[0].image_id = Some("docker.io/library/nginx@sha256:abc".into());
    let facts = vec![
        rs("web-2", "web", 2, 200, template(&[("nginx:1.24", None)])),
        rs("web-3", "web", 3, 300, template(&[("nginx:1.25", None)])),
        pod("web-2-x", wid("ReplicaSet", "web-2"), running),
    ];
    let (inv, problems) = Inventory::build(&facts);
    assert!(problems.is_empty());
    assert_eq!(inv.workloads.len(), 1, "no separate ReplicaSet workload");
    let revs = &inv.workloads[0].revisions;
    assert_eq!(revs.len(), 2);
    let r2 = revs.iter().find(|r| r.number == Some(2)).unwrap();
    assert!(r2.current, "a running pod makes its revision current");
    assert_eq!(r2.sources.len(), 2);
    assert_eq!(
        r2.images[0].image_id.as_deref(),
        Some("docker.io/library/nginx@sha256:abc")
    );
    assert!(
        r2.scheduling.node_name.is_none(),
        "the template's scheduling is kept"
    );
    assert!(!revs.iter().find(|r| r.number == Some(3)).unwrap().current);
}

#[test]
fn pods_of_other_controllers_join_by_images() {
    let facts = vec![
        cr("db-1", "db", 1, template(&[("postgres:16.1", None)])),
        cr("db-2", "db", 2, template(&[("postgres:16.2", None)])),
        pod(
            "db-0",
            wid("StatefulSet", "db"),
            template(&[("postgres:16.1", Some("IfNotPresent"))]),
        ),
    ];
    let (inv, _) = Inventory::build(&facts);
    let revs = &inv.workloads[0].revisions;
    assert_eq!(revs.len(), 2);
    let r1 = revs.iter().find(|r| r.number == Some(1)).unwrap();
    assert!(r1.current, "pod still runs the old revision");
    assert_eq!(r1.sources.len(), 2);
}

#[test]
fn pods_nobody_else_describes_are_their_own_revision() {
    let mut t = template(&[("busybox:1.36", None)]);
    t.scheduling.node_name = Some("node-a".into());
    t.scheduling.required_terms = vec![NodeSelectorTerm {
        match_expressions: vec![],
        match_fields: vec![NodeSelectorRequirement {
            key: "metadata.name".into(),
            operator: "In".into(),
            values: vec!["node-a".into()],
        }],
    }];
    let facts = vec![
        pod("agent-x", wid("DaemonSet", "agent"), t.clone()),
        pod("agent-y", wid("DaemonSet", "agent"), {
            let mut t = t.clone();
            t.scheduling.node_name = Some("node-b".into());
            t.scheduling.required_terms[0].match_fields[0].values = vec!["node-b".into()];
            t
        }),
        pod("bare", wid("Pod", "bare"), t),
    ];
    let (inv, _) = Inventory::build(&facts);
    assert_eq!(inv.workloads.len(), 2);
    let agent = inv.workload(&wid("DaemonSet", "agent")).unwrap();
    assert_eq!(
        agent.revisions.len(),
        1,
        "two pods of one DaemonSet revision"
    );
    assert_eq!(agent.revisions[0].sources.len(), 2);
    let s = &agent.revisions[0].scheduling;
    assert!(
        s.node_name.is_none() && s.required_terms.is_empty(),
        "node pinning dropped: {s:?}"
    );
    let bare = inv.workload(&wid("Pod", "bare")).unwrap();
    assert_eq!(
        bare.revisions[0].scheduling.node_name.as_deref(),
        Some("node-a"),
        "a bare pod stays bound"
    );
    assert!(bare.revisions[0].number.is_none());
}

#[test]
fn helm_versions_with_the_same_template_are_one_revision() {
    let t = template(&[("app:2.0", None)]);
    let facts = vec![
        helm(
            "app",
            1,
            "superseded",
            wid("Deployment", "app"),
            template(&[("app:1.0", None)]),
        ),
        helm("app", 2, "superseded", wid("Deployment", "app"), t.clone()),
        helm("app", 3, "deployed", wid("Deployment", "app"), t),
    ];
    let (inv, _) = Inventory::build(&facts);
    let revs = &inv.workloads[0].revisions;
    assert_eq!(revs.len(), 2);
    assert_eq!(revs[0].helm_versions, [3, 2]);
    assert_eq!(revs[0].status.as_deref(), Some("deployed"));
    assert!(revs[0].current);
    assert_eq!(revs[1].helm_versions, [1]);
}

#[test]
fn scheduling_differences_make_different_revisions_but_spelling_does_not() {
    let mut a = template(&[("app:1", None)]);
    a.scheduling.tolerations.push(Toleration {
        key: Some("dedicated".into()),
        operator: None,
        value: Some("ioc".into()),
        effect: Some("NoSchedule".into()),
    });
    let mut b = a.clone();
    b.scheduling.tolerations[0].operator = Some("Equal".into());
    let mut c = a.clone();
    c.scheduling
        .node_selector
        .insert("beamline".into(), "i22".into());
    let facts = vec![
        rs("app-a", "app", 1, 1, a),
        helm("app", 1, "deployed", wid("Deployment", "app"), b),
        rs("app-c", "app", 2, 2, c),
    ];
    let (inv, _) = Inventory::build(&facts);
    let revs = &inv.workloads[0].revisions;
    assert_eq!(revs.len(), 2);
    assert_eq!(
        revs[1].sources.len(),
        2,
        "Equal is the default toleration operator"
    );
}

#[test]
fn invalid_references_are_reported_with_the_object() {
    let t = PodTemplate {
        containers: vec![
            ContainerImage {
                name: "init".into(),
                image: "busybox:1.36".into(),
                init: true,
                ..Default::default()
            },
            container("main", "Shop/App:1", None),
        ],
        ..Default::default()
    };
    let facts = vec![rs("web-1", "web", 1, 1, t)];
    let (inv, problems) = Inventory::build(&facts);
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].kind, ProblemKind::InvalidImageRef);
    assert_eq!(problems[0].object, obj("ReplicaSet", "web-1"));
    assert!(problems[0].message.contains("main") && problems[0].message.contains("Shop/App:1"));
    let r = &inv.workloads[0].revisions[0];
    assert_eq!(r.images.len(), 2);
    assert!(r.images[0].init && r.images[0].image.is_some());
    assert!(r.images[1].image.is_none() && r.images[1].error.is_some());
}

#[test]
fn effective_pull_policy_follows_kubernetes_defaults() {
    let d = "sha256:7cc4b5aefd1d0cadf8d97d4350462ba51c694ebca145b08d7d41b41acc8db5aa";
    let cases = [
        ("nginx".to_owned(), None, PullPolicy::Always, false),
        ("nginx:latest".to_owned(), None, PullPolicy::Always, false),
        (
            "nginx:1.25".to_owned(),
            None,
            PullPolicy::IfNotPresent,
            false,
        ),
        (format!("nginx@{d}"), None, PullPolicy::IfNotPresent, false),
        (format!("nginx:latest@{d}"), None, PullPolicy::Always, false),
        (
            "nginx".to_owned(),
            Some("IfNotPresent"),
            PullPolicy::IfNotPresent,
            true,
        ),
        (
            "nginx:1.25".to_owned(),
            Some("Always"),
            PullPolicy::Always,
            true,
        ),
        (
            "nginx:1.25".to_owned(),
            Some("Never"),
            PullPolicy::Never,
            true,
        ),
    ];
    for (image, written, want, was_written) in cases {
        let facts = vec![rs("x", "x", 1, 1, template(&[(&image, written)]))];
        let (inv, _) = Inventory::build(&facts);
        let u = &inv.workloads[0].revisions[0].images[0];
        assert_eq!(u.pull_policy, want, "{image} {written:?}");
        assert_eq!(u.pull_policy_written, was_written);
    }
}

#[test]
fn lookups_by_key() {
    let facts = vec![
        rs("web-1", "web", 1, 1, template(&[("nginx:1.23", None)])),
        cr("db-1", "db", 1, template(&[("postgres:16", None)])),
    ];
    let (inv, _) = Inventory::build(&facts);
    assert_eq!(inv.revision_count(), 2);
    let w = inv.workload(&wid("StatefulSet", "db")).unwrap();
    let key = w.revisions[0].key.clone();
    assert_eq!(inv.revision(&key).unwrap().number, Some(1));
    assert!(inv.workload(&wid("Deployment", "nope")).is_none());
    // Keys survive a JSON round trip (the template id is a hex string).
    let json = serde_json::to_string(&key).unwrap();
    assert!(json.contains(&key.template.to_string()));
    assert_eq!(
        serde_json::from_str::<rollcache::inventory::RevisionKey>(&json).unwrap(),
        key
    );
    let _ = Scheduling::default();
}

use std::sync::Arc;

use super::*;
use crate::model::{ContainerImage, ObjectRef, PodTemplate, RevisionFact, SourceKind, WorkloadId};
use crate::summary::NotSafe;

fn template(image: &str) -> Arc<PodTemplate> {
    Arc::new(PodTemplate {
        containers: vec![ContainerImage {
            name: "c".into(),
            image: image.into(),
            pull_policy: None,
            init: false,
            image_id: None,
        }],
        ..PodTemplate::default()
    })
}

/// A StatefulSet's ControllerRevision `n` (the highest is current).
fn cr(name: &str, n: i64, current: bool) -> RevisionFact {
    RevisionFact {
        source: SourceKind::ControllerRevision,
        object: ObjectRef::new("ControllerRevision", "ioc", format!("{name}-{n}")),
        workload: WorkloadId::new("StatefulSet", "ioc", name),
        revision: Some(n),
        created: Some(n * 100),
        helm_release: None,
        status: None,
        current,
        template: template(&format!("reg/ioc:{n}")),
    }
}

/// Helm release `web` version `v` holding Deployment `web` with `image`.
fn helm(v: i64, image: &str, deployed: bool) -> RevisionFact {
    RevisionFact {
        source: SourceKind::HelmRelease,
        object: ObjectRef::new("Secret", "ioc", format!("sh.helm.release.v1.web.v{v}")),
        workload: WorkloadId::new("Deployment", "ioc", "web"),
        revision: Some(v),
        created: Some(v * 100),
        helm_release: Some("web".into()),
        status: Some(if deployed { "deployed" } else { "superseded" }.into()),
        current: deployed,
        template: template(image),
    }
}

fn inventory() -> Inventory {
    let facts = vec![
        cr("bl01", 1, false),
        cr("bl01", 2, false),
        cr("bl01", 4, true),
        helm(1, "reg/web:1", false),
        helm(2, "reg/web:2", false),
        helm(3, "reg/web:2", true),
    ];
    Inventory::build(&facts).0
}

fn sts() -> Selector {
    Selector::Workload {
        kind: "StatefulSet".into(),
        namespace: "ioc".into(),
        name: "bl01".into(),
    }
}

fn release() -> Selector {
    Selector::HelmRelease {
        namespace: "ioc".into(),
        name: "web".into(),
    }
}

#[test]
fn kinds_are_read_as_kubectl_reads_them() {
    for (text, kind) in [
        ("sts", "StatefulSet"),
        ("StatefulSet", "StatefulSet"),
        ("deploy", "Deployment"),
        ("DEPLOYMENTS", "Deployment"),
        ("ds", "DaemonSet"),
    ] {
        assert_eq!(workload_kind(text), Some(kind), "{text}");
    }
    assert_eq!(workload_kind("pod"), None);
}

#[test]
fn without_a_number_the_previous_revision_is_picked_as_kubectl_and_helm_pick_it() {
    let inv = inventory();
    let t = find_target(&inv, &sts(), None).unwrap();
    // Revision 3 was pruned: the one before the current 4 is 2.
    assert_eq!((t.revision, t.previous), (2, true));
    assert_eq!(t.revisions[0].workload, "StatefulSet/ioc/bl01");
    assert_eq!(t.revisions[0].revision, Some(2));

    let t = find_target(&inv, &release(), None).unwrap();
    assert_eq!((t.revision, t.previous), (2, true));
    // Versions 2 and 3 share the template: one revision, both Helm numbers.
    assert_eq!(t.revisions[0].helm_revisions, vec![3, 2]);
    let t = find_target(&inv, &release(), Some(1)).unwrap();
    assert_eq!((t.revision, t.previous), (1, false));
    assert_eq!(t.revisions[0].helm_revisions, vec![1]);
}

#[test]
fn a_revision_not_retained_is_an_error_listing_those_that_are() {
    let inv = inventory();
    let e = find_target(&inv, &sts(), Some(3)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "StatefulSet/ioc/bl01: revision 3 is not retained; retained revisions: 1, 2, 4"
    );
    let e = find_target(&inv, &release(), Some(9)).unwrap_err();
    assert!(
        e.to_string().ends_with("retained revisions: 1, 2, 3"),
        "{e}"
    );
    let missing = Selector::Workload {
        kind: "Deployment".into(),
        namespace: "ioc".into(),
        name: "bl01".into(),
    };
    assert_eq!(
        find_target(&inv, &missing, None).unwrap_err(),
        LookupError::NotFound("Deployment/ioc/bl01".into())
    );
    let one = Inventory::build(&[cr("solo", 1, true)]).0;
    let solo = Selector::Workload {
        kind: "StatefulSet".into(),
        namespace: "ioc".into(),
        name: "solo".into(),
    };
    assert!(matches!(
        find_target(&one, &solo, None),
        Err(LookupError::NoPrevious { .. })
    ));
}

const NOW: i64 = 1_798_000_000;

fn summary(state: &str, age: i64, listed: Vec<NotSafe>, more: usize) -> NodeSummary {
    NodeSummary {
        state: state.into(),
        message: format!("{state} message"),
        not_offline_safe: listed,
        not_offline_safe_more: more,
        observed_at: crate::summary::rfc3339(NOW - age),
        ..NodeSummary::default()
    }
}

fn not_safe(workload: &str, revision: Option<i64>, helm: Option<i64>) -> NotSafe {
    NotSafe {
        workload: workload.into(),
        revision,
        helm_release: None,
        helm_revision: helm,
        readiness: "needs_registry".into(),
        reason: "c (reg/x:latest): pull policy Always".into(),
    }
}

#[test]
fn each_node_is_ready_only_when_fresh_trusted_and_not_listing_the_target() {
    let inv = inventory();
    let t = find_target(&inv, &sts(), Some(2)).unwrap();
    let targets: Vec<&TargetRevision> = t.revisions.iter().collect();
    let ask = |s: Option<&NodeSummary>| answer("n1", s, &targets, NOW, 600);

    let ok = ask(Some(&summary("Ready", 30, vec![], 0)));
    assert!(ok.ready, "{ok:?}");
    assert_eq!(ok.age_seconds, Some(30));
    // Cordon is ignored, and another revision not being safe says nothing of this one.
    let other = not_safe("StatefulSet/ioc/bl01", Some(1), None);
    assert!(ask(Some(&summary("Cordoned", 30, vec![other.clone()], 0))).ready);
    // A Helm number equal to the target's controller number is another revision.
    let helm_two = not_safe("StatefulSet/ioc/bl01", None, Some(2));
    assert!(ask(Some(&summary("NotReady", 30, vec![helm_two], 0))).ready);

    let listed = ask(Some(&summary(
        "NotReady",
        30,
        vec![other, not_safe("StatefulSet/ioc/bl01", Some(2), None)],
        0,
    )));
    assert!(!listed.ready);
    assert_eq!(
        listed.reason,
        "StatefulSet/ioc/bl01 rev 2 needs_registry: c (reg/x:latest): pull policy Always"
    );

    let none = ask(None);
    assert_eq!((none.ready, none.state.as_str()), (false, "NoSummary"));
    assert!(none.reason.contains("no RollcacheNode"), "{none:?}");

    let stale = ask(Some(&summary("Ready", 1380, vec![], 0)));
    assert!(!stale.ready);
    assert_eq!(
        stale.reason,
        "summary stale: observed 23m ago, older than 10m"
    );

    for state in [
        "RuntimeDown",
        "NodeMissing",
        "Stale",
        "SourceError",
        "CannotPin",
    ] {
        let a = ask(Some(&summary(state, 30, vec![], 0)));
        assert!(!a.ready, "{state}");
        assert_eq!(a.reason, format!("node {state}: {state} message"));
    }

    let capped = ask(Some(&summary("NotReady", 30, vec![], 3)));
    assert!(!capped.ready);
    assert!(capped.reason.starts_with("cannot tell"), "{capped:?}");
}

#[test]
fn a_helm_target_matches_by_any_of_its_helm_revisions() {
    let inv = inventory();
    let t = find_target(&inv, &release(), Some(2)).unwrap();
    let targets: Vec<&TargetRevision> = t.revisions.iter().collect();
    // The agent names a revision by its newest Helm number: 3 for the template of 2 and 3.
    let listed = not_safe("Deployment/ioc/web", None, Some(3));
    let a = answer(
        "n1",
        Some(&summary("NotReady", 5, vec![listed], 0)),
        &targets,
        NOW,
        600,
    );
    assert!(!a.ready);
    assert!(
        a.reason.starts_with("Deployment/ioc/web helm revision 3"),
        "{a:?}"
    );
    let v1 = not_safe("Deployment/ioc/web", None, Some(1));
    let a = answer(
        "n1",
        Some(&summary("NotReady", 5, vec![v1], 0)),
        &targets,
        NOW,
        600,
    );
    assert!(a.ready, "{a:?}");
}

#[test]
fn cluster_rows_mark_missing_and_stale_summaries() {
    let fresh = ClusterRow::of("n1", Some(summary("Ready", 10, vec![], 0)), NOW, 600);
    assert_eq!((fresh.state_cell(), fresh.stale), ("Ready".into(), false));
    let old = ClusterRow::of("n2", Some(summary("Ready", 7200, vec![], 0)), NOW, 600);
    assert_eq!(old.state_cell(), "Ready (stale)");
    assert_eq!(age_text(old.age_seconds.unwrap()), "2h");
    let none = ClusterRow::of("n3", None, NOW, 600);
    assert_eq!(
        (none.state_cell(), none.age_seconds),
        ("NoSummary".into(), None)
    );
}

#[test]
fn times_read_back_as_written() {
    for t in [0, 951_782_400, NOW] {
        assert_eq!(parse_rfc3339(&crate::summary::rfc3339(t)), Some(t));
    }
    assert_eq!(parse_rfc3339("2026-12-23T04:26:40.123Z"), Some(NOW));
    assert_eq!(parse_rfc3339("2026-12-23T05:26:40+01:00"), Some(NOW));
    for bad in [
        "",
        "yesterday",
        "2026-13-01T00:00:00Z",
        "2026-12-23T04:26:40",
    ] {
        assert_eq!(parse_rfc3339(bad), None, "{bad}");
    }
    assert_eq!(age_text(45), "45s");
    assert_eq!(age_text(600), "10m");
    assert_eq!(age_text(3 * 86_400), "3d");
}

//! Scheduling awareness: whether a pod template could run on a node, as Kubernetes decides.
//! Cases follow the Kubernetes documentation ("Assigning Pods to Nodes", "Taints and
//! Tolerations") and the component-helpers node affinity semantics.

use std::collections::BTreeMap;

use proptest::prelude::*;
use rollcache::model::{
    NodeFacts, NodeSelectorRequirement, NodeSelectorTerm, Scheduling, Taint, Toleration,
};
use rollcache::plan::NotHeld;
use rollcache::scheduling::{SchedulingError, check_scheduling, tolerates};

fn node(name: &str, labels: &[(&str, &str)], taints: &[(&str, Option<&str>, &str)]) -> NodeFacts {
    NodeFacts {
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        taints: taints
            .iter()
            .map(|(k, v, e)| Taint {
                key: k.to_string(),
                value: v.map(str::to_owned),
                effect: e.to_string(),
            })
            .collect(),
        unschedulable: false,
    }
}

fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: key.into(),
        operator: op.into(),
        values: values.iter().map(|v| v.to_string()).collect(),
    }
}

fn term(exprs: Vec<NodeSelectorRequirement>) -> NodeSelectorTerm {
    NodeSelectorTerm {
        match_expressions: exprs,
        match_fields: vec![],
    }
}

fn tol(
    key: Option<&str>,
    op: Option<&str>,
    value: Option<&str>,
    effect: Option<&str>,
) -> Toleration {
    Toleration {
        key: key.map(Into::into),
        operator: op.map(Into::into),
        value: value.map(Into::into),
        effect: effect.map(Into::into),
    }
}

fn ok(s: &Scheduling, n: &NodeFacts) -> bool {
    check_scheduling(s, "Deployment", n).is_ok()
}

#[test]
fn node_selector_from_the_docs() {
    let s = Scheduling {
        node_selector: BTreeMap::from([("disktype".into(), "ssd".into())]),
        ..Default::default()
    };
    assert!(ok(
        &s,
        &node("a", &[("disktype", "ssd"), ("zone", "x")], &[])
    ));
    let err =
        check_scheduling(&s, "Deployment", &node("b", &[("disktype", "hdd")], &[])).unwrap_err();
    assert_eq!(
        err,
        SchedulingError::NotHeld(NotHeld::NodeSelector {
            key: "disktype".into(),
            want: "ssd".into(),
            have: Some("hdd".into())
        })
    );
    assert!(!ok(&s, &node("c", &[], &[])));
}

#[test]
fn required_node_affinity_from_the_docs() {
    // topology.kubernetes.io/zone In [antarctica-east1, antarctica-west1]
    let s = Scheduling {
        required_terms: vec![term(vec![req(
            "topology.kubernetes.io/zone",
            "In",
            &["antarctica-east1", "antarctica-west1"],
        )])],
        ..Default::default()
    };
    assert!(ok(
        &s,
        &node(
            "a",
            &[("topology.kubernetes.io/zone", "antarctica-west1")],
            &[]
        )
    ));
    assert!(!ok(
        &s,
        &node("b", &[("topology.kubernetes.io/zone", "europe-west1")], &[])
    ));
    let err = check_scheduling(&s, "Deployment", &node("c", &[], &[])).unwrap_err();
    match err {
        SchedulingError::NotHeld(NotHeld::NodeAffinity { detail }) => {
            assert!(
                detail.contains("topology.kubernetes.io/zone In"),
                "{detail}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn operators_follow_label_selector_semantics() {
    let n = node("n1", &[("gen", "5"), ("zone", "a"), ("gpu", "")], &[]);
    let cases = [
        (req("zone", "In", &["a", "b"]), true),
        (req("zone", "In", &["b"]), false),
        (req("zone", "NotIn", &["b"]), true),
        (req("zone", "NotIn", &["a"]), false),
        (req("missing", "NotIn", &["a"]), true),
        (req("missing", "In", &["a"]), false),
        (req("gpu", "Exists", &[]), true),
        (req("missing", "Exists", &[]), false),
        (req("missing", "DoesNotExist", &[]), true),
        (req("gpu", "DoesNotExist", &[]), false),
        (req("gen", "Gt", &["4"]), true),
        (req("gen", "Gt", &["5"]), false),
        (req("gen", "Lt", &["6"]), true),
        (req("gen", "Lt", &["-1"]), false),
        (req("zone", "Gt", &["1"]), false), // not an integer on the node
        (req("missing", "Lt", &["9"]), false),
    ];
    for (r, want) in cases {
        let desc = format!("{} {} {:?}", r.key, r.operator, r.values);
        let s = Scheduling {
            required_terms: vec![term(vec![r])],
            ..Default::default()
        };
        assert_eq!(ok(&s, &n), want, "{desc}");
    }
}

#[test]
fn terms_are_ored_and_requirements_anded() {
    let n = node("n1", &[("zone", "a"), ("disk", "ssd")], &[]);
    let and_fails = term(vec![req("zone", "In", &["a"]), req("disk", "In", &["hdd"])]);
    let and_holds = term(vec![req("zone", "In", &["a"]), req("disk", "Exists", &[])]);
    let s = |terms: Vec<NodeSelectorTerm>| Scheduling {
        required_terms: terms,
        ..Default::default()
    };
    assert!(!ok(&s(vec![and_fails.clone()]), &n));
    assert!(ok(&s(vec![and_fails.clone(), and_holds.clone()]), &n));
    // An empty term matches nothing, even next to nothing else.
    assert!(!ok(&s(vec![NodeSelectorTerm::default()]), &n));
    assert!(ok(&s(vec![NodeSelectorTerm::default(), and_holds]), &n));
}

#[test]
fn match_fields_select_the_node_by_name() {
    let pinned = |op: &str, name: &str| Scheduling {
        required_terms: vec![NodeSelectorTerm {
            match_expressions: vec![],
            match_fields: vec![req("metadata.name", op, &[name])],
        }],
        ..Default::default()
    };
    let n = node("ioc-host-1", &[], &[]);
    assert!(ok(&pinned("In", "ioc-host-1"), &n));
    assert!(!ok(&pinned("In", "ioc-host-2"), &n));
    assert!(ok(&pinned("NotIn", "ioc-host-2"), &n));
    assert!(!ok(&pinned("NotIn", "ioc-host-1"), &n));
}

#[test]
fn invalid_requirements_match_nothing_and_are_reported() {
    let n = node("n1", &[("zone", "a")], &[]);
    for bad in [
        req("zone", "Like", &["a"]),
        req("zone", "In", &[]),
        req("zone", "Exists", &["a"]),
        req("gen", "Gt", &["five"]),
    ] {
        let s = Scheduling {
            required_terms: vec![term(vec![req("zone", "In", &["a"]), bad.clone()])],
            ..Default::default()
        };
        match check_scheduling(&s, "Deployment", &n) {
            Err(SchedulingError::Invalid(msg, NotHeld::NodeAffinity { .. })) => {
                assert!(msg.contains(&bad.key), "{msg}")
            }
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    // A valid term next to an invalid one still lets the pod schedule.
    let s = Scheduling {
        required_terms: vec![
            term(vec![req("zone", "Like", &["a"])]),
            term(vec![req("zone", "In", &["a"])]),
        ],
        ..Default::default()
    };
    assert!(ok(&s, &n));
    let fields_bad = Scheduling {
        required_terms: vec![NodeSelectorTerm {
            match_expressions: vec![],
            match_fields: vec![req("metadata.name", "Exists", &[])],
        }],
        ..Default::default()
    };
    assert!(matches!(
        check_scheduling(&fields_bad, "Deployment", &n),
        Err(SchedulingError::Invalid(..))
    ));
}

#[test]
fn node_name_pins_to_one_node() {
    let s = Scheduling {
        node_name: Some("ioc-host-1".into()),
        ..Default::default()
    };
    assert!(ok(&s, &node("ioc-host-1", &[], &[])));
    assert_eq!(
        check_scheduling(&s, "StatefulSet", &node("ioc-host-2", &[], &[])).unwrap_err(),
        SchedulingError::NotHeld(NotHeld::NodeName {
            node_name: "ioc-host-1".into()
        })
    );
    // Bound pods skip the scheduler: the kubelet only refuses untolerated NoExecute taints.
    assert!(ok(
        &s,
        &node(
            "ioc-host-1",
            &[],
            &[("dedicated", Some("ioc"), "NoSchedule")]
        )
    ));
    assert!(!ok(
        &s,
        &node(
            "ioc-host-1",
            &[],
            &[("dedicated", Some("ioc"), "NoExecute")]
        )
    ));
    // The kubelet still checks node affinity.
    let mut s2 = s.clone();
    s2.node_selector.insert("beamline".into(), "i22".into());
    assert!(!ok(&s2, &node("ioc-host-1", &[("beamline", "i18")], &[])));
}

#[test]
fn taints_and_tolerations_from_the_docs() {
    let taint = Taint {
        key: "key1".into(),
        value: Some("value1".into()),
        effect: "NoSchedule".into(),
    };
    let cases = [
        (
            tol(
                Some("key1"),
                Some("Equal"),
                Some("value1"),
                Some("NoSchedule"),
            ),
            true,
        ),
        (
            tol(Some("key1"), Some("Exists"), None, Some("NoSchedule")),
            true,
        ),
        (
            tol(Some("key1"), None, Some("value1"), Some("NoSchedule")),
            true,
        ), // Equal is the default
        (
            tol(
                Some("key1"),
                Some("Equal"),
                Some("value2"),
                Some("NoSchedule"),
            ),
            false,
        ),
        (
            tol(
                Some("key1"),
                Some("Equal"),
                Some("value1"),
                Some("NoExecute"),
            ),
            false,
        ),
        (tol(Some("key1"), Some("Equal"), Some("value1"), None), true), // every effect
        (tol(None, Some("Exists"), None, None), true),                  // tolerates everything
        (tol(Some("key2"), Some("Exists"), None, None), false),
        (
            tol(Some("key1"), Some("Bogus"), Some("value1"), None),
            false,
        ),
    ];
    for (t, want) in cases {
        assert_eq!(tolerates(&t, &taint), want, "{t:?}");
    }
}

#[test]
fn numeric_toleration_operators() {
    let taint = Taint {
        key: "sla".into(),
        value: Some("950".into()),
        effect: "NoSchedule".into(),
    };
    assert!(tolerates(
        &tol(Some("sla"), Some("Gt"), Some("900"), None),
        &taint
    ));
    assert!(!tolerates(
        &tol(Some("sla"), Some("Gt"), Some("950"), None),
        &taint
    ));
    assert!(tolerates(
        &tol(Some("sla"), Some("Lt"), Some("1000"), None),
        &taint
    ));
    assert!(!tolerates(
        &tol(Some("sla"), Some("Lt"), Some("x"), None),
        &taint
    ));
}

#[test]
fn every_taint_must_be_tolerated_as_in_the_docs() {
    // kubectl taint node1 key1=value1:NoSchedule key1=value1:NoExecute key2=value2:NoSchedule
    let n = node(
        "node1",
        &[],
        &[
            ("key1", Some("value1"), "NoSchedule"),
            ("key1", Some("value1"), "NoExecute"),
            ("key2", Some("value2"), "NoSchedule"),
        ],
    );
    let mut s = Scheduling {
        tolerations: vec![
            tol(
                Some("key1"),
                Some("Equal"),
                Some("value1"),
                Some("NoSchedule"),
            ),
            tol(
                Some("key1"),
                Some("Equal"),
                Some("value1"),
                Some("NoExecute"),
            ),
        ],
        ..Default::default()
    };
    assert_eq!(
        check_scheduling(&s, "Deployment", &n).unwrap_err(),
        SchedulingError::NotHeld(NotHeld::Taint {
            key: "key2".into(),
            value: Some("value2".into()),
            effect: "NoSchedule".into()
        })
    );
    s.tolerations
        .push(tol(Some("key2"), Some("Exists"), None, None));
    assert!(ok(&s, &n));
}

#[test]
fn prefer_no_schedule_is_ignored() {
    let n = node("n", &[], &[("soft", None, "PreferNoSchedule")]);
    assert!(ok(&Scheduling::default(), &n));
}

#[test]
fn weather_taints_never_exclude_whatever_their_effect() {
    // Cordon and the node lifecycle controller's taints say what the node goes through, not what
    // it may run: every kind of template stays held, bound by nodeName or scheduled.
    let bound = Scheduling {
        node_name: Some("n".into()),
        ..Default::default()
    };
    let selected = Scheduling {
        node_selector: BTreeMap::from([("zone".into(), "a".into())]),
        ..Default::default()
    };
    for key in rollcache::scheduling::WEATHER_TAINTS {
        for effect in ["NoSchedule", "NoExecute", "PreferNoSchedule"] {
            let mut n = node("n", &[("zone", "a")], &[(key, None, effect)]);
            n.unschedulable = key == "node.kubernetes.io/unschedulable";
            for kind in ["Deployment", "StatefulSet", "DaemonSet"] {
                for s in [&Scheduling::default(), &bound, &selected] {
                    assert_eq!(
                        check_scheduling(s, kind, &n),
                        Ok(()),
                        "{kind} {s:?} on a node tainted {key}:{effect}"
                    );
                }
            }
        }
    }
    // All of them at once, with a value, as a drained node under pressure looks.
    let all: Vec<(&str, Option<&str>, &str)> = rollcache::scheduling::WEATHER_TAINTS
        .iter()
        .map(|k| (*k, Some("true"), "NoExecute"))
        .collect();
    let mut n = node("n", &[("zone", "a")], &all);
    n.unschedulable = true;
    assert!(ok(&selected, &n));
}

#[test]
fn a_real_taint_still_excludes_beside_weather_taints() {
    // Control: only the weather keys are ignored, by exact key; any other taint the pod does
    // not tolerate excludes it as before.
    for key in [
        "dedicated",
        "node.kubernetes.io/unschedulable-not",
        "example.com/not-ready",
        "node.kubernetes.io/out-of-service",
    ] {
        let n = node(
            "n",
            &[],
            &[
                ("node.kubernetes.io/unschedulable", None, "NoSchedule"),
                ("node.kubernetes.io/not-ready", None, "NoExecute"),
                (key, Some("gpu"), "NoSchedule"),
            ],
        );
        match check_scheduling(&Scheduling::default(), "Deployment", &n) {
            Err(SchedulingError::NotHeld(NotHeld::Taint { key: k, .. })) => assert_eq!(k, key),
            other => panic!("{key}: {other:?}"),
        }
    }
}

fn labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    proptest::collection::btree_map("[a-z]{1,3}(/[a-z]{1,3})?", "[a-z0-9]{0,3}", 0..6)
}

fn taint_strategy() -> impl Strategy<Value = Taint> {
    (
        "[a-z]{1,4}",
        proptest::option::of("[a-z0-9]{0,3}"),
        prop_oneof![
            Just("NoSchedule"),
            Just("NoExecute"),
            Just("PreferNoSchedule")
        ],
    )
        .prop_map(|(key, value, effect)| Taint {
            key,
            value,
            effect: effect.to_owned(),
        })
}

/// A template that asks for exactly the node's labels, in every way Kubernetes allows.
fn template_from(n: &NodeFacts, use_name: bool) -> Scheduling {
    let mut exprs: Vec<NodeSelectorRequirement> = n
        .labels
        .iter()
        .map(|(k, v)| req(k, "In", &[v.as_str()]))
        .collect();
    exprs.push(req("never-a-label", "DoesNotExist", &[]));
    Scheduling {
        node_name: use_name.then(|| n.name.clone()),
        node_selector: n.labels.clone(),
        required_terms: vec![NodeSelectorTerm {
            match_expressions: exprs,
            match_fields: vec![req("metadata.name", "In", &[n.name.as_str()])],
        }],
        tolerations: n
            .taints
            .iter()
            .map(|t| {
                tol(
                    Some(&t.key),
                    Some("Equal"),
                    t.value.as_deref().or(Some("")),
                    Some(&t.effect),
                )
            })
            .collect(),
    }
}

proptest! {
    #[test]
    fn a_node_matches_a_template_built_from_itself(
        name in "[a-z]{1,8}", labels in labels(),
        taints in proptest::collection::vec(taint_strategy(), 0..4), use_name: bool,
    ) {
        let n = NodeFacts { name, labels, taints, unschedulable: false };
        let s = template_from(&n, use_name);
        prop_assert!(check_scheduling(&s, "Deployment", &n).is_ok());
    }

    #[test]
    fn an_untolerated_hard_taint_always_excludes(
        name in "[a-z]{1,8}", labels in labels(),
        taints in proptest::collection::vec(taint_strategy(), 0..4),
        effect in prop_oneof![Just("NoSchedule"), Just("NoExecute")],
    ) {
        let mut n = NodeFacts { name, labels, taints, unschedulable: false };
        let s = template_from(&n, false);
        n.taints.push(Taint { key: "rollcache-untolerated".into(), value: None, effect: effect.into() });
        let excluded = matches!(
            check_scheduling(&s, "Deployment", &n),
            Err(SchedulingError::NotHeld(NotHeld::Taint { .. }))
        );
        prop_assert!(excluded);
    }

    #[test]
    fn tolerating_everything_tolerates_every_taint(t in taint_strategy()) {
        prop_assert!(tolerates(&tol(None, Some("Exists"), None, None), &t));
        prop_assert!(tolerates(&tol(Some(&t.key), Some("Exists"), None, None), &t));
    }

    #[test]
    fn a_missing_selector_label_always_excludes(name in "[a-z]{1,8}", labels in labels()) {
        let n = NodeFacts { name, labels, taints: vec![], unschedulable: false };
        let mut s = template_from(&n, false);
        s.node_selector.insert("rollcache-missing".into(), "x".into());
        prop_assert!(check_scheduling(&s, "Deployment", &n).is_err());
    }
}

//! The plan: which images a node holds, in which order, and how it reads.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use proptest::prelude::*;
use rollcache::inventory::{Inventory, PullPolicy};
use rollcache::model::{
    ContainerImage, NodeFacts, ObjectRef, PodTemplate, RevisionFact, Scheduling, SourceKind, Taint,
    WorkloadId,
};
use rollcache::plan::{NotHeld, Plan, PlanConfig, Tier, plan};
use rollcache::plan_view::{render_json, render_table};

fn fact(
    kind: &str,
    name: &str,
    rev: i64,
    current: bool,
    images: &[&str],
    s: Scheduling,
) -> RevisionFact {
    let (source, object_kind) = match kind {
        "StatefulSet" => (SourceKind::ControllerRevision, "ControllerRevision"),
        _ => (SourceKind::ReplicaSet, "ReplicaSet"),
    };
    RevisionFact {
        source,
        object: ObjectRef::new(object_kind, "shop", format!("{name}-{rev}")),
        workload: WorkloadId::new(kind, "shop", name),
        revision: Some(rev),
        created: Some(rev * 100),
        helm_release: Some("shop".into()),
        status: None,
        current,
        template: PodTemplate {
            containers: images
                .iter()
                .enumerate()
                .map(|(i, img)| ContainerImage {
                    name: format!("c{i}"),
                    image: img.to_string(),
                    init: i == 0 && images.len() > 1,
                    ..Default::default()
                })
                .collect(),
            image_pull_secrets: vec!["regcred".into()],
            service_account: Some("web".into()),
            scheduling: s,
        }
        .into(),
    }
}

fn node() -> NodeFacts {
    NodeFacts {
        name: "worker-1".into(),
        labels: BTreeMap::from([("zone".into(), "a".into())]),
        taints: vec![],
        unschedulable: false,
    }
}

fn refs(p: &Plan) -> Vec<&str> {
    p.images.iter().map(|i| i.reference.as_str()).collect()
}

#[test]
fn priorities_current_then_extras_then_newest_retained() {
    let facts = vec![
        fact(
            "Deployment",
            "web",
            1,
            false,
            &["web:1"],
            Scheduling::default(),
        ),
        fact(
            "Deployment",
            "web",
            2,
            false,
            &["web:2"],
            Scheduling::default(),
        ),
        fact(
            "Deployment",
            "web",
            3,
            true,
            &["web:3"],
            Scheduling::default(),
        ),
        fact(
            "Deployment",
            "api",
            4,
            true,
            &["api:4"],
            Scheduling::default(),
        ),
        fact(
            "Deployment",
            "api",
            3,
            false,
            &["api:3"],
            Scheduling::default(),
        ),
    ];
    let (inv, _) = Inventory::build(&facts);
    let cfg = PlanConfig {
        extra_images: vec!["debug-tools:1".into(), "web:2".into()],
        ..Default::default()
    };
    let sizes = HashMap::from([
        ("docker.io/library/web:3".to_owned(), 50),
        ("docker.io/library/api:4".to_owned(), 10),
    ]);
    let p = plan(&inv, &node(), &cfg, &sizes);
    assert_eq!(
        refs(&p),
        [
            "docker.io/library/api:4",         // current, 10 bytes
            "docker.io/library/web:3",         // current, 50 bytes
            "docker.io/library/debug-tools:1", // extra
            "docker.io/library/web:2",         // extra and web's newest retained
            "docker.io/library/api:3",         // api's newest retained
            "docker.io/library/web:1",         // web's second retained
        ]
    );
    let prio: Vec<u32> = p.images.iter().map(|i| i.priority).collect();
    assert_eq!(prio, [0, 0, 1, 1, 2, 3]);
    let tiers: Vec<Tier> = p.images.iter().map(|i| i.tier).collect();
    assert_eq!(tiers[..3], [Tier::Current, Tier::Current, Tier::Extra]);
    assert!(p.images[3].extra && p.images[3].needed_by.len() == 1);
    assert!(p.images[2].needed_by.is_empty());
    assert_eq!(p.images[0].size_bytes, Some(10));
    assert_eq!(p.images[4].size_bytes, None);
    let web1 = p
        .images
        .iter()
        .find(|i| i.reference.ends_with("web:1"))
        .unwrap();
    assert_eq!(web1.pull_secrets[0].to_string(), "shop/regcred");
    // The template names a pull secret, so its service account's secrets are not used.
    assert!(web1.service_accounts.is_empty());
    let rank: Vec<Option<u32>> = p.revisions.iter().map(|r| r.rank).collect();
    assert_eq!(rank, [None, Some(0), None, Some(0), Some(1)]); // api then web, newest first
    for r in &p.revisions {
        assert_eq!(p.revision(&r.key), Some(r));
    }
}

#[test]
fn service_account_secrets_count_when_the_template_names_none() {
    let mut f = fact(
        "Deployment",
        "web",
        1,
        true,
        &["web:1"],
        Scheduling::default(),
    );
    std::sync::Arc::make_mut(&mut f.template)
        .image_pull_secrets
        .clear();
    let mut g = fact(
        "Deployment",
        "api",
        1,
        true,
        &["web:1"],
        Scheduling::default(),
    );
    let t = std::sync::Arc::make_mut(&mut g.template);
    t.image_pull_secrets.clear();
    t.service_account = None;
    let (inv, _) = Inventory::build(&[f, g]);
    let p = plan(&inv, &node(), &PlanConfig::default(), &HashMap::new());
    assert!(p.images[0].pull_secrets.is_empty());
    assert_eq!(
        p.images[0].service_accounts,
        [
            ("shop".to_owned(), "default".to_owned()),
            ("shop".to_owned(), "web".to_owned())
        ]
    );
}

#[test]
fn within_a_level_smaller_images_first_unknown_last() {
    let facts = vec![
        fact(
            "Deployment",
            "a",
            1,
            true,
            &["big:1"],
            Scheduling::default(),
        ),
        fact(
            "Deployment",
            "b",
            1,
            true,
            &["small:1"],
            Scheduling::default(),
        ),
        fact(
            "Deployment",
            "c",
            1,
            true,
            &["unknown:1"],
            Scheduling::default(),
        ),
        fact(
            "Deployment",
            "d",
            1,
            true,
            &["aaa-unknown:1"],
            Scheduling::default(),
        ),
    ];
    let (inv, _) = Inventory::build(&facts);
    let sizes = HashMap::from([
        ("docker.io/library/big:1".to_owned(), 900_000_000),
        ("docker.io/library/small:1".to_owned(), 3_000_000),
    ]);
    let p = plan(&inv, &node(), &PlanConfig::default(), &sizes);
    assert_eq!(
        refs(&p),
        [
            "docker.io/library/small:1",
            "docker.io/library/big:1",
            "docker.io/library/aaa-unknown:1",
            "docker.io/library/unknown:1"
        ]
    );
}

#[test]
fn shared_images_take_the_best_priority_and_list_every_revision() {
    let facts = vec![
        fact(
            "Deployment",
            "web",
            1,
            false,
            &["istio/proxyv2:1.20", "web:1"],
            Scheduling::default(),
        ),
        fact(
            "Deployment",
            "web",
            2,
            true,
            &["istio/proxyv2:1.20", "web:2"],
            Scheduling::default(),
        ),
    ];
    let (inv, _) = Inventory::build(&facts);
    let p = plan(&inv, &node(), &PlanConfig::default(), &HashMap::new());
    let proxy = p
        .images
        .iter()
        .find(|i| i.reference.contains("proxyv2"))
        .unwrap();
    assert_eq!(proxy.priority, 0);
    assert_eq!(proxy.needed_by.len(), 2);
    assert_eq!(p.images.len(), 3);
}

#[test]
fn unschedulable_revisions_are_listed_with_the_reason() {
    let pinned = Scheduling {
        node_name: Some("ioc-host-2".into()),
        ..Default::default()
    };
    let facts = vec![
        fact(
            "StatefulSet",
            "bl01-ioc",
            1,
            true,
            &["ghcr.io/epics/ioc:1"],
            pinned.clone(),
        ),
        fact(
            "Deployment",
            "web",
            1,
            true,
            &["web:1"],
            Scheduling::default(),
        ),
    ];
    let (inv, _) = Inventory::build(&facts);
    let p = plan(&inv, &node(), &PlanConfig::default(), &HashMap::new());
    assert_eq!(refs(&p), ["docker.io/library/web:1"]);
    let ioc = p
        .revisions
        .iter()
        .find(|r| r.key.workload.name == "bl01-ioc")
        .unwrap();
    assert!(!ioc.wanted);
    assert_eq!(
        ioc.not_held,
        Some(NotHeld::NodeName {
            node_name: "ioc-host-2".into()
        })
    );
    assert_eq!(ioc.images, ["ghcr.io/epics/ioc:1"]);

    let all = plan(
        &inv,
        &node(),
        &PlanConfig {
            hold_everything: true,
            ..Default::default()
        },
        &HashMap::new(),
    );
    assert_eq!(all.images.len(), 2);
    assert!(
        all.revisions
            .iter()
            .all(|r| r.wanted && r.not_held.is_none())
    );
}

#[test]
fn never_pulled_images_are_held_and_noted() {
    let mut f = fact(
        "Deployment",
        "air",
        1,
        true,
        &["airgapped:1"],
        Scheduling::default(),
    );
    std::sync::Arc::make_mut(&mut f.template).containers[0].pull_policy = Some("Never".into());
    let (inv, _) = Inventory::build(&[f]);
    let p = plan(&inv, &node(), &PlanConfig::default(), &HashMap::new());
    assert_eq!(p.images.len(), 1);
    assert!(p.images[0].never_pulled);
    assert_eq!(p.images[0].pull_policies, [PullPolicy::Never]);
    assert!(render_table(&p).contains("imagePullPolicy Never"));
}

#[test]
fn digests_are_pulled_by_digest() {
    let d = "sha256:7cc4b5aefd1d0cadf8d97d4350462ba51c694ebca145b08d7d41b41acc8db5aa";
    let img = format!("nginx:1.25@{d}");
    let (inv, _) = Inventory::build(&[fact(
        "Deployment",
        "w",
        1,
        true,
        &[&img],
        Scheduling::default(),
    )]);
    let p = plan(&inv, &node(), &PlanConfig::default(), &HashMap::new());
    assert_eq!(
        p.images[0].reference,
        format!("docker.io/library/nginx:1.25@{d}")
    );
    assert_eq!(p.images[0].pull_ref, format!("docker.io/library/nginx@{d}"));
    assert!(render_table(&p).contains(&format!("pulls      docker.io/library/nginx@{d}")));
}

#[test]
fn invalid_extra_images_are_problems() {
    let p = plan(
        &Inventory::default(),
        &node(),
        &PlanConfig {
            extra_images: vec!["Not/Valid".into(), "ok:1".into()],
            ..Default::default()
        },
        &HashMap::new(),
    );
    assert_eq!(refs(&p), ["docker.io/library/ok:1"]);
    assert_eq!(p.problems.len(), 1);
    assert!(p.problems[0].message.contains("Not/Valid"));
}

#[test]
fn table_view_reads_well_and_is_stable() {
    let tainted = NodeFacts {
        taints: vec![Taint {
            key: "dedicated".into(),
            value: Some("gpu".into()),
            effect: "NoSchedule".into(),
        }],
        ..node()
    };
    let gpu = Scheduling {
        tolerations: vec![rollcache::model::Toleration {
            key: Some("dedicated".into()),
            operator: Some("Exists".into()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let facts = vec![
        fact(
            "Deployment",
            "trainer",
            2,
            true,
            &["trainer:2"],
            gpu.clone(),
        ),
        fact(
            "Deployment",
            "web",
            1,
            true,
            &["web:1"],
            Scheduling::default(),
        ),
        fact(
            "Deployment",
            "web",
            2,
            false,
            &["web:2"],
            Scheduling::default(),
        ),
    ];
    let (inv, _) = Inventory::build(&facts);
    let p = plan(
        &inv,
        &tainted,
        &PlanConfig::default(),
        &HashMap::from([("docker.io/library/trainer:2".to_owned(), 1536)]),
    );
    let text = render_table(&p);
    assert_eq!(text, render_table(&p));
    assert!(
        text.starts_with("Node worker-1 (scheduling-aware): 1 images for 1 of 3 revisions"),
        "{text}"
    );
    assert!(text.contains("1. docker.io/library/trainer:2"), "{text}");
    assert!(text.contains("priority   0 (current revision)"), "{text}");
    assert!(text.contains("size       1.5 KiB"), "{text}");
    assert!(
        text.contains("needed by  Deployment shop/trainer rev 2 (helm release shop)"),
        "{text}"
    );
    assert!(text.contains("secrets    shop/regcred"), "{text}");
    assert!(
        text.contains("Revisions not held on this node (2):"),
        "{text}"
    );
    let rows: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("Revisions not held"))
        .skip(1)
        .collect();
    assert_eq!(
        rows[0].split_whitespace().collect::<Vec<_>>(),
        ["WORKLOAD", "REVISION", "WHY"]
    );
    assert!(
        rows[1].contains("Deployment shop/web")
            && rows[1].contains("untolerated taint dedicated=gpu:NoSchedule")
    );
    // Columns line up.
    let col = rows[0].find("REVISION").unwrap();
    assert!(
        rows[1..].iter().all(|r| r[col..].starts_with("rev ")),
        "{text}"
    );
}

#[test]
fn json_round_trips() {
    let facts = vec![fact(
        "Deployment",
        "web",
        1,
        true,
        &["web:1"],
        Scheduling::default(),
    )];
    let (inv, _) = Inventory::build(&facts);
    let p = plan(&inv, &node(), &PlanConfig::default(), &HashMap::new());
    let json = render_json(&p);
    let back: Plan = serde_json::from_str(&json).unwrap();
    assert_eq!(back, p);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["images"][0]["tier"], "current");
    assert_eq!(v["images"][0]["needed_by"][0]["workload"]["name"], "web");
}

/// 10k revisions across 2k workloads, a shared sidecar, scheduling on every template.
#[test]
fn ten_thousand_revisions_plan_quickly() {
    let mut facts = Vec::new();
    for w in 0..2000 {
        for r in 1..=5 {
            let s = Scheduling {
                node_selector: BTreeMap::from([(
                    "zone".into(),
                    if w % 3 == 0 { "b" } else { "a" }.into(),
                )]),
                ..Default::default()
            };
            let app = format!("registry.example.com/team{}/app{w}:{r}", w % 50);
            facts.push(fact(
                "Deployment",
                &format!("app{w}"),
                r,
                r == 5,
                &["istio/proxyv2:1.20", &app],
                s,
            ));
        }
    }
    let start = Instant::now();
    let (inv, problems) = Inventory::build(&facts);
    let p = plan(&inv, &node(), &PlanConfig::default(), &HashMap::new());
    let took = start.elapsed();
    assert!(problems.is_empty());
    assert_eq!(inv.revision_count(), 10_000);
    assert_eq!(p.revisions.len(), 10_000);
    let held = p.revisions.iter().filter(|r| r.wanted).count();
    assert_eq!(held, 5 * (2000 - 667));
    assert_eq!(p.images.len(), held + 1);
    // Generous for unoptimised test builds; release builds are far faster.
    assert!(took.as_secs_f64() < 2.0, "inventory + plan took {took:?}");
}

proptest! {
    #[test]
    fn hold_everything_holds_every_valid_image(
        specs in proptest::collection::vec(("[a-z]{1,3}", 1i64..5, any::<bool>(), "[a-z]{1,3}", any::<bool>()), 1..20),
    ) {
        let facts: Vec<RevisionFact> = specs
            .iter()
            .map(|(w, r, cur, img, pinned)| {
                let s = Scheduling {
                    node_name: pinned.then(|| "elsewhere".to_owned()),
                    ..Default::default()
                };
                fact("Deployment", w, *r, *cur, &[&format!("{img}:{r}")], s)
            })
            .collect();
        let (inv, _) = Inventory::build(&facts);
        let cfg = PlanConfig { hold_everything: true, ..Default::default() };
        let p = plan(&inv, &node(), &cfg, &HashMap::new());
        prop_assert!(p.revisions.iter().all(|r| r.wanted));
        for f in &facts {
            let want = rollcache::image_ref::ImageRef::parse(&f.template.containers[0].image).unwrap().canonical();
            prop_assert!(p.images.iter().any(|i| i.reference == want));
        }
        // Scheduling-aware plans hold a subset, never more.
        let aware = plan(&inv, &node(), &PlanConfig::default(), &HashMap::new());
        prop_assert!(aware.images.iter().all(|i| p.images.iter().any(|j| j.reference == i.reference)));
        // Priorities never decrease along the pull order.
        prop_assert!(p.images.windows(2).all(|w| w[0].priority <= w[1].priority));
    }
}

fn weather(unschedulable: bool, effect: &str) -> NodeFacts {
    NodeFacts {
        taints: rollcache::scheduling::WEATHER_TAINTS
            .iter()
            .map(|k| Taint {
                key: (*k).into(),
                value: None,
                effect: effect.into(),
            })
            .collect(),
        unschedulable,
        ..node()
    }
}

/// Facts of four workloads: one unconstrained, three constrained to zone a in each way a
/// template can be (nodeSelector, required affinity, nodeName).
fn constrained_facts() -> Vec<RevisionFact> {
    let selector = Scheduling {
        node_selector: BTreeMap::from([("zone".into(), "a".into())]),
        ..Default::default()
    };
    let affinity = Scheduling {
        required_terms: vec![rollcache::model::NodeSelectorTerm {
            match_expressions: vec![rollcache::model::NodeSelectorRequirement {
                key: "zone".into(),
                operator: "In".into(),
                values: vec!["a".into()],
            }],
            match_fields: vec![],
        }],
        ..Default::default()
    };
    let bound = Scheduling {
        node_name: Some("worker-1".into()),
        ..Default::default()
    };
    vec![
        fact(
            "Deployment",
            "web",
            1,
            true,
            &["web:1"],
            Scheduling::default(),
        ),
        fact(
            "Deployment",
            "web",
            2,
            false,
            &["web:2"],
            Scheduling::default(),
        ),
        fact("StatefulSet", "ioc", 1, true, &["ioc:1"], selector.clone()),
        fact("StatefulSet", "ioc", 2, false, &["ioc:2"], selector),
        fact("Deployment", "aff", 1, true, &["aff:1"], affinity),
        fact("Deployment", "bound", 1, true, &["bound:1"], bound),
    ]
}

#[test]
fn cordon_and_node_conditions_change_nothing_the_node_holds() {
    let (inv, _) = Inventory::build(&constrained_facts());
    let cfg = PlanConfig::default();
    let normal = plan(&inv, &node(), &cfg, &HashMap::new());
    assert_eq!(normal.images.len(), 6, "{:?}", refs(&normal));
    for effect in ["NoSchedule", "NoExecute"] {
        let p = plan(&inv, &weather(true, effect), &cfg, &HashMap::new());
        assert_eq!(refs(&p), refs(&normal), "weather taints {effect}");
        assert!(p.revisions.iter().all(|r| r.wanted && r.not_held.is_none()));
        assert!(p.node_state.known && p.node_state.cordoned);
        assert_eq!(p.node_state.ignored_taints.len(), 7);
        assert!(
            p.node_state
                .ignored_taints
                .contains(&format!("node.kubernetes.io/disk-pressure:{effect}"))
        );
        let text = render_table(&p);
        assert!(text.contains("Node state: cordoned; taints"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&render_json(&p)).unwrap();
        assert_eq!(json["node_state"]["cordoned"], true, "{json}");
        assert_eq!(json["node_state"]["known"], true, "{json}");
    }
    // Cordoned by `spec.unschedulable` alone (before the controller adds the taint).
    let cordoned = NodeFacts {
        unschedulable: true,
        ..node()
    };
    let p = plan(&inv, &cordoned, &cfg, &HashMap::new());
    assert!(p.node_state.cordoned && p.node_state.ignored_taints.is_empty());
    assert_eq!(refs(&p), refs(&normal));
    assert!(
        !render_table(&normal).contains("Node state:"),
        "nothing to say"
    );
    // A plan written before node states reads as a known node.
    let mut json: serde_json::Value = serde_json::from_str(&render_json(&normal)).unwrap();
    json.as_object_mut().unwrap().remove("node_state");
    let old: Plan = serde_json::from_value(json).unwrap();
    assert!(old.node_state.known && old.node_state.summary().is_none());

    // Control: a taint that is not weather still excludes what does not tolerate it.
    let mut gpu = weather(true, "NoSchedule");
    gpu.taints.push(Taint {
        key: "dedicated".into(),
        value: Some("gpu".into()),
        effect: "NoSchedule".into(),
    });
    let p = plan(&inv, &gpu, &cfg, &HashMap::new());
    let bound_only: Vec<&str> = refs(&p);
    assert_eq!(
        bound_only,
        ["docker.io/library/bound:1"],
        "nodeName skips NoSchedule taints; the rest are excluded"
    );
    assert!(p.revisions.iter().filter(|r| !r.wanted).all(|r| matches!(
        &r.not_held,
        Some(NotHeld::Taint { key, .. }) if key == "dedicated"
    )));
}

#[test]
fn unknown_node_waits_for_constrained_revisions_and_holds_the_rest() {
    use rollcache::plan::{ThisNode, plan_for};
    let (inv, _) = Inventory::build(&constrained_facts());
    let cfg = PlanConfig::default();
    let unknown = ThisNode::Unknown {
        name: "worker-1",
        reason: "Node object worker-1 not found".into(),
    };
    let p = plan_for(&inv, &unknown, &cfg, &HashMap::new());
    assert_eq!(p.node, "worker-1");
    assert_eq!(
        refs(&p),
        ["docker.io/library/web:1", "docker.io/library/web:2"],
        "only unconstrained revisions are pulled"
    );
    for r in &p.revisions {
        if r.key.workload.name == "web" {
            assert!(r.wanted, "{r:?}");
        } else {
            assert!(!r.wanted, "{r:?}");
            let Some(NotHeld::NodeUnknown { detail }) = &r.not_held else {
                panic!("waiting for the node, not excluded: {r:?}");
            };
            assert_eq!(detail, "Node object worker-1 not found");
        }
    }
    assert!(!p.node_state.known);
    assert_eq!(
        p.node_state.unknown_reason.as_deref(),
        Some("Node object worker-1 not found")
    );
    let text = render_table(&p);
    assert!(
        text.contains("Node state: UNKNOWN (Node object worker-1 not found)"),
        "{text}"
    );
    assert!(
        text.contains("node unknown: Node object worker-1 not found"),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&render_json(&p)).unwrap();
    assert_eq!(json["node_state"]["known"], false, "{json}");
    let ioc = json["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"]["workload"]["name"] == "ioc")
        .unwrap();
    assert_eq!(ioc["not_held"]["reason"], "node-unknown", "{ioc}");

    // hold_everything needs no node.
    let all = PlanConfig {
        hold_everything: true,
        ..PlanConfig::default()
    };
    assert_eq!(
        plan_for(&inv, &unknown, &all, &HashMap::new()).images.len(),
        6
    );

    // Control: a known node whose labels exclude them says why, as before.
    let zone_b = NodeFacts {
        name: "worker-2".into(),
        labels: BTreeMap::from([("zone".into(), "b".into())]),
        ..node()
    };
    let p = plan(&inv, &zone_b, &cfg, &HashMap::new());
    assert_eq!(refs(&p).len(), 2);
    for r in p.revisions.iter().filter(|r| !r.wanted) {
        assert!(
            matches!(
                r.not_held,
                Some(
                    NotHeld::NodeSelector { .. }
                        | NotHeld::NodeAffinity { .. }
                        | NotHeld::NodeName { .. }
                )
            ),
            "{r:?}"
        );
    }
}

//! Helm release decoding: real Helm 4 output, generated releases, and hostile or broken input.

use std::io::Write;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use rollcache::history::{Decoded, ProblemKind, helm};
use rollcache::model::{RevisionFact, SourceKind};
use rollcache_testbed::history::helm::{Hook, release_json, statefulset_doc};
use rollcache_testbed::history::{b64, gzip, helm as built, recorded};
use serde_json::Value;

fn secret(release: &Value) -> Secret {
    serde_json::from_value(built::secret(release)).expect("a Secret")
}

fn secret_with_payload(release: &Value, payload: &[u8]) -> Secret {
    serde_json::from_value(built::secret_with_payload(release, payload)).expect("a Secret")
}

fn configmap(release: &Value) -> ConfigMap {
    serde_json::from_value(built::configmap(release)).expect("a ConfigMap")
}

fn fact<'a>(d: &'a Decoded, kind: &str) -> &'a RevisionFact {
    d.facts
        .iter()
        .find(|f| f.workload.kind == kind)
        .unwrap_or_else(|| panic!("no {kind} fact in {:?}", d.facts))
}

fn images(f: &RevisionFact) -> Vec<(&str, bool)> {
    f.template
        .containers
        .iter()
        .map(|c| (c.image.as_str(), c.init))
        .collect()
}

/// Secrets written by Helm 4.1 itself (tests/fixtures/history-src/regenerate.sh).
#[test]
fn real_helm4_secrets_decode_into_one_fact_per_workload() {
    let secrets: Vec<Secret> = recorded("helm/release-secrets.yaml");
    assert_eq!(secrets.len(), 3);
    let mut by_version = Vec::new();
    for s in &secrets {
        let d = helm::decode_secret(s);
        assert!(d.problems.is_empty(), "{:?}", d.problems);
        // StatefulSet from the manifest, Job from the hooks; Service and ConfigMap ignored.
        assert_eq!(d.facts.len(), 2, "{:?}", d.facts);
        let sts = fact(&d, "StatefulSet");
        assert_eq!(sts.source, SourceKind::HelmRelease);
        assert_eq!(sts.object.kind, "Secret");
        assert_eq!(sts.object.name, s.metadata.name.clone().unwrap());
        assert_eq!(sts.workload.namespace, "bl45p");
        assert_eq!(sts.workload.name, "bl45p-mo-ioc-01");
        assert_eq!(sts.helm_release.as_deref(), Some("bl45p-mo-ioc-01"));
        let label = |k: &str| s.metadata.labels.as_ref().unwrap()[k].clone();
        assert_eq!(sts.revision, Some(label("version").parse().unwrap()));
        assert_eq!(sts.status.as_deref(), Some(label("status").as_str()));
        assert_eq!(sts.current, label("status") == "deployed");
        // last_deployed is a few seconds after the Secret's creation at most.
        let created = s
            .metadata
            .creation_timestamp
            .as_ref()
            .unwrap()
            .0
            .as_second();
        assert!((sts.created.unwrap() - created).abs() < 60);
        // Init container first.
        assert_eq!(sts.template.containers[0].name, "load-config");
        assert!(sts.template.containers[0].init);
        assert_eq!(sts.template.containers[1].name, "ioc");
        assert_eq!(sts.template.image_pull_secrets, vec!["ghcr-pull"]);
        assert_eq!(
            sts.template.service_account.as_deref(),
            Some("bl45p-mo-ioc-01")
        );
        let terms = &sts.template.scheduling.required_terms;
        assert_eq!(terms[0].match_expressions[0].key, "beamline");
        assert_eq!(terms[0].match_expressions[0].values, vec!["bl45p"]);
        assert_eq!(
            sts.template.scheduling.tolerations[0].effect.as_deref(),
            Some("NoSchedule")
        );
        let job = fact(&d, "Job");
        assert_eq!(job.workload.name, "bl45p-mo-ioc-01-autosave-backup");
        assert_eq!(
            images(job),
            vec![("ghcr.io/epics-containers/autosave-backup:0.4.0", false)]
        );
        by_version.push((
            sts.revision.unwrap(),
            sts.template.containers[1].image.clone(),
            sts.current,
        ));
    }
    by_version.sort();
    assert_eq!(
        by_version,
        vec![
            (
                1,
                "ghcr.io/epics-containers/ioc-adaravis-runtime:2024.11.1".into(),
                false
            ),
            (
                2,
                "ghcr.io/epics-containers/ioc-adaravis-runtime:2024.12.2".into(),
                false
            ),
            (
                3,
                "ghcr.io/epics-containers/ioc-adaravis-runtime:2025.1.1".into(),
                true
            ),
        ]
    );
}

#[test]
fn real_helm4_configmaps_decode_like_secrets() {
    let cms: Vec<ConfigMap> = recorded("helm/release-configmaps.yaml");
    assert_eq!(cms.len(), 2);
    for cm in &cms {
        let d = helm::decode_configmap(cm);
        assert!(d.problems.is_empty(), "{:?}", d.problems);
        let sts = fact(&d, "StatefulSet");
        assert_eq!(sts.object.kind, "ConfigMap");
        assert_eq!(sts.helm_release.as_deref(), Some("bl45p-ea-ioc-02"));
        assert!(
            sts.template.containers[1]
                .image
                .starts_with("ghcr.io/epics-containers/ioc-pvagw-runtime:1.")
        );
    }
}

fn simple_release(manifest: &str, hooks: &[Hook<'_>]) -> Value {
    release_json(
        "ioc",
        "beamline",
        7,
        "superseded",
        "2025-01-10T09:05:00.5+01:00",
        manifest,
        hooks,
    )
}

#[test]
fn generated_release_round_trips_through_secret_and_configmap() {
    let manifest = format!("---\n{}", statefulset_doc("ioc", "reg.example/ioc:7"));
    let hook_manifest = "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: ioc-migrate\n  namespace: beamline\nspec:\n  template:\n    spec:\n      containers:\n        - name: m\n          image: reg.example/migrate:1\n";
    let hooks = [Hook {
        name: "ioc-migrate",
        kind: "Job",
        path: "c/templates/hook.yaml",
        manifest: hook_manifest,
        events: &["pre-upgrade"],
    }];
    let release = simple_release(&manifest, &hooks);
    for d in [
        helm::decode_secret(&secret(&release)),
        helm::decode_configmap(&configmap(&release)),
    ] {
        assert!(d.problems.is_empty(), "{:?}", d.problems);
        let sts = fact(&d, "StatefulSet");
        assert_eq!(sts.revision, Some(7));
        assert!(!sts.current);
        // 09:05:00.5 at +01:00.
        assert_eq!(sts.created, Some(1_736_496_300));
        assert_eq!(sts.workload.namespace, "beamline");
        let job = fact(&d, "Job");
        // The release's own namespace, written out in the document, is accepted.
        assert_eq!(job.workload.namespace, "beamline");
        assert_eq!(images(job), vec![("reg.example/migrate:1", false)]);
    }
}

#[test]
fn plain_json_without_gzip_is_accepted() {
    let release = simple_release(&statefulset_doc("ioc", "reg.example/ioc:7"), &[]);
    let payload = b64(release.to_string().as_bytes());
    let d = helm::decode_secret(&secret_with_payload(&release, payload.as_bytes()));
    assert!(d.problems.is_empty(), "{:?}", d.problems);
    assert_eq!(d.facts.len(), 1);
}

#[test]
fn secrets_of_other_types_and_unlabelled_configmaps_are_not_releases() {
    let release = simple_release(&statefulset_doc("ioc", "reg.example/ioc:7"), &[]);
    let mut s = secret(&release);
    s.type_ = Some("Opaque".into());
    let d = helm::decode_secret(&s);
    assert!(d.facts.is_empty() && d.problems.is_empty());
    let mut cm = configmap(&release);
    cm.metadata.labels = None;
    let d = helm::decode_configmap(&cm);
    assert!(d.facts.is_empty() && d.problems.is_empty());
}

fn only_problem(d: &Decoded) -> ProblemKind {
    assert!(d.facts.is_empty(), "{:?}", d.facts);
    assert_eq!(d.problems.len(), 1, "{:?}", d.problems);
    assert_eq!(d.problems[0].object.kind, "Secret");
    assert_eq!(d.problems[0].object.name, "sh.helm.release.v1.ioc.v7");
    d.problems[0].kind
}

#[test]
fn broken_payloads_are_one_named_problem_each() {
    let release = simple_release(&statefulset_doc("ioc", "reg.example/ioc:7"), &[]);
    let cases: Vec<(&str, Vec<u8>, ProblemKind)> = vec![
        (
            "bad base64",
            b"H4sI not base64 !!".to_vec(),
            ProblemKind::Base64,
        ),
        (
            "bad gzip",
            b64(&[0x1f, 0x8b, 0x08, 0, 1, 2, 3, 4, 5, 6, 7, 8]).into_bytes(),
            ProblemKind::Gzip,
        ),
        (
            "truncated gzip",
            {
                let gz = gzip(release.to_string().as_bytes());
                b64(&gz[..gz.len() / 2]).into_bytes()
            },
            ProblemKind::Gzip,
        ),
        (
            "bad json",
            b64(&gzip(b"{\"name\": \"ioc\", \"version\": ")).into_bytes(),
            ProblemKind::Json,
        ),
        (
            "json of the wrong shape",
            b64(&gzip(b"{\"version\": \"seven\"}")).into_bytes(),
            ProblemKind::Json,
        ),
    ];
    for (what, payload, want) in cases {
        let d = helm::decode_secret(&secret_with_payload(&release, &payload));
        assert_eq!(only_problem(&d), want, "{what}: {:?}", d.problems);
    }
    let mut s = secret(&release);
    s.data = None;
    assert_eq!(
        only_problem(&helm::decode_secret(&s)),
        ProblemKind::MissingField
    );
}

/// 1 GiB of zeros as 1024 concatenated gzip members (Go's reader, like Helm's, reads them all).
#[test]
fn gzip_bomb_is_rejected_fast_as_too_large() {
    let mut member = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    member.write_all(&vec![0u8; 1 << 20]).unwrap();
    let member = member.finish().unwrap();
    let bomb: Vec<u8> = member
        .iter()
        .copied()
        .cycle()
        .take(member.len() * 1024)
        .collect();
    assert!(
        bomb.len() < 2 << 20,
        "the bomb itself stays small: {}",
        bomb.len()
    );
    let release = simple_release("", &[]);
    let start = Instant::now();
    let d = helm::decode_secret(&secret_with_payload(&release, b64(&bomb).as_bytes()));
    let took = start.elapsed();
    assert_eq!(only_problem(&d), ProblemKind::TooLarge);
    let limit = if cfg!(debug_assertions) { 20 } else { 2 };
    assert!(took < Duration::from_secs(limit), "took {took:?}");
}

#[test]
fn a_bad_document_is_one_problem_and_the_others_still_decode() {
    let manifest = format!(
        "---\n# Source: c/templates/svc.yaml\napiVersion: v1\nkind: Service\nmetadata:\n  name: s\n\
         ---\n{}---\n# Source: c/templates/broken.yaml\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: [unclosed\n\
         ---\n\n# only a comment\n---\n{}---\n- just\n- a list\n---\n42\n",
        statefulset_doc("a", "reg.example/a:1"),
        statefulset_doc("b", "reg.example/b:1"),
    );
    let d = helm::decode_secret(&secret(&simple_release(&manifest, &[])));
    let names: Vec<_> = d.facts.iter().map(|f| f.workload.name.as_str()).collect();
    assert_eq!(names, vec!["a", "b"]);
    assert_eq!(d.problems.len(), 1, "{:?}", d.problems);
    let p = &d.problems[0];
    assert_eq!(p.kind, ProblemKind::Yaml);
    assert_eq!(p.object.name, "sh.helm.release.v1.ioc.v7");
    // The third non-empty document, from its template.
    assert!(p.message.contains("document 3"), "{}", p.message);
    assert!(
        p.message.contains("c/templates/broken.yaml"),
        "{}",
        p.message
    );
}

#[test]
fn missing_fields_are_reported_and_the_rest_kept() {
    let manifest = "---\n# Source: c/templates/d.yaml\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  template:\n    spec:\n      containers:\n        - name: no-image\n        - name: ok\n          image: reg.example/ok:1\n\
        ---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  labels: {a: b}\nspec: {}\n\
        ---\napiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: nightly\nspec:\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          containers:\n            - {name: c, image: reg.example/cron:2}\n\
        ---\napiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: no-template\nspec: {}\n";
    let d = helm::decode_secret(&secret(&simple_release(manifest, &[])));
    let d_fact = fact(&d, "Deployment");
    assert_eq!(images(d_fact), vec![("reg.example/ok:1", false)]);
    assert_eq!(
        images(fact(&d, "CronJob")),
        vec![("reg.example/cron:2", false)]
    );
    assert!(!d.facts.iter().any(|f| f.workload.kind == "DaemonSet"));
    let kinds: Vec<_> = d.problems.iter().map(|p| p.kind).collect();
    assert_eq!(kinds.len(), 3, "{:?}", d.problems);
    assert!(
        d.problems
            .iter()
            .any(|p| p.kind == ProblemKind::MissingField && p.message.contains("no-image"))
    );
    assert!(
        d.problems
            .iter()
            .any(|p| p.message.contains("without metadata.name"))
    );
    assert!(
        d.problems
            .iter()
            .any(|p| p.message.contains("DaemonSet/beamline/no-template"))
    );
}

#[test]
fn unknown_kinds_are_ignored_silently() {
    let manifest = "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  x: y\n---\n\
        apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: x\nspec: {broken: [\n---\n\
        apiVersion: example.org/v1\nkind: Widget\nmetadata:\n  name: w\nspec:\n  template:\n    spec:\n      containers: [{name: x, image: y}]\n";
    let d = helm::decode_secret(&secret(&simple_release(manifest, &[])));
    assert!(d.facts.is_empty(), "{:?}", d.facts);
    assert!(d.problems.is_empty(), "{:?}", d.problems);
}

#[test]
fn alias_bomb_in_a_manifest_is_refused_quickly() {
    let mut doc = String::from(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: bomb\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n",
    );
    for i in 1..12 {
        let prev = format!("*a{}", i - 1);
        doc += &format!("a{i}: &a{i} [{}]\n", vec![prev; 10].join(", "));
    }
    let manifest = format!(
        "---\n{doc}---\n{}",
        statefulset_doc("ok", "reg.example/ok:1")
    );
    let start = Instant::now();
    let d = helm::decode_secret(&secret(&simple_release(&manifest, &[])));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    // A bomb makes the whole release untrusted: nothing of it is kept, one problem says why.
    assert!(d.facts.is_empty(), "{:?}", d.facts);
    assert_eq!(d.problems.len(), 1, "{:?}", d.problems);
    assert_eq!(d.problems[0].kind, ProblemKind::OverBudget);
    assert!(
        d.problems[0].message.contains("document 1"),
        "{:?}",
        d.problems
    );
}

#[test]
fn a_manifest_of_several_megabytes_decodes_fast() {
    let mut manifest = String::new();
    let filler = "x".repeat(2000);
    for i in 0..1500 {
        manifest += &format!(
            "---\n{}",
            statefulset_doc(&format!("ioc-{i}"), &format!("reg.example/ioc:{i}"))
        );
        manifest += &format!(
            "---\n# Source: c/templates/cm.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\ndata:\n  big: |\n    {filler}\n"
        );
    }
    assert!(manifest.len() > 3 << 20, "{}", manifest.len());
    let release = simple_release(&manifest, &[]);
    let s = secret(&release);
    let start = Instant::now();
    let d = helm::decode_secret(&s);
    let took = start.elapsed();
    assert!(d.problems.is_empty(), "{:?}", &d.problems[..1]);
    assert_eq!(d.facts.len(), 1500);
    assert_eq!(
        d.facts[1499].template.containers[1].image,
        "reg.example/ioc:1499"
    );
    let limit = if cfg!(debug_assertions) {
        20_000
    } else {
        1_000
    };
    assert!(took < Duration::from_millis(limit), "took {took:?}");
}

/// Rule 10: a release stored in namespace N describes workloads of N only. An object naming
/// another namespace is ignored and reported against the release; the rest is read.
#[test]
fn a_release_describes_only_its_own_namespace() {
    let foreign = "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: elsewhere\n  namespace: kube-system\nspec:\n  template:\n    spec:\n      containers: [{name: c, image: reg.example/evil:1}]\n";
    let own = "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: here\n  namespace: beamline\nspec:\n  template:\n    spec:\n      containers: [{name: c, image: reg.example/here:1}]\n";
    let hook = Hook {
        name: "sneaky",
        kind: "Job",
        path: "c/templates/hook.yaml",
        manifest: "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: sneaky\n  namespace: other\nspec:\n  template:\n    spec:\n      containers: [{name: m, image: reg.example/sneaky:1}]\n",
        events: &["pre-upgrade"],
    };
    let manifest = format!(
        "{foreign}{own}---\n{}",
        statefulset_doc("ioc", "reg.example/ioc:7")
    );
    let release = simple_release(&manifest, &[hook]);
    for d in [
        helm::decode_secret(&secret(&release)),
        helm::decode_configmap(&configmap(&release)),
    ] {
        let names: Vec<_> = d.facts.iter().map(|f| f.workload.to_string()).collect();
        assert_eq!(
            names,
            vec!["Deployment/beamline/here", "StatefulSet/beamline/ioc"],
            "{:?}",
            d.problems
        );
        let kinds: Vec<_> = d.problems.iter().map(|p| p.kind).collect();
        assert_eq!(
            kinds,
            vec![ProblemKind::ForeignNamespace; 2],
            "{:?}",
            d.problems
        );
        assert!(d.problems[0].message.contains("kube-system/elsewhere"));
        assert!(d.problems[1].message.contains("hook sneaky"));
        assert!(
            d.problems.iter().all(|p| p.object.namespace == "beamline"
                && p.object.name == "sh.helm.release.v1.ioc.v7")
        );
    }
}

/// Rule 10: the namespace written in the release JSON does not move its workloads out of the
/// namespace the release is stored in.
#[test]
fn the_release_json_namespace_does_not_move_workloads() {
    let mut release = simple_release(&statefulset_doc("ioc", "reg.example/ioc:7"), &[]);
    let stored = secret(&release);
    release["namespace"] = "kube-system".into();
    let mut s = secret(&release);
    s.metadata.namespace = stored.metadata.namespace.clone();
    let d = helm::decode_secret(&s);
    assert_eq!(d.facts.len(), 1);
    assert_eq!(d.facts[0].workload.namespace, "beamline");
    assert_eq!(d.problems.len(), 1, "{:?}", d.problems);
    assert_eq!(d.problems[0].kind, ProblemKind::ForeignNamespace);
}

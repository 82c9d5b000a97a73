//! The directory source: a real `kubectl get -o yaml` export, broken files among good ones, the
//! layouts ConfigMap mounts use, and the debounced watch.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rollcache::history::ProblemKind;
use rollcache::history::dir_source;
use rollcache::history::files::{self, DirSnapshot, MAX_FILE_BYTES};
use rollcache::history::store::{HistoryStore, SourceId};
use rollcache::model::SourceKind;
use rollcache_testbed::history::helm;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/history");

fn by_source(snap: &DirSnapshot) -> BTreeMap<SourceKind, usize> {
    let mut counts = BTreeMap::new();
    for f in snap.facts() {
        *counts.entry(f.source).or_default() += 1;
    }
    counts
}

#[test]
fn exported_history_directory_loads_completely() {
    let snap = files::load_dir(Path::new(FIXTURES));
    let problems: Vec<_> = snap.all_problems().collect();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        by_source(&snap),
        BTreeMap::from([
            // 3 Secret + 2 ConfigMap releases, each a StatefulSet and a hook Job.
            (SourceKind::HelmRelease, 10),
            (SourceKind::ReplicaSet, 4),
            (SourceKind::ControllerRevision, 5),
            (SourceKind::Pod, 2),
            // StatefulSet, Deployment, DaemonSet as they are now.
            (SourceKind::File, 3),
        ])
    );
    let mut node_names: Vec<_> = snap.nodes.iter().map(|n| n.name.as_str()).collect();
    node_names.sort();
    assert_eq!(node_names, vec!["bl45p-ws001", "k8s-worker-01"]);
    let sts = snap
        .facts()
        .find(|f| f.source == SourceKind::File && f.workload.kind == "StatefulSet")
        .unwrap();
    assert!(sts.current);
    assert_eq!(sts.workload.name, "bl45p-mo-ioc-01");
    assert!(sts.template.containers[1].image.ends_with(":2025.1.1"));
    let deploy = snap
        .facts()
        .find(|f| f.source == SourceKind::File && f.workload.kind == "Deployment")
        .unwrap();
    assert!(deploy.template.containers[0].image.contains("@sha256:"));
    // Services and ordinary ConfigMaps in the export are not history.
    assert!(!snap.objects.iter().any(|(o, _)| o.kind == "Service"));
    assert!(
        snap.objects
            .iter()
            .all(|(o, _)| o.kind != "ConfigMap" || o.name.starts_with("sh.helm.release.v1."))
    );
}

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  annotations:
    deployment.kubernetes.io/revision: \"5\"
spec:
  template:
    spec:
      containers:
        - name: web
          image: reg.example/web:5
          imagePullPolicy: Always
";

#[test]
fn one_bad_file_or_document_never_stops_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "good/deploy.yaml", DEPLOYMENT);
    write(d, "bad.yaml", "kind: [unclosed\n");
    write(d, "bad.json", "{\"kind\": ");
    write(
        d,
        "mixed.yml",
        &format!(
            "---\n{}---\nkind: Deployment\nmetadata: {{name: [\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: s\n---\n{}",
            DEPLOYMENT.replace("name: web", "name: first"),
            DEPLOYMENT.replace("name: web", "name: last"),
        ),
    );
    // A ReplicaSet whose fields have the wrong types.
    write(
        d,
        "typed.yaml",
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: rs\nspec:\n  replicas: lots\n",
    );
    std::fs::write(d.join("binary.yaml"), [0xff, 0xfe, 0x00, 0x41]).unwrap();
    write(d, "notes.txt", "kind: [this is not read");
    let big = std::fs::File::create(d.join("huge.yaml")).unwrap();
    big.set_len(MAX_FILE_BYTES + 1).unwrap();

    let snap = files::load_dir(d);
    let mut names: Vec<_> = snap.facts().map(|f| f.workload.name.as_str()).collect();
    names.sort();
    assert_eq!(names, vec!["first", "last", "web"]);
    let web = snap.facts().find(|f| f.workload.name == "web").unwrap();
    assert_eq!(web.source, SourceKind::File);
    assert_eq!(web.revision, Some(5));
    assert_eq!(web.workload.namespace, "default");
    assert_eq!(
        web.template.containers[0].pull_policy.as_deref(),
        Some("Always")
    );

    let mut problems: Vec<(String, ProblemKind)> = snap
        .problems
        .iter()
        .map(|p| {
            let file = p.object.name.rsplit('/').next().unwrap().to_owned();
            (file, p.kind)
        })
        .collect();
    problems.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        problems,
        vec![
            ("bad.json".into(), ProblemKind::Json),
            ("bad.yaml: document 1".into(), ProblemKind::Yaml),
            ("binary.yaml".into(), ProblemKind::Yaml),
            ("huge.yaml".into(), ProblemKind::TooLarge),
            ("mixed.yml: document 2".into(), ProblemKind::Yaml),
            ("typed.yaml: document 1".into(), ProblemKind::Json),
        ]
    );
    assert!(snap.problems.iter().all(|p| p.object.kind == "File"));
}

#[test]
fn lists_typed_lists_and_helm_secrets_as_kubectl_prints_them() {
    let dir = tempfile::tempdir().unwrap();
    let release = helm::release_json(
        "ioc",
        "bl01",
        2,
        "deployed",
        "2025-01-10T09:05:00Z",
        &format!("---\n{}", helm::statefulset_doc("ioc", "reg.example/ioc:2")),
        &[],
    );
    write(dir.path(), "release.yaml", &helm::secret_yaml(&release));
    // The API's typed list leaves kind and apiVersion off its items.
    write(
        dir.path(),
        "rs.json",
        r#"{"apiVersion": "apps/v1", "kind": "ReplicaSetList", "metadata": {}, "items": [
            {"metadata": {"name": "web-1", "namespace": "ns",
                          "annotations": {"deployment.kubernetes.io/revision": "1"},
                          "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "u", "controller": true}]},
             "spec": {"replicas": 0, "selector": {}, "template": {"spec": {"containers": [{"name": "w", "image": "web:1"}]}}}}]}"#,
    );
    write(
        dir.path(),
        "opaque.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\ntype: Opaque\ndata:\n  password: c2VjcmV0\n",
    );
    let snap = files::load_dir(dir.path());
    let problems: Vec<_> = snap.all_problems().collect();
    assert!(problems.is_empty(), "{problems:?}");
    let helm = snap
        .facts()
        .find(|f| f.source == SourceKind::HelmRelease)
        .unwrap();
    assert_eq!(helm.workload.namespace, "bl01");
    assert_eq!(helm.revision, Some(2));
    assert!(helm.current);
    let rs = snap
        .facts()
        .find(|f| f.source == SourceKind::ReplicaSet)
        .unwrap();
    assert_eq!(rs.workload.name, "web");
    assert_eq!(rs.revision, Some(1));
    // Ordinary Secrets are not read into anything.
    assert_eq!(snap.objects.len(), 2);
}

#[cfg(unix)]
#[test]
fn configmap_mount_layout_is_read_once_and_symlink_loops_end() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "..2025_01_10_09_00_00.123/web.yaml", DEPLOYMENT);
    symlink("..2025_01_10_09_00_00.123", d.join("..data")).unwrap();
    symlink("..data/web.yaml", d.join("web.yaml")).unwrap();
    std::fs::create_dir(d.join("sub")).unwrap();
    symlink("..", d.join("sub/loop")).unwrap();
    let snap = files::load_dir(d);
    assert_eq!(snap.facts().count(), 1);
    assert!(snap.problems.is_empty(), "{:?}", snap.problems);
}

#[test]
fn a_missing_directory_is_a_problem_not_a_panic() {
    let snap = files::load_dir(Path::new("/nonexistent/rollcache-history"));
    assert_eq!(snap.problems.len(), 1);
    assert!(snap.objects.is_empty());
}

async fn next(rx: &mut tokio::sync::mpsc::Receiver<()>, wait: Duration) -> bool {
    tokio::time::timeout(wait, rx.recv())
        .await
        .is_ok_and(|v| v.is_some())
}

#[cfg(unix)]
#[tokio::test]
async fn watch_reports_bursts_once_symlink_swaps_and_not_its_own_reads() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    write(&d, "..v1/web.yaml", DEPLOYMENT);
    symlink("..v1", d.join("..data")).unwrap();
    symlink("..data/web.yaml", d.join("web.yaml")).unwrap();
    let (mut rx, guard) = dir_source::watch(&d).unwrap();

    // A burst of writes is one notice.
    for i in 0..10 {
        write(
            &d,
            &format!("extra-{i}.yaml"),
            &DEPLOYMENT.replace("name: web", &format!("name: extra-{i}")),
        );
    }
    assert!(next(&mut rx, Duration::from_secs(3)).await);
    assert!(
        !next(&mut rx, Duration::from_millis(600)).await,
        "burst reported twice"
    );

    // Reading the directory is not a change.
    let _ = files::load_dir(&d);
    assert!(
        !next(&mut rx, Duration::from_millis(600)).await,
        "own reads reported"
    );

    // The kubelet's atomic update: new timestamped dir, then `..data` renamed over.
    write(&d, "..v2/web.yaml", &DEPLOYMENT.replace("web:5", "web:6"));
    symlink("..v2", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    assert!(next(&mut rx, Duration::from_secs(3)).await);
    let snap = files::load_dir(&d);
    let web = snap.facts().find(|f| f.workload.name == "web").unwrap();
    assert_eq!(web.template.containers[0].image, "reg.example/web:6");

    // Dropping the guard ends the stream.
    drop(guard);
    assert!(
        tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .unwrap()
            .is_none()
    );
}

/// Facts of the directory source by workload name, and the objects with unresolved problems.
fn held(store: &HistoryStore) -> (Vec<String>, Vec<(String, bool)>) {
    let snap = store.snapshot();
    let mut names: Vec<String> = snap.facts().map(|f| f.workload.name.clone()).collect();
    names.sort();
    let unresolved = snap
        .unresolved()
        .map(|u| (u.object.name.clone(), u.ever_good))
        .collect();
    (names, unresolved)
}

const REPLICASET: &str = "apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: api-7d9
  namespace: ns
  ownerReferences: [{apiVersion: apps/v1, kind: Deployment, name: api, uid: u, controller: true}]
  annotations: {deployment.kubernetes.io/revision: \"3\"}
spec:
  replicas: 0
  template:
    spec:
      containers: [{name: api, image: reg.example/api:3}]
";

/// A file that cannot be read or parsed now (half-written, truncated, not UTF-8) counts as
/// unchanged: its objects keep their last good facts, with the problem, until the file is good
/// again; a deleted file's objects go (the control).
#[test]
fn an_unreadable_file_keeps_its_objects_until_it_is_good_again_or_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "deploy.yaml", DEPLOYMENT);
    write(d, "rs.yaml", REPLICASET);
    let store = HistoryStore::new();
    let id = SourceId::new(SourceKind::File, "files", None);
    let mut state = dir_source::DirState::default();
    state.load_into(d, &id, &store);
    assert_eq!(held(&store), (vec!["api".into(), "web".into()], vec![]));

    let cut = &REPLICASET[..REPLICASET.find("  template").unwrap() - 3];
    let broken: [(&str, &[u8]); 3] = [
        ("truncated mid-document", cut.as_bytes()),
        ("invalid YAML", b"kind: [unclosed\n"),
        ("not UTF-8", b"\xff\xfe\x00kind"),
    ];
    for (what, bytes) in broken {
        std::fs::write(d.join("rs.yaml"), bytes).unwrap();
        state.load_into(d, &id, &store);
        let (names, unresolved) = held(&store);
        assert_eq!(names, ["api", "web"], "{what}: last good facts kept");
        assert_eq!(unresolved, [("api-7d9".to_string(), true)], "{what}");
        assert!(store.snapshot().complete(), "{what}");
        // A cut that still parses is the object's own problem (no pod template); the others
        // are the file's, named in the object's problem.
        let st = store.status(&id).unwrap();
        let message = &st.unresolved[0].problems[0].message;
        assert!(
            message.contains("rs.yaml") || message.contains("no spec.template.spec"),
            "{what}: {message}"
        );
    }
    // Good again, with a new revision: the new facts alone.
    write(d, "rs.yaml", &REPLICASET.replace("api:3", "api:4"));
    state.load_into(d, &id, &store);
    assert_eq!(held(&store), (vec!["api".into(), "web".into()], vec![]));
    let api = store
        .snapshot()
        .facts()
        .find(|f| f.workload.name == "api")
        .map(|f| f.template.containers[0].image.clone());
    assert_eq!(api.as_deref(), Some("reg.example/api:4"));
    // Broken, then deleted: the deletion is history, its objects go.
    write(d, "rs.yaml", "kind: [unclosed\n");
    state.load_into(d, &id, &store);
    assert_eq!(held(&store).0, ["api", "web"]);
    std::fs::remove_file(d.join("rs.yaml")).unwrap();
    state.load_into(d, &id, &store);
    assert_eq!(held(&store), (vec!["web".into()], vec![]));
}

/// A document of a multi-document file that breaks keeps its object; the file's other documents
/// are read as they are now.
#[test]
fn a_broken_document_keeps_its_object_and_the_others_update() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let two = |web: &str, rs: &str| format!("---\n{web}---\n{rs}");
    write(d, "all.yaml", &two(DEPLOYMENT, REPLICASET));
    let store = HistoryStore::new();
    let id = SourceId::new(SourceKind::File, "files", None);
    let mut state = dir_source::DirState::default();
    state.load_into(d, &id, &store);
    write(
        d,
        "all.yaml",
        &two(
            &DEPLOYMENT.replace("web:5", "web:6"),
            "kind: ReplicaSet\nmetadata: {name: [\n",
        ),
    );
    state.load_into(d, &id, &store);
    let snap = store.snapshot();
    let mut images: Vec<&str> = snap
        .facts()
        .map(|f| f.template.containers[0].image.as_str())
        .collect();
    images.sort();
    assert_eq!(images, ["reg.example/api:3", "reg.example/web:6"]);
    assert_eq!(held(&store).1, [("api-7d9".to_string(), true)]);
}

/// A file that was never good holds something unknown: the view is incomplete (nothing may be
/// unpinned) until it is good or gone.
#[test]
fn a_file_that_never_decoded_makes_the_view_incomplete() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "deploy.yaml", DEPLOYMENT);
    write(d, "new.json", "{\"kind\": ");
    let store = HistoryStore::new();
    let id = SourceId::new(SourceKind::File, "files", None);
    let mut state = dir_source::DirState::default();
    state.load_into(d, &id, &store);
    let (names, unresolved) = held(&store);
    assert_eq!(names, ["web"]);
    assert_eq!(unresolved.len(), 1);
    assert!(unresolved[0].0.ends_with("new.json") && !unresolved[0].1);
    assert!(!store.snapshot().complete());
    assert!(store.snapshot().all_sources_fresh());
    std::fs::remove_file(d.join("new.json")).unwrap();
    state.load_into(d, &id, &store);
    assert!(store.snapshot().complete());
    assert_eq!(held(&store), (vec!["web".into()], vec![]));
}

//! The file source: a directory of `.yaml`/`.yml`/`.json` files holding objects as `kubectl get
//! -o yaml|json` prints them, decoded with the same decoders as the cluster sources; plus a
//! debounced watch of that directory.
//!
//! Across reloads (`DirState`) a file that cannot be read or parsed now (half-written, truncated,
//! over the size cap) counts as unchanged: the objects it held stay, with the problem.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::mpsc;

use super::store::{HistoryStore, SourceId, StatusKey};
use super::{
    DecodeProblem, Decoded, ProblemKind, controller_revisions, helm, manifest, nodes, pods,
    replicasets, template,
};
use crate::model::{NodeFacts, ObjectRef, RevisionFact, SourceKind, WorkloadId};

/// Largest file read; bigger ones are reported and skipped.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// Directory depth followed below the root (symlinked directories can loop).
const MAX_DEPTH: usize = 32;
/// Quiet time after the last change before a watch reports it.
pub const DEBOUNCE: Duration = Duration::from_millis(200);
/// A watch reports at the latest this long after the first of a burst of changes.
const MAX_DELAY: Duration = Duration::from_secs(2);

/// Everything a directory holds, decoded.
#[derive(Debug, Default)]
pub struct DirSnapshot {
    /// Each history object with what it decoded into (facts and per-object problems).
    pub objects: Vec<(ObjectRef, Decoded)>,
    pub nodes: Vec<NodeFacts>,
    /// Files and documents that could not be read at all.
    pub problems: Vec<DecodeProblem>,
    /// Each file read, with what came from it.
    pub files: Vec<FileLoad>,
    /// Directories below the root that could not be listed.
    pub unreadable_dirs: Vec<PathBuf>,
}

/// One file of a `DirSnapshot`: its objects and file or document problems, as index ranges.
#[derive(Debug, Clone)]
pub struct FileLoad {
    pub path: PathBuf,
    pub objects: Range<usize>,
    pub problems: Range<usize>,
}

impl DirSnapshot {
    /// All facts of all objects.
    pub fn facts(&self) -> impl Iterator<Item = &RevisionFact> {
        self.objects.iter().flat_map(|(_, d)| d.facts.iter())
    }

    /// File problems and per-object problems together.
    pub fn all_problems(&self) -> impl Iterator<Item = &DecodeProblem> {
        self.problems
            .iter()
            .chain(self.objects.iter().flat_map(|(_, d)| d.problems.iter()))
    }
}

/// Errors of the directory watch (loading never fails as a whole: it reports problems).
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("cannot watch directory {path}: {source}; check that it exists and is readable")]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
}

/// Reads every `.yaml`, `.yml` and `.json` file below `dir` (following symlinks, skipping
/// dot-entries such as a ConfigMap mount's `..data`), in name order.
pub fn load_dir(dir: &Path) -> DirSnapshot {
    let mut snap = DirSnapshot::default();
    let mut files = Vec::new();
    let mut seen = HashSet::new();
    let mut unreadable = Vec::new();
    collect(
        dir,
        0,
        &mut seen,
        &mut files,
        &mut snap.problems,
        &mut unreadable,
    );
    snap.unreadable_dirs = unreadable;
    for path in files {
        let (objects, problems) = (snap.objects.len(), snap.problems.len());
        load_file(&path, &mut snap);
        snap.files.push(FileLoad {
            path,
            objects: objects..snap.objects.len(),
            problems: problems..snap.problems.len(),
        });
    }
    snap
}

/// The directory source across reloads: which objects each file yielded when last read.
#[derive(Debug, Default)]
pub struct DirState {
    by_file: HashMap<PathBuf, Vec<ObjectRef>>,
}

impl DirState {
    /// Replaces the source `id`'s objects in `store` with what `dir` holds now (files that cannot
    /// be read keep what they held), logging every problem; returns the Node objects read.
    pub fn load_into(&mut self, dir: &Path, id: &SourceId, store: &HistoryStore) -> Vec<NodeFacts> {
        let mut snap = load_dir(dir);
        // Problems of files that keep objects are counted with those objects by the store.
        for p in self.carry_over(&mut snap) {
            tracing::warn!(object = %p.object, kind = %p.kind, "cannot be read: {}", p.message);
        }
        for p in &snap.problems {
            tracing::warn!(object = %p.object, kind = %p.kind, "skipped: {}", p.message);
            store.count_problem(&StatusKey::Source(id.clone()), p.kind);
        }
        store.reset_begin(id);
        let objects = snap.objects.len();
        for (object, decoded) in snap.objects {
            for p in &decoded.problems {
                tracing::warn!(object = %p.object, kind = %p.kind, "skipped: {}", p.message);
            }
            store.reset_apply(id, object, decoded);
        }
        store.reset_done(id);
        tracing::info!(dir = %dir.display(), objects, "directory source loaded");
        snap.nodes
    }

    /// Completes a fresh `snap` with what files that cannot be read or parsed now held before:
    /// each object such a file no longer yields is added back as undecodable (so that the store
    /// keeps its last good facts), and a failing file that yielded nothing before is added as an
    /// object of its own that never decoded (what it holds is unknown). Files under a directory
    /// that cannot be listed keep their objects the same way; deleted files lose theirs.
    /// Returns the file problems taken out of `snap.problems`: the added objects carry them.
    pub fn carry_over(&mut self, snap: &mut DirSnapshot) -> Vec<DecodeProblem> {
        let produced: HashSet<ObjectRef> = snap.objects.iter().map(|(o, _)| o.clone()).collect();
        let mut by_file: HashMap<PathBuf, Vec<ObjectRef>> = HashMap::new();
        let mut added: Vec<(ObjectRef, Decoded)> = Vec::new();
        let mut moved = vec![false; snap.problems.len()];
        for f in &snap.files {
            let mine: Vec<ObjectRef> = snap.objects[f.objects.clone()]
                .iter()
                .map(|(o, _)| o.clone())
                .collect();
            let file_problem = snap.problems[f.problems.clone()].first();
            let object_problem = snap.objects[f.objects.clone()]
                .iter()
                .find_map(|(_, d)| d.problems.first());
            let Some(why) = file_problem.or(object_problem) else {
                by_file.insert(f.path.clone(), mine);
                continue;
            };
            let missing: Vec<ObjectRef> = self
                .by_file
                .get(&f.path)
                .into_iter()
                .flatten()
                .filter(|o| !produced.contains(*o))
                .cloned()
                .collect();
            let reason = format!(
                "{} cannot be read or parsed now ({}: {}); its last good objects are kept",
                f.path.display(),
                why.kind,
                why.message
            );
            if let Some(p) = file_problem {
                if missing.is_empty() {
                    let object = file_ref(&f.path, None);
                    added.push((
                        object.clone(),
                        Decoded::skipped(object, p.kind, reason.clone()),
                    ));
                }
                moved[f.problems.clone()].fill(true);
            }
            for o in &missing {
                added.push((o.clone(), Decoded::skipped(o.clone(), why.kind, &reason)));
            }
            by_file.insert(f.path.clone(), mine.into_iter().chain(missing).collect());
        }
        for (path, objects) in &self.by_file {
            if by_file.contains_key(path)
                || !snap.unreadable_dirs.iter().any(|d| path.starts_with(d))
            {
                continue;
            }
            let reason = format!(
                "{}: its directory cannot be listed now; its last good objects are kept",
                path.display()
            );
            let kept: Vec<ObjectRef> = objects
                .iter()
                .filter(|o| !produced.contains(*o))
                .cloned()
                .collect();
            for o in &kept {
                added.push((
                    o.clone(),
                    Decoded::skipped(o.clone(), ProblemKind::InvalidField, &reason),
                ));
            }
            by_file.insert(path.clone(), kept);
        }
        let (carried, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut snap.problems)
            .into_iter()
            .zip(moved)
            .partition(|(_, moved)| *moved);
        snap.problems = rest.into_iter().map(|(p, _)| p).collect();
        snap.objects.extend(added);
        // The problem ranges no longer hold.
        snap.files.clear();
        self.by_file = by_file;
        carried.into_iter().map(|(p, _)| p).collect()
    }
}

fn file_ref(path: &Path, doc: Option<String>) -> ObjectRef {
    let name = match doc {
        Some(doc) => format!("{}: {doc}", path.display()),
        None => path.display().to_string(),
    };
    ObjectRef::new("File", String::new(), name)
}

fn file_problem(
    path: &Path,
    doc: Option<String>,
    kind: ProblemKind,
    message: String,
) -> DecodeProblem {
    DecodeProblem {
        object: file_ref(path, doc),
        kind,
        message,
    }
}

fn collect(
    dir: &Path,
    depth: usize,
    seen: &mut HashSet<PathBuf>,
    files: &mut Vec<PathBuf>,
    problems: &mut Vec<DecodeProblem>,
    unreadable_dirs: &mut Vec<PathBuf>,
) {
    let mut unreadable = |e: std::io::Error| {
        unreadable_dirs.push(dir.to_owned());
        file_problem(
            dir,
            None,
            ProblemKind::InvalidField,
            format!("cannot read directory: {e}"),
        )
    };
    match dir.canonicalize() {
        Ok(real) => {
            if !seen.insert(real) {
                return;
            }
        }
        Err(e) => return problems.push(unreadable(e)),
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => return problems.push(unreadable(e)),
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    paths.sort();
    for path in paths {
        // fs::metadata follows symlinks: ConfigMap mounts are symlinks into `..data`.
        let Ok(md) = std::fs::metadata(&path) else {
            continue;
        };
        if md.is_dir() {
            if depth < MAX_DEPTH {
                collect(&path, depth + 1, seen, files, problems, unreadable_dirs);
            }
        } else if md.is_file() && has_object_extension(&path) {
            files.push(path);
        }
    }
}

fn has_object_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "yaml" | "yml" | "json"))
}

/// Reads one file into `snap`. Problems with the file or its documents are added to
/// `snap.problems`; the other documents are still read.
pub fn load_file(path: &Path, snap: &mut DirSnapshot) {
    let text = match read_capped(path) {
        Ok(text) => text,
        Err(p) => return snap.problems.push(p),
    };
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if is_json {
        match serde_json::from_str::<Value>(&text) {
            Ok(value) => decode_value(value, &file_ref(path, None), snap),
            Err(e) => snap.problems.push(file_problem(
                path,
                None,
                ProblemKind::Json,
                format!("not valid JSON: {e}; the file is skipped"),
            )),
        }
        return;
    }
    load_yaml_str(path, &text, snap);
}

/// Decodes a YAML stream (one or more documents) read from `path`.
pub fn load_yaml_str(path: &Path, text: &str, snap: &mut DirSnapshot) {
    for doc in manifest::split(text) {
        let origin = file_ref(path, Some(doc.describe()));
        match manifest::parse(doc.text) {
            Ok(value) => decode_value(value, &origin, snap),
            Err(message) => snap.problems.push(DecodeProblem {
                object: origin,
                kind: ProblemKind::Yaml,
                message: format!("{message}; this document is skipped"),
            }),
        }
    }
}

fn read_capped(path: &Path) -> Result<String, DecodeProblem> {
    let io = |e: std::io::Error| {
        file_problem(
            path,
            None,
            ProblemKind::InvalidField,
            format!("cannot read file: {e}"),
        )
    };
    let too_large = || {
        file_problem(
            path,
            None,
            ProblemKind::TooLarge,
            format!("file is larger than {MAX_FILE_BYTES} bytes; it is skipped"),
        )
    };
    let file = std::fs::File::open(path).map_err(io)?;
    if file.metadata().map_err(io)?.len() > MAX_FILE_BYTES {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large());
    }
    String::from_utf8(bytes).map_err(|e| {
        file_problem(
            path,
            None,
            ProblemKind::Yaml,
            format!("file is not UTF-8 text: {e}"),
        )
    })
}

/// Decodes one object (or a `List`/`XxxList` of them) read from a file; `origin` names where it
/// came from for problems.
pub fn decode_value(value: Value, origin: &ObjectRef, snap: &mut DirSnapshot) {
    let Value::Object(mut map) = value else {
        // Scalars and sequences are not Kubernetes objects; nothing to read.
        return;
    };
    let kind = map
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let api_version = map
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if let Some(item_kind) = kind.strip_suffix("List")
        && let Some(Value::Array(items)) = map.remove("items")
    {
        for (i, mut item) in items.into_iter().enumerate() {
            // Typed lists (`ReplicaSetList`) leave kind and apiVersion off their items.
            if let Value::Object(m) = &mut item {
                if !item_kind.is_empty() && !m.contains_key("kind") {
                    m.insert("kind".into(), item_kind.into());
                }
                if !m.contains_key("apiVersion") {
                    m.insert("apiVersion".into(), api_version.clone().into());
                }
            }
            let item_origin = ObjectRef::new(
                origin.kind.as_str(),
                origin.namespace.as_str(),
                format!("{} item {}", origin.name, i + 1),
            );
            decode_value(item, &item_origin, snap);
        }
        return;
    }
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    // Objects written by hand may leave the namespace out; kubectl would apply them to
    // `default`.
    if kind != "Node"
        && let Some(Value::Object(meta)) = map.get_mut("metadata")
        && meta
            .get("namespace")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        meta.insert("namespace".into(), "default".into());
    }
    let value = Value::Object(map);
    match (group, kind.as_str()) {
        ("apps", "ReplicaSet") => typed(value, origin, snap, |rs: ReplicaSet| {
            let object = super::meta::object_ref("ReplicaSet", &rs.metadata);
            Some((object, replicasets::decode(&rs)))
        }),
        ("apps", "ControllerRevision") => typed(value, origin, snap, |cr: ControllerRevision| {
            let object = super::meta::object_ref("ControllerRevision", &cr.metadata);
            Some((object, controller_revisions::decode(&cr)))
        }),
        ("", "Secret") => typed(value, origin, snap, |s: Secret| {
            helm::is_release_secret(&s).then(|| {
                let object = super::meta::object_ref("Secret", &s.metadata);
                (object, helm::decode_secret(&s))
            })
        }),
        ("", "ConfigMap") => typed(value, origin, snap, |cm: ConfigMap| {
            helm::is_release_configmap(&cm).then(|| {
                let object = super::meta::object_ref("ConfigMap", &cm.metadata);
                (object, helm::decode_configmap(&cm))
            })
        }),
        ("", "Pod") => typed(value, origin, snap, |pod: Pod| {
            let object = super::meta::object_ref("Pod", &pod.metadata);
            Some((object, pods::decode(&pod)))
        }),
        ("", "Node") => match serde_json::from_value::<Node>(value) {
            Ok(node) => snap.nodes.push(nodes::decode(&node)),
            Err(e) => snap.problems.push(not_an_object(origin, "Node", &e)),
        },
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet") | ("batch", "Job" | "CronJob") => {
            let (object, decoded) = plain_workload(&kind, &value, origin);
            snap.objects.push((object, decoded));
        }
        _ => tracing::trace!(%origin, kind, api_version, "kind not read by the file source"),
    }
}

fn not_an_object(origin: &ObjectRef, kind: &str, e: &serde_json::Error) -> DecodeProblem {
    DecodeProblem {
        object: origin.clone(),
        kind: ProblemKind::Json,
        message: format!("not a valid {kind}: {e}; it is skipped"),
    }
}

fn typed<T: DeserializeOwned>(
    value: Value,
    origin: &ObjectRef,
    snap: &mut DirSnapshot,
    decode: impl FnOnce(T) -> Option<(ObjectRef, Decoded)>,
) {
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    match serde_json::from_value::<T>(value) {
        Ok(obj) => snap.objects.extend(decode(obj)),
        Err(e) => snap.problems.push(not_an_object(origin, &kind, &e)),
    }
}

/// A Deployment, StatefulSet, DaemonSet, Job or CronJob as it is now: its current revision.
fn plain_workload(kind: &str, value: &Value, origin: &ObjectRef) -> (ObjectRef, Decoded) {
    let text = |p: &str| {
        value
            .pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let object = ObjectRef::new(
        kind.to_owned(),
        text("/metadata/namespace"),
        text("/metadata/name"),
    );
    let mut decoded = Decoded::default();
    if object.name.is_empty() {
        decoded.problems.push(DecodeProblem {
            object: origin.clone(),
            kind: ProblemKind::MissingField,
            message: format!("{kind} without metadata.name; it is skipped"),
        });
        return (object, decoded);
    }
    let (template, problems) = match template::from_workload_value(value, &object) {
        Ok(t) => t,
        Err(p) => {
            decoded.problems.push(p);
            return (object, decoded);
        }
    };
    decoded.problems.extend(problems);
    let annotation = format!(
        "/metadata/annotations/{}",
        replicasets::REVISION_ANNOTATION.replace('/', "~1")
    );
    decoded.facts.push(RevisionFact {
        source: SourceKind::File,
        workload: WorkloadId::new(
            object.kind.clone(),
            object.namespace.clone(),
            object.name.clone(),
        ),
        revision: text(&annotation).parse().ok(),
        created: text("/metadata/creationTimestamp")
            .parse::<jiff::Timestamp>()
            .ok()
            .map(|t| t.as_second()),
        object: object.clone(),
        helm_release: None,
        status: None,
        current: true,
        template: template.into(),
    });
    (object, decoded)
}

/// Keeps a directory watch alive; dropping it stops the watch.
pub struct DirWatch {
    _watcher: notify::RecommendedWatcher,
    debouncer: tokio::task::JoinHandle<()>,
}

impl Drop for DirWatch {
    fn drop(&mut self) {
        self.debouncer.abort();
    }
}

/// Watches `dir` (recursively, so a ConfigMap mount's `..data` symlink swap is seen) and sends
/// one `()` per burst of changes, after `DEBOUNCE` of quiet. Must be called inside a tokio
/// runtime. The receiver ends when the guard is dropped.
pub fn watch_dir(dir: &Path) -> Result<(mpsc::Receiver<()>, DirWatch), FilesError> {
    use notify::{EventKind, RecursiveMode, Watcher, event::AccessKind};
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        match res {
            // Reading the files (our own reload) opens them: not a change.
            Ok(ev) if matches!(ev.kind, EventKind::Access(a) if a != AccessKind::Close(notify::event::AccessMode::Write)) => {}
            Ok(_) => {
                let _ = raw_tx.send(());
            }
            Err(e) => {
                tracing::warn!(error = %e, "directory watch error; reloading to be safe");
                let _ = raw_tx.send(());
            }
        }
    })
    .map_err(|source| FilesError::Watch {
        path: dir.to_owned(),
        source,
    })?;
    watcher
        .watch(dir, RecursiveMode::Recursive)
        .map_err(|source| FilesError::Watch {
            path: dir.to_owned(),
            source,
        })?;
    let (tx, rx) = mpsc::channel(1);
    let debouncer = tokio::spawn(async move {
        while raw_rx.recv().await.is_some() {
            let deadline = tokio::time::Instant::now() + MAX_DELAY;
            loop {
                let quiet = tokio::time::sleep(DEBOUNCE);
                tokio::select! {
                    more = raw_rx.recv() => if more.is_none() { return },
                    _ = quiet => break,
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            // A full channel already holds a pending notice: that one covers this burst too.
            if let Err(mpsc::error::TrySendError::Closed(())) = tx.try_send(()) {
                return;
            }
        }
    });
    Ok((
        rx,
        DirWatch {
            _watcher: watcher,
            debouncer,
        },
    ))
}

//! A directory of exported objects read once, with the decoders of the cluster sources.
//!
//! Its `.yaml`/`.yml`/`.json` files hold objects as `kubectl get -o yaml|json` prints them.
//! Keeping the directory loaded across changes is `dir_source`'s.

use std::collections::HashSet;
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::{ControllerRevision, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{
    DecodeProblem, Decoded, ProblemKind, controller_revisions, helm, manifest, meta, nodes, pods,
    replicasets, template,
};
use crate::model::{NodeFacts, ObjectRef, RevisionFact, SourceKind, WorkloadId};

/// Largest file read; bigger ones are reported and skipped.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// Directory depth followed below the root (symlinked directories can loop).
const MAX_DEPTH: usize = 32;

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

pub(super) fn file_ref(path: &Path, doc: Option<String>) -> ObjectRef {
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
            let object = meta::object_ref_of(&rs);
            Some((object, replicasets::decode(&rs)))
        }),
        ("apps", "ControllerRevision") => typed(value, origin, snap, |cr: ControllerRevision| {
            let object = meta::object_ref_of(&cr);
            Some((object, controller_revisions::decode(&cr)))
        }),
        ("", "Secret") => typed(value, origin, snap, |s: Secret| {
            helm::is_release_secret(&s).then(|| {
                let object = meta::object_ref_of(&s);
                (object, helm::decode_secret(&s))
            })
        }),
        ("", "ConfigMap") => typed(value, origin, snap, |cm: ConfigMap| {
            helm::is_release_configmap(&cm).then(|| {
                let object = meta::object_ref_of(&cm);
                (object, helm::decode_configmap(&cm))
            })
        }),
        ("", "Pod") => typed(value, origin, snap, |pod: Pod| {
            let object = meta::object_ref_of(&pod);
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

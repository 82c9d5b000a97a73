//! Properties every decoder of outside input keeps whatever it is given, shared by the cargo-fuzz
//! targets (`fuzz/`), the bounded property tests (`fuzz_props.rs`) and the regression tests: no
//! panic, every problem names the object it came from, the same input decodes the same way twice.
//! Each check panics when a property does not hold, which is what both harnesses report.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use arbitrary::{Arbitrary, Unstructured};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret as CoreSecret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use serde_json::json;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use rollcache::config::{Config, FileConfig};
use rollcache::credentials::{
    DOCKER_CONFIG_JSON_KEY, DOCKERCFG_KEY, SECRET_TYPE_DOCKER_CONFIG_JSON, SECRET_TYPE_DOCKERCFG,
};
use rollcache::credentials::{Keyring, RegistryAuth, SecretRef, parse_secret};
use rollcache::history::bounded::Meter;
use rollcache::history::files::{DirSnapshot, load_yaml_str};
use rollcache::history::template::{WORKLOAD_KINDS, from_spec_value, from_workload_value};
use rollcache::history::{Decoded, ProblemKind, controller_revisions, helm, manifest, meta};
use rollcache::http::PrefetchRequest;
use rollcache::image_ref::{ImageRef, NAME_TOTAL_LENGTH_MAX};
use rollcache::model::{ObjectRef, SourceKind};
use serde_json::Value;

/// Where `files_yaml` pretends its text was read from.
pub const FILE_PATH: &str = "fuzz/input.yaml";

fn same_decoded(a: &Decoded, b: &Decoded, what: &str) {
    assert_eq!(a.facts, b.facts, "{what}: facts differ between two decodes");
    assert_eq!(
        a.problems, b.problems,
        "{what}: problems differ between two decodes"
    );
}

/// Every fact and problem of `d` is filed under `object`.
fn named(d: &Decoded, object: &ObjectRef, source: SourceKind) {
    for p in &d.problems {
        assert_eq!(&p.object, object, "problem not named after its object: {p}");
        assert!(!p.message.is_empty(), "problem without a message: {p:?}");
    }
    for f in &d.facts {
        assert_eq!(&f.object, object, "fact not filed under its object");
        assert_eq!(f.source, source);
        assert!(
            !f.workload.name.is_empty() && !f.workload.kind.is_empty(),
            "fact for a workload without a kind or name: {}",
            f.workload
        );
        for c in &f.template.containers {
            assert!(
                !c.image.trim().is_empty(),
                "container without an image kept"
            );
        }
    }
}

/// The cargo-fuzz targets, by name.
pub const TARGETS: &[&str] = &[
    "helm_payload",
    "helm_secret",
    "manifest",
    "controller_revision",
    "image_ref",
    "dockerconfig",
    "config_file",
    "files_yaml",
    "prefetch_request",
];

/// Runs one fuzz input through `target`'s checks, reading the raw bytes the way the cargo-fuzz
/// target does, so that a saved crash replays in `cargo test` exactly as it crashed.
pub fn replay(target: &str, data: &[u8]) {
    let text = std::str::from_utf8(data);
    match target {
        "helm_payload" => helm_payload_input(data),
        "helm_secret" => helm_secret_input(data),
        "manifest" => text.into_iter().for_each(manifest),
        "controller_revision" => controller_revision_input(data),
        "image_ref" => text.into_iter().for_each(image_ref),
        "dockerconfig" => dockerconfig_input(data),
        "config_file" => text.into_iter().for_each(config_file),
        "files_yaml" => {
            if let Ok(text) = text {
                files_yaml(text);
                if let Ok(v) = serde_json::from_str::<Value>(text) {
                    files_value(&v);
                }
            }
        }
        "prefetch_request" => prefetch_request(data),
        other => panic!("no fuzz target {other:?}"),
    }
}

pub use rollcache_testbed::history::b64;

/// The test bed's gzip at the fastest level: the fuzzer wraps every input.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    rollcache_testbed::history::gzip_at(bytes, flate2::Compression::fast())
}

/// The first byte picks how much of Helm's wrapping the fuzzer gets for free, so that it reaches
/// gzip and JSON instead of stopping at base64: 0 raw text, 1 base64(rest), 2 base64(gzip(rest)).
fn helm_payload_input(data: &[u8]) {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let text = match mode % 3 {
        0 => rest.to_vec(),
        1 => b64(rest).into_bytes(),
        _ => b64(&gzip(rest)).into_bytes(),
    };
    helm_payload(&text);
}

/// A release Secret from structured input: release JSON fields (manifest and hooks are the
/// fuzzed YAML), labels and metadata, and how the payload is wrapped (Helm's base64(gzip(JSON)),
/// base64 of plain JSON, or raw bytes straight into `data.release`).
#[derive(Debug, Arbitrary)]
struct HelmSecretInput {
    wrap: u8,
    name: String,
    namespace: String,
    version: i64,
    status: String,
    last_deployed: String,
    manifest: String,
    hooks: Vec<(String, String, String)>,
    labels: Vec<(String, String)>,
    secret_name: Option<String>,
    secret_namespace: Option<String>,
    raw: Vec<u8>,
}

fn helm_secret_input(data: &[u8]) {
    // What libfuzzer-sys does for a typed `fuzz_target!`.
    let Ok(input) = HelmSecretInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let release = json!({
        "name": input.name,
        "namespace": input.namespace,
        "version": input.version,
        "info": {"status": input.status, "last_deployed": input.last_deployed},
        "manifest": input.manifest,
        "hooks": input.hooks.iter().map(|(name, path, manifest)| json!({
            "name": name, "kind": "Job", "path": path, "manifest": manifest,
        })).collect::<Vec<_>>(),
    });
    let payload = match input.wrap % 4 {
        0 | 1 => b64(&gzip(release.to_string().as_bytes())).into_bytes(),
        2 => b64(release.to_string().as_bytes()).into_bytes(),
        _ => input.raw,
    };
    let secret = CoreSecret {
        metadata: ObjectMeta {
            name: input.secret_name,
            namespace: input.secret_namespace,
            labels: Some(input.labels.into_iter().collect()),
            ..ObjectMeta::default()
        },
        type_: Some(helm::SECRET_TYPE.into()),
        data: Some(BTreeMap::from([("release".into(), ByteString(payload))])),
        ..CoreSecret::default()
    };
    helm_secret(&secret);
}

/// Either a whole object as JSON (first byte even), or JSON for `data` under a StatefulSet
/// owner, so that the fuzzer spends its time in the pod template.
fn controller_revision_input(data: &[u8]) {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let cr = if mode % 2 == 0 {
        match serde_json::from_slice::<ControllerRevision>(rest) {
            Ok(cr) => cr,
            Err(_) => return,
        }
    } else {
        let Ok(value) = serde_json::from_slice::<Value>(rest) else {
            return;
        };
        ControllerRevision {
            metadata: ObjectMeta {
                name: Some("ioc-7d9f".into()),
                namespace: Some("bl45p".into()),
                owner_references: Some(vec![OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "StatefulSet".into(),
                    name: "ioc".into(),
                    uid: "u".into(),
                    controller: Some(true),
                    ..OwnerReference::default()
                }]),
                ..ObjectMeta::default()
            },
            data: Some(RawExtension(value)),
            revision: 3,
        }
    };
    controller_revision(&cr);
}

/// The config as both secret types; looked up for a few images and for the text after the
/// first NUL byte.
fn dockerconfig_input(data: &[u8]) {
    let (config, image) = match data.iter().position(|b| *b == 0) {
        Some(i) => (
            &data[..i],
            String::from_utf8_lossy(&data[i + 1..]).into_owned(),
        ),
        None => (data, String::new()),
    };
    let images = [
        "docker.io/library/busybox",
        "registry.example.com:5000/team/app",
        "a.b.example.com/x/y",
        image.as_str(),
    ];
    for (ty, key) in [
        (SECRET_TYPE_DOCKER_CONFIG_JSON, DOCKER_CONFIG_JSON_KEY),
        (SECRET_TYPE_DOCKERCFG, DOCKERCFG_KEY),
    ] {
        let secret_data = BTreeMap::from([(key.to_owned(), config.to_vec())]);
        dockerconfig(ty, &secret_data, &images);
    }
}

/// `helm::decode_payload` on Helm's stored text.
pub fn helm_payload(text: &[u8]) {
    let a = helm::decode_payload(text);
    let b = helm::decode_payload(text);
    assert_eq!(format!("{a:?}"), format!("{b:?}"), "payload decodes differ");
    if let Err(e) = &a {
        assert!(!e.to_string().is_empty());
    }
}

/// `helm::decode_secret`, and the same payload as a ConfigMap (`HELM_DRIVER=configmap`) when it
/// is text.
pub fn helm_secret(s: &Secret) -> Decoded {
    let a = helm::decode_secret(s);
    same_decoded(&a, &helm::decode_secret(s), "helm secret");
    assert!(a.facts.len() <= manifest::RELEASE_MAX_WORKLOADS);
    if a.problems.iter().any(|p| p.kind == ProblemKind::OverBudget) {
        assert!(a.facts.is_empty(), "a release over budget keeps nothing");
        assert_eq!(a.problems.len(), 1, "{:?}", a.problems);
    }
    if helm::is_release_secret(s) {
        named(
            &a,
            &meta::object_ref("Secret", &s.metadata),
            SourceKind::HelmRelease,
        );
    } else {
        assert!(a.facts.is_empty() && a.problems.is_empty());
    }
    let text = s
        .data
        .as_ref()
        .and_then(|d| d.get("release"))
        .and_then(|b| std::str::from_utf8(&b.0).ok());
    if let Some(text) = text {
        let mut labels = s.metadata.labels.clone().unwrap_or_default();
        labels.insert("owner".into(), "helm".into());
        let cm = ConfigMap {
            metadata: ObjectMeta {
                labels: Some(labels),
                ..s.metadata.clone()
            },
            data: Some(BTreeMap::from([("release".into(), text.to_owned())])),
            ..ConfigMap::default()
        };
        let c = helm::decode_configmap(&cm);
        same_decoded(&c, &helm::decode_configmap(&cm), "helm configmap");
        named(
            &c,
            &meta::object_ref("ConfigMap", &cm.metadata),
            SourceKind::HelmRelease,
        );
        if helm::is_release_secret(s) {
            // Same payload, same workloads, whichever driver stored it.
            let workloads = |d: &Decoded| {
                d.facts
                    .iter()
                    .map(|f| (f.workload.clone(), f.template.clone()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(workloads(&a), workloads(&c), "Secret and ConfigMap differ");
        }
    }
    a
}

/// `manifest::split`, `parse` and `workloads` on one YAML stream.
pub fn manifest(text: &str) {
    let docs = manifest::split(text);
    let start = text.as_ptr() as usize;
    for (i, d) in docs.iter().enumerate() {
        assert_eq!(d.index, i, "documents are numbered in order");
        let at = d.text.as_ptr() as usize;
        assert!(
            at >= start && at + d.text.len() <= start + text.len(),
            "a document is a piece of the stream"
        );
        assert!(!d.text.trim().is_empty(), "empty documents are dropped");
        let a = manifest::parse(d.text);
        assert_eq!(a, manifest::parse(d.text), "parse is deterministic");
        if let Err(m) = &a {
            assert!(!m.contains('\n'), "parse errors stay on one line: {m:?}");
        }
        within_budget(d.text);
    }
    let (found, errors) = manifest::workloads(text);
    let (again, errors_again) = manifest::workloads(text);
    assert_eq!(errors, errors_again);
    assert_eq!(found.len(), again.len());
    for (w, w2) in found.iter().zip(&again) {
        assert_eq!(w.object, w2.object);
        assert!(WORKLOAD_KINDS.contains(&w.kind.as_str()), "{}", w.kind);
        assert!(!w.name.is_empty());
        assert!(w.index < docs.len());
        let object = ObjectRef::new("Fuzz", "ns", "x");
        template_value(&w.object, &object);
    }
    for e in &errors {
        assert!(e.document.starts_with("document "), "{e:?}");
    }
}

/// `manifest::parse_bounded`: whatever the input, a value it returns is within the per-document
/// budget (nodes, depth), the meter never hands out more than it had, and an over-budget answer
/// comes with a spent meter or a parser budget breach, never for a document the budget allows.
pub fn within_budget(doc: &str) {
    let allowance = manifest::DOC_MAX_VALUE_BYTES;
    let meter = Meter::new(allowance);
    let r = manifest::parse_bounded(doc, &meter);
    assert!(meter.left() <= allowance);
    match &r {
        Ok(v) => {
            let (nodes, depth) = shape(v);
            assert!(
                depth <= manifest::DOC_MAX_DEPTH + 1,
                "depth {depth} over the budget"
            );
            assert!(
                nodes * 64 <= allowance - meter.left(),
                "{nodes} nodes, charged {}",
                allowance - meter.left()
            );
            // The same document under the unbounded parser reads the same.
            if let Ok(plain) = manifest::parse(doc) {
                assert_eq!(
                    &plain, v,
                    "the bounded parser reads what the plain one reads"
                );
            }
        }
        Err(manifest::ParseError::OverBudget(m) | manifest::ParseError::Syntax(m)) => {
            assert!(!m.contains('\n'), "one line: {m:?}");
        }
    }
    assert_eq!(
        format!("{r:?}"),
        format!("{:?}", manifest::parse_bounded(doc, &Meter::new(allowance))),
        "parse_bounded is deterministic"
    );
}

/// (nodes, depth) of a value.
pub fn shape(v: &Value) -> (usize, usize) {
    match v {
        Value::Array(a) => a
            .iter()
            .map(shape)
            .fold((1, 1), |(n, d), (cn, cd)| (n + cn, d.max(cd + 1))),
        Value::Object(m) => m
            .values()
            .map(shape)
            .fold((1, 1), |(n, d), (cn, cd)| (n + cn + 1, d.max(cd + 1))),
        _ => (1, 1),
    }
}

/// `template::from_workload_value` and `from_spec_value` on any JSON value.
pub fn template_value(v: &Value, object: &ObjectRef) {
    for r in [
        (
            from_workload_value(v, object),
            from_workload_value(v, object),
        ),
        (from_spec_value(v, object), from_spec_value(v, object)),
    ] {
        assert_eq!(r.0, r.1, "template decode is deterministic");
        match r.0 {
            Ok((_, problems)) => problems.iter().for_each(|p| assert_eq!(&p.object, object)),
            Err(p) => assert_eq!(&p.object, object),
        }
    }
}

/// `controller_revisions::decode`.
pub fn controller_revision(cr: &ControllerRevision) {
    let a = controller_revisions::decode(cr);
    same_decoded(&a, &controller_revisions::decode(cr), "controller revision");
    let object = meta::object_ref("ControllerRevision", &cr.metadata);
    named(&a, &object, SourceKind::ControllerRevision);
    let owner = meta::controller_owner(&cr.metadata);
    for f in &a.facts {
        match owner {
            Some(owner) => {
                assert_eq!(f.workload.kind, owner.kind);
                assert_eq!(f.workload.name, owner.name);
            }
            // Orphaned: the workload its `<name>-<hash>` name says, or the revision itself.
            None => assert!(
                (f.workload.kind == "ControllerRevision" && f.workload.name == object.name)
                    || object.name.starts_with(&format!("{}-", f.workload.name)),
                "{:?} of {object}",
                f.workload
            ),
        }
        assert_eq!(f.revision, Some(cr.revision));
    }
    if let Some(data) = &cr.data {
        template_value(&data.0, &object);
    }
}

/// `ImageRef::parse`: canonical() and pull_ref() parse back to the same reference.
pub fn image_ref(s: &str) {
    let a = ImageRef::parse(s);
    assert_eq!(a, ImageRef::parse(s), "parse is deterministic");
    match a {
        Ok(r) => {
            let canonical = r.canonical();
            assert_eq!(
                ImageRef::parse(&canonical).as_ref(),
                Ok(&r),
                "{s:?} → {canonical:?} does not parse back to the same reference"
            );
            assert_eq!(canonical, r.to_string());
            assert!(r.tag.is_some() || r.digest.is_some(), "{s:?}");
            assert!(r.name().len() <= NAME_TOTAL_LENGTH_MAX, "{s:?}");
            let pulled = ImageRef::parse(&r.pull_ref()).expect("pull_ref parses");
            assert_eq!(
                (&pulled.registry, &pulled.repository, &pulled.digest),
                (&r.registry, &r.repository, &r.digest)
            );
        }
        Err(e) => {
            assert_eq!(e.reference, s);
            assert!(!e.reason.is_empty());
        }
    }
}

/// `credentials::parse_secret` and the `Keyring` built from it, looked up for `images`.
/// Error messages and `Debug` never show a password.
pub fn dockerconfig(secret_type: &str, data: &BTreeMap<String, Vec<u8>>, images: &[&str]) {
    let secret = SecretRef {
        namespace: "ns".into(),
        name: "pull".into(),
    };
    let a = parse_secret(&secret, secret_type, data);
    assert_eq!(a, parse_secret(&secret, secret_type, data), "deterministic");
    let mut keyring = Keyring::new();
    let added = keyring.add_secret(&secret, secret_type, data);
    match (&a, &added) {
        (Ok(entries), Ok(n)) => {
            assert_eq!(entries.len(), *n);
            for (_, auth) in entries {
                no_password_shown(auth, &format!("{auth:?}"));
            }
        }
        (Err(e), Err(e2)) => {
            assert_eq!(e, e2);
            let message = e.to_string();
            assert!(message.contains("ns/pull"), "{message}");
        }
        _ => panic!("parse_secret and Keyring::add_secret disagree"),
    }
    for image in images {
        let found: Vec<RegistryAuth> = keyring.lookup_name(image).into_iter().cloned().collect();
        let again: Vec<RegistryAuth> = keyring.lookup_name(image).into_iter().cloned().collect();
        assert!(found == again, "lookup is deterministic");
        if let Ok(r) = ImageRef::parse(image) {
            assert_eq!(
                keyring.lookup(&r).len(),
                keyring.lookup_name(&r.name()).len()
            );
        }
    }
}

fn no_password_shown(auth: &RegistryAuth, shown: &str) {
    let p = &auth.password;
    // A short or repeated password may appear by chance in the other, shown fields.
    let incidental = p.len() < 8
        || auth.username.contains(p.as_str())
        || auth.server_address.contains(p.as_str())
        || "RegistryAuth username password auth server_address identity_token registry_token <redacted>"
            .contains(p.as_str());
    assert!(incidental || !shown.contains(p.as_str()), "password shown");
}

/// `FileConfig::parse`, `Config::from_file` and `validate`.
pub fn config_file(text: &str) {
    let a = FileConfig::parse(text);
    assert_eq!(
        format!("{a:?}"),
        format!("{:?}", FileConfig::parse(text)),
        "deterministic"
    );
    let Ok(file) = a else { return };
    let config = Config::from_file(&file);
    let Ok(config) = config else { return };
    let v = config.validate();
    assert_eq!(format!("{v:?}"), format!("{:?}", config.validate()));
    if let Err(e) = v {
        assert!(e.to_string().contains('`'), "names the option: {e}");
    }
}

/// `files::load_yaml_str` (and, through it, every object decoder the file source reaches).
pub fn files_yaml(text: &str) -> DirSnapshot {
    let path = Path::new(FILE_PATH);
    let mut snap = DirSnapshot::default();
    load_yaml_str(path, text, &mut snap);
    let mut again = DirSnapshot::default();
    load_yaml_str(path, text, &mut again);
    assert_eq!(format!("{snap:?}"), format!("{again:?}"), "deterministic");
    check_snapshot(&snap);
    snap
}

/// `files::decode_value` on one JSON value.
pub fn files_value(v: &Value) -> DirSnapshot {
    let origin = ObjectRef::new("File", String::new(), FILE_PATH);
    let mut snap = DirSnapshot::default();
    rollcache::history::files::decode_value(v.clone(), &origin, &mut snap);
    let mut again = DirSnapshot::default();
    rollcache::history::files::decode_value(v.clone(), &origin, &mut again);
    assert_eq!(format!("{snap:?}"), format!("{again:?}"), "deterministic");
    check_snapshot(&snap);
    snap
}

fn check_snapshot(snap: &DirSnapshot) {
    for p in &snap.problems {
        assert_eq!(p.object.kind, "File", "{p}");
        assert!(p.object.name.starts_with(FILE_PATH), "{p}");
    }
    for (object, d) in &snap.objects {
        for p in &d.problems {
            // A workload without a name can only be named by where it was read.
            assert!(
                &p.object == object || p.object.name.starts_with(FILE_PATH),
                "problem {p} not named after {object}"
            );
        }
        for f in &d.facts {
            assert_eq!(&f.object, object);
            assert!(
                !f.workload.name.is_empty() && !f.workload.kind.is_empty(),
                "fact for a workload without a kind or name: {}",
                f.workload
            );
        }
    }
}

/// The admin API's `POST /prefetch` body: parse, validate, and a parsed request serialises back
/// to itself.
pub fn prefetch_request(body: &[u8]) {
    let a = serde_json::from_slice::<PrefetchRequest>(body);
    let Ok(r) = a else { return };
    let v = r.validate();
    assert_eq!(v, r.validate());
    let back = serde_json::to_vec(&r).expect("a request serialises");
    let r2: PrefetchRequest = serde_json::from_slice(&back).expect("and parses back");
    assert_eq!(r, r2);
    if v.is_ok() {
        for image in &r.images {
            image_ref(image);
        }
    }
}

//! Helm releases stored as Secrets (`helm.sh/release.v1`) or ConfigMaps (`owner=helm`):
//! `release` = base64(gzip(JSON)); the manifest and hooks are parsed for pod templates.

use std::io::Read;

use base64::Engine;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Deserializer};

use super::bounded::Meter;
use super::{DecodeProblem, Decoded, ProblemKind, manifest, meta, template};
use crate::model::{ObjectRef, RevisionFact, SourceKind, WorkloadId};

/// The Secret type Helm 3 and 4 store releases under.
pub const SECRET_TYPE: &str = "helm.sh/release.v1";
/// Largest stored release text (`data.release`) accepted. The API server refuses Secrets and
/// ConfigMaps over 1 MiB of data and etcd requests over 1.5 MiB; bigger text can only come from a
/// file, and is no release Helm wrote.
pub const MAX_STORED_BYTES: usize = 3 * 1024 * 1024 / 2;
/// Largest decompressed release JSON accepted. A stored release is at most ~1.1 MiB of gzip
/// (1.5 MiB of base64). Helm release JSON compresses 2.6x for the small releases of our fixtures
/// and up to ~8x for large repetitive charts (manifest YAML beside chart templates that Helm
/// stores base64-encoded, which gzip cannot shrink much), so honest releases stay under ~9 MiB;
/// 16 MiB leaves room for that while deflate's worst case (~1000x) would allow a gigabyte.
pub const MAX_RELEASE_BYTES: u64 = 16 * 1024 * 1024;
/// Hooks of one release. Charts have a handful; each is a few strings once decoded.
pub const MAX_HOOKS: usize = 1000;
const GZIP_MAGIC: [u8; 3] = [0x1f, 0x8b, 0x08];

/// Whether a Secret is a Helm release.
pub fn is_release_secret(s: &Secret) -> bool {
    s.type_.as_deref() == Some(SECRET_TYPE)
}

/// Whether a ConfigMap is a Helm release (`HELM_DRIVER=configmap`).
pub fn is_release_configmap(cm: &ConfigMap) -> bool {
    label(&cm.metadata, "owner") == Some("helm")
}

pub fn decode_secret(s: &Secret) -> Decoded {
    if !is_release_secret(s) {
        return Decoded::default();
    }
    let object = meta::object_ref("Secret", &s.metadata);
    let payload = s
        .data
        .as_ref()
        .and_then(|d| d.get("release"))
        .map(|b| b.0.as_slice());
    decode_release(&object, &s.metadata, payload)
}

pub fn decode_configmap(cm: &ConfigMap) -> Decoded {
    if !is_release_configmap(cm) {
        return Decoded::default();
    }
    let object = meta::object_ref("ConfigMap", &cm.metadata);
    let payload = cm
        .data
        .as_ref()
        .and_then(|d| d.get("release"))
        .map(|s| s.as_bytes());
    decode_release(&object, &cm.metadata, payload)
}

/// The parts of Helm's release JSON rollcache reads; everything else (chart, values, Helm 4's
/// `apply_method`, ...) is ignored.
#[derive(Debug, Default, Deserialize)]
pub struct Release {
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub namespace: String,
    #[serde(default, deserialize_with = "nullable")]
    pub version: i64,
    #[serde(default, deserialize_with = "nullable")]
    pub info: Info,
    #[serde(default, deserialize_with = "nullable")]
    pub manifest: String,
    #[serde(default, deserialize_with = "bounded_hooks")]
    pub hooks: Vec<Hook>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Info {
    #[serde(default, deserialize_with = "nullable")]
    pub status: String,
    #[serde(default, deserialize_with = "nullable")]
    pub first_deployed: String,
    #[serde(default, deserialize_with = "nullable")]
    pub last_deployed: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct Hook {
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub kind: String,
    #[serde(default, deserialize_with = "nullable")]
    pub path: String,
    #[serde(default, deserialize_with = "nullable")]
    pub manifest: String,
}

/// Go writes nil slices and maps as `null`.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `hooks`, refusing more than `MAX_HOOKS`: a list of empty objects costs 3 bytes of JSON each
/// but a whole `Hook` once decoded.
fn bounded_hooks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Hook>, D::Error> {
    struct Hooks;
    impl<'de> serde::de::Visitor<'de> for Hooks {
        type Value = Vec<Hook>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list of hooks or null")
        }
        fn visit_unit<E>(self) -> Result<Vec<Hook>, E> {
            Ok(Vec::new())
        }
        fn visit_none<E>(self) -> Result<Vec<Hook>, E> {
            Ok(Vec::new())
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Vec<Hook>, D::Error> {
            d.deserialize_any(self)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Vec<Hook>, A::Error> {
            let mut out = Vec::new();
            while let Some(h) = seq.next_element()? {
                if out.len() == MAX_HOOKS {
                    return Err(serde::de::Error::custom(HOOKS_OVER));
                }
                out.push(h);
            }
            Ok(out)
        }
    }
    d.deserialize_option(Hooks)
}

const HOOKS_OVER: &str = "more hooks than a release may have";

/// Why a release payload could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("release is not valid base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("release is not valid gzip: {0}")]
    Gzip(std::io::Error),
    #[error("release text is {0} bytes, more than a Kubernetes object can hold; refusing it")]
    StoredTooLarge(usize),
    #[error("release decompresses to more than {MAX_RELEASE_BYTES} bytes; refusing it")]
    TooLarge,
    #[error("release has more than {MAX_HOOKS} hooks; refusing it")]
    TooManyHooks,
    #[error("release is not valid release JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl PayloadError {
    fn kind(&self) -> ProblemKind {
        match self {
            PayloadError::Base64(_) => ProblemKind::Base64,
            PayloadError::Gzip(_) => ProblemKind::Gzip,
            PayloadError::StoredTooLarge(_) | PayloadError::TooLarge => ProblemKind::TooLarge,
            PayloadError::TooManyHooks => ProblemKind::OverBudget,
            PayloadError::Json(_) => ProblemKind::Json,
        }
    }
}

/// Helm's stored text → release: base64, then gzip when the magic bytes say so (Helm writes
/// gzip but reads plain JSON too), decompression capped at `MAX_RELEASE_BYTES`. The JSON is read
/// from the decompressing stream, so the decompressed text is never held beside the release.
pub fn decode_payload(text: &[u8]) -> Result<Release, PayloadError> {
    let text = text.trim_ascii();
    if text.len() > MAX_STORED_BYTES {
        return Err(PayloadError::StoredTooLarge(text.len()));
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(text)?;
    if !raw.starts_with(&GZIP_MAGIC) {
        return serde_json::from_slice(&raw).map_err(json_error);
    }
    // Like Go's gzip.Reader, read concatenated members too.
    let gz = flate2::read::MultiGzDecoder::new(raw.as_slice());
    let mut capped = Capped {
        inner: gz,
        left: MAX_RELEASE_BYTES,
        over: false,
    };
    let mut de = serde_json::Deserializer::from_reader(std::io::BufReader::new(&mut capped));
    let release = Release::deserialize(&mut de).and_then(|r| de.end().map(|()| r));
    drop(de);
    let release = match release {
        Err(e) if !e.is_io() && !capped.over => {
            // Say what the payload is as a whole (too large, or broken gzip) rather than where
            // its JSON went wrong; reading on costs time, not memory.
            match std::io::copy(&mut capped, &mut std::io::sink()) {
                Err(gz) if !capped.over => return Err(PayloadError::Gzip(gz)),
                _ => Err(e),
            }
        }
        other => other,
    };
    match release {
        _ if capped.over => Err(PayloadError::TooLarge),
        Ok(r) => Ok(r),
        Err(e) if e.is_io() => Err(PayloadError::Gzip(e.into())),
        Err(e) => Err(json_error(e)),
    }
}

fn json_error(e: serde_json::Error) -> PayloadError {
    if e.to_string().starts_with(HOOKS_OVER) {
        PayloadError::TooManyHooks
    } else {
        PayloadError::Json(e)
    }
}

/// A reader that fails once more than `left` bytes were read through it.
struct Capped<R> {
    inner: R,
    left: u64,
    over: bool,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        match self.left.checked_sub(n as u64) {
            Some(left) => {
                self.left = left;
                Ok(n)
            }
            None => {
                self.over = true;
                Err(std::io::Error::other("release over the size cap"))
            }
        }
    }
}

fn label<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.labels.as_ref()?.get(key).map(String::as_str)
}

fn problem(object: &ObjectRef, kind: ProblemKind, message: String) -> DecodeProblem {
    DecodeProblem {
        object: object.clone(),
        kind,
        message,
    }
}

fn decode_release(object: &ObjectRef, meta: &ObjectMeta, payload: Option<&[u8]>) -> Decoded {
    let mut out = Decoded::default();
    let Some(payload) = payload else {
        out.problems.push(problem(
            object,
            ProblemKind::MissingField,
            "no data.release; the release is skipped".into(),
        ));
        return out;
    };
    let release = match decode_payload(payload) {
        Ok(r) => r,
        Err(e) => {
            out.problems.push(problem(object, e.kind(), e.to_string()));
            return out;
        }
    };
    let name = Some(release.name.clone())
        .filter(|n| !n.is_empty())
        .or_else(|| label(meta, "name").map(str::to_owned));
    let revision = Some(release.version)
        .filter(|v| *v > 0)
        .or_else(|| label(meta, "version").and_then(|v| v.parse().ok()));
    let status = Some(release.info.status.clone())
        .filter(|s| !s.is_empty())
        .or_else(|| label(meta, "status").map(str::to_owned));
    let created = match parse_time(&release.info.last_deployed) {
        Ok(t) => t.or_else(|| meta::created(meta)),
        Err(message) => {
            out.problems.push(problem(
                object,
                ProblemKind::InvalidField,
                format!("info.last_deployed: {message}"),
            ));
            meta::created(meta)
        }
    };
    // A release describes workloads of the namespace it is stored in (rule 10): whoever can
    // write a release there may not speak for other namespaces, whatever the JSON says. Only an
    // object without a namespace (a file or a test, no boundary to keep) takes the release's.
    let namespace = if object.namespace.is_empty() {
        release.namespace.clone()
    } else {
        if !release.namespace.is_empty() && release.namespace != object.namespace {
            out.problems.push(problem(
                object,
                ProblemKind::ForeignNamespace,
                format!(
                    "release JSON names namespace {:?} but is stored in {:?}; its workloads are read as {:?}'s",
                    release.namespace, object.namespace, object.namespace
                ),
            ));
        }
        object.namespace.clone()
    };
    let current = status.as_deref() == Some("deployed");

    let mut sources: Vec<(String, &str)> = vec![("manifest".into(), release.manifest.as_str())];
    for hook in &release.hooks {
        let what = match hook.path.as_str() {
            "" => format!("hook {}", hook.name),
            path => format!("hook {} ({path})", hook.name),
        };
        sources.push((what, hook.manifest.as_str()));
    }
    let budget = Meter::new(manifest::RELEASE_MAX_VALUE_BYTES);
    let mut workloads = 0usize;
    let mut over_budget = None;
    for (what, text) in sources {
        manifest::each_workload(text, &budget, |item| {
            if over_budget.is_some() {
                return;
            }
            let w = match item {
                Ok(w) => w,
                Err(e) if e.over_budget => {
                    over_budget = Some(format!("{what} {}: {}", e.document, e.message));
                    return;
                }
                Err(e) => {
                    out.problems.push(problem(
                        object,
                        ProblemKind::Yaml,
                        format!(
                            "{what} {}: {}; this document is skipped",
                            e.document, e.message
                        ),
                    ));
                    return;
                }
            };
            if let Some(ns) = &w.namespace
                && *ns != namespace
            {
                out.problems.push(problem(
                    object,
                    ProblemKind::ForeignNamespace,
                    format!(
                        "{what} {} {ns}/{}: a release stored in namespace {namespace:?} may not describe workloads of namespace {ns:?}; this workload is ignored",
                        w.kind, w.name
                    ),
                ));
                return;
            }
            workloads += 1;
            if workloads > manifest::RELEASE_MAX_WORKLOADS {
                over_budget = Some(format!(
                    "more than {} workloads",
                    manifest::RELEASE_MAX_WORKLOADS
                ));
                return;
            }
            let workload = WorkloadId::new(w.kind.clone(), namespace.clone(), w.name.clone());
            let named = |mut p: DecodeProblem| {
                p.message = format!("{what} {workload}: {}", p.message);
                p
            };
            let (template, problems) = match template::from_workload_value(&w.object, object) {
                Ok(decoded) => decoded,
                Err(p) => {
                    out.problems.push(named(p));
                    return;
                }
            };
            out.problems.extend(problems.into_iter().map(named));
            out.facts.push(RevisionFact {
                source: SourceKind::HelmRelease,
                object: object.clone(),
                workload,
                revision,
                created,
                helm_release: name.clone(),
                status: status.clone(),
                current,
                template: template.into(),
            });
        });
        if over_budget.is_some() {
            break;
        }
    }
    if let Some(what) = over_budget {
        // A release over budget is hostile or broken as a whole: none of it is trusted, and
        // what was decoded before is dropped with the rest.
        return Decoded::skipped(
            object.clone(),
            ProblemKind::OverBudget,
            format!(
                "{what}: decoding this release would take more memory than one object may (limits: {} MiB of values, {} workloads, depth {}, {} aliases per document); the release is skipped",
                manifest::RELEASE_MAX_VALUE_BYTES >> 20,
                manifest::RELEASE_MAX_WORKLOADS,
                manifest::DOC_MAX_DEPTH,
                manifest::DOC_MAX_ALIASES,
            ),
        );
    }
    out
}

/// Helm writes Go times as RFC 3339 (empty when unset).
fn parse_time(text: &str) -> Result<Option<i64>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse::<jiff::Timestamp>()
        .map(|t| Some(t.as_second()))
        .map_err(|e| format!("{text:?} is not an RFC 3339 time: {e}"))
}

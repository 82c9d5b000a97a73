//! Helm releases stored as Secrets (`helm.sh/release.v1`) or ConfigMaps (`owner=helm`):
//! `release` = base64(gzip(JSON)); the manifest and hooks are parsed for pod templates.

use std::io::Read;

use base64::Engine;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Deserializer};

use super::{DecodeProblem, Decoded, ProblemKind, manifest, meta, template};
use crate::model::{ObjectRef, RevisionFact, SourceKind, WorkloadId};

/// The Secret type Helm 3 and 4 store releases under.
pub const SECRET_TYPE: &str = "helm.sh/release.v1";
/// Largest decompressed release JSON accepted. Real releases are far below (Secrets are capped at
/// 1 MiB compressed); above this the payload is treated as hostile.
pub const MAX_RELEASE_BYTES: u64 = 64 * 1024 * 1024;
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
    #[serde(default, deserialize_with = "nullable")]
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

/// Why a release payload could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("release is not valid base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("release is not valid gzip: {0}")]
    Gzip(std::io::Error),
    #[error("release decompresses to more than {MAX_RELEASE_BYTES} bytes; refusing it")]
    TooLarge,
    #[error("release is not valid release JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl PayloadError {
    fn kind(&self) -> ProblemKind {
        match self {
            PayloadError::Base64(_) => ProblemKind::Base64,
            PayloadError::Gzip(_) => ProblemKind::Gzip,
            PayloadError::TooLarge => ProblemKind::TooLarge,
            PayloadError::Json(_) => ProblemKind::Json,
        }
    }
}

/// Helm's stored text → release: base64, then gzip when the magic bytes say so (Helm writes
/// gzip but reads plain JSON too), decompression capped at `MAX_RELEASE_BYTES`.
pub fn decode_payload(text: &[u8]) -> Result<Release, PayloadError> {
    let text = text.trim_ascii();
    let raw = base64::engine::general_purpose::STANDARD.decode(text)?;
    let json = if raw.starts_with(&GZIP_MAGIC) {
        // Like Go's gzip.Reader, read concatenated members too.
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(raw.as_slice())
            .take(MAX_RELEASE_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(PayloadError::Gzip)?;
        if out.len() as u64 > MAX_RELEASE_BYTES {
            return Err(PayloadError::TooLarge);
        }
        out
    } else {
        raw
    };
    Ok(serde_json::from_slice(&json)?)
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
    let namespace = Some(release.namespace.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| object.namespace.clone());
    let current = status.as_deref() == Some("deployed");

    let mut sources: Vec<(String, &str)> = vec![("manifest".into(), release.manifest.as_str())];
    for hook in &release.hooks {
        let what = match hook.path.as_str() {
            "" => format!("hook {}", hook.name),
            path => format!("hook {} ({path})", hook.name),
        };
        sources.push((what, hook.manifest.as_str()));
    }
    for (what, text) in sources {
        let (workloads, errors) = manifest::workloads(text);
        for e in errors {
            out.problems.push(problem(
                object,
                ProblemKind::Yaml,
                format!(
                    "{what} {}: {}; this document is skipped",
                    e.document, e.message
                ),
            ));
        }
        for w in workloads {
            let workload = WorkloadId::new(
                w.kind.clone(),
                w.namespace.clone().unwrap_or_else(|| namespace.clone()),
                w.name.clone(),
            );
            let named = |mut p: DecodeProblem| {
                p.message = format!("{what} {workload}: {}", p.message);
                p
            };
            let (template, problems) = match template::from_workload_value(&w.object, object) {
                Ok(decoded) => decoded,
                Err(p) => {
                    out.problems.push(named(p));
                    continue;
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
        }
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

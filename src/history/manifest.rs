//! Multi-document YAML (Helm manifests, `kubectl get -o yaml` files) → JSON values, one document
//! at a time so that one bad document never hides the others, with parse budgets against hostile
//! input.

use serde::de::DeserializeSeed;
use serde_json::Value;

use super::bounded::{Bounded, Meter};
use super::template::WORKLOAD_KINDS;

/// Heap one manifest document may materialise. A Deployment or StatefulSet of a real chart is a
/// few KiB to a few hundred KiB as a value; documents whose `kind:` is not a workload are skipped
/// before parsing, so only flow-style or JSON documents of other kinds also count here.
pub const DOC_MAX_VALUE_BYTES: usize = 4 * 1024 * 1024;
/// Heap all the manifests (and hooks) of one release may materialise, counted across documents
/// (each document is dropped once read, so this bounds the parsing work and what facts retain,
/// not the peak). About 500 large workloads; charts with more than a few dozen are rare.
pub const RELEASE_MAX_VALUE_BYTES: usize = 32 * 1024 * 1024;
/// Workloads one release may describe; each becomes retained facts. Charts hold a few dozen; the
/// value budget above already bounds what they retain, this keeps the count sane too.
pub const RELEASE_MAX_WORKLOADS: usize = 5000;
/// Nesting of a manifest document. Pod templates nest about 15 levels deep.
pub const DOC_MAX_DEPTH: usize = 64;
/// Aliases and anchors per document: Helm renders plain YAML, and hand-written anchors are few.
pub const DOC_MAX_ALIASES: usize = 1000;

/// One document of a YAML stream, not parsed yet.
#[derive(Debug, Clone, Copy)]
pub struct RawDoc<'a> {
    /// Position among the non-empty documents of the stream, from 0.
    pub index: usize,
    /// The template a Helm manifest document came from (`# Source: chart/templates/x.yaml`).
    pub source: Option<&'a str>,
    pub text: &'a str,
}

impl RawDoc<'_> {
    /// "document 3 (chart/templates/x.yaml)", for problem messages (counted from 1 for people).
    pub fn describe(&self) -> String {
        match self.source {
            Some(src) => format!("document {} ({src})", self.index + 1),
            None => format!("document {}", self.index + 1),
        }
    }

    /// The top-level `kind:` as written on its own line, when the document is in block style.
    /// Lets callers skip parsing documents whose kind they ignore (big CRDs, ConfigMaps).
    pub fn kind_hint(&self) -> Option<&str> {
        let line = self.text.lines().find(|l| l.starts_with("kind:"))?;
        let value = line["kind:".len()..].split(" #").next()?.trim();
        let value = value.trim_matches(|c| c == '"' || c == '\'');
        (!value.is_empty()).then_some(value)
    }
}

/// Splits a YAML stream at document markers (`---` lines, `...` ends) and drops empty documents
/// (blank or only comments).
pub fn split(stream: &str) -> Vec<RawDoc<'_>> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    let mut pieces: Vec<(usize, usize)> = Vec::new();
    for line in stream.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        let is_start = bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t");
        let is_end = bare == "...";
        if is_start || is_end {
            pieces.push((start, offset));
            // Content after `--- ` (a flow document, a tag) belongs to the next document.
            start = if is_start {
                offset + 3
            } else {
                offset + line.len()
            };
        }
        offset += line.len();
    }
    pieces.push((start, stream.len()));
    for (from, to) in pieces {
        let text = &stream[from..to];
        if is_empty(text) {
            continue;
        }
        let source = text.lines().find_map(|l| {
            l.trim_start()
                .strip_prefix("# Source:")
                .map(str::trim)
                .filter(|s| !s.is_empty())
        });
        docs.push(RawDoc {
            index: docs.len(),
            source,
            text,
        });
    }
    docs
}

fn is_empty(text: &str) -> bool {
    text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#')
    })
}

/// Parses one document into a JSON value under a budget that grows only linearly with its size
/// and keeps aliases (the amplifier in "billion laughs") small.
pub fn parse(doc: &str) -> Result<Value, String> {
    let linear = doc.len().max(1_000_000);
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_events: linear,
            max_nodes: linear,
            max_aliases: 10_000,
            max_anchors: 10_000,
            max_documents: 1,
            max_depth: 100,
            max_total_scalar_bytes: doc.len().max(1024),
        },
        // YAML 1.1 would read `n`, `y`, `on`, `off` as booleans; names and labels want the text.
        strict_booleans: true,
    };
    serde_saphyr::from_str_with_options::<Value>(doc, options).map_err(|e| compact(&e.to_string()))
}

/// Why a manifest document was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Not YAML, or not one document.
    Syntax(String),
    /// Reading it would cost more than the budget allows (nodes, depth, aliases, bytes).
    OverBudget(String),
}

impl ParseError {
    pub fn message(&self) -> &str {
        match self {
            ParseError::Syntax(m) | ParseError::OverBudget(m) => m,
        }
    }
}

/// Parses one document of a Helm manifest, charging `meter` for the value it builds, under
/// parser budgets sized for one Kubernetes object (not for the text's length: a release's text
/// may be inflated from a small object).
pub fn parse_bounded(doc: &str, meter: &Meter) -> Result<Value, ParseError> {
    let nodes = DOC_MAX_VALUE_BYTES / 32;
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_events: 2 * nodes,
            max_nodes: nodes,
            max_aliases: DOC_MAX_ALIASES,
            max_anchors: DOC_MAX_ALIASES,
            max_documents: 1,
            max_depth: DOC_MAX_DEPTH,
            flow_nesting_limit: DOC_MAX_DEPTH,
            max_total_scalar_bytes: doc.len().max(1024),
            max_recorded_anchor_events: nodes,
            max_recorded_anchor_bytes: DOC_MAX_VALUE_BYTES,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: nodes,
            max_replay_stack_depth: 16,
        },
        strict_booleans: true,
    };
    serde_saphyr::with_deserializer_from_str_with_options(doc, options, |d| {
        Bounded(meter).deserialize(d)
    })
    .map_err(|e| {
        let message = compact(&e.to_string());
        if meter.exhausted() || is_budget(&e) {
            ParseError::OverBudget(message)
        } else {
            ParseError::Syntax(message)
        }
    })
}

fn is_budget(e: &serde_saphyr::Error) -> bool {
    use serde_saphyr::Error as E;
    let mut e = e;
    while let E::AliasError { error, .. } | E::WithSnippet { error, .. } = e {
        e = error;
    }
    // The scanner's flow-nesting limit only surfaces as a message.
    if let E::ExternalMessage { msg, .. } = e
        && msg == "recursion limit exceeded"
    {
        return true;
    }
    matches!(
        e,
        E::Budget { .. }
            | E::AliasReplayCounterOverflow { .. }
            | E::AliasReplayLimitExceeded { .. }
            | E::AliasExpansionLimitExceeded { .. }
            | E::AliasReplayStackDepthExceeded { .. }
    )
}

/// Parser messages can quote a whole snippet of the input; keep problems to one readable line.
fn compact(message: &str) -> String {
    let one_line: String = message.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.len() > 300 {
        let cut = (0..=300)
            .rev()
            .find(|i| one_line.is_char_boundary(*i))
            .unwrap_or(0);
        format!("{}…", &one_line[..cut])
    } else {
        one_line
    }
}

/// A workload found in a manifest.
#[derive(Debug, Clone)]
pub struct ManifestWorkload {
    pub index: usize,
    pub source: Option<String>,
    pub kind: String,
    /// `metadata.namespace` when the document sets one.
    pub namespace: Option<String>,
    pub name: String,
    pub object: Value,
}

/// A document of a manifest that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// "document 3 (chart/templates/x.yaml)".
    pub document: String,
    pub message: String,
    /// The document (or the release around it) is over a decoding budget: the input is hostile
    /// or broken, and callers skip the whole release rather than this document alone.
    pub over_budget: bool,
}

/// The workloads (kinds with a pod template) of a multi-document manifest. Other kinds and
/// documents that are not objects are ignored; documents that fail to parse, or workloads without
/// a name, are returned as errors and the rest is still read. Budgets as for one release.
pub fn workloads(manifest: &str) -> (Vec<ManifestWorkload>, Vec<ManifestError>) {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    let release = Meter::new(RELEASE_MAX_VALUE_BYTES);
    each_workload(manifest, &release, |item| match item {
        Ok(w) => found.push(w),
        Err(e) => errors.push(e),
    });
    (found, errors)
}

/// Streams the workloads of a manifest to `f` one at a time, so that only one document's value is
/// alive at once; every document is charged to `release`. Stops after the first over-budget
/// error (reported to `f`), since the rest would only be refused too.
pub fn each_workload(
    manifest: &str,
    release: &Meter,
    mut f: impl FnMut(Result<ManifestWorkload, ManifestError>),
) {
    for doc in split(manifest) {
        if let Some(kind) = doc.kind_hint()
            && !WORKLOAD_KINDS.contains(&kind)
        {
            continue;
        }
        let allowance = release.left().min(DOC_MAX_VALUE_BYTES);
        let meter = Meter::new(allowance);
        let parsed = parse_bounded(doc.text, &meter);
        release.take_spent(allowance, &meter);
        let value = match parsed {
            Ok(v) => v,
            Err(e) => {
                let over_budget = matches!(e, ParseError::OverBudget(_));
                f(Err(ManifestError {
                    document: doc.describe(),
                    message: e.message().to_owned(),
                    over_budget,
                }));
                if over_budget {
                    return;
                }
                continue;
            }
        };
        let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
        if !WORKLOAD_KINDS.contains(&kind) {
            continue;
        }
        let Some(name) = value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        else {
            f(Err(ManifestError {
                document: doc.describe(),
                message: format!("{kind} without metadata.name"),
                over_budget: false,
            }));
            continue;
        };
        let (kind, name) = (kind.to_owned(), name.to_owned());
        let namespace = value
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .map(str::to_owned);
        f(Ok(ManifestWorkload {
            index: doc.index,
            source: doc.source.map(str::to_owned),
            kind,
            namespace,
            name,
            object: value,
        }));
    }
}

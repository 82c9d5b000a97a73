//! Multi-document YAML (Helm manifests, `kubectl get -o yaml` files) → JSON values, one document
//! at a time so that one bad document never hides the others, with parse budgets against hostile
//! input.

use serde_json::Value;

use super::template::WORKLOAD_KINDS;

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
}

/// The workloads (kinds with a pod template) of a multi-document manifest. Other kinds and
/// documents that are not objects are ignored; documents that fail to parse, or workloads without
/// a name, are returned as errors and the rest is still read.
pub fn workloads(manifest: &str) -> (Vec<ManifestWorkload>, Vec<ManifestError>) {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for doc in split(manifest) {
        if let Some(kind) = doc.kind_hint()
            && !WORKLOAD_KINDS.contains(&kind)
        {
            continue;
        }
        let value = match parse(doc.text) {
            Ok(v) => v,
            Err(message) => {
                errors.push(ManifestError {
                    document: doc.describe(),
                    message,
                });
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
            errors.push(ManifestError {
                document: doc.describe(),
                message: format!("{kind} without metadata.name"),
            });
            continue;
        };
        found.push(ManifestWorkload {
            index: doc.index,
            source: doc.source.map(str::to_owned),
            kind: kind.to_owned(),
            namespace: value
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .map(str::to_owned),
            name: name.to_owned(),
            object: value,
        });
    }
    (found, errors)
}

//! Hostile Helm release objects for the tests, the fuzz seeds and the memory benchmark: small
//! Secrets whose payload inflates into manifests that are cheap to store and expensive to decode
//! (many tiny nodes, deep nesting, aliases, many documents, many workloads, many hooks).

use serde_json::{Value, json};

use crate::history::{b64, gzip_at, helm};

use rollcache::history::helm::MAX_RELEASE_BYTES;

/// One hostile release and what decoding it must report.
#[derive(Debug, Clone)]
pub struct Bomb {
    /// Short name, also the release name (`sh.helm.release.v1.<name>.v1`).
    pub name: &'static str,
    /// Size of the release JSON, as Helm would store it before gzip.
    pub json_bytes: usize,
    /// What Helm stores under `data.release`: base64(gzip(JSON)).
    pub text: String,
    /// The problem kind label decoding must report (`too_large`, `over_budget`).
    pub expect: &'static str,
}

impl Bomb {
    fn new(name: &'static str, expect: &'static str, release_json: Vec<u8>) -> Self {
        Self {
            name,
            json_bytes: release_json.len(),
            text: b64(&gzip(&release_json)),
            expect,
        }
    }

    pub fn helm_text(&self) -> &str {
        &self.text
    }

    /// The release Secret in namespace `ns` as the API serves it (data base64-encoded once more).
    pub fn secret(&self, ns: &str) -> Value {
        release_secret(ns, self.name, &self.text)
    }
}

/// Bytes of release JSON the bombs that must pass the byte caps are built up to: just under
/// `MAX_RELEASE_BYTES`, so that they are the worst objects of the largest allowed size.
pub fn fitting_size() -> usize {
    MAX_RELEASE_BYTES as usize - 64 * 1024
}

/// Every bomb: the ~100 KB Secret that inflates to 60 MB (refused by size), and those that stay
/// under the size cap and must be refused by the decoding budgets.
pub fn all() -> Vec<Bomb> {
    CATALOGUE.iter().map(|(_, make)| make()).collect()
}

/// The bombs named, in catalogue order (building all of them takes seconds in a debug build).
pub fn named(names: &[&str]) -> Vec<Bomb> {
    CATALOGUE
        .iter()
        .filter(|(name, _)| names.contains(name))
        .map(|(_, make)| make())
        .collect()
}

type Make = fn() -> Bomb;

const CATALOGUE: &[(&str, Make)] = &[
    ("flow-60mb", || {
        Bomb::new(
            "flow-60mb",
            "too_large",
            release_with_manifest("flow-60mb", &flow_sequences(60_000_000)),
        )
    }),
    ("flow-nodes", || over("flow-nodes", flow_sequences)),
    ("deep", || over("deep", deep_nesting)),
    ("laughs", || over("laughs", |_| billion_laughs())),
    ("alias-scalar", || over("alias-scalar", alias_of_big_scalar)),
    ("many-docs", || over("many-docs", many_documents)),
    ("many-workloads", || over("many-workloads", many_workloads)),
    ("many-hooks", || {
        Bomb::new(
            "many-hooks",
            "over_budget",
            many_hooks("many-hooks", fitting_size()),
        )
    }),
];

fn over(name: &'static str, generate: fn(usize) -> String) -> Bomb {
    Bomb::new(name, "over_budget", fitting(name, generate))
}

/// The release JSON of the manifest `generate` makes, as large as still fits under the cap once
/// JSON escaping (a newline takes two bytes) is counted.
fn fitting(name: &str, generate: fn(usize) -> String) -> Vec<u8> {
    let want = fitting_size();
    let json = release_with_manifest(name, &generate(want));
    if json.len() <= want {
        return json;
    }
    let scaled = (want as u128 * want as u128 / json.len() as u128) as usize;
    release_with_manifest(name, &generate(scaled.saturating_sub(4096)))
}

/// `x: [[],[],…]` of about `bytes`: three bytes of text, one node each.
pub fn flow_sequences(bytes: usize) -> String {
    let n = bytes.saturating_sub(8) / 3;
    format!("x: [{}[]]\n", "[],".repeat(n))
}

/// `[[[[…]]]]` of about `bytes`.
pub fn deep_nesting(bytes: usize) -> String {
    let n = bytes / 2;
    let mut s = String::with_capacity(bytes + 1);
    s.push_str(&"[".repeat(n));
    s.push_str(&"]".repeat(n));
    s.push('\n');
    s
}

/// "Billion laughs": ten levels of anchors, each aliasing the previous one ten times.
pub fn billion_laughs() -> String {
    let mut s = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let prev = format!("*a{}", i - 1);
        s += &format!("a{i}: &a{i} [{}]\n", vec![prev; 10].join(", "));
    }
    s
}

/// One anchored scalar of 1 MiB (within a document's budget by itself) aliased 900 times: each
/// alias is a full copy once the value is built, which parser event budgets do not see. Padded
/// with comment lines up to `bytes`.
pub fn alias_of_big_scalar(bytes: usize) -> String {
    let scalar = "x".repeat(1 << 20);
    let mut s = format!("a: &a {scalar}\nb: [{}]\n", vec!["*a"; 900].join(", "));
    let line = format!("#{}\n", "-".repeat(1000));
    while s.len() + line.len() <= bytes {
        s.push_str(&line);
    }
    s
}

/// Many documents, each within the per-document budget, together far over the release's.
pub fn many_documents(bytes: usize) -> String {
    let doc = flow_sequences(150_000);
    let mut s = String::with_capacity(bytes);
    while s.len() + doc.len() + 4 < bytes {
        s.push_str("---\n");
        s.push_str(&doc);
    }
    s
}

/// Tiny Deployments, as many as fit.
pub fn many_workloads(bytes: usize) -> String {
    let mut s = String::with_capacity(bytes);
    let mut i = 0usize;
    loop {
        let doc = format!(
            "---\nkind: Deployment\nmetadata: {{name: w{i}}}\nspec: {{template: {{spec: {{containers: [{{name: c, image: r.example/w:{i}}}]}}}}}}\n"
        );
        if s.len() + doc.len() > bytes {
            return s;
        }
        s.push_str(&doc);
        i += 1;
    }
}

/// A release whose `hooks` is a list of empty objects: three bytes of JSON each.
pub fn many_hooks(name: &str, bytes: usize) -> Vec<u8> {
    let mut json = release_with_manifest(name, "");
    let tail = json.split_off(json.len() - 1);
    let n = bytes / 3;
    json.extend_from_slice(b",\"hooks\":[");
    json.extend_from_slice("{},".repeat(n).as_bytes());
    json.extend_from_slice(b"{}]");
    json.extend_from_slice(&tail);
    json
}

/// Release JSON (the fields rollcache reads, plus a chart stub) around `manifest`. Written by
/// hand: through `serde_json::Value`, tens of megabytes take seconds in a debug build.
pub fn release_with_manifest(name: &str, manifest: &str) -> Vec<u8> {
    let plain = !manifest
        .bytes()
        .any(|b| b == b'"' || b == b'\\' || (b < 0x20 && b != b'\n'));
    let escaped = if plain {
        manifest.replace('\n', "\\n")
    } else {
        let quoted = serde_json::to_string(manifest).expect("JSON string");
        quoted[1..quoted.len() - 1].to_owned()
    };
    let name = serde_json::to_string(name).expect("JSON string");
    format!(
        r#"{{"name":{name},"info":{{"status":"deployed","last_deployed":"2025-01-10T09:00:00Z"}},"chart":{{"metadata":{{"name":{name},"version":"0.1.0"}}}},"manifest":"{escaped}","version":1}}"#
    )
    .into_bytes()
}

/// A Helm release Secret (`helm.sh/release.v1`, version 1) holding `helm_text`.
pub fn release_secret(ns: &str, release: &str, helm_text: &str) -> Value {
    let release =
        json!({"name": release, "namespace": ns, "version": 1, "info": {"status": "deployed"}});
    helm::secret_with_payload(&release, helm_text.as_bytes())
}

/// gzip at the best level, so that a bomb stays as small as an attacker would make it.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    gzip_at(bytes, flate2::Compression::best())
}

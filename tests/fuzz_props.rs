//! A bounded fuzz run for every `cargo test`: arbitrary and structure-aware inputs (mutated real
//! Helm payloads, YAML-ish documents, references, docker configs, config files, request bodies)
//! thrown at every decoder of outside input, checking the properties in `fuzz_checks`.
//! The open-ended runs are the cargo-fuzz targets in `fuzz/`.

mod fuzz_checks;

use fuzz_checks::{b64, gzip};

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use proptest::prelude::*;
use proptest::sample::select;
use rollcache::credentials::{
    DOCKER_CONFIG_JSON_KEY, DOCKERCFG_KEY, SECRET_TYPE_DOCKER_CONFIG_JSON, SECRET_TYPE_DOCKERCFG,
};
use rollcache::history::{helm, manifest};
use serde_json::{Value, json};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/history");

/// Generous even for a debug build on a busy machine; a decoder with super-linear behaviour on
/// these few-kilobyte inputs blows through it.
const DECODE_BOUND: Duration = Duration::from_secs(10);

fn bounded<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    let took = started.elapsed();
    assert!(took < DECODE_BOUND, "{what} took {took:?}");
    out
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(bytes), &mut out)
        .expect("fixture is gzip");
    out
}

fn fixture_items(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(format!("{FIXTURES}/{file}")).expect("fixture");
    let list = manifest::parse(&text).expect("fixture is YAML");
    list["items"].as_array().expect("a List").clone()
}

/// Helm's stored text (base64(gzip(JSON))) of every release in the fixtures.
fn helm_texts() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for item in fixture_items("helm/release-secrets.yaml") {
        let wire = item["data"]["release"].as_str().expect("data.release");
        let text = base64::engine::general_purpose::STANDARD
            .decode(wire)
            .expect("kubectl base64");
        out.push(text);
    }
    for item in fixture_items("helm/release-configmaps.yaml") {
        let text = item["data"]["release"].as_str().expect("data.release");
        out.push(text.as_bytes().to_vec());
    }
    out
}

fn release_secret(payload: Vec<u8>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some("sh.helm.release.v1.ioc.v3".into()),
            namespace: Some("bl45p".into()),
            labels: Some(BTreeMap::from([
                ("name".into(), "ioc".into()),
                ("owner".into(), "helm".into()),
                ("status".into(), "deployed".into()),
                ("version".into(), "3".into()),
            ])),
            ..ObjectMeta::default()
        },
        type_: Some("helm.sh/release.v1".into()),
        data: Some(BTreeMap::from([("release".into(), ByteString(payload))])),
        ..Secret::default()
    }
}

/// One edit of a byte string; positions are taken modulo its length.
#[derive(Clone, Debug)]
enum Edit {
    Flip(usize, u8),
    Set(usize, u8),
    Delete(usize, usize),
    Insert(usize, Vec<u8>),
    Duplicate(usize, usize),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(i, x)| Edit::Flip(i, x)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<usize>(), 1..64usize).prop_map(|(i, n)| Edit::Delete(i, n)),
        (
            any::<usize>(),
            prop::collection::vec(
                prop_oneof![any::<u8>(), select(b"\n-:#&*[]{}'\"\\ \t|>!%@`".to_vec())],
                1..8
            )
        )
            .prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<usize>(), 1..200usize).prop_map(|(i, n)| Edit::Duplicate(i, n)),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, edits: &[Edit]) {
    for e in edits {
        let len = bytes.len();
        let at = |i: usize| if len == 0 { 0 } else { i % len };
        match e {
            Edit::Flip(i, x) if len > 0 => bytes[at(*i)] ^= x,
            Edit::Set(i, b) if len > 0 => bytes[at(*i)] = *b,
            Edit::Delete(i, n) if len > 0 => {
                let from = at(*i);
                bytes.drain(from..(from + n).min(len));
            }
            Edit::Insert(i, b) => {
                let to = if len == 0 { 0 } else { at(*i) };
                bytes.splice(to..to, b.iter().copied());
            }
            Edit::Duplicate(i, n) if len > 0 => {
                let from = at(*i);
                let piece = bytes[from..(from + n).min(len)].to_vec();
                bytes.splice(from..from, piece);
            }
            Edit::Truncate(i) => bytes.truncate(if len == 0 { 0 } else { i % len }),
            _ => {}
        }
    }
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec(edit(), 1..6)
}

/// Which layer of Helm's wrapping a mutation hits.
#[derive(Clone, Copy, Debug)]
enum Layer {
    Text,
    Gzip,
    Json,
}

fn layer() -> impl Strategy<Value = Layer> {
    prop_oneof![Just(Layer::Text), Just(Layer::Gzip), Just(Layer::Json)]
}

fn mutate_helm_text(text: &[u8], layer: Layer, edits: &[Edit]) -> Vec<u8> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("fixture base64");
    match layer {
        Layer::Text => {
            let mut t = text.to_vec();
            apply(&mut t, edits);
            t
        }
        Layer::Gzip => {
            let mut g = raw;
            apply(&mut g, edits);
            b64(&g).into_bytes()
        }
        Layer::Json => {
            let mut j = gunzip(&raw);
            apply(&mut j, edits);
            b64(&gzip(&j)).into_bytes()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// YAML-ish documents

const KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "namespace",
    "labels",
    "annotations",
    "spec",
    "template",
    "jobTemplate",
    "containers",
    "initContainers",
    "image",
    "imagePullPolicy",
    "imagePullSecrets",
    "serviceAccountName",
    "nodeName",
    "nodeSelector",
    "tolerations",
    "affinity",
    "nodeAffinity",
    "requiredDuringSchedulingIgnoredDuringExecution",
    "nodeSelectorTerms",
    "matchExpressions",
    "key",
    "operator",
    "values",
    "items",
    "data",
    "release",
    "type",
    "revision",
    "ownerReferences",
    "controller",
    "<<",
    "? complex",
    "\"quoted key\"",
    "x",
];

const SCALARS: &[&str] = &[
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "CronJob",
    "Pod",
    "List",
    "DeploymentList",
    "Secret",
    "ConfigMap",
    "ControllerRevision",
    "Node",
    "apps/v1",
    "batch/v1",
    "v1",
    "helm.sh/release.v1",
    "busybox:1.36",
    "ghcr.io/epics-containers/ioc:1.0",
    "IfNotPresent",
    "Always",
    "In",
    "Exists",
    "NoSchedule",
    "~",
    "null",
    "true",
    "y",
    "off",
    "0x1F",
    "0o17",
    "1e400",
    "-9223372036854775809",
    "18446744073709551616",
    ".inf",
    ".nan",
    "2026-11-25T09:58:40Z",
    "\"esc \\u00e9 \\x41 \\\"\"",
    "'single ''quoted'''",
    "|\n  block\n  text",
    ">-\n  folded",
    "!!binary aGVsbG8=",
    "!!str 12",
    "!custom tag",
    "&anchor value",
    "*anchor",
    "*missing",
    "[a, b, {c: d}]",
    "{kind: Pod, spec: {containers: [{image: x}]}}",
    "é漢字",
    "",
    "\t",
    "- item",
    "key: value",
    "%YAML 1.2",
    "#comment",
    "@reserved",
    "`back`",
];

#[derive(Clone, Debug)]
enum Node {
    Scalar(String),
    Map(Vec<(String, Node)>),
    Seq(Vec<Node>),
    Alias(String),
}

fn yaml_node() -> impl Strategy<Value = Node> {
    let leaf = prop_oneof![
        6 => select(SCALARS).prop_map(|s| Node::Scalar(s.to_owned())),
        1 => "[ -~]{0,12}".prop_map(Node::Scalar),
        1 => select(&["a", "b", "anchor"][..]).prop_map(|a| Node::Alias(a.to_owned())),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec((select(KEYS).prop_map(str::to_owned), inner.clone()), 0..6)
                .prop_map(Node::Map),
            prop::collection::vec(inner, 0..4).prop_map(Node::Seq),
        ]
    })
}

fn render(node: &Node, indent: usize, anchors: &mut usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match node {
        Node::Scalar(s) => {
            out.push(' ');
            out.push_str(&s.replace('\n', &format!("\n{pad}")));
            out.push('\n');
        }
        Node::Alias(a) => out.push_str(&format!(" *{a}\n")),
        Node::Map(entries) if entries.is_empty() => out.push_str(" {}\n"),
        Node::Seq(items) if items.is_empty() => out.push_str(" []\n"),
        Node::Map(entries) => {
            *anchors += 1;
            // Some maps carry an anchor so that aliases have something to point at.
            if (*anchors).is_multiple_of(3) {
                out.push_str(&format!(" &{}", ["a", "b", "anchor"][*anchors % 9 / 3]));
            }
            out.push('\n');
            for (k, v) in entries {
                out.push_str(&format!("{pad}{k}:"));
                render(v, indent + 2, anchors, out);
            }
        }
        Node::Seq(items) => {
            out.push('\n');
            for v in items {
                out.push_str(&format!("{pad}-"));
                render(v, indent + 2, anchors, out);
            }
        }
    }
}

/// A workload-shaped document: the keys the decoders look for, with random values in places.
fn workload_doc() -> impl Strategy<Value = String> {
    (
        select(SCALARS),
        "[a-z0-9-]{0,12}",
        prop::collection::vec((select(SCALARS), select(SCALARS)), 0..4),
        yaml_node(),
        any::<bool>(),
    )
        .prop_map(|(kind, name, containers, extra, cronjob)| {
            let mut s = format!(
                "# Source: chart/templates/{name}.yaml\napiVersion: apps/v1\nkind: {kind}\nmetadata:\n  name: {name}\n"
            );
            let spec_indent = if cronjob {
                s.push_str("spec:\n  jobTemplate:\n    spec:\n      template:\n        spec:\n");
                "          "
            } else {
                s.push_str("spec:\n  template:\n    spec:\n");
                "      "
            };
            s.push_str(&format!("{spec_indent}containers:\n"));
            for (n, image) in containers {
                s.push_str(&format!(
                    "{spec_indent}- name: {n}\n{spec_indent}  image: {image}\n"
                ));
            }
            s.push_str(&format!("{spec_indent}extra:"));
            render(&extra, spec_indent.len() + 2, &mut 0, &mut s);
            s
        })
}

const SEPARATORS: &[&str] = &[
    "---\n",
    "--- \n",
    "---\r\n",
    "...\n",
    "--- !tag\n",
    "--- |\n",
    "---\t# c\n",
    "--- {kind: Pod}\n",
    "\n# only a comment\n---\n",
    "----\n",
    " ---\n",
];

/// A stream of YAML-ish documents, some workload-shaped, with a few byte edits on top.
fn yaml_stream() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(
            (
                prop_oneof![
                    2 => workload_doc(),
                    1 => yaml_node().prop_map(|n| {
                        let mut s = String::from("root:");
                        render(&n, 2, &mut 0, &mut s);
                        s
                    }),
                ],
                select(SEPARATORS),
            ),
            1..5,
        ),
        prop::collection::vec(edit(), 0..3),
    )
        .prop_map(|(docs, edits)| {
            let mut bytes = Vec::new();
            for (doc, sep) in docs {
                bytes.extend_from_slice(doc.as_bytes());
                bytes.extend_from_slice(sep.as_bytes());
            }
            apply(&mut bytes, &edits);
            String::from_utf8_lossy(&bytes).into_owned()
        })
}

fn fixture_text(file: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}/{file}")).expect("fixture")
}

fn mutated_fixture(files: &'static [&'static str]) -> impl Strategy<Value = String> {
    (select(files), edits()).prop_map(|(file, edits)| {
        let mut bytes = fixture_text(file).into_bytes();
        apply(&mut bytes, &edits);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

// ---------------------------------------------------------------------------------------------
// Image references

fn image_reference() -> impl Strategy<Value = String> {
    let domain = select(
        &[
            "",
            "docker.io/",
            "index.docker.io/",
            "localhost/",
            "localhost:5000/",
            "[::1]:5000/",
            "[fe80::1]/",
            "Foo/",
            "reg.example.com/",
            "reg-1.example.com:443/",
            "a.b:x/",
            "-bad.com/",
            "a..b/",
            ":5000/",
            "[zz]/",
        ][..],
    );
    let component = prop_oneof![
        select(
            &[
                "library", "busybox", "a__b", "a--b", "a.b", "a_b", "x", "A", "é", ".x", "x.",
                "a___b", "0"
            ][..]
        )
        .prop_map(str::to_owned),
        "[a-z0-9._-]{1,12}",
    ];
    let tag = prop_oneof![
        Just(String::new()),
        select(
            &[
                ":latest",
                ":1.0",
                ":",
                ":-x",
                ":.x",
                ":a/b",
                ":_ok",
                ":v1.2.3-rc_4"
            ][..]
        )
        .prop_map(str::to_owned),
        (127..130usize).prop_map(|n| format!(":{}", "t".repeat(n))),
    ];
    let digest = prop_oneof![
        Just(String::new()),
        "[0-9a-f]{64}".prop_map(|h| format!("@sha256:{h}")),
        "[0-9a-fA-F]{60,66}".prop_map(|h| format!("@sha256:{h}")),
        "[0-9a-f]{96}".prop_map(|h| format!("@sha384:{h}")),
        "[0-9a-f]{128}".prop_map(|h| format!("@sha512:{h}")),
        select(
            &[
                "@",
                "@sha256:",
                "@md5:0123456789abcdef0123456789abcdef",
                "@sha256+b64:abc",
                "@:x"
            ][..]
        )
        .prop_map(str::to_owned),
    ];
    prop_oneof![
        6 => (domain, prop::collection::vec(component, 1..5), tag, digest)
            .prop_map(|(d, c, t, g)| format!("{d}{}{t}{g}", c.join("/"))),
        1 => "[a-zA-Z0-9:/@._\\-\\[\\]]{0,300}",
        1 => "[0-9a-f]{64}",
        1 => ".{0,40}",
        1 => (1..300usize).prop_map(|n| format!("reg.io/{}", "a".repeat(n))),
    ]
}

// ---------------------------------------------------------------------------------------------
// Docker configs

fn registry_key() -> impl Strategy<Value = String> {
    prop_oneof![
        select(
            &[
                "https://index.docker.io/v1/",
                "index.docker.io",
                "docker.io",
                "*.example.com",
                "*.*.example.com",
                "registry.example.com:5000",
                "registry.example.com:5000/team",
                "http://quay.io/v2/org",
                "host:abc",
                "[::1]:5000",
                "a.b.example.com/x",
                "",
                "user@host.example.com",
                "h?st.example.com/p?q#f",
            ][..]
        )
        .prop_map(str::to_owned),
        "[a-z*?\\[\\]^\\\\.:/-]{0,40}",
        (1..40usize, 1..4usize)
            .prop_map(|(n, m)| format!("{}b.example.com", "a*".repeat(n).repeat(m))),
    ]
}

fn docker_entry() -> impl Strategy<Value = Value> {
    let auth = prop_oneof![
        ("[a-z]{0,8}", "[ -~]{0,16}").prop_map(|(u, p)| b64(format!("{u}:{p}").as_bytes())),
        "[a-z]{0,8}".prop_map(|u| b64(u.as_bytes())),
        "[ -~]{0,16}",
        ("[a-z]{1,8}", "[a-z]{1,8}").prop_map(|(u, p)| b64(format!("{u}:{p}").as_bytes())
            .trim_end_matches('=')
            .to_owned()),
        Just(b64(&[0xff, 0xfe, b':', 0x80])),
    ];
    let scalar = prop_oneof![
        "[ -~]{0,16}".prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        Just(Value::Null),
        Just(json!([])),
    ];
    (
        prop::option::of(auth),
        prop::option::of("[ -~]{0,12}"),
        prop::option::of("[ -~]{0,24}"),
        prop::option::of(scalar),
    )
        .prop_map(|(auth, user, password, odd)| {
            let mut m = serde_json::Map::new();
            if let Some(a) = auth {
                m.insert("auth".into(), a.into());
            }
            if let Some(u) = user {
                m.insert("username".into(), u.into());
            }
            if let Some(p) = password {
                m.insert("password".into(), p.into());
            }
            if let Some(o) = odd {
                m.insert(
                    ["identitytoken", "email", "auth", "registrytoken"][m.len() % 4].into(),
                    o,
                );
            }
            Value::Object(m)
        })
}

fn docker_config() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::btree_map(registry_key(), docker_entry(), 0..5),
        any::<bool>(),
        prop::collection::vec(edit(), 0..2),
    )
        .prop_map(|(auths, wrapped, edits)| {
            let auths: serde_json::Map<String, Value> = auths.into_iter().collect();
            let v = if wrapped {
                json!({ "auths": auths })
            } else {
                Value::Object(auths)
            };
            let mut bytes = serde_json::to_vec(&v).expect("JSON");
            apply(&mut bytes, &edits);
            bytes
        })
}

// ---------------------------------------------------------------------------------------------
// Config files

const CONFIG_KEYS: &[&str] = &[
    "node_name",
    "containerd_socket",
    "namespaces",
    "sources",
    "from_dir",
    "kubernetes",
    "hold_everything",
    "extra_images",
    "max_concurrent_pulls",
    "pull_timeout",
    "unpin_grace",
    "disk_budget_percent",
    "resync_interval",
    "start_jitter",
    "backoff_initial",
    "backoff_max",
    "use_pull_secrets",
    "credential_verification_policy",
    "credential_verification_allowlist",
    "metrics_addr",
    "admin_addr",
    "extra_image",
];

const CONFIG_VALUES: &[&str] = &[
    "true",
    "false",
    "0",
    "1",
    "64",
    "65",
    "255",
    "256",
    "-1",
    "18446744073709551616",
    "10s",
    "1h 30m",
    "0s",
    "-5s",
    "99999999999999999999999h",
    "584942417356y",
    "1ns",
    "soon",
    "0.0.0.0:9847",
    "127.0.0.1:9848",
    "[::1]:80",
    "127.0.0.1:99999",
    "AlwaysVerify",
    "NeverVerifyAllowlistedImages",
    "Bogus",
    "[bl45p, default]",
    "[\"Bad_NS\", \"\"]",
    "[busybox:1.36, \"*\"]",
    "{pods: false, helm_secrets: true}",
    "{bogus: 1}",
    "/run/containerd/containerd.sock",
    "~",
    "\"\"",
    "[]",
    "{}",
    "&x 5",
    "*x",
    "!!binary aGk=",
];

fn config_text() -> impl Strategy<Value = String> {
    (
        prop::collection::vec((select(CONFIG_KEYS), select(CONFIG_VALUES)), 0..10),
        prop::collection::vec(edit(), 0..2),
    )
        .prop_map(|(entries, edits)| {
            let mut bytes = Vec::new();
            for (k, v) in entries {
                bytes.extend_from_slice(format!("{k}: {v}\n").as_bytes());
            }
            apply(&mut bytes, &edits);
            String::from_utf8_lossy(&bytes).into_owned()
        })
}

// ---------------------------------------------------------------------------------------------
// JSON values, for subtree replacement in real objects

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        select(SCALARS).prop_map(Value::from),
        "[ -~]{0,10}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(select(KEYS).prop_map(str::to_owned), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Replaces the subtree reached by following `path` (indices taken modulo each level's size).
fn replace_at(v: &mut Value, path: &[usize], with: Value) {
    let Some((first, rest)) = path.split_first() else {
        *v = with;
        return;
    };
    let child = match v {
        Value::Object(m) if !m.is_empty() => {
            let key = m.keys().nth(first % m.len()).cloned();
            key.and_then(|k| m.get_mut(&k))
        }
        Value::Array(a) if !a.is_empty() => {
            let n = a.len();
            a.get_mut(first % n)
        }
        _ => None,
    };
    match child {
        Some(c) if !rest.is_empty() || first % 5 != 0 => replace_at(c, rest, with),
        _ => *v = with,
    }
}

fn prefetch_body() -> impl Strategy<Value = Vec<u8>> {
    let field = prop_oneof![
        Just(Value::Null),
        "[a-z0-9/-]{0,20}".prop_map(Value::from),
        prop::collection::vec(image_reference().prop_map(Value::from), 0..4).prop_map(Value::Array),
        any::<i64>().prop_map(Value::from),
        json_value(),
    ];
    prop_oneof![
        4 => prop::collection::btree_map(
            select(&["namespace", "workload", "images", "image", "Namespace"][..]),
            field,
            0..4
        )
        .prop_map(|m| serde_json::to_vec(&m).expect("JSON")),
        1 => any::<Vec<u8>>(),
        1 => (1000..1003usize).prop_map(|n| {
            serde_json::to_vec(&json!({"images": vec!["busybox"; n]})).expect("JSON")
        }),
    ]
}

// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn helm_payloads_with_mutations(which in any::<prop::sample::Index>(), layer in layer(), edits in edits()) {
        let texts = helm_texts();
        let text = mutate_helm_text(&texts[which.index(texts.len())], layer, &edits);
        bounded("helm payload", || fuzz_checks::helm_payload(&text));
        bounded("helm secret", || fuzz_checks::helm_secret(&release_secret(text)));
    }

    #[test]
    fn helm_releases_with_odd_fields(
        which in any::<prop::sample::Index>(),
        path in prop::collection::vec(any::<usize>(), 0..5),
        with in json_value(),
        manifest in yaml_stream(),
        plain_json in any::<bool>(),
    ) {
        let texts = helm_texts();
        let text = &texts[which.index(texts.len())];
        let raw = base64::engine::general_purpose::STANDARD.decode(text).expect("base64");
        let mut release: Value = serde_json::from_slice(&gunzip(&raw)).expect("release JSON");
        release["manifest"] = manifest.into();
        replace_at(&mut release, &path, with);
        let json = release.to_string();
        let payload = if plain_json { b64(json.as_bytes()) } else { b64(&gzip(json.as_bytes())) };
        bounded("helm secret", || fuzz_checks::helm_secret(&release_secret(payload.into_bytes())));
    }

    #[test]
    fn helm_payloads_arbitrary(bytes in any::<Vec<u8>>(), gz in any::<bool>()) {
        let text = if gz { b64(&gzip(&bytes)).into_bytes() } else { bytes };
        bounded("helm payload", || fuzz_checks::helm_payload(&text));
        bounded("helm secret", || fuzz_checks::helm_secret(&release_secret(text)));
    }

    #[test]
    fn manifests_yamlish(text in yaml_stream()) {
        bounded("manifest", || fuzz_checks::manifest(&text));
        bounded("file source", || fuzz_checks::files_yaml(&text));
    }

    #[test]
    fn manifests_arbitrary(text in ".{0,400}") {
        bounded("manifest", || fuzz_checks::manifest(&text));
        bounded("config file", || fuzz_checks::config_file(&text));
        bounded("file source", || fuzz_checks::files_yaml(&text));
    }

    #[test]
    fn controller_revisions_with_odd_fields(
        which in any::<prop::sample::Index>(),
        path in prop::collection::vec(any::<usize>(), 0..7),
        with in json_value(),
    ) {
        let items = fixture_items("apps/controllerrevisions.yaml");
        let mut item = items[which.index(items.len())].clone();
        replace_at(&mut item, &path, with);
        if let Ok(cr) = serde_json::from_value::<ControllerRevision>(item.clone()) {
            bounded("controller revision", || fuzz_checks::controller_revision(&cr));
        }
        bounded("file source", || fuzz_checks::files_value(&item));
    }

    #[test]
    fn image_references(s in image_reference()) {
        fuzz_checks::image_ref(&s);
    }

    #[test]
    fn docker_configs(
        config in docker_config(),
        images in prop::collection::vec(image_reference(), 0..3),
        // Hosts that globs such as `a*a*…b` must be matched against without backtracking.
        long_host in "a{20,80}b?\\.example\\.com/x",
    ) {
        let mut names: Vec<&str> = vec!["docker.io/library/busybox", "a.b.example.com/x/y", &long_host];
        names.extend(images.iter().map(String::as_str));
        for (ty, key) in [
            (SECRET_TYPE_DOCKER_CONFIG_JSON, DOCKER_CONFIG_JSON_KEY),
            (SECRET_TYPE_DOCKERCFG, DOCKERCFG_KEY),
        ] {
            let data = BTreeMap::from([(key.to_owned(), config.clone())]);
            bounded("docker config", || fuzz_checks::dockerconfig(ty, &data, &names));
        }
    }

    #[test]
    fn config_files(text in config_text()) {
        bounded("config file", || fuzz_checks::config_file(&text));
    }

    #[test]
    fn prefetch_requests(body in prefetch_body()) {
        bounded("prefetch request", || fuzz_checks::prefetch_request(&body));
    }
}

proptest! {
    // The fixture files decode several releases each: fewer cases keep the file fast in debug.
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn fixture_files_with_mutations(text in mutated_fixture(&[
        "apps/controllerrevisions.yaml",
        "apps/workloads.yaml",
        "core/pods.yaml",
        "core/nodes.yaml",
        "core/other.yaml",
        "helm/release-configmaps.yaml",
        "helm/release-secrets.yaml",
    ])) {
        bounded("file source", || fuzz_checks::files_yaml(&text));
        bounded("manifest", || fuzz_checks::manifest(&text));
    }
}

/// A manifest shaped like a bomb, with random sizes: tiny nodes, nesting, anchors aliased in
/// levels, an aliased large scalar, many documents; optionally beside a good workload.
fn bomb_manifest() -> impl Strategy<Value = String> {
    let shape = prop_oneof![
        (1usize..400_000).prop_map(|n| format!("x: [{}[]]\n", "[],".repeat(n / 3))),
        (1usize..2_000).prop_map(|n| format!("{}{}\n", "[".repeat(n), "]".repeat(n))),
        (1usize..200).prop_map(|n| {
            let mut s: String = (0..n)
                .map(|i| format!("{}k{i}:\n", "  ".repeat(i)))
                .collect();
            s += &format!("{}v: 1\n", "  ".repeat(n));
            s
        }),
        (2usize..12, 2usize..12).prop_map(|(levels, width)| {
            let mut s = format!("a0: &a0 [{}]\n", vec!["lol"; width].join(", "));
            for i in 1..levels {
                s += &format!(
                    "a{i}: &a{i} [{}]\n",
                    vec![format!("*a{}", i - 1); width].join(", ")
                );
            }
            s
        }),
        (1usize..300_000, 1usize..2_000).prop_map(|(size, count)| {
            format!(
                "a: &a {}\nb: [{}]\n",
                "x".repeat(size),
                vec!["*a"; count].join(", ")
            )
        }),
        (1usize..30, 1usize..40_000)
            .prop_map(|(docs, n)| { format!("---\nx: [{}[]]\n", "[],".repeat(n)).repeat(docs) }),
    ];
    (shape, any::<bool>()).prop_map(|(bomb, with_good)| {
        if with_good {
            format!(
                "---\n{bomb}---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: ok\nspec:\n  template:\n    spec:\n      containers: [{{name: c, image: r.example/ok:1}}]\n"
            )
        } else {
            bomb
        }
    })
}

proptest! {
    // Inputs of up to a few megabytes once inflated: few cases.
    #![proptest_config(ProptestConfig { cases: 16, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any bomb-shaped release decodes within the budgets and fast: either it is within them
    /// (and its good workload is read) or the release is one over_budget problem.
    #[test]
    fn bomb_shaped_releases_stay_within_budget(manifest in bomb_manifest()) {
        let release = json!({"name": "ioc", "version": 3, "info": {"status": "deployed"}, "manifest": manifest});
        let payload = b64(&gzip(release.to_string().as_bytes()));
        // One decode (the full `helm_secret` check decodes four times): these inputs are large.
        let d = bounded("bomb release", || helm::decode_secret(&release_secret(payload.into_bytes())));
        prop_assert!(d.facts.len() <= manifest::RELEASE_MAX_WORKLOADS);
        let over = d.problems.iter().any(|p| p.kind == rollcache::history::ProblemKind::OverBudget);
        if over {
            prop_assert!(d.facts.is_empty() && d.problems.len() == 1, "{:?}", d.problems);
        }
        if !over && manifest.contains("name: ok") {
            prop_assert!(d.facts.iter().any(|f| f.workload.name == "ok"), "{:?}", d.problems);
        }
        for doc in manifest::split(&manifest) {
            bounded("bounded parse", || fuzz_checks::within_budget(doc.text));
        }
    }
}

/// The cargo-fuzz seeds (bombs among them) pass the same checks in every test run.
#[test]
fn fuzz_seeds_replay_cleanly() {
    let seeds = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds");
    let mut replayed = 0;
    for target in fuzz_checks::TARGETS {
        let Ok(dir) = std::fs::read_dir(format!("{seeds}/{target}")) else {
            continue;
        };
        for entry in dir {
            let path = entry.expect("seed").path();
            let data = std::fs::read(&path).expect("seed file");
            bounded(&path.display().to_string(), || {
                fuzz_checks::replay(target, &data)
            });
            replayed += 1;
        }
    }
    assert!(replayed > 20, "{replayed} seeds");
}

//! The deployment objects as the real tools render them: `kubectl kustomize` of `daemonset/` and
//! `helm template` of `charts/rollcache`, both the versions `scripts/install-deps.sh` put in the
//! cache dir; every object checked against its Kubernetes kind.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, PodSpec, Service, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use rollcache::config::{Config, FileConfig};
use rollcache_testbed::deps::{KubeClient, kube_client};
use serde_json::Value;
use std::collections::BTreeMap;

/// The namespace of daemonset/ and the one the chart is rendered into.
pub const NAMESPACE: &str = "rollcache-system";

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn daemonset_dir() -> PathBuf {
    root().join("daemonset")
}

pub fn chart_dir() -> PathBuf {
    root().join("charts/rollcache")
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

pub fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {v}"))
}

pub fn arr<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The binary from the cache; missing, the test fails and says how to install it (never skips).
fn client(which: KubeClient) -> PathBuf {
    kube_client(which).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs a client to completion; its stdout, or a failure naming the command and its stderr.
fn run(which: KubeClient, args: &[&str]) -> String {
    let bin = client(which);
    let out = Command::new(&bin)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} {} failed ({}):\n{stderr}",
        bin.display(),
        args.join(" "),
        out.status
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn documents(text: &str, what: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text)
        .unwrap_or_else(|e| panic!("{what} printed invalid YAML: {e}"));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// `kubectl kustomize daemonset/DIR`.
pub fn kustomize(dir: &str) -> Vec<Value> {
    let path = daemonset_dir().join(dir);
    let text = run(KubeClient::Kubectl, &["kustomize", &path.to_string_lossy()]);
    documents(&text, &format!("kubectl kustomize {dir}"))
}

/// `helm template rollcache charts/rollcache -n rollcache-system --include-crds` with extra
/// arguments (`-f`, `--set`): the CRD in `crds/` (which `helm install` applies and `helm
/// template` leaves out unless asked) is compared with daemonset/'s like every other object.
pub fn helm_template(args: &[&str]) -> Vec<Value> {
    let chart = chart_dir();
    let mut all = vec![
        "template",
        "rollcache",
        chart.to_str().expect("a UTF-8 path"),
        "--namespace",
        NAMESPACE,
        "--include-crds",
    ];
    all.extend_from_slice(args);
    let text = run(KubeClient::Helm, &all);
    documents(&text, &format!("helm template {}", args.join(" ")))
}

/// `helm template` as above that must fail; its stderr.
pub fn helm_template_error(args: &[&str]) -> String {
    let chart = chart_dir();
    let mut all = vec![
        "template",
        "rollcache",
        chart.to_str().expect("a UTF-8 path"),
    ];
    all.extend_from_slice(args);
    let bin = client(KubeClient::Helm);
    let out = Command::new(&bin)
        .args(&all)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    assert!(!out.status.success(), "helm {} rendered", all.join(" "));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `helm lint --strict` with extra arguments; its report.
pub fn helm_lint(args: &[&str]) -> String {
    let chart = chart_dir();
    let mut all = vec!["lint", "--strict", chart.to_str().expect("a UTF-8 path")];
    all.extend_from_slice(args);
    run(KubeClient::Helm, &all)
}

/// The variants daemonset/ ships, each with its kustomize directories and the chart's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Base,
    NoSecrets,
    K3s,
    /// The base with daemonset/monitoring/ applied next to it.
    Monitoring,
    /// overlays/fleet: the indexer Deployment and agents reading its inventory.
    Fleet,
    /// overlays/fleet with daemonset/monitoring/ and daemonset/monitoring/fleet/ next to it.
    FleetMonitoring,
}

impl Variant {
    pub const ALL: [Variant; 6] = [
        Variant::Base,
        Variant::NoSecrets,
        Variant::K3s,
        Variant::Monitoring,
        Variant::Fleet,
        Variant::FleetMonitoring,
    ];

    pub fn kustomize_dirs(self) -> &'static [&'static str] {
        match self {
            Variant::Base => &["."],
            Variant::NoSecrets => &["overlays/no-secrets"],
            Variant::K3s => &["overlays/k3s"],
            Variant::Monitoring => &[".", "monitoring"],
            Variant::Fleet => &["overlays/fleet"],
            Variant::FleetMonitoring => &["overlays/fleet", "monitoring", "monitoring/fleet"],
        }
    }

    /// The chart's values for this variant: its `ci/` file, and the Namespace object, which
    /// daemonset/ always renders and the chart only on request (`helm install --create-namespace`
    /// creates it otherwise).
    pub fn helm_args(self) -> Vec<String> {
        let file = match self {
            Variant::Base => None,
            Variant::NoSecrets => Some("no-secrets"),
            Variant::K3s => Some("k3s"),
            Variant::Monitoring => Some("monitoring"),
            Variant::Fleet => Some("fleet"),
            Variant::FleetMonitoring => Some("fleet-monitoring"),
        };
        let mut args = vec!["--set".to_owned(), "namespace.create=true".to_owned()];
        if let Some(f) = file {
            let path = chart_dir().join(format!("ci/{f}-values.yaml"));
            args.extend(["-f".to_owned(), path.display().to_string()]);
        }
        args
    }

    pub fn kustomized(self) -> Rendered {
        let objects = self.kustomize_dirs().iter().flat_map(|d| kustomize(d));
        Rendered::checked(&format!("kustomize {self:?}"), objects.collect())
    }

    pub fn chart(self) -> Rendered {
        self.chart_with(&[])
    }

    /// The chart for this variant, with more values on top.
    pub fn chart_with(self, more: &[&str]) -> Rendered {
        let mut args = self.helm_args();
        args.extend(more.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Rendered::checked(&format!("chart {self:?} {more:?}"), helm_template(&args))
    }
}

/// Deserialise into the k8s-openapi type, then serialise back: k8s-openapi ignores unknown fields,
/// so anything lost on the way (a misspelt or misplaced field) is reported too.
pub fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(o: &Value) -> T {
    let what = format!("{} {}", s(o, "/kind"), s(o, "/metadata/name"));
    let t: T = serde_json::from_value(o.clone())
        .unwrap_or_else(|e| panic!("{what} is not a valid object of its kind: {e}"));
    let back = serde_json::to_value(&t).expect("serialise");
    let mut lost = Vec::new();
    lost_fields(o, &back, String::new(), &mut lost);
    assert!(
        lost.is_empty(),
        "{what}: fields unknown to the kind (misspelt or misplaced?): {lost:?}"
    );
    t
}

fn lost_fields(orig: &Value, back: &Value, at: String, lost: &mut Vec<String>) {
    match (orig, back) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                match b.get(k) {
                    Some(w) => lost_fields(v, w, format!("{at}/{k}"), lost),
                    None => lost.push(format!("{at}/{k}")),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                lost_fields(v, w, format!("{at}/{i}"), lost);
            }
        }
        (a, b) if a == b => {}
        // Numbers may come back as a different JSON number type (e.g. u64 vs i64).
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => {}
        _ => lost.push(format!("{at} (changed)")),
    }
}

/// `kind/namespace/name`, unique in one render.
pub fn id(o: &Value) -> String {
    let ns = o["metadata"]["namespace"].as_str().unwrap_or("");
    format!("{}/{ns}/{}", s(o, "/kind"), s(o, "/metadata/name"))
}

/// One render, every object checked against its kind.
pub struct Rendered {
    pub objects: Vec<Value>,
}

impl Rendered {
    pub fn checked(what: &str, objects: Vec<Value>) -> Rendered {
        for o in &objects {
            match s(o, "/kind") {
                "Namespace" => drop(typed::<Namespace>(o)),
                "ServiceAccount" => drop(typed::<ServiceAccount>(o)),
                "ClusterRole" => drop(typed::<ClusterRole>(o)),
                "ClusterRoleBinding" => drop(typed::<ClusterRoleBinding>(o)),
                "Role" => drop(typed::<Role>(o)),
                "RoleBinding" => drop(typed::<RoleBinding>(o)),
                "ConfigMap" => drop(typed::<ConfigMap>(o)),
                "DaemonSet" => drop(typed::<DaemonSet>(o)),
                "Deployment" => drop(typed::<Deployment>(o)),
                "PodDisruptionBudget" => drop(typed::<
                    k8s_openapi::api::policy::v1::PodDisruptionBudget,
                >(o)),
                "Service" => drop(typed::<Service>(o)),
                "NetworkPolicy" => {
                    drop(typed::<k8s_openapi::api::networking::v1::NetworkPolicy>(o))
                }
                "CustomResourceDefinition" => drop(typed::<CustomResourceDefinition>(o)),
                "PodMonitor" | "PrometheusRule" => {
                    assert_eq!(s(o, "/apiVersion"), "monitoring.coreos.com/v1")
                }
                other => panic!("{what}: kind {other} has no check in tests/render"),
            }
        }
        let mut ids = BTreeSet::new();
        for o in &objects {
            assert!(ids.insert(id(o)), "{what}: {} appears twice", id(o));
        }
        Rendered { objects }
    }

    pub fn all(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    pub fn one<T: serde::de::DeserializeOwned + serde::Serialize>(&self, kind: &str) -> T {
        let all = self.all(kind);
        assert_eq!(all.len(), 1, "exactly one {kind} expected");
        typed(all[0])
    }

    pub fn named<T: serde::de::DeserializeOwned + serde::Serialize>(
        &self,
        kind: &str,
        name: &str,
    ) -> T {
        let o = self
            .objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} named {name}"));
        typed(o)
    }

    pub fn daemonset(&self) -> DaemonSet {
        self.one("DaemonSet")
    }

    pub fn deployment(&self, name: &str) -> Deployment {
        self.named("Deployment", name)
    }

    /// The config file the DaemonSet reads: from its `--config` argument, through the volume
    /// mounted at that directory, to the ConfigMap key.
    pub fn config_text(&self) -> String {
        let ds = self.daemonset();
        let pod = pod_spec(&ds);
        let c = container(&ds);
        let args = c.args.clone().unwrap_or_default();
        let i = args
            .iter()
            .position(|a| a == "--config")
            .expect("the DaemonSet passes --config");
        let file = Path::new(&args[i + 1]);
        let (dir, key) = (file.parent().expect("a directory"), file.file_name());
        let mount = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| Path::new(&m.mount_path) == dir)
            .expect("the config file's directory is a volume mount");
        assert!(
            mount.sub_path.is_none() && mount.sub_path_expr.is_none(),
            "subPath mounts never see ConfigMap updates"
        );
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
            .expect("the mount's volume");
        let cm_name = &volume.config_map.as_ref().expect("a configMap volume").name;
        let cm: ConfigMap = self.named("ConfigMap", cm_name);
        let key = key.and_then(|k| k.to_str()).expect("a file name");
        cm.data
            .and_then(|mut d| d.remove(key))
            .unwrap_or_else(|| panic!("ConfigMap {cm_name} has no key {key}"))
    }

    pub fn config(&self) -> Config {
        let text = self.config_text();
        let file = FileConfig::parse(&text).unwrap_or_else(|e| panic!("config.yaml: {e}"));
        let c = Config::from_file(&file).unwrap_or_else(|e| panic!("config.yaml: {e}"));
        c.validate().unwrap_or_else(|e| panic!("config.yaml: {e}"));
        c
    }
}

pub fn pod_spec(ds: &DaemonSet) -> &PodSpec {
    ds.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("a pod spec")
}

/// The labels of the DaemonSet's pods (what Services and monitors select).
pub fn pod_labels(ds: &DaemonSet) -> BTreeMap<String, String> {
    ds.spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}

pub fn container(ds: &DaemonSet) -> &Container {
    let cs = &pod_spec(ds).containers;
    assert_eq!(cs.len(), 1, "one container");
    &cs[0]
}

/// `args` (the indexer container's, from `index` on) read by `rollcache index`'s own parser.
pub fn index_args(args: &[&str]) -> rollcache::commands::index::IndexArgs {
    use clap::{Args, FromArgMatches};
    let cmd = rollcache::commands::index::IndexArgs::augment_args(clap::Command::new("index"));
    let matches = cmd
        .try_get_matches_from(args)
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    rollcache::commands::index::IndexArgs::from_arg_matches(&matches).expect("index args")
}

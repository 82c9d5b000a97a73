//! The manifests in `daemonset/` parse, are valid for their kinds, and match what the binary expects:
//! config file, ports, probes, socket, security context, least-privilege RBAC, the no-secrets overlay,
//! and alert expressions that only use metrics rollcache exports. No cluster or kubectl needed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use rollcache::config::{Config, FileConfig};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("daemonset")
}

fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn kustomization(dir: &Path) -> Value {
    yaml_docs(&dir.join("kustomization.yaml")).remove(0)
}

/// The objects a kustomization lists (resources, recursively through directories) plus the
/// ConfigMaps its configMapGenerator makes, before patches.
fn objects(dir: &Path) -> Vec<Value> {
    let k = kustomization(dir);
    let mut out = Vec::new();
    for r in k["resources"].as_array().into_iter().flatten() {
        let p = dir.join(r.as_str().unwrap());
        if p.is_dir() {
            out.extend(objects(&p));
        } else {
            out.extend(yaml_docs(&p));
        }
    }
    for g in k["configMapGenerator"].as_array().into_iter().flatten() {
        let mut data = serde_json::Map::new();
        for f in g["files"].as_array().unwrap() {
            let f = f.as_str().unwrap();
            let (key, file) = f.split_once('=').unwrap_or((f, f));
            let key = Path::new(key).file_name().unwrap().to_str().unwrap();
            data.insert(
                key.into(),
                std::fs::read_to_string(dir.join(file)).unwrap().into(),
            );
        }
        out.push(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": g["name"], "namespace": k["namespace"]},
            "data": data,
        }));
    }
    out
}

fn one<'a>(objs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<_> = objs.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "exactly one {kind}");
    found[0]
}

fn typed<T: serde::de::DeserializeOwned>(v: &Value) -> T {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{}: {e}", v["kind"]))
}

#[test]
fn base_objects_are_valid_and_consistent() {
    let objs = objects(&root());
    let ns: Namespace = typed(one(&objs, "Namespace"));
    let ns = ns.metadata.name.unwrap();
    let sa: ServiceAccount = typed(one(&objs, "ServiceAccount"));
    let role: ClusterRole = typed(one(&objs, "ClusterRole"));
    let binding: ClusterRoleBinding = typed(one(&objs, "ClusterRoleBinding"));
    let ds: DaemonSet = typed(one(&objs, "DaemonSet"));
    let svc: Service = typed(one(&objs, "Service"));
    let cm = one(&objs, "ConfigMap");

    // RBAC: read-only, bound to the DaemonSet's service account.
    for rule in role.rules.as_ref().unwrap() {
        let verbs: BTreeSet<&str> = rule.verbs.iter().map(String::as_str).collect();
        assert_eq!(verbs, BTreeSet::from(["get", "list", "watch"]), "{rule:?}");
    }
    let resources: BTreeSet<String> = role
        .rules
        .unwrap()
        .iter()
        .flat_map(|r| r.resources.clone().unwrap_or_default())
        .collect();
    for r in [
        "replicasets",
        "controllerrevisions",
        "pods",
        "nodes",
        "secrets",
        "configmaps",
        "serviceaccounts",
    ] {
        assert!(resources.contains(r), "{r} missing from the ClusterRole");
    }
    let subject = &binding.subjects.unwrap()[0];
    let spec = ds.spec.unwrap();
    let pod = spec.template.spec.unwrap();
    assert_eq!(
        pod.service_account_name.as_deref(),
        sa.metadata.name.as_deref()
    );
    assert_eq!(subject.name, sa.metadata.name.clone().unwrap());
    assert_eq!(subject.namespace.as_deref(), Some(ns.as_str()));
    assert_eq!(sa.metadata.namespace.as_deref(), Some(ns.as_str()));
    assert_eq!(binding.role_ref.name, role.metadata.name.unwrap());

    // Scheduling: every node, node-critical.
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    let tol = pod.tolerations.unwrap();
    assert!(
        tol.iter()
            .any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none())
    );

    // The container: config file, NODE_NAME, ports and probes the binary serves.
    let c = &pod.containers[0];
    let args = c.args.clone().unwrap();
    assert_eq!(args[0], "run");
    let cfg_path = &args[args.iter().position(|a| a == "--config").unwrap() + 1];
    let env = c.env.clone().unwrap();
    let node = env.iter().find(|e| e.name == "NODE_NAME").unwrap();
    assert_eq!(
        node.value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "spec.nodeName"
    );
    let defaults = Config::default();
    let port = &c.ports.as_ref().unwrap()[0];
    assert_eq!(port.container_port, i32::from(defaults.metrics_addr.port()));
    let port_name = port.name.clone().unwrap();
    for (probe, path) in [
        (&c.startup_probe, "/healthz"),
        (&c.liveness_probe, "/healthz"),
        (&c.readiness_probe, "/readyz"),
    ] {
        let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(
            serde_json::to_value(&get.port).unwrap(),
            Value::from(port_name.clone())
        );
    }
    let svc_port = &svc.spec.unwrap().ports.unwrap()[0];
    assert_eq!(svc_port.port, port.container_port);

    // Memory request = limit.
    let res = c.resources.clone().unwrap();
    assert_eq!(
        res.requests.unwrap()["memory"],
        res.limits.unwrap()["memory"]
    );

    // Security context.
    let sc = c.security_context.clone().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.capabilities.unwrap().drop.unwrap(), vec!["ALL"]);
    assert_ne!(sc.privileged, Some(true));

    // Volumes: the socket as a Socket hostPath at the binary's default path; the config directory
    // (not subPath) from the generated ConfigMap, holding the file --config names.
    let volumes = pod.volumes.unwrap();
    let mounts = c.volume_mounts.clone().unwrap();
    let sock_mount = mounts
        .iter()
        .find(|m| Path::new(&m.mount_path) == defaults.containerd_socket)
        .expect("socket mounted at the default socket path");
    let sock_vol = volumes.iter().find(|v| v.name == sock_mount.name).unwrap();
    assert_eq!(
        sock_vol.host_path.as_ref().unwrap().type_.as_deref(),
        Some("Socket")
    );
    let cfg_mount = mounts
        .iter()
        .find(|m| Path::new(cfg_path).starts_with(&m.mount_path))
        .expect("config file's directory is mounted");
    assert!(cfg_mount.sub_path.is_none(), "subPath mounts never update");
    let cfg_vol = volumes.iter().find(|v| v.name == cfg_mount.name).unwrap();
    assert_eq!(
        cfg_vol.config_map.as_ref().unwrap().name,
        cm["metadata"]["name"].as_str().unwrap()
    );
    let file = Path::new(cfg_path).file_name().unwrap().to_str().unwrap();
    let text = cm["data"][file]
        .as_str()
        .expect("ConfigMap holds the config file");
    let parsed = FileConfig::parse(text).unwrap();
    Config::from_file(&parsed).unwrap().validate().unwrap();
}

fn option_names(v: &Value, prefix: &str, out: &mut Vec<String>) {
    for (k, v) in v.as_object().unwrap() {
        match v {
            Value::Object(_) => option_names(v, &format!("{prefix}{k}."), out),
            _ => out.push(format!("{prefix}{k}")),
        }
    }
}

#[test]
fn configmap_documents_every_option() {
    let text = std::fs::read_to_string(root().join("base/config.yaml")).unwrap();
    let mut names = Vec::new();
    option_names(
        &serde_json::to_value(Config::default()).unwrap(),
        "",
        &mut names,
    );
    for name in names {
        let leaf = name.rsplit('.').next().unwrap();
        assert!(
            text.lines().any(|l| l
                .trim_start_matches(['#', ' '])
                .starts_with(&format!("{leaf}:"))),
            "config.yaml does not mention `{name}`"
        );
    }
    // Uncommenting every option gives a valid config equal to the defaults.
    let uncommented: String = text
        .lines()
        .filter(|l| {
            // `# key: value` or `#   key: value` (nested), never prose.
            let rest = l.strip_prefix("# ").unwrap_or("");
            let key = rest.trim_start().split(':').next().unwrap_or("");
            rest.contains(':')
                && !key.is_empty()
                && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        })
        .map(|l| {
            let l = &l[2..];
            // Drop trailing comments of uncommented lines.
            l.split("  #").next().unwrap().to_string() + "\n"
        })
        .collect();
    let file = FileConfig::parse(&uncommented).unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
    let cfg = Config::from_file(&file).unwrap();
    let want = Config {
        node_name: cfg.node_name.clone(),
        from_dir: cfg.from_dir.clone(),
        ..Config::default()
    };
    assert_eq!(
        cfg, want,
        "the commented defaults are the binary's defaults"
    );
}

#[test]
fn no_secrets_overlay_removes_secret_access_and_turns_both_uses_off() {
    let base = objects(&root().join("base"));
    let role = one(&base, "ClusterRole");
    let overlay_dir = root().join("overlays/no-secrets");
    let k = kustomization(&overlay_dir);
    let patch = k["patches"][0]["patch"].as_str().unwrap();
    let ops: Vec<Value> = serde_saphyr::from_str(patch).unwrap();
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0]["op"], "remove");
    let index: usize = ops[0]["path"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let removed = &role["rules"][index];
    assert_eq!(
        removed["resources"],
        serde_json::json!(["secrets"]),
        "the patch removes exactly the Secret rule"
    );
    let others: Vec<&Value> = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != index)
        .map(|(_, r)| r)
        .collect();
    assert!(others.iter().all(|r| {
        !r["resources"]
            .as_array()
            .unwrap()
            .contains(&"secrets".into())
    }));
    let overlay = objects(&overlay_dir);
    let cm = overlay
        .iter()
        .rev()
        .find(|o| o["kind"] == "ConfigMap")
        .unwrap();
    assert_eq!(k["configMapGenerator"][0]["behavior"], "replace");
    let cfg =
        Config::from_file(&FileConfig::parse(cm["data"]["config.yaml"].as_str().unwrap()).unwrap())
            .unwrap();
    assert!(!cfg.sources.helm_secrets && !cfg.use_pull_secrets);
    assert!(cfg.sources.helm_configmaps, "the rest keeps its defaults");
}

/// Metric names rollcache exports, with the suffixes Prometheus derives from histograms.
fn exported_metrics() -> BTreeSet<String> {
    use rollcache::metrics::{Metrics, ProblemLabel, ReadinessLabel, SourceLabel};
    let m = Metrics::new();
    // Families only show once they have a series: give each one.
    let source = SourceLabel { source: "x".into() };
    m.revisions
        .get_or_create(&ReadinessLabel {
            readiness: "x".into(),
        })
        .set(0);
    for f in [
        &m.pulls,
        &m.pins,
        &m.unpins,
        &m.reconciles,
        &m.config_reloads,
        &m.prefetch_requests,
    ] {
        Metrics::result(f, "x");
    }
    m.source_synced.get_or_create(&source).set(0);
    m.source_errors.get_or_create(&source).inc();
    m.decode_problems
        .get_or_create(&ProblemLabel {
            source: "x".into(),
            kind: "x".into(),
        })
        .inc();
    let text = m.encode();
    let mut names = BTreeSet::new();
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut parts = line.split_whitespace().skip(2);
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for s in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{s}"));
                }
            }
            _ => {
                names.insert(name.to_string());
            }
        }
    }
    names
}

#[test]
fn monitoring_uses_only_exported_metrics() {
    let exported = exported_metrics();
    let dir = root().join("monitoring");
    let objs = objects(&dir);
    let pm = one(&objs, "PodMonitor");
    assert_eq!(pm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["port"], "metrics");
    let rule = one(&objs, "PrometheusRule");
    let mut exprs: Vec<String> = Vec::new();
    for g in rule["spec"]["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            assert!(r["alert"].is_string() && r["for"].is_string(), "{r}");
            assert!(
                r["annotations"]["summary"].is_string()
                    && r["annotations"]["description"].is_string()
            );
            exprs.push(r["expr"].as_str().unwrap().to_string());
        }
    }
    assert!(exprs.len() >= 4);
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("grafana-dashboard.json")).unwrap())
            .unwrap();
    for p in dashboard["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    let mut used = 0;
    for e in &exprs {
        for word in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("rollcache_") {
                used += 1;
                assert!(
                    exported.contains(word),
                    "`{word}` in `{e}` is not exported; exported: {exported:?}"
                );
            }
        }
    }
    assert!(used > 10);
}

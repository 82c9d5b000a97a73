//! The deployment manifests in daemonset/ and the Helm chart in charts/rollcache are valid objects
//! of their kinds and agree with the binary: config file, listener ports, probes, socket mount,
//! security context, RBAC, variants, and the metric names used by alerts and the dashboard. Both
//! are rendered by the real `kubectl kustomize` and `helm template` (tests/render); tests/chart.rs
//! holds the two renders to the same objects.

mod render;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use rollcache::config::{
    Config, ConfigArgs, CredentialVerificationPolicy, FileConfig, HistoryFrom, SourcesConfig,
};
use rollcache::history::ProblemKind;
use rollcache::metrics::{
    EventReason, EventResult, Metrics, OpResult, PrefetchResult, ReconcileResult, ReloadResult,
    Source,
};
use rollcache::model::SourceKind;
use rollcache::report::Readiness;
use serde_json::{Value, json};

use render::{
    Rendered, Variant, arr, container, daemonset_dir, id, kustomize, pod_labels, pod_spec, read, s,
    typed,
};

/// Readiness values the report puts on `rollcache_revisions{readiness}`.
const READINESS: &[&str] = &[
    "offline_safe",
    "pulling",
    "missing",
    "failed",
    "disk_budget",
    "needs_registry",
    "cannot_pin",
    "stale",
];
/// Readiness values that mean "a rollback would need the registry" and are not permanent by design.
const NOT_OFFLINE_SAFE: &[&str] = &["missing", "failed", "disk_budget", "cannot_pin", "stale"];

/// The kustomize base (what the config checks read; tests/chart.rs holds the chart's to it).
fn base() -> Rendered {
    Rendered::checked("kustomize base", kustomize("base"))
}

/// A variant as daemonset/ renders it and as the chart does: every check runs on both.
fn both(v: Variant) -> [Rendered; 2] {
    [v.kustomized(), v.chart()]
}

impl Rendered {
    fn clusterrole_resources(&self) -> BTreeSet<String> {
        let role: ClusterRole = self.one("ClusterRole");
        role.rules
            .iter()
            .flatten()
            .flat_map(|r| r.resources.clone().unwrap_or_default())
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Config options and their documentation.

/// Every option of the config file, from the serialised `Config` (nested: `sources.x`).
fn config_options() -> Vec<String> {
    let v = serde_json::to_value(Config::default()).expect("Config serialises");
    let mut out = Vec::new();
    for (k, inner) in v.as_object().expect("an object") {
        out.push(k.clone());
        if k == "sources" {
            for sub in inner.as_object().expect("sources is an object").keys() {
                out.push(format!("sources.{sub}"));
            }
        }
    }
    out
}

/// `key` as a line of the file, set or commented out (`# key: value`), with its indentation.
fn option_line(text: &str, key: &str) -> Option<usize> {
    let leaf = key.rsplit('.').next().unwrap_or(key);
    let indent = if key.contains('.') { "  " } else { "" };
    text.lines().position(|l| {
        let l = l.strip_prefix("# ").unwrap_or(l);
        l.strip_prefix(indent)
            .and_then(|l| l.strip_prefix(leaf))
            .is_some_and(|rest| rest.starts_with(':'))
    })
}

/// The comment lines right above a top-level option.
fn option_comment(text: &str, key: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let at = option_line(text, key).unwrap_or_else(|| panic!("option `{key}` missing"));
    let mut start = at;
    while start > 0 && lines[start - 1].starts_with('#') {
        start -= 1;
    }
    lines[start..at].join("\n")
}

/// The file with commented-out options (`# key: value`) switched on.
fn uncomment_options(text: &str) -> String {
    let keys = config_options();
    text.lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if keys.iter().any(|k| rest.starts_with(&format!("{k}:"))) => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A config in which every field differs from the default. No `..Default::default()`: a new
/// field must be added here, and then to the ConfigMap.
fn every_field_changed() -> Config {
    Config {
        node_name: Some("n".into()),
        containerd_socket: "/other.sock".into(),
        namespaces: vec!["a".into()],
        sources: SourcesConfig {
            pods: false,
            ..SourcesConfig::default()
        },
        from_dir: Some("/d".into()),
        kubernetes: false,
        history_from: HistoryFrom::Inventory,
        inventory_namespace: Some("x".into()),
        hold_everything: true,
        extra_images: vec!["x".into()],
        max_concurrent_pulls: 9,
        pull_timeout: Duration::from_secs(9),
        unpin_grace: Duration::from_secs(9),
        disk_budget_percent: 9,
        resync_interval: Duration::from_secs(9),
        start_jitter: Duration::from_secs(9),
        backoff_initial: Duration::from_secs(9),
        backoff_max: Duration::from_secs(99),
        use_pull_secrets: false,
        credential_verification_policy: CredentialVerificationPolicy::AlwaysVerify,
        credential_verification_allowlist: vec!["x".into()],
        node_events: false,
        metrics_addr: "0.0.0.0:1".parse().expect("literal"),
        admin_addr: "127.0.0.1:2".parse().expect("literal"),
    }
}

#[test]
fn every_field_changed_really_changes_every_field() {
    let a = serde_json::to_value(Config::default()).expect("serialise");
    let b = serde_json::to_value(every_field_changed()).expect("serialise");
    for key in config_options().iter().filter(|k| !k.contains('.')) {
        assert_ne!(
            a[key], b[key],
            "every_field_changed() leaves `{key}` at its default"
        );
    }
}

#[test]
fn configmap_documents_every_option_with_its_default() {
    let base = base();
    let text = base.config_text();
    for key in config_options() {
        assert!(
            option_line(&text, &key).is_some(),
            "option `{key}` is not in the ConfigMap's config.yaml (set or as `# {key}: ...`)"
        );
    }
    // The values set are the defaults, so the file documents them truthfully.
    assert_eq!(base.config(), Config::default());

    // Commented-out options are real options too: switched on, FileConfig (which rejects unknown
    // keys) accepts them and the result validates.
    let all_on = uncomment_options(&text);
    let file = FileConfig::parse(&all_on).unwrap_or_else(|e| panic!("uncommented config: {e}"));
    let c = Config::from_file(&file).expect("uncommented config resolves");
    c.validate().expect("uncommented config validates");
    let on = serde_json::to_value(&c).expect("serialise");
    for key in config_options().iter().filter(|k| !k.contains('.')) {
        assert!(
            !on[key].is_null(),
            "`{key}` is neither set nor commented out as an option"
        );
    }
}

#[test]
fn configmap_says_which_options_reload_and_which_need_a_restart() {
    let text = base().config_text();
    let restart: BTreeSet<&str> = Config::default()
        .restart_only_changes(&every_field_changed())
        .into_iter()
        .collect();
    assert!(restart.contains("containerd_socket"), "{restart:?}");
    for key in config_options().iter().filter(|k| !k.contains('.')) {
        let comment = option_comment(&text, key);
        let (says_restart, says_reload) = (
            comment.contains("Restart."),
            comment.contains("Reloadable."),
        );
        assert!(
            says_restart != says_reload,
            "`{key}` must say exactly one of `Restart.` or `Reloadable.`:\n{comment}"
        );
        assert_eq!(
            says_restart,
            restart.contains(key.as_str()),
            "`{key}`: the comment disagrees with Config::restart_only_changes:\n{comment}"
        );
    }
}

#[test]
fn configmap_names_the_real_flags_and_env_variables() {
    use clap::Args;
    let text = base().config_text();
    let cmd = ConfigArgs::augment_args(clap::Command::new("rollcache"));
    let mut documented = BTreeSet::new();
    for key in config_options().iter().filter(|k| !k.contains('.')) {
        let comment = option_comment(&text, key);
        let words: Vec<&str> = comment
            .split(|c: char| c.is_whitespace() || c == '#' || c == '/' || c == ',')
            .map(|w| w.trim_matches(|c: char| c == '.' || c == '`'))
            .filter(|w| !w.is_empty())
            .collect();
        for (i, w) in words.iter().enumerate() {
            let Some(long) = w.strip_prefix("--").filter(|l| !l.is_empty()) else {
                continue;
            };
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_long() == Some(long))
                .unwrap_or_else(|| panic!("`{key}` names flag --{long}, which does not exist"));
            let id = arg.get_id().as_str();
            let base_key = key.strip_prefix("use_").unwrap_or(key);
            assert!(
                id == key || id == format!("no_{base_key}"),
                "`{key}` names --{long}, which sets `{id}`"
            );
            let env = arg
                .get_env()
                .and_then(|e| e.to_str())
                .expect("every flag has an env twin");
            let named_env = words[i..].iter().skip_while(|w| **w != "env").nth(1);
            assert_eq!(named_env, Some(&env), "`{key}`: env twin of --{long}");
            documented.insert(id.to_owned());
        }
    }
    // `--kubeconfig` and `--context` choose the cluster as kubectl does; they are not options of
    // the config file (in the DaemonSet the in-cluster account is the cluster).
    let kube = rollcache::config::KubeArgs::augment_args(clap::Command::new("kube"));
    let cluster_choice: BTreeSet<&str> =
        kube.get_arguments().map(|a| a.get_id().as_str()).collect();
    assert!(cluster_choice.contains("kubeconfig"), "{cluster_choice:?}");
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if id != "config" && id != "help" && !cluster_choice.contains(id) {
            assert!(
                documented.contains(id),
                "flag --{:?} is not documented in config.yaml",
                arg.get_long()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The DaemonSet and its neighbours.

fn quantity_bytes(q: &str) -> u64 {
    let split = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let (n, unit) = q.split_at(split);
    let n: u64 = n.parse().unwrap_or_else(|_| panic!("quantity {q}"));
    let mult = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "k" => 1000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        other => panic!("quantity unit {other} not modelled"),
    };
    n * mult
}

fn probe_target(p: Option<&k8s_openapi::api::core::v1::Probe>, c: &Container) -> (String, i32) {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let get = p
        .and_then(|p| p.http_get.as_ref())
        .expect("an httpGet probe");
    let port = match &get.port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => {
            c.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("probe port {name} is not a container port"))
                .container_port
        }
    };
    (get.path.clone().unwrap_or_default(), port)
}

/// What every variant of the DaemonSet (base and overlays) must get right.
fn check_daemonset(r: &Rendered) {
    let ds = r.daemonset();
    let pod = pod_spec(&ds);
    let c = container(&ds);
    let config = r.config();
    let ns = ds.metadata.namespace.clone().expect("namespaced");

    // Identity, RBAC and namespace wiring.
    let namespaces: Vec<Namespace> = r.all("Namespace").into_iter().map(typed).collect();
    assert!(
        namespaces
            .iter()
            .any(|n| n.metadata.name.as_deref() == Some(&ns))
    );
    let sa_name = pod
        .service_account_name
        .clone()
        .expect("serviceAccountName");
    let sa: ServiceAccount = r.named("ServiceAccount", &sa_name);
    assert_eq!(sa.metadata.namespace.as_deref(), Some(ns.as_str()));
    let role: ClusterRole = r.one("ClusterRole");
    let binding: ClusterRoleBinding = r.one("ClusterRoleBinding");
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref());
    assert!(
        binding
            .subjects
            .iter()
            .flatten()
            .any(|s| s.kind == "ServiceAccount"
                && s.name == sa_name
                && s.namespace.as_deref() == Some(&ns)),
        "the ClusterRoleBinding binds the DaemonSet's service account"
    );
    for rule in role.rules.iter().flatten() {
        // Read-only, except the one write: this node's RollcacheNode summary and its status.
        let summary = rule.api_groups.as_deref() == Some(&["rollcache.io".to_owned()][..]);
        if summary {
            assert_eq!(
                rule.resources.as_deref(),
                Some(
                    &[
                        "rollcachenodes".to_owned(),
                        "rollcachenodes/status".to_owned()
                    ][..]
                )
            );
            assert_eq!(rule.verbs, ["get", "create", "patch"]);
        }
        for verb in &rule.verbs {
            let read = ["get", "list", "watch"].contains(&verb.as_str());
            assert!(read || summary, "verb {verb} in {rule:?}");
        }
        let everything = rule
            .api_groups
            .iter()
            .flatten()
            .chain(rule.resources.iter().flatten());
        assert!(
            everything.clone().all(|x| x != "*"),
            "no wildcards: {rule:?}"
        );
        assert!(rule.non_resource_urls.is_none() && rule.resource_names.is_none());
    }

    // The binary and its environment.
    let args = c.args.clone().unwrap_or_default();
    assert_eq!(
        args.first().map(String::as_str),
        Some("run"),
        "args {args:?}"
    );
    let env = c
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "NODE_NAME")
        .expect("NODE_NAME");
    let field = env
        .value_from
        .as_ref()
        .and_then(|v| v.field_ref.as_ref())
        .expect("fieldRef");
    assert_eq!(field.field_path, "spec.nodeName");

    // Listeners and probes.
    let metrics_port = i32::from(config.metrics_addr.port());
    assert_eq!(
        metrics_port,
        i32::from(Config::default().metrics_addr.port())
    );
    let ports: Vec<_> = c.ports.iter().flatten().collect();
    assert!(
        ports
            .iter()
            .any(|p| p.container_port == metrics_port && p.name.as_deref() == Some("metrics")),
        "container port `metrics` is {metrics_port}"
    );
    let admin_port = i32::from(config.admin_addr.port());
    assert!(
        config.admin_addr.ip().is_loopback(),
        "admin listener stays on localhost"
    );
    assert!(
        ports.iter().all(|p| p.container_port != admin_port),
        "admin port is not declared"
    );
    assert_eq!(
        probe_target(c.liveness_probe.as_ref(), c),
        ("/healthz".into(), metrics_port)
    );
    assert_eq!(
        probe_target(c.readiness_probe.as_ref(), c),
        ("/readyz".into(), metrics_port)
    );
    assert_eq!(
        probe_target(c.startup_probe.as_ref(), c),
        ("/healthz".into(), metrics_port)
    );
    let sp = c.startup_probe.as_ref().expect("startupProbe");
    let slack = sp.period_seconds.unwrap_or(10) * sp.failure_threshold.unwrap_or(3);
    assert!(slack >= 60, "startupProbe allows only {slack}s");

    // Host paths: the containerd socket where the config looks for it, containerd's root at the
    // same path as on the host and read-only.
    let mounts: Vec<_> = c.volume_mounts.iter().flatten().collect();
    let host = |name: &str| {
        pod.volumes
            .iter()
            .flatten()
            .find(|v| v.name == name)
            .and_then(|v| v.host_path.clone())
    };
    let socket_mount = mounts
        .iter()
        .find(|m| Path::new(&m.mount_path) == config.containerd_socket)
        .expect("the configured containerd socket is mounted");
    let socket = host(&socket_mount.name).expect("the socket is a hostPath");
    assert_eq!(socket.type_.as_deref(), Some("Socket"));
    assert!(socket.path.ends_with("containerd.sock"), "{}", socket.path);
    let root = mounts
        .iter()
        .find_map(|m| {
            host(&m.name)
                .filter(|h| h.path.ends_with("containerd"))
                .map(|h| (m, h))
        })
        .expect("containerd's root is mounted (disk guard)");
    assert_eq!(
        root.0.mount_path, root.1.path,
        "containerd's root at its host path"
    );
    assert_eq!(root.0.read_only, Some(true));
    for m in &mounts {
        if host(&m.name).is_some() && m.name != socket_mount.name {
            assert_eq!(
                m.read_only,
                Some(true),
                "host path {} must be read-only",
                m.mount_path
            );
        }
    }

    // Scheduling and security.
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    assert!(
        pod.tolerations
            .iter()
            .flatten()
            .any(|t| t.operator.as_deref() == Some("Exists")
                && t.key.is_none()
                && t.effect.is_none()),
        "tolerates every taint"
    );
    assert_ne!(pod.host_network, Some(true));
    assert_ne!(pod.host_pid, Some(true));
    let sc = c
        .security_context
        .as_ref()
        .expect("container securityContext");
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_ne!(sc.privileged, Some(true));
    let caps = sc.capabilities.as_ref().expect("capabilities");
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_owned()][..]));
    assert!(caps.add.as_ref().is_none_or(Vec::is_empty));
    assert_eq!(sc.run_as_user, Some(0));
    assert_eq!(sc.run_as_non_root, Some(false));
    let seccomp = sc
        .seccomp_profile
        .as_ref()
        .or(pod
            .security_context
            .as_ref()
            .and_then(|p| p.seccomp_profile.as_ref()))
        .expect("seccompProfile");
    assert_eq!(seccomp.type_, "RuntimeDefault");

    // Resources: memory request = limit, within the sized range; a small CPU request.
    let res = c.resources.as_ref().expect("resources");
    let get =
        |m: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
         k: &str| m.as_ref().and_then(|m| m.get(k)).map(|q| q.0.clone());
    let (req, lim) = (get(&res.requests, "memory"), get(&res.limits, "memory"));
    assert_eq!(req, lim, "memory request = limit");
    let mem = quantity_bytes(&req.expect("a memory request"));
    assert!((64 << 20..=256 << 20).contains(&mem), "memory {mem}");
    assert!(get(&res.requests, "cpu").is_some(), "a cpu request");
    assert!(
        get(&res.limits, "cpu").is_none(),
        "no cpu limit: throttling only delays pulls"
    );

    // Rollout.
    let strategy = ds
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .expect("strategy");
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    let max_unavailable = strategy
        .rolling_update
        .as_ref()
        .and_then(|r| r.max_unavailable.as_ref());
    assert_eq!(
        max_unavailable,
        Some(&k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("10%".into()))
    );

    // The metrics Service selects these pods on the metrics port.
    let svc: Service = r.one("Service");
    let spec = svc.spec.as_ref().expect("service spec");
    let pod_labels = pod_labels(&ds);
    for (k, v) in spec.selector.iter().flatten() {
        assert_eq!(pod_labels.get(k), Some(v), "Service selector {k}={v}");
    }
    let svc_port = spec
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("metrics"))
        .expect("port `metrics`");
    assert_eq!(svc_port.port, metrics_port);

    // Only the monitoring namespace reaches the pods, and only on the metrics port.
    let np: k8s_openapi::api::networking::v1::NetworkPolicy = r.one("NetworkPolicy");
    let spec = np.spec.as_ref().expect("networkpolicy spec");
    let selects = spec
        .pod_selector
        .as_ref()
        .and_then(|s| s.match_labels.as_ref());
    assert!(selects.is_some_and(|l| !l.is_empty()), "{spec:?}");
    for (k, v) in selects.into_iter().flatten() {
        assert_eq!(pod_labels.get(k), Some(v), "NetworkPolicy selects {k}={v}");
    }
    assert_eq!(
        spec.policy_types.as_deref(),
        Some(&["Ingress".to_owned()][..])
    );
    let rules = spec.ingress.as_deref().expect("ingress rules");
    assert_eq!(rules.len(), 1, "{rules:?}");
    let from = rules[0].from.as_deref().expect("from");
    assert_eq!(from.len(), 1, "{from:?}");
    let namespaces = from[0]
        .namespace_selector
        .as_ref()
        .and_then(|n| n.match_labels.as_ref())
        .expect("a namespace selector");
    assert_eq!(
        namespaces
            .get("kubernetes.io/metadata.name")
            .map(String::as_str),
        Some("monitoring")
    );
    assert!(from[0].pod_selector.is_none() && from[0].ip_block.is_none());
    let ports: Vec<_> = rules[0]
        .ports
        .iter()
        .flatten()
        .map(|p| (p.protocol.clone(), p.port.clone()))
        .collect();
    assert_eq!(
        ports,
        vec![(
            Some("TCP".to_owned()),
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(metrics_port))
        )]
    );
}

#[test]
fn top_level_kustomization_is_the_base() {
    let top = kustomize(".");
    let base = base();
    assert_eq!(top, base.objects);
    let kinds: BTreeSet<&str> = base.objects.iter().map(|o| s(o, "/kind")).collect();
    let expected = [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "CustomResourceDefinition",
        "DaemonSet",
        "Namespace",
        "NetworkPolicy",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ];
    assert_eq!(
        kinds,
        expected.into_iter().collect(),
        "the base needs no other CRDs than its own"
    );
}

#[test]
fn base_daemonset_matches_the_binary() {
    for base in both(Variant::Base) {
        check_base(&base);
    }
}

fn check_base(base: &Rendered) {
    check_daemonset(base);
    let resources = base.clusterrole_resources();
    for r in [
        "replicasets",
        "controllerrevisions",
        "pods",
        "nodes",
        "configmaps",
        "secrets",
        "serviceaccounts",
        "rollcachenodes",
    ] {
        assert!(resources.contains(r), "the ClusterRole grants {r}");
    }
    let config = base.config();
    assert!(config.sources.helm_secrets && config.use_pull_secrets);
}

/// The fields of `value` the CRD's structural `schema` does not declare (the API server would
/// prune them), or declares with another type.
fn undeclared(value: &Value, schema: &Value, at: String, out: &mut Vec<String>) {
    let ty = match value {
        Value::Object(_) => "object",
        Value::Array(_) => "array",
        Value::String(_) => "string",
        Value::Number(_) => "integer",
        Value::Bool(_) => "boolean",
        Value::Null => return,
    };
    if schema["type"] != ty {
        out.push(format!("{at}: {ty} vs {}", schema["type"]));
    }
    match value {
        Value::Object(m) => {
            for (k, v) in m {
                match schema["properties"].get(k) {
                    Some(s) => undeclared(v, s, format!("{at}.{k}"), out),
                    None if schema["x-kubernetes-preserve-unknown-fields"] == true => {}
                    None => out.push(format!("{at}.{k}")),
                }
            }
        }
        Value::Array(a) => {
            for v in a {
                undeclared(v, &schema["items"], format!("{at}[]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn the_crd_declares_every_field_the_agent_publishes_and_its_columns_exist() {
    use rollcache_core::summary::{NodeSummary, NotSafe};
    let base = base();
    let crd = base.all("CustomResourceDefinition");
    assert_eq!(s(crd[0], "/spec/scope"), "Cluster");
    let version = &crd[0]["spec"]["versions"][0];
    assert_eq!(version["subresources"]["status"], json!({}));
    // Every optional field set, so that none escapes the check.
    let summary = NodeSummary {
        not_offline_safe: vec![NotSafe {
            workload: "StatefulSet/ioc/bl01".into(),
            revision: Some(3),
            helm_release: Some("bl01".into()),
            helm_revision: Some(4),
            readiness: "needs_registry".into(),
            reason: "pull policy Always".into(),
        }],
        ..NodeSummary::default()
    };
    let status = serde_json::to_value(&summary).expect("serialise");
    let schema = &version["schema"]["openAPIV3Schema"]["properties"]["status"];
    let mut missing = Vec::new();
    undeclared(&status, schema, "status".into(), &mut missing);
    assert!(missing.is_empty(), "pruned or mistyped: {missing:?}");
    let mut columns = Vec::new();
    for c in arr(version, "/additionalPrinterColumns") {
        let path = s(c, "/jsonPath");
        columns.push(s(c, "/name").to_uppercase());
        if let Some(p) = path.strip_prefix(".status.") {
            let pointer = format!("/{}", p.replace('.', "/"));
            assert!(
                status.pointer(&pointer).is_some(),
                "column {path} names no field"
            );
        }
    }
    for want in [
        "DESIRED",
        "PINNED",
        "SAFE",
        "NEEDS-REGISTRY",
        "FAILED",
        "STATE",
        "AGE",
    ] {
        assert!(columns.iter().any(|c| c == want), "{want} in {columns:?}");
    }
}

#[test]
fn no_secrets_overlay_removes_secret_access_and_its_uses() {
    let [kustomized, chart] = both(Variant::NoSecrets);
    check_no_secrets(&Variant::Base.kustomized(), &kustomized);
    check_no_secrets(&Variant::Base.chart(), &chart);
}

fn check_no_secrets(base: &Rendered, overlay: &Rendered) {
    check_daemonset(overlay);
    let mut expected = base.clusterrole_resources();
    expected.remove("secrets");
    assert_eq!(overlay.clusterrole_resources(), expected);
    let mut want = base.config();
    want.sources.helm_secrets = false;
    want.use_pull_secrets = false;
    assert_eq!(
        overlay.config(),
        want,
        "only the two Secret uses differ from the base"
    );
}

#[test]
fn k3s_overlay_only_moves_the_host_paths() {
    let [kustomized, chart] = both(Variant::K3s);
    check_k3s(&Variant::Base.kustomized(), &kustomized);
    check_k3s(&Variant::Base.chart(), &chart);
}

fn check_k3s(base: &Rendered, k3s: &Rendered) {
    check_daemonset(k3s);
    assert_eq!(k3s.config(), base.config());
    let host_paths = |r: &Rendered| -> Vec<String> {
        pod_spec(&r.daemonset())
            .volumes
            .iter()
            .flatten()
            .filter_map(|v| v.host_path.as_ref().map(|h| h.path.clone()))
            .collect()
    };
    assert_eq!(
        host_paths(k3s),
        [
            "/run/k3s/containerd/containerd.sock",
            "/var/lib/rancher/k3s/agent/containerd"
        ]
    );
    assert_ne!(host_paths(base), host_paths(k3s));
}

// ---------------------------------------------------------------------------------------------
// Monitoring: PodMonitor, PrometheusRule, dashboard.

/// Every series name `/metrics` can expose, each label family given one value so that it shows.
fn exposed_series() -> BTreeSet<String> {
    exposition().0
}

/// The series names and the `# TYPE` families (name -> type) of the exposition.
fn exposition() -> (BTreeSet<String>, BTreeMap<String, String>) {
    let m = Metrics::new();
    m.pull_finished(OpResult::Success);
    m.pin_finished(OpResult::Success);
    m.unpin_finished(OpResult::Success);
    m.reconcile_finished(ReconcileResult::Success);
    m.config_reloaded(ReloadResult::Applied);
    m.prefetch_answered(PrefetchResult::Accepted);
    m.event_finished(EventReason::PinnedImageRemoved, EventResult::Published);
    let source = Source::History(SourceKind::Pod);
    m.set_source_synced(source, true);
    m.source_failed(source);
    m.set_node_state(&Default::default());
    m.set_unresolved(source, 0);
    m.decode_problems_found(source, ProblemKind::Json, 1);
    m.set_revisions(&[(Readiness::OfflineSafe, 1)].into());
    let needs_registry = json!({"workloads": [{"kind": "StatefulSet", "namespace": "ns", "name": "ioc",
        "revisions": [{"revision": 1, "current": true, "sources": [], "readiness": "needs_registry",
            "reasons": [], "images": [{"container": "ioc", "reference": "reg.example/ioc:latest",
                "state": "ready", "pull_policy": "Always"}]}]}], "summary": {}});
    m.set_needs_registry(&serde_json::from_value(needs_registry).expect("a report"));
    let text = m.encode();
    let mut names = BTreeSet::new();
    let mut families = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            families.insert(name.to_owned(), kind.to_owned());
        } else if !line.starts_with('#') {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    // Every registered family showed at least one series: no family was left untouched above.
    for f in families.keys() {
        assert!(
            names.iter().any(|n| n.starts_with(f.as_str())),
            "family {f} exposes no series; touch it in exposition()"
        );
    }
    (names, families)
}

fn metric_names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut word = String::new();
    for ch in text.chars().chain([' ']) {
        if ch.is_ascii_alphanumeric() || ch == '_' || ch == ':' {
            word.push(ch);
        } else {
            if word.starts_with("rollcache_") && word.len() > "rollcache_".len() {
                out.insert(word.clone());
            }
            word.clear();
        }
    }
    out
}

/// Label values a PromQL expression matches for `label` (`label="a"`, `label=~"a|b"`).
fn matched_values(expr: &str, label: &str) -> Vec<String> {
    let mut out = Vec::new();
    for op in ["=~\"", "!=\"", "=\""] {
        let needle = format!("{label}{op}");
        for (i, _) in expr.match_indices(&needle) {
            let rest = &expr[i + needle.len()..];
            let value = &rest[..rest.find('"').unwrap_or(rest.len())];
            out.extend(value.split('|').map(str::to_owned));
        }
    }
    out
}

#[test]
fn prometheus_rules_use_only_exposed_metrics_and_cover_the_failures() {
    for mon in both(Variant::Monitoring) {
        check_rules(&mon);
    }
}

fn check_rules(mon: &Rendered) {
    let exposed = exposed_series();
    // The test's own parser finds names when they are there.
    assert!(
        exposed.contains("rollcache_pulls_total")
            && exposed.contains("rollcache_pull_duration_seconds_bucket")
    );
    let rules = mon.all("PrometheusRule");
    assert_eq!(rules.len(), 1);
    let mut alerts = BTreeMap::new();
    for group in arr(rules[0], "/spec/groups") {
        for rule in arr(group, "/rules") {
            let name = s(rule, "/alert").to_owned();
            let expr = s(rule, "/expr");
            for m in metric_names_in(expr) {
                assert!(
                    exposed.contains(&m),
                    "{name}: `{m}` is not a series rollcache exposes"
                );
            }
            for v in matched_values(expr, "readiness") {
                assert!(
                    READINESS.contains(&v.as_str()),
                    "{name}: readiness `{v}` does not exist"
                );
            }
            let for_ = humantime::parse_duration(s(rule, "/for")).expect("`for` is a duration");
            assert!(["info", "warning", "critical"].contains(&s(rule, "/labels/severity")));
            for a in ["summary", "description"] {
                let text = s(rule, &format!("/annotations/{a}"));
                assert!(text.len() > 20, "{name}: {a} says too little");
                for m in metric_names_in(text) {
                    assert!(
                        exposed.contains(&m),
                        "{name}: {a} names `{m}`, which is not exposed"
                    );
                }
            }
            alerts.insert(name, (expr.to_owned(), for_));
        }
    }
    let find = |metric: &str| {
        alerts
            .iter()
            .find(|(_, (e, _))| metric_names_in(e).contains(metric))
            .unwrap_or_else(|| panic!("no alert on {metric}"))
    };
    let (name, (expr, for_)) = find("rollcache_revisions");
    let mut matched = matched_values(expr, "readiness");
    matched.sort();
    let mut want: Vec<String> = NOT_OFFLINE_SAFE.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(
        matched, want,
        "{name} alerts on exactly the non-offline-safe readiness values"
    );
    assert!(
        *for_ >= Duration::from_secs(15 * 60),
        "{name}: for {for_:?}"
    );
    find("rollcache_pulls_total");
    find("rollcache_disk_budget_reached");
    find("rollcache_source_synced");
}

#[test]
fn podmonitor_scrapes_the_daemonset_metrics_port() {
    for mon in both(Variant::Monitoring) {
        check_podmonitor(&mon);
    }
}

fn check_podmonitor(mon: &Rendered) {
    let ds = mon.daemonset();
    let pm = mon.all("PodMonitor");
    assert_eq!(pm.len(), 1);
    let pm = pm[0];
    let ns = ds.metadata.namespace.clone().expect("namespace");
    assert_eq!(pm["metadata"]["namespace"], ns.as_str());
    assert!(
        arr(pm, "/spec/namespaceSelector/matchNames")
            .iter()
            .any(|n| n == ns.as_str())
    );
    let pod_labels = pod_labels(&ds);
    let selector = pm
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .expect("matchLabels");
    assert!(!selector.is_empty());
    for (k, v) in selector {
        assert_eq!(
            pod_labels.get(k).map(String::as_str),
            v.as_str(),
            "PodMonitor selector {k}"
        );
    }
    let endpoints = arr(pm, "/spec/podMetricsEndpoints");
    assert_eq!(endpoints.len(), 1);
    let port_name = s(&endpoints[0], "/port");
    let port = container(&ds)
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(port_name))
        .expect("the PodMonitor's port is a container port");
    assert_eq!(
        port.container_port,
        i32::from(Config::default().metrics_addr.port())
    );
    assert_eq!(s(&endpoints[0], "/path"), "/metrics");
    // The alerts and the dashboard group by node.
    assert!(arr(&endpoints[0], "/relabelings").iter().any(|r| {
        r["targetLabel"] == "node"
            && arr(r, "/sourceLabels")
                .iter()
                .any(|l| l == "__meta_kubernetes_pod_node_name")
    }));
}

#[test]
fn dashboard_is_shipped_and_queries_exposed_metrics() {
    for mon in both(Variant::Monitoring) {
        check_dashboard(&mon);
    }
}

fn check_dashboard(mon: &Rendered) {
    let exposed = exposed_series();
    let dir = daemonset_dir().join("monitoring");
    let file: Value =
        serde_json::from_str(&read(&dir.join("grafana-dashboard.json"))).expect("dashboard JSON");
    let cm: ConfigMap = mon.named("ConfigMap", "rollcache-grafana-dashboard");
    let labels = cm.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("grafana_dashboard").map(String::as_str),
        Some("1")
    );
    let shipped = cm.data.unwrap_or_default();
    assert_eq!(shipped.len(), 1);
    let shipped: Value =
        serde_json::from_str(shipped.values().next().expect("one key")).expect("JSON");
    assert_eq!(shipped, file, "the ConfigMap ships the dashboard file");

    let mut used = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for panel in arr(&file, "/panels") {
        assert!(
            ids.insert(panel["id"].to_string()),
            "panel id {} twice",
            panel["id"]
        );
        for t in arr(panel, "/targets") {
            let expr = s(t, "/expr");
            for m in metric_names_in(expr) {
                assert!(
                    exposed.contains(&m),
                    "panel {}: `{m}` is not exposed",
                    panel["title"]
                );
                used.insert(m);
            }
            for v in matched_values(expr, "readiness") {
                assert!(READINESS.contains(&v.as_str()), "readiness `{v}`");
            }
        }
    }
    for needed in [
        "rollcache_revisions",
        "rollcache_images_desired",
        "rollcache_images_present",
        "rollcache_images_pinned",
        "rollcache_pulls_total",
        "rollcache_pull_duration_seconds_bucket",
        "rollcache_image_fs_used_bytes",
        "rollcache_image_fs_capacity_bytes",
        "rollcache_disk_budget_reached",
        "rollcache_source_synced",
        "rollcache_revision_needs_registry",
    ] {
        assert!(used.contains(needed), "the dashboard shows no {needed}");
    }
}

#[test]
fn metrics_doc_lists_exactly_the_exposed_metrics() {
    let (series, families) = exposition();
    let doc = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/METRICS.md"));
    let mut scraped = BTreeSet::new();
    for (family, kind) in &families {
        let name = if kind == "counter" {
            format!("{family}_total")
        } else {
            family.clone()
        };
        assert!(
            doc.contains(&format!("`{name}`")),
            "docs/METRICS.md does not list `{name}`"
        );
        scraped.insert(name);
    }
    for name in metric_names_in(&doc) {
        assert!(
            scraped.contains(&name) || series.contains(&name),
            "docs/METRICS.md lists `{name}`, which rollcache does not expose"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Fleet mode: the indexer and the agents reading its inventory, each with least privilege.

/// One permission: where (None: cluster-wide, else the namespace), API group, resource, verb. A
/// rule limited by resourceNames counts as the whole resource, so "at most" checks stay safe.
type Grant = (Option<String>, String, String, String);

/// Every permission the render grants the service account `sa` of rollcache's namespace: through
/// ClusterRoleBindings cluster-wide, through RoleBindings in their namespace.
fn grants(r: &Rendered, sa: &str) -> BTreeSet<Grant> {
    let ns = render::NAMESPACE;
    let binds_sa = |b: &&Value| {
        arr(b, "/subjects")
            .iter()
            .any(|s| s["kind"] == "ServiceAccount" && s["name"] == sa && s["namespace"] == ns)
    };
    let mut out = BTreeSet::new();
    for kind in ["ClusterRoleBinding", "RoleBinding"] {
        for b in r.all(kind).into_iter().filter(binds_sa) {
            let scope = (kind == "RoleBinding").then(|| s(b, "/metadata/namespace").to_owned());
            let (role_kind, role_name) = (s(b, "/roleRef/kind"), s(b, "/roleRef/name"));
            let role = r
                .objects
                .iter()
                .find(|o| {
                    o["kind"] == role_kind
                        && o["metadata"]["name"] == role_name
                        && (role_kind == "ClusterRole"
                            || o["metadata"]["namespace"] == b["metadata"]["namespace"])
                })
                .unwrap_or_else(|| panic!("{kind} {} binds a missing {role_name}", id(b)));
            for rule in arr(role, "/rules") {
                assert!(rule.get("nonResourceURLs").is_none(), "{rule}");
                let strings = |p: &str| -> Vec<String> {
                    let v: Vec<String> = arr(rule, p).iter().map(|x| x.to_string()).collect();
                    assert!(v.iter().all(|x| x != "\"*\""), "no wildcards: {rule}");
                    v.into_iter()
                        .map(|x| x.trim_matches('"').to_owned())
                        .collect()
                };
                for g in strings("/apiGroups") {
                    for res in strings("/resources") {
                        for verb in strings("/verbs") {
                            out.insert((scope.clone(), g.clone(), res.clone(), verb));
                        }
                    }
                }
            }
        }
    }
    out
}

fn grant(scope: Option<&str>, group: &str, resource: &str, verbs: &[&str]) -> Vec<Grant> {
    verbs
        .iter()
        .map(|v| {
            let scope = scope.map(str::to_owned);
            (scope, group.into(), resource.into(), v.to_string())
        })
        .collect()
}

/// The render without the indexer's objects: what the agent's checks see.
fn agent_side(r: &Rendered) -> Rendered {
    let agent = |o: &&Value| o["metadata"]["labels"]["app.kubernetes.io/component"] != "index";
    Rendered {
        objects: r.objects.iter().filter(agent).cloned().collect(),
    }
}

fn env_value<'a>(c: &'a Container, name: &str) -> &'a k8s_openapi::api::core::v1::EnvVar {
    let mut env = c.env.iter().flatten();
    env.find(|e| e.name == name)
        .unwrap_or_else(|| panic!("{} has no env {name}", c.name))
}

fn field_ref(c: &Container, name: &str) -> String {
    let v = env_value(c, name).value_from.as_ref();
    let f = v.and_then(|v| v.field_ref.as_ref()).expect("a fieldRef");
    f.field_path.clone()
}

#[test]
fn fleet_agents_cannot_list_or_watch_history_or_secrets() {
    for r in both(Variant::Fleet) {
        check_daemonset(&agent_side(&r));
        let agent = grants(&r, "rollcache");
        let history = [
            "secrets",
            "configmaps",
            "replicasets",
            "controllerrevisions",
        ];
        for (scope, _, resource, verb) in &agent {
            let read_all = ["list", "watch"].contains(&verb.as_str());
            assert!(
                !(read_all && history.contains(&resource.as_str())),
                "the agent may {verb} {resource} ({scope:?})"
            );
        }
        let ns = Some(render::NAMESPACE);
        let want: BTreeSet<Grant> = [
            grant(None, "", "pods", &["list", "watch"]),
            grant(None, "", "nodes", &["get", "list", "watch"]),
            grant(None, "", "secrets", &["get"]),
            grant(None, "", "serviceaccounts", &["get"]),
            grant(
                None,
                "rollcache.io",
                "rollcachenodes",
                &["get", "create", "patch"],
            ),
            grant(
                None,
                "rollcache.io",
                "rollcachenodes/status",
                &["get", "create", "patch"],
            ),
            grant(
                ns,
                "rollcache.io",
                "rollcacheinventories",
                &["list", "watch"],
            ),
            grant(
                Some("default"),
                "events.k8s.io",
                "events",
                &["create", "patch"],
            ),
        ]
        .concat()
        .into_iter()
        .collect();
        assert_eq!(agent, want);

        let c = container(&r.daemonset()).clone();
        assert_eq!(
            env_value(&c, "ROLLCACHE_HISTORY_FROM").value.as_deref(),
            Some("inventory")
        );
        // The inventory's namespace defaults to the pod's own.
        assert_eq!(field_ref(&c, "POD_NAMESPACE"), "metadata.namespace");
    }
}

#[test]
fn fleet_indexer_writes_only_its_lease_and_shards_in_its_namespace() {
    let defaults = render::index_args(&["index"]);
    for r in both(Variant::Fleet) {
        let index = grants(&r, "rollcache-index");
        let ns = Some(render::NAMESPACE);
        for (scope, _, resource, verb) in &index {
            if ["get", "list", "watch"].contains(&verb.as_str()) {
                continue;
            }
            assert_eq!(
                scope.as_deref(),
                ns,
                "{verb} {resource} outside its namespace"
            );
            assert!(
                ["leases", "rollcacheinventories"].contains(&resource.as_str()),
                "the indexer may {verb} {resource}"
            );
        }
        let shard_verbs = [
            "get", "list", "watch", "create", "patch", "update", "delete",
        ];
        let want: BTreeSet<Grant> = [
            grant(None, "apps", "replicasets", &["list", "watch"]),
            grant(None, "apps", "controllerrevisions", &["list", "watch"]),
            grant(None, "", "secrets", &["list", "watch"]),
            grant(None, "", "configmaps", &["list", "watch"]),
            grant(
                ns,
                "coordination.k8s.io",
                "leases",
                &["create", "get", "update"],
            ),
            grant(ns, "rollcache.io", "rollcacheinventories", &shard_verbs),
        ]
        .concat()
        .into_iter()
        .collect();
        assert_eq!(index, want);
        // Reading and replacing a Lease is limited to the one the indexer elects on.
        let role: k8s_openapi::api::rbac::v1::Role = r.named("Role", "rollcache-index");
        for rule in role.rules.iter().flatten() {
            let leases = rule.resources.as_deref() == Some(&["leases".to_owned()][..]);
            if leases && rule.verbs != ["create"] {
                assert_eq!(
                    rule.resource_names.as_deref(),
                    Some(&[defaults.lease_name.clone()][..])
                );
            }
        }
    }
}

/// Labels `selector` names, all present in `labels` with the same values.
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[test]
fn fleet_indexer_deployment_runs_index_with_two_replicas_probed_on_its_port() {
    for r in both(Variant::Fleet) {
        let d = r.deployment("rollcache-index");
        let spec = d.spec.as_ref().expect("spec");
        assert_eq!(spec.replicas, Some(2));
        let pod = spec.template.spec.as_ref().expect("pod spec");
        assert_eq!(pod.service_account_name.as_deref(), Some("rollcache-index"));
        assert_eq!(pod.containers.len(), 1);
        let c = &pod.containers[0];
        let args: Vec<&str> = c.args.iter().flatten().map(String::as_str).collect();
        assert_eq!(args.first(), Some(&"index"), "{args:?}");
        // The real parser: the flags exist and the listener is where the probes look.
        let parsed = render::index_args(&args);
        assert!(parsed.lease_duration >= Duration::from_secs(2));
        let port = i32::from(parsed.metrics_addr.port());
        assert_eq!(port, 9102);
        let named = c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some("metrics"));
        assert_eq!(named.map(|p| p.container_port), Some(port));
        assert_eq!(
            probe_target(c.readiness_probe.as_ref(), c),
            ("/readyz".into(), port)
        );
        assert_eq!(
            probe_target(c.liveness_probe.as_ref(), c),
            ("/healthz".into(), port)
        );
        assert_eq!(
            probe_target(c.startup_probe.as_ref(), c),
            ("/healthz".into(), port)
        );
        assert_eq!(field_ref(c, "POD_NAME"), "metadata.name");
        assert_eq!(field_ref(c, "POD_NAMESPACE"), "metadata.namespace");
        assert_eq!(
            c.image,
            container(&r.daemonset()).image,
            "the agent's image"
        );

        // Hardened like the agent, and not root: it holds no socket.
        let sc = c.security_context.as_ref().expect("securityContext");
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.privileged, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.run_as_non_root, Some(true));
        assert!(sc.run_as_user.is_some_and(|u| u != 0));
        let drop = sc.capabilities.as_ref().and_then(|c| c.drop.clone());
        assert_eq!(drop.as_deref(), Some(&["ALL".to_owned()][..]));
        let seccomp = sc.seccomp_profile.as_ref().map(|p| p.type_.as_str());
        assert_eq!(seccomp, Some("RuntimeDefault"));
        let res = c.resources.as_ref().expect("resources");
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        let memory = |m: Option<&BTreeMap<String, Quantity>>| {
            m.and_then(|m| m.get("memory")).map(|q| q.0.clone())
        };
        assert!(memory(res.requests.as_ref()).is_some());
        assert_eq!(memory(res.requests.as_ref()), memory(res.limits.as_ref()));

        // Its own pods, spread across nodes, one kept through a drain; never the agent's.
        let labels = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone());
        let labels = labels.unwrap_or_default();
        assert!(selects(
            spec.selector.match_labels.as_ref().expect("matchLabels"),
            &labels
        ));
        let anti = pod
            .affinity
            .as_ref()
            .and_then(|a| a.pod_anti_affinity.as_ref());
        let preferred = anti
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .clone()
            })
            .unwrap_or_default();
        assert_eq!(preferred.len(), 1);
        let term = &preferred[0].pod_affinity_term;
        assert_eq!(term.topology_key, "kubernetes.io/hostname");
        let sel = term
            .label_selector
            .as_ref()
            .and_then(|s| s.match_labels.clone());
        assert!(selects(&sel.unwrap_or_default(), &labels));
        let pdb: k8s_openapi::api::policy::v1::PodDisruptionBudget =
            r.named("PodDisruptionBudget", "rollcache-index");
        let pdb = pdb.spec.expect("pdb spec");
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
        assert_eq!(pdb.min_available, Some(IntOrString::Int(1)));
        let sel = pdb.selector.and_then(|s| s.match_labels);
        assert!(selects(&sel.unwrap_or_default(), &labels));
        let ds = r.daemonset();
        let ds_selector = ds
            .spec
            .as_ref()
            .and_then(|s| s.selector.match_labels.clone());
        assert!(!selects(&ds_selector.unwrap_or_default(), &labels));

        // Its metrics Service and NetworkPolicy select its pods on its port, the agent's do not.
        for (svc, target) in [
            ("rollcache-index-metrics", true),
            ("rollcache-metrics", false),
        ] {
            let svc: Service = r.named("Service", svc);
            let spec = svc.spec.expect("service spec");
            assert_eq!(
                selects(&spec.selector.clone().unwrap_or_default(), &labels),
                target
            );
            let ports: Vec<i32> = spec.ports.iter().flatten().map(|p| p.port).collect();
            assert_eq!(ports.contains(&port), target, "{ports:?}");
        }
        for (name, target) in [("rollcache-index", true), ("rollcache", false)] {
            let np: k8s_openapi::api::networking::v1::NetworkPolicy =
                r.named("NetworkPolicy", name);
            let spec = np.spec.expect("networkpolicy spec");
            let sel = spec.pod_selector.and_then(|s| s.match_labels);
            assert_eq!(selects(&sel.unwrap_or_default(), &labels), target);
            let rules = spec.ingress.unwrap_or_default();
            let ports: Vec<_> = rules
                .iter()
                .flat_map(|r| r.ports.iter().flatten())
                .collect();
            assert_eq!(
                ports.iter().any(|p| p.port == Some(IntOrString::Int(port))),
                target
            );
        }
    }
}

#[test]
fn fleet_leaves_the_single_process_objects_as_they_are() {
    let is_fleet = |o: &Value| {
        o["metadata"]["labels"]["app.kubernetes.io/component"] == "index"
            || [
                "rollcache-inventory-reader",
                "rollcacheinventories.rollcache.io",
            ]
            .contains(&s(o, "/metadata/name"))
    };
    for (base, fleet) in [
        (Variant::Base.kustomized(), Variant::Fleet.kustomized()),
        (Variant::Base.chart(), Variant::Fleet.chart()),
    ] {
        assert!(
            base.objects.iter().all(|o| !is_fleet(o)),
            "fleet objects in the base"
        );
        assert!(base.all("Deployment").is_empty());
        let mut fleet_ids = BTreeSet::new();
        for o in fleet.objects.iter().filter(|o| !is_fleet(o)) {
            fleet_ids.insert(id(o));
        }
        let base_ids: BTreeSet<String> = base.objects.iter().map(id).collect();
        assert_eq!(base_ids, fleet_ids, "the same objects besides the fleet's");
        for b in &base.objects {
            let f = fleet
                .objects
                .iter()
                .find(|o| id(o) == id(b))
                .expect("present");
            match s(b, "/kind") {
                // Replaced whole: fleet_agents_cannot_list_or_watch_history_or_secrets.
                "ClusterRole" => {}
                "DaemonSet" => {
                    let mut f = f.clone();
                    let env = f
                        .pointer_mut("/spec/template/spec/containers/0/env")
                        .and_then(Value::as_array_mut)
                        .expect("env");
                    let added = env.split_off(env.len() - 2);
                    let names: Vec<&str> = added.iter().map(|e| s(e, "/name")).collect();
                    assert_eq!(names, ["POD_NAMESPACE", "ROLLCACHE_HISTORY_FROM"]);
                    assert_eq!(&f, b, "the DaemonSet differs only by its two env entries");
                }
                _ => assert_eq!(f, b, "{}", id(b)),
            }
        }
    }
}

#[test]
fn fleet_podmonitor_scrapes_the_indexer_and_the_agents_one_does_not() {
    for r in both(Variant::FleetMonitoring) {
        let index = r.deployment("rollcache-index");
        let spec = index.spec.as_ref().expect("spec");
        let labels = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone());
        let labels = labels.unwrap_or_default();
        let c = &spec.template.spec.as_ref().expect("pod").containers[0];
        let to_map = |v: &Value| -> BTreeMap<String, String> {
            serde_json::from_value(v.clone()).expect("labels")
        };
        for pm in r.all("PodMonitor") {
            let selector = to_map(&pm["spec"]["selector"]["matchLabels"]);
            let is_index = s(pm, "/metadata/name") == "rollcache-index";
            assert_eq!(selects(&selector, &labels), is_index, "{}", id(pm));
            if is_index {
                let endpoint = &arr(pm, "/spec/podMetricsEndpoints")[0];
                let port_name = s(endpoint, "/port");
                let port = c
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.as_deref() == Some(port_name));
                assert_eq!(port.map(|p| p.container_port), Some(9102));
                assert_eq!(s(endpoint, "/path"), "/metrics");
                let namespaces = arr(pm, "/spec/namespaceSelector/matchNames");
                assert_eq!(namespaces, [json!(render::NAMESPACE)]);
            }
        }
        assert_eq!(r.all("PodMonitor").len(), 2);
    }
}

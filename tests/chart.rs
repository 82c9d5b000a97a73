//! charts/rollcache renders, with the real `helm template`, the same objects as the real
//! `kubectl kustomize` of daemonset/ for every variant; `helm lint` passes; the files the chart
//! shares with daemonset/ stay identical; and each value reaches the objects it names.

mod render;

use std::collections::BTreeMap;

use render::{
    NAMESPACE, Rendered, Variant, arr, chart_dir, container, daemonset_dir, helm_lint,
    helm_template, helm_template_error, id, pod_spec, read, s,
};
use serde_json::{Value, json};

/// Labels only Helm sets on the chart's top-level objects: which tool manages them and which chart
/// version rendered them. Both change with the tool or the chart version, not with what is
/// deployed, so the comparison checks their values here and then leaves them out. Nothing else is
/// ignored: the chart keeps them off pod templates and selectors, which match daemonset/'s.
const HELM_ONLY_LABELS: [(&str, &str); 2] = [
    ("app.kubernetes.io/managed-by", "Helm"),
    ("helm.sh/chart", "rollcache-0.1.0"),
];

fn by_id(objects: &[Value]) -> BTreeMap<String, Value> {
    objects.iter().map(|o| (id(o), o.clone())).collect()
}

/// The chart's object without Helm's own labels, after checking they are what Helm sets.
fn without_helm_labels(mut o: Value) -> Value {
    let what = id(&o);
    // A CRD is never templated (crds/, or files/ read verbatim in fleet mode): daemonset/'s file
    // byte for byte.
    if s(&o, "/kind") == "CustomResourceDefinition" {
        return o;
    }
    let labels = o["metadata"]["labels"]
        .as_object_mut()
        .unwrap_or_else(|| panic!("{what} has no labels"));
    for (key, value) in HELM_ONLY_LABELS {
        assert_eq!(
            labels.remove(key),
            Some(json!(value)),
            "{what}: label {key}"
        );
    }
    o
}

/// The first place two values differ, as a JSON pointer.
fn first_difference(a: &Value, b: &Value, at: String) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys = x.keys().chain(y.keys());
            keys.map(|k| (k, x.get(k), y.get(k)))
                .find_map(|(k, v, w)| match (v, w) {
                    (Some(v), Some(w)) => first_difference(v, w, format!("{at}/{k}")),
                    _ => Some(format!("{at}/{k} (only on one side)")),
                })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (v, w))| first_difference(v, w, format!("{at}/{i}"))),
        // A file in a ConfigMap: the first line that differs, not the whole file.
        (Value::String(x), Value::String(y)) if x != y && x.contains('\n') => {
            let mut lines = x.lines().zip(y.lines()).enumerate();
            let found = lines.find(|(_, (l, m))| l != m);
            Some(match found {
                Some((i, (l, m))) => format!("{at} line {}: {l:?} vs {m:?}", i + 1),
                None => format!("{at}: {} vs {} lines", x.lines().count(), y.lines().count()),
            })
        }
        _ => (a != b).then(|| format!("{at}: {a} vs {b}")),
    }
}

#[test]
fn chart_renders_the_same_objects_as_kustomize_for_every_variant() {
    for variant in Variant::ALL {
        let kustomized = by_id(&variant.kustomized().objects);
        let chart = variant.chart();
        let chart: BTreeMap<_, _> = by_id(&chart.objects)
            .into_iter()
            .map(|(k, o)| (k, without_helm_labels(o)))
            .collect();
        assert_eq!(
            kustomized.keys().collect::<Vec<_>>(),
            chart.keys().collect::<Vec<_>>(),
            "{variant:?}: kustomize and the chart render different objects"
        );
        for (key, k) in &kustomized {
            let c = &chart[key];
            assert!(
                k == c,
                "{variant:?}: {key} differs (kustomize vs chart) at {:?}",
                first_difference(k, c, String::new())
            );
        }
    }
}

#[test]
fn the_comparison_sees_a_changed_value() {
    // Guards the test above against comparing nothing: one value off, and the objects differ.
    let kustomized = by_id(&Variant::Base.kustomized().objects);
    let chart = by_id(
        &Variant::Base
            .chart_with(&["--set", "resources.requests.cpu=21m"])
            .objects,
    );
    let key = "DaemonSet/rollcache-system/rollcache";
    let diff = first_difference(
        &kustomized[key],
        &without_helm_labels(chart[key].clone()),
        String::new(),
    );
    assert_eq!(
        diff.as_deref(),
        Some("/spec/template/spec/containers/0/resources/requests/cpu: \"20m\" vs \"21m\"")
    );
}

#[test]
fn helm_lint_passes_for_every_variant() {
    for variant in Variant::ALL {
        let args = variant.helm_args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let report = helm_lint(&args);
        assert!(
            report.contains("0 chart(s) failed"),
            "{variant:?}:\n{report}"
        );
    }
    helm_lint(&[]);
}

#[test]
fn files_the_chart_shares_with_daemonset_stay_identical() {
    // A chart cannot read outside its folder and kustomize refuses files outside its root, so each
    // file exists twice; daemonset/ is the one to edit, the chart's copy must follow.
    for (chart_file, daemonset_file) in [
        ("files/config.yaml", "base/config.yaml"),
        (
            "files/config-no-secrets.yaml",
            "overlays/no-secrets/config.yaml",
        ),
        (
            "files/grafana-dashboard.json",
            "monitoring/grafana-dashboard.json",
        ),
        (
            "files/prometheusrule.yaml",
            "monitoring/prometheusrule.yaml",
        ),
        ("crds/rollcachenodes.yaml", "base/crd-rollcachenodes.yaml"),
        (
            "files/crd-rollcacheinventories.yaml",
            "fleet/crd-rollcacheinventories.yaml",
        ),
    ] {
        assert!(
            read(&chart_dir().join(chart_file)) == read(&daemonset_dir().join(daemonset_file)),
            "charts/rollcache/{chart_file} differs from daemonset/{daemonset_file}: \
             copy daemonset/{daemonset_file} over it"
        );
    }
}

#[test]
fn default_install_is_in_the_release_namespace_without_a_namespace_object() {
    // `helm install -n NS --create-namespace` creates NS itself and would refuse a chart that
    // renders it too.
    let r = Rendered::checked("chart", helm_template(&["--namespace", "ioc-cache"]));
    assert!(r.all("Namespace").is_empty());
    for o in &r.objects {
        let cluster_scoped = [
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
        ]
        .contains(&s(o, "/kind"));
        // A Node's Events live in `default`, whatever the release namespace.
        let in_default = ["Role", "RoleBinding"].contains(&s(o, "/kind"));
        let want = match (cluster_scoped, in_default) {
            (true, _) => None,
            (false, true) => Some("default"),
            (false, false) => Some("ioc-cache"),
        };
        assert_eq!(o["metadata"]["namespace"].as_str(), want, "{}", id(o));
    }
    let binding = &r.all("ClusterRoleBinding")[0];
    assert_eq!(s(binding, "/subjects/0/namespace"), "ioc-cache");
    let events_binding = &r.all("RoleBinding")[0];
    assert_eq!(s(events_binding, "/subjects/0/namespace"), "ioc-cache");
    let off = Rendered::checked(
        "chart",
        helm_template(&["--set", "nodeEvents.enabled=false"]),
    );
    assert!(off.all("Role").is_empty() && off.all("RoleBinding").is_empty());
    let ds = off.daemonset();
    let env = serde_json::to_value(&container(&ds).env).expect("env");
    assert!(
        env.as_array().is_some_and(|e| e
            .iter()
            .any(|v| v["name"] == "ROLLCACHE_NODE_EVENTS" && v["value"] == "false")),
        "{env:#}"
    );
    // Monitoring is off by default: it needs the Prometheus operator's CRDs.
    for kind in ["PodMonitor", "PrometheusRule"] {
        assert!(r.all(kind).is_empty(), "{kind} rendered by default");
    }
    let mon = Rendered::checked(
        "chart",
        helm_template(&[
            "--namespace",
            "ioc-cache",
            "--set",
            "monitoring.enabled=true",
        ]),
    );
    let pm = mon.all("PodMonitor")[0];
    assert_eq!(
        arr(pm, "/spec/namespaceSelector/matchNames"),
        [json!("ioc-cache")]
    );
}

#[test]
fn image_resources_priority_and_placement_values_reach_the_daemonset() {
    let digest = format!("sha256:{}", "ab".repeat(32));
    let r = Variant::Base.chart_with(&[
        "--set",
        "image.repository=registry.example/ops/rollcache",
        "--set",
        &format!("image.digest={digest}"),
        "--set",
        "image.tag=ignored-with-a-digest",
        "--set",
        "resources.limits.memory=512Mi",
        "--set",
        "priorityClassName=ioc-critical",
        "--set",
        "nodeSelector.role=ioc",
    ]);
    let ds = r.daemonset();
    let c = container(&ds);
    assert_eq!(
        c.image.as_deref(),
        Some(format!("registry.example/ops/rollcache@{digest}").as_str())
    );
    let limits = c
        .resources
        .as_ref()
        .and_then(|r| r.limits.clone())
        .unwrap_or_default();
    assert_eq!(limits.get("memory").map(|q| q.0.as_str()), Some("512Mi"));
    let pod = pod_spec(&ds);
    assert_eq!(pod.priority_class_name.as_deref(), Some("ioc-critical"));
    let selector = pod.node_selector.clone().unwrap_or_default();
    assert_eq!(selector.get("role").map(String::as_str), Some("ioc"));

    let tagged = Variant::Base.chart_with(&["--set", "image.tag=0.2.0"]);
    assert_eq!(
        container(&tagged.daemonset()).image.as_deref(),
        Some("rollcache:0.2.0")
    );
}

#[test]
fn extra_images_reach_the_config_with_and_without_secrets() {
    let images = [
        "registry.example/tools/debug:1.2",
        "registry.example/ioc/base:7.0",
    ];
    let set = format!("extraImages={{{}}}", images.join(","));
    for variant in [Variant::Base, Variant::NoSecrets] {
        let plain = variant.chart().config();
        let with = variant.chart_with(&["--set", &set]).config();
        assert_eq!(with.extra_images, images, "{variant:?}");
        let mut want = plain;
        want.extra_images = images.map(String::from).to_vec();
        assert_eq!(with, want, "{variant:?}: only extra_images changes");
    }
}

#[test]
fn namespaces_reach_the_agents_config_and_the_indexers_arguments() {
    let set = "namespaces={bl01,bl02}";
    for variant in [Variant::Base, Variant::NoSecrets, Variant::Fleet] {
        let plain = variant.chart().config();
        let with = variant.chart_with(&["--set", set]).config();
        assert_eq!(with.namespaces, ["bl01", "bl02"], "{variant:?}");
        let mut want = plain;
        want.namespaces = with.namespaces.clone();
        assert_eq!(with, want, "{variant:?}: only namespaces changes");
    }
    // The indexer indexes what the agents take, read by its own parser; without the value, all.
    let scope = |r: &Rendered| {
        let d = r.deployment("rollcache-index");
        let pod = d.spec.and_then(|s| s.template.spec).expect("pod spec");
        let args = pod.containers[0].args.clone().unwrap_or_default();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        render::index_args(&args)
            .scope()
            .expect("valid --namespaces")
    };
    let fleet = Variant::Fleet.chart_with(&["--set", set]);
    assert_eq!(scope(&fleet), fleet.config().namespaces);
    assert!(scope(&Variant::Fleet.chart()).is_empty());
}

#[test]
fn runbook_base_url_prefixes_every_alert_link_and_nothing_else() {
    let rule = |r: &Rendered| r.all("PrometheusRule")[0].clone();
    let plain = rule(&Variant::Monitoring.chart());
    let linked = rule(&Variant::Monitoring.chart_with(&[
        "--set",
        "monitoring.prometheusRule.runbookBaseUrl=https://git.example/ops/rollcache/blob/main/",
    ]));
    let mut restored = linked.clone();
    let mut links = 0;
    for (g, group) in arr(&plain, "/spec/groups").iter().enumerate() {
        for (i, r) in arr(group, "/rules").iter().enumerate() {
            let at = format!("/spec/groups/{g}/rules/{i}/annotations/runbook_url");
            let relative = s(r, "/annotations/runbook_url");
            assert!(relative.starts_with("docs/ROLLBACK.md#"), "{relative}");
            let want = format!("https://git.example/ops/rollcache/blob/main/{relative}");
            assert_eq!(s(&linked, &at), want);
            *restored.pointer_mut(&at).expect("a link") = json!(relative);
            links += 1;
        }
    }
    assert!(links >= 8, "{links} alerts");
    assert_eq!(restored, plain, "only the links change");
}

#[test]
fn monitoring_labels_select_for_prometheus_and_grafana() {
    let r = Variant::Monitoring.chart_with(&[
        "--set",
        "monitoring.podMonitor.labels.release=kube-prometheus-stack",
        "--set",
        "monitoring.prometheusRule.labels.release=kube-prometheus-stack",
        "--set",
        "monitoring.dashboard.labels.grafana_dashboard=null",
        "--set",
        "monitoring.dashboard.labels.dashboards=ioc",
        "--set",
        "monitoring.dashboard.annotations.grafana_folder=Rollcache",
    ]);
    for kind in ["PodMonitor", "PrometheusRule"] {
        assert_eq!(
            s(r.all(kind)[0], "/metadata/labels/release"),
            "kube-prometheus-stack"
        );
    }
    let dashboard = r
        .objects
        .iter()
        .find(|o| o["metadata"]["name"] == "rollcache-grafana-dashboard")
        .expect("the dashboard ConfigMap");
    let labels = &dashboard["metadata"]["labels"];
    assert_eq!(labels["dashboards"], "ioc");
    assert!(labels.get("grafana_dashboard").is_none(), "{labels}");
    assert_eq!(
        s(dashboard, "/metadata/annotations/grafana_folder"),
        "Rollcache"
    );

    let without_pm =
        Variant::Monitoring.chart_with(&["--set", "monitoring.podMonitor.enabled=false"]);
    assert!(without_pm.all("PodMonitor").is_empty());
    assert_eq!(without_pm.all("PrometheusRule").len(), 1);
    assert_eq!(
        NAMESPACE,
        s(without_pm.all("PrometheusRule")[0], "/metadata/namespace")
    );
}

/// Every value of values.yaml by its dotted path; maps meant to be filled by the user (labels,
/// resources) count as one value.
fn value_paths(prefix: &str, v: &Value, out: &mut Vec<String>) {
    const FREE_FORM: [&str; 4] = ["resources", "labels", "annotations", "nodeSelector"];
    for (k, inner) in v.as_object().expect("a mapping") {
        let path = format!("{prefix}{k}");
        if inner.is_object() && !FREE_FORM.contains(&k.as_str()) {
            value_paths(&format!("{path}."), inner, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn every_value_is_used_by_a_template_and_documented_in_the_readme() {
    let values: Value =
        serde_saphyr::from_str(&read(&chart_dir().join("values.yaml"))).expect("values.yaml");
    let mut paths = Vec::new();
    value_paths("", &values, &mut paths);
    assert!(paths.len() > 20, "{paths:?}");
    let mut templates = String::new();
    for entry in std::fs::read_dir(chart_dir().join("templates")).expect("templates/") {
        templates += &read(&entry.expect("an entry").path());
    }
    let readme = read(&render::root().join("README.md"));
    for path in &paths {
        assert!(
            templates.contains(&format!(".Values.{path}")),
            "value {path} is used by no template"
        );
        assert!(
            readme.contains(&format!("`{path}`")),
            "value {path} is not in the README's table"
        );
    }
}

#[test]
fn the_network_policy_names_the_scraping_namespace_or_goes() {
    let scraped_by = |r: &render::Rendered| -> Vec<String> {
        r.all("NetworkPolicy")
            .iter()
            .map(|np| {
                render::s(
                    np,
                    "/spec/ingress/0/from/0/namespaceSelector/matchLabels/kubernetes.io~1metadata.name",
                )
                .to_owned()
            })
            .collect()
    };
    assert_eq!(scraped_by(&Variant::Base.chart()), ["monitoring"]);
    let other =
        Variant::Base.chart_with(&["--set", "networkPolicy.monitoringNamespace=observability"]);
    assert_eq!(scraped_by(&other), ["observability"]);
    let off = Variant::Base.chart_with(&["--set", "networkPolicy.enabled=false"]);
    assert!(scraped_by(&off).is_empty());
}

#[test]
fn fleet_values_reach_the_indexer_and_its_image_is_the_agents() {
    let digest = format!("sha256:{}", "cd".repeat(32));
    let r = Variant::Fleet.chart_with(&[
        "--set",
        "image.repository=registry.example/ops/rollcache",
        "--set",
        &format!("image.digest={digest}"),
        "--set",
        "fleet.indexer.replicas=3",
        "--set",
        "fleet.indexer.leaseDuration=30s",
        "--set",
        "fleet.indexer.resources.limits.memory=1Gi",
        "--set",
        "fleet.indexer.priorityClassName=system-cluster-critical",
        "--set",
        "fleet.indexer.nodeSelector.role=infra",
        "--set",
        "fleet.indexer.tolerations[0].key=infra",
        "--set",
        "fleet.indexer.tolerations[0].operator=Exists",
    ]);
    let index = r.deployment("rollcache-index");
    let spec = index.spec.as_ref().expect("spec");
    assert_eq!(spec.replicas, Some(3));
    let pod = spec.template.spec.as_ref().expect("pod spec");
    let c = &pod.containers[0];
    let agent_image = container(&r.daemonset()).image.clone();
    assert_eq!(
        c.image.as_deref(),
        Some(format!("registry.example/ops/rollcache@{digest}").as_str())
    );
    assert_eq!(c.image, agent_image, "one image, two commands");
    assert_eq!(
        c.args.as_deref(),
        Some(&["index", "--lease-duration", "30s"].map(String::from)[..])
    );
    let limits = c.resources.as_ref().and_then(|r| r.limits.clone());
    assert_eq!(
        limits
            .unwrap_or_default()
            .get("memory")
            .map(|q| q.0.as_str()),
        Some("1Gi")
    );
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-cluster-critical")
    );
    let selector = pod.node_selector.clone().unwrap_or_default();
    assert_eq!(selector.get("role").map(String::as_str), Some("infra"));
    let tolerations = pod.tolerations.clone().unwrap_or_default();
    assert_eq!(tolerations.len(), 1);
    assert_eq!(tolerations[0].key.as_deref(), Some("infra"));
    // The agent's placement values stay the agent's.
    let ds = r.daemonset();
    let agent = pod_spec(&ds);
    assert_eq!(
        agent.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    assert!(agent.node_selector.is_none());

    // The scraping namespace of the agent's NetworkPolicy is the indexer's too.
    let other = Variant::Fleet.chart_with(&["--set", "networkPolicy.monitoringNamespace=obs"]);
    let np = other
        .objects
        .iter()
        .find(|o| o["kind"] == "NetworkPolicy" && o["metadata"]["name"] == "rollcache-index")
        .expect("the indexer's NetworkPolicy");
    assert_eq!(
        s(
            np,
            "/spec/ingress/0/from/0/namespaceSelector/matchLabels/kubernetes.io~1metadata.name"
        ),
        "obs"
    );
    let off = Variant::Fleet.chart_with(&["--set", "networkPolicy.enabled=false"]);
    assert!(off.all("NetworkPolicy").is_empty());
}

#[test]
fn fleet_is_off_by_default_and_refused_without_secret_access() {
    let plain = Variant::Base.chart();
    assert!(plain.all("Deployment").is_empty());
    assert!(
        plain
            .objects
            .iter()
            .all(|o| o["metadata"]["name"] != "rollcacheinventories.rollcache.io")
    );
    // The indexer cannot turn its Helm Secrets source off: no half-working install.
    let err = helm_template_error(&[
        "--set",
        "fleet.enabled=true",
        "--set",
        "secrets.enabled=false",
    ]);
    assert!(
        err.contains("fleet.enabled=true needs secrets.enabled=true"),
        "{err}"
    );
}

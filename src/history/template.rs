//! Pod specs → `PodTemplate`: from typed k8s-openapi `PodSpec`s, and from workload objects held as
//! JSON values (Helm manifests, files), so that every source reduces pods the same way.

use k8s_openapi::api::core::v1::{Container, PodSpec};
use serde_json::Value;

use super::{DecodeProblem, ProblemKind};
use crate::model::{
    ContainerImage, NodeSelectorRequirement, NodeSelectorTerm, ObjectRef, PodTemplate, Scheduling,
    Toleration,
};

/// Workload kinds whose pod template rollcache reads.
pub const WORKLOAD_KINDS: &[&str] = &[
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "CronJob",
    "Pod",
];

/// Reduces a typed pod spec. Containers without an image are reported and left out.
pub fn from_pod_spec(spec: &PodSpec, object: &ObjectRef) -> (PodTemplate, Vec<DecodeProblem>) {
    let mut problems = Vec::new();
    let mut containers = Vec::new();
    let init = spec.init_containers.iter().flatten().map(|c| (c, true));
    for (c, is_init) in init.chain(spec.containers.iter().map(|c| (c, false))) {
        match container(c, is_init) {
            Some(ci) => containers.push(ci),
            None => problems.push(missing_image(object, &c.name, is_init)),
        }
    }
    let scheduling = Scheduling {
        node_name: spec.node_name.clone().filter(|n| !n.is_empty()),
        node_selector: spec.node_selector.clone().unwrap_or_default(),
        required_terms: spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|na| {
                na.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|sel| {
                sel.node_selector_terms
                    .iter()
                    .map(|t| NodeSelectorTerm {
                        match_expressions: requirements(t.match_expressions.as_deref()),
                        match_fields: requirements(t.match_fields.as_deref()),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        tolerations: spec
            .tolerations
            .iter()
            .flatten()
            .map(|t| Toleration {
                key: t.key.clone(),
                operator: t.operator.clone(),
                value: t.value.clone(),
                effect: t.effect.clone(),
            })
            .collect(),
    };
    let template = PodTemplate {
        containers,
        image_pull_secrets: spec
            .image_pull_secrets
            .iter()
            .flatten()
            .map(|s| s.name.clone())
            .filter(|n| !n.is_empty())
            .collect(),
        service_account: spec
            .service_account_name
            .clone()
            .or_else(|| spec.service_account.clone())
            .filter(|s| !s.is_empty()),
        scheduling,
    };
    (template, problems)
}

fn container(c: &Container, init: bool) -> Option<ContainerImage> {
    let image = c.image.clone().filter(|i| !i.trim().is_empty())?;
    Some(ContainerImage {
        name: c.name.clone(),
        image,
        pull_policy: c.image_pull_policy.clone().filter(|p| !p.is_empty()),
        init,
        image_id: None,
    })
}

fn requirements(
    reqs: Option<&[k8s_openapi::api::core::v1::NodeSelectorRequirement]>,
) -> Vec<NodeSelectorRequirement> {
    reqs.unwrap_or_default()
        .iter()
        .map(|r| NodeSelectorRequirement {
            key: r.key.clone(),
            operator: r.operator.clone(),
            values: r.values.clone().unwrap_or_default(),
        })
        .collect()
}

fn missing_image(object: &ObjectRef, name: &str, init: bool) -> DecodeProblem {
    let which = if init { "init container" } else { "container" };
    DecodeProblem {
        object: object.clone(),
        kind: ProblemKind::MissingField,
        message: format!("{which} {name:?} has no image; it is left out of the pod template"),
    }
}

/// Where a workload of `kind` keeps its pod spec. None for kinds without one.
pub fn pod_spec_path(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            Some(&["spec", "template", "spec"])
        }
        "CronJob" => Some(&["spec", "jobTemplate", "spec", "template", "spec"]),
        "Pod" => Some(&["spec"]),
        _ => None,
    }
}

/// Finds and reduces the pod spec of a workload object (`kind` Deployment, StatefulSet, DaemonSet,
/// ReplicaSet, Job, CronJob or Pod) held as a JSON value. Only the fields rollcache reads are
/// looked at, so unrelated oddities elsewhere in the object do not matter.
/// Err when the kind has no pod spec or the object has none.
pub fn from_workload_value(
    workload: &Value,
    object: &ObjectRef,
) -> Result<(PodTemplate, Vec<DecodeProblem>), DecodeProblem> {
    let kind = workload.get("kind").and_then(Value::as_str).unwrap_or("");
    let Some(path) = pod_spec_path(kind) else {
        return Err(DecodeProblem {
            object: object.clone(),
            kind: ProblemKind::UnknownKind,
            message: format!("kind {kind:?} has no pod template"),
        });
    };
    let spec = path
        .iter()
        .try_fold(workload, |v, key| v.get(key))
        .ok_or_else(|| DecodeProblem {
            object: object.clone(),
            kind: ProblemKind::MissingField,
            message: format!("{kind} has no {}", path.join(".")),
        })?;
    from_spec_value(spec, object)
}

/// Reduces a pod spec held as a JSON value (the `spec` of a Pod or of a pod template).
pub fn from_spec_value(
    spec: &Value,
    object: &ObjectRef,
) -> Result<(PodTemplate, Vec<DecodeProblem>), DecodeProblem> {
    let invalid = |what: &str| DecodeProblem {
        object: object.clone(),
        kind: ProblemKind::InvalidField,
        message: format!("pod spec field {what} has the wrong type"),
    };
    if !spec.is_object() {
        return Err(invalid("spec"));
    }
    let mut problems = Vec::new();
    let mut containers = Vec::new();
    for (field, init) in [("initContainers", true), ("containers", false)] {
        let list = match spec.get(field) {
            None | Some(Value::Null) => continue,
            Some(Value::Array(list)) => list,
            Some(_) => return Err(invalid(field)),
        };
        for (i, c) in list.iter().enumerate() {
            let name = str_field(c, "name").unwrap_or_default();
            match str_field(c, "image").filter(|i| !i.trim().is_empty()) {
                Some(image) => containers.push(ContainerImage {
                    name,
                    image,
                    pull_policy: str_field(c, "imagePullPolicy").filter(|p| !p.is_empty()),
                    init,
                    image_id: None,
                }),
                None if c.is_object() => problems.push(missing_image(object, &name, init)),
                None => problems.push(invalid(&format!("{field}[{i}]"))),
            }
        }
    }
    let node_selector = match spec.get("nodeSelector") {
        None | Some(Value::Null) => Default::default(),
        Some(Value::Object(m)) => m
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), scalar_string(v)?)))
            .collect(),
        Some(_) => return Err(invalid("nodeSelector")),
    };
    let terms = spec
        .pointer(
            "/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms",
        )
        .and_then(Value::as_array)
        .map(|terms| {
            terms
                .iter()
                .map(|t| NodeSelectorTerm {
                    match_expressions: requirements_value(t.get("matchExpressions")),
                    match_fields: requirements_value(t.get("matchFields")),
                })
                .collect()
        })
        .unwrap_or_default();
    let tolerations = array(spec.get("tolerations"))
        .map(|t| Toleration {
            key: str_field(t, "key"),
            operator: str_field(t, "operator"),
            value: str_field(t, "value"),
            effect: str_field(t, "effect"),
        })
        .collect();
    let template = PodTemplate {
        containers,
        image_pull_secrets: array(spec.get("imagePullSecrets"))
            .filter_map(|s| str_field(s, "name"))
            .filter(|n| !n.is_empty())
            .collect(),
        service_account: str_field(spec, "serviceAccountName")
            .or_else(|| str_field(spec, "serviceAccount"))
            .filter(|s| !s.is_empty()),
        scheduling: Scheduling {
            node_name: str_field(spec, "nodeName").filter(|n| !n.is_empty()),
            node_selector,
            required_terms: terms,
            tolerations,
        },
    };
    Ok((template, problems))
}

fn array(v: Option<&Value>) -> impl Iterator<Item = &Value> {
    v.and_then(Value::as_array).into_iter().flatten()
}

fn str_field(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// YAML turns unquoted `true` or `1` into non-strings; label values are strings to Kubernetes.
fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn requirements_value(v: Option<&Value>) -> Vec<NodeSelectorRequirement> {
    array(v)
        .map(|r| NodeSelectorRequirement {
            key: str_field(r, "key").unwrap_or_default(),
            operator: str_field(r, "operator").unwrap_or_default(),
            values: array(r.get("values")).filter_map(scalar_string).collect(),
        })
        .collect()
}

//! Where a pod of a revision could run, decided as the scheduler and the kubelet decide
//! (`nodeName`, `nodeSelector`, required node affinity, taints against tolerations), and this
//! node's state as the plan sees it: known or not, and the maintenance and weather it ignores.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::{
    NodeFacts, NodeSelectorRequirement, NodeSelectorTerm, Scheduling, Taint, Toleration,
};

/// Why a revision's images are not held on this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum NotHeld {
    /// The template names another node.
    NodeName { node_name: String },
    /// A `nodeSelector` entry the node's labels lack.
    NodeSelector {
        key: String,
        want: String,
        have: Option<String>,
    },
    /// No required node-affinity term matches.
    NodeAffinity { detail: String },
    /// A taint the pod does not tolerate.
    Taint {
        key: String,
        value: Option<String>,
        effect: String,
    },
    /// The revision has scheduling constraints and this node's Node object is missing or
    /// unreadable: it waits for the node rather than being decided "not here".
    NodeUnknown { detail: String },
}

impl fmt::Display for NotHeld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotHeld::NodeName { node_name } => write!(f, "nodeName is {node_name}"),
            NotHeld::NodeSelector { key, want, have } => match have {
                Some(h) => write!(f, "nodeSelector {key}={want}, node has {key}={h}"),
                None => write!(f, "nodeSelector {key}={want}, node has no label {key}"),
            },
            NotHeld::NodeAffinity { detail } => write!(f, "required node affinity: {detail}"),
            NotHeld::Taint { key, value, effect } => match value {
                Some(v) if !v.is_empty() => write!(f, "untolerated taint {key}={v}:{effect}"),
                _ => write!(f, "untolerated taint {key}:{effect}"),
            },
            NotHeld::NodeUnknown { detail } => write!(
                f,
                "node unknown: {detail}; its scheduling constraints wait for the Node (nothing is unpinned meanwhile)"
            ),
        }
    }
}

/// Taints that say what the node is going through, not what it may run: cordon
/// (`kubectl cordon`/`drain`) and those the node lifecycle controller sets and clears by itself.
/// The plan ignores them, whatever their effect.
pub const WEATHER_TAINTS: [&str; 7] = [
    "node.kubernetes.io/unschedulable",
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
    "node.kubernetes.io/memory-pressure",
    "node.kubernetes.io/disk-pressure",
    "node.kubernetes.io/pid-pressure",
    "node.kubernetes.io/network-unavailable",
];

pub fn is_weather_taint(key: &str) -> bool {
    WEATHER_TAINTS.contains(&key)
}

/// This node as the plan found it, for people and scripts: what it ignored and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    /// False when the Node object is missing or cannot be read.
    pub known: bool,
    /// Why the node is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown_reason: Option<String>,
    /// `spec.unschedulable` or the unschedulable taint: ignored by the plan.
    #[serde(default)]
    pub cordoned: bool,
    /// Weather taints present (`key:effect`), ignored by the plan.
    #[serde(default)]
    pub ignored_taints: Vec<String>,
}

/// A known node with nothing to report: what a `/status` or plan from before node states meant.
impl Default for NodeState {
    fn default() -> Self {
        NodeState {
            known: true,
            unknown_reason: None,
            cordoned: false,
            ignored_taints: Vec::new(),
        }
    }
}

impl NodeState {
    pub fn of(node: &ThisNode<'_>) -> NodeState {
        match node {
            ThisNode::Known(n) => NodeState {
                cordoned: n.unschedulable
                    || n.taints
                        .iter()
                        .any(|t| t.key == "node.kubernetes.io/unschedulable"),
                ignored_taints: n
                    .taints
                    .iter()
                    .filter(|t| is_weather_taint(&t.key))
                    .map(|t| format!("{}:{}", t.key, t.effect))
                    .collect(),
                ..NodeState::default()
            },
            ThisNode::Unknown { reason, .. } => NodeState {
                known: false,
                unknown_reason: Some(reason.clone()),
                ..NodeState::default()
            },
        }
    }

    /// One line for people; None for a known node with nothing to say.
    pub fn summary(&self) -> Option<String> {
        if !self.known {
            return Some(format!(
                "UNKNOWN ({}): revisions with scheduling constraints wait for the Node; nothing is unpinned",
                self.unknown_reason.as_deref().unwrap_or("no Node object")
            ));
        }
        let mut parts = Vec::new();
        if self.cordoned {
            parts.push("cordoned".to_owned());
        }
        if !self.ignored_taints.is_empty() {
            parts.push(format!("taints {}", self.ignored_taints.join(", ")));
        }
        (!parts.is_empty()).then(|| {
            format!(
                "{} (maintenance and node conditions do not change what it holds: ignored)",
                parts.join("; ")
            )
        })
    }
}

/// What the plan knows about this node.
#[derive(Clone, Debug)]
pub enum ThisNode<'a> {
    Known(&'a NodeFacts),
    /// A node name is given but its Node object is missing or unreadable (`reason` says which).
    Unknown {
        name: &'a str,
        reason: String,
    },
}

/// Whether the template can only run on some nodes by what their Node object says (name, labels).
pub fn is_constrained(s: &Scheduling) -> bool {
    s.node_name.as_deref().is_some_and(|n| !n.is_empty())
        || !s.node_selector.is_empty()
        || !s.required_terms.is_empty()
}

/// Why a pod template cannot run on a node; `Invalid` also carries a problem to report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SchedulingError {
    NotHeld(NotHeld),
    Invalid(String, NotHeld),
}

/// Whether a pod of this template could run on `node`, as the scheduler (or, for a template
/// with `nodeName`, the kubelet's admission) decides.
pub fn check_scheduling(
    s: &Scheduling,
    workload_kind: &str,
    node: &NodeFacts,
) -> Result<(), SchedulingError> {
    let bound = s.node_name.as_deref().filter(|n| !n.is_empty());
    if let Some(n) = bound
        && n != node.name
    {
        return Err(SchedulingError::NotHeld(NotHeld::NodeName {
            node_name: n.to_owned(),
        }));
    }
    for (k, v) in &s.node_selector {
        let have = node.labels.get(k);
        if have != Some(v) {
            return Err(SchedulingError::NotHeld(NotHeld::NodeSelector {
                key: k.clone(),
                want: v.clone(),
                have: have.cloned(),
            }));
        }
    }
    if !s.required_terms.is_empty() {
        match match_node_selector_terms(&s.required_terms, node) {
            TermsResult::Match => {}
            TermsResult::NoMatch(detail) => {
                return Err(SchedulingError::NotHeld(NotHeld::NodeAffinity { detail }));
            }
            TermsResult::Invalid(errors, detail) => {
                return Err(SchedulingError::Invalid(
                    format!("invalid required node affinity: {errors}"),
                    NotHeld::NodeAffinity { detail },
                ));
            }
        }
    }
    // A pod bound by nodeName skips the scheduler; the kubelet only refuses NoExecute taints.
    // Weather taints come and go with maintenance and node conditions: a revision that could
    // run here once they clear must stay held through them.
    let implicit = implicit_tolerations(workload_kind);
    let untolerated = node.taints.iter().find(|t| {
        if is_weather_taint(&t.key) {
            return false;
        }
        let relevant = match t.effect.as_str() {
            "NoExecute" => true,
            "NoSchedule" => bound.is_none(),
            _ => false,
        };
        relevant
            && !s
                .tolerations
                .iter()
                .chain(implicit.iter())
                .any(|tol| tolerates(tol, t))
    });
    if let Some(t) = untolerated {
        return Err(SchedulingError::NotHeld(NotHeld::Taint {
            key: t.key.clone(),
            value: t.value.clone(),
            effect: t.effect.clone(),
        }));
    }
    Ok(())
}

/// Tolerations Kubernetes adds to pods by itself: `DefaultTolerationSeconds` (not-ready and
/// unreachable, NoExecute) for every pod, and the DaemonSet controller's node-condition ones.
fn implicit_tolerations(workload_kind: &str) -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration {
        key: Some(key.to_owned()),
        operator: Some("Exists".to_owned()),
        value: None,
        effect: Some(effect.to_owned()),
    };
    let mut v = vec![
        t("node.kubernetes.io/not-ready", "NoExecute"),
        t("node.kubernetes.io/unreachable", "NoExecute"),
    ];
    if workload_kind == "DaemonSet" {
        v.extend([
            t("node.kubernetes.io/disk-pressure", "NoSchedule"),
            t("node.kubernetes.io/memory-pressure", "NoSchedule"),
            t("node.kubernetes.io/pid-pressure", "NoSchedule"),
            t("node.kubernetes.io/unschedulable", "NoSchedule"),
        ]);
    }
    v
}

/// `Toleration.ToleratesTaint`: empty effect matches every effect, empty key (with Exists)
/// every key; `Equal` (the default) compares values, `Exists` does not; `Gt`/`Lt` compare the
/// values as integers.
pub fn tolerates(tol: &Toleration, taint: &Taint) -> bool {
    let nz = |o: &Option<String>| o.as_deref().unwrap_or("").to_owned();
    let effect = nz(&tol.effect);
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = nz(&tol.key);
    if !key.is_empty() && key != taint.key {
        return false;
    }
    let tv = nz(&tol.value);
    let taint_value = taint.value.as_deref().unwrap_or("");
    match tol.operator.as_deref().unwrap_or("") {
        "" | "Equal" => tv == taint_value,
        "Exists" => true,
        op @ ("Lt" | "Gt") => match (tv.parse::<i64>(), taint_value.parse::<i64>()) {
            (Ok(t), Ok(n)) => {
                if op == "Lt" {
                    n < t
                } else {
                    n > t
                }
            }
            _ => false,
        },
        _ => false,
    }
}

enum TermsResult {
    Match,
    NoMatch(String),
    /// Some term could not be parsed (it matches nothing, as in Kubernetes) and none matched.
    Invalid(String, String),
}

/// `nodeSelectorTerms` are ORed; an empty term matches nothing; a term that does not parse
/// matches nothing and is reported.
fn match_node_selector_terms(terms: &[NodeSelectorTerm], node: &NodeFacts) -> TermsResult {
    let mut why = Vec::new();
    let mut errors = Vec::new();
    for (i, t) in terms.iter().enumerate() {
        if t.match_expressions.is_empty() && t.match_fields.is_empty() {
            why.push(format!("term {i} is empty"));
            continue;
        }
        match match_term(t, node) {
            Ok(None) => return TermsResult::Match,
            Ok(Some(reason)) => why.push(format!("term {i}: {reason}")),
            Err(e) => {
                why.push(format!("term {i} is invalid"));
                errors.push(format!("term {i}: {e}"));
            }
        }
    }
    let detail = why.join("; ");
    if errors.is_empty() {
        TermsResult::NoMatch(detail)
    } else {
        TermsResult::Invalid(errors.join("; "), detail)
    }
}

/// `Ok(None)` when the term matches, `Ok(Some(why not))`, or `Err` when it does not parse.
fn match_term(t: &NodeSelectorTerm, node: &NodeFacts) -> Result<Option<String>, String> {
    // Kubernetes parses the whole term before matching: an invalid requirement anywhere makes
    // the term invalid.
    for r in &t.match_expressions {
        validate_label_requirement(r)?;
    }
    for r in &t.match_fields {
        validate_field_requirement(r)?;
    }
    for r in &t.match_expressions {
        if !label_requirement_matches(r, node) {
            return Ok(Some(describe(
                r,
                node.labels.get(&r.key).map(String::as_str),
                "label",
            )));
        }
    }
    // The node's fields are only `metadata.name`, and only when the node has a name.
    if !node.name.is_empty() {
        for r in &t.match_fields {
            let have = (r.key == "metadata.name").then_some(node.name.as_str());
            let is = have.unwrap_or("") == r.values[0];
            let ok = if r.operator == "In" { is } else { !is };
            if !ok {
                return Ok(Some(describe(r, have, "field")));
            }
        }
    }
    Ok(None)
}

fn describe(r: &NodeSelectorRequirement, have: Option<&str>, what: &str) -> String {
    let want = if r.values.is_empty() {
        format!("{} {}", r.key, r.operator)
    } else {
        format!("{} {} [{}]", r.key, r.operator, r.values.join(", "))
    };
    match have {
        Some(h) => format!("{what} {want}, node has {}={h}", r.key),
        None => format!("{what} {want}, node has no {what} {}", r.key),
    }
}

fn validate_label_requirement(r: &NodeSelectorRequirement) -> Result<(), String> {
    let n = r.values.len();
    match r.operator.as_str() {
        "In" | "NotIn" if n == 0 => Err(format!(
            "{} {}: needs at least one value",
            r.key, r.operator
        )),
        "In" | "NotIn" => Ok(()),
        "Exists" | "DoesNotExist" if n > 0 => {
            Err(format!("{} {}: takes no values", r.key, r.operator))
        }
        "Exists" | "DoesNotExist" => Ok(()),
        "Gt" | "Lt" if n != 1 || r.values[0].parse::<i64>().is_err() => Err(format!(
            "{} {}: needs exactly one integer value",
            r.key, r.operator
        )),
        "Gt" | "Lt" => Ok(()),
        op => Err(format!("{}: unknown operator {op:?}", r.key)),
    }
}

fn validate_field_requirement(r: &NodeSelectorRequirement) -> Result<(), String> {
    match r.operator.as_str() {
        "In" | "NotIn" if r.values.len() == 1 => Ok(()),
        "In" | "NotIn" => Err(format!(
            "field {} {}: needs exactly one value",
            r.key, r.operator
        )),
        op => Err(format!(
            "field {}: operator {op:?} is not In or NotIn",
            r.key
        )),
    }
}

/// `labels.Requirement.Matches` (already validated).
fn label_requirement_matches(r: &NodeSelectorRequirement, node: &NodeFacts) -> bool {
    let have = node.labels.get(&r.key);
    match r.operator.as_str() {
        "In" => have.is_some_and(|v| r.values.contains(v)),
        "NotIn" => have.is_none_or(|v| !r.values.contains(v)),
        "Exists" => have.is_some(),
        "DoesNotExist" => have.is_none(),
        op @ ("Gt" | "Lt") => {
            let (Some(Ok(l)), Ok(want)) =
                (have.map(|v| v.parse::<i64>()), r.values[0].parse::<i64>())
            else {
                return false;
            };
            if op == "Gt" { l > want } else { l < want }
        }
        _ => false,
    }
}

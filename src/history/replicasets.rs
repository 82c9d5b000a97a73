//! ReplicaSets: Deployment history, decoded into facts.
//!
//! Revision from `deployment.kubernetes.io/revision`, owner from ownerReferences.

use k8s_openapi::api::apps::v1::ReplicaSet;

use super::{DecodeProblem, Decoded, ProblemKind, meta, template};
use crate::model::{RevisionFact, SourceKind};

/// The annotation the Deployment controller numbers its ReplicaSets with.
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";

pub fn decode(rs: &ReplicaSet) -> Decoded {
    let object = meta::object_ref("ReplicaSet", &rs.metadata);
    let mut out = Decoded::default();
    let Some(pod_spec) = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.spec.as_ref())
    else {
        return Decoded::skipped(
            object,
            ProblemKind::MissingField,
            "no spec.template.spec; the ReplicaSet is skipped",
        );
    };
    // An owned ReplicaSet is one revision of its Deployment (or another controller); a bare one
    // is its own workload.
    let workload = match meta::owning_workload(&rs.metadata, &object) {
        Ok(w) => w,
        Err(message) => {
            return Decoded::skipped(object, ProblemKind::InvalidField, message);
        }
    };
    let revision = match rs
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION_ANNOTATION))
    {
        None => None,
        Some(text) => match text.trim().parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => {
                out.problems.push(DecodeProblem {
                    object: object.clone(),
                    kind: ProblemKind::InvalidField,
                    message: format!(
                        "annotation {REVISION_ANNOTATION}={text:?} is not a number; \
                         the revision is kept without a number"
                    ),
                });
                None
            }
        },
    };
    // The API server defaults spec.replicas to 1; old revisions are scaled to 0.
    let desired = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let running = rs.status.as_ref().map_or(0, |s| s.replicas);
    let (template, problems) = template::from_pod_spec(pod_spec, &object);
    out.problems.extend(problems);
    out.facts.push(RevisionFact {
        source: SourceKind::ReplicaSet,
        created: meta::created(&rs.metadata),
        object,
        workload,
        revision,
        helm_release: None,
        status: None,
        current: desired > 0 || running > 0,
        template: template.into(),
    });
    out
}

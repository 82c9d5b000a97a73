//! ControllerRevisions of StatefulSets and DaemonSets: `revision`, and `data` holding the
//! controller's patch with `spec.template`.
//!
//! Both controllers store `{"spec":{"template":{"$patch":"replace","metadata":…,"spec":…}}}`
//! (their `getPatch`), so the pod spec is at `data.spec.template.spec`.

use k8s_openapi::api::apps::v1::ControllerRevision;

use super::{DecodeProblem, Decoded, ProblemKind, meta, template};
use crate::model::{RevisionFact, SourceKind, WorkloadId};

/// Owners whose revisions are pod templates. Other controllers (add-ons) also write
/// ControllerRevisions; theirs are only read when they have the same shape.
const POD_TEMPLATE_OWNERS: &[&str] = &["StatefulSet", "DaemonSet"];

pub fn decode(cr: &ControllerRevision) -> Decoded {
    let object = meta::object_ref("ControllerRevision", &cr.metadata);
    let mut out = Decoded::default();
    // A revision without a controller belongs to a deleted (orphaning) workload; a new one
    // adopts it and then it comes back with an owner.
    let Some(owner) = meta::controller_owner(&cr.metadata) else {
        tracing::debug!(%object, "ControllerRevision without a controller, skipped");
        return out;
    };
    // The API server rejects such owner references, but files and exports are not checked.
    if owner.kind.is_empty() || owner.name.is_empty() {
        return Decoded::skipped(
            object,
            ProblemKind::InvalidField,
            "the controller owner reference has no kind or no name; the revision is skipped",
        );
    }
    let known_owner = POD_TEMPLATE_OWNERS.contains(&owner.kind.as_str());
    let spec = cr
        .data
        .as_ref()
        .and_then(|d| d.0.pointer("/spec/template/spec"));
    let Some(spec) = spec else {
        if known_owner {
            out.problems.push(DecodeProblem {
                object,
                kind: ProblemKind::MissingField,
                message: "data has no spec.template.spec; the revision is skipped".into(),
            });
        } else {
            tracing::debug!(%object, owner = %owner.kind, "ControllerRevision without a pod template, skipped");
        }
        return out;
    };
    let (template, problems) = match template::from_spec_value(spec, &object) {
        Ok(decoded) => decoded,
        Err(problem) => {
            out.problems.push(problem);
            return out;
        }
    };
    out.problems.extend(problems);
    out.facts.push(RevisionFact {
        source: SourceKind::ControllerRevision,
        created: meta::created(&cr.metadata),
        workload: WorkloadId::new(
            owner.kind.clone(),
            object.namespace.clone(),
            owner.name.clone(),
        ),
        object,
        revision: Some(cr.revision),
        helm_release: None,
        status: None,
        // Which revision runs is in the owner's status, not here: the inventory decides.
        current: false,
        template: template.into(),
    });
    out
}

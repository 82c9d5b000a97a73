//! ControllerRevisions: StatefulSet and DaemonSet history, decoded into facts.
//!
//! Each has a `revision`, and `data` holding the controller's patch with `spec.template`.
//!
//! Both controllers store `{"spec":{"template":{"$patch":"replace","metadata":…,"spec":…}}}`
//! (their `getPatch`), so the pod spec is at `data.spec.template.spec`.
//!
//! An orphaned revision (its StatefulSet deleted with `--cascade=orphan`, the usual way to change
//! volumeClaimTemplates; the garbage collector then removes the owner reference) is still history:
//! it stays under the workload its labels and name say it belongs to until it is deleted.

use k8s_openapi::api::apps::v1::ControllerRevision;

use super::{DecodeProblem, Decoded, ProblemKind, meta, template};
use crate::model::{ObjectRef, RevisionFact, SourceKind, WorkloadId};

/// Owners whose revisions are pod templates. Other controllers (add-ons) also write
/// ControllerRevisions; theirs are only read when they have the same shape.
const POD_TEMPLATE_OWNERS: &[&str] = &["StatefulSet", "DaemonSet"];

/// The hash label each controller puts on its revisions (named `<workload>-<hash>`): the
/// StatefulSet controller uses the controller history's label, the DaemonSet controller its own.
const HASH_LABELS: &[(&str, &str)] = &[
    ("controller.kubernetes.io/hash", "StatefulSet"),
    ("controller-revision-hash", "DaemonSet"),
];

/// The workload an orphaned revision came from, from its hash label and name; without them the
/// revision is its own workload (as a bare ReplicaSet is).
fn orphan_workload(cr: &ControllerRevision, object: &ObjectRef) -> (String, String) {
    let labels = cr.metadata.labels.as_ref();
    for (label, kind) in HASH_LABELS {
        let Some(hash) = labels.and_then(|l| l.get(*label)) else {
            continue;
        };
        if let Some(name) = object
            .name
            .strip_suffix(hash.as_str())
            .and_then(|n| n.strip_suffix('-'))
            .filter(|n| !n.is_empty())
        {
            return ((*kind).to_string(), name.to_string());
        }
    }
    ("ControllerRevision".to_string(), object.name.clone())
}

pub fn decode(cr: &ControllerRevision) -> Decoded {
    let object = meta::object_ref("ControllerRevision", &cr.metadata);
    let mut out = Decoded::default();
    // A revision without a controller belongs to a workload deleted with orphaning; a new one
    // of the same name adopts it (and then it comes back with an owner), so it stays under that
    // name meanwhile.
    let (owner_kind, owner_name) = match meta::controller_owner(&cr.metadata) {
        Some(owner) => (owner.kind.clone(), owner.name.clone()),
        None => orphan_workload(cr, &object),
    };
    // The API server rejects such owner references, but files and exports are not checked.
    if owner_kind.is_empty() || owner_name.is_empty() {
        return Decoded::skipped(
            object,
            ProblemKind::InvalidField,
            "the controller owner reference has no kind or no name; the revision is skipped",
        );
    }
    let known_owner = POD_TEMPLATE_OWNERS.contains(&owner_kind.as_str());
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
            tracing::debug!(%object, owner = %owner_kind, "ControllerRevision without a pod template, skipped");
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
        workload: WorkloadId::new(owner_kind, object.namespace.clone(), owner_name),
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

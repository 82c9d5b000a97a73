//! Object metadata shared by the decoders: identity, creation time, controlling owner.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::model::{ObjectRef, WorkloadId};

/// The identity of the object `meta` belongs to.
pub fn object_ref(kind: &str, meta: &ObjectMeta) -> ObjectRef {
    ObjectRef::new(
        kind.to_owned(),
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// The identity of a typed object, its kind taken from its type.
pub fn object_ref_of<K: kube::Resource<DynamicType = ()>>(obj: &K) -> ObjectRef {
    object_ref(&K::kind(&()), obj.meta())
}

/// `creationTimestamp` in seconds since the epoch.
pub fn created(meta: &ObjectMeta) -> Option<i64> {
    meta.creation_timestamp.as_ref().map(|t| t.0.as_second())
}

/// The owner reference with `controller: true` (at most one exists).
pub fn controller_owner(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
}

/// The workload an object is one revision or pod of: its controller, or the object itself when it
/// has none. Err when that workload would have no kind or name: the API server rejects such
/// objects and owner references, but files and exports are not checked.
pub fn owning_workload(meta: &ObjectMeta, object: &ObjectRef) -> Result<WorkloadId, String> {
    let workload = match controller_owner(meta) {
        Some(owner) => WorkloadId::new(
            owner.kind.clone(),
            object.namespace.clone(),
            owner.name.clone(),
        ),
        None => WorkloadId::new(
            object.kind.clone(),
            object.namespace.clone(),
            object.name.clone(),
        ),
    };
    if workload.kind.is_empty() || workload.name.is_empty() {
        let which = if controller_owner(meta).is_some() {
            "the controller owner reference"
        } else {
            "the object"
        };
        return Err(format!(
            "{which} has no kind or no name; the {} is skipped",
            object.kind
        ));
    }
    Ok(workload)
}

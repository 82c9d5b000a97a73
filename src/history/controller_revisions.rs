//! ControllerRevisions of StatefulSets and DaemonSets: `revision`, and `data` holding the
//! controller's patch with `spec.template`.

use k8s_openapi::api::apps::v1::ControllerRevision;

use super::Decoded;

pub fn decode(_cr: &ControllerRevision) -> Decoded {
    Decoded::default()
}

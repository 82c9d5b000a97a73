//! ReplicaSets: Deployment history. Revision from `deployment.kubernetes.io/revision`, owner from
//! ownerReferences.

use k8s_openapi::api::apps::v1::ReplicaSet;

use super::Decoded;

pub fn decode(_rs: &ReplicaSet) -> Decoded {
    Decoded::default()
}

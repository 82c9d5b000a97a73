//! Pods: what runs now, with the digest each container actually runs.

use k8s_openapi::api::core::v1::Pod;

use super::Decoded;

pub fn decode(_pod: &Pod) -> Decoded {
    Decoded::default()
}

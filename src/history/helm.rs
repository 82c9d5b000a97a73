//! Helm releases stored as Secrets (`helm.sh/release.v1`) or ConfigMaps (`owner=helm`):
//! `release` = base64(gzip(JSON)); the manifest and hooks are parsed for pod templates.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};

use super::Decoded;

pub fn decode_secret(_s: &Secret) -> Decoded {
    Decoded::default()
}

pub fn decode_configmap(_cm: &ConfigMap) -> Decoded {
    Decoded::default()
}

//! This node's Node object: labels and taints.

use k8s_openapi::api::core::v1::Node;

use crate::model::NodeFacts;

pub fn decode(node: &Node) -> NodeFacts {
    NodeFacts {
        name: node.metadata.name.clone().unwrap_or_default(),
        ..Default::default()
    }
}

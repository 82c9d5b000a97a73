//! What this node should hold: the one planning path the daemon and `rollcache plan` share, with
//! this node as the history knows it (known, bare or unknown).

use std::collections::HashMap;

use crate::config::Config;
use crate::history::store::HistorySnapshot;
use crate::inventory::Inventory;
use crate::model::NodeFacts;
use crate::plan::{Plan, PlanConfig, ThisNode};

/// This node as the history knows it.
#[derive(Clone, Copy, Debug)]
pub struct NodeLookup<'a> {
    /// The configured name (empty when none is).
    pub name: &'a str,
    /// Without its expected Node object the node is unknown, not a node without labels or taints.
    pub expected: bool,
    pub facts: Option<&'a NodeFacts>,
    /// Whether the Node objects have been listed (a missing one is then not found, not late).
    pub listed: bool,
    /// Why the Node object cannot be read, if so.
    pub error: Option<&'a str>,
}

impl<'a> NodeLookup<'a> {
    /// From the daemon's view: the store holds this node's object, or says why not.
    pub fn in_snapshot(snap: &'a HistorySnapshot, cfg: &'a Config, expected: bool) -> Self {
        let status = &snap.node_status;
        Self {
            name: cfg.node_name.as_deref().unwrap_or_default(),
            expected,
            facts: snap.node.as_ref(),
            listed: status.synced,
            error: status
                .in_error
                .then_some(status.last_error.as_deref())
                .flatten(),
        }
    }

    /// From Node objects listed once (a one-shot plan): the one named in the config, expected when
    /// a name is given.
    pub fn among(cfg: &'a Config, nodes: &'a [NodeFacts], error: Option<&'a str>) -> Self {
        let name = cfg.node_name.as_deref().unwrap_or_default();
        let expected = !name.is_empty();
        Self {
            name,
            expected,
            facts: nodes.iter().find(|n| expected && n.name == name),
            listed: true,
            error,
        }
    }

    /// Why the expected Node object is not known, for the plan and the report.
    pub fn unknown_reason(&self) -> String {
        let name = self.name;
        match (self.error, self.listed) {
            (Some(e), _) => format!("Node object {name} cannot be read: {e}"),
            (None, false) => format!("Node object {name} not listed yet"),
            (None, true) => format!("Node object {name} not found"),
        }
    }
}

/// What this node should hold: the inventory planned for the node as the history knows it, with
/// the configured extra images and `manual` ones (a prefetch's) held on every node.
pub fn plan_for_node(
    inventory: &Inventory,
    node: &NodeLookup<'_>,
    cfg: &Config,
    manual: impl IntoIterator<Item = String>,
    size_hints: &HashMap<String, u64>,
) -> Plan {
    let nameless = NodeFacts::default();
    let this = match node.facts {
        Some(n) => ThisNode::Known(n),
        None if node.expected => ThisNode::Unknown {
            name: node.name,
            reason: node.unknown_reason(),
        },
        None => ThisNode::Known(&nameless),
    };
    let mut extra_images = cfg.extra_images.clone();
    extra_images.extend(manual);
    let pcfg = PlanConfig {
        hold_everything: cfg.hold_everything,
        extra_images,
    };
    crate::plan::plan_for(inventory, &this, &pcfg, size_hints)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::store::SourceStatus;

    fn reason(status: SourceStatus) -> String {
        let snap = HistorySnapshot {
            node_status: status,
            ..HistorySnapshot::default()
        };
        let cfg = Config {
            node_name: Some("n1".into()),
            ..Config::default()
        };
        NodeLookup::in_snapshot(&snap, &cfg, true).unknown_reason()
    }

    #[test]
    fn unknown_node_says_why() {
        let listing = SourceStatus::default();
        assert_eq!(reason(listing), "Node object n1 not listed yet");
        let gone = SourceStatus {
            synced: true,
            ..SourceStatus::default()
        };
        assert_eq!(reason(gone), "Node object n1 not found");
        // RBAC denying nodes: the watch never lists, and says why.
        let denied = SourceStatus {
            in_error: true,
            last_error: Some("nodes \"n1\" is forbidden".into()),
            ..SourceStatus::default()
        };
        assert_eq!(
            reason(denied),
            "Node object n1 cannot be read: nodes \"n1\" is forbidden"
        );
    }

    #[test]
    fn the_node_is_known_bare_or_unknown_by_one_rule() {
        let inventory = Inventory::default();
        let cfg = Config {
            node_name: Some("n1".into()),
            ..Config::default()
        };
        let hints = HashMap::new();
        let state =
            |node: &NodeLookup<'_>| plan_for_node(&inventory, node, &cfg, [], &hints).node_state;
        let n1 = NodeFacts {
            name: "n1".into(),
            ..NodeFacts::default()
        };
        let nodes = std::slice::from_ref(&n1);
        assert!(state(&NodeLookup::among(&cfg, nodes, None)).known);
        let denied = state(&NodeLookup::among(&cfg, &[], Some("forbidden")));
        assert!(!denied.known);
        assert_eq!(
            denied.unknown_reason.as_deref(),
            Some("Node object n1 cannot be read: forbidden")
        );
        // No Node object expected (no source can provide one): a node without labels or taints.
        let snap = HistorySnapshot::default();
        assert!(state(&NodeLookup::in_snapshot(&snap, &cfg, false)).known);
        assert!(!state(&NodeLookup::in_snapshot(&snap, &cfg, true)).known);
        // No name: the plan does not look for a Node object.
        let unnamed = Config::default();
        assert!(NodeLookup::among(&unnamed, nodes, None).facts.is_none());
        assert!(!NodeLookup::among(&unnamed, nodes, None).expected);
    }
}

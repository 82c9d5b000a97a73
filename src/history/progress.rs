//! How far the history has come, the one predicate set the daemon and `rollcache plan` share:
//! listed (ready), answered (a one-shot plan may go on), fresh (unpinning is allowed).

use crate::config::Config;
use crate::history::store::HistorySnapshot;

/// Whether a Node object should describe this node: it is named, and a source (the API or the
/// directory) can provide its object.
pub fn expects_node(cfg: &Config) -> bool {
    cfg.node_name.is_some() && (cfg.kubernetes || cfg.from_dir.is_some())
}

/// How far the history has come: what readiness, a one-shot plan and unpinning each wait for.
#[derive(Clone, Copy, Debug)]
pub struct Progress<'a> {
    snap: &'a HistorySnapshot,
    expect_node: bool,
}

impl<'a> Progress<'a> {
    pub fn new(snap: &'a HistorySnapshot, expect_node: bool) -> Self {
        Self { snap, expect_node }
    }

    fn sources_listed(&self) -> bool {
        self.snap.sources.values().all(|s| s.synced)
    }

    /// Every source, and the Node watch when a Node is expected, has listed once: the daemon is
    /// ready.
    pub fn listed(&self) -> bool {
        self.sources_listed() && (!self.expect_node || self.snap.node_status.synced)
    }

    /// Listed, or the Node watch failed: a Node that cannot be read (RBAC, errors) makes the node
    /// unknown, not a one-shot plan late.
    pub fn answered(&self) -> bool {
        let node = &self.snap.node_status;
        self.sources_listed() && (!self.expect_node || node.synced || node.in_error)
    }

    /// Fresh enough to unpin: every source fresh, no object that never decoded (it may describe
    /// anything) and, when a Node is expected, that Node known. A node without its Node object
    /// cannot tell which constrained revisions it holds, so their pins stay until it is back.
    pub fn fresh(&self) -> bool {
        let snap = self.snap;
        snap.all_sources_fresh()
            && snap.complete()
            && (!self.expect_node || (snap.node_status.is_fresh() && snap.node.is_some()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NodeFacts;

    #[test]
    fn a_missing_node_makes_the_view_unfit_for_unpinning() {
        let mut snap = HistorySnapshot::default();
        snap.node_status.synced = true;
        assert!(Progress::new(&snap, false).fresh(), "no Node expected");
        assert!(
            !Progress::new(&snap, true).fresh(),
            "Node expected and missing"
        );
        snap.node = Some(NodeFacts::default());
        assert!(Progress::new(&snap, true).fresh());
        snap.node_status.in_error = true;
        assert!(!Progress::new(&snap, true).fresh(), "node watch in error");
    }

    #[test]
    fn a_node_that_cannot_be_read_answers_but_is_not_listed() {
        let mut snap = HistorySnapshot::default();
        snap.node_status.in_error = true;
        let expected = Progress::new(&snap, true);
        assert!(expected.answered());
        assert!(!expected.listed());
        assert!(Progress::new(&snap, false).listed());
    }
}

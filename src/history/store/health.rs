//! What the store says about each source and object: which stream it is, whether it is synced
//! and fresh, its errors, and the objects whose latest version could not be decoded.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::model::{ObjectRef, SourceKind};

use super::super::{DecodeProblem, ProblemKind};

/// One watched stream of objects: a resource, in one namespace or all of them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceId {
    pub kind: SourceKind,
    /// Kubernetes resource (`replicasets`, `secrets`, `configmaps`, ...) or another name for
    /// sources that are not watches (`files`).
    pub resource: String,
    /// None: all namespaces.
    pub namespace: Option<String>,
}

impl SourceId {
    pub fn new(kind: SourceKind, resource: &str, namespace: Option<&str>) -> Self {
        Self {
            kind,
            resource: resource.to_string(),
            namespace: namespace.map(str::to_string),
        }
    }
}

impl std::fmt::Display for SourceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} ({} in {ns})", self.kind.as_str(), self.resource),
            None => write!(f, "{} ({})", self.kind.as_str(), self.resource),
        }
    }
}

/// Which status an update is about: a fact source or this node's Node object.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum StatusKey {
    Source(SourceId),
    Node,
}

/// Health of one source.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SourceStatus {
    /// A complete list has been folded in since start.
    pub synced: bool,
    /// A re-list is in progress: the view is not complete until it is done.
    pub relisting: bool,
    /// The last attempt failed and nothing has flowed since.
    pub in_error: bool,
    pub last_error: Option<String>,
    /// When the last event (or list item) arrived.
    pub last_event: Option<SystemTime>,
    /// Why the source's own view is incomplete although it answers (the fleet inventory: a shard
    /// or the catalog missing, stale or undecodable); nothing is unpinned while it is set.
    pub incomplete: Option<String>,
    /// Objects currently indexed from this source.
    pub objects: usize,
    /// Facts currently indexed from this source.
    pub facts: usize,
    /// Lists started since start (the first one included): more than one means re-lists.
    pub lists: u64,
    /// Decode problems seen since start, by kind.
    pub problems: HashMap<ProblemKind, u64>,
    /// Objects whose latest version decoded with problems, in object order.
    pub unresolved: Arc<[UnresolvedObject]>,
}

/// An object whose latest version decoded with problems, and what it is held at meanwhile.
#[derive(Clone, Debug, PartialEq)]
pub struct UnresolvedObject {
    pub object: ObjectRef,
    pub problems: Vec<DecodeProblem>,
    /// Facts kept from the last version that decoded cleanly (beside what the latest yields).
    pub kept_facts: usize,
    /// A version decoded cleanly since start; when none did, what the object used is unknown.
    pub ever_good: bool,
}

impl UnresolvedObject {
    /// As `/status` shows it.
    pub fn report(&self) -> rollcache_core::status::UnresolvedReport {
        rollcache_core::status::UnresolvedReport {
            object: self.object.to_string(),
            problems: self
                .problems
                .iter()
                .map(|p| format!("{}: {}", p.kind, p.message))
                .collect(),
            kept_facts: self.kept_facts,
            ever_good: self.ever_good,
            holds_unpins: self.holds_unpins(),
        }
    }

    /// No version decoded cleanly since start and not every problem is a refusal (a cap, a
    /// foreign namespace): the object may stand for history of unknown content, so nothing is
    /// unpinned while it stays so. Refused objects do not hold unpins: otherwise anyone who may
    /// write one Secret labelled `owner=helm` could stop unpinning on every node.
    pub fn holds_unpins(&self) -> bool {
        !self.ever_good && !self.problems.iter().all(|p| p.kind.is_refusal())
    }
}

impl SourceStatus {
    /// Synced, not re-listing, not in error, not incomplete: the source's view can be trusted to
    /// be complete.
    pub fn is_fresh(&self) -> bool {
        self.synced && !self.relisting && !self.in_error && self.incomplete.is_none()
    }

    pub fn problems_total(&self) -> u64 {
        self.problems.values().sum()
    }

    /// Objects with unresolved problems that never decoded cleanly: what they need is unknown.
    pub fn never_good(&self) -> usize {
        self.unresolved.iter().filter(|u| u.holds_unpins()).count()
    }
}

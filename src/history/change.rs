//! The one path from any source into the store: a list (reset), an apply, a delete.
//!
//! kubert's index idea: the Kubernetes watchers and the directory source alike say what changed
//! as a `Change`, and `fold` applies it, so that a re-list forgets what it no longer lists in the
//! same way for every source.

use tracing::{debug, warn};

use super::Decoded;
use super::store::{HistoryStore, SourceId};
use crate::model::ObjectRef;

/// What a source saw, its objects already decoded (and the raw objects dropped).
#[derive(Debug)]
pub enum Change {
    /// A complete list begins: what it does not list again is forgotten when it is done.
    ResetBegin,
    /// One object of the list in progress.
    ResetApply(ObjectRef, Decoded),
    /// The list is complete.
    ResetDone,
    /// An object added or changed outside a list.
    Apply(ObjectRef, Decoded),
    Delete(ObjectRef),
}

/// Applies `change` of the source `id` to `store`, logging what its objects had to skip.
pub fn fold(store: &HistoryStore, id: &SourceId, change: Change) {
    match change {
        Change::ResetBegin => {
            debug!(source = %id, "listing");
            store.reset_begin(id);
        }
        Change::ResetApply(object, decoded) => {
            log_problems(id, &decoded);
            store.reset_apply(id, object, decoded);
        }
        Change::ResetDone => store.reset_done(id),
        Change::Apply(object, decoded) => {
            log_problems(id, &decoded);
            store.apply(id, object, decoded);
        }
        Change::Delete(object) => store.delete(id, &object),
    }
}

fn log_problems(id: &SourceId, decoded: &Decoded) {
    for p in &decoded.problems {
        warn!(
            source = %id,
            kind = %p.object.kind,
            namespace = %p.object.namespace,
            name = %p.object.name,
            problem = %p.kind,
            message = %p.message,
            "skipped part of an object that cannot be decoded"
        );
    }
}

//! Reconcile: desired vs present → pulls (bounded, prioritised, jittered, backed off, deduplicated),
//! pins, and safe unpins. The pure `decide` (rollcache-core) chooses; this loop does the I/O.

pub mod credentials;
pub mod daemon;
pub mod node_events;
pub mod node_summary;
mod pass;
pub mod planning;
mod prefetch;
mod publish;
mod pulls;
pub(crate) use publish::unix_now;

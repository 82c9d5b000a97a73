//! Reconcile: desired vs present → pulls (bounded, prioritised, jittered, backed off, deduplicated),
//! pins, and safe unpins. the pure `decide` (rollcache-core) chooses; this loop does the I/O.

pub mod credentials;
pub mod daemon;

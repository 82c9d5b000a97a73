//! Reconcile: desired vs present → pulls (bounded, prioritised, jittered, backed off, deduplicated),
//! pins, and safe unpins. `decide` is the pure core; the loop around it does the I/O.

pub mod credentials;
pub mod daemon;
pub mod decide;

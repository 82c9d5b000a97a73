//! rollcache's pure core: from history facts to what a node must hold, what may be unpinned and
//! which rollbacks would start offline. No I/O, no async runtime, no Kubernetes client.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod decide;
pub mod image_ref;
pub mod inventory;
pub mod model;
pub mod plan;
pub mod problem;
pub mod report;
pub mod rollback;
pub mod scheduling;
pub mod shard;
pub mod status;
pub mod summary;
pub mod text;
pub mod transitions;

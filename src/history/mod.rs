//! History sources: turn Kubernetes and Helm objects into `RevisionFact`s, and nothing else.
//!
//! Decoders are pure (object in, facts out) so that the kube watchers, the file source and the
//! tests share them. A decoder never panics on bad input: it returns what it could decode plus one
//! `DecodeProblem` per thing it had to skip, each naming the object it came from.
//!
//! Drivers: the Kubernetes watchers (`watch`, each stream driven by `drive`) and the directory
//! source (`dir_source`, its files read by `files`, its changes seen through `dirwatch`) say what
//! changed as a `change::Change`, which `change::fold` applies to the `store`; each runs under
//! `supervise`. `inventory` reads the fleet inventory (fleet mode) into the same store, its watch
//! driven by `drive` too. `sources` starts them from the config; `once` reads history once for
//! `plan`.

pub use rollcache_core::problem::{DecodeProblem, Decoded, ProblemKind};

pub mod bounded;
pub mod change;
pub mod controller_revisions;
pub mod dir_source;
pub mod dirwatch;
mod drive;
pub mod files;
pub mod helm;
pub mod inventory;
pub mod manifest;
pub mod meta;
pub mod nodes;
pub mod once;
pub mod pods;
pub mod progress;
pub mod replicasets;
pub mod secrets;
pub mod sources;
pub mod store;
pub mod supervise;
pub mod template;
pub mod watch;

//! rollcache: keeps every image of every retained Kubernetes revision cached and pinned on each
//! node, so that rollbacks work while the registry is unreachable.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod client;
pub mod commands;
pub mod config;
pub mod credentials;
pub mod fleet;
pub mod history;
pub mod http;
pub mod memory;
pub mod metrics;
pub mod node;
pub mod plan_view;
pub mod reconcile;

/// The pure stages, from rollcache-core.
pub use rollcache_core::{
    decide, image_ref, inventory, model, plan, report, scheduling, shard, status,
};

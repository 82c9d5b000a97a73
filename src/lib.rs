//! rollcache: keeps every image of every retained Kubernetes revision cached and pinned on each
//! node, so that rollbacks work while the registry is unreachable.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod client;
pub mod commands;
pub mod config;
pub mod credentials;
pub mod demo;
pub mod history;
pub mod http;
pub mod image_ref;
pub mod inventory;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod node;
pub mod plan;
pub mod plan_view;
pub mod reconcile;
pub mod report;
pub mod testbed;

//! The CLI's commands beyond `node`: each a function the clap layer calls.

pub mod plan;
pub mod run;
pub mod status;

//! The CLI's commands: each a function the clap layer calls, with its arguments.

pub mod node;
pub mod plan;
pub mod run;
pub mod status;

/// How a command prints its answer (`-o`/`--output`): aligned text for people, JSON for scripts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    #[default]
    Table,
    Json,
}

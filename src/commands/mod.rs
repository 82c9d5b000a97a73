//! The CLI's commands: each a function the clap layer calls, with its arguments.

pub mod check_rollback;
pub mod cluster;
pub mod index;
pub mod node;
pub mod plan;
pub mod run;
pub mod status;

/// How a command prints its answer (`-o`/`--output`): aligned text for people that fits
/// [`TABLE_WIDTH`] columns (`table`) or holds every cell whole (`wide`), JSON or YAML for scripts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned text in 100 columns: long names and references clipped with `…`, reasons wrapped.
    #[default]
    Table,
    /// Aligned text, every cell whole.
    Wide,
    /// The whole document, for scripts.
    Json,
    /// The same document as `json`.
    Yaml,
}

/// The terminal width the default tables keep to, as kubectl's do.
pub const TABLE_WIDTH: usize = 100;

impl Output {
    /// The width a table must fit: none for `wide`.
    pub fn width(self) -> Option<usize> {
        match self {
            Output::Wide => None,
            _ => Some(TABLE_WIDTH),
        }
    }

    /// Whether this is a format for people (a table, narrow or wide).
    pub fn is_table(self) -> bool {
        matches!(self, Output::Table | Output::Wide)
    }
}

/// `value` as YAML, the same document `-o json` prints.
pub fn to_yaml<T: serde::Serialize>(value: &T) -> Result<String, YamlError> {
    // One line per value, as kubectl prints it: a reference or a reason folded over lines
    // (`>-`) reads worse and cannot be found with grep.
    let mut options = serde_saphyr::SerializerOptions::default();
    options.prefer_block_scalars = false;
    serde_saphyr::to_string_with_options(value, options).map_err(|e| YamlError(e.to_string()))
}

/// A value that could not be written as YAML (a map key that is not a string, say).
#[derive(Debug, thiserror::Error)]
#[error("encoding YAML output: {0}")]
pub struct YamlError(String);

/// A Kubernetes error as the one line a command ends with, followed by what to try.
pub fn with_hint(e: crate::history::sources::KubeError, hint: &str) -> anyhow::Error {
    anyhow::anyhow!("{e} ({hint})")
}

/// A command's end with an exit code of its own: `check-rollback` tells "not ready" (1) from
/// "could not answer" (2), as scripts need. The binary prints `message` unless it is empty.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    pub code: i32,
    pub message: String,
}

impl Exit {
    /// Exit code 1: the answer is no (the table said why).
    pub const NOT_READY: i32 = 1;
    /// Exit code 2: no answer (usage, a lookup that found nothing, the cluster unreachable).
    pub const NO_ANSWER: i32 = 2;

    pub fn lookup(message: String) -> Self {
        Exit {
            code: Self::NO_ANSWER,
            message,
        }
    }

    /// Any error as "could not answer", an `Exit` keeping its own code.
    pub fn no_answer(e: anyhow::Error) -> anyhow::Error {
        match e.downcast::<Exit>() {
            Ok(exit) => exit.into(),
            Err(e) => Exit::lookup(format!("{e:#}")).into(),
        }
    }
}

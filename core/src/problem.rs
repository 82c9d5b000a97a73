//! What a decoder of outside input returns: the facts it could read, and one named problem per
//! part it had to skip.

use crate::model::{ObjectRef, RevisionFact};

/// What one object decoded into.
#[derive(Debug, Default)]
pub struct Decoded {
    pub facts: Vec<RevisionFact>,
    /// Parts that were skipped (a bad manifest document, an invalid field). The facts that could be
    /// decoded are still returned.
    pub problems: Vec<DecodeProblem>,
}

impl Decoded {
    /// Nothing decoded: the whole object is skipped for one reason.
    pub fn skipped(object: ObjectRef, kind: ProblemKind, message: impl Into<String>) -> Decoded {
        Decoded {
            facts: Vec::new(),
            problems: vec![DecodeProblem {
                object,
                kind,
                message: message.into(),
            }],
        }
    }
}

/// Something in an object from outside that rollcache could not use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{object}: {kind}: {message}")]
pub struct DecodeProblem {
    pub object: ObjectRef,
    pub kind: ProblemKind,
    pub message: String,
}

/// Low-cardinality classification of decode problems, used as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProblemKind {
    Base64,
    Gzip,
    /// Decompressed payload over the cap.
    TooLarge,
    /// Decoding would cost more memory than an object may: too many nodes, too deep, too many
    /// aliases or workloads.
    OverBudget,
    /// A Helm release describes an object in another namespace than the one it is stored in.
    ForeignNamespace,
    Json,
    Yaml,
    MissingField,
    InvalidField,
    UnknownKind,
    InvalidImageRef,
}

impl ProblemKind {
    /// Refused by policy rather than unreadable: the object is over a size or memory cap, or a
    /// Helm release names another namespace. Such an object describes nothing rollcache would
    /// trust whenever it was read, so it never stands for history of unknown content.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            ProblemKind::TooLarge | ProblemKind::OverBudget | ProblemKind::ForeignNamespace
        )
    }

    pub fn metric_label(&self) -> &'static str {
        match self {
            ProblemKind::Base64 => "base64",
            ProblemKind::Gzip => "gzip",
            ProblemKind::TooLarge => "too_large",
            ProblemKind::OverBudget => "over_budget",
            ProblemKind::ForeignNamespace => "foreign_namespace",
            ProblemKind::Json => "json",
            ProblemKind::Yaml => "yaml",
            ProblemKind::MissingField => "missing_field",
            ProblemKind::InvalidField => "invalid_field",
            ProblemKind::UnknownKind => "unknown_kind",
            ProblemKind::InvalidImageRef => "invalid_image_ref",
        }
    }
}

impl std::fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.metric_label())
    }
}

//! The label values of rollcache's metrics as types, each printed exactly as docs/METRICS.md lists it.

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

use crate::model::SourceKind;
use crate::node::NodeError;
use crate::report::Readiness;
use rollcache_core::problem::ProblemKind;

/// A label value type whose text is `as_str`.
macro_rules! label_value {
    ($name:ident) => {
        impl EncodeLabelValue for $name {
            fn encode(&self, e: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
                e.write_str(self.as_str())
            }
        }
    };
}

/// An enum of label values, each variant with its text.
macro_rules! label_enum {
    ($(#[$m:meta])* pub enum $name:ident { $($(#[$vm:meta])* $variant:ident => $text:literal,)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vm])* $variant,)*
        }

        impl $name {
            pub fn as_str(&self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)*
                }
            }
        }
        label_value!($name);
    };
}

/// How a call to the container runtime (a pull, pin or unpin) ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum OpResult {
    Success,
    /// The pull task panicked or was cancelled before the runtime answered.
    TaskFailed,
    /// The runtime or the registry refused.
    Failed(ErrorKind),
}

/// A runtime error's kind (`unauthorized`, `registry_unreachable`, ...), only ever taken from a
/// `NodeError`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct ErrorKind(&'static str);

impl From<&NodeError> for ErrorKind {
    fn from(e: &NodeError) -> Self {
        Self(e.metric_label())
    }
}

impl OpResult {
    pub fn of<T>(result: &Result<T, NodeError>) -> Self {
        match result {
            Ok(_) => Self::Success,
            Err(e) => Self::Failed(e.into()),
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::TaskFailed => "task_failed",
            Self::Failed(ErrorKind(kind)) => kind,
        }
    }
}
label_value!(OpResult);

label_enum! {
    /// How a reconcile pass ended.
    pub enum ReconcileResult {
        Success => "success",
        RuntimeUnreachable => "runtime_unreachable",
    }
}

label_enum! {
    /// What a config file reload did.
    pub enum ReloadResult {
        Applied => "applied",
        Unchanged => "unchanged",
        Rejected => "rejected",
    }
}

impl From<&crate::config::reload::ReloadOutcome> for ReloadResult {
    fn from(o: &crate::config::reload::ReloadOutcome) -> Self {
        use crate::config::reload::ReloadOutcome;
        match o {
            ReloadOutcome::Applied { .. } => Self::Applied,
            ReloadOutcome::Unchanged => Self::Unchanged,
            ReloadOutcome::Rejected { .. } => Self::Rejected,
        }
    }
}

label_enum! {
    /// How the admin API answered a manual prefetch.
    pub enum PrefetchResult {
        Accepted => "accepted",
        /// The reconcile loop refused it (nothing matches, over the cap, ...).
        Rejected => "rejected",
        /// Not a valid request.
        Invalid => "invalid",
        /// The loop's queue was full or closed.
        Busy => "busy",
        /// The loop did not answer in time.
        Timeout => "timeout",
    }
}

label_enum! {
    /// An Event on the Node, by its reason (as `kubectl events` shows it).
    pub enum EventReason {
        RevisionNotOfflineSafe => "RevisionNotOfflineSafe",
        RevisionOfflineSafe => "RevisionOfflineSafe",
        PinnedImageRemoved => "PinnedImageRemoved",
        PinnedImageRepulled => "PinnedImageRepulled",
        /// The one Event that stands for a pass's transitions beyond the first few.
        MoreTransitions => "MoreTransitions",
    }
}

impl From<&rollcache_core::transitions::Transition> for EventReason {
    fn from(t: &rollcache_core::transitions::Transition) -> Self {
        use rollcache_core::transitions::Transition as T;
        match t {
            T::RevisionNotOfflineSafe { .. } => Self::RevisionNotOfflineSafe,
            T::RevisionOfflineSafe { .. } => Self::RevisionOfflineSafe,
            T::PinnedImageRemoved { .. } => Self::PinnedImageRemoved,
            T::PinnedImageRepulled { .. } => Self::PinnedImageRepulled,
        }
    }
}

label_enum! {
    /// What became of an Event on the Node.
    pub enum EventResult {
        Published => "published",
        /// The API refused it for lack of permission (403): RBAC misses `create`/`patch` on
        /// `events.k8s.io` events in `default`.
        Denied => "denied",
        /// Any other API error, or the API unreachable.
        Failed => "failed",
        /// Not sent: the queue to the Event task was full (the API slower than the passes).
        Dropped => "dropped",
    }
}

/// Where facts, errors or decode problems come from: a kind of history source, the Node watch, or
/// the inventory (problems found when revisions are assembled).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Source {
    History(SourceKind),
    Node,
    Inventory,
}

impl Source {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::History(kind) => kind.as_str(),
            Self::Node => "node",
            Self::Inventory => "inventory",
        }
    }
}
label_value!(Source);

/// A decode problem's kind as a label value.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Problem(pub ProblemKind);

impl Problem {
    pub fn as_str(&self) -> &'static str {
        self.0.metric_label()
    }
}
label_value!(Problem);

/// A revision's rollback readiness as a label value.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct ReadinessValue(pub Readiness);

impl ReadinessValue {
    pub fn as_str(&self) -> &'static str {
        self.0.as_str()
    }
}
label_value!(ReadinessValue);

label_enum! {
    /// A node state that `rollcache_node_state` reports.
    pub enum NodeStateValue {
        Unknown => "unknown",
        Cordoned => "cordoned",
        NotReady => "not_ready",
        Unreachable => "unreachable",
        MemoryPressure => "memory_pressure",
        DiskPressure => "disk_pressure",
        PidPressure => "pid_pressure",
        NetworkUnavailable => "network_unavailable",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpResultLabel {
    pub result: OpResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileResultLabel {
    pub result: ReconcileResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadResultLabel {
    pub result: ReloadResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PrefetchResultLabel {
    pub result: PrefetchResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabel {
    pub reason: EventReason,
    pub result: EventResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadinessLabel {
    pub readiness: ReadinessValue,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: Source,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeStateLabel {
    pub state: NodeStateValue,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProblemLabel {
    pub source: Source,
    pub kind: Problem,
}

label_enum! {
    /// Why a cached image still sends the kubelet to the registry.
    pub enum NeedsRegistryCause {
        /// `imagePullPolicy: Always`, also the default for `:latest` and untagged images.
        PullPolicyAlways => "pull_policy_always",
        /// The kubelet's credential verification policy re-checks the pod's pull secrets.
        CredentialVerification => "credential_verification",
    }
}

/// One image of one revision that needs the registry. Image references are a label here only:
/// the series exist for revisions in `needs_registry` alone and are capped, so that an alert can
/// name the container to fix.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NeedsRegistryLabel {
    pub namespace: String,
    /// `KIND/NAME`, as the CLI names a workload.
    pub workload: String,
    /// The workload's revision number, empty when only Helm numbers it.
    pub revision: String,
    pub container: String,
    pub image: String,
    pub cause: NeedsRegistryCause,
}

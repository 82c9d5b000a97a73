//! The inventory: workloads → revisions → images, built from the facts of every source.
//!
//! The same revision seen through several sources (a ReplicaSet and a Helm release, a
//! ControllerRevision and a Helm release, a pod and its ReplicaSet) is one revision with several
//! sources. Within a workload a revision is identified by its pod template content (normalised
//! images, effective pull policies, pull secrets, scheduling); a pod joins the revision of the
//! ReplicaSet that owns it, or else the revision with the same images.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::image_ref::ImageRef;
use crate::model::{ObjectRef, RevisionFact, Scheduling, SourceKind, WorkloadId};
use crate::problem::{DecodeProblem, ProblemKind};

/// `imagePullPolicy` after Kubernetes defaulting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    /// As written, else the API server's default: `Always` for `:latest` or a reference with
    /// neither tag nor digest, `IfNotPresent` otherwise (also for unparsable references, as
    /// `SetDefaults_Container` does).
    pub fn effective(written: Option<&str>, image: Option<&ImageRef>) -> PullPolicy {
        match written {
            Some("Always") => PullPolicy::Always,
            Some("IfNotPresent") => PullPolicy::IfNotPresent,
            Some("Never") => PullPolicy::Never,
            _ => match image {
                Some(r) if r.is_latest_or_untagged() => PullPolicy::Always,
                _ => PullPolicy::IfNotPresent,
            },
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// A stable identity of a pod template's content within its workload (a truncated SHA-256).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TemplateId(pub u64);

impl fmt::Display for TemplateId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl Serialize for TemplateId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TemplateId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        u64::from_str_radix(&s, 16)
            .map(TemplateId)
            .map_err(serde::de::Error::custom)
    }
}

/// One revision of one workload, stable across rebuilds (revision numbers are not: a Deployment
/// rollback renumbers the old ReplicaSet).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RevisionKey {
    pub workload: WorkloadId,
    pub template: TemplateId,
}

impl fmt::Display for RevisionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.workload, self.template)
    }
}

/// One container's image in a revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageUse {
    pub container: String,
    pub init: bool,
    /// The reference as written in the template.
    pub written: String,
    /// The normalised reference; None when `written` is not a valid reference (see `error`).
    pub image: Option<ImageRef>,
    pub error: Option<String>,
    pub pull_policy: PullPolicy,
    /// False when the policy is Kubernetes' default rather than written in the template.
    pub pull_policy_written: bool,
    /// The digest a running pod of this revision actually uses, when a pod told.
    pub image_id: Option<String>,
}

/// One object that describes a revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionSource {
    pub kind: SourceKind,
    pub object: ObjectRef,
    pub revision: Option<i64>,
    pub created: Option<i64>,
    pub current: bool,
    pub status: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Revision {
    pub key: RevisionKey,
    /// The controller's number (ReplicaSet `deployment.kubernetes.io/revision`, ControllerRevision
    /// `revision`): the highest when several sources give one.
    pub number: Option<i64>,
    /// The Helm release this revision was deployed by, when one was seen.
    pub helm_release: Option<String>,
    /// Helm release versions whose manifest has this template, newest first (a `helm upgrade`
    /// that left the template alone gives one revision several versions).
    pub helm_versions: Vec<i64>,
    /// When the revision first appeared (earliest creation among its controller and Helm
    /// sources; pods only when nothing else tells).
    pub created: Option<i64>,
    /// A source says it runs now, or it is the highest-numbered ControllerRevision.
    pub current: bool,
    /// Helm status of the newest Helm version, else the first status a source gave.
    pub status: Option<String>,
    pub sources: Vec<RevisionSource>,
    /// Init containers first, then containers, in template order.
    pub images: Vec<ImageUse>,
    pub pull_secrets: Vec<String>,
    pub service_account: Option<String>,
    pub scheduling: Scheduling,
}

impl Revision {
    /// The service account whose imagePullSecrets count too (`default` when unset).
    pub fn service_account_name(&self) -> &str {
        match self.service_account.as_deref() {
            Some(s) if !s.is_empty() => s,
            _ => "default",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    pub id: WorkloadId,
    /// The Helm release the workload belongs to (from its newest fact naming one).
    pub helm_release: Option<String>,
    /// Newest first: by controller number, then Helm version, then creation time.
    pub revisions: Vec<Revision>,
}

/// Every workload, sorted by id.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    pub workloads: Vec<Workload>,
}

impl Inventory {
    pub fn workload(&self, id: &WorkloadId) -> Option<&Workload> {
        self.workloads
            .binary_search_by(|w| w.id.cmp(id))
            .ok()
            .map(|i| &self.workloads[i])
    }

    pub fn revision(&self, key: &RevisionKey) -> Option<&Revision> {
        self.workload(&key.workload)?
            .revisions
            .iter()
            .find(|r| r.key.template == key.template)
    }

    pub fn revision_count(&self) -> usize {
        self.workloads.iter().map(|w| w.revisions.len()).sum()
    }

    /// Builds the inventory; facts may come in any order. Problems name the object whose
    /// template has an invalid image reference (the rest of that template is still used).
    pub fn build<'a>(
        facts: impl IntoIterator<Item = &'a RevisionFact>,
    ) -> (Inventory, Vec<DecodeProblem>) {
        let mut b = Builder::default();
        let mut pods = Vec::new();
        for fact in facts {
            match Class::of(fact) {
                Class::Pod => pods.push(fact),
                class => b.add_template_fact(fact, class),
            }
        }
        b.index_images();
        for fact in pods {
            b.add_pod_fact(fact);
        }
        (b.finish(), b.problems)
    }
}

mod build;
mod identity;

use build::{Builder, Class};

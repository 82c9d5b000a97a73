//! The plan: which images this node must hold, in which order, and why — pure, from the
//! inventory, this node's facts and the config.
//!
//! A revision is wanted on a node when a pod of it could run there, decided as the scheduler
//! and the kubelet decide (`nodeName`, `nodeSelector`, required node affinity, NoSchedule and
//! NoExecute taints against tolerations), unless `hold_everything` is set.
//!
//! Maintenance and weather are not history: cordon and the taints the node lifecycle controller
//! sets by itself are ignored (and reported). A node whose Node object is missing is unknown:
//! revisions with scheduling constraints wait for it instead of being decided "not here".

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::image_ref::ImageRef;
use crate::inventory::{Inventory, PullPolicy, Revision, RevisionKey};
use crate::model::NodeFacts;
use crate::model::SecretRef;
pub use crate::scheduling::{NodeState, NotHeld, ThisNode};
use crate::scheduling::{SchedulingError, check_scheduling, is_constrained};

/// What the plan needs from the configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanConfig {
    /// Hold every revision's images whatever the scheduling constraints say.
    pub hold_everything: bool,
    /// Images held on every node, right after the current revisions.
    pub extra_images: Vec<String>,
}

/// Priority tiers; an image's `priority` number is derived from them (lower is more important).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tier {
    Current,
    Extra,
    Retained,
}

pub const PRIORITY_CURRENT: u32 = 0;
pub const PRIORITY_EXTRA: u32 = 1;
/// Retained revisions: this plus their rank among their workload's non-current revisions
/// (0 = the newest).
pub const PRIORITY_RETAINED_BASE: u32 = 2;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredImage {
    /// Normalised `registry/repository[:tag][@digest]`.
    pub reference: String,
    /// What to pull: the digest form when there is a digest.
    pub pull_ref: String,
    pub registry: String,
    pub priority: u32,
    pub tier: Tier,
    /// From the size hints, when known.
    pub size_bytes: Option<u64>,
    /// Wanted revisions that use this image, workload by workload, newest first.
    pub needed_by: Vec<RevisionKey>,
    /// Pull secrets of those revisions (`imagePullSecrets`), in first-seen order.
    pub pull_secrets: Vec<SecretRef>,
    /// Service accounts `(namespace, name)` whose imagePullSecrets count: those of revisions
    /// whose template names no pull secret (Kubernetes then copies the account's).
    pub service_accounts: Vec<(String, String)>,
    /// Listed in `extra_images`.
    pub extra: bool,
    /// Effective pull policies of the containers using it, sorted.
    pub pull_policies: Vec<PullPolicy>,
    /// Every user says `imagePullPolicy: Never`: the kubelet never pulls it, so it must already
    /// be on the node; it is held (pinned) all the same.
    pub never_pulled: bool,
}

/// Every revision of the inventory, with what the plan decided for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedRevision {
    pub key: RevisionKey,
    pub number: Option<i64>,
    pub helm_release: Option<String>,
    pub helm_versions: Vec<i64>,
    pub current: bool,
    /// Age rank among the workload's non-current revisions (0 = newest); None when current.
    pub rank: Option<u32>,
    pub wanted: bool,
    pub not_held: Option<NotHeld>,
    /// Normalised references (as written when invalid).
    pub images: Vec<String>,
}

impl PlannedRevision {
    /// `rev N (helm release R vA, vB)` — what people call this revision.
    pub fn label(&self) -> String {
        let mut s = match self.number {
            Some(n) => format!("rev {n}"),
            None => format!("template {}", self.key.template),
        };
        if let Some(rel) = &self.helm_release {
            if self.helm_versions.is_empty() {
                s.push_str(&format!(" (helm release {rel})"));
            } else {
                let vs: Vec<String> = self.helm_versions.iter().map(|v| format!("v{v}")).collect();
                s.push_str(&format!(" (helm release {rel} {})", vs.join(", ")));
            }
        }
        s
    }
}

/// Something the plan could not use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanProblem {
    pub revision: Option<RevisionKey>,
    pub message: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub node: String,
    /// Known or not, cordoned, weather taints ignored.
    #[serde(default)]
    pub node_state: NodeState,
    pub hold_everything: bool,
    /// In pull order: priority, then smaller images first, unknown sizes last.
    pub images: Vec<DesiredImage>,
    /// Workload by workload, newest revision first.
    pub revisions: Vec<PlannedRevision>,
    pub problems: Vec<PlanProblem>,
}

impl Plan {
    /// Finds a revision; `revisions` is grouped by workload in id order, so this is a binary
    /// search plus a scan of one workload's revisions.
    pub fn revision(&self, key: &RevisionKey) -> Option<&PlannedRevision> {
        let start = self
            .revisions
            .partition_point(|r| r.key.workload < key.workload);
        self.revisions[start..]
            .iter()
            .take_while(|r| r.key.workload == key.workload)
            .find(|r| r.key.template == key.template)
    }
}

struct Acc {
    image: DesiredImage,
}

/// Decides what this node holds. `size_hints` maps a normalised reference (or a pull reference)
/// to its size in bytes.
pub fn plan(
    inv: &Inventory,
    node: &NodeFacts,
    cfg: &PlanConfig,
    size_hints: &HashMap<String, u64>,
) -> Plan {
    plan_for(inv, &ThisNode::Known(node), cfg, size_hints)
}

/// `plan` for a node that may be unknown.
pub fn plan_for(
    inv: &Inventory,
    node: &ThisNode<'_>,
    cfg: &PlanConfig,
    size_hints: &HashMap<String, u64>,
) -> Plan {
    let mut out = Plan {
        node: match node {
            ThisNode::Known(n) => n.name.clone(),
            ThisNode::Unknown { name, .. } => (*name).to_owned(),
        },
        node_state: NodeState::of(node),
        hold_everything: cfg.hold_everything,
        ..Plan::default()
    };
    let mut acc: HashMap<String, Acc> = HashMap::new();
    let mut order: Vec<String> = Vec::new();

    for w in &inv.workloads {
        let mut rank = 0u32;
        for rev in &w.revisions {
            let (priority, rev_rank) = if rev.current {
                (PRIORITY_CURRENT, None)
            } else {
                rank += 1;
                (
                    PRIORITY_RETAINED_BASE.saturating_add(rank - 1),
                    Some(rank - 1),
                )
            };
            let verdict = match node {
                _ if cfg.hold_everything => Ok(()),
                ThisNode::Known(n) => check_scheduling(&rev.scheduling, &w.id.kind, n),
                // Unconstrained templates could run on any node, this one included.
                ThisNode::Unknown { reason, .. } if is_constrained(&rev.scheduling) => {
                    Err(SchedulingError::NotHeld(NotHeld::NodeUnknown {
                        detail: reason.clone(),
                    }))
                }
                ThisNode::Unknown { .. } => Ok(()),
            };
            let (wanted, not_held) = match verdict {
                Ok(()) => (true, None),
                Err(SchedulingError::NotHeld(r)) => (false, Some(r)),
                Err(SchedulingError::Invalid(msg, r)) => {
                    out.problems.push(PlanProblem {
                        revision: Some(rev.key.clone()),
                        message: msg,
                    });
                    (false, Some(r))
                }
            };
            if wanted {
                add_revision_images(&mut acc, &mut order, rev, priority);
            }
            out.revisions.push(PlannedRevision {
                key: rev.key.clone(),
                number: rev.number,
                helm_release: rev.helm_release.clone().or_else(|| w.helm_release.clone()),
                helm_versions: rev.helm_versions.clone(),
                current: rev.current,
                rank: rev_rank,
                wanted,
                not_held,
                images: rev
                    .images
                    .iter()
                    .map(|u| {
                        u.image
                            .as_ref()
                            .map_or_else(|| u.written.clone(), ImageRef::canonical)
                    })
                    .collect(),
            });
        }
    }

    for raw in &cfg.extra_images {
        match ImageRef::parse(raw) {
            Ok(r) => {
                let a = entry(&mut acc, &mut order, &r);
                a.image.extra = true;
                if PRIORITY_EXTRA < a.image.priority {
                    a.image.priority = PRIORITY_EXTRA;
                }
            }
            Err(e) => out.problems.push(PlanProblem {
                revision: None,
                message: format!("extra_images: {e}; fix the entry in the configuration"),
            }),
        }
    }

    let mut images: Vec<DesiredImage> = order
        .into_iter()
        .filter_map(|k| acc.remove(&k))
        .map(|a| {
            let mut d = a.image;
            d.tier = match d.priority {
                PRIORITY_CURRENT => Tier::Current,
                PRIORITY_EXTRA => Tier::Extra,
                _ => Tier::Retained,
            };
            d.size_bytes = size_hints
                .get(&d.reference)
                .or_else(|| size_hints.get(&d.pull_ref))
                .copied();
            d.pull_policies.sort_unstable();
            d.pull_policies.dedup();
            d.never_pulled = !d.extra && d.pull_policies == [PullPolicy::Never];
            d
        })
        .collect();
    images.sort_by(|a, b| {
        (
            a.priority,
            a.size_bytes.is_none(),
            a.size_bytes,
            &a.reference,
        )
            .cmp(&(
                b.priority,
                b.size_bytes.is_none(),
                b.size_bytes,
                &b.reference,
            ))
    });
    out.images = images;
    out
}

fn entry<'a>(
    acc: &'a mut HashMap<String, Acc>,
    order: &mut Vec<String>,
    r: &ImageRef,
) -> &'a mut Acc {
    let reference = r.canonical();
    if !acc.contains_key(&reference) {
        order.push(reference.clone());
    }
    acc.entry(reference.clone()).or_insert_with(|| Acc {
        image: DesiredImage {
            pull_ref: r.pull_ref(),
            registry: r.registry.clone(),
            reference,
            priority: u32::MAX,
            tier: Tier::Retained,
            size_bytes: None,
            needed_by: Vec::new(),
            pull_secrets: Vec::new(),
            service_accounts: Vec::new(),
            extra: false,
            pull_policies: Vec::new(),
            never_pulled: false,
        },
    })
}

fn add_revision_images(
    acc: &mut HashMap<String, Acc>,
    order: &mut Vec<String>,
    rev: &Revision,
    priority: u32,
) {
    let ns = &rev.key.workload.namespace;
    for u in &rev.images {
        let Some(r) = &u.image else { continue };
        let a = entry(acc, order, r);
        let d = &mut a.image;
        d.priority = d.priority.min(priority);
        if d.needed_by.last() != Some(&rev.key) {
            d.needed_by.push(rev.key.clone());
        }
        if !d.pull_policies.contains(&u.pull_policy) {
            d.pull_policies.push(u.pull_policy);
        }
        for s in &rev.pull_secrets {
            if !d
                .pull_secrets
                .iter()
                .any(|x| &x.namespace == ns && &x.name == s)
            {
                d.pull_secrets.push(SecretRef {
                    namespace: ns.clone(),
                    name: s.clone(),
                });
            }
        }
        // The ServiceAccount admission plugin gives a pod its account's pull secrets only
        // when the template names none.
        let sa = rev.service_account_name();
        if rev.pull_secrets.is_empty()
            && !d.service_accounts.iter().any(|(n, s)| n == ns && s == sa)
        {
            d.service_accounts.push((ns.clone(), sa.to_owned()));
        }
    }
}

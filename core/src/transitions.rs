//! Transitions a person should hear about on the Node: a held revision that stops being
//! offline-safe (and becomes safe again), an image rollcache pinned that someone else removed (and
//! its return). Pure: each pass's report and runtime listing against what the last pass saw.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::decide::{Held, find_held};
use crate::model::WorkloadId;
use crate::report::{Readiness, Report};

/// Longest note sent: the API server refuses an Event whose note exceeds 1 kB.
pub const MAX_NOTE: usize = 1000;

/// One revision, as a person names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevisionName {
    pub workload: WorkloadId,
    pub helm_release: Option<String>,
    pub revision: Option<i64>,
    pub helm_revision: Option<i64>,
}

impl std::fmt::Display for RevisionName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let w = &self.workload;
        write!(f, "{} {}/{}", w.kind, w.namespace, w.name)?;
        if let Some(n) = self.revision {
            write!(f, " revision {n}")?;
        }
        if let Some(release) = &self.helm_release {
            write!(f, " (Helm release {release}")?;
            if let Some(n) = self.helm_revision {
                write!(f, " revision {n}")?;
            }
            write!(f, ")")?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    /// A held revision that was offline-safe no longer is.
    RevisionNotOfflineSafe {
        revision: RevisionName,
        readiness: Readiness,
        reason: String,
    },
    /// A revision reported by `RevisionNotOfflineSafe` is offline-safe again.
    RevisionOfflineSafe { revision: RevisionName },
    /// An image rollcache had pinned is gone from the runtime, and rollcache did not unpin it.
    PinnedImageRemoved { reference: String },
    /// A removed image is back and pinned.
    PinnedImageRepulled { reference: String },
}

impl Transition {
    /// The Event reason, in the API's UpperCamelCase.
    pub fn reason(&self) -> &'static str {
        match self {
            Transition::RevisionNotOfflineSafe { .. } => "RevisionNotOfflineSafe",
            Transition::RevisionOfflineSafe { .. } => "RevisionOfflineSafe",
            Transition::PinnedImageRemoved { .. } => "PinnedImageRemoved",
            Transition::PinnedImageRepulled { .. } => "PinnedImageRepulled",
        }
    }

    pub fn is_warning(&self) -> bool {
        matches!(
            self,
            Transition::RevisionNotOfflineSafe { .. } | Transition::PinnedImageRemoved { .. }
        )
    }

    /// The workload it concerns, if any (the Event's related object).
    pub fn workload(&self) -> Option<&WorkloadId> {
        match self {
            Transition::RevisionNotOfflineSafe { revision, .. }
            | Transition::RevisionOfflineSafe { revision } => Some(&revision.workload),
            _ => None,
        }
    }

    /// What a person reads in `kubectl events`, at most `MAX_NOTE` bytes.
    pub fn note(&self) -> String {
        let note = match self {
            Transition::RevisionNotOfflineSafe {
                revision,
                readiness,
                reason,
            } => format!(
                "{revision} is no longer offline-safe on this node: {}: {reason}",
                readiness.as_str()
            ),
            Transition::RevisionOfflineSafe { revision } => {
                format!("{revision} is offline-safe on this node again")
            }
            Transition::PinnedImageRemoved { reference } => format!(
                "{reference} was pinned by rollcache and removed by something else (crictl rmi, a GC outside the kubelet); pulling it again"
            ),
            Transition::PinnedImageRepulled { reference } => {
                format!("{reference} removed earlier is pulled and pinned again")
            }
        };
        truncate(note, MAX_NOTE)
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max - 3;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

/// One pass's transitions as sent: the first few, and how many more of each reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    pub shown: Vec<Transition>,
    pub more: BTreeMap<&'static str, usize>,
    /// A warning is among those left out.
    pub more_warns: bool,
}

impl Batch {
    /// At most `max` transitions, warnings first; the rest counted by reason.
    pub fn of(mut all: Vec<Transition>, max: usize) -> Batch {
        all.sort_by_key(|t| !t.is_warning());
        let mut more = BTreeMap::new();
        let mut more_warns = false;
        for t in all.iter().skip(max) {
            *more.entry(t.reason()).or_default() += 1;
            more_warns |= t.is_warning();
        }
        all.truncate(max);
        Batch {
            shown: all,
            more,
            more_warns,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.shown.is_empty() && self.more.is_empty()
    }

    /// The note of the one Event that stands for the rest, if any were left out.
    pub fn more_note(&self) -> Option<String> {
        if self.more.is_empty() {
            return None;
        }
        let total: usize = self.more.values().sum();
        let each: Vec<String> = self.more.iter().map(|(r, n)| format!("{n} {r}")).collect();
        Some(format!(
            "and {total} more ({}): see `rollcache status` on this node",
            each.join(", ")
        ))
    }
}

/// Where a held revision stands, ignoring the states it passes through (pulling, a source
/// re-syncing), so that a re-pull or a watch restart is not reported as a loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Settled {
    Safe,
    /// `reported`: its loss of safety was reported (so its recovery is too).
    NotSafe {
        reported: bool,
    },
}

type RevisionKey = (WorkloadId, Option<i64>, Option<i64>);

/// What the last passes saw; the first observed pass is the baseline and reports nothing.
#[derive(Debug, Default)]
pub struct Watch {
    revisions: Option<HashMap<RevisionKey, Settled>>,
    /// Wanted images that were present and pinned by rollcache, by reference.
    pinned: Option<BTreeSet<String>>,
    /// Images reported removed and not back yet.
    removed: BTreeSet<String>,
}

impl Watch {
    /// The transitions from the last observed pass to this one: `report` of this pass,
    /// `held` as the runtime listed it (after this pass's pins), `wanted` the references the plan
    /// holds. Only passes where the runtime answered may be observed: an unreachable runtime
    /// holds nothing, which is not a loss.
    pub fn observe(&mut self, report: &Report, held: &[Held], wanted: &[&str]) -> Vec<Transition> {
        let mut out = Vec::new();
        self.observe_revisions(report, &mut out);
        self.observe_images(held, wanted, &mut out);
        out
    }

    fn observe_revisions(&mut self, report: &Report, out: &mut Vec<Transition>) {
        let prev = self.revisions.take().unwrap_or_default();
        let mut now = HashMap::with_capacity(prev.len());
        for w in &report.workloads {
            let id = WorkloadId::new(&w.kind, &w.namespace, &w.name);
            for r in &w.revisions {
                let Some(readiness) = r.readiness else {
                    continue;
                };
                let key = (id.clone(), r.revision, r.helm_revision);
                let before = prev.get(&key).copied();
                let name = || RevisionName {
                    workload: id.clone(),
                    helm_release: w.helm_release.clone(),
                    revision: r.revision,
                    helm_revision: r.helm_revision,
                };
                let settled = match readiness {
                    Readiness::Pulling | Readiness::Stale => before,
                    Readiness::OfflineSafe => {
                        if before == Some(Settled::NotSafe { reported: true }) {
                            out.push(Transition::RevisionOfflineSafe { revision: name() });
                        }
                        Some(Settled::Safe)
                    }
                    _ => Some(match before {
                        Some(Settled::Safe) => {
                            out.push(Transition::RevisionNotOfflineSafe {
                                revision: name(),
                                readiness,
                                reason: r.reasons.join("; "),
                            });
                            Settled::NotSafe { reported: true }
                        }
                        Some(Settled::NotSafe { reported }) => Settled::NotSafe { reported },
                        _ => Settled::NotSafe { reported: false },
                    }),
                };
                if let Some(s) = settled {
                    now.insert(key, s);
                }
            }
        }
        self.revisions = Some(now);
    }

    fn observe_images(&mut self, held: &[Held], wanted: &[&str], out: &mut Vec<Transition>) {
        let mut pinned = BTreeSet::new();
        let mut absent = BTreeSet::new();
        for &reference in wanted {
            match find_held(held, reference) {
                Some(h) if h.pinned_by_us => {
                    pinned.insert(reference.to_owned());
                }
                Some(_) => {}
                None => {
                    absent.insert(reference);
                }
            }
        }
        if let Some(prev) = &self.pinned {
            for reference in prev {
                if absent.contains(reference.as_str()) && self.removed.insert(reference.clone()) {
                    out.push(Transition::PinnedImageRemoved {
                        reference: reference.clone(),
                    });
                }
            }
        }
        let wanted: BTreeSet<&str> = wanted.iter().copied().collect();
        self.removed.retain(|reference| {
            if pinned.contains(reference) {
                out.push(Transition::PinnedImageRepulled {
                    reference: reference.clone(),
                });
                return false;
            }
            // No longer wanted: it is not coming back, and that is not news.
            wanted.contains(reference.as_str())
        });
        self.pinned = Some(pinned);
    }
}

#[cfg(test)]
mod tests;

//! Whether a rollback would start from the cache: the target revision found in the inventory
//! (what `kubectl rollout undo` and `helm rollback` pick without a number), and each eligible
//! node's answer read from the summary its agent published.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::inventory::{Inventory, RevisionKey};
use crate::summary::NodeSummary;

/// What to roll back: one workload, or every workload of a Helm release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    Workload {
        kind: String,
        namespace: String,
        name: String,
    },
    HelmRelease {
        namespace: String,
        name: String,
    },
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Workload {
                kind,
                namespace,
                name,
            } => write!(f, "{kind}/{namespace}/{name}"),
            Selector::HelmRelease { namespace, name } => {
                write!(f, "helm release {namespace}/{name}")
            }
        }
    }
}

/// The workload kind kubectl means by `text` (case-insensitive, plural and short names too).
pub fn workload_kind(text: &str) -> Option<&'static str> {
    match text.to_ascii_lowercase().as_str() {
        "deployment" | "deployments" | "deploy" => Some("Deployment"),
        "statefulset" | "statefulsets" | "sts" => Some("StatefulSet"),
        "daemonset" | "daemonsets" | "ds" => Some("DaemonSet"),
        _ => None,
    }
}

/// The revision(s) a rollback goes to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// The controller's revision number, or the Helm release revision.
    pub revision: i64,
    /// Picked as the previous revision (no `--to-revision` given).
    pub previous: bool,
    /// One per workload the rollback changes (several for a Helm release).
    pub revisions: Vec<TargetRevision>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetRevision {
    /// `Kind/namespace/name`, as the summary names it.
    pub workload: String,
    #[serde(skip)]
    pub key: Option<RevisionKey>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub helm_revisions: Vec<i64>,
}

/// Why no target could be found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LookupError {
    /// Nothing of that name in the history.
    NotFound(String),
    /// The revision asked for is not retained; `have` lists those that are.
    NotRetained {
        what: String,
        wanted: i64,
        have: Vec<i64>,
    },
    /// Only one revision is retained: there is nothing to roll back to.
    NoPrevious { what: String, have: Vec<i64> },
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |have: &[i64]| {
            let v: Vec<String> = have.iter().map(i64::to_string).collect();
            if v.is_empty() {
                "none".to_owned()
            } else {
                v.join(", ")
            }
        };
        match self {
            LookupError::NotFound(what) => write!(f, "{what}: not found in the history"),
            LookupError::NotRetained { what, wanted, have } => write!(
                f,
                "{what}: revision {wanted} is not retained; retained revisions: {}",
                list(have)
            ),
            LookupError::NoPrevious { what, have } => write!(
                f,
                "{what}: no previous revision to roll back to; retained revisions: {}",
                list(have)
            ),
        }
    }
}

/// The revision(s) of `selector` a rollback to `to` (or, without it, to the previous revision)
/// would start.
pub fn find_target(
    inv: &Inventory,
    selector: &Selector,
    to: Option<i64>,
) -> Result<Target, LookupError> {
    let what = selector.to_string();
    match selector {
        Selector::Workload {
            kind,
            namespace,
            name,
        } => {
            let w = inv
                .workloads
                .iter()
                .find(|w| w.id.kind == *kind && w.id.namespace == *namespace && w.id.name == *name)
                .ok_or_else(|| LookupError::NotFound(what.clone()))?;
            let mut have: Vec<i64> = w.revisions.iter().filter_map(|r| r.number).collect();
            have.sort_unstable();
            have.dedup();
            // `kubectl rollout undo`: the highest revision below the current one.
            let current = w
                .revisions
                .iter()
                .find(|r| r.current)
                .and_then(|r| r.number)
                .or_else(|| have.last().copied());
            let (wanted, previous) = match to {
                Some(n) => (n, false),
                None => {
                    let prev = have.iter().rev().find(|n| Some(**n) < current).copied();
                    let prev = prev.ok_or_else(|| LookupError::NoPrevious {
                        what: what.clone(),
                        have: have.clone(),
                    })?;
                    (prev, true)
                }
            };
            let rev = w
                .revisions
                .iter()
                .find(|r| r.number == Some(wanted))
                .ok_or_else(|| LookupError::NotRetained {
                    what: what.clone(),
                    wanted,
                    have: have.clone(),
                })?;
            Ok(Target {
                revision: wanted,
                previous,
                revisions: vec![TargetRevision {
                    workload: w.id.to_string(),
                    key: Some(rev.key.clone()),
                    revision: rev.number,
                    helm_revisions: rev.helm_versions.clone(),
                }],
            })
        }
        Selector::HelmRelease { namespace, name } => {
            let of_release = |w: &&crate::inventory::Workload| {
                w.id.namespace == *namespace
                    && (w.helm_release.as_deref() == Some(name)
                        || w.revisions
                            .iter()
                            .any(|r| r.helm_release.as_deref() == Some(name)))
            };
            let workloads: Vec<_> = inv.workloads.iter().filter(of_release).collect();
            if workloads.is_empty() {
                return Err(LookupError::NotFound(what));
            }
            let mut have: Vec<i64> = workloads
                .iter()
                .flat_map(|w| &w.revisions)
                .flat_map(|r| r.helm_versions.iter().copied())
                .collect();
            have.sort_unstable();
            have.dedup();
            // `helm rollback` without a number: the release's latest revision minus one.
            let (wanted, previous) = match to {
                Some(n) => (n, false),
                None => match have.last() {
                    Some(latest) if *latest > 1 => (latest - 1, true),
                    _ => return Err(LookupError::NoPrevious { what, have }),
                },
            };
            let revisions: Vec<TargetRevision> = workloads
                .iter()
                .filter_map(|w| {
                    let r = w
                        .revisions
                        .iter()
                        .find(|r| r.helm_versions.contains(&wanted))?;
                    Some(TargetRevision {
                        workload: w.id.to_string(),
                        key: Some(r.key.clone()),
                        revision: r.number,
                        helm_revisions: r.helm_versions.clone(),
                    })
                })
                .collect();
            if revisions.is_empty() {
                return Err(LookupError::NotRetained { what, wanted, have });
            }
            Ok(Target {
                revision: wanted,
                previous,
                revisions,
            })
        }
    }
}

/// States in which a node's summary can be believed about its revisions: cordon is ignored by
/// the plan, and `NotReady` is about other revisions until the target is listed.
const TRUSTED_STATES: [&str; 3] = ["Ready", "NotReady", "Cordoned"];

/// One eligible node's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeAnswer {
    pub node: String,
    pub ready: bool,
    pub reason: String,
    /// The summary's state word, `NoSummary` without one.
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_seconds: Option<i64>,
}

/// Whether a rollback to `targets` (those of the target that could run on `node`) would start
/// from the cache there, by the node's `summary` read at `now` (Unix seconds); a summary older
/// than `max_age` seconds is not believed.
pub fn answer(
    node: &str,
    summary: Option<&NodeSummary>,
    targets: &[&TargetRevision],
    now: i64,
    max_age: i64,
) -> NodeAnswer {
    let no = |state: &str, reason: String, observed: Option<(&str, i64)>| NodeAnswer {
        node: node.to_owned(),
        ready: false,
        reason,
        state: state.to_owned(),
        observed_at: observed.map(|(at, _)| at.to_owned()),
        age_seconds: observed.map(|(_, age)| age),
    };
    let Some(s) = summary else {
        return no(
            "NoSummary",
            "no RollcacheNode: rollcache is not running on this node, or not publishing".into(),
            None,
        );
    };
    let Some(at) = parse_rfc3339(&s.observed_at) else {
        let why = format!("summary observedAt {:?} is not a time", s.observed_at);
        return no(&s.state, why, None);
    };
    let age = now - at;
    let observed = Some((s.observed_at.as_str(), age));
    if age > max_age {
        let why = format!(
            "summary stale: observed {} ago, older than {}",
            age_text(age),
            age_text(max_age)
        );
        return no(&s.state, why, observed);
    }
    if !TRUSTED_STATES.contains(&s.state.as_str()) {
        return no(
            &s.state,
            format!("node {}: {}", s.state, s.message),
            observed,
        );
    }
    for t in targets {
        let listed = s.not_offline_safe.iter().find(|n| {
            n.workload == t.workload
                && (n.revision.is_some() && n.revision == t.revision
                    || n.helm_revision
                        .is_some_and(|h| t.helm_revisions.contains(&h)))
        });
        if let Some(n) = listed {
            let why = format!(
                "{} {}: {}",
                t.label(),
                n.readiness,
                if n.reason.is_empty() { "-" } else { &n.reason }
            );
            return no(&s.state, why, observed);
        }
    }
    if s.not_offline_safe_more > 0 {
        let why = format!(
            "cannot tell: the summary names {} revisions not offline-safe and {} more unnamed",
            s.not_offline_safe.len(),
            s.not_offline_safe_more
        );
        return no(&s.state, why, observed);
    }
    NodeAnswer {
        node: node.to_owned(),
        ready: true,
        reason: "offline-safe".into(),
        state: s.state.clone(),
        observed_at: Some(s.observed_at.clone()),
        age_seconds: Some(age),
    }
}

impl TargetRevision {
    /// `Kind/ns/name rev N` or `... helm revision N`.
    pub fn label(&self) -> String {
        match (self.revision, self.helm_revisions.first()) {
            (Some(n), _) => format!("{} rev {n}", self.workload),
            (None, Some(h)) => format!("{} helm revision {h}", self.workload),
            (None, None) => self.workload.clone(),
        }
    }
}

/// One line of `rollcache cluster`: a Node and the summary its agent published, if any.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRow {
    pub node: String,
    /// The summary's state word, `NoSummary` without one.
    pub state: String,
    /// Older than the freshness limit: the agent may have stopped.
    pub stale: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_seconds: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<NodeSummary>,
}

impl ClusterRow {
    pub fn of(node: &str, summary: Option<NodeSummary>, now: i64, max_age: i64) -> Self {
        let age = summary
            .as_ref()
            .and_then(|s| parse_rfc3339(&s.observed_at))
            .map(|at| now - at);
        ClusterRow {
            node: node.to_owned(),
            state: summary
                .as_ref()
                .map_or_else(|| "NoSummary".to_owned(), |s| s.state.clone()),
            stale: summary.is_some() && age.is_none_or(|a| a > max_age),
            age_seconds: age,
            summary,
        }
    }

    /// The STATE cell: the state word, marked when the summary is too old to believe.
    pub fn state_cell(&self) -> String {
        if self.stale {
            format!("{} (stale)", self.state)
        } else {
            self.state.clone()
        }
    }
}

/// `45s`, `12m`, `3h`, `2d`: as kubectl shows ages.
pub fn age_text(secs: i64) -> String {
    match secs.max(0) {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` as Unix seconds; None when it is not one.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut rest = &text[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && matches!(rest.as_bytes()[0], b'+' | b'-') => {
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            let (oh, om) = (
                num(text.len() - 5..text.len() - 3)?,
                num(text.len() - 2..text.len())?,
            );
            (rest.as_bytes()[3] == b':').then_some(sign * (oh * 3600 + om * 60))?
        }
        _ => return None,
    };
    // Civil date to days (Howard Hinnant's algorithm), the inverse of `summary::rfc3339`.
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + s - offset)
}

#[cfg(test)]
mod tests;

//! Rollback readiness per workload × revision on this node: offline-safe or not, and why. Pure:
//! built from the plan's revisions, what the runtime holds and what the reconcile loop is doing.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::decide::{Held, Waiting};
use crate::model::WorkloadId;

/// How the node's kubelet re-checks pull credentials for cached images (KEP-2535,
/// `imagePullCredentialsVerificationPolicy`, Kubernetes >= 1.35).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum CredentialVerificationPolicy {
    /// The kubelet's default: images pulled outside the kubelet (rollcache's) are trusted.
    #[default]
    NeverVerifyPreloadedImages,
    /// Every pod with pull secrets goes to the registry, cached or not.
    AlwaysVerify,
    /// Like AlwaysVerify except for the images on `credential_verification_allowlist`.
    NeverVerifyAllowlistedImages,
    /// Credentials are never re-checked.
    NeverVerify,
}

/// Can this revision be rolled back to on this node with the registry unreachable?
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Readiness {
    /// Every image is present and pinned, and the kubelet would not contact the registry.
    OfflineSafe,
    /// An image is being pulled (or waits for a pull slot / its start jitter).
    Pulling,
    /// An image is missing and no pull is under way.
    Missing,
    /// An image's last pull failed; it is retried with backoff.
    Failed,
    /// An image is missing and pulls are held back by the disk budget.
    DiskBudget,
    /// Images are cached but the kubelet would still contact the registry: pull policy `Always`
    /// (also the default for `:latest` and untagged images) or credential re-verification.
    NeedsRegistry,
    /// Images are cached but cannot be pinned: kubelet image GC may delete them.
    CannotPin,
    /// Images are cached and pinned, but a history source is not synced: the view may be outdated.
    Stale,
}

impl Readiness {
    pub const ALL: [Readiness; 8] = [
        Readiness::OfflineSafe,
        Readiness::Pulling,
        Readiness::Missing,
        Readiness::Failed,
        Readiness::DiskBudget,
        Readiness::NeedsRegistry,
        Readiness::CannotPin,
        Readiness::Stale,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Readiness::OfflineSafe => "offline_safe",
            Readiness::Pulling => "pulling",
            Readiness::Missing => "missing",
            Readiness::Failed => "failed",
            Readiness::DiskBudget => "disk_budget",
            Readiness::NeedsRegistry => "needs_registry",
            Readiness::CannotPin => "cannot_pin",
            Readiness::Stale => "stale",
        }
    }
}

/// One image of a revision, as the plan describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageInput {
    pub container: String,
    /// Canonical reference; Err holds why the reference is invalid.
    pub reference: Result<String, String>,
    /// Effective pull policy (`Always`, `IfNotPresent`, `Never`).
    pub pull_policy: String,
}

/// One revision of one workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevisionInput {
    pub workload: WorkloadId,
    pub helm_release: Option<String>,
    pub revision: Option<i64>,
    pub helm_revision: Option<i64>,
    pub status: Option<String>,
    pub current: bool,
    pub sources: Vec<String>,
    pub images: Vec<ImageInput>,
    /// The pod template names imagePullSecrets (the kubelet's credential re-verification applies).
    pub has_pull_secrets: bool,
    /// None: wanted on this node; Some(reason): not held here and why.
    pub not_here: Option<String>,
    /// Not held only because this node's Node object is unknown: it waits for the node.
    pub node_unknown: bool,
}

/// The runtime and loop facts the report reads.
pub struct NodeView<'a> {
    pub held: &'a [Held],
    /// Wanted-but-absent images and why, from the last decision.
    pub waiting: &'a HashMap<String, Waiting>,
    pub can_pin: bool,
    pub view_fresh: bool,
    pub credential_policy: CredentialVerificationPolicy,
    pub credential_allowlist: &'a [String],
    pub now: Instant,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageReport {
    pub container: String,
    pub reference: String,
    /// `ready`, `unpinned`, `pulling`, `queued`, `missing`, `failed`, `disk_budget`, `invalid`.
    pub state: String,
    /// Digest of what is cached (`repo@sha256:…`), for tags: what the tag pointed to when pulled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cached_digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_in_seconds: Option<u64>,
    pub pull_policy: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionReport {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub helm_revision: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    pub current: bool,
    pub sources: Vec<String>,
    /// None when the revision is not held on this node (see `not_here`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readiness: Option<Readiness>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_here: Option<String>,
    /// `not_here` only because this node's Node object is unknown: waiting, not excluded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub node_unknown: bool,
    pub reasons: Vec<String>,
    pub images: Vec<ImageReport>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadReport {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub helm_release: Option<String>,
    pub revisions: Vec<RevisionReport>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub workloads: Vec<WorkloadReport>,
    /// Revisions held on this node, by readiness.
    pub summary: BTreeMap<Readiness, usize>,
}

fn allowlisted(reference: &str, allowlist: &[String]) -> bool {
    allowlist.iter().any(|a| match a.strip_suffix('*') {
        Some(prefix) => reference.starts_with(prefix),
        None => reference == a,
    })
}

fn image_report(img: &ImageInput, v: &NodeView<'_>) -> ImageReport {
    let mut r = ImageReport {
        container: img.container.clone(),
        reference: String::new(),
        state: String::new(),
        cached_digest: None,
        error: None,
        retry_in_seconds: None,
        pull_policy: img.pull_policy.clone(),
    };
    let reference = match &img.reference {
        Ok(reference) => reference,
        Err(e) => {
            r.state = "invalid".into();
            r.error = Some(e.clone());
            return r;
        }
    };
    r.reference = reference.clone();
    if let Some(h) = crate::decide::find_held(v.held, reference) {
        r.cached_digest = h.digests.first().cloned();
        r.state = if h.pinned { "ready" } else { "unpinned" }.into();
        return r;
    }
    let retry = |at: &Instant| Some(at.saturating_duration_since(v.now).as_secs());
    r.state = match v.waiting.get(reference) {
        Some(Waiting::Pulling) => "pulling",
        Some(Waiting::Queued) | Some(Waiting::Jitter { .. }) => "queued",
        Some(Waiting::DiskBudget) => "disk_budget",
        Some(Waiting::Backoff {
            error, retry_at, ..
        })
        | Some(Waiting::RegistryBackoff { error, retry_at }) => {
            r.error = Some(error.clone());
            r.retry_in_seconds = retry(retry_at);
            "failed"
        }
        None => "missing",
    }
    .into();
    r
}

/// Readiness of a held revision from its images' states, worst first.
fn readiness(
    images: &[ImageReport],
    rev: &RevisionInput,
    v: &NodeView<'_>,
) -> (Readiness, Vec<String>) {
    let mut reasons = Vec::new();
    fn with<'a>(
        images: &'a [ImageReport],
        state: &'a str,
    ) -> impl Iterator<Item = &'a ImageReport> {
        images.iter().filter(move |i| i.state == state)
    }
    for (state, readiness, what) in [
        ("invalid", Readiness::Failed, "invalid image reference"),
        ("failed", Readiness::Failed, "pull failed"),
        (
            "disk_budget",
            Readiness::DiskBudget,
            "missing; pulls held back by the disk budget",
        ),
        ("missing", Readiness::Missing, "missing"),
        ("pulling", Readiness::Pulling, "pulling"),
        ("queued", Readiness::Pulling, "queued for pull"),
    ] {
        let hit: Vec<_> = with(images, state).collect();
        if !hit.is_empty() {
            for i in hit {
                let err = i
                    .error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default();
                reasons.push(format!("{} ({}): {what}{err}", i.container, i.reference));
            }
            return (readiness, reasons);
        }
    }
    if with(images, "unpinned").next().is_some() {
        if !v.can_pin {
            for i in with(images, "unpinned") {
                reasons.push(format!(
                    "{} ({}): cached but not pinned (the runtime cannot pin): kubelet image GC may delete it",
                    i.container, i.reference
                ));
            }
            return (Readiness::CannotPin, reasons);
        }
        for i in with(images, "unpinned") {
            reasons.push(format!(
                "{} ({}): cached, pin pending",
                i.container, i.reference
            ));
        }
        return (Readiness::Pulling, reasons);
    }
    for i in images.iter().filter(|i| i.pull_policy == "Always") {
        reasons.push(format!(
            "{} ({}): imagePullPolicy Always (the default for :latest and untagged images): the kubelet contacts the registry even with the image cached",
            i.container, i.reference
        ));
    }
    if rev.has_pull_secrets {
        let verify = |i: &ImageReport| match v.credential_policy {
            CredentialVerificationPolicy::AlwaysVerify => true,
            CredentialVerificationPolicy::NeverVerifyAllowlistedImages => {
                !allowlisted(&i.reference, v.credential_allowlist)
            }
            _ => false,
        };
        for i in images.iter().filter(|i| verify(i)) {
            reasons.push(format!(
                "{} ({}): the kubelet's credential verification policy ({:?}) re-checks pull secrets with the registry",
                i.container, i.reference, v.credential_policy
            ));
        }
    }
    if !reasons.is_empty() {
        return (Readiness::NeedsRegistry, reasons);
    }
    if !v.view_fresh {
        reasons.push(
            "images cached and pinned, but a history source is not synced (or this node's Node object is unknown): this view may be outdated"
                .into(),
        );
        return (Readiness::Stale, reasons);
    }
    (Readiness::OfflineSafe, reasons)
}

/// Build the report. Revisions are grouped by workload in the order given.
pub fn build(revisions: &[RevisionInput], v: &NodeView<'_>) -> Report {
    let mut report = Report::default();
    let mut index: HashMap<&WorkloadId, usize> = HashMap::new();
    for rev in revisions {
        let images: Vec<ImageReport> = rev.images.iter().map(|i| image_report(i, v)).collect();
        let (readiness, reasons) = match &rev.not_here {
            Some(_) => (None, Vec::new()),
            None => {
                let (r, reasons) = readiness(&images, rev, v);
                *report.summary.entry(r).or_default() += 1;
                (Some(r), reasons)
            }
        };
        let slot = *index.entry(&rev.workload).or_insert_with(|| {
            report.workloads.push(WorkloadReport {
                kind: rev.workload.kind.clone(),
                namespace: rev.workload.namespace.clone(),
                name: rev.workload.name.clone(),
                helm_release: rev.helm_release.clone(),
                revisions: Vec::new(),
            });
            report.workloads.len() - 1
        });
        report.workloads[slot].revisions.push(RevisionReport {
            revision: rev.revision,
            helm_revision: rev.helm_revision,
            status: rev.status.clone(),
            current: rev.current,
            sources: rev.sources.clone(),
            readiness,
            not_here: rev.not_here.clone(),
            node_unknown: rev.node_unknown,
            reasons,
            images,
        });
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn img(reference: &str, policy: &str) -> ImageInput {
        ImageInput {
            container: "main".into(),
            reference: Ok(reference.into()),
            pull_policy: policy.into(),
        }
    }

    fn rev(images: Vec<ImageInput>) -> RevisionInput {
        RevisionInput {
            workload: WorkloadId::new("StatefulSet", "bl01", "ioc"),
            helm_release: Some("ioc".into()),
            revision: Some(2),
            helm_revision: Some(3),
            status: Some("deployed".into()),
            current: true,
            sources: vec!["helm".into()],
            images,
            has_pull_secrets: false,
            not_here: None,
            node_unknown: false,
        }
    }

    fn held(tag: &str, pinned: bool) -> Held {
        Held {
            id: format!("id-{tag}"),
            tags: vec![tag.into()],
            digests: vec![format!(
                "{}@sha256:{}",
                tag.split(':').next().unwrap(),
                "a".repeat(64)
            )],
            pinned,
            pinned_by_us: pinned,
            size: 1,
        }
    }

    fn view<'a>(held: &'a [Held], waiting: &'a HashMap<String, Waiting>) -> NodeView<'a> {
        NodeView {
            held,
            waiting,
            can_pin: true,
            view_fresh: true,
            credential_policy: CredentialVerificationPolicy::NeverVerifyPreloadedImages,
            credential_allowlist: &[],
            now: Instant::now(),
        }
    }

    fn one(r: &RevisionInput, v: &NodeView<'_>) -> RevisionReport {
        build(std::slice::from_ref(r), v)
            .workloads
            .remove(0)
            .revisions
            .remove(0)
    }

    #[test]
    fn present_and_pinned_is_offline_safe_with_digest() {
        let h = [held("r/ioc:1", true)];
        let w = HashMap::new();
        let r = one(&rev(vec![img("r/ioc:1", "IfNotPresent")]), &view(&h, &w));
        assert_eq!(r.readiness, Some(Readiness::OfflineSafe));
        assert!(
            r.images[0]
                .cached_digest
                .as_deref()
                .unwrap()
                .starts_with("r/ioc@sha256:")
        );
    }

    #[test]
    fn always_policy_needs_the_registry_even_when_cached() {
        let h = [held("r/ioc:latest", true)];
        let w = HashMap::new();
        let r = one(&rev(vec![img("r/ioc:latest", "Always")]), &view(&h, &w));
        assert_eq!(r.readiness, Some(Readiness::NeedsRegistry));
        assert!(r.reasons[0].contains("Always"), "{:?}", r.reasons);
    }

    #[test]
    fn failure_wins_and_names_the_error() {
        let h = [held("r/a:1", true)];
        let mut w = HashMap::new();
        w.insert(
            "r/b:1".to_string(),
            Waiting::Backoff {
                error: "registry unreachable".into(),
                attempts: 2,
                retry_at: Instant::now() + Duration::from_secs(30),
            },
        );
        let r = one(
            &rev(vec![
                img("r/a:1", "IfNotPresent"),
                img("r/b:1", "IfNotPresent"),
            ]),
            &view(&h, &w),
        );
        assert_eq!(r.readiness, Some(Readiness::Failed));
        assert!(r.reasons[0].contains("registry unreachable"));
        assert_eq!(r.images[1].state, "failed");
        assert!(r.images[1].retry_in_seconds.unwrap() <= 30);
    }

    #[test]
    fn cannot_pin_and_stale_and_credentials() {
        let h = [held("r/a:1", false)];
        let w = HashMap::new();
        let mut v = view(&h, &w);
        v.can_pin = false;
        assert_eq!(
            one(&rev(vec![img("r/a:1", "IfNotPresent")]), &v).readiness,
            Some(Readiness::CannotPin)
        );
        let h = [held("r/a:1", true)];
        let mut v = view(&h, &w);
        v.view_fresh = false;
        assert_eq!(
            one(&rev(vec![img("r/a:1", "IfNotPresent")]), &v).readiness,
            Some(Readiness::Stale)
        );
        let mut v = view(&h, &w);
        v.credential_policy = CredentialVerificationPolicy::NeverVerifyAllowlistedImages;
        let allow = ["r/b*".to_string()];
        v.credential_allowlist = &allow;
        let mut secret_rev = rev(vec![img("r/a:1", "IfNotPresent")]);
        secret_rev.has_pull_secrets = true;
        assert_eq!(
            one(&secret_rev, &v).readiness,
            Some(Readiness::NeedsRegistry)
        );
        let allow = ["r/a*".to_string()];
        v.credential_allowlist = &allow;
        assert_eq!(one(&secret_rev, &v).readiness, Some(Readiness::OfflineSafe));
    }

    #[test]
    fn not_here_is_listed_but_not_counted() {
        let w = HashMap::new();
        let mut r = rev(vec![img("r/a:1", "IfNotPresent")]);
        r.not_here = Some("nodeSelector beamline=bl02 does not match".into());
        let report = build(&[r], &view(&[], &w));
        assert!(report.summary.is_empty());
        assert_eq!(report.workloads[0].revisions[0].readiness, None);
    }
}

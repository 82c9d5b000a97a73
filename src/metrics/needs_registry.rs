//! `revision_needs_registry`: which image of which revision still sends the kubelet to the
//! registry although cached, and why, so that an alert can name the container to fix.

use std::collections::HashSet;
use std::sync::PoisonError;

use super::Metrics;
use super::labels::{NeedsRegistryCause, NeedsRegistryLabel};
use crate::report::{ImageReport, Readiness, Report, RevisionReport};

impl Metrics {
    /// One series per image of each revision in `needs_registry`, at most
    /// `NEEDS_REGISTRY_SERIES_MAX`; the images left out are counted instead.
    pub fn set_needs_registry(&self, report: &Report) {
        let mut now = HashSet::new();
        let mut omitted = 0;
        for w in &report.workloads {
            let workload = format!("{}/{}", w.kind, w.name);
            for r in &w.revisions {
                if r.readiness != Some(Readiness::NeedsRegistry) {
                    continue;
                }
                for i in &r.images {
                    let Some(cause) = needs_registry_cause(i, r) else {
                        continue;
                    };
                    let label = NeedsRegistryLabel {
                        namespace: w.namespace.clone(),
                        workload: workload.clone(),
                        revision: r.revision.map(|n| n.to_string()).unwrap_or_default(),
                        container: i.container.clone(),
                        image: i.reference.clone(),
                        cause,
                    };
                    if now.len() < NEEDS_REGISTRY_SERIES_MAX || now.contains(&label) {
                        now.insert(label);
                    } else {
                        omitted += 1;
                    }
                }
            }
        }
        let mut shown = self
            .needs_registry_shown
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for gone in shown.difference(&now) {
            self.needs_registry.remove(gone);
        }
        for label in &now {
            self.needs_registry.get_or_create(label).set(1);
        }
        self.needs_registry_omitted.set(omitted);
        *shown = now;
    }
}

/// At most this many `revision_needs_registry` series: a cluster of `:latest` workloads would
/// otherwise make one per image of every retained revision.
pub const NEEDS_REGISTRY_SERIES_MAX: usize = 200;

/// Why an image of a `needs_registry` revision needs the registry, or None when it does not. The
/// report blames `Always` images first and names every image it blames as `CONTAINER (REFERENCE): `,
/// so another image it names is blamed by the credential check.
fn needs_registry_cause(i: &ImageReport, r: &RevisionReport) -> Option<NeedsRegistryCause> {
    if i.pull_policy == "Always" {
        return Some(NeedsRegistryCause::PullPolicyAlways);
    }
    let named = format!("{} ({}): ", i.container, i.reference);
    r.reasons
        .iter()
        .any(|reason| reason.starts_with(&named))
        .then_some(NeedsRegistryCause::CredentialVerification)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::WorkloadReport;

    fn image(container: &str, reference: &str, policy: &str) -> ImageReport {
        ImageReport {
            container: container.into(),
            reference: reference.into(),
            state: "ready".into(),
            cached_digest: None,
            error: None,
            retry_in_seconds: None,
            pull_policy: policy.into(),
        }
    }

    fn revision(n: i64, readiness: Readiness, images: Vec<ImageReport>) -> RevisionReport {
        RevisionReport {
            revision: Some(n),
            helm_revision: None,
            status: None,
            current: false,
            sources: vec!["controller_revisions".into()],
            readiness: Some(readiness),
            not_here: None,
            node_unknown: false,
            reasons: Vec::new(),
            images,
        }
    }

    fn report(revisions: Vec<RevisionReport>) -> Report {
        Report {
            workloads: vec![WorkloadReport {
                kind: "StatefulSet".into(),
                namespace: "bl45p".into(),
                name: "bl45p-mo-ioc-01".into(),
                helm_release: None,
                revisions,
            }],
            summary: Default::default(),
        }
    }

    fn series(text: &str) -> Vec<&str> {
        text.lines()
            .filter(|l| l.starts_with("rollcache_revision_needs_registry{"))
            .collect()
    }

    #[test]
    fn names_each_blamed_image_with_its_cause_and_forgets_what_recovered() {
        let m = Metrics::new();
        let mut blamed = revision(
            3,
            Readiness::NeedsRegistry,
            vec![
                image("ioc", "ghcr.io/ec/ioc:latest", "Always"),
                image("load-config", "ghcr.io/ec/config:1.2.0", "IfNotPresent"),
                image("sidecar", "ghcr.io/ec/sidecar:1", "IfNotPresent"),
            ],
        );
        blamed.reasons = vec![
            "ioc (ghcr.io/ec/ioc:latest): imagePullPolicy Always".into(),
            "load-config (ghcr.io/ec/config:1.2.0): the kubelet's credential verification policy (AlwaysVerify) re-checks pull secrets with the registry".into(),
        ];
        // Offline-safe revisions are not blamed, whatever their pull policy says.
        let safe = revision(
            2,
            Readiness::OfflineSafe,
            vec![image("ioc", "ghcr.io/ec/ioc:2", "Always")],
        );
        m.set_needs_registry(&report(vec![blamed, safe]));
        let text = m.encode();
        let mut got = series(&text);
        got.sort();
        assert_eq!(
            got,
            [
                "rollcache_revision_needs_registry{namespace=\"bl45p\",workload=\"StatefulSet/bl45p-mo-ioc-01\",revision=\"3\",container=\"ioc\",image=\"ghcr.io/ec/ioc:latest\",cause=\"pull_policy_always\"} 1",
                "rollcache_revision_needs_registry{namespace=\"bl45p\",workload=\"StatefulSet/bl45p-mo-ioc-01\",revision=\"3\",container=\"load-config\",image=\"ghcr.io/ec/config:1.2.0\",cause=\"credential_verification\"} 1",
            ],
            "{text}"
        );
        assert!(text.contains("rollcache_revision_needs_registry_omitted 0"));

        m.set_needs_registry(&report(vec![revision(
            3,
            Readiness::OfflineSafe,
            vec![image("ioc", "ghcr.io/ec/ioc:3", "IfNotPresent")],
        )]));
        assert!(series(&m.encode()).is_empty(), "{}", m.encode());
    }

    /// The causes come from the report's own reasons: a report built by `report::build` with the
    /// kubelet re-verifying credentials blames the images it names, and each for its cause.
    #[test]
    fn blames_what_the_report_blames() {
        use crate::decide::Held;
        use crate::model::WorkloadId;
        use crate::report::{
            self, CredentialVerificationPolicy, ImageInput, NodeView, RevisionInput,
        };

        let input = |container: &str, reference: &str, policy: &str| ImageInput {
            container: container.into(),
            reference: Ok(reference.into()),
            pull_policy: policy.into(),
        };
        let held: Vec<Held> = [
            "reg.example/ioc:latest",
            "reg.example/config:1",
            "reg.example/sidecar:1",
        ]
        .iter()
        .map(|tag| Held {
            id: format!("id-{tag}"),
            tags: vec![tag.to_string()],
            digests: Vec::new(),
            pinned: true,
            pinned_by_us: true,
            size: 1,
        })
        .collect();
        let revision = RevisionInput {
            workload: WorkloadId::new("StatefulSet", "bl45p", "ioc"),
            helm_release: None,
            revision: Some(7),
            helm_revision: None,
            status: None,
            current: true,
            sources: Vec::new(),
            images: vec![
                input("ioc", "reg.example/ioc:latest", "Always"),
                input("load-config", "reg.example/config:1", "IfNotPresent"),
                input("sidecar", "reg.example/sidecar:1", "IfNotPresent"),
            ],
            has_pull_secrets: true,
            not_here: None,
            node_unknown: false,
        };
        let allowlist = vec!["reg.example/sidecar*".to_string()];
        let waiting = Default::default();
        let view = NodeView {
            held: &held,
            waiting: &waiting,
            can_pin: true,
            view_fresh: true,
            credential_policy: CredentialVerificationPolicy::NeverVerifyAllowlistedImages,
            credential_allowlist: &allowlist,
            now: std::time::Instant::now(),
        };
        let m = Metrics::new();
        m.set_needs_registry(&report::build(&[revision], &view));
        let text = m.encode();
        let mut blamed: Vec<String> = series(&text)
            .iter()
            .map(|l| {
                let container = l
                    .split("container=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap();
                let cause = l
                    .split("cause=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap();
                format!("{container} {cause}")
            })
            .collect();
        blamed.sort();
        // The sidecar is on the allowlist: the kubelet does not re-verify it.
        assert_eq!(
            blamed,
            [
                "ioc pull_policy_always",
                "load-config credential_verification"
            ],
            "{text}"
        );
    }

    #[test]
    fn caps_the_series_and_counts_what_it_left_out() {
        let m = Metrics::new();
        let over = 37;
        let revisions = (0..(NEEDS_REGISTRY_SERIES_MAX + over) as i64)
            .map(|n| {
                revision(
                    n,
                    Readiness::NeedsRegistry,
                    vec![image("ioc", &format!("reg.example/ioc:{n}"), "Always")],
                )
            })
            .collect();
        m.set_needs_registry(&report(revisions));
        let text = m.encode();
        assert_eq!(series(&text).len(), NEEDS_REGISTRY_SERIES_MAX);
        assert!(
            text.contains(&format!("rollcache_revision_needs_registry_omitted {over}")),
            "{text}"
        );
    }
}

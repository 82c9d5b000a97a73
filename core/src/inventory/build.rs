//! Building the inventory: facts from every source folded into workloads and revisions, the same
//! revision seen through several sources merged into one.

use std::collections::{BTreeMap, HashMap};

use super::identity::{
    images_fingerprint, normalise_scheduling, relax_controller_pod, template_id,
};
use super::*;

/// What a fact's revision number means.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    /// ReplicaSet (`cr: false`) or ControllerRevision (`cr: true`).
    Controller {
        cr: bool,
    },
    Helm,
    Pod,
    Other,
}

impl Class {
    pub(super) fn of(f: &RevisionFact) -> Class {
        match f.source {
            SourceKind::ReplicaSet => Class::Controller { cr: false },
            SourceKind::ControllerRevision => Class::Controller { cr: true },
            SourceKind::HelmRelease => Class::Helm,
            SourceKind::Pod => Class::Pod,
            SourceKind::Config | SourceKind::Inventory => Class::Other,
            SourceKind::File => match f.object.kind.as_str() {
                "ReplicaSet" => Class::Controller { cr: false },
                "ControllerRevision" => Class::Controller { cr: true },
                "Pod" => Class::Pod,
                "Secret" | "ConfigMap" if f.helm_release.is_some() => Class::Helm,
                _ => Class::Other,
            },
        }
    }
}

struct RevBuilder {
    rev: Revision,
    has_cr: bool,
    /// Earliest creation among controller/Helm/other sources, and among pods.
    created_main: Option<i64>,
    created_pods: Option<i64>,
    helm_status: Option<(i64, String)>,
    /// Which fact the template (images as written, scheduling, secrets order) comes from:
    /// controller objects first, then Helm, then others, then pods; ties by object. Keeps the
    /// result independent of the order facts arrive in.
    template_from: (u8, ObjectRef),
    /// Small sets (one or two entries each), as vectors: a tree node per revision would be the
    /// largest part of the builder. Sorted in `finish`.
    secrets: Vec<String>,
    service_accounts: Vec<String>,
    releases: Vec<String>,
}

/// Adds `value` to a small set kept as a vector.
fn insert_new(set: &mut Vec<String>, value: &str) {
    if !set.iter().any(|s| s == value) {
        set.push(value.to_string());
    }
}

impl Class {
    fn preference(self) -> u8 {
        match self {
            Class::Controller { .. } => 0,
            Class::Helm => 1,
            Class::Other => 2,
            Class::Pod => 3,
        }
    }
}

#[derive(Default)]
struct WorkloadBuilder {
    helm_release: Option<(Option<i64>, String)>,
    revisions: HashMap<TemplateId, RevBuilder>,
}

#[derive(Default)]
pub(super) struct Builder {
    workloads: BTreeMap<WorkloadId, WorkloadBuilder>,
    /// ReplicaSet (namespace, name) → the revision it holds, so that its pods join it.
    replicasets: HashMap<(String, String), RevisionKey>,
    /// (workload, images fingerprint) → revisions with those images.
    by_images: HashMap<(WorkloadId, u64), Vec<TemplateId>>,
    /// Parsed references, shared by the many facts that name the same image.
    parsed: HashMap<String, Result<ImageRef, String>>,
    pub(super) problems: Vec<DecodeProblem>,
}

impl Builder {
    pub(super) fn images_of(&mut self, fact: &RevisionFact) -> Vec<ImageUse> {
        let mut out = Vec::with_capacity(fact.template.containers.len());
        for c in &fact.template.containers {
            let parsed = self
                .parsed
                .entry(c.image.clone())
                .or_insert_with(|| ImageRef::parse(&c.image).map_err(|e| e.reason))
                .clone();
            let (image, error) = match parsed {
                Ok(r) => (Some(r), None),
                Err(reason) => {
                    let e = format!("invalid image reference {:?}: {reason}", c.image);
                    self.problems.push(DecodeProblem {
                        object: fact.object.clone(),
                        kind: ProblemKind::InvalidImageRef,
                        message: format!("{} container {}: {e}", fact.workload, c.name),
                    });
                    (None, Some(e))
                }
            };
            let pull_policy = PullPolicy::effective(c.pull_policy.as_deref(), image.as_ref());
            out.push(ImageUse {
                container: c.name.clone(),
                init: c.init,
                written: c.image.clone(),
                image,
                error,
                pull_policy,
                pull_policy_written: c.pull_policy.is_some(),
                image_id: c.image_id.clone().filter(|s| !s.is_empty()),
            });
        }
        out
    }

    pub(super) fn add_template_fact(&mut self, fact: &RevisionFact, class: Class) {
        let images = self.images_of(fact);
        let scheduling = normalise_scheduling(&fact.template.scheduling);
        let secrets = dedup(&fact.template.image_pull_secrets);
        let template = template_id(&images, &secrets, &scheduling);
        let key = RevisionKey {
            workload: fact.workload.clone(),
            template,
        };
        if class == (Class::Controller { cr: false }) {
            self.replicasets.insert(
                (fact.object.namespace.clone(), fact.object.name.clone()),
                key.clone(),
            );
        }
        let w = self.workloads.entry(fact.workload.clone()).or_default();
        if let Some(rel) = &fact.helm_release {
            let v = (class == Class::Helm).then_some(fact.revision).flatten();
            let cand = (v, rel.clone());
            if w.helm_release.as_ref().is_none_or(|old| cand > *old) {
                w.helm_release = Some(cand);
            }
        }
        upsert(w, key, fact, class, images, secrets, scheduling);
    }

    pub(super) fn index_images(&mut self) {
        for (wid, w) in &self.workloads {
            for (tid, rb) in &w.revisions {
                self.by_images
                    .entry((wid.clone(), images_fingerprint(&rb.rev.images)))
                    .or_default()
                    .push(*tid);
            }
        }
    }

    pub(super) fn add_pod_fact(&mut self, fact: &RevisionFact) {
        let images = self.images_of(fact);
        // A pod owned by a ReplicaSet that a fact describes belongs to that exact revision.
        let owner = (fact.workload.kind == "ReplicaSet")
            .then(|| {
                self.replicasets
                    .get(&(fact.workload.namespace.clone(), fact.workload.name.clone()))
            })
            .flatten()
            .cloned();
        let target = owner.or_else(|| {
            let candidates = self
                .by_images
                .get(&(fact.workload.clone(), images_fingerprint(&images)))?;
            let w = self.workloads.get(&fact.workload)?;
            candidates
                .iter()
                .filter_map(|t| w.revisions.get(t))
                .max_by_key(|rb| (rb.rev.current, recency(&rb.rev), rb.rev.key.template))
                .map(|rb| rb.rev.key.clone())
        });
        if let Some(key) = target
            && let Some(rb) = self
                .workloads
                .get_mut(&key.workload)
                .and_then(|w| w.revisions.get_mut(&key.template))
        {
            for (u, p) in rb.rev.images.iter_mut().zip(&images) {
                if u.image_id.is_none() && u.container == p.container {
                    u.image_id.clone_from(&p.image_id);
                }
            }
            rb.add_source(fact, Class::Pod);
            return;
        }
        // Only the pod tells about this revision. A pod made by a controller carries what the
        // scheduler and the controller added (nodeName, DaemonSet node affinity); a replacement
        // pod could go elsewhere, so only the template's own constraints are kept.
        let mut scheduling = fact.template.scheduling.clone();
        if fact.workload.kind != "Pod" {
            relax_controller_pod(&mut scheduling);
        }
        let norm = normalise_scheduling(&scheduling);
        let secrets = dedup(&fact.template.image_pull_secrets);
        let template = template_id(&images, &secrets, &norm);
        let key = RevisionKey {
            workload: fact.workload.clone(),
            template,
        };
        let w = self.workloads.entry(fact.workload.clone()).or_default();
        upsert(w, key, fact, Class::Pod, images, secrets, norm);
    }

    pub(super) fn finish(&mut self) -> Inventory {
        let mut workloads = Vec::with_capacity(self.workloads.len());
        for (id, wb) in std::mem::take(&mut self.workloads) {
            let mut revs: Vec<RevBuilder> = wb.revisions.into_values().collect();
            let top_cr = revs
                .iter()
                .filter(|r| r.has_cr)
                .filter_map(|r| r.rev.number)
                .max();
            let mut revisions: Vec<Revision> = revs
                .drain(..)
                .map(|mut rb| {
                    rb.secrets.sort_unstable();
                    rb.service_accounts.sort_unstable();
                    rb.releases.sort_unstable();
                    if rb.has_cr && top_cr.is_some() && rb.rev.number == top_cr {
                        rb.rev.current = true;
                    }
                    rb.rev.created = rb.created_main.or(rb.created_pods);
                    rb.rev.helm_versions.sort_unstable_by(|a, b| b.cmp(a));
                    rb.rev.helm_versions.dedup();
                    rb.rev
                        .sources
                        .sort_by(|a, b| (a.kind, &a.object).cmp(&(b.kind, &b.object)));
                    rb.rev.status = match rb.helm_status {
                        Some((_, s)) => Some(s),
                        None => rb.rev.sources.iter().find_map(|s| s.status.clone()),
                    };
                    for s in rb.secrets {
                        if !rb.rev.pull_secrets.contains(&s) {
                            rb.rev.pull_secrets.push(s);
                        }
                    }
                    if rb.rev.service_account.is_none() {
                        rb.rev.service_account = rb.service_accounts.into_iter().next();
                    }
                    rb.rev.helm_release = rb.releases.into_iter().next();
                    // Kept until the next rebuild: no spare capacity.
                    rb.rev.sources.shrink_to_fit();
                    rb.rev.helm_versions.shrink_to_fit();
                    rb.rev.pull_secrets.shrink_to_fit();
                    rb.rev
                })
                .collect();
            revisions.sort_by_key(|r| std::cmp::Reverse((recency(r), r.key.template)));
            workloads.push(Workload {
                id,
                helm_release: wb.helm_release.map(|(_, r)| r),
                revisions,
            });
        }
        Inventory { workloads }
    }
}

fn upsert(
    w: &mut WorkloadBuilder,
    key: RevisionKey,
    fact: &RevisionFact,
    class: Class,
    images: Vec<ImageUse>,
    secrets: Vec<String>,
    scheduling: Scheduling,
) {
    use std::collections::hash_map::Entry;
    let from = (class.preference(), fact.object.clone());
    let rb = match w.revisions.entry(key.template) {
        Entry::Vacant(v) => v.insert(RevBuilder {
            rev: Revision {
                key,
                number: None,
                helm_release: None,
                helm_versions: Vec::new(),
                created: None,
                current: false,
                status: None,
                sources: Vec::new(),
                images,
                pull_secrets: secrets,
                service_account: fact
                    .template
                    .service_account
                    .clone()
                    .filter(|s| !s.is_empty()),
                scheduling,
            },
            has_cr: false,
            created_main: None,
            created_pods: None,
            helm_status: None,
            template_from: from,
            secrets: Vec::new(),
            service_accounts: Vec::new(),
            releases: Vec::new(),
        }),
        Entry::Occupied(o) => {
            let rb = o.into_mut();
            if from < rb.template_from {
                rb.template_from = from;
                rb.rev.images = images;
                rb.rev.pull_secrets = secrets;
                rb.rev.scheduling = scheduling;
                rb.rev.service_account = fact
                    .template
                    .service_account
                    .clone()
                    .filter(|s| !s.is_empty());
            }
            rb
        }
    };
    rb.add_source(fact, class);
}

impl RevBuilder {
    fn add_source(&mut self, fact: &RevisionFact, class: Class) {
        let r = &mut self.rev;
        match class {
            Class::Controller { cr } => {
                self.has_cr |= cr;
                if fact.revision.is_some() && fact.revision > r.number {
                    r.number = fact.revision;
                }
            }
            Class::Helm => {
                if let Some(v) = fact.revision {
                    r.helm_versions.push(v);
                    if let Some(s) = &fact.status
                        && self.helm_status.as_ref().is_none_or(|(old, _)| v > *old)
                    {
                        self.helm_status = Some((v, s.clone()));
                    }
                }
            }
            Class::Pod | Class::Other => {}
        }
        if let Some(rel) = &fact.helm_release {
            insert_new(&mut self.releases, rel);
        }
        if let Some(sa) = fact
            .template
            .service_account
            .as_ref()
            .filter(|s| !s.is_empty())
        {
            insert_new(&mut self.service_accounts, sa);
        }
        for secret in &fact.template.image_pull_secrets {
            if !secret.is_empty() {
                insert_new(&mut self.secrets, secret);
            }
        }
        r.current |= fact.current;
        let slot = if class == Class::Pod {
            &mut self.created_pods
        } else {
            &mut self.created_main
        };
        if let Some(c) = fact.created
            && slot.is_none_or(|old| c < old)
        {
            *slot = Some(c);
        }
        r.sources.push(RevisionSource {
            kind: fact.source,
            object: fact.object.clone(),
            revision: fact.revision,
            created: fact.created,
            current: fact.current,
            status: fact.status.clone(),
        });
    }
}

/// Newest-first sort key: controller number, then Helm version, then creation time (None is
/// oldest). A total order, so that sorting is deterministic.
fn recency(r: &Revision) -> (Option<i64>, Option<i64>, Option<i64>) {
    (
        r.number,
        r.helm_versions.iter().copied().max(),
        r.created
            .or_else(|| r.sources.iter().filter_map(|s| s.created).min()),
    )
}

fn dedup(v: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(v.len());
    for s in v {
        if !s.is_empty() && !out.contains(s) {
            out.push(s.clone());
        }
    }
    out
}

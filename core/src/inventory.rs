//! The inventory: workloads → revisions → images, built from the facts of every source.
//!
//! The same revision seen through several sources (a ReplicaSet and a Helm release, a
//! ControllerRevision and a Helm release, a pod and its ReplicaSet) is one revision with several
//! sources. Within a workload a revision is identified by its pod template content (normalised
//! images, effective pull policies, pull secrets, scheduling); a pod joins the revision of the
//! ReplicaSet that owns it, or else the revision with the same images.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

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

/// What a fact's revision number means.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// ReplicaSet (`cr: false`) or ControllerRevision (`cr: true`).
    Controller {
        cr: bool,
    },
    Helm,
    Pod,
    Other,
}

impl Class {
    fn of(f: &RevisionFact) -> Class {
        match f.source {
            SourceKind::ReplicaSet => Class::Controller { cr: false },
            SourceKind::ControllerRevision => Class::Controller { cr: true },
            SourceKind::HelmRelease => Class::Helm,
            SourceKind::Pod => Class::Pod,
            SourceKind::Config => Class::Other,
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
struct Builder {
    workloads: BTreeMap<WorkloadId, WorkloadBuilder>,
    /// ReplicaSet (namespace, name) → the revision it holds, so that its pods join it.
    replicasets: HashMap<(String, String), RevisionKey>,
    /// (workload, images fingerprint) → revisions with those images.
    by_images: HashMap<(WorkloadId, u64), Vec<TemplateId>>,
    /// Parsed references, shared by the many facts that name the same image.
    parsed: HashMap<String, Result<ImageRef, String>>,
    problems: Vec<DecodeProblem>,
}

impl Builder {
    fn images_of(&mut self, fact: &RevisionFact) -> Vec<ImageUse> {
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

    fn add_template_fact(&mut self, fact: &RevisionFact, class: Class) {
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

    fn index_images(&mut self) {
        for (wid, w) in &self.workloads {
            for (tid, rb) in &w.revisions {
                self.by_images
                    .entry((wid.clone(), images_fingerprint(&rb.rev.images)))
                    .or_default()
                    .push(*tid);
            }
        }
    }

    fn add_pod_fact(&mut self, fact: &RevisionFact) {
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

    fn finish(&mut self) -> Inventory {
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

/// Drops what the scheduler and the DaemonSet controller write into a pod: `nodeName` and
/// `matchFields` on `metadata.name`; terms left empty by that are dropped too.
fn relax_controller_pod(s: &mut Scheduling) {
    s.node_name = None;
    let had_terms = !s.required_terms.is_empty();
    for t in &mut s.required_terms {
        t.match_fields.retain(|r| r.key != "metadata.name");
    }
    s.required_terms
        .retain(|t| !t.match_expressions.is_empty() || !t.match_fields.is_empty());
    if had_terms && s.required_terms.is_empty() {
        tracing::trace!("pod node affinity only pinned the pod to its node; dropped");
    }
}

/// Scheduling with empty strings and absent values made equal, and tolerations sorted, so that a
/// template written by a chart and the same template read back from the API compare equal.
fn normalise_scheduling(s: &Scheduling) -> Scheduling {
    let none_if_empty = |o: &Option<String>| o.clone().filter(|v| !v.is_empty());
    let mut tolerations: Vec<_> = s
        .tolerations
        .iter()
        .map(|t| crate::model::Toleration {
            key: none_if_empty(&t.key),
            operator: Some(none_if_empty(&t.operator).unwrap_or_else(|| "Equal".to_owned())),
            value: none_if_empty(&t.value),
            effect: none_if_empty(&t.effect),
        })
        .collect();
    tolerations.sort_by(|a, b| {
        (&a.key, &a.operator, &a.value, &a.effect).cmp(&(&b.key, &b.operator, &b.value, &b.effect))
    });
    tolerations.dedup();
    Scheduling {
        node_name: none_if_empty(&s.node_name),
        node_selector: s.node_selector.clone(),
        required_terms: s.required_terms.clone(),
        tolerations,
    }
}

fn feed(h: &mut Sha256, s: &str) {
    h.update((s.len() as u64).to_le_bytes());
    h.update(s.as_bytes());
}

fn feed_opt(h: &mut Sha256, s: &Option<String>) {
    match s {
        Some(s) => {
            h.update([1]);
            feed(h, s);
        }
        None => h.update([0]),
    }
}

fn image_identity(h: &mut Sha256, u: &ImageUse) {
    h.update([u.init as u8, u.pull_policy as u8]);
    match &u.image {
        Some(r) => feed(h, &r.canonical()),
        None => feed(h, &u.written),
    }
}

fn truncate(h: Sha256) -> u64 {
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

/// The images a pod is matched on: normalised references, init flags and effective policies.
fn images_fingerprint(images: &[ImageUse]) -> u64 {
    let mut h = Sha256::new();
    for u in images {
        image_identity(&mut h, u);
    }
    truncate(h)
}

fn template_id(images: &[ImageUse], secrets: &[String], s: &Scheduling) -> TemplateId {
    let mut h = Sha256::new();
    h.update((images.len() as u64).to_le_bytes());
    for u in images {
        image_identity(&mut h, u);
    }
    let mut sorted: Vec<&String> = secrets.iter().collect();
    sorted.sort();
    h.update((sorted.len() as u64).to_le_bytes());
    for sec in sorted {
        feed(&mut h, sec);
    }
    feed_opt(&mut h, &s.node_name);
    h.update((s.node_selector.len() as u64).to_le_bytes());
    for (k, v) in &s.node_selector {
        feed(&mut h, k);
        feed(&mut h, v);
    }
    h.update((s.required_terms.len() as u64).to_le_bytes());
    for t in &s.required_terms {
        for list in [&t.match_expressions, &t.match_fields] {
            h.update((list.len() as u64).to_le_bytes());
            for r in list {
                feed(&mut h, &r.key);
                feed(&mut h, &r.operator);
                h.update((r.values.len() as u64).to_le_bytes());
                for v in &r.values {
                    feed(&mut h, v);
                }
            }
        }
    }
    h.update((s.tolerations.len() as u64).to_le_bytes());
    for t in &s.tolerations {
        feed_opt(&mut h, &t.key);
        feed_opt(&mut h, &t.operator);
        feed_opt(&mut h, &t.value);
        feed_opt(&mut h, &t.effect);
    }
    TemplateId(truncate(h))
}

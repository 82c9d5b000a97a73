//! A revision's identity within its workload: a digest of its normalised pod template (images,
//! effective pull policies, pull secrets, scheduling), so equal templates from any source match.

use sha2::{Digest as _, Sha256};

use super::ImageUse;
use super::TemplateId;
use crate::model::Scheduling;

/// Drops what the scheduler and the DaemonSet controller write into a pod: `nodeName` and
/// `matchFields` on `metadata.name`; terms left empty by that are dropped too.
pub(super) fn relax_controller_pod(s: &mut Scheduling) {
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
pub(super) fn normalise_scheduling(s: &Scheduling) -> Scheduling {
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
pub(super) fn images_fingerprint(images: &[ImageUse]) -> u64 {
    let mut h = Sha256::new();
    for u in images {
        image_identity(&mut h, u);
    }
    truncate(h)
}

pub(super) fn template_id(images: &[ImageUse], secrets: &[String], s: &Scheduling) -> TemplateId {
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

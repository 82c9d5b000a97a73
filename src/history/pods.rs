//! Pods: what runs now, with the digest each container actually runs.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use super::{Decoded, ProblemKind, meta, template};
use crate::model::{RevisionFact, SourceKind};

pub fn decode(pod: &Pod) -> Decoded {
    let object = meta::object_ref("Pod", &pod.metadata);
    let mut out = Decoded::default();
    let Some(spec) = pod.spec.as_ref() else {
        return Decoded::skipped(
            object,
            ProblemKind::MissingField,
            "no spec; the pod is skipped",
        );
    };
    // The controlling owner as recorded (a ReplicaSet stays a ReplicaSet: mapping it to its
    // Deployment needs the ReplicaSet, which the inventory has).
    let workload = match meta::owning_workload(&pod.metadata, &object) {
        Ok(w) => w,
        Err(message) => {
            return Decoded::skipped(object, ProblemKind::InvalidField, message);
        }
    };
    let (mut template, problems) = template::from_pod_spec(spec, &object);
    out.problems.extend(problems);
    let status = pod.status.as_ref();
    let statuses = |init: bool| -> &[ContainerStatus] {
        status
            .and_then(|s| {
                if init {
                    s.init_container_statuses.as_deref()
                } else {
                    s.container_statuses.as_deref()
                }
            })
            .unwrap_or_default()
    };
    for c in &mut template.containers {
        c.image_id = statuses(c.init)
            .iter()
            .find(|s| s.name == c.name)
            .map(|s| image_id(&s.image_id))
            .filter(|id| !id.is_empty());
    }
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("");
    out.facts.push(RevisionFact {
        source: SourceKind::Pod,
        created: meta::created(&pod.metadata),
        object,
        workload,
        revision: None,
        helm_release: None,
        status: None,
        current: matches!(phase, "Running" | "Pending"),
        template: template.into(),
    });
    out
}

/// Docker-shim era runtimes prefix repo digests with `docker-pullable://`.
fn image_id(raw: &str) -> String {
    raw.strip_prefix("docker-pullable://")
        .unwrap_or(raw)
        .to_owned()
}

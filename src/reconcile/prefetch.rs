//! Manual prefetch: what `POST /prefetch` (and `rollcache prefetch`) asks of the loop, checked,
//! queued ahead of backoff and jitter, and answered with what was chosen.

use std::time::Instant;

use crate::decide::{self, Held};
use crate::http::{PrefetchAccepted, PrefetchRequest};
use crate::image_ref::ImageRef;
use crate::plan::DesiredImage;

use super::daemon::{Daemon, LoopState};
use super::pass::held_of;

/// Images a manual prefetch may hold at once (until restart): the admin API is outside input.
pub(super) const MAX_MANUAL_IMAGES: usize = 1024;

impl Daemon {
    pub(super) async fn prefetch_cmd(
        &self,
        st: &mut LoopState,
        req: &PrefetchRequest,
    ) -> Result<PrefetchAccepted, String> {
        let mut chosen = Vec::new();
        if !req.images.is_empty() {
            for image in &req.images {
                let r = ImageRef::parse(image).map_err(|e| format!("`{image}`: {e}"))?;
                chosen.push(r.canonical());
            }
            let held = st.manual.len() + chosen.iter().filter(|r| !st.manual.contains(*r)).count();
            if held > MAX_MANUAL_IMAGES {
                return Err(format!(
                    "a manual prefetch holds at most {MAX_MANUAL_IMAGES} images until restart ({held} asked); list the ones to keep in `extra_images`"
                ));
            }
            st.manual.extend(chosen.iter().cloned());
            st.planned.invalidate();
        } else {
            let plan = st
                .planned
                .plan
                .clone()
                .ok_or("no plan yet: the daemon is starting")?;
            let matches_scope = |d: &DesiredImage| {
                req.namespace.is_none()
                    || d.needed_by.iter().any(|k| {
                        Some(&k.workload.namespace) == req.namespace.as_ref()
                            && req
                                .workload
                                .as_ref()
                                .is_none_or(|w| workload_matches(w, &k.workload))
                    })
            };
            chosen = plan
                .images
                .iter()
                .filter(|d| matches_scope(d))
                .map(|d| d.reference.clone())
                .collect();
            if chosen.is_empty() && req.namespace.is_some() {
                return Err(format!(
                    "nothing this node holds belongs to {}{}",
                    req.namespace.as_deref().unwrap_or_default(),
                    req.workload
                        .as_deref()
                        .map(|w| format!("/{w}"))
                        .unwrap_or_default()
                ));
            }
        }
        // A manual trigger skips backoff and jitter for what it names.
        for r in &chosen {
            st.decide.failures.remove(r);
            st.decide.not_before.insert(r.clone(), Instant::now());
        }
        st.decide.registry_failures.clear();
        // Present ones are only pinned (if needed) by the pass that follows. A runtime that does
        // not answer now counts none as present; the pass retries it anyway.
        let held: Vec<Held> = match self.runtime.list().await {
            Ok(infos) => infos.iter().map(held_of).collect(),
            Err(_) => Vec::new(),
        };
        let already_present = chosen
            .iter()
            .filter(|r| decide::find_held(&held, r).is_some())
            .count();
        tracing::info!(images = chosen.len(), already_present, scope = ?req, "manual prefetch");
        Ok(PrefetchAccepted {
            already_present,
            images: chosen,
        })
    }
}

fn workload_matches(selector: &str, w: &crate::model::WorkloadId) -> bool {
    match selector.split_once('/') {
        Some((kind, name)) => kind.eq_ignore_ascii_case(&w.kind) && name == w.name,
        None => selector == w.name,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::watch;

    use super::*;
    use crate::config::Config;
    use crate::history::store::HistoryStore;
    use crate::node::MemoryRuntime;

    /// Manual prefetches hold their images until restart: their number is capped, since every
    /// request adds to it.
    #[tokio::test]
    async fn images_held_by_manual_prefetch_are_bounded() {
        let (_config_tx, config) = watch::channel(Arc::new(Config {
            start_jitter: std::time::Duration::from_secs(3600),
            ..Config::default()
        }));
        let daemon = Daemon::new(Arc::new(MemoryRuntime::new()), HistoryStore::new(), config);
        let mut st = LoopState::default();
        let batch = |from: usize, n: usize| PrefetchRequest {
            images: (from..from + n)
                .map(|i| format!("reg.example/app:{i}"))
                .collect(),
            ..Default::default()
        };
        daemon
            .prefetch_cmd(&mut st, &batch(0, 1000))
            .await
            .expect("1000 held");
        daemon
            .prefetch_cmd(&mut st, &batch(500, 524))
            .await
            .expect("asking again for held images adds only the new ones");
        assert_eq!(st.manual.len(), MAX_MANUAL_IMAGES);
        let e = daemon
            .prefetch_cmd(&mut st, &batch(5000, 1))
            .await
            .expect_err("over the cap");
        assert!(e.contains("extra_images"), "{e}");
        assert_eq!(st.manual.len(), MAX_MANUAL_IMAGES);
        daemon
            .prefetch_cmd(&mut st, &batch(0, 3))
            .await
            .expect("held ones can still be asked for");
    }
}

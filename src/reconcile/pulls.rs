//! Pulls in flight: one task per image, which reads its namespaces' credentials and pulls; when it
//! ends, the outcome frees its slot and is recorded (success, or failure with backoff).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::task::{Id, JoinError, JoinSet};

use crate::decide::{self, Want};
use crate::metrics::OpResult;
use crate::node::{NodeError, PullOutcome};
use crate::plan::DesiredImage;

use super::credentials::pull_with;
use super::daemon::{Daemon, LoopState};
use super::pass::params;

/// What a pull task returns: what it pulled, how that went, and how long it took.
type PullDone = (Want, Result<PullOutcome, NodeError>, Duration);

/// A pull task that ended: with its result, or by panicking or being aborted (what it pulled, when
/// known).
pub(super) enum Joined {
    Done(PullDone),
    Failed(Option<Want>, JoinError),
}

#[derive(Default)]
pub(super) struct Pulls {
    set: JoinSet<PullDone>,
    /// What each task pulls, so that a task that panics or is aborted frees its slot.
    tasks: HashMap<Id, Want>,
}

impl Pulls {
    pub(super) fn len(&self) -> usize {
        self.set.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// The next task to end (cancel-safe, for `select!`).
    pub(super) async fn join_next(&mut self) -> Option<Joined> {
        Some(match self.set.join_next_with_id().await? {
            Ok((id, done)) => {
                self.tasks.remove(&id);
                Joined::Done(done)
            }
            Err(e) => Joined::Failed(self.tasks.remove(&e.id()), e),
        })
    }

    /// Cancels every task in flight and waits for them to end; returns how many there were.
    pub(super) async fn cancel_all(&mut self) -> usize {
        let in_flight = self.set.len();
        self.set.abort_all();
        while self.set.join_next().await.is_some() {}
        self.tasks.clear();
        in_flight
    }
}

impl Daemon {
    /// Starts pulling `desired` (the image `want` names) in a task of its own.
    pub(super) fn start_pull(&self, st: &mut LoopState, desired: DesiredImage, want: Want) {
        st.decide.in_flight.insert(want.reference.clone());
        let runtime = self.runtime.clone();
        let creds = self.credentials.clone();
        tracing::info!(image = %want.reference, priority = ?desired.priority, "pull started");
        let task_want = want.clone();
        let task = st.pulls.set.spawn(async move {
            let started = Instant::now();
            let sets = match &creds {
                Some(c) => c.for_image(&desired).await,
                None => Vec::new(),
            };
            let result = pull_with(&*runtime, &desired.pull_ref, &sets).await;
            (task_want, result, started.elapsed())
        });
        st.pulls.tasks.insert(task.id(), want);
    }

    pub(super) fn pull_joined(&self, st: &mut LoopState, joined: Joined) {
        match joined {
            Joined::Done(done) => self.pull_finished(st, done),
            Joined::Failed(Some(want), e) => self.pull_task_failed(st, want, e),
            Joined::Failed(None, _) => {}
        }
    }

    /// A pull task that panicked or was aborted: its slot is freed and the image retried with
    /// backoff, as after a failed pull.
    fn pull_task_failed(&self, st: &mut LoopState, want: Want, e: JoinError) {
        st.decide.in_flight.remove(&want.reference);
        let what = if e.is_panic() {
            "panicked"
        } else {
            "was cancelled"
        };
        let cfg = self.config.borrow().clone();
        let params = params(&cfg, false, false);
        decide::record_failure(
            &mut st.decide,
            &want,
            format!("the pull task {what}"),
            false,
            &params,
            Instant::now(),
        );
        self.out.metrics.pull_finished(OpResult::TaskFailed);
        tracing::error!(image = %want.reference, "pull task {what}; retried with backoff");
    }

    fn pull_finished(&self, st: &mut LoopState, (want, result, took): PullDone) {
        st.decide.in_flight.remove(&want.reference);
        self.out.metrics.pull_finished(OpResult::of(&result));
        let cfg = self.config.borrow().clone();
        let params = params(&cfg, false, false);
        match result {
            Ok(outcome) => {
                let info = outcome.image();
                st.planned
                    .size_hints
                    .insert(want.reference.clone(), info.size);
                decide::record_success(&mut st.decide, &want);
                if let PullOutcome::Pulled(_) = outcome {
                    self.out.metrics.image_pulled(took, info.size);
                }
                tracing::info!(
                    image = %want.reference,
                    digest = info.digest().unwrap_or("-"),
                    size = info.size,
                    seconds = took.as_secs_f64(),
                    "pulled"
                );
            }
            Err(e) => {
                let registry_down = matches!(
                    e,
                    NodeError::RegistryUnreachable { .. } | NodeError::DeadlineExceeded { .. }
                );
                decide::record_failure(
                    &mut st.decide,
                    &want,
                    e.to_string(),
                    registry_down,
                    &params,
                    Instant::now(),
                );
                let retry = st.decide.failures.get(&want.reference).map(|f| {
                    f.retry_at
                        .saturating_duration_since(Instant::now())
                        .as_secs()
                });
                tracing::warn!(image = %want.reference, error = %e, retry_in_seconds = ?retry, "pull failed");
            }
        }
    }
}

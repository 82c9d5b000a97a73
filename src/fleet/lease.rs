//! Leader election on a `coordination.k8s.io` Lease: one replica of `rollcache index` writes.
//!
//! A replica takes the Lease when it is missing, free (no holder) or expired (`renewTime` +
//! `leaseDurationSeconds` in the past), renews it every third of the duration, and writes only
//! through the resourceVersion it read: a conflict means another replica won. A leader that has
//! not renewed for two thirds of the duration says it no longer leads, so it stops writing before
//! anyone may take over; on cancel it clears the holder so that the next replica need not wait.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// One replica's side of the election.
#[derive(Clone)]
pub struct Elector {
    pub api: Api<Lease>,
    /// The Lease's name.
    pub name: String,
    /// This replica (its pod name).
    pub identity: String,
    /// `leaseDurationSeconds`: how long a lease stays held without a renewal.
    pub duration: Duration,
}

/// What to do with the Lease as read.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Create,
    Renew,
    TakeOver,
    /// Held by someone else, not expired.
    Wait {
        holder: String,
    },
}

/// The step for `identity` on `spec` (None: no Lease) at `now`.
pub fn step(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Step {
    let Some(spec) = spec else {
        return Step::Create;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder == identity {
        return Step::Renew;
    }
    if holder.is_empty() {
        return Step::TakeOver;
    }
    let seconds = i64::from(spec.lease_duration_seconds.unwrap_or(0).max(0));
    let last = spec.renew_time.as_ref().or(spec.acquire_time.as_ref());
    let expired = last.is_none_or(|t| {
        t.0.checked_add(jiff::SignedDuration::from_secs(seconds))
            .is_ok_and(|until| until <= now)
    });
    if expired {
        Step::TakeOver
    } else {
        Step::Wait {
            holder: holder.to_owned(),
        }
    }
}

impl Elector {
    fn seconds(&self) -> i32 {
        self.duration.as_secs().clamp(1, i32::MAX as u64) as i32
    }

    /// One attempt: whether this replica holds the Lease afterwards.
    pub async fn try_once(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let current = self.api.get_opt(&self.name).await?;
        let spec = current.as_ref().and_then(|l| l.spec.as_ref());
        let mine = |spec: LeaseSpec| LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.seconds()),
            renew_time: Some(MicroTime(now)),
            ..spec
        };
        let next = match step(spec, &self.identity, now) {
            Step::Wait { .. } => return Ok(false),
            Step::Create => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(mine(LeaseSpec {
                        acquire_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    })),
                };
                return won(self.api.create(&PostParams::default(), &lease).await);
            }
            Step::Renew => mine(spec.cloned().unwrap_or_default()),
            Step::TakeOver => {
                let old = spec.cloned().unwrap_or_default();
                let transitions = old.lease_transitions.unwrap_or(0).saturating_add(1);
                mine(LeaseSpec {
                    acquire_time: Some(MicroTime(now)),
                    lease_transitions: Some(transitions),
                    ..old
                })
            }
        };
        let mut lease = current.unwrap_or_default();
        lease.spec = Some(next);
        // The resourceVersion read stays in the metadata: a replica that wrote since wins.
        won(self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await)
    }

    /// Clears the holder if it is this replica, so that another takes over at its next attempt.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        won(self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await)
        .map(|_| ())
    }

    /// Runs the election until `cancel`; the receiver says whether this replica leads now.
    pub fn spawn(
        self,
        cancel: CancellationToken,
    ) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(async move { self.run(tx, cancel).await });
        (rx, task)
    }

    async fn run(self, tx: watch::Sender<bool>, cancel: CancellationToken) {
        // The Lease holds whole seconds: time from what others read, not from a finer duration.
        let duration = Duration::from_secs(self.seconds() as u64);
        let period = duration / 3;
        // Stop leading before the lease can expire in anyone's eyes.
        let deadline = duration * 2 / 3;
        let mut confirmed: Option<Instant> = None;
        let mut last_problem: Option<String> = None;
        let say = |confirmed: &mut Option<Instant>| {
            if confirmed.is_some_and(|t| t.elapsed() >= deadline) {
                *confirmed = None;
            }
            let leading = confirmed.is_some();
            if tx.send_if_modified(|l| std::mem::replace(l, leading) != leading) {
                info!(lease = %self.name, identity = %self.identity, leading, "leadership changed");
            }
        };
        loop {
            let started = Instant::now();
            let attempt = tokio::select! {
                _ = cancel.cancelled() => break,
                r = tokio::time::timeout(period, self.try_once()) => r,
            };
            let problem = match attempt {
                Ok(Ok(true)) => {
                    confirmed = Some(started);
                    None
                }
                Ok(Ok(false)) => {
                    confirmed = None;
                    None
                }
                Ok(Err(e)) => Some(format!("cannot read or write the lease: {e}")),
                Err(_) => Some("the lease request did not answer in time".to_owned()),
            };
            // Once per change, not once per attempt.
            if problem != last_problem {
                match &problem {
                    Some(p) => warn!(lease = %self.name, "{p}"),
                    None => info!(lease = %self.name, "the lease answers again"),
                }
                last_problem = problem;
            }
            say(&mut confirmed);
            let next = started + period;
            // A leader whose renewals fail wakes at its deadline to stop leading on time.
            if let Some(t) = confirmed
                && t + deadline < next
            {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep_until(t + deadline) => {}
                }
                say(&mut confirmed);
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep_until(next) => {}
            }
        }
        let was_leading = *tx.borrow();
        tx.send_replace(false);
        if !was_leading {
            return;
        }
        // A hanging API must not hold the shutdown: the lease expires by itself anyway.
        match tokio::time::timeout(period, self.release()).await {
            Ok(Ok(())) => info!(lease = %self.name, "lease released"),
            Ok(Err(e)) => {
                warn!(lease = %self.name, error = %e, "cannot release the lease; it expires by itself")
            }
            Err(_) => {
                warn!(lease = %self.name, "the lease release did not answer in time; it expires by itself")
            }
        }
    }
}

/// A write's outcome as leadership: a conflict is another replica winning the race.
fn won(r: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match r {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests;

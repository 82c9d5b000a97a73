//! Drives one kube watcher into the store: its events, its failures, its quiet resumes.
//!
//! Events go to the watcher's `Sink`; a failing watch marks its source in error once; a quiet
//! resume (a watch that resumes emits nothing) is told by a probe list. Any resource, typed or
//! dynamic (the fleet inventory), and a sink's own clock (`Sink::tick`) go through this one loop.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::Resource;
use kube::api::{Api, ListParams};
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::DefaultBackoff;
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::store::{HistoryStore, StatusKey};
use super::supervise::key_name;

/// What a watcher's events do to the store.
pub(super) trait Sink<K>: Send {
    fn key(&self) -> StatusKey;
    fn event(&mut self, store: &HistoryStore, event: watcher::Event<K>);

    /// How often `tick` runs, between events and whatever the watch does; None: never.
    fn tick_interval(&self) -> Option<Duration> {
        None
    }

    /// What changes with time alone (the inventory's catalog ageing), seen without an event.
    fn tick(&mut self, _store: &HistoryStore) {}
}

/// Once a retry of the watcher was due this long ago without a new error, and a probe answers,
/// the watch is taken as resumed.
const RESUME_SETTLE: Duration = Duration::from_secs(1);

/// kube's default watcher backoff, remembering when the next retry is due so that a quiet
/// resume (no event) can be told from a retry still waiting.
struct ObservedBackoff {
    inner: DefaultBackoff,
    retry_at: Arc<Mutex<Option<Instant>>>,
}

impl Iterator for ObservedBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.inner.next();
        if let Some(d) = delay {
            *self.retry_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + d);
        }
        delay
    }
}

impl Backoff for ObservedBackoff {
    fn reset(&mut self) {
        self.inner.reset();
    }
}

/// Feeds `api`'s watcher into `sink` until `token` is cancelled.
pub(super) async fn drive<K, S>(
    api: Api<K>,
    wc: watcher::Config,
    mut sink: S,
    store: Arc<HistoryStore>,
    token: CancellationToken,
    probe_interval: Duration,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    S: Sink<K>,
{
    let key = sink.key();
    let name = key_name(&key);
    let retry_at = Arc::new(Mutex::new(None));
    let new_stream = || {
        let backoff = ObservedBackoff {
            inner: DefaultBackoff::default(),
            retry_at: retry_at.clone(),
        };
        watcher(api.clone(), wc.clone()).backoff(backoff).boxed()
    };
    let mut stream = new_stream();
    let mut probe_at: Option<Instant> = None;
    let mut last_error: Option<Instant> = None;
    // One log line per change of state, not per attempt: a failing watch is announced once and
    // its end once, however many retries (and re-lists, when lists answer but watches do not)
    // happen in between. Only a watch delivering changes, or a quiet resume, ends it.
    let mut failing = false;
    let mut ticks = sink.tick_interval().map(|every| {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks
    });
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = next_tick(&mut ticks) => sink.tick(&store),
            item = stream.next() => match item {
                Some(Ok(event)) => {
                    let (listed, watched) = match &event {
                        watcher::Event::InitDone => (true, false),
                        watcher::Event::Apply(_) | watcher::Event::Delete(_) => (false, true),
                        _ => (false, false),
                    };
                    sink.event(&store, event);
                    // A list done or a change delivered shows the API answers, whether or not
                    // the sink had anything to give the store.
                    if listed || watched {
                        store.set_ok(&key);
                    }
                    if watched && failing {
                        info!(source = %name, "watch resumed");
                        failing = false;
                    }
                    if !failing {
                        probe_at = None;
                    }
                    if listed {
                        let objects = match &key {
                            StatusKey::Source(id) => store.status(id).map_or(0, |s| s.objects),
                            StatusKey::Node => usize::from(store.snapshot().node.is_some()),
                        };
                        if failing {
                            debug!(source = %name, objects, "re-listed while the watch fails");
                        } else {
                            info!(source = %name, objects, "listed");
                        }
                    }
                }
                Some(Err(e)) => {
                    if failing {
                        debug!(source = %name, error = %e, "watch still failing");
                    } else {
                        warn!(source = %name, error = %e, "watch failed; the source is in error (nothing is unpinned) until it answers again; retrying with backoff");
                        failing = true;
                    }
                    store.set_error(&key, e.to_string());
                    last_error = Some(Instant::now());
                    probe_at.get_or_insert_with(|| Instant::now() + probe_interval);
                }
                // The watcher never ends on its own; start a new one if it does.
                None => {
                    stream = new_stream();
                }
            },
            _ = sleep_until_opt(probe_at) => {
                let due = *retry_at.lock().unwrap_or_else(|e| e.into_inner());
                // A retry that was due a while ago and produced no error since has resumed the
                // watch; the probe confirms that the API answers.
                let resumed = due.is_some_and(|t| {
                    Instant::now() >= t + RESUME_SETTLE && last_error.is_none_or(|e| e < t)
                });
                if resumed && (failing || store.in_error(&key)) && probe(&api, &wc).await {
                    info!(source = %name, "watch resumed");
                    store.set_ok(&key);
                    failing = false;
                    probe_at = None;
                } else {
                    probe_at = Some(Instant::now() + probe_interval);
                }
            }
        }
    }
}

async fn next_tick(ticks: &mut Option<tokio::time::Interval>) {
    match ticks {
        Some(ticks) => {
            ticks.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One cheap list (a single object, same selectors) to tell whether the API answers.
async fn probe<K>(api: &Api<K>, wc: &watcher::Config) -> bool
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let mut lp = ListParams::default().limit(1);
    lp.label_selector = wc.label_selector.clone();
    lp.field_selector = wc.field_selector.clone();
    match api.list(&lp).await {
        Ok(_) => true,
        Err(e) => {
            debug!(error = %e, "API probe failed");
            false
        }
    }
}

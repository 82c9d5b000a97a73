//! The reconcile decision, pure: desired images + what the runtime holds + what rollcache remembers
//! (pulls in flight, failures, unneeded-since times) + now → which pulls to start, what to pin, what to
//! unpin. No I/O and no clock, so every safety rule is tested with plain values.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// One image the plan wants, in priority order (index 0 first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Want {
    /// Canonical reference (`docker.io/library/busybox:1.36`, `repo@sha256:…`, `repo:tag@sha256:…`).
    pub reference: String,
    /// Registry host, for per-registry backoff.
    pub registry: String,
    /// Bytes a pull is expected to add (from an earlier pull); None: unknown.
    pub size_hint: Option<u64>,
}

/// What a pull of an image of unknown size is expected to add to the disk. Conservative on
/// purpose: most application images are smaller, and overestimating only delays a pull until
/// the ones in flight have finished and the disk is measured again.
pub const UNKNOWN_IMAGE_BYTES: u64 = 512 * 1024 * 1024;

/// One image the runtime holds, reduced to what decisions need.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Held {
    /// Image id (config digest).
    pub id: String,
    /// `repo:tag` names.
    pub tags: Vec<String>,
    /// `repo@sha256:…` names.
    pub digests: Vec<String>,
    pub pinned: bool,
    /// The pin carries rollcache's marker (so rollcache may remove it).
    pub pinned_by_us: bool,
    pub size: u64,
}

/// Why a wanted image is not (yet) being pulled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Waiting {
    /// Pull in flight.
    Pulling,
    /// Failed; retry after `retry_at`.
    Backoff {
        error: String,
        attempts: u32,
        retry_at: Instant,
    },
    /// The registry as a whole is failing; retry after `retry_at`.
    RegistryBackoff { error: String, retry_at: Instant },
    /// Random start delay not over yet.
    Jitter { until: Instant },
    /// The image filesystem is above the disk budget.
    DiskBudget,
    /// All pull slots are busy.
    Queued,
}

/// Memory the decision carries from pass to pass. Owned by the reconcile loop.
#[derive(Debug, Default)]
pub struct State {
    pub in_flight: HashSet<String>,
    pub failures: HashMap<String, Failure>,
    pub registry_failures: HashMap<String, Failure>,
    /// When a wanted image was first seen missing; with jitter, the earliest its pull may start.
    pub not_before: HashMap<String, Instant>,
    /// Since when each of our pinned images has been unneeded (only while the view is fresh).
    pub unneeded_since: HashMap<String, Instant>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub error: String,
    pub attempts: u32,
    pub retry_at: Instant,
}

#[derive(Clone, Debug)]
pub struct Params {
    pub max_concurrent_pulls: usize,
    pub unpin_grace: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Image filesystem above budget: start no pull.
    pub over_disk_budget: bool,
    /// Bytes that may still be added before the budget is reached, pulls in flight not yet
    /// deducted (see [`disk_headroom`]); None when the filesystem's size is unknown.
    pub disk_headroom: Option<u64>,
    /// Every source has synced since start and none is in error.
    pub view_fresh: bool,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// References to pull now, in priority order.
    pub pull: Vec<String>,
    /// Held image ids to pin (present, wanted, not pinned by anyone).
    pub pin: Vec<String>,
    /// Held image ids to unpin (ours, unneeded for longer than the grace period, view fresh).
    pub unpin: Vec<String>,
    /// Wanted images that are not present and why (present ones are absent here).
    pub waiting: Vec<(String, Waiting)>,
}

/// Does `held` satisfy the wanted reference? A digest reference needs that digest; a tag reference
/// needs that tag (what it pointed to when pulled is what the node has).
pub fn satisfies(held: &Held, reference: &str) -> bool {
    match crate::image_ref::split_written(reference) {
        (repo, _, Some(digest)) => held
            .digests
            .iter()
            .any(|d| d.strip_prefix(repo).and_then(|d| d.strip_prefix('@')) == Some(digest)),
        (_, _, None) => held.tags.iter().any(|t| t == reference),
    }
}

/// Index held images by every name they carry.
pub fn find_held<'a>(held: &'a [Held], reference: &str) -> Option<&'a Held> {
    held.iter().find(|h| satisfies(h, reference))
}

/// Decide one pass. `jitter` gives the random start delay for an image newly seen missing.
pub fn decide(
    wants: &[Want],
    held: &[Held],
    state: &mut State,
    params: &Params,
    now: Instant,
    mut jitter: impl FnMut() -> Duration,
) -> Decision {
    let mut d = Decision::default();
    let mut wanted_ids = HashSet::new();
    let mut free_slots = params
        .max_concurrent_pulls
        .saturating_sub(state.in_flight.len());
    // Pulls in flight will still grow the disk: their expected size is spoken for, so that pulls
    // started together just under the budget cannot overshoot it by one image each.
    let expected = |r: &str| {
        wants
            .iter()
            .find(|w| w.reference == r)
            .and_then(|w| w.size_hint)
            .unwrap_or(UNKNOWN_IMAGE_BYTES)
    };
    let mut room = params.disk_headroom.map(|h| {
        let in_flight: u64 = state.in_flight.iter().map(|r| expected(r)).sum();
        h.saturating_sub(in_flight)
    });

    for want in wants {
        if let Some(h) = find_held(held, &want.reference) {
            wanted_ids.insert(h.id.clone());
            state.failures.remove(&want.reference);
            state.not_before.remove(&want.reference);
            if !h.pinned && !d.pin.contains(&h.id) {
                d.pin.push(h.id.clone());
            }
            continue;
        }
        let r = &want.reference;
        let why = if state.in_flight.contains(r) {
            Waiting::Pulling
        } else if let Some(f) = state.failures.get(r).filter(|f| f.retry_at > now) {
            Waiting::Backoff {
                error: f.error.clone(),
                attempts: f.attempts,
                retry_at: f.retry_at,
            }
        } else if let Some(f) = state
            .registry_failures
            .get(&want.registry)
            .filter(|f| f.retry_at > now)
        {
            Waiting::RegistryBackoff {
                error: f.error.clone(),
                retry_at: f.retry_at,
            }
        } else if let Some(until) = state
            .not_before
            .entry(r.clone())
            .or_insert_with(|| later(now, jitter()))
            .checked_duration_since(now)
            .filter(|left| !left.is_zero())
            .map(|left| now + left)
        {
            Waiting::Jitter { until }
        } else if params.over_disk_budget {
            Waiting::DiskBudget
        } else if free_slots == 0 {
            Waiting::Queued
        } else if room.is_some_and(|left| want.size_hint.unwrap_or(UNKNOWN_IMAGE_BYTES) > left) {
            // Smaller images after it may still fit.
            Waiting::DiskBudget
        } else {
            free_slots -= 1;
            room = room.map(|left| left - want.size_hint.unwrap_or(UNKNOWN_IMAGE_BYTES));
            d.pull.push(r.clone());
            Waiting::Pulling
        };
        d.waiting.push((r.clone(), why));
    }

    // Unpin: only our own pins, only with a fresh view, only after the grace period. Without a
    // fresh view the clocks restart, so an outage never shortens the grace period.
    if !params.view_fresh {
        state.unneeded_since.clear();
    } else {
        let mut still_unneeded = HashMap::new();
        for h in held
            .iter()
            .filter(|h| h.pinned_by_us && !wanted_ids.contains(&h.id))
        {
            let since = state.unneeded_since.get(&h.id).copied().unwrap_or(now);
            if now.duration_since(since) >= params.unpin_grace {
                d.unpin.push(h.id.clone());
            } else {
                still_unneeded.insert(h.id.clone(), since);
            }
        }
        state.unneeded_since = still_unneeded;
    }
    // Forget jitter deadlines of images no longer wanted.
    let wanted: HashSet<&str> = wants.iter().map(|w| w.reference.as_str()).collect();
    state.not_before.retain(|r, _| wanted.contains(r.as_str()));
    state.failures.retain(|r, _| wanted.contains(r.as_str()));
    let registries: HashSet<&str> = wants.iter().map(|w| w.registry.as_str()).collect();
    state
        .registry_failures
        .retain(|r, _| registries.contains(r.as_str()));
    d
}

/// Record a failed pull: per-image exponential backoff, and per-registry backoff when the registry
/// itself is unreachable (so one outage does not cost one timeout per image).
pub fn record_failure(
    state: &mut State,
    want: &Want,
    error: String,
    registry_down: bool,
    params: &Params,
    now: Instant,
) {
    let attempts = state
        .failures
        .get(&want.reference)
        .map_or(0, |f| f.attempts)
        + 1;
    let delay = backoff(params, attempts);
    if registry_down {
        let reg_attempts = state
            .registry_failures
            .get(&want.registry)
            .map_or(0, |f| f.attempts)
            + 1;
        state.registry_failures.insert(
            want.registry.clone(),
            Failure {
                error: error.clone(),
                attempts: reg_attempts,
                retry_at: later(now, backoff(params, reg_attempts)),
            },
        );
    }
    state.failures.insert(
        want.reference.clone(),
        Failure {
            error,
            attempts,
            retry_at: later(now, delay),
        },
    );
}

/// A pull succeeded: the image and its registry are healthy again.
pub fn record_success(state: &mut State, want: &Want) {
    state.failures.remove(&want.reference);
    state.registry_failures.remove(&want.registry);
}

/// Is the image filesystem fuller than `budget_percent`? Counted as the kubelet's image GC counts
/// it (`1 - available / capacity` of the whole filesystem), so that space taken by others (logs,
/// container layers) counts too; only the images' own bytes when the free space is unknown.
pub fn over_disk_budget(
    images_bytes: u64,
    capacity: Option<u64>,
    available: Option<u64>,
    budget_percent: u8,
) -> bool {
    let Some((cap, used)) = fs_usage(images_bytes, capacity, available) else {
        return false;
    };
    u128::from(used) * 100 > u128::from(cap) * u128::from(budget_percent)
}

/// The filesystem's capacity and what counts as used on it (see [`over_disk_budget`]); None when
/// the capacity is unknown.
fn fs_usage(
    images_bytes: u64,
    capacity: Option<u64>,
    available: Option<u64>,
) -> Option<(u64, u64)> {
    let cap = capacity.filter(|c| *c > 0)?;
    let used = match available {
        Some(free) => cap.saturating_sub(free),
        None => images_bytes,
    };
    Some((cap, used))
}

/// `now + d`, or a year from now when `d` would overflow the clock (config validation keeps
/// durations far below that; this keeps a value that slipped through from panicking).
pub fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

/// Bytes the image filesystem may still take before it is fuller than `budget_percent`, counted
/// as [`over_disk_budget`] counts; None when the capacity is unknown (no budget can be enforced).
pub fn disk_headroom(
    images_bytes: u64,
    capacity: Option<u64>,
    available: Option<u64>,
    budget_percent: u8,
) -> Option<u64> {
    let (cap, used) = fs_usage(images_bytes, capacity, available)?;
    let budget = u128::from(cap) * u128::from(budget_percent) / 100;
    Some(u64::try_from(budget.saturating_sub(u128::from(used))).unwrap_or(u64::MAX))
}

fn backoff(params: &Params, attempts: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(20));
    params
        .backoff_initial
        .saturating_mul(factor)
        .min(params.backoff_max)
}

#[cfg(test)]
mod tests;

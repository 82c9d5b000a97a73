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
    match reference.split_once('@') {
        Some((name, digest)) => {
            let repo = match name.rfind(':') {
                Some(colon) if !name[colon..].contains('/') => &name[..colon],
                _ => name,
            };
            held.digests
                .iter()
                .any(|d| d == &format!("{repo}@{digest}"))
        }
        None => held.tags.iter().any(|t| t == reference),
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
mod tests {
    use super::*;

    fn want(r: &str) -> Want {
        Want {
            reference: r.into(),
            registry: r.split('/').next().unwrap().into(),
            size_hint: None,
        }
    }

    fn held(id: &str, tag: &str, pinned: bool, ours: bool) -> Held {
        Held {
            id: id.into(),
            tags: vec![tag.into()],
            digests: vec![format!(
                "{}@sha256:{}",
                tag.rsplit_once(':').unwrap().0,
                id.repeat(64 / id.len())
            )],
            pinned,
            pinned_by_us: ours,
            size: 1,
        }
    }

    fn params() -> Params {
        Params {
            max_concurrent_pulls: 2,
            unpin_grace: Duration::from_secs(600),
            backoff_initial: Duration::from_secs(5),
            backoff_max: Duration::from_secs(300),
            over_disk_budget: false,
            disk_headroom: None,
            view_fresh: true,
        }
    }

    fn no_jitter() -> Duration {
        Duration::ZERO
    }

    #[test]
    fn pulls_missing_in_priority_order_within_the_concurrency_bound() {
        let wants: Vec<_> = ["r/a:1", "r/b:1", "r/c:1"].map(want).into();
        let mut s = State::default();
        let d = decide(&wants, &[], &mut s, &params(), Instant::now(), no_jitter);
        assert_eq!(d.pull, vec!["r/a:1", "r/b:1"]);
        assert_eq!(d.waiting[2], ("r/c:1".into(), Waiting::Queued));
    }

    #[test]
    fn in_flight_pulls_are_not_started_twice_and_use_slots() {
        let wants: Vec<_> = ["r/a:1", "r/b:1", "r/c:1"].map(want).into();
        let mut s = State::default();
        s.in_flight.insert("r/a:1".into());
        let d = decide(&wants, &[], &mut s, &params(), Instant::now(), no_jitter);
        assert_eq!(d.pull, vec!["r/b:1"]);
    }

    #[test]
    fn present_unpinned_is_pinned_and_pinned_by_others_is_left_alone() {
        let wants: Vec<_> = ["r/a:1", "r/b:1"].map(want).into();
        let h = [
            held("aa", "r/a:1", false, false),
            held("bb", "r/b:1", true, false),
        ];
        let mut s = State::default();
        let d = decide(&wants, &h, &mut s, &params(), Instant::now(), no_jitter);
        assert_eq!(d.pin, vec!["aa"]);
        assert!(d.pull.is_empty() && d.unpin.is_empty());
    }

    #[test]
    fn digest_reference_needs_that_digest() {
        let h = held("aa", "r/a:1", true, true);
        let digest = "sha256:".to_string() + &"aa".repeat(32);
        assert!(satisfies(&h, &format!("r/a@{digest}")));
        assert!(satisfies(&h, &format!("r/a:1@{digest}")));
        assert!(!satisfies(&h, &format!("r/a@sha256:{}", "bb".repeat(32))));
        assert!(!satisfies(&h, "r/a:2"));
        let registry_port = Held {
            digests: vec![format!("127.0.0.1:5000/a@{digest}")],
            ..h
        };
        assert!(satisfies(
            &registry_port,
            &format!("127.0.0.1:5000/a@{digest}")
        ));
        assert!(satisfies(
            &registry_port,
            &format!("127.0.0.1:5000/a:1@{digest}")
        ));
    }

    #[test]
    fn unpin_only_ours_only_after_grace_only_with_fresh_view() {
        let h = [
            held("aa", "r/a:1", true, true),  // ours, unneeded
            held("bb", "r/b:1", true, false), // someone else's, unneeded
        ];
        let mut s = State::default();
        let t0 = Instant::now();
        let p = params();
        let d = decide(&[], &h, &mut s, &p, t0, no_jitter);
        assert!(d.unpin.is_empty(), "grace period starts now");
        let d = decide(
            &[],
            &h,
            &mut s,
            &p,
            t0 + Duration::from_secs(599),
            no_jitter,
        );
        assert!(d.unpin.is_empty());
        // The view goes stale (API outage) past the grace period: nothing is unpinned, and the
        // clock restarts once the view is fresh again.
        let stale = Params {
            view_fresh: false,
            ..p.clone()
        };
        let d = decide(
            &[],
            &h,
            &mut s,
            &stale,
            t0 + Duration::from_secs(900),
            no_jitter,
        );
        assert!(d.unpin.is_empty());
        let d = decide(
            &[],
            &h,
            &mut s,
            &p,
            t0 + Duration::from_secs(1000),
            no_jitter,
        );
        assert!(d.unpin.is_empty(), "grace restarts after the outage");
        let d = decide(
            &[],
            &h,
            &mut s,
            &p,
            t0 + Duration::from_secs(1600),
            no_jitter,
        );
        assert_eq!(d.unpin, vec!["aa"], "never someone else's pin");
    }

    #[test]
    fn needed_again_during_grace_cancels_the_unpin() {
        let h = [held("aa", "r/a:1", true, true)];
        let mut s = State::default();
        let t0 = Instant::now();
        decide(&[], &h, &mut s, &params(), t0, no_jitter);
        decide(
            &[want("r/a:1")],
            &h,
            &mut s,
            &params(),
            t0 + Duration::from_secs(300),
            no_jitter,
        );
        let d = decide(
            &[],
            &h,
            &mut s,
            &params(),
            t0 + Duration::from_secs(700),
            no_jitter,
        );
        assert!(
            d.unpin.is_empty(),
            "the grace period restarted when it was needed again"
        );
    }

    #[test]
    fn failures_back_off_exponentially_and_per_registry() {
        let w = want("r/a:1");
        let other = want("r/b:1");
        let mut s = State::default();
        let p = params();
        let t0 = Instant::now();
        record_failure(&mut s, &w, "unreachable".into(), true, &p, t0);
        let d = decide(&[w.clone(), other.clone()], &[], &mut s, &p, t0, no_jitter);
        assert!(d.pull.is_empty(), "image and registry both back off: {d:?}");
        assert!(matches!(d.waiting[1].1, Waiting::RegistryBackoff { .. }));
        let d = decide(
            std::slice::from_ref(&w),
            &[],
            &mut s,
            &p,
            t0 + Duration::from_secs(5),
            no_jitter,
        );
        assert_eq!(d.pull, vec!["r/a:1"]);
        record_failure(
            &mut s,
            &w,
            "x".into(),
            false,
            &p,
            t0 + Duration::from_secs(5),
        );
        assert_eq!(s.failures["r/a:1"].attempts, 2);
        assert_eq!(s.failures["r/a:1"].retry_at, t0 + Duration::from_secs(15));
        for i in 0..30 {
            record_failure(&mut s, &w, "x".into(), false, &p, t0);
            assert!(s.failures["r/a:1"].retry_at <= t0 + p.backoff_max, "{i}");
        }
        record_success(&mut s, &w);
        assert!(s.failures.is_empty() && s.registry_failures.is_empty());
    }

    #[test]
    fn disk_budget_stops_new_pulls_but_not_pins() {
        let wants: Vec<_> = ["r/a:1", "r/b:1"].map(want).into();
        let h = [held("aa", "r/a:1", false, false)];
        let p = Params {
            over_disk_budget: true,
            ..params()
        };
        let d = decide(
            &wants,
            &h,
            &mut State::default(),
            &p,
            Instant::now(),
            no_jitter,
        );
        assert!(d.pull.is_empty());
        assert_eq!(d.pin, vec!["aa"]);
        assert_eq!(d.waiting, vec![("r/b:1".into(), Waiting::DiskBudget)]);
    }

    #[test]
    fn disk_budget_counts_the_whole_filesystem_like_the_kubelet() {
        // 10 GB images on a 100 GB disk that others filled to 90 GB: over an 80% budget.
        let gb = 1_000_000_000;
        assert!(over_disk_budget(10 * gb, Some(100 * gb), Some(10 * gb), 80));
        assert!(!over_disk_budget(
            10 * gb,
            Some(100 * gb),
            Some(30 * gb),
            80
        ));
        // Free space unknown: the images' own bytes are all that can be counted.
        assert!(!over_disk_budget(10 * gb, Some(100 * gb), None, 80));
        assert!(over_disk_budget(90 * gb, Some(100 * gb), None, 80));
        // Capacity unknown: no budget can be enforced.
        assert!(!over_disk_budget(90 * gb, None, Some(0), 80));
        assert!(!over_disk_budget(u64::MAX, Some(u64::MAX), Some(0), 100));
    }

    #[test]
    fn pulls_in_flight_count_against_the_disk_budget() {
        let sized = |r: &str, size| Want {
            size_hint: Some(size),
            ..want(r)
        };
        let wants = [
            sized("r/a:1", 400),
            sized("r/b:1", 400),
            sized("r/c:1", 100),
            want("r/d:1"),
        ];
        let p = Params {
            max_concurrent_pulls: 10,
            disk_headroom: Some(1000),
            ..params()
        };
        let mut s = State::default();
        let d = decide(&wants, &[], &mut s, &p, Instant::now(), no_jitter);
        // 400 + 400 + 100 fit in 1000; an image of unknown size counts as UNKNOWN_IMAGE_BYTES.
        assert_eq!(d.pull, vec!["r/a:1", "r/b:1", "r/c:1"]);
        assert_eq!(d.waiting[3], ("r/d:1".into(), Waiting::DiskBudget));

        // The next pass, nothing finished and the disk not grown yet: the three in flight still
        // take their room, so nothing more starts.
        s.in_flight.extend(d.pull.iter().cloned());
        let d = decide(&wants, &[], &mut s, &p, Instant::now(), no_jitter);
        assert!(d.pull.is_empty(), "{d:?}");
        // Pulls in flight of unknown size count the conservative estimate.
        let mut s = State::default();
        s.in_flight.insert("r/d:1".into());
        let p = Params {
            disk_headroom: Some(UNKNOWN_IMAGE_BYTES + 500),
            ..p
        };
        let d = decide(&wants, &[], &mut s, &p, Instant::now(), no_jitter);
        assert_eq!(d.pull, vec!["r/a:1", "r/c:1"]);
        assert_eq!(d.waiting[1], ("r/b:1".into(), Waiting::DiskBudget));
        // Unknown capacity: no budget to enforce.
        let p = Params {
            disk_headroom: None,
            ..p
        };
        let d = decide(
            &wants,
            &[],
            &mut State::default(),
            &p,
            Instant::now(),
            no_jitter,
        );
        assert_eq!(d.pull.len(), 4);
    }

    #[test]
    fn durations_past_the_clock_saturate() {
        let now = Instant::now();
        assert!(later(now, Duration::MAX) > now);
        assert_eq!(
            later(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        let p = Params {
            backoff_initial: Duration::MAX,
            backoff_max: Duration::MAX,
            unpin_grace: Duration::MAX,
            ..params()
        };
        let mut s = State::default();
        record_failure(&mut s, &want("r/a:1"), "x".into(), true, &p, now);
        let d = decide(
            &[want("r/b:1")],
            &[held("aa", "r/a:1", true, true)],
            &mut s,
            &p,
            now,
            || Duration::MAX,
        );
        assert!(d.pull.is_empty() && d.unpin.is_empty());
    }

    #[test]
    fn headroom_is_what_the_budget_leaves() {
        let gb = 1_000_000_000;
        assert_eq!(
            disk_headroom(0, Some(100 * gb), Some(30 * gb), 80),
            Some(10 * gb)
        );
        assert_eq!(disk_headroom(0, Some(100 * gb), Some(10 * gb), 80), Some(0));
        assert_eq!(
            disk_headroom(5 * gb, Some(100 * gb), None, 80),
            Some(75 * gb)
        );
        assert_eq!(disk_headroom(0, None, Some(gb), 80), None);
        assert_eq!(disk_headroom(0, Some(0), Some(0), 80), None);
        assert_eq!(
            disk_headroom(0, Some(u64::MAX), Some(u64::MAX), 100),
            Some(u64::MAX)
        );
    }

    #[test]
    fn registry_backoff_is_forgotten_with_the_images_of_that_registry() {
        let mut s = State::default();
        let p = params();
        let t0 = Instant::now();
        record_failure(&mut s, &want("r/a:1"), "down".into(), true, &p, t0);
        decide(&[want("r/a:1")], &[], &mut s, &p, t0, no_jitter);
        assert_eq!(s.registry_failures.len(), 1);
        decide(&[want("q/b:1")], &[], &mut s, &p, t0, no_jitter);
        assert!(s.registry_failures.is_empty(), "bounded by what is wanted");
    }

    #[test]
    fn jitter_delays_only_the_first_attempt() {
        let wants = [want("r/a:1")];
        let mut s = State::default();
        let t0 = Instant::now();
        let j = || Duration::from_secs(3);
        let d = decide(&wants, &[], &mut s, &params(), t0, j);
        assert!(d.pull.is_empty());
        assert!(matches!(d.waiting[0].1, Waiting::Jitter { .. }));
        let d = decide(
            &wants,
            &[],
            &mut s,
            &params(),
            t0 + Duration::from_secs(1),
            j,
        );
        assert!(
            d.pull.is_empty(),
            "the deadline is fixed when first seen, not re-drawn"
        );
        let d = decide(
            &wants,
            &[],
            &mut s,
            &params(),
            t0 + Duration::from_secs(3),
            j,
        );
        assert_eq!(d.pull, vec!["r/a:1"]);
    }
}

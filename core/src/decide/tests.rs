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

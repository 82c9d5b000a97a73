//! Transitions from pass to pass, from hand-built reports and runtime listings.

use super::*;
use crate::report::{RevisionReport, WorkloadReport};

const IOC: &str = "reg.example/ioc:1";
const WEB: &str = "reg.example/web:1";

/// One StatefulSet `apps/ioc` (optionally of Helm release `ioc`) with these revisions' readiness.
fn report(revisions: &[(i64, Option<Readiness>)], helm: bool) -> Report {
    Report {
        workloads: vec![WorkloadReport {
            kind: "StatefulSet".into(),
            namespace: "apps".into(),
            name: "ioc".into(),
            helm_release: helm.then(|| "ioc".into()),
            revisions: revisions
                .iter()
                .map(|(n, readiness)| RevisionReport {
                    revision: Some(*n),
                    helm_revision: helm.then_some(*n + 10),
                    status: None,
                    current: false,
                    sources: vec![],
                    readiness: *readiness,
                    not_here: readiness.is_none().then(|| "not scheduled here".into()),
                    node_unknown: false,
                    reasons: match readiness {
                        Some(Readiness::OfflineSafe) | None => vec![],
                        Some(r) => vec![format!("main ({IOC}): {}", r.as_str())],
                    },
                    images: vec![],
                })
                .collect(),
        }],
        summary: Default::default(),
    }
}

fn held(reference: &str, by_us: bool) -> Held {
    Held {
        id: format!("sha256:{}", reference.len()),
        tags: vec![reference.into()],
        digests: vec![],
        pinned: true,
        pinned_by_us: by_us,
        size: 1,
    }
}

fn reasons(t: &[Transition]) -> Vec<&'static str> {
    t.iter().map(|t| t.reason()).collect()
}

fn revisions_only(w: &mut Watch, revisions: &[(i64, Option<Readiness>)]) -> Vec<Transition> {
    w.observe(&report(revisions, false), &[], &[])
}

use Readiness::*;

#[test]
fn the_first_pass_is_the_baseline() {
    let mut w = Watch::default();
    let t = w.observe(
        &report(&[(1, Some(NeedsRegistry)), (2, Some(Failed))], false),
        &[],
        &[IOC],
    );
    assert!(t.is_empty(), "{t:?}");
    // Staying not-safe is not news either.
    assert!(revisions_only(&mut w, &[(1, Some(NeedsRegistry)), (2, Some(Missing))]).is_empty());
}

#[test]
fn safe_to_not_safe_is_reported_once_with_name_readiness_and_reason() {
    let mut w = Watch::default();
    w.observe(&report(&[(3, Some(OfflineSafe))], true), &[], &[]);
    let t = w.observe(&report(&[(3, Some(Failed))], true), &[], &[]);
    assert_eq!(reasons(&t), ["RevisionNotOfflineSafe"]);
    assert!(t[0].is_warning());
    assert_eq!(
        t[0].note(),
        format!(
            "StatefulSet apps/ioc revision 3 (Helm release ioc revision 13) is no longer offline-safe on this node: failed: main ({IOC}): failed"
        )
    );
    assert_eq!(
        t[0].workload(),
        Some(&WorkloadId::new("StatefulSet", "apps", "ioc"))
    );
    // Still failing, then missing: the same loss, not reported again.
    assert!(
        w.observe(&report(&[(3, Some(Failed))], true), &[], &[])
            .is_empty()
    );
    assert!(
        w.observe(&report(&[(3, Some(Missing))], true), &[], &[])
            .is_empty()
    );
    // Safe again: reported, because its loss was.
    let t = w.observe(&report(&[(3, Some(OfflineSafe))], true), &[], &[]);
    assert_eq!(reasons(&t), ["RevisionOfflineSafe"]);
    assert!(!t[0].is_warning());
}

#[test]
fn passing_states_are_not_losses() {
    let mut w = Watch::default();
    revisions_only(&mut w, &[(1, Some(OfflineSafe))]);
    // A re-pull under way, a source re-syncing: the revision comes back safe, nothing said.
    assert!(revisions_only(&mut w, &[(1, Some(Pulling))]).is_empty());
    assert!(revisions_only(&mut w, &[(1, Some(Stale))]).is_empty());
    assert!(revisions_only(&mut w, &[(1, Some(OfflineSafe))]).is_empty());
    // ...unless the pull then fails: the loss is measured from the last settled state.
    revisions_only(&mut w, &[(1, Some(Pulling))]);
    let t = revisions_only(&mut w, &[(1, Some(Failed))]);
    assert_eq!(reasons(&t), ["RevisionNotOfflineSafe"]);
}

#[test]
fn leaving_history_or_this_node_is_not_a_loss() {
    let mut w = Watch::default();
    revisions_only(&mut w, &[(1, Some(OfflineSafe)), (2, Some(OfflineSafe))]);
    assert!(revisions_only(&mut w, &[(2, Some(OfflineSafe))]).is_empty());
    assert!(revisions_only(&mut w, &[(2, None)]).is_empty());
    // Back on this node later: a new baseline for it, not a recovery.
    assert!(revisions_only(&mut w, &[(2, Some(NeedsRegistry))]).is_empty());
}

#[test]
fn new_revisions_that_start_not_safe_are_not_losses_and_never_recover_loudly() {
    let mut w = Watch::default();
    revisions_only(&mut w, &[(1, Some(OfflineSafe))]);
    let t = revisions_only(&mut w, &[(1, Some(OfflineSafe)), (2, Some(NeedsRegistry))]);
    assert!(t.is_empty(), "{t:?}");
    let t = revisions_only(&mut w, &[(1, Some(OfflineSafe)), (2, Some(OfflineSafe))]);
    assert!(t.is_empty(), "{t:?}");
}

#[test]
fn a_pinned_image_gone_is_reported_once_and_its_return_once() {
    let mut w = Watch::default();
    let r = report(&[], false);
    assert!(w.observe(&r, &[held(IOC, true)], &[IOC]).is_empty());
    let t = w.observe(&r, &[], &[IOC]);
    assert_eq!(reasons(&t), ["PinnedImageRemoved"]);
    assert!(t[0].note().starts_with(IOC), "{}", t[0].note());
    // Pulled back but not pinned yet, then missing again while it retries: still the same loss.
    let mut unpinned = held(IOC, false);
    unpinned.pinned = false;
    assert!(w.observe(&r, &[unpinned], &[IOC]).is_empty());
    assert!(w.observe(&r, &[], &[IOC]).is_empty());
    let t = w.observe(&r, &[held(IOC, true)], &[IOC]);
    assert_eq!(reasons(&t), ["PinnedImageRepulled"]);
    assert!(w.observe(&r, &[held(IOC, true)], &[IOC]).is_empty());
}

#[test]
fn only_images_rollcache_pinned_and_still_wants_count() {
    let mut w = Watch::default();
    let r = report(&[], false);
    // Present at start: the baseline; another party's pin is theirs to lose.
    w.observe(&r, &[held(IOC, true), held(WEB, false)], &[IOC, WEB]);
    assert!(w.observe(&r, &[held(IOC, true)], &[IOC, WEB]).is_empty());
    // Removed in the same pass as it stopped being wanted: rollcache let it go.
    assert!(w.observe(&r, &[], &[]).is_empty());
    // Removed, then no longer wanted before it came back: forgotten without a word.
    let mut w = Watch::default();
    w.observe(&r, &[held(IOC, true)], &[IOC]);
    assert_eq!(reasons(&w.observe(&r, &[], &[IOC])), ["PinnedImageRemoved"]);
    assert!(w.observe(&r, &[], &[]).is_empty());
    assert!(w.observe(&r, &[held(IOC, true)], &[IOC]).is_empty());
}

#[test]
fn a_batch_shows_warnings_first_and_counts_the_rest() {
    let mut all: Vec<Transition> = (0..4)
        .map(|n| Transition::PinnedImageRepulled {
            reference: format!("r/{n}"),
        })
        .collect();
    all.extend((0..12).map(|n| Transition::PinnedImageRemoved {
        reference: format!("r/{n}"),
    }));
    let b = Batch::of(all, 10);
    assert_eq!(b.shown.len(), 10);
    assert!(b.shown.iter().all(Transition::is_warning));
    assert_eq!(
        b.more,
        BTreeMap::from([("PinnedImageRemoved", 2), ("PinnedImageRepulled", 4)])
    );
    assert!(b.more_warns);
    assert_eq!(
        b.more_note().as_deref(),
        Some(
            "and 6 more (2 PinnedImageRemoved, 4 PinnedImageRepulled): see `rollcache status` on this node"
        )
    );
    let small = Batch::of(
        vec![Transition::PinnedImageRemoved {
            reference: "a".into(),
        }],
        10,
    );
    assert_eq!((small.shown.len(), small.more_note()), (1, None));
    let repulls = (0..11).map(|n| Transition::PinnedImageRepulled {
        reference: format!("r/{n}"),
    });
    let b = Batch::of(repulls.collect(), 10);
    assert_eq!((b.more_warns, b.more.len()), (false, 1));
    assert!(Batch::of(vec![], 10).is_empty());
}

#[test]
fn notes_fit_the_api_limit() {
    let t = Transition::RevisionNotOfflineSafe {
        revision: RevisionName {
            workload: WorkloadId::new("Deployment", "ns", "w"),
            helm_release: None,
            revision: None,
            helm_revision: None,
        },
        readiness: Missing,
        reason: "é".repeat(2000),
    };
    let note = t.note();
    assert!(note.len() <= MAX_NOTE, "{}", note.len());
    assert!(note.starts_with("Deployment ns/w is no longer"), "{note}");
    assert!(note.ends_with("..."));
}

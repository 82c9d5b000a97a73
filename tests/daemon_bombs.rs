//! Hostile Helm releases in the cluster, end to end (safety rules 6 and 9): with bombs of
//! `testbed::bombs` stored as release Secrets (one refused by size, three by the decoding
//! budgets: nodes, aliases, hooks; `decode_bombs` covers every bomb), the daemon keeps running, names each bomb in
//! `/status` and counts it in `/metrics`, pulls and pins the good release beside them, and still
//! unpins what history really dropped (the control: bombs do not freeze the view).

mod common;

use std::time::Duration;

use common::daemon::*;
use common::*;
use rollcache_testbed::bombs;
use rollcache_testbed::history::*;

const NS: &str = "tenant-b";
const SOON: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bombs_are_skipped_and_named_and_the_good_release_is_pinned_then_unpinned() {
    let mut bed = Bed::start().await;
    let api = api().await;
    let (good, _, _) = bed.push_small(401, "bombs/good:1");
    let all = bombs::named(&["flow-60mb", "flow-nodes", "alias-scalar", "many-hooks"]);
    for b in &all {
        api.apply(b.secret(NS)).expect("apply bomb");
    }
    api.apply(helm::deployment_release(NS, "good", 1, &good))
        .expect("apply good release");
    let d = TestDaemon::start(&api, base_settings(bed.containerd.socket().as_path(), None)).await;

    wait_pinned_by_us(&bed.node, &good).await;
    let s = d.wait_status(SOON, "sources synced", sources_fresh).await;
    let reported = s["sources"].to_string();
    for b in &all {
        assert!(
            reported.contains(&format!("{NS}/sh.helm.release.v1.{}.v1", b.name)),
            "{} is named in /status: {:#}",
            b.name,
            s["sources"]
        );
    }
    let m = d.metrics().await;
    let counted = |kind: &str| {
        m.lines()
            .filter(|l| l.starts_with("rollcache_decode_problems_total") && l.contains(kind))
            .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    assert!(counted("kind=\"over_budget\"") >= 3.0, "{m}");
    assert!(counted("kind=\"too_large\"") >= 1.0, "{m}");

    // CONTROL: the good release deleted, its image is unpinned after the grace period even with
    // every bomb still there; the bombs neither hold pins nor stop the view from being complete.
    assert!(api.delete("Secret", NS, "sh.helm.release.v1.good.v1"));
    wait_until(SOON, "the dropped release's image is unpinned", || async {
        cri_image(&bed.node, &good).await.is_some_and(|i| !i.pinned)
    })
    .await;
    assert!(
        cri_image(&bed.node, &good).await.is_some(),
        "unpinned, never deleted"
    );
    d.stop().await;
}

//! Leader election between replicas against the test API server: exactly one leads, a cancelled
//! leader hands over within the lease duration, a held lease is respected until it expires, and a
//! leader that cannot renew stops leading before its lease expires.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{Patch, PatchParams};
use rollcache::fleet::lease::Elector;
use rollcache_testbed::apiserver::{ApiServer, Fault};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;

const DURATION: Duration = Duration::from_secs(2);

fn elector(api: &ApiServer, identity: &str) -> Elector {
    Elector {
        api: Api::namespaced(api.client().expect("client"), "rollcache"),
        name: "rollcache-index".into(),
        identity: identity.into(),
        duration: DURATION,
    }
}

async fn holder(api: &ApiServer) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(api.client().expect("client"), "rollcache");
    leases
        .get_opt("rollcache-index")
        .await
        .expect("get")
        .and_then(|l| l.spec?.holder_identity)
}

/// Waits until `rx` says `want`, at most `limit`; how long it took.
async fn until(rx: &mut watch::Receiver<bool>, want: bool, limit: Duration) -> Duration {
    let start = Instant::now();
    tokio::time::timeout(limit, rx.wait_for(|l| *l == want))
        .await
        .unwrap_or_else(|_| panic!("not {want} within {limit:?}"))
        .expect("elector alive");
    start.elapsed()
}

#[tokio::test]
async fn exactly_one_of_two_leads_and_a_cancelled_leader_hands_over() {
    let api = ApiServer::start().await.expect("test API server starts");
    let (cancel_a, cancel_b) = (CancellationToken::new(), CancellationToken::new());
    let (mut a, task_a) = elector(&api, "a").spawn(cancel_a.clone());
    let (mut b, _task_b) = elector(&api, "b").spawn(cancel_b.clone());
    let start = Instant::now();
    let mut led = Vec::new();
    while start.elapsed() < 3 * DURATION {
        let (la, lb) = (*a.borrow(), *b.borrow());
        assert!(!(la && lb), "both lead");
        led.push((la, lb));
        sleep(Duration::from_millis(50)).await;
    }
    let first = if *a.borrow() { "a" } else { "b" };
    assert!(*a.borrow() ^ *b.borrow(), "one leads after three durations");
    assert_eq!(holder(&api).await.as_deref(), Some(first));
    // Leadership did not bounce while both were healthy.
    let changes = led.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(changes <= 1, "{changes} changes: {led:?}");

    let (leader_cancel, other) = if first == "a" {
        (&cancel_a, &mut b)
    } else {
        (&cancel_b, &mut a)
    };
    leader_cancel.cancel();
    let took = until(other, true, DURATION + Duration::from_secs(1)).await;
    assert!(took <= DURATION, "took over in {took:?}");
    let second = if first == "a" { "b" } else { "a" };
    assert_eq!(holder(&api).await.as_deref(), Some(second));
    if first == "a" {
        task_a.await.expect("a ends");
        assert!(!*a.borrow(), "a cancelled leads no more");
    }
    cancel_a.cancel();
    cancel_b.cancel();
}

#[tokio::test]
async fn a_held_lease_is_respected_until_it_expires() {
    let api = ApiServer::start().await.expect("test API server starts");
    let now = jiff::Timestamp::now();
    let ghost = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "rollcache-index", "namespace": "rollcache"},
        "spec": {"holderIdentity": "gone", "leaseDurationSeconds": 3,
                 "renewTime": now.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()},
    });
    api.apply(ghost)
        .expect("lease held by a replica that is gone");
    let cancel = CancellationToken::new();
    let (mut rx, _task) = elector(&api, "a").spawn(cancel.clone());
    sleep(Duration::from_millis(1500)).await;
    assert!(!*rx.borrow(), "not while the lease is fresh");
    until(&mut rx, true, Duration::from_secs(3)).await;
    let leases: Api<Lease> = Api::namespaced(api.client().expect("client"), "rollcache");
    let spec = leases
        .get("rollcache-index")
        .await
        .expect("get")
        .spec
        .unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("a"));
    assert_eq!(spec.lease_transitions, Some(1));
    cancel.cancel();
}

#[tokio::test]
async fn a_leader_that_cannot_renew_stops_before_its_lease_expires() {
    let api = ApiServer::start().await.expect("test API server starts");
    let cancel = CancellationToken::new();
    let (mut rx, _task) = elector(&api, "a").spawn(cancel.clone());
    until(&mut rx, true, DURATION).await;
    let renewed = Instant::now();
    api.set_resource_fault("leases", Some(Fault::Status(503)));
    until(&mut rx, false, DURATION).await;
    assert!(
        renewed.elapsed() < DURATION,
        "stopped after {:?}",
        renewed.elapsed()
    );

    // Someone else takes the lease meanwhile: back on the API, "a" does not lead again.
    api.set_resource_fault("leases", None);
    let leases: Api<Lease> = Api::namespaced(api.client().expect("client"), "rollcache");
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let patch =
        json!({"spec": {"holderIdentity": "b", "renewTime": now, "leaseDurationSeconds": 30}});
    leases
        .patch(
            "rollcache-index",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .expect("b takes the lease");
    sleep(DURATION).await;
    assert!(!*rx.borrow());
    assert_eq!(holder(&api).await.as_deref(), Some("b"));
    cancel.cancel();
}

#[tokio::test]
async fn a_hanging_api_does_not_hold_the_shutdown() {
    let api = ApiServer::start().await.expect("test API server starts");
    let cancel = CancellationToken::new();
    let (mut rx, task) = elector(&api, "a").spawn(cancel.clone());
    until(&mut rx, true, DURATION).await;
    api.set_fault(Some(Fault::Hang));
    let start = Instant::now();
    cancel.cancel();
    tokio::time::timeout(DURATION, task)
        .await
        .expect("ends while the API hangs")
        .expect("no panic");
    assert!(!*rx.borrow(), "stopped leading first");
    assert!(start.elapsed() < DURATION, "{:?}", start.elapsed());
    api.set_fault(None);
}

//! rollcache's custom resource on a cluster without its CRD and once it is installed: the
//! answers, discovery as kube-rs runs it, and a watcher that was started before the CRD.

use futures::TryStreamExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use rollcache_testbed::apiserver::{ApiServer, ROLLCACHE_GROUP, rollcache_node_resource};
use rollcache_testbed::history;
use serde_json::json;

/// A server without the CRD, a Node `n1` and its summary, and a client for the summaries.
async fn without_crd() -> (ApiServer, Api<DynamicObject>, serde_json::Value) {
    let api = ApiServer::start().await.expect("test API server starts");
    let node = api.apply(history::node("n1", json!({}))).expect("node n1");
    let uid = node["metadata"]["uid"].as_str().expect("uid");
    let summary = history::rollcache_node("n1", uid, json!({}));
    let rcn = Api::all_with(api.client().expect("client"), &rollcache_node_resource());
    (api, rcn, summary)
}

/// The API error of a call that must fail.
fn status_of<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> kube::core::Status {
    match r {
        Err(kube::Error::Api(s)) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn without_the_crd_its_paths_answer_404_until_it_is_installed() {
    let (api, rcn, summary) = without_crd().await;
    let client = api.client().expect("client");
    let s = status_of(rcn.get("n1").await);
    assert_eq!(s.code, 404);
    assert_eq!(
        s.message, "404 page not found",
        "a plain-text 404, as the real server"
    );
    let s = status_of(
        rcn.patch(
            "n1",
            &PatchParams::apply("rollcache"),
            &Patch::Apply(&summary),
        )
        .await,
    );
    // kube-rs cannot parse a plain-text body: `is_not_found()` is false, only the code says it.
    assert_eq!((s.code, s.is_not_found()), (404, false), "{s:?}");
    assert!(
        kube::discovery::oneshot::group(&client, ROLLCACHE_GROUP)
            .await
            .is_err()
    );
    assert!(
        api.apply(summary.clone()).is_err(),
        "no kind without its CRD"
    );

    api.install_rollcache_crd();
    let group = kube::discovery::oneshot::group(&client, ROLLCACHE_GROUP)
        .await
        .expect("group discovered once installed");
    let (ar, caps) = group
        .recommended_kind("RollcacheNode")
        .expect("RollcacheNode discovered");
    assert_eq!(ar.plural, "rollcachenodes");
    assert_eq!(caps.scope, kube::discovery::Scope::Cluster);
    assert!(
        caps.subresources.iter().any(|(s, _)| s.plural == "status"),
        "status subresource discovered: {caps:?}"
    );
    let s = status_of(rcn.get("n1").await);
    assert_eq!(s.reason, "NotFound");
    assert_eq!(s.message, "rollcachenodes.rollcache.io \"n1\" not found");
    let all = kube::Discovery::new(client)
        .run()
        .await
        .expect("full discovery");
    assert!(all.has_group(ROLLCACHE_GROUP) && all.has_group("events.k8s.io"));

    // Removing the CRD takes its objects with it.
    rcn.patch(
        "n1",
        &PatchParams::apply("rollcache"),
        &Patch::Apply(&summary),
    )
    .await
    .expect("apply creates");
    api.uninstall_rollcache_crd();
    assert_eq!(status_of(rcn.get("n1").await).code, 404);
    assert!(api.get("RollcacheNode", "", "n1").is_none());
}

#[tokio::test]
async fn a_watcher_started_before_the_crd_sees_objects_once_it_is_installed() {
    let (api, rcn, summary) = without_crd().await;
    let mut stream = Box::pin(watcher(rcn.clone(), watcher::Config::default()).default_backoff());
    // Without the CRD the watcher starts its list, errs (and backs off); it does not end.
    let err = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            match stream.try_next().await {
                Ok(Some(watcher::Event::Init)) => continue,
                other => return other,
            }
        }
    })
    .await;
    match err {
        Ok(Err(watcher::Error::InitialListFailed(kube::Error::Api(s)))) => assert_eq!(s.code, 404),
        other => panic!("expected the list to fail with 404: {other:?}"),
    }
    api.install_rollcache_crd();
    rcn.patch(
        "n1",
        &PatchParams::apply("rollcache"),
        &Patch::Apply(&summary),
    )
    .await
    .expect("apply after install");
    let seen = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            match stream.try_next().await {
                Ok(Some(watcher::Event::InitApply(o) | watcher::Event::Apply(o))) => return o,
                Ok(Some(_)) | Err(_) => continue,
                Ok(None) => panic!("watcher ended"),
            }
        }
    })
    .await
    .expect("the watcher recovers once the CRD is installed");
    assert_eq!(seen.metadata.name.as_deref(), Some("n1"));
}

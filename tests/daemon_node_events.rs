//! Events on the Node: the daemon against the in-test API server (`events.k8s.io/v1`) and a real
//! containerd and registry. A pinned image removed behind rollcache's back, its return, a revision
//! that stops being offline-safe, nothing at start-up, and an API that forbids Events.

mod common;

use std::time::{Duration, Instant};

use common::daemon::*;
use common::*;
use k8s_openapi::api::events::v1::Event;
use kube::api::Api;
use rollcache::node::cri_api::image_service_client::ImageServiceClient;
use rollcache::node::cri_api::{ImageSpec, RemoveImageRequest};
use rollcache::node::unix_channel;
use rollcache_testbed::apiserver::{ApiServer, Fault};
use rollcache_testbed::history::*;
use serde_json::json;

const NS: &str = "apps";
const NODE: &str = "n1";
const SOON: Duration = Duration::from_secs(20);

async fn api() -> ApiServer {
    let api = ApiServer::start().await.expect("test API server starts");
    api.apply(node(NODE, json!({}))).expect("node");
    api
}

/// The Events in `default`, read back through the API.
async fn events(api: &ApiServer) -> Vec<Event> {
    let events: Api<Event> = Api::namespaced(api.client().expect("client"), "default");
    events
        .list(&Default::default())
        .await
        .expect("list events")
        .items
}

fn with_reason<'a>(all: &'a [Event], reason: &str) -> Vec<&'a Event> {
    all.iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

/// The Events once `pred` holds on them; panics with the last ones after `within`.
async fn wait_events(
    api: &ApiServer,
    within: Duration,
    what: &str,
    pred: impl Fn(&[Event]) -> bool,
) -> Vec<Event> {
    let start = Instant::now();
    loop {
        let got = events(api).await;
        if pred(&got) {
            return got;
        }
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for: {what}\nlast: {got:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Removes an image the way an operator would (CRI RemoveImage, every name of the image).
async fn crictl_rmi(bed: &Bed, reference: &str) {
    let mut cri = ImageServiceClient::new(unix_channel(&bed.containerd.socket()));
    cri.remove_image(RemoveImageRequest {
        image: Some(ImageSpec {
            image: reference.to_owned(),
            ..Default::default()
        }),
    })
    .await
    .expect("remove image");
}

/// The Event is about Node n1, written by rollcache on n1, of type `type_`.
fn assert_on_node(e: &Event, type_: &str) {
    let regarding = e.regarding.as_ref().expect("regarding");
    assert_eq!(
        (regarding.kind.as_deref(), regarding.name.as_deref()),
        (Some("Node"), Some(NODE)),
        "{e:#?}"
    );
    assert!(
        regarding.uid.as_deref().is_some_and(|u| !u.is_empty()),
        "{e:#?}"
    );
    assert_eq!(e.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(
        e.reporting_controller.as_deref(),
        Some("rollcache.io/agent")
    );
    assert_eq!(e.reporting_instance.as_deref(), Some(NODE));
    assert_eq!(e.type_.as_deref(), Some(type_), "{e:#?}");
}

/// A history already not offline-safe at start says nothing; an image removed behind
/// rollcache's back gives `PinnedImageRemoved` then `PinnedImageRepulled` (and no revision Event:
/// the revision was only passing through a re-pull); removed while the registry is down, the
/// revision's loss is reported once however often the pull is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_images_and_lost_revisions_become_events_on_the_node() {
    logs::capture();
    let mut bed = Bed::start().await;
    let api = api().await;
    let (ioc, _, _) = bed.push_small(801, "nev/ioc:1");
    let (cam, _, _) = bed.push_small(802, "nev/cam:1");
    let (web, _, _) = bed.push_small(803, "nev/web:1");
    api.apply(controller_revision(NS, "ioc", 1, &[&ioc]))
        .expect("apply");
    api.apply(controller_revision(NS, "cam", 1, &[&cam]))
        .expect("apply");
    api.apply(with_pull_policy(
        replicaset(NS, "web", 1, &[&web], 1),
        "Always",
    ))
    .expect("apply");
    let d = TestDaemon::start(
        &api,
        base_settings(bed.containerd.socket().as_path(), Some(NODE)),
    )
    .await;
    d.wait_status(SOON, "two offline-safe, one needing the registry", |s| {
        s["summary"]["offline_safe"] == 2 && s["summary"]["needs_registry"] == 1
    })
    .await;
    wait_pinned_by_us(&bed.node, &ioc).await;
    // A few passes at least (each pin and pull completion is one).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let at_start = events(&api).await;
    assert!(at_start.is_empty(), "nothing at start-up: {at_start:#?}");

    crictl_rmi(&bed, &ioc).await;
    let got = wait_events(&api, SOON, "the removal and the re-pull", |e| {
        with_reason(e, "PinnedImageRepulled").len() == 1
    })
    .await;
    let removed = with_reason(&got, "PinnedImageRemoved");
    assert_eq!(removed.len(), 1, "{got:#?}");
    assert_on_node(removed[0], "Warning");
    let note = removed[0].note.as_deref().unwrap_or_default();
    assert!(note.starts_with(&ioc) && note.contains("removed"), "{note}");
    let back = with_reason(&got, "PinnedImageRepulled");
    assert_on_node(back[0], "Normal");
    assert!(
        back[0].note.as_deref().is_some_and(|n| n.starts_with(&ioc)),
        "{back:#?}"
    );
    assert!(
        with_reason(&got, "RevisionNotOfflineSafe").is_empty(),
        "a re-pull that succeeds is no loss: {got:#?}"
    );
    wait_pinned_by_us(&bed.node, &ioc).await;

    // Now the registry is down: cam's image cannot come back.
    bed.registry.stop();
    crictl_rmi(&bed, &cam).await;
    let got = wait_events(&api, SOON, "cam's revision not offline-safe", |e| {
        !with_reason(e, "RevisionNotOfflineSafe").is_empty()
    })
    .await;
    // Retried with backoff (300 ms to 1 s here) meanwhile: still one Event, once.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let got_later = events(&api).await;
    let lost = with_reason(&got_later, "RevisionNotOfflineSafe");
    assert_eq!(lost.len(), 1, "{got_later:#?}");
    assert_eq!(lost[0].series, None, "reported once: {:#?}", lost[0]);
    assert_on_node(lost[0], "Warning");
    let note = lost[0].note.as_deref().unwrap_or_default();
    assert!(
        note.starts_with(
            "StatefulSet apps/cam revision 1 is no longer offline-safe on this node: failed: "
        ) && note.contains(&cam),
        "{note}"
    );
    let related = lost[0].related.as_ref().expect("the workload");
    assert_eq!(
        (
            related.kind.as_deref(),
            related.namespace.as_deref(),
            related.name.as_deref()
        ),
        (Some("StatefulSet"), Some(NS), Some("cam"))
    );
    let removed = with_reason(&got, "PinnedImageRemoved");
    assert!(
        removed
            .iter()
            .any(|e| e.note.as_deref().is_some_and(|n| n.starts_with(&cam))),
        "{got:#?}"
    );
    let m = d.metrics().await;
    assert_eq!(
        metric(
            &m,
            "rollcache_events_total{reason=\"RevisionNotOfflineSafe\",result=\"published\"}"
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "rollcache_events_total{reason=\"PinnedImageRemoved\",result=\"published\"}"
        ),
        Some(2.0),
        "{m}"
    );
    d.stop().await;
}

/// An API that forbids Events: the image is re-pulled and pinned all the same, the denials are
/// counted and said in one line, nothing is stored; once allowed, the next transition is written
/// and the recovery said once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_events_are_counted_and_the_passes_go_on() {
    logs::capture();
    let mut bed = Bed::start().await;
    let api = api().await;
    api.set_resource_fault("events.events.k8s.io", Some(Fault::Status(403)));
    let (ioc, _, _) = bed.push_small(811, "nev/denied:1");
    api.apply(controller_revision(NS, "ioc", 1, &[&ioc]))
        .expect("apply");
    let d = TestDaemon::start(
        &api,
        base_settings(bed.containerd.socket().as_path(), Some(NODE)),
    )
    .await;
    wait_pinned_by_us(&bed.node, &ioc).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    crictl_rmi(&bed, &ioc).await;
    let removed = Instant::now();
    wait_pinned_by_us(&bed.node, &ioc).await;
    eprintln!("pinned again {:?} after removal", removed.elapsed());
    d.metrics_when(
        "rollcache_events_total{reason=\"PinnedImageRemoved\",result=\"denied\"}",
        1.0,
    )
    .await;
    let m = d
        .metrics_when(
            "rollcache_events_total{reason=\"PinnedImageRepulled\",result=\"denied\"}",
            1.0,
        )
        .await;
    assert_eq!(
        metric(
            &m,
            "rollcache_events_total{reason=\"PinnedImageRemoved\",result=\"denied\"}"
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "rollcache_events_total{reason=\"PinnedImageRepulled\",result=\"denied\"}"
        ),
        Some(1.0),
        "{m}"
    );
    // Two denials, one line; it names the fix.
    let denied = "Events on Node n1 are not allowed";
    assert_eq!(logs::lines(denied), 1);
    assert_eq!(
        logs::lines("grant create and patch on events.k8s.io events"),
        1
    );
    api.set_resource_fault("events.events.k8s.io", None);
    assert!(events(&api).await.is_empty());

    crictl_rmi(&bed, &ioc).await;
    let got = wait_events(&api, SOON, "written once allowed", |e| {
        with_reason(e, "PinnedImageRepulled").len() == 1
    })
    .await;
    assert_eq!(with_reason(&got, "PinnedImageRemoved").len(), 1, "{got:#?}");
    assert_eq!(logs::lines("Events on the Node are written again"), 1);
    assert_eq!(logs::lines(denied), 1);
    d.stop().await;
}

/// `node_events: false`: the same removal and return, and no Event written or attempted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turned_off_no_events_are_written() {
    logs::capture();
    let mut bed = Bed::start().await;
    let api = api().await;
    let (ioc, _, _) = bed.push_small(821, "nev/off:1");
    api.apply(controller_revision(NS, "ioc", 1, &[&ioc]))
        .expect("apply");
    let mut settings = base_settings(bed.containerd.socket().as_path(), Some(NODE));
    settings.insert("node_events".into(), "false".into());
    let d = TestDaemon::start(&api, settings).await;
    wait_pinned_by_us(&bed.node, &ioc).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    crictl_rmi(&bed, &ioc).await;
    // Gone first, so that the wait below sees it pinned again rather than not yet removed.
    assert!(cri_image(&bed.node, &ioc).await.is_none());
    wait_pinned_by_us(&bed.node, &ioc).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(events(&api).await.is_empty());
    let m = d.metrics().await;
    assert!(!m.contains("rollcache_events_total{"), "{m}");
    d.stop().await;
}

/// A real trigger that changes many revisions in one pass: the kubelet's credential verification
/// policy, reloaded as `AlwaysVerify`, sends every revision with pull secrets to the registry. Ten
/// Events, then one counting the rest; set back, the same for their return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_transitions_in_one_pass_are_capped_and_the_rest_counted() {
    logs::capture();
    let mut bed = Bed::start().await;
    let api = api().await;
    let (ioc, _, _) = bed.push_small(831, "nev/many:1");
    for n in 0..12 {
        let mut cr = controller_revision(NS, &format!("ioc{n:02}"), 1, &[&ioc]);
        pod_spec(&mut cr)["imagePullSecrets"] = json!([{"name": "regcred"}]);
        api.apply(cr).expect("apply");
    }
    let settings = base_settings(bed.containerd.socket().as_path(), Some(NODE));
    let mut d = TestDaemon::start(&api, settings.clone()).await;
    d.wait_status(SOON, "twelve offline-safe", |s| {
        s["summary"]["offline_safe"] == 12
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(events(&api).await.is_empty());

    let mut verify = settings.clone();
    verify.insert(
        "credential_verification_policy".into(),
        "AlwaysVerify".into(),
    );
    d.rewrite_config(verify);
    let got = wait_events(&api, SOON, "ten and one for the rest", |e| {
        with_reason(e, "MoreTransitions").len() == 1
    })
    .await;
    let lost = with_reason(&got, "RevisionNotOfflineSafe");
    assert_eq!(lost.len(), 10, "{got:#?}");
    assert!(
        lost.iter()
            .all(|e| e.note.as_deref().is_some_and(
                |n| n.contains("is no longer offline-safe on this node: needs_registry")
            )),
        "{lost:#?}"
    );
    let more = with_reason(&got, "MoreTransitions")[0];
    assert_on_node(more, "Warning");
    assert_eq!(
        more.note.as_deref(),
        Some("and 2 more (2 RevisionNotOfflineSafe): see `rollcache status` on this node")
    );

    d.rewrite_config(settings);
    let got = wait_events(&api, SOON, "their return", |e| {
        with_reason(e, "MoreTransitions").len() == 2
    })
    .await;
    assert_eq!(with_reason(&got, "RevisionOfflineSafe").len(), 10);
    let back = with_reason(&got, "MoreTransitions");
    assert!(
        back.iter().any(|e| e.type_.as_deref() == Some("Normal")
            && e.note.as_deref()
                == Some("and 2 more (2 RevisionOfflineSafe): see `rollcache status` on this node")),
        "{back:#?}"
    );
    let m = d.metrics().await;
    assert_eq!(
        metric(
            &m,
            "rollcache_events_total{reason=\"MoreTransitions\",result=\"published\"}"
        ),
        Some(2.0),
        "{m}"
    );
    d.stop().await;
}

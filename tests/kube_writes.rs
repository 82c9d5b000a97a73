//! Writes to the test API server through kube-rs, as the agent will make them: rollcache's
//! `RollcacheNode` by server-side apply on the object and on `/status`, conflicts, stale
//! replaces, watches of writes, garbage collection with the Node, Node writes, and events.

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::{Node, ObjectReference};
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::ResourceExt;
use kube::api::{
    Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::Status;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use rollcache_testbed::apiserver::{ApiServer, ApiServerOptions, rollcache_node_resource};
use rollcache_testbed::history;
use serde_json::{Value, json};

async fn server(crd: bool) -> (ApiServer, Api<DynamicObject>, Api<Node>) {
    let api = ApiServer::start_with(ApiServerOptions {
        rollcache_crd: crd,
        ..Default::default()
    })
    .await
    .expect("test API server starts");
    let client = api.client().expect("client");
    let nodes = Api::all_with(client.clone(), &rollcache_node_resource());
    (api, nodes, Api::all(client))
}

fn api_error(r: Result<impl std::fmt::Debug, kube::Error>) -> Status {
    match r {
        Err(kube::Error::Api(s)) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// The summary the agent will publish: the object names its Node as owner.
fn summary(node: &Node, extra: Value) -> Value {
    let uid = node.metadata.uid.as_deref().expect("node uid");
    history::rollcache_node(&node.name_any(), uid, extra)
}

async fn make_node(nodes: &Api<Node>, name: &str) -> Node {
    let node: Node = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name}}))
    .expect("node");
    nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("create node")
}

fn rv(o: &DynamicObject) -> u64 {
    o.metadata
        .resource_version
        .as_deref()
        .and_then(|r| r.parse().ok())
        .expect("resourceVersion")
}

fn apply_params(manager: &str) -> PatchParams {
    PatchParams::apply(manager)
}

#[tokio::test]
async fn apply_creates_and_status_apply_changes_only_status() {
    let (api, rcn, nodes) = server(true).await;
    let node = make_node(&nodes, "n1").await;
    let pp = apply_params("rollcache");

    // Status applied before the object exists: 404, as the real server (apply on /status does
    // not create).
    let status = json!({"status": {"desired": 3, "pinned": 2}});
    let s = api_error(
        rcn.patch_status("n1", &pp, &Patch::Apply(summary(&node, status.clone())))
            .await,
    );
    assert!(s.is_not_found(), "{s:?}");

    // Apply on the object creates it; the status it carries is dropped.
    let created = rcn
        .patch(
            "n1",
            &pp,
            &Patch::Apply(summary(
                &node,
                json!({"spec": {"nodeName": "n1"}, "status": {"desired": 9}}),
            )),
        )
        .await
        .expect("apply creates");
    assert!(
        created.data.get("status").is_none(),
        "status ignored on the object"
    );
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    let owners = created.metadata.owner_references.clone().expect("owner");
    assert_eq!(owners[0].uid, node.metadata.uid.clone().expect("node uid"));

    // A dry run answers as the write would and stores nothing.
    let dry = rcn
        .patch(
            "n1",
            &apply_params("rollcache").dry_run(),
            &Patch::Apply(summary(&node, json!({"spec": {"nodeName": "dry"}}))),
        )
        .await
        .expect("dry run");
    assert_eq!(dry.data["spec"]["nodeName"], "dry");
    assert_eq!(
        rcn.get("n1").await.expect("get").data["spec"]["nodeName"],
        "n1"
    );

    // Status apply: status changes, labels and spec in the same body do not, generation stays.
    let body = summary(
        &node,
        json!({"spec": {"nodeName": "other"}, "status": {"desired": 3, "pinned": 2}}),
    );
    let mut body = body;
    body["metadata"]["labels"] = json!({"app": "changed"});
    let after = rcn
        .patch_status("n1", &pp, &Patch::Apply(&body))
        .await
        .expect("status apply");
    assert_eq!(after.data["status"], json!({"desired": 3, "pinned": 2}));
    assert_eq!(after.data["spec"], json!({"nodeName": "n1"}));
    assert_eq!(
        after.labels().get("app").map(String::as_str),
        Some("rollcache")
    );
    assert_eq!(after.metadata.generation, Some(1));
    assert!(rv(&after) > rv(&created));
    let managed = after
        .metadata
        .managed_fields
        .clone()
        .expect("managedFields");
    assert!(
        managed
            .iter()
            .any(|m| m.subresource.as_deref() == Some("status")
                && m.operation.as_deref() == Some("Apply")
                && m.manager.as_deref() == Some("rollcache")),
        "{managed:?}"
    );

    // The same apply again writes nothing: same resourceVersion.
    let again = rcn
        .patch_status("n1", &pp, &Patch::Apply(&body))
        .await
        .expect("no-op");
    assert_eq!(rv(&again), rv(&after));

    // A field the manager no longer applies is removed.
    let fewer = summary(&node, json!({"status": {"desired": 4}}));
    let less = rcn
        .patch_status("n1", &pp, &Patch::Apply(&fewer))
        .await
        .expect("fewer fields");
    assert_eq!(less.data["status"], json!({"desired": 4}));

    // A spec change bumps the generation; the stored status stays.
    let spec = rcn
        .patch(
            "n1",
            &pp,
            &Patch::Apply(summary(&node, json!({"spec": {"nodeName": "n2"}}))),
        )
        .await
        .expect("spec apply");
    assert_eq!(spec.metadata.generation, Some(2));
    assert_eq!(spec.data["status"], json!({"desired": 4}));
    assert_eq!(
        api.get("RollcacheNode", "", "n1").expect("stored")["metadata"]["generation"],
        2
    );
}

#[tokio::test]
async fn conflicts_stale_replaces_and_bad_names_are_refused_as_the_real_server_does() {
    let (_api, rcn, nodes) = server(true).await;
    let node = make_node(&nodes, "n1").await;
    let pp = apply_params("rollcache");
    rcn.patch("n1", &pp, &Patch::Apply(summary(&node, json!({}))))
        .await
        .expect("create");
    rcn.patch_status(
        "n1",
        &pp,
        &Patch::Apply(summary(&node, json!({"status": {"desired": 3}}))),
    )
    .await
    .expect("status");

    let other = summary(&node, json!({"status": {"desired": 5}}));
    let s = api_error(
        rcn.patch_status("n1", &apply_params("someone"), &Patch::Apply(&other))
            .await,
    );
    assert_eq!(s.code, 409);
    assert_eq!(
        s.message,
        "Apply failed with 1 conflict: conflict with \"rollcache\" with subresource \"status\": .status.desired"
    );
    let forced = rcn
        .patch_status(
            "n1",
            &apply_params("someone").force(),
            &Patch::Apply(&other),
        )
        .await
        .expect("force takes the field over");
    assert_eq!(forced.data["status"]["desired"], 5);

    let s = api_error(
        rcn.patch(
            "n1",
            &PatchParams::default(),
            &Patch::Apply(summary(&node, json!({}))),
        )
        .await,
    );
    assert_eq!(
        (s.code, s.reason.as_str()),
        (422, "Invalid"),
        "apply needs a field manager"
    );

    let mut stale = rcn.get("n1").await.expect("get");
    stale.metadata.resource_version = Some("1".into());
    let s = api_error(rcn.replace("n1", &PostParams::default(), &stale).await);
    assert!(s.is_conflict(), "{s:?}");
    assert!(
        s.message.contains("the object has been modified"),
        "{}",
        s.message
    );

    let fresh = rcn.get("n1").await.expect("get");
    let s = api_error(rcn.replace("n2", &PostParams::default(), &fresh).await);
    assert_eq!(s.code, 400);
    assert_eq!(
        s.message,
        "the name of the object (n1) does not match the name on the URL (n2)"
    );
    let s = api_error(rcn.create(&PostParams::default(), &fresh).await);
    assert!(s.is_already_exists(), "{s:?}");

    // A resourceVersion in an apply is a precondition too; a replace must carry one.
    let mut stale_apply = summary(&node, json!({}));
    stale_apply["metadata"]["resourceVersion"] = json!("1");
    let s = api_error(rcn.patch("n1", &pp, &Patch::Apply(&stale_apply)).await);
    assert!(s.is_conflict(), "{s:?}");
    let mut unconditional = fresh.clone();
    unconditional.metadata.resource_version = None;
    let s = api_error(
        rcn.replace("n1", &PostParams::default(), &unconditional)
            .await,
    );
    assert_eq!(
        s.message,
        "rollcachenodes.rollcache.io \"n1\" is invalid: metadata.resourceVersion: Invalid value: 0: must be specified for an update"
    );

    // A replace with the current resourceVersion goes through; its status is ignored.
    let mut current = fresh.clone();
    current.data["spec"] = json!({"x": 1});
    current.data["status"] = json!({"desired": 99});
    let replaced = rcn
        .replace("n1", &PostParams::default(), &current)
        .await
        .expect("replace");
    assert_eq!(replaced.data["status"]["desired"], 5);
    assert_eq!(replaced.metadata.generation, Some(2));

    // A merge patch of /status changes status only and is recorded as an update.
    let merged = rcn
        .patch_status(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}, "status": {"state": "ok"}})),
        )
        .await
        .expect("merge patch");
    assert_eq!(merged.data["status"], json!({"desired": 5, "state": "ok"}));
    assert!(!merged.labels().contains_key("x"));
}

#[tokio::test]
async fn writes_are_watched_and_the_summary_goes_with_its_node() {
    let (api, rcn, nodes) = server(true).await;
    let node = make_node(&nodes, "n1").await;
    let start = api.resource_version().to_string();
    let pp = apply_params("rollcache");
    rcn.patch("n1", &pp, &Patch::Apply(summary(&node, json!({}))))
        .await
        .expect("create");
    rcn.patch_status(
        "n1",
        &pp,
        &Patch::Apply(summary(&node, json!({"status": {"desired": 1}}))),
    )
    .await
    .expect("status");
    nodes
        .delete("n1", &DeleteParams::default())
        .await
        .expect("delete node");
    assert_eq!(
        api_error(rcn.get("n1").await).code,
        404,
        "collected with its Node"
    );
    let s = api_error(rcn.delete("n1", &DeleteParams::default()).await);
    assert!(s.is_not_found());

    let events: Vec<WatchEvent<DynamicObject>> = rcn
        .watch(&WatchParams::default().timeout(1), &start)
        .await
        .expect("watch")
        .try_collect()
        .await
        .expect("events");
    let kinds: Vec<(&str, Option<u64>)> = events
        .iter()
        .filter(|e| !matches!(e, WatchEvent::Bookmark(_)))
        .map(|e| match e {
            WatchEvent::Added(o) => ("ADDED", Some(rv(o))),
            WatchEvent::Modified(o) => ("MODIFIED", Some(rv(o))),
            WatchEvent::Deleted(o) => ("DELETED", Some(rv(o))),
            _ => ("OTHER", None),
        })
        .collect();
    assert_eq!(
        kinds.iter().map(|k| k.0).collect::<Vec<_>>(),
        ["ADDED", "MODIFIED", "DELETED"]
    );
    assert!(
        kinds.windows(2).all(|w| w[0].1 < w[1].1),
        "resourceVersions grow: {kinds:?}"
    );

    // Delete of an object answers a Status, as the real server does for custom resources.
    let node = make_node(&nodes, "n2").await;
    rcn.patch("n2", &pp, &Patch::Apply(summary(&node, json!({}))))
        .await
        .expect("create");
    // Orphaning dependents leaves the summary in place.
    nodes
        .delete("n2", &DeleteParams::orphan())
        .await
        .expect("orphan");
    assert!(rcn.get("n2").await.is_ok(), "orphaned, not collected");
    let gone = rcn
        .delete("n2", &DeleteParams::default())
        .await
        .expect("delete");
    assert!(gone.is_right(), "a Status: {gone:?}");
}

#[tokio::test]
async fn the_event_recorder_writes_events_on_a_node() {
    let (api, _rcn, nodes) = server(false).await;
    let node = make_node(&nodes, "n1").await;
    let recorder = Recorder::new(
        api.client().expect("client"),
        Reporter {
            controller: "rollcache".into(),
            instance: Some("rollcache-abcde".into()),
        },
    );
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: node.metadata.name.clone(),
        uid: node.metadata.uid.clone(),
        ..Default::default()
    };
    let ev = Event {
        type_: EventType::Warning,
        reason: "RevisionNeedsRegistry".into(),
        note: Some("web revision 3 is no longer offline-safe".into()),
        action: "Plan".into(),
        secondary: None,
    };
    recorder
        .publish(&ev, &reference)
        .await
        .expect("first event is created");
    recorder
        .publish(&ev, &reference)
        .await
        .expect("the repeat patches its series");
    let events: Api<K8sEvent> = Api::namespaced(api.client().expect("client"), "default");
    let list = events.list(&Default::default()).await.expect("list events");
    assert_eq!(list.items.len(), 1, "{list:?}");
    let e = &list.items[0];
    assert_eq!(e.reason.as_deref(), Some("RevisionNeedsRegistry"));
    assert_eq!(
        e.regarding.as_ref().and_then(|r| r.name.as_deref()),
        Some("n1")
    );
    assert_eq!(e.series.as_ref().map(|s| s.count), Some(2));
}

#[tokio::test]
async fn typed_node_writes_keep_status_and_metadata_apart() {
    let (_api, _rcn, nodes) = server(false).await;
    make_node(&nodes, "n1").await;
    let pp = apply_params("kubelet");
    let status = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1",
        "labels": {"ignored": "yes"}}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
    let after = nodes
        .patch_status("n1", &pp, &Patch::Apply(&status))
        .await
        .expect("node status apply");
    let conditions = after
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .expect("conditions");
    assert_eq!(conditions[0].type_, "Ready");
    assert!(
        !after.labels().contains_key("ignored"),
        "status writes leave labels alone"
    );
    // Cordon: a merge patch of the spec keeps the status the kubelet wrote.
    let cordoned = nodes
        .patch(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unschedulable": true},
            "status": {"conditions": []}})),
        )
        .await
        .expect("cordon");
    assert_eq!(cordoned.spec.and_then(|s| s.unschedulable), Some(true));
    assert_eq!(
        cordoned.status.and_then(|s| s.conditions).map(|c| c.len()),
        Some(1)
    );
    assert_eq!(
        cordoned.metadata.generation, None,
        "nodes keep no generation"
    );
}

//! The test API server at the wire: list, get, watch, bookmark and 410 JSON shapes as the real
//! kube-apiserver writes them, the answers to writes, and the on-demand Secret / ServiceAccount
//! reads against it.

use std::time::Duration;

use rollcache::history::secrets::{SecretError, SecretReader};
use rollcache_testbed::apiserver::{ApiServer, ApiServerOptions, Fault};
use serde_json::{Value, json};

async fn server() -> ApiServer {
    ApiServer::start_with(ApiServerOptions {
        bookmark_interval: Duration::from_millis(200),
        ..Default::default()
    })
    .await
    .expect("test API server starts")
}

async fn get(api: &ApiServer, path: &str) -> Result<String, kube::Error> {
    let client = api.client().expect("client");
    let req = http::Request::get(path).body(Vec::new()).expect("request");
    client.request_text(req).await
}

async fn get_json(api: &ApiServer, path: &str) -> Value {
    serde_json::from_str(&get(api, path).await.expect(path)).expect("JSON body")
}

/// A watch read to its end (`timeoutSeconds` bounds it), one event per line.
async fn watch_lines(api: &ApiServer, path: &str) -> Vec<Value> {
    get(api, path)
        .await
        .expect(path)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
        .collect()
}

fn cm(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default", "labels": labels}, "data": {"k": "v"}})
}

#[tokio::test]
async fn list_shape_selectors_and_pagination() {
    let api = server().await;
    for (n, owner) in [("c1", "helm"), ("c2", "helm"), ("c3", "other")] {
        api.apply(cm(n, json!({"owner": owner}))).expect("apply");
    }
    let rv = api.resource_version();

    let list = get_json(
        &api,
        "/api/v1/namespaces/default/configmaps?labelSelector=owner%3Dhelm",
    )
    .await;
    assert_eq!(list["kind"], "ConfigMapList");
    assert_eq!(list["apiVersion"], "v1");
    assert_eq!(list["metadata"]["resourceVersion"], rv.to_string());
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    assert!(items[0].get("kind").is_none(), "list items carry no kind");
    assert_eq!(items[0]["metadata"]["name"], "c1");
    assert!(items[0]["metadata"]["uid"].is_string());
    assert!(items[0]["metadata"]["creationTimestamp"].is_string());

    let page = get_json(&api, "/api/v1/configmaps?limit=2").await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(page["metadata"]["remainingItemCount"], 1);
    let token = page["metadata"]["continue"]
        .as_str()
        .expect("continue token")
        .to_string();
    assert!(
        !token.contains('='),
        "URL-safe base64 without padding, like the real server"
    );
    let rest = get_json(
        &api,
        &format!("/api/v1/configmaps?limit=2&continue={token}"),
    )
    .await;
    assert_eq!(rest["items"][0]["metadata"]["name"], "c3");
    assert!(rest["metadata"].get("continue").is_none());

    let sel = get_json(
        &api,
        "/api/v1/configmaps?labelSelector=owner%20notin%20(helm),!missing",
    )
    .await;
    assert_eq!(sel["items"].as_array().map(Vec::len), Some(1));
    let one = get_json(&api, "/api/v1/configmaps?fieldSelector=metadata.name%3Dc2").await;
    assert_eq!(one["items"][0]["metadata"]["name"], "c2");

    match get(&api, "/api/v1/secrets?fieldSelector=spec.foo%3Dx").await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 400);
            assert_eq!(s.message, "field label not supported: spec.foo");
        }
        other => panic!("expected 400, got {other:?}"),
    }
}

#[tokio::test]
async fn get_and_not_found_status() {
    let api = server().await;
    api.apply(cm("c1", json!({}))).expect("apply");
    let obj = get_json(&api, "/api/v1/namespaces/default/configmaps/c1").await;
    assert_eq!(obj["kind"], "ConfigMap");
    assert_eq!(obj["data"]["k"], "v");

    let body = match get(&api, "/apis/apps/v1/namespaces/default/replicasets/nope").await {
        Err(kube::Error::Api(s)) => s,
        other => panic!("expected 404, got {other:?}"),
    };
    assert_eq!(body.code, 404);
    assert_eq!(body.reason, "NotFound");
    assert_eq!(body.message, "replicasets.apps \"nope\" not found");
}

#[tokio::test]
async fn watch_events_bookmarks_and_410() {
    let api = server().await;
    api.apply(cm("c1", json!({"owner": "helm"})))
        .expect("apply");
    let rv = api.resource_version();
    api.apply(cm("c1", json!({"owner": "helm", "v": "2"})))
        .expect("apply");
    api.apply(cm("c2", json!({"owner": "helm"})))
        .expect("apply");
    api.apply(cm("c3", json!({}))).expect("apply");
    assert!(api.delete("ConfigMap", "default", "c2"));
    let now = api.resource_version();

    let lines = watch_lines(
        &api,
        &format!(
            "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=1&labelSelector=owner%3Dhelm"
        ),
    )
    .await;
    let types: Vec<&str> = lines.iter().filter_map(|l| l["type"].as_str()).collect();
    assert_eq!(&types[..3], ["MODIFIED", "ADDED", "DELETED"]);
    assert!(
        types[3..].iter().all(|t| *t == "BOOKMARK") && types.len() > 3,
        "{types:?}"
    );
    assert_eq!(lines[0]["object"]["kind"], "ConfigMap");
    assert_eq!(lines[0]["object"]["metadata"]["labels"]["v"], "2");
    assert_eq!(
        lines[2]["object"]["metadata"]["resourceVersion"],
        now.to_string()
    );
    let bookmark = lines.last().expect("a bookmark");
    assert_eq!(
        bookmark["object"],
        json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"resourceVersion": now.to_string()}})
    );

    // Streaming list: current objects, then the initial-events-end bookmark.
    let lines = watch_lines(
        &api,
        "/apis/apps/v1/replicasets?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1",
    )
    .await;
    assert_eq!(lines[0]["type"], "BOOKMARK");
    assert_eq!(
        lines[0]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    assert_eq!(lines[0]["object"]["status"]["replicas"], 0);

    api.compact();
    let lines = watch_lines(
        &api,
        &format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}"),
    )
    .await;
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["type"], "ERROR");
    assert_eq!(
        lines[0]["object"],
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("too old resource version: {rv} ({now})"), "reason": "Expired", "code": 410})
    );
}

fn api_status(r: Result<String, kube::Error>) -> kube::core::Status {
    match r {
        Err(kube::Error::Api(s)) => *s,
        other => panic!("expected an API Status, got {other:?}"),
    }
}

/// Faults answer with the real server's `Status` shapes, per resource before global, and reach
/// watches already open.
#[tokio::test]
async fn faults_answer_as_the_real_server_fails() {
    let api = server().await;
    api.apply(cm("c1", json!({}))).expect("apply");
    let secrets = "/api/v1/secrets";
    let cms = "/api/v1/configmaps";

    api.set_resource_fault("secrets", Some(Fault::Status(403)));
    let s = api_status(get(&api, secrets).await);
    assert_eq!((s.code, s.reason.as_str()), (403, "Forbidden"));
    assert!(
        s.message.contains("cannot list resource \"secrets\""),
        "{}",
        s.message
    );
    get_json(&api, cms).await;

    api.set_fault(Some(Fault::Status(429)));
    let s = api_status(get(&api, cms).await);
    assert_eq!((s.code, s.reason.as_str()), (429, "TooManyRequests"));
    assert_eq!(s.details.map(|d| d.retry_after_seconds), Some(1));
    let s = api_status(get(&api, secrets).await);
    assert_eq!(s.code, 403, "a resource's own fault takes precedence");
    for (code, reason) in [(500, "InternalError"), (503, "ServiceUnavailable")] {
        api.set_fault(Some(Fault::Status(code)));
        let s = api_status(get(&api, cms).await);
        assert_eq!((s.code, s.reason.as_str()), (code, reason));
    }
    api.set_resource_fault("secrets", None);
    assert_eq!(api_status(get(&api, secrets).await).code, 503);

    // Lists answer, watches fail.
    api.set_fault(Some(Fault::WatchesFail(500)));
    get_json(&api, cms).await;
    assert_eq!(
        api_status(get(&api, &format!("{cms}?watch=true")).await).code,
        500
    );
    api.set_fault(Some(Fault::WatchesFail(410)));
    let lines = watch_lines(&api, &format!("{cms}?watch=true&resourceVersion=1")).await;
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["type"], "ERROR");
    assert_eq!(lines[0]["object"]["code"], 410);
    api.set_fault(Some(Fault::WatchesClosed));
    get_json(&api, cms).await;
    assert_eq!(
        get(&api, &format!("{cms}?watch=true")).await.expect("200"),
        ""
    );

    // A hang holds the request until the fault is lifted.
    api.set_fault(Some(Fault::Hang));
    let pending = tokio::spawn({
        let client = api.client().expect("client");
        async move {
            let req = http::Request::get(cms).body(Vec::new()).expect("request");
            client.request_text(req).await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!pending.is_finished(), "a hung request is not answered");
    api.set_fault(None);
    let body = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("answered once the hang is lifted")
        .expect("task")
        .expect("the list");
    assert!(body.contains("\"c1\""));

    // A watch open when a fault is set ends, so that its client meets the fault.
    let open = tokio::spawn({
        let client = api.client().expect("client");
        async move {
            let req = http::Request::get(format!("{cms}?watch=true&timeoutSeconds=30"))
                .body(Vec::new())
                .expect("request");
            client.request_text(req).await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    api.set_resource_fault("configmaps", Some(Fault::Status(403)));
    tokio::time::timeout(Duration::from_secs(5), open)
        .await
        .expect("the open watch ends when the fault is set")
        .expect("task")
        .expect("the watch body");
}

#[tokio::test]
async fn down_refuses_and_counters_count() {
    let api = server().await;
    api.apply(cm("c1", json!({}))).expect("apply");
    api.reset_stats();
    get_json(&api, "/api/v1/configmaps").await;
    let stats = api.stats();
    assert_eq!(stats.requests, 1);
    assert!(stats.bytes > 100);
    api.set_down(true);
    assert!(get(&api, "/api/v1/configmaps").await.is_err());
    api.set_down(false);
    get_json(&api, "/api/v1/configmaps").await;
}

#[tokio::test]
async fn secret_reader_reads_and_caches() {
    let api = server().await;
    api.apply(
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": "regcred", "namespace": "apps"},
        "data": {".dockerconfigjson": "eyJhdXRocyI6e319"}}),
    )
    .expect("apply");
    api.apply(json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "default", "namespace": "apps"},
        "imagePullSecrets": [{"name": "regcred"}]}))
        .expect("apply");
    let reader = SecretReader::new(api.client().expect("client"), Duration::from_secs(60));

    let s = reader.secret("apps", "regcred").await.expect("secret");
    assert_eq!(s.type_, "kubernetes.io/dockerconfigjson");
    assert_eq!(s.data[".dockerconfigjson"], b"{\"auths\":{}}");
    assert!(
        !format!("{s:?}").contains("auths"),
        "Debug never shows data"
    );
    let names = reader.image_pull_secrets("apps", None).await.expect("sa");
    assert_eq!(&names[..], ["regcred".to_string()]);
    match reader.secret("apps", "missing").await {
        Err(SecretError::NotFound { name, .. }) => assert_eq!(name, "missing"),
        other => panic!("expected NotFound, got {other:?}"),
    }

    // Cached: answers while the API is down, until cleared.
    api.set_down(true);
    assert!(reader.secret("apps", "regcred").await.is_ok());
    assert!(matches!(
        reader.secret("apps", "missing").await,
        Err(SecretError::NotFound { .. })
    ));
    reader.clear();
    assert!(matches!(
        reader.secret("apps", "regcred").await,
        Err(SecretError::Api { .. })
    ));
}

/// A raw request, for the answers kube-rs' typed calls do not reach.
async fn raw(
    api: &ApiServer,
    method: &str,
    path: &str,
    ct: &str,
    body: Value,
) -> Result<String, kube::Error> {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", ct)
        .body(serde_json::to_vec(&body).expect("body"))
        .expect("request");
    api.client().expect("client").request_text(req).await
}

/// Answers compared with a real API server (kube-apiserver 1.36 libraries with apiextensions).
#[tokio::test]
async fn wire_answers_match_the_real_server() {
    let api = ApiServer::start_with(ApiServerOptions {
        rollcache_crd: true,
        ..Default::default()
    })
    .await
    .expect("test API server starts");
    let base = "/apis/rollcache.io/v1alpha1/rollcachenodes";
    let json_ct = "application/json";

    let s = api_status(
        raw(
            &api,
            "POST",
            base,
            json_ct,
            json!({"apiVersion": "rollcache.io/v1alpha1", "kind": "RollcacheNode", "metadata": {}}),
        )
        .await,
    );
    assert_eq!(s.code, 422);
    assert_eq!(
        s.message,
        "RollcacheNode.rollcache.io \"\" is invalid: metadata.name: Required value: name or generateName is required"
    );

    let s = api_status(raw(&api, "POST", base, json_ct, json!({"apiVersion": "rollcache.io/v1alpha1", "kind": "Other", "metadata": {"name": "q"}})).await);
    assert_eq!(s.code, 422);
    assert_eq!(
        s.message,
        "Other.rollcache.io \"q\" is invalid: kind: Invalid value: \"Other\": must be RollcacheNode"
    );

    let s = api_status(raw(&api, "PATCH", &format!("{base}/q"), "application/apply-patch+yaml", json!({"apiVersion": "rollcache.io/v1alpha1", "kind": "RollcacheNode", "metadata": {"name": "q"}})).await);
    assert_eq!(
        s.message,
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
    );

    let created: Value = serde_json::from_str(
        &raw(
            &api,
            "POST",
            base,
            json_ct,
            json!({"apiVersion": "rollcache.io/v1alpha1",
            "kind": "RollcacheNode", "metadata": {"name": "q", "labels": {"a": "1"}},
            "spec": {"x": 1}, "status": {"desired": 3}}),
        )
        .await
        .expect("create"),
    )
    .expect("json");
    assert!(created.get("status").is_none(), "status dropped on create");
    assert_eq!(created["metadata"]["generation"], 1);
    assert_eq!(
        created["metadata"]["managedFields"][0]["fieldsV1"],
        json!({"f:metadata": {"f:labels": {".": {}, "f:a": {}}}, "f:spec": {".": {}, "f:x": {}}}),
        "the real server's record of a create"
    );
    let s = api_status(
        raw(
            &api,
            "PATCH",
            &format!("{base}/q"),
            "application/strategic-merge-patch+json",
            json!({"spec": {}}),
        )
        .await,
    );
    assert_eq!((s.code, s.reason.as_str()), (415, "UnsupportedMediaType"));

    let gone: Value = serde_json::from_str(
        &raw(&api, "DELETE", &format!("{base}/q"), json_ct, json!({}))
            .await
            .expect("delete"),
    )
    .expect("json");
    assert_eq!(gone["kind"], "Status");
    assert_eq!(gone["status"], "Success");
    assert_eq!(gone["details"]["kind"], "rollcachenodes");
    assert!(gone["details"]["uid"].is_string());

    let s = api_status(
        raw(
            &api,
            "GET",
            "/apis/rollcache.io/v1alpha1/widgets",
            json_ct,
            json!({}),
        )
        .await,
    );
    assert_eq!((s.code, s.message.as_str()), (404, "404 page not found"));
    let s = api_status(raw(&api, "GET", "/apis/apps/v1/widgets", json_ct, json!({})).await);
    assert_eq!(
        (s.code, s.reason.as_str()),
        (404, "NotFound"),
        "a built-in group answers a Status"
    );

    let ev: Value = serde_json::from_str(
        &raw(
            &api,
            "POST",
            "/apis/events.k8s.io/v1/namespaces/default/events",
            json_ct,
            json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e1"},
                "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "rollcache",
                "reportingInstance": "x", "action": "Plan", "reason": "R", "type": "Normal",
                "regarding": {"kind": "Node", "name": "n1"}}),
        )
        .await
        .expect("event"),
    )
    .expect("json");
    assert_eq!(ev["metadata"]["namespace"], "default");
    assert_eq!(ev["deprecatedSource"], json!({}));
    let owned = &ev["metadata"]["managedFields"][0]["fieldsV1"];
    assert!(
        owned.get("f:deprecatedSource").is_none(),
        "encoding defaults are no one's: {owned}"
    );
    assert_eq!(
        owned["f:regarding"],
        json!({}),
        "an object reference is owned whole"
    );
}

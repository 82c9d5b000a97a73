//! The test API server's fleet resources: Leases with optimistic concurrency as the real server
//! keeps it, `rollcacheinventories` served only behind rollcache's CRDs, and the CRD manifest
//! declaring every field the indexer writes.

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use rollcache::fleet::codec;
use rollcache::shard;
use rollcache_testbed::apiserver::{ApiServer, rollcache_inventory_resource};
use rollcache_testbed::history;
use serde_json::{Value, json};

fn code<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> u16 {
    match r {
        Err(kube::Error::Api(s)) => s.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn leases_are_replaced_only_at_the_version_read() {
    let api = ApiServer::start().await.expect("test API server starts");
    let leases: Api<Lease> = Api::namespaced(api.client().expect("client"), "rollcache");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "rollcache-index", "namespace": "rollcache"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15},
    }))
    .unwrap();
    let created = leases
        .create(&PostParams::default(), &lease)
        .await
        .expect("create");
    assert_eq!(
        code(leases.create(&PostParams::default(), &lease).await),
        409
    );

    // Two replicas read the same version; the first replace wins, the second conflicts. (A
    // replace that changes nothing keeps the version, as on a real server: both change it.)
    let mut a = created.clone();
    a.spec.as_mut().unwrap().holder_identity = Some("c".into());
    let mut b = created.clone();
    b.spec.as_mut().unwrap().holder_identity = Some("b".into());
    let won = leases
        .replace("rollcache-index", &PostParams::default(), &a)
        .await
        .expect("a");
    assert_eq!(
        code(
            leases
                .replace("rollcache-index", &PostParams::default(), &b)
                .await
        ),
        409
    );
    assert_ne!(
        won.metadata.resource_version,
        created.metadata.resource_version
    );
    let now = leases.get("rollcache-index").await.expect("get");
    assert_eq!(now.spec.unwrap().holder_identity.as_deref(), Some("c"));
    assert_eq!(
        leases
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .len(),
        1
    );
    let other: Api<Lease> = Api::namespaced(api.client().expect("client"), "elsewhere");
    assert_eq!(code(other.get("rollcache-index").await), 404);
}

fn shard_object(spec: &shard::InventorySpec) -> Value {
    json!({
        "apiVersion": "rollcache.io/v1alpha1", "kind": "RollcacheInventory",
        "metadata": {"name": shard::object_name(&spec.source_namespace, spec.shard, spec.shards),
                     "namespace": "rollcache"},
        "spec": spec,
    })
}

fn one_shard() -> shard::InventorySpec {
    let rs: k8s_openapi::api::apps::v1::ReplicaSet =
        serde_json::from_value(history::replicaset("bl45p", "archiver", 2, &["r/a:2"], 1)).unwrap();
    let facts = [rollcache::history::replicasets::decode(&rs).facts];
    codec::encode(
        "bl45p",
        &shard::by_namespace(facts.iter().map(Vec::as_slice))["bl45p"],
    )
    .remove(0)
}

#[tokio::test]
async fn inventories_are_served_namespaced_behind_the_crd() {
    let api = ApiServer::start().await.expect("test API server starts");
    let client = api.client().expect("client");
    let inv: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "rollcache", &rollcache_inventory_resource());
    let spec = one_shard();
    let obj = shard_object(&spec);
    let name = obj["metadata"]["name"].as_str().unwrap().to_owned();
    let ssa = PatchParams::apply("rollcache-index").force();
    assert_eq!(code(inv.patch(&name, &ssa, &Patch::Apply(&obj)).await), 404);

    api.install_rollcache_crd();
    let group = kube::discovery::oneshot::group(&client, "rollcache.io")
        .await
        .expect("group");
    let (ar, caps) = group
        .recommended_kind("RollcacheInventory")
        .expect("discovered");
    assert_eq!(
        (ar.plural.as_str(), caps.scope),
        ("rollcacheinventories", kube::discovery::Scope::Namespaced)
    );
    let written = inv
        .patch(&name, &ssa, &Patch::Apply(&obj))
        .await
        .expect("apply");
    let back: shard::InventorySpec = serde_json::from_value(written.data["spec"].clone()).unwrap();
    assert_eq!(back, spec);
    assert_eq!(codec::decode(&name, &back).expect("decodes").len(), 1);
    let managers: Vec<_> = written
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(managers, vec!["rollcache-index".to_owned()]);
    let all: Api<DynamicObject> = Api::all_with(client.clone(), &rollcache_inventory_resource());
    assert_eq!(
        all.list(&ListParams::default())
            .await
            .expect("list")
            .items
            .len(),
        1
    );

    inv.delete(&name, &DeleteParams::default())
        .await
        .expect("delete");
    assert_eq!(code(inv.get(&name).await), 404);
    inv.patch(&name, &ssa, &Patch::Apply(&obj))
        .await
        .expect("apply again");
    api.uninstall_rollcache_crd();
    api.install_rollcache_crd();
    assert!(
        inv.list(&ListParams::default())
            .await
            .expect("list")
            .items
            .is_empty(),
        "gone with the CRD"
    );
}

#[test]
fn the_crd_declares_every_spec_field_and_its_columns_exist() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/daemonset/fleet/crd-rollcacheinventories.yaml"
    );
    let crd: Value = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).expect("yaml");
    assert_eq!(crd["spec"]["group"], shard::GROUP);
    assert_eq!(crd["spec"]["names"]["plural"], shard::PLURAL);
    assert_eq!(crd["spec"]["names"]["kind"], shard::KIND);
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], shard::VERSION);
    let schema = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let required_spec = serde_json::to_value(one_shard()).unwrap();
    let fields: Vec<&String> = required_spec.as_object().unwrap().keys().collect();
    let required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(required.len(), fields.len(), "{required:?} vs {fields:?}");
    // Every optional field set, so that none escapes the check.
    let spec = serde_json::to_value(shard::InventorySpec {
        unresolved: vec!["Secret bl45p/sh.helm.release.v1.x.v1".into()],
        ..one_shard()
    })
    .unwrap();
    for (k, v) in spec.as_object().unwrap() {
        let ty = match v {
            Value::String(_) => "string",
            Value::Array(_) => "array",
            _ => "integer",
        };
        assert_eq!(schema["properties"][k]["type"], ty, "{k}");
    }
    assert_eq!(
        schema["properties"]["unresolved"]["items"]["type"],
        "string"
    );
    let mut columns = Vec::new();
    for c in version["additionalPrinterColumns"].as_array().unwrap() {
        columns.push(c["name"].as_str().unwrap().to_uppercase());
        let path = c["jsonPath"].as_str().unwrap();
        if let Some(p) = path.strip_prefix(".spec.") {
            assert!(spec.get(p).is_some(), "column {path} names no field");
        }
    }
    for want in ["SOURCE-NAMESPACE", "SHARD", "OBJECTS", "REVISIONS", "AGE"] {
        assert!(columns.iter().any(|c| c == want), "{want} in {columns:?}");
    }

    // The catalog's fields, each declared (a real server prunes what the schema lacks).
    let catalog = &version["schema"]["openAPIV3Schema"]["properties"]["catalog"];
    let mut namespaces = std::collections::BTreeMap::new();
    namespaces.insert(
        "bl45p".to_owned(),
        shard::CatalogEntry {
            shards: 1,
            digests: vec![one_shard().digest],
        },
    );
    let written = serde_json::to_value(shard::Catalog {
        observed_at: "2026-01-01T00:00:00Z".into(),
        resync_seconds: 300,
        complete: true,
        namespaces,
        scope: Some(vec!["bl45p".into()]),
    })
    .unwrap();
    for (k, v) in written.as_object().unwrap() {
        let ty = match v {
            Value::String(_) => "string",
            Value::Bool(_) => "boolean",
            Value::Object(_) => "object",
            Value::Array(_) => "array",
            _ => "integer",
        };
        assert_eq!(catalog["properties"][k]["type"], ty, "catalog.{k}");
    }
    let entry = &catalog["properties"]["namespaces"]["additionalProperties"]["properties"];
    for (k, v) in written["namespaces"]["bl45p"].as_object().unwrap() {
        let ty = if v.is_array() { "array" } else { "integer" };
        assert_eq!(entry[k]["type"], ty, "catalog.namespaces.*.{k}");
    }

    // The heartbeat's fields, each declared and required, its digest matching the pattern.
    let heartbeat = &version["schema"]["openAPIV3Schema"]["properties"]["heartbeat"];
    let beat = serde_json::to_value(shard::Heartbeat {
        observed_at: "2026-01-01T00:00:00Z".into(),
        resync_seconds: 300,
        catalog: serde_json::from_value::<shard::Catalog>(written.clone())
            .unwrap()
            .content_digest(),
    })
    .unwrap();
    let required: Vec<&str> = heartbeat["required"]
        .as_array()
        .expect("heartbeat.required")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for (k, v) in beat.as_object().unwrap() {
        let ty = if v.is_string() { "string" } else { "integer" };
        assert_eq!(heartbeat["properties"][k]["type"], ty, "heartbeat.{k}");
        assert!(required.contains(&k.as_str()), "heartbeat.{k} required");
    }
    let pattern = heartbeat["properties"]["catalog"]["pattern"]
        .as_str()
        .unwrap();
    assert_eq!(pattern, "^sha256:[0-9a-f]{64}$");
    let digest = beat["catalog"].as_str().unwrap();
    assert!(
        digest.len() == 71
            && digest.starts_with("sha256:")
            && digest[7..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{digest}"
    );
}

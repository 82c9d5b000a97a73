//! Fleet mode end to end, on a real containerd and registry: `rollcache index` in-process against
//! the in-test API server publishes the inventory, and an agent with `history_from: inventory`
//! pins what it says. Pins follow history through the indexer; an indexer stopped and restarted,
//! a shard, a namespace's shards or the catalog deleted by hand, a shard corrupted, and the
//! leadership moved all unpin nothing; each with its control: a revision that really leaves
//! history is unpinned after the grace period.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::daemon::*;
use common::*;
use kube::api::{Api, DynamicObject, ListParams};
use rollcache::commands::index::{IndexArgs, inventory_resource, run_with};
use rollcache::fleet::publish::{IndexMetrics, Tuning};
use rollcache::shard;
use rollcache_testbed::apiserver::{ApiServer, ApiServerOptions, Fault};
use rollcache_testbed::history;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const INV_NS: &str = "rollcache";
const SOON: Duration = Duration::from_secs(20);
/// How long a pin must outlive the break: several grace periods.
const HOLD: Duration = Duration::from_secs(4);

/// Small shards (so that a namespace has several), fast passes, and a resync of `resync`: a
/// deleted or edited object is restored within it, and the catalog is stale after three.
fn tuning(resync: Duration) -> Tuning {
    Tuning {
        budget: 250,
        debounce: Duration::from_millis(100),
        retry: Duration::from_millis(300),
        resync,
    }
}

struct Indexer {
    metrics: Arc<IndexMetrics>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Indexer {
    fn start(api: &ApiServer, identity: &str, resync: Duration) -> Self {
        Self::start_scoped(api, identity, resync, &[])
    }

    /// An indexer of `namespaces` only (`--namespaces`; empty: all).
    fn start_scoped(
        api: &ApiServer,
        identity: &str,
        resync: Duration,
        namespaces: &[&str],
    ) -> Self {
        let args = IndexArgs {
            kube: Default::default(),
            namespace: Some(INV_NS.into()),
            namespaces: namespaces.iter().map(|n| (*n).to_owned()).collect(),
            identity: Some(identity.into()),
            lease_name: "rollcache-index".into(),
            lease_duration: Duration::from_secs(2),
            metrics_addr: "127.0.0.1:0".parse().unwrap(),
        };
        let (metrics, cancel) = (Arc::new(IndexMetrics::default()), CancellationToken::new());
        let task = tokio::spawn(run_with(
            args,
            api.client().expect("client"),
            tuning(resync),
            metrics.clone(),
            cancel.clone(),
        ));
        Self {
            metrics,
            cancel,
            task,
        }
    }

    async fn stop(self) {
        self.cancel.cancel();
        self.task.await.unwrap().expect("the indexer ends cleanly");
    }
}

async fn api_with_crd() -> ApiServer {
    let opts = ApiServerOptions {
        rollcache_crd: true,
        ..ApiServerOptions::default()
    };
    ApiServer::start_with(opts)
        .await
        .expect("test API server starts")
}

/// The agent in fleet mode, grace period 1 s.
async fn agent(bed: &Bed, api: &ApiServer) -> TestDaemon {
    agent_on(bed, api, None).await
}

/// The agent in fleet mode on the node named `node`.
async fn agent_on(bed: &Bed, api: &ApiServer, node: Option<&str>) -> TestDaemon {
    agent_taking(bed, api, node, None).await
}

/// The agent in fleet mode on `node`, taking only `namespaces` (a YAML list) when given.
async fn agent_taking(
    bed: &Bed,
    api: &ApiServer,
    node: Option<&str>,
    namespaces: Option<&str>,
) -> TestDaemon {
    let mut s = base_settings(bed.containerd.socket().as_path(), node);
    if let Some(namespaces) = namespaces {
        s.insert("namespaces".into(), namespaces.into());
    }
    s.insert("unpin_grace".into(), "1s".into());
    s.insert("history_from".into(), "inventory".into());
    s.insert("inventory_namespace".into(), INV_NS.into());
    TestDaemon::start(api, s).await
}

/// Applies `obj`; returns its name.
fn apply(api: &ApiServer, obj: Value) -> String {
    let stored = api.apply(obj).expect("apply");
    stored["metadata"]["name"].as_str().unwrap().to_owned()
}

async fn pinned(bed: &Bed, reference: &str) -> bool {
    pinned_by_us(&bed.node, reference).await
}

/// Still pinned by rollcache after `HOLD`, checked along the way.
async fn stays_pinned(bed: &Bed, references: &[&str], why: &str) {
    common::daemon::stays_pinned(&bed.node, references, HOLD, why).await;
}

/// Unpinned (never deleted) within `SOON`.
async fn unpinned(bed: &Bed, reference: &str) {
    unpinned_not_deleted(&bed.node, reference, SOON).await;
}

/// The inventory source's entry in `/status`.
fn inventory_source(s: &Value) -> Value {
    s["sources"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|x| {
            x["source"]
                .as_str()
                .is_some_and(|n| n.starts_with("inventory"))
        })
        .cloned()
        .unwrap_or(Value::Null)
}

/// Waits until `/status` says the inventory is incomplete for a reason containing `why`.
async fn incomplete_because(d: &TestDaemon, why: &str) {
    d.wait_status(
        SOON,
        &format!("the inventory reported incomplete: {why}"),
        |s| {
            inventory_source(s)["error"]
                .as_str()
                .is_some_and(|e| e.contains(why))
        },
    )
    .await;
}

async fn complete_again(d: &TestDaemon) {
    d.wait_status(SOON, "the inventory complete again", sources_fresh)
        .await;
}

fn inventories(api: &ApiServer) -> Api<DynamicObject> {
    Api::namespaced_with(api.client().unwrap(), INV_NS, &inventory_resource())
}

/// Names of the shards published for `ns`.
async fn shards_of(api: &ApiServer, ns: &str) -> Vec<String> {
    let mut names: Vec<String> = inventories(api)
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter(|o| o.data["spec"]["sourceNamespace"] == ns)
        .filter_map(|o| o.metadata.name)
        .collect();
    names.sort();
    names
}

/// Two namespaces of StatefulSet history: `bl45p` (ioc-0 at revisions 1 and 2, and fillers so
/// that it spans several shards) and `bl46p` (one revision).
struct History {
    one: String,
    two: String,
    other: String,
    one_cr: String,
}

fn write_history(bed: &mut Bed, api: &ApiServer, seed: u64) -> History {
    let (one, _, _) = bed.push_small(seed, "fleet/ioc:1");
    let (two, _, _) = bed.push_small(seed + 1, "fleet/ioc:2");
    let (other, _, _) = bed.push_small(seed + 2, "fleet/archiver:1");
    let one_cr = apply(
        api,
        history::controller_revision("bl45p", "ioc-0", 1, &[&one]),
    );
    apply(
        api,
        history::controller_revision("bl45p", "ioc-0", 2, &[&two]),
    );
    for i in 1..8 {
        apply(
            api,
            history::controller_revision("bl45p", &format!("ioc-{i}"), 1, &[&two]),
        );
    }
    apply(
        api,
        history::controller_revision("bl46p", "archiver", 1, &[&other]),
    );
    History {
        one,
        two,
        other,
        one_cr,
    }
}

/// Pins follow history through the indexer: a new revision is pulled and pinned (the latency
/// from the write is printed), and the inventory source is reported synced; the control: a
/// revision that leaves history is unpinned after the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_pins_follow_history_through_the_indexer() {
    let mut bed = Bed::start().await;
    let api = api_with_crd().await;
    let h = write_history(&mut bed, &api, 901);
    let indexer = Indexer::start(&api, "a", Duration::from_secs(2));
    let d = agent(&bed, &api).await;
    for image in [&h.one, &h.two, &h.other] {
        wait_pinned_by_us(&bed.node, image).await;
    }
    complete_again(&d).await;
    let m = d.metrics().await;
    assert_eq!(
        metric(&m, "rollcache_source_synced{source=\"inventory\"}"),
        Some(1.0),
        "{m}"
    );

    let (three, _, _) = bed.push_small(904, "fleet/ioc:3");
    let written = Instant::now();
    apply(
        &api,
        history::controller_revision("bl45p", "ioc-0", 3, &[&three]),
    );
    wait_until(SOON, "the new revision pulled", || async {
        cri_image(&bed.node, &three).await.is_some()
    })
    .await;
    let pulled = written.elapsed();
    wait_pinned_by_us(&bed.node, &three).await;
    eprintln!(
        "write -> pulled {pulled:?}, write -> pinned {:?} (through the indexer)",
        written.elapsed()
    );

    assert!(api.delete("ControllerRevision", "bl45p", &h.one_cr));
    unpinned(&bed, &h.one).await;
    assert!(pinned(&bed, &h.two).await && pinned(&bed, &three).await);
    d.stop().await;
    indexer.stop().await;
}

/// The indexer stopped: its catalog ages and the view is incomplete (reported in `/status`, the
/// node's summary and the metric), so a revision that left history meanwhile stays pinned; restarted while it
/// cannot list the history it publishes nothing and nothing is unpinned; once it lists, it
/// follows again: the control, that revision is unpinned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_indexer_stopped_and_restarted_unpins_nothing() {
    let mut bed = Bed::start().await;
    let api = api_with_crd().await;
    let h = write_history(&mut bed, &api, 911);
    api.apply(history::node("n1", json!({}))).expect("node");
    let indexer = Indexer::start(&api, "a", Duration::from_secs(1));
    let d = agent_on(&bed, &api, Some("n1")).await;
    for image in [&h.one, &h.two, &h.other] {
        wait_pinned_by_us(&bed.node, image).await;
    }
    complete_again(&d).await;

    indexer.stop().await;
    incomplete_because(&d, "refreshed").await;
    wait_until(SOON, "the node's summary says why", || async {
        api.get("RollcacheNode", "", "n1").is_some_and(|o| {
            o["status"]["state"] == "SourceError"
                && o["status"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("refreshed"))
        })
    })
    .await;
    let m = d.metrics().await;
    assert_eq!(
        metric(&m, "rollcache_source_synced{source=\"inventory\"}"),
        Some(0.0),
        "{m}"
    );
    assert!(api.delete("ControllerRevision", "bl45p", &h.one_cr));
    stays_pinned(
        &bed,
        &[&h.one, &h.two],
        "a stopped indexer is not a pruned history",
    )
    .await;

    api.set_resource_fault("controllerrevisions", Some(Fault::Status(503)));
    let restarted = Indexer::start(&api, "b", Duration::from_secs(1));
    stays_pinned(
        &bed,
        &[&h.one, &h.two],
        "an indexer that cannot list publishes nothing",
    )
    .await;
    assert_eq!(restarted.metrics.writes.get(), 0);

    api.set_resource_fault("controllerrevisions", None);
    unpinned(&bed, &h.one).await;
    complete_again(&d).await;
    assert!(pinned(&bed, &h.two).await && pinned(&bed, &h.other).await);
    d.stop().await;
    restarted.stop().await;
}

/// One shard deleted by hand, all shards of a namespace deleted, the catalog deleted, a shard
/// corrupted (its digest no longer matches): each time the view is incomplete for that reason
/// and nothing is unpinned; the indexer restores it at its next resync and the view is complete
/// again. The control: revisions that really leave history, and a namespace whose history is
/// gone, are unpinned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_shards_and_catalog_deleted_or_corrupted_unpin_nothing() {
    let mut bed = Bed::start().await;
    let api = api_with_crd().await;
    let h = write_history(&mut bed, &api, 921);
    // Breaks are held for less than three resyncs: the catalog stays fresh meanwhile.
    let resync = Duration::from_secs(8);
    let indexer = Indexer::start(&api, "a", resync);
    let d = agent(&bed, &api).await;
    for image in [&h.one, &h.two, &h.other] {
        wait_pinned_by_us(&bed.node, image).await;
    }
    complete_again(&d).await;
    let inv = inventories(&api);
    let bl45p = shards_of(&api, "bl45p").await;
    assert!(bl45p.len() >= 2, "several shards: {bl45p:?}");
    let all = [h.one.as_str(), h.two.as_str(), h.other.as_str()];

    // Each break is made while the indexer is stopped (so that it cannot repair it before the
    // agent sees it), then the indexer restarts and restores what it publishes.
    let mut indexer = Some(indexer);

    // One shard of several: the one holding revision 1, whose image no other object names, so
    // that only the rule keeps its pin.
    let n = bl45p.len() as u32;
    let object = rollcache::model::ObjectRef::new("ControllerRevision", "bl45p", &h.one_cr);
    let shard = shard::object_name("bl45p", shard::bucket(&object, n), n);
    assert!(bl45p.contains(&shard), "{shard} in {bl45p:?}");
    indexer.take().expect("running").stop().await;
    assert!(api.delete(shard::KIND, INV_NS, &shard));
    incomplete_because(&d, "is missing").await;
    stays_pinned(&bed, &all, "a shard deleted by hand").await;
    indexer = Some(Indexer::start(&api, "a", resync));
    complete_again(&d).await;

    // Every shard of a namespace: shards alone would say the namespace is gone.
    indexer.take().expect("running").stop().await;
    for name in shards_of(&api, "bl46p").await {
        assert!(api.delete(shard::KIND, INV_NS, &name));
    }
    incomplete_because(&d, "is missing").await;
    stays_pinned(&bed, &all, "a namespace's shards deleted by hand").await;
    indexer = Some(Indexer::start(&api, "a", resync));
    complete_again(&d).await;

    // The catalog.
    indexer.take().expect("running").stop().await;
    assert!(api.delete(shard::KIND, INV_NS, shard::CATALOG_NAME));
    incomplete_because(&d, "no inventory catalog").await;
    stays_pinned(&bed, &all, "the catalog deleted").await;
    indexer = Some(Indexer::start(&api, "a", resync));
    complete_again(&d).await;

    // A shard whose data no longer matches its digest.
    indexer.take().expect("running").stop().await;
    let mut obj = api.get(shard::KIND, INV_NS, &shard).expect("shard");
    obj["spec"]["digest"] = json!(format!("sha256:{}", "0".repeat(64)));
    obj["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    api.apply(obj).expect("corrupt shard");
    incomplete_because(&d, "does not match").await;
    stays_pinned(&bed, &all, "a corrupt shard").await;
    let indexer = Indexer::start(&api, "a", resync);
    complete_again(&d).await;
    assert!(inv.get(shard::CATALOG_NAME).await.is_ok());

    // Control: a revision pruned and a namespace's history gone are unpinned.
    assert!(api.delete("ControllerRevision", "bl45p", &h.one_cr));
    let gone: Vec<String> = api_names(&api, "bl46p").await;
    for name in &gone {
        assert!(api.delete("ControllerRevision", "bl46p", name));
    }
    unpinned(&bed, &h.one).await;
    unpinned(&bed, &h.other).await;
    assert!(pinned(&bed, &h.two).await);
    assert!(shards_of(&api, "bl46p").await.is_empty());
    d.stop().await;
    indexer.stop().await;
}

async fn api_names(api: &ApiServer, ns: &str) -> Vec<String> {
    let crs: Api<k8s_openapi::api::apps::v1::ControllerRevision> =
        Api::namespaced(api.client().unwrap(), ns);
    crs.list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect()
}

/// Two indexers; the leader cancelled: the other takes over, nothing is unpinned, and a new
/// revision is followed. The control: a revision pruned after the failover is unpinned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_leadership_moved_unpins_nothing_and_follows() {
    let mut bed = Bed::start().await;
    let api = api_with_crd().await;
    let h = write_history(&mut bed, &api, 931);
    let a = Indexer::start(&api, "a", Duration::from_secs(2));
    wait_until(SOON, "a leads", || async { a.metrics.leader.get() == 1 }).await;
    let b = Indexer::start(&api, "b", Duration::from_secs(2));
    let d = agent(&bed, &api).await;
    for image in [&h.one, &h.two, &h.other] {
        wait_pinned_by_us(&bed.node, image).await;
    }
    complete_again(&d).await;

    a.stop().await;
    wait_until(SOON, "b leads", || async { b.metrics.leader.get() == 1 }).await;
    stays_pinned(&bed, &[&h.one, &h.two, &h.other], "the leadership moved").await;
    let (three, _, _) = bed.push_small(934, "fleet/ioc:3");
    apply(
        &api,
        history::controller_revision("bl45p", "ioc-0", 3, &[&three]),
    );
    wait_pinned_by_us(&bed.node, &three).await;

    assert!(api.delete("ControllerRevision", "bl45p", &h.one_cr));
    unpinned(&bed, &h.one).await;
    assert!(pinned(&bed, &h.two).await);
    d.stop().await;
    b.stop().await;
}

/// In fleet mode the agent lists and watches no Secret, ConfigMap, ReplicaSet or
/// ControllerRevision: with all of them refused (403) it lists, pins what the inventory says and
/// what the Pods on its node run (not those on another node), and its sources are the inventory,
/// the Pods and its Node only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_agent_needs_no_list_or_watch_of_secrets_or_history() {
    let mut bed = Bed::start().await;
    let api = api_with_crd().await;
    let h = write_history(&mut bed, &api, 941);
    let indexer = Indexer::start(&api, "a", Duration::from_secs(30));
    wait_until(SOON, "the inventory published", || async {
        api.get(shard::KIND, INV_NS, shard::CATALOG_NAME).is_some()
    })
    .await;
    indexer.stop().await;
    for plural in [
        "secrets",
        "configmaps",
        "replicasets",
        "controllerrevisions",
    ] {
        api.set_resource_fault(plural, Some(Fault::Status(403)));
    }
    // Pods of this node are its own to watch; a pod on another node is not its business.
    let (here, _, _) = bed.push_small(945, "fleet/bare:1");
    api.apply(history::node("n1", json!({}))).expect("node");
    let on = |node: &str, image: &str| json!({"nodeName": node, "containers": history::containers(&[image], None)});
    api.apply(history::pod("bl48p", "here", on("n1", &here)))
        .expect("pod");
    api.apply(history::pod(
        "bl48p",
        "there",
        on("n2", "reg.example/there:1"),
    ))
    .expect("pod");
    let d = agent_on(&bed, &api, Some("n1")).await;
    for image in [&h.one, &h.two, &h.other, &here] {
        wait_pinned_by_us(&bed.node, image).await;
    }
    let s = d.status().await;
    assert!(!s.to_string().contains("reg.example/there"), "{s:#}");
    let names: BTreeMap<String, Value> = s["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["source"].as_str().unwrap().to_owned(), x.clone()))
        .collect();
    assert_eq!(names.len(), 3, "{names:#?}");
    assert!(names.contains_key("node"), "{names:#?}");
    assert!(
        names.keys().any(|n| n.starts_with("inventory")),
        "{names:#?}"
    );
    assert!(names.keys().any(|n| n.starts_with("pod")), "{names:#?}");
    d.stop().await;
}

/// `rollcache plan` prints the same plan from the inventory as from the cluster's own history
/// (ReplicaSets, ControllerRevisions and a Helm release), once the indexer has published it;
/// `rollcache check-rollback` gives the same answer from both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_from_the_inventory_is_the_plan_from_the_cluster() {
    let api = api_with_crd().await;
    for rev in 1..=3 {
        let image = format!("ghcr.io/epics-containers/ioc:{rev}.0");
        api.apply(history::controller_revision("bl45p", "ioc", rev, &[&image]))
            .expect("apply");
    }
    api.apply(history::replicaset("bl46p", "web", 1, &["r/web:1"], 0))
        .expect("apply");
    api.apply(history::replicaset("bl46p", "web", 2, &["r/web:2"], 1))
        .expect("apply");
    api.apply(history::helm::deployment_release(
        "bl47p", "shop", 1, "r/shop:1",
    ))
    .expect("apply");
    let indexer = Indexer::start(&api, "a", Duration::from_secs(30));
    wait_until(SOON, "the inventory published", || async {
        api.get(shard::KIND, INV_NS, shard::CATALOG_NAME).is_some()
    })
    .await;
    let cluster = common::cli::rollcache(&api, &["plan", "-o", "json"]).await;
    let inventory = common::cli::rollcache(
        &api,
        &[
            "plan",
            "-o",
            "json",
            "--history-from",
            "inventory",
            "--inventory-namespace",
            INV_NS,
        ],
    )
    .await;
    let (a, b) = (
        common::cli::json_of(&cluster),
        common::cli::json_of(&inventory),
    );
    assert!(
        a.to_string().contains("r/shop:1") && a.to_string().contains("ioc:3.0"),
        "{a:#}"
    );
    assert_eq!(a, b, "{}", common::cli::text(&inventory.stderr));

    // check-rollback finds the same target, from the same revisions, in both.
    let check = |from: &'static str| {
        let api = &api;
        async move {
            let out = common::cli::rollcache(
                api,
                &[
                    "check-rollback",
                    "sts/ioc",
                    "-n",
                    "bl45p",
                    "-o",
                    "json",
                    "--history-from",
                    from,
                    "--inventory-namespace",
                    INV_NS,
                ],
            )
            .await;
            (
                common::cli::code(&out),
                common::cli::json_of(&out),
                common::cli::text(&out.stderr),
            )
        }
    };
    let (cluster, inventory) = (check("cluster").await, check("inventory").await);
    assert_eq!(cluster.1["revision"], 2, "{:#}", cluster.1);
    assert_eq!(
        (cluster.0, &cluster.1),
        (inventory.0, &inventory.1),
        "{}",
        inventory.2
    );
    indexer.stop().await;
}

/// The agent's `namespaces` in fleet mode: an agent taking bl45p and bl49p pins their images,
/// from the inventory and from the Pods on its node in them, and nothing of bl46p, which the
/// indexer publishes too. The indexer restarted with `--namespaces bl45p,bl46p` no longer indexes
/// bl49p: the view is incomplete, naming it, and nothing is unpinned, neither bl49p's image nor a
/// bl45p revision pruned meanwhile. The control: once the indexer indexes bl49p again, the pruned
/// revision is unpinned and bl49p's image stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_agent_takes_its_namespaces_and_one_not_indexed_unpins_nothing() {
    let mut bed = Bed::start().await;
    let api = api_with_crd().await;
    let h = write_history(&mut bed, &api, 951);
    let (beam, _, _) = bed.push_small(954, "fleet/beam:1");
    apply(
        &api,
        history::controller_revision("bl49p", "ioc", 1, &[&beam]),
    );
    let (here, _, _) = bed.push_small(955, "fleet/bare:1");
    let (elsewhere, _, _) = bed.push_small(956, "fleet/bare:2");
    api.apply(history::node("n1", json!({}))).expect("node");
    let on_n1 =
        |image: &str| json!({"nodeName": "n1", "containers": history::containers(&[image], None)});
    api.apply(history::pod("bl45p", "here", on_n1(&here)))
        .expect("pod");
    api.apply(history::pod("bl46p", "elsewhere", on_n1(&elsewhere)))
        .expect("pod");
    let resync = Duration::from_secs(2);
    let indexer = Indexer::start(&api, "a", resync);
    let d = agent_taking(&bed, &api, Some("n1"), Some("[bl45p, bl49p]")).await;
    for image in [&h.one, &h.two, &beam, &here] {
        wait_pinned_by_us(&bed.node, image).await;
    }
    complete_again(&d).await;
    for image in [&h.other, &elsewhere] {
        assert!(
            cri_image(&bed.node, image).await.is_none(),
            "{image}: bl46p is not this agent's"
        );
    }

    indexer.stop().await;
    let scoped = Indexer::start_scoped(&api, "a", resync, &["bl45p", "bl46p"]);
    incomplete_because(
        &d,
        "the indexer does not index namespace bl49p (it indexes bl45p, bl46p)",
    )
    .await;
    assert!(api.delete("ControllerRevision", "bl45p", &h.one_cr));
    stays_pinned(
        &bed,
        &[&h.one, &h.two, &beam, &here],
        "a namespace not indexed is unknown, not without history",
    )
    .await;

    scoped.stop().await;
    let indexer = Indexer::start_scoped(&api, "a", resync, &["bl45p", "bl46p", "bl49p"]);
    unpinned(&bed, &h.one).await;
    complete_again(&d).await;
    assert!(pinned(&bed, &beam).await && pinned(&bed, &h.two).await);
    d.stop().await;
    indexer.stop().await;
}

/// The one-shot commands apply the agent's rule: `plan --namespaces bl45p` from the inventory is
/// the plan from the cluster for that namespace (bl46p's history, published too, left out);
/// `check-rollback` in a namespace the indexer does not index gives no answer (exit 2) and says
/// why, where the cluster's own history answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_commands_take_their_namespaces_and_say_what_is_not_indexed() {
    let api = api_with_crd().await;
    for (ns, rev) in [("bl45p", 1), ("bl45p", 2), ("bl46p", 1), ("bl46p", 2)] {
        let image = format!("ghcr.io/epics-containers/{ns}:{rev}.0");
        api.apply(history::controller_revision(ns, "ioc", rev, &[&image]))
            .expect("apply");
    }
    let all = Indexer::start(&api, "a", Duration::from_secs(30));
    wait_until(SOON, "the inventory published", || async {
        api.get(shard::KIND, INV_NS, shard::CATALOG_NAME).is_some()
    })
    .await;
    let plan = |from: &'static str| {
        let api = &api;
        async move {
            let args = [
                "plan",
                "-o",
                "json",
                "--namespaces",
                "bl45p",
                "--history-from",
                from,
                "--inventory-namespace",
                INV_NS,
            ];
            common::cli::json_of(&common::cli::rollcache(api, &args).await)
        }
    };
    let (cluster, inventory) = (plan("cluster").await, plan("inventory").await);
    assert!(cluster.to_string().contains("bl45p:2.0"), "{cluster:#}");
    assert!(!inventory.to_string().contains("bl46p"), "{inventory:#}");
    assert_eq!(cluster, inventory);
    all.stop().await;

    let scoped = Indexer::start_scoped(&api, "a", Duration::from_secs(30), &["bl45p"]);
    wait_until(SOON, "the catalog names its scope", || async {
        api.get(shard::KIND, INV_NS, shard::CATALOG_NAME)
            .is_some_and(|c| c["catalog"]["scope"] == json!(["bl45p"]))
    })
    .await;
    let check = |from: &'static str| {
        let api = &api;
        async move {
            let args = [
                "check-rollback",
                "sts/ioc",
                "-n",
                "bl46p",
                "-o",
                "json",
                "--history-from",
                from,
                "--inventory-namespace",
                INV_NS,
            ];
            let out = common::cli::rollcache(api, &args).await;
            (common::cli::code(&out), common::cli::text(&out.stderr))
        }
    };
    let (code, stderr) = check("inventory").await;
    assert_eq!(code, 2, "{stderr}");
    // The answer itself says why, not only the log before it.
    let error = stderr.lines().find(|l| l.starts_with("error: "));
    assert!(
        error.is_some_and(|e| e.contains("not found")
            && e.contains("the indexer does not index namespace bl46p (it indexes bl45p)")),
        "{stderr}"
    );
    let (code, stderr) = check("cluster").await;
    assert_ne!(code, 2, "the cluster's own history answers: {stderr}");
    scoped.stop().await;
}

//! Safety rule 8 end to end, on a real containerd and registry: last good facts win. A history
//! object whose new version cannot be decoded or read (a truncated file, an undecodable Helm
//! release Secret), a directory source whose root is removed, and ControllerRevisions orphaned by
//! `kubectl delete sts --cascade=orphan` keep their images pinned over many grace periods; each
//! with its control: the object really deleted IS unpinned after the grace period.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::*;
use common::*;
use rollcache_testbed::history::*;
use serde_json::{Value, json};

const NS: &str = "apps";
const SOON: Duration = Duration::from_secs(15);
const GRACE: Duration = Duration::from_secs(1);
/// How long a pin must outlive the break: several grace periods.
const HOLD: Duration = Duration::from_secs(4);

/// `rollcache run --from DIR` (no Kubernetes) on the bed's containerd, grace period 1 s.
async fn dir_daemon(bed: &Bed, dir: &Path) -> TestDaemon {
    let mut s = base_settings(bed.containerd.socket().as_path(), None);
    s.insert("unpin_grace".into(), "1s".into());
    s.insert("kubernetes".into(), "false".into());
    s.insert("from_dir".into(), format!("\"{}\"", dir.display()));
    TestDaemon::start_without_api(s).await
}

/// Every object with an unresolved decode problem in `/status`, over all sources.
fn unresolved(s: &Value) -> Vec<Value> {
    s["sources"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|src| src["unresolved"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn deployment_json(name: &str, image: &str) -> String {
    serde_json::to_string_pretty(&json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": image, "imagePullPolicy": "IfNotPresent"}
        ]}}},
    }))
    .unwrap()
}

async fn pinned(bed: &Bed, reference: &str) -> bool {
    pinned_by_us(&bed.node, reference).await
}

/// Still pinned by rollcache after `HOLD`, checked along the way.
async fn stays_pinned(bed: &Bed, references: &[&str], why: &str) {
    common::daemon::stays_pinned(&bed.node, references, HOLD, why).await;
}

/// Unpinned (never deleted) within `SOON`, but not before the grace period: returns how long.
async fn unpinned_after_grace(bed: &Bed, reference: &str, since: Instant) -> Duration {
    unpinned_not_deleted(&bed.node, reference, SOON).await;
    let took = since.elapsed();
    assert!(took >= GRACE, "unpinned after {took:?}, before the grace");
    took
}

/// (a) A file truncated mid-write keeps its images pinned and `/status` names the problem; the
/// control: the file deleted is unpinned after the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_file_keeps_its_pins_and_a_deleted_one_is_unpinned() {
    let mut bed = Bed::start().await;
    let (a, _, _) = bed.push_small(801, "lastgood/a:1");
    let (b, _, _) = bed.push_small(802, "lastgood/b:1");
    let dir = tempfile::tempdir().unwrap();
    let file_a = dir.path().join("a.json");
    let text_a = deployment_json("a", &a);
    std::fs::write(&file_a, &text_a).unwrap();
    std::fs::write(dir.path().join("b.json"), deployment_json("b", &b)).unwrap();
    let d = dir_daemon(&bed, dir.path()).await;
    wait_pinned_by_us(&bed.node, &a).await;
    wait_pinned_by_us(&bed.node, &b).await;

    std::fs::write(&file_a, &text_a[..text_a.len() / 2]).unwrap();
    let s = d
        .wait_status(SOON, "the truncated file is reported", |s| {
            !unresolved(s).is_empty()
        })
        .await;
    let u = &unresolved(&s)[0];
    assert_eq!(u["object"], "Deployment apps/a", "{u:#}");
    assert_eq!(u["ever_good"], true);
    assert!(
        u["problems"][0].as_str().unwrap().contains("a.json"),
        "{u:#}"
    );
    let m = d.metrics().await;
    assert_eq!(
        metric(&m, "rollcache_history_unresolved_objects{source=\"file\"}"),
        Some(1.0),
        "{m}"
    );
    stays_pinned(&bed, &[&a, &b], "a truncated file is not a deletion").await;

    // Control: the file really deleted.
    std::fs::remove_file(&file_a).unwrap();
    let deleted = Instant::now();
    let took = unpinned_after_grace(&bed, &a, deleted).await;
    eprintln!("deleted file's image unpinned after {took:?}");
    assert!(unresolved(&d.status().await).is_empty());
    assert!(pinned(&bed, &b).await, "the other file's image stays");
    d.stop().await;
}

fn files_source_error(s: &Value) -> Option<String> {
    s["sources"]
        .as_array()?
        .iter()
        .find(|x| x["source"].as_str().is_some_and(|n| n.starts_with("file")))?["error"]
        .as_str()
        .map(str::to_string)
}

/// (c) The directory root removed: the source is in error and nothing is unpinned however long
/// it stays away; recreated (as a deploy tool swaps a directory in), its new content is picked up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_root_unpins_nothing_and_its_new_content_is_picked_up() {
    let mut bed = Bed::start().await;
    let (a, _, _) = bed.push_small(811, "lastgood/root-a:1");
    let (b, _, _) = bed.push_small(812, "lastgood/root-b:1");
    let top = tempfile::tempdir().unwrap();
    let root = top.path().join("history");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("a.json"), deployment_json("a", &a)).unwrap();
    let d = dir_daemon(&bed, &root).await;
    wait_pinned_by_us(&bed.node, &a).await;

    std::fs::remove_dir_all(&root).unwrap();
    let s = d
        .wait_status(SOON, "the source reports its missing root", |s| {
            files_source_error(s).is_some()
        })
        .await;
    assert!(files_source_error(&s).unwrap().contains("missing"), "{s:#}");
    stays_pinned(&bed, &[&a], "a missing root is not an empty history").await;

    let staging = top.path().join("staging");
    std::fs::create_dir(&staging).unwrap();
    std::fs::write(staging.join("a.json"), deployment_json("a", &a)).unwrap();
    std::fs::write(staging.join("b.json"), deployment_json("b", &b)).unwrap();
    std::fs::rename(&staging, &root).unwrap();
    wait_pinned_by_us(&bed.node, &b).await;
    d.wait_status(SOON, "the source is fine again", |s| {
        files_source_error(s).is_none() && sources_fresh(s)
    })
    .await;
    assert!(pinned(&bed, &a).await);

    // Control: the recreated root is watched: a file removed from it is unpinned.
    std::fs::remove_file(root.join("b.json")).unwrap();
    let removed = Instant::now();
    unpinned_after_grace(&bed, &b, removed).await;
    assert!(pinned(&bed, &a).await);
    d.stop().await;
}

fn fast_settings(bed: &Bed) -> std::collections::BTreeMap<String, String> {
    let mut s = base_settings(bed.containerd.socket().as_path(), None);
    s.insert("unpin_grace".into(), "1s".into());
    s
}

/// (b) A Helm release Secret updated (watch path) to a payload that cannot be decoded keeps the
/// release's images pinned, and `/status` names it; the control: the Secret deleted is unpinned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_helm_release_keeps_its_pins_and_a_deleted_one_is_unpinned() {
    let mut bed = Bed::start().await;
    let api = api().await;
    let (image, _, _) = bed.push_small(821, "lastgood/helm:1");
    let release = helm::deployment_release(NS, "shop", 1, &image);
    let name = release["metadata"]["name"].as_str().unwrap().to_string();
    api.apply(release.clone()).expect("apply");
    let d = TestDaemon::start(&api, fast_settings(&bed)).await;
    wait_pinned_by_us(&bed.node, &image).await;

    let mut broken = release;
    broken["data"]["release"] = json!(b64(b"this is not a helm release"));
    api.apply(broken).expect("update");
    let s = d
        .wait_status(SOON, "the undecodable release is reported", |s| {
            !unresolved(s).is_empty()
        })
        .await;
    let u = &unresolved(&s)[0];
    assert_eq!(u["object"], format!("Secret {NS}/{name}"), "{u:#}");
    assert_eq!(u["kept_facts"], 1);
    stays_pinned(&bed, &[&image], "an undecodable release is not a deletion").await;
    let s = d.status().await;
    let shop = s["workloads"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|w| w["name"] == "shop" && w["namespace"] == NS);
    assert!(
        shop.is_some_and(|w| w["revisions"][0]["helm_revision"] == 1),
        "the last good revision is still reported: {s:#}"
    );

    assert!(api.delete("Secret", NS, &name));
    let deleted = Instant::now();
    unpinned_after_grace(&bed, &image, deleted).await;
    assert!(unresolved(&d.status().await).is_empty());
    d.stop().await;
}

/// (d) `kubectl delete sts db --cascade=orphan`: the garbage collector removes the owner
/// references of its ControllerRevisions, which stay; their images stay pinned. The control: a
/// ControllerRevision deleted is unpinned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphaned_controller_revisions_keep_their_pins_and_deleted_ones_are_unpinned() {
    let mut bed = Bed::start().await;
    let api = api().await;
    let (one, _, _) = bed.push_small(831, "lastgood/db:1");
    let (two, _, _) = bed.push_small(832, "lastgood/db:2");
    // As the StatefulSet controller names and labels them: `<sts>-<hash>`.
    let revision = |n: i64, image: &str, hash: &str| {
        let template = json!({
            "metadata": {"labels": {"app": "db"}},
            "spec": {"containers": containers(&[image], None)},
        });
        ControllerRevision {
            hash: Some(hash.into()),
            ..ControllerRevision::new(NS, Owner::new("StatefulSet", "db"), n, template)
        }
        .build()
    };
    let crs = [
        revision(1, &one, "6b9f7c4d5"),
        revision(2, &two, "58c7d9f6b"),
    ];
    for cr in &crs {
        api.apply(cr.clone()).expect("apply");
    }
    let d = TestDaemon::start(&api, fast_settings(&bed)).await;
    wait_pinned_by_us(&bed.node, &one).await;
    wait_pinned_by_us(&bed.node, &two).await;

    for cr in &crs {
        let mut orphan = cr.clone();
        orphan["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("ownerReferences");
        api.apply(orphan).expect("orphan");
    }
    stays_pinned(&bed, &[&one, &two], "orphaned revisions are still history").await;
    let s = d.status().await;
    assert!(
        revision_of(&s, 1).is_some() && revision_of(&s, 2).is_some(),
        "{s:#}"
    );

    assert!(api.delete("ControllerRevision", NS, "db-6b9f7c4d5"));
    let deleted = Instant::now();
    unpinned_after_grace(&bed, &one, deleted).await;
    assert!(pinned(&bed, &two).await, "the other orphan stays");
    d.stop().await;
}

fn revision_of(s: &Value, n: i64) -> Option<&Value> {
    revision(s, "StatefulSet", NS, "db", n)
}

/// An object that never decoded since start (here: a release Secret already broken when the
/// daemon starts, as after a restart) may need any image: while it exists nothing is unpinned,
/// not even a revision really pruned; the control: once it is deleted, the pruned revision is
/// unpinned after the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_that_never_decoded_holds_every_unpin_until_it_goes() {
    let mut bed = Bed::start().await;
    let api = api().await;
    let (old, _, _) = bed.push_small(841, "lastgood/never:1");
    let (new, _, _) = bed.push_small(842, "lastgood/never:2");
    api.apply(replicaset(NS, "web", 1, &[&old], 0))
        .expect("apply");
    api.apply(replicaset(NS, "web", 2, &[&new], 1))
        .expect("apply");
    let mut broken = helm::deployment_release(NS, "legacy", 3, "reg.example/unknown:1");
    let name = broken["metadata"]["name"].as_str().unwrap().to_string();
    broken["data"]["release"] = json!(b64(b"H4sI truncated"));
    api.apply(broken).expect("apply");
    let d = TestDaemon::start(&api, fast_settings(&bed)).await;
    wait_pinned_by_us(&bed.node, &old).await;
    wait_pinned_by_us(&bed.node, &new).await;
    let s = d
        .wait_status(SOON, "the broken release is reported", |s| {
            !unresolved(s).is_empty()
        })
        .await;
    assert_eq!(unresolved(&s)[0]["ever_good"], false, "{s:#}");

    assert!(api.delete("ReplicaSet", NS, "web-1"));
    d.wait_status(SOON, "revision 1 gone from the report", |s| {
        revision(s, "Deployment", NS, "web", 1).is_none()
    })
    .await;
    stays_pinned(
        &bed,
        &[&old, &new],
        "what the broken release needs is unknown",
    )
    .await;

    assert!(api.delete("Secret", NS, &name));
    let deleted = Instant::now();
    unpinned_after_grace(&bed, &old, deleted).await;
    assert!(pinned(&bed, &new).await);
    d.stop().await;
}

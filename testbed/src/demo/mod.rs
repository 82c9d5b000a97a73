//! The demo (`rollcache-demo`, `make demo`): the whole job on a private test bed, no cluster
//! needed. A private containerd and registry, a few images pushed, a directory holding a realistic history, the daemon holding
//! what this node needs, the readiness report — then the registry goes away and the node shows
//! which rollbacks still work.

pub mod history;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::containerd::Containerd;
use crate::deps::ContainerdVersion;
use crate::oci::{ImageSpec, LayerSpec, OciLayout, Platform};
use crate::registry::Registry;
use rollcache::config::ConfigArgs;
use rollcache::node::{Deadlines, Node};
use rollcache::report::Readiness;
use rollcache::status::{Status, render_table};

const MIB: u64 = 1024 * 1024;

#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub containerd: ContainerdVersion,
    /// Size of the shared base layer (smaller for a quick run).
    pub base_mib: u64,
    /// Keep the history directory here instead of a temp dir (to look at it afterwards).
    pub keep_history: Option<PathBuf>,
    /// Give up waiting for the node to be ready after this long.
    pub timeout: Duration,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            containerd: ContainerdVersion::V1_7,
            base_mib: 16,
            keep_history: None,
            timeout: Duration::from_secs(180),
        }
    }
}

/// What the demo showed, for tests.
#[derive(Debug, Default)]
pub struct DemoOutcome {
    /// Revisions wanted on the node, by readiness, before the registry went away.
    pub before: Status,
    /// Images the kubelet would start from the cache with the registry gone.
    pub started_offline: Vec<String>,
    /// Images the kubelet would fail on with the registry gone (pull policy Always).
    pub failed_offline: Vec<(String, String)>,
}

fn step(n: u32, text: &str) {
    println!("\n[{n}/6] {text}");
}

pub async fn run(opts: DemoOptions) -> anyhow::Result<DemoOutcome> {
    let started = Instant::now();
    step(
        1,
        &format!(
            "starting a private containerd {} and an OCI registry (nothing touches the system containerd)",
            opts.containerd
        ),
    );
    let containerd = Containerd::start(opts.containerd).await?;
    let mut registry = Registry::start(None).await?;
    registry.write_hosts_toml(&containerd.hosts_dir())?;
    let reg = registry.addr();
    println!("      containerd socket {}", containerd.socket().display());
    println!("      registry          http://{reg}");

    step(
        2,
        "building and pushing images: 3 IOC releases, a hook tool, 3 archiver releases, a dashboard",
    );
    let images = history::Images::new(&reg);
    let work = crate::temp_dir("rollcache-demo-")?;
    let mut layout = OciLayout::create(&work.path().join("oci"))?;
    let base = LayerSpec::new(1, opts.base_mib * MIB, 50);
    let all: Vec<&String> = images
        .ioc
        .iter()
        .chain([&images.ioc_tools])
        .chain(images.archiver.iter())
        .chain([&images.dashboard])
        .collect();
    for (i, image) in all.iter().enumerate() {
        let spec = ImageSpec {
            platform: Platform::linux_amd64(),
            layers: vec![base, LayerSpec::new(100 + i as u64, 2 * MIB, 50)],
            label: image.to_string(),
        };
        let built = layout.image(&spec)?;
        let name = image.strip_prefix(&format!("{reg}/")).unwrap_or(image);
        layout.tag_and_push(&built.manifest, &reg, name, None)?;
        println!("      pushed {image}");
    }

    let history_dir = match &opts.keep_history {
        Some(d) => d.clone(),
        None => work.path().join("history"),
    };
    step(
        3,
        &format!(
            "writing the cluster's history to {} (as `kubectl get -o json` exports it)",
            history_dir.display()
        ),
    );
    history::write(&history_dir, &images)?;
    println!(
        "      Helm release secrets sh.helm.release.v1.{}.v1..v3 (StatefulSet, nodeSelector beamline={}, pre-upgrade hook Job)",
        history::IOC,
        history::NAMESPACE
    );
    println!(
        "      ControllerRevisions 1..3 of StatefulSet {}",
        history::IOC
    );
    println!(
        "      ReplicaSets of Deployment {} (revisions 1..3) and {} (imagePullPolicy: Always)",
        history::ARCHIVER,
        history::DASHBOARD
    );
    println!(
        "      Node {} (labels beamline={})",
        history::NODE,
        history::NAMESPACE
    );

    step(
        4,
        "running the rollcache daemon on that history (directory source, no cluster)",
    );
    let metrics_addr = free_addr()?;
    let admin_addr = free_addr()?;
    let args = ConfigArgs {
        node_name: Some(history::NODE.into()),
        containerd_socket: Some(containerd.socket()),
        from_dir: Some(history_dir.clone()),
        no_kubernetes: true,
        start_jitter: Some("0s".into()),
        // The demo's containerd shares this machine's disk, whatever else fills it; the disk
        // guard has its own tests.
        disk_budget_percent: Some(100),
        metrics_addr: Some(metrics_addr.to_string()),
        admin_addr: Some(admin_addr.to_string()),
        ..ConfigArgs::default()
    };
    let cancel = CancellationToken::new();
    let daemon = tokio::spawn(rollcache::commands::run::run_until(args, cancel.clone()));
    let result = async {
        let before = wait_ready(admin_addr, opts.timeout).await?;
        println!();
        print!("{}", render_table(&before));
        println!("\n      a few metrics from http://{metrics_addr}/metrics:");
        let metrics = get(metrics_addr, "/metrics").await?;
        for line in metrics.lines().filter(|l| {
            l.starts_with("rollcache_images_")
                || l.starts_with("rollcache_revisions{")
                || l.starts_with("rollcache_runtime_can_pin")
        }) {
            println!("      {line}");
        }

        step(5, "the registry goes away: what would the kubelet do for each revision held here?");
        registry.stop();
        let node = Node::connect(containerd.socket(), Deadlines { call: Duration::from_secs(10), pull: Duration::from_secs(20) });
        let mut outcome = DemoOutcome { before, ..Default::default() };
        for w in &outcome.before.report.workloads {
            for r in w.revisions.iter().filter(|r| r.readiness.is_some()) {
                for img in &r.images {
                    let rev = r.revision.map(|n| format!("rev {n}")).unwrap_or_else(|| "current".into());
                    let label = format!("{}/{} {rev}", w.kind, w.name);
                    if img.pull_policy == "Always" {
                        // The kubelet asks the registry first (CRI PullImage) even with the image cached.
                        match node.cri().pull(&img.reference, None).await {
                            Ok(_) => outcome.started_offline.push(img.reference.clone()),
                            Err(e) => {
                                println!("      FAILS  {label:<36} {} — imagePullPolicy Always: the kubelet pulls before every start, and the registry is gone ({})", img.reference, e.metric_label());
                                outcome.failed_offline.push((img.reference.clone(), e.to_string()));
                            }
                        }
                    } else {
                        match node.cri().status(&img.reference).await? {
                            Some(info) if info.pinned => {
                                println!("      starts {label:<36} {} from the node's cache (pinned, {})", img.reference, info.digest().unwrap_or("-"));
                                outcome.started_offline.push(img.reference.clone());
                            }
                            other => {
                                println!("      FAILS  {label:<36} {} — not cached (or not pinned): {other:?}", img.reference);
                                outcome.failed_offline.push((img.reference.clone(), "not cached".into()));
                            }
                        }
                    }
                }
            }
        }
        let safe = outcome.before.report.summary.get(&Readiness::OfflineSafe).copied().unwrap_or(0);
        let total: usize = outcome.before.report.summary.values().sum();
        println!(
            "\n      {safe} of {total} revisions held on {} roll back with the registry unreachable.",
            history::NODE
        );
        println!("      The exception is {}: `imagePullPolicy: Always` (also the default for `:latest`) makes the", history::DASHBOARD);
        println!("      kubelet contact the registry before every start, cached or not. rollcache reports it as");
        println!("      `needs_registry`; pin a tag or digest with IfNotPresent to make it offline-safe.");
        anyhow::Ok(outcome)
    }
    .await;

    step(
        6,
        "cleaning up: stopping the daemon, containerd and the registry, removing temp files",
    );
    cancel.cancel();
    daemon.await.context("daemon task")??;
    drop(containerd);
    drop(registry);
    println!("      done in {:.0} s", started.elapsed().as_secs_f64());
    result
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(SocketAddr::from(([127, 0, 0, 1], crate::free_port()?)))
}

async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    Ok(rollcache::client::request(
        addr,
        hyper::Method::GET,
        path,
        None,
        "status",
        Duration::from_secs(10),
    )
    .await?)
}

/// Poll `/status` until every revision held here has all its images present and pinned, printing
/// progress as it changes.
async fn wait_ready(admin: SocketAddr, timeout: Duration) -> anyhow::Result<Status> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        if let Ok(body) = get(admin, "/status").await
            && let Ok(s) = serde_json::from_str::<Status>(&body)
        {
            let line = format!(
                "      images present {}/{}, pinned {}",
                s.images_present, s.images_desired, s.images_pinned
            );
            if line != last {
                println!("{line}");
                last = line;
            }
            let busy = [
                Readiness::Pulling,
                Readiness::Missing,
                Readiness::Failed,
                Readiness::DiskBudget,
            ]
            .iter()
            .any(|r| s.report.summary.contains_key(r));
            if s.images_desired > 0 && s.images_pinned == s.images_desired && !busy {
                return Ok(s);
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the node did not become ready within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

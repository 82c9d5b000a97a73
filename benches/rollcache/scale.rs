//! Scale: a large history served by the in-test or a real API server. Time from lists complete to the first
//! full plan (in-process), the real `rollcache run` binary's resident memory and idle CPU (as a
//! child process, so the benchmark's own memory does not count), and start-up with every image
//! already present.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rollcache::inventory::Inventory;
use rollcache::model::NodeFacts;
use rollcache::node::Node;
use rollcache::plan::PlanConfig;
use serde_json::Value;

use crate::api::{History, Traffic};
use crate::bed::{self, RunningDaemon, Timed};

/// What one in-process plan run saw.
pub struct PlanRun {
    /// Watchers started → every source listed.
    pub lists: Duration,
    /// Lists complete → inventory and plan built from the snapshot.
    pub plan: Duration,
    /// Lists complete → the daemon published a status from the complete view (runtime listed,
    /// plan, decision, report).
    pub daemon_pass: Duration,
    pub revisions: usize,
    pub images: usize,
}

/// Starts the daemon (on the real runtime at `node`) on history `h`, waits for the lists, then
/// times the plan directly and the daemon's first pass on the complete view.
pub async fn plan_run(h: &History, node: &Node, socket: &Path) -> anyhow::Result<PlanRun> {
    let timed = Arc::new(Timed::new(node.clone()));
    let mut daemon = RunningDaemon::start(&h.client()?, timed.clone(), h.config(socket));
    let lists = daemon.wait_synced(Duration::from_secs(600)).await?;
    let synced_at = Instant::now();
    let snap = daemon.store.snapshot();
    let (inventory, _) = Inventory::build(snap.facts());
    let plan = rollcache::plan::plan(
        &inventory,
        &NodeFacts::default(),
        &PlanConfig::default(),
        &HashMap::new(),
    );
    let plan_took = synced_at.elapsed();
    let (revisions, images) = (inventory.revision_count(), plan.images.len());
    drop((snap, inventory, plan));
    let pass = loop {
        let done = {
            let s: serde_json::Value =
                serde_json::from_slice(&daemon.status.borrow_and_update().json())
                    .unwrap_or_default();
            complete_status(&s).is_some_and(|(desired, _)| desired == images)
        };
        if done {
            break synced_at.elapsed();
        }
        tokio::time::timeout(Duration::from_secs(600), daemon.status.changed())
            .await
            .context("no status from the complete view within 600 s")??;
    };
    daemon.stop().await;
    Ok(PlanRun {
        lists,
        plan: plan_took,
        daemon_pass: pass,
        revisions,
        images,
    })
}

/// `(images_desired, images_present)` when `status` comes from a complete view (every source
/// synced), else None.
pub fn complete_status(status: &Value) -> Option<(usize, usize)> {
    let sources = status.get("sources")?.as_array()?;
    if sources.is_empty() || !sources.iter().all(|s| s["synced"] == Value::Bool(true)) {
        return None;
    }
    Some((
        status.get("images_desired")?.as_u64()? as usize,
        status.get("images_present")?.as_u64()? as usize,
    ))
}

/// What a start-up with every image present did.
pub struct Startup {
    /// Daemon start → a status from the complete view with every desired image present.
    pub decided: Duration,
    /// Of which: sources listing.
    pub lists: Duration,
    pub list_calls: u64,
    pub pulls: u64,
    pub pins: u64,
    pub images: usize,
}

pub async fn startup(h: &History, node: &Node, socket: &Path) -> anyhow::Result<Startup> {
    let timed = Arc::new(Timed::new(node.clone()));
    let start = Instant::now();
    let mut daemon = RunningDaemon::start(&h.client()?, timed.clone(), h.config(socket));
    let mut lists = None;
    let (decided, images) = loop {
        let found = {
            let s: serde_json::Value =
                serde_json::from_slice(&daemon.status.borrow_and_update().json())
                    .unwrap_or_default();
            complete_status(&s).filter(|(d, p)| d == p && *d > 0)
        };
        if let Some((desired, _)) = found {
            break (start.elapsed(), desired);
        }
        if lists.is_none() && daemon.store.snapshot().all_sources_fresh() {
            lists = Some(start.elapsed());
        }
        tokio::select! {
            r = daemon.status.changed() => r?,
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(300),
            "start-up did not decide within 300 s"
        );
    };
    let out = Startup {
        decided,
        lists: lists.unwrap_or(decided),
        list_calls: timed.lists.load(std::sync::atomic::Ordering::SeqCst),
        pulls: timed.pulls.load(std::sync::atomic::Ordering::SeqCst),
        pins: timed.pins.load(std::sync::atomic::Ordering::SeqCst),
        images,
    };
    daemon.stop().await;
    Ok(out)
}

/// The real `rollcache run` as a child process.
pub struct ChildRun {
    /// Start → every desired image pinned (or, with nothing desired, ready).
    pub settled: Duration,
    pub rss: u64,
    pub peak_rss: u64,
    /// CPU time over the idle window, as a share of one core.
    pub idle_cpu_percent: f64,
    pub desired: u64,
    /// What the child received from the API server (None: not measurable there).
    pub traffic: Option<Traffic>,
}

const IDLE_WINDOW: Duration = Duration::from_secs(10);

/// Runs `rollcache run` on history `h` and containerd at `socket` until settled, then measures
/// memory and CPU over an idle window. `expect_desired` images must end up pinned.
pub async fn child(
    h: &History,
    socket: &Path,
    work: &Path,
    expect_desired: usize,
    env: &[(&str, &str)],
) -> anyhow::Result<ChildRun> {
    let kubeconfig = h.child_kubeconfig(work)?;
    let namespaces = h.watch_namespaces();
    let metrics_port = free_port()?;
    let admin_port = free_port()?;
    let log = std::fs::File::create(work.join("rollcache-run.log"))?;
    h.reset_traffic();
    let start = Instant::now();
    // BENCH_CHILD_WRAPPER (e.g. `valgrind --tool=massif`) runs the child under a profiler.
    let wrapper = std::env::var("BENCH_CHILD_WRAPPER").unwrap_or_default();
    let mut words = wrapper.split_whitespace();
    let mut cmd = match words.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(words).arg(env!("CARGO_BIN_EXE_rollcache"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_rollcache")),
    };
    let child = cmd
        .arg("run")
        .arg("--socket")
        .arg(socket)
        .args(["--no-pull-secrets", "--start-jitter", "0s"])
        .arg("--metrics-addr")
        .arg(format!("127.0.0.1:{metrics_port}"))
        .arg("--admin-addr")
        .arg(format!("127.0.0.1:{admin_port}"))
        .args(if namespaces.is_empty() {
            vec![]
        } else {
            vec!["--namespaces".to_string(), namespaces.join(",")]
        })
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .env_remove("NODE_NAME")
        .env_remove("ROLLCACHE_CONFIG")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting rollcache run")?;
    let mut guard = ChildGuard(child);
    let pid = guard.0.id();
    let settled = loop {
        anyhow::ensure!(
            guard.0.try_wait()?.is_none(),
            "rollcache run exited early; see {}",
            work.join("rollcache-run.log").display()
        );
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(600),
            "rollcache run did not settle within 600 s"
        );
        if let Ok(ready) = bed::http_get(metrics_port, "/readyz").await
            && ready.trim() == "ready"
            && let Ok(text) = bed::http_get(metrics_port, "/metrics").await
        {
            let desired = metric(&text, "rollcache_images_desired");
            let pinned = metric(&text, "rollcache_images_pinned");
            if desired == Some(expect_desired as f64) && pinned == desired {
                break start.elapsed();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Let allocator and tasks settle after the burst of the first passes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ticks_before = cpu_ticks(pid)?;
    tokio::time::sleep(IDLE_WINDOW).await;
    let ticks_after = cpu_ticks(pid)?;
    let (rss, peak_rss) = rss(pid)?;
    let traffic = h.traffic();
    let text = bed::http_get(metrics_port, "/metrics")
        .await
        .unwrap_or_default();
    let hz = clock_ticks_per_second();
    let idle_cpu_percent =
        (ticks_after - ticks_before) as f64 / hz / IDLE_WINDOW.as_secs_f64() * 100.0;
    Ok(ChildRun {
        settled,
        rss,
        peak_rss,
        idle_cpu_percent,
        desired: metric(&text, "rollcache_images_desired").unwrap_or(0.0) as u64,
        traffic,
    })
}

pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// utime + stime of `pid`, in clock ticks.
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may contain spaces; fields after the closing parenthesis are fixed.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unexpected /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, utime field 14, stime field 15 (1-based in proc(5)).
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}

/// (VmRSS, VmHWM) of `pid`, in bytes.
pub fn rss(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(key))
            .with_context(|| format!("no {key} in /proc/{pid}/status"))?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .context("malformed")?
            .parse::<u64>()?
            * 1024)
    };
    Ok((kib("VmRSS:")?, kib("VmHWM:")?))
}

pub fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

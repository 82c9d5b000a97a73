//! Fleet mode vs today, side by side in one run: bytes from the API server to one agent (at start
//! and over an idle window scaled to an hour), agent and indexer RSS, and reaction latency from a
//! new revision to the pull call reaching the registry, today directly and through `rollcache index`.
//! The agent side of fleet mode plugs in by `rollcache run --history-from inventory`; while the
//! binary does not know that flag, its column says "pending" and nothing is measured for it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use rollcache_testbed::apiserver::{ApiServer, ApiServerOptions};
use rollcache_testbed::deps::ContainerdVersion;
use rollcache_testbed::registry::Registry;
use serde_json::json;

use crate::api::Counter;
use crate::cluster::{Living, node_name};
use crate::fleet_latency;
use crate::scale::{ChildGuard, free_port, metric, rss};
use crate::stats::{Report, Unit};
use crate::{Sizes, bed, history, progress};

/// Where the indexer publishes and fleet agents read.
pub const INVENTORY_NS: &str = "rollcache";

/// An in-test API server serving rollcache's CRDs, with the namespace the indexer publishes in.
pub async fn api_with_inventory_namespace() -> anyhow::Result<ApiServer> {
    api_with_inventory_namespace_and(ApiServerOptions::default()).await
}

/// The same, with `options` (the idle windows use the real server's bookmark pace).
pub async fn api_with_inventory_namespace_and(
    options: ApiServerOptions,
) -> anyhow::Result<ApiServer> {
    let api = ApiServer::start_with(ApiServerOptions {
        rollcache_crd: true,
        ..options
    })
    .await?;
    api.apply(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": INVENTORY_NS}}),
    )?;
    Ok(api)
}

/// How an agent learns its history.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Lists and watches the raw history itself (the default).
    Today,
    /// `--history-from inventory`: reads the indexer's `RollcacheInventory` shards.
    Fleet,
}

/// The `rollcache` binary the fleet figures run: this workspace's, or `BENCH_ROLLCACHE_BIN` (a
/// build of a branch not merged yet, to try fleet mode's agent side before it lands).
pub fn rollcache_bin() -> PathBuf {
    std::env::var_os("BENCH_ROLLCACHE_BIN")
        .filter(|b| !b.is_empty())
        .map_or_else(
            || PathBuf::from(env!("CARGO_BIN_EXE_rollcache")),
            PathBuf::from,
        )
}

/// Whether this `rollcache` binary has the agent side of fleet mode.
pub fn fleet_agent_available() -> bool {
    Command::new(rollcache_bin())
        .args(["run", "--help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("--history-from"))
        .unwrap_or(false)
}

pub const PENDING: &str = "pending (this rollcache run has no --history-from: the agent side of fleet mode is not merged)";

/// A kubeconfig for a plain-HTTP server at `url`.
pub fn write_kubeconfig(path: &Path, url: &str) -> anyhow::Result<PathBuf> {
    std::fs::write(
        path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: bench\n  cluster:\n    server: {url}\nusers:\n- name: bench\n  user: {{}}\ncontexts:\n- name: bench\n  context:\n    cluster: bench\n    user: bench\ncurrent-context: bench\n"
        ),
    )?;
    Ok(path.to_path_buf())
}

/// `N` ports free now and distinct from every port handed out before in this run: 50 agents
/// started at once must not be given the same one (the kernel may hand a released port out again).
fn free_ports<const N: usize>() -> anyhow::Result<[u16; N]> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = [0; N];
    for slot in &mut out {
        *slot = loop {
            let p = free_port()?;
            if !given.contains(&p) {
                given.push(p);
                break p;
            }
        };
    }
    Ok(out)
}

/// A `rollcache` child process and its metrics port.
pub struct Proc {
    pub guard: ChildGuard,
    pub metrics_port: u16,
    pub log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.guard.0.id()
    }

    pub fn alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.guard.0.try_wait()? {
            // The work directory goes with the run: say what the log said.
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            anyhow::bail!(
                "rollcache exited early ({status}); {}: {}",
                self.log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            );
        }
        Ok(())
    }

    /// Whether every source has listed (`/readyz`: the runtime answers and every source synced)
    /// and the plan holds `desired` images. The images alone are not enough: every image of the
    /// scale history is in its ReplicaSets and ControllerRevisions, which list before the Helm
    /// release Secrets do.
    pub async fn planned(&self, desired: usize) -> bool {
        bed::http_get(self.metrics_port, "/readyz")
            .await
            .is_ok_and(|r| r.trim() == "ready")
            && metric(&self.metrics().await, "rollcache_images_desired") == Some(desired as f64)
    }

    pub async fn metrics(&self) -> String {
        bed::http_get(self.metrics_port, "/metrics")
            .await
            .unwrap_or_default()
    }
}

/// `rollcache run` in `mode` on containerd at `socket`. `budget` is the disk budget in percent: 1
/// keeps it from pulling (the filesystem is fuller than that), so that 50 of them on one
/// containerd plan without pulling.
pub fn spawn_agent(
    mode: Mode,
    kubeconfig: &Path,
    socket: &Path,
    budget: u8,
    log: PathBuf,
) -> anyhow::Result<Proc> {
    spawn_agent_on(mode, kubeconfig, socket, budget, None, log)
}

/// `spawn_agent` as the DaemonSet runs it when `node` is given: `NODE_NAME` set, so that it
/// watches its own Node and, in fleet mode, only the Pods on it.
pub fn spawn_agent_on(
    mode: Mode,
    kubeconfig: &Path,
    socket: &Path,
    budget: u8,
    node: Option<&str>,
    log: PathBuf,
) -> anyhow::Result<Proc> {
    let [metrics_port, admin_port] = free_ports()?;
    let mut cmd = Command::new(rollcache_bin());
    cmd.arg("run")
        .arg("--socket")
        .arg(socket)
        .args(["--no-pull-secrets", "--start-jitter", "0s"])
        .arg("--disk-budget-percent")
        .arg(budget.to_string())
        .arg("--metrics-addr")
        .arg(format!("127.0.0.1:{metrics_port}"))
        .arg("--admin-addr")
        .arg(format!("127.0.0.1:{admin_port}"));
    if mode == Mode::Fleet {
        cmd.args([
            "--history-from",
            "inventory",
            "--inventory-namespace",
            INVENTORY_NS,
        ]);
    }
    spawn(cmd, kubeconfig, metrics_port, log, node)
}

/// `rollcache index` as one replica, publishing into `INVENTORY_NS`.
pub fn spawn_indexer(kubeconfig: &Path, identity: &str, log: PathBuf) -> anyhow::Result<Proc> {
    let [metrics_port] = free_ports()?;
    let mut cmd = Command::new(rollcache_bin());
    cmd.args(["index", "--namespace", INVENTORY_NS, "--identity", identity])
        .arg("--metrics-addr")
        .arg(format!("127.0.0.1:{metrics_port}"));
    spawn(cmd, kubeconfig, metrics_port, log, None)
}

fn spawn(
    mut cmd: Command,
    kubeconfig: &Path,
    metrics_port: u16,
    log: PathBuf,
    node: Option<&str>,
) -> anyhow::Result<Proc> {
    let file = std::fs::File::create(&log)?;
    match node {
        Some(n) => cmd.env("NODE_NAME", n),
        None => cmd.env_remove("NODE_NAME"),
    };
    let child = cmd
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "warn")
        .env_remove("ROLLCACHE_CONFIG")
        .env_remove("ROLLCACHE_HISTORY_FROM")
        .env_remove("POD_NAMESPACE")
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .context("starting rollcache")?;
    Ok(Proc {
        guard: ChildGuard(child),
        metrics_port,
        log,
    })
}

/// The first of `names` the metrics text has (prometheus_client adds `_total` to counters).
pub fn metric_any(text: &str, names: &[&str]) -> Option<f64> {
    names.iter().find_map(|n| metric(text, n))
}

/// Waits until the agent has listed everything and plans `desired` images.
pub async fn wait_planned(p: &mut Proc, desired: usize, limit: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        p.alive()?;
        if p.planned(desired).await {
            return Ok(());
        }
        anyhow::ensure!(
            start.elapsed() < limit,
            "no plan of {desired} images within {limit:?}; see {}",
            p.log.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the indexer leads, has listed everything and its shard writes have stopped for 2 s
/// (passes are at least 1 s apart): the inventory is published.
pub async fn wait_published(p: &mut Proc, limit: Duration) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut last = (f64::NAN, Instant::now());
    loop {
        p.alive()?;
        let text = p.metrics().await;
        let writes = metric_any(
            &text,
            &[
                "rollcache_index_shard_writes_total",
                "rollcache_index_shard_writes",
            ],
        );
        let ready = metric(&text, "rollcache_index_ready") == Some(1.0)
            && metric(&text, "rollcache_index_leader") == Some(1.0)
            && metric(&text, "rollcache_index_shards").is_some_and(|n| n > 0.0);
        if let Some(w) = writes.filter(|_| ready) {
            if w != last.0 {
                last = (w, Instant::now());
            } else if last.1.elapsed() >= Duration::from_secs(2) {
                return Ok(metric(&text, "rollcache_index_shards").unwrap_or(0.0));
            }
        }
        anyhow::ensure!(
            start.elapsed() < limit,
            "the indexer did not publish within {limit:?}; see {}",
            p.log.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One process behind its own counting proxy, started and planned (or published).
struct Metered {
    proc: Proc,
    counter: Counter,
    start: Duration,
    start_bytes: u64,
}

/// One process's traffic and memory over its start and the two idle windows.
pub struct Measured {
    pub start: Duration,
    pub start_bytes: u64,
    pub quiet_bytes: u64,
    pub living_bytes: u64,
    pub connections: u64,
    pub rss: u64,
    pub peak: u64,
}

fn mib(v: u64) -> String {
    Unit::Bytes.show(v as f64)
}

/// The idle windows: `quiet` with nothing changing, then `living` with the cluster moving. Both
/// are 5 min by default: one period of every periodic write (a kubelet's Node status, the
/// indexer's heartbeat, an agent's summary refresh), so each falls in a window once.
struct Windows {
    quiet: Duration,
    living: Duration,
}

impl Windows {
    fn per_hour(window: Duration, bytes: u64) -> u64 {
        (bytes as f64 * 3600.0 / window.as_secs_f64()) as u64
    }
}

/// Part 1 of the fleet figures, on the scale history from `history::scale_objects` in a living
/// cluster (`cluster::Living`): both agents run side by side on Nodes of their own, so that both
/// idle windows are the same for both.
pub async fn section(
    report: &mut Report,
    sz: &Sizes,
    version: ContainerdVersion,
    registry: &Registry,
    tiny: &[String],
    work: &Path,
) -> anyhow::Result<()> {
    let fleet = fleet_agent_available();
    let windows = Windows {
        quiet: Duration::from_secs(env_u64("BENCH_FLEET_IDLE_SECS", 300)),
        living: Duration::from_secs(env_u64("BENCH_FLEET_LIVING_SECS", 300)),
    };
    // The real server sends a watch bookmark about once a minute (kube-apiserver 1.35 through
    // kube-lite: 122, 183, 187 and 188 s into a 190 s watch), not every 5 s as tests want.
    let api = api_with_inventory_namespace_and(ApiServerOptions {
        bookmark_interval: Duration::from_secs(60),
        ..ApiServerOptions::default()
    })
    .await?;
    let per_workload = sz.revisions as usize;
    let images = tiny.to_vec();
    let image =
        |w: usize, r: u32| images[(w * per_workload + r as usize - 1) % images.len()].clone();
    let (mut objects, mut json_bytes) = (0usize, 0usize);
    history::scale_objects(
        "",
        sz.workloads,
        sz.revisions,
        sz.manifest_bytes,
        image,
        &mut |o| {
            objects += 1;
            json_bytes += o.to_string().len();
            api.apply(o).expect("history object");
        },
    );
    let mut cluster = Living {
        nodes: env_u64("BENCH_FLEET_NODES", 200).max(2) as usize,
        daemon_pods_per_node: 3,
        heartbeat: Duration::from_secs(env_u64("BENCH_FLEET_HEARTBEAT_SECS", 300)),
        pod_changes_per_hour: 0.0,
    };
    let mut population = cluster.populate(&api, sz.workloads, |w| image(w, sz.revisions))?;
    cluster.pod_changes_per_hour = env_u64(
        "BENCH_FLEET_POD_CHANGES_PER_HOUR",
        population.pods.len() as u64,
    ) as f64;
    let desired = (sz.workloads * per_workload).min(images.len());
    let (ctd, _node) = bed::fresh_containerd(version, registry).await?;
    let mut notes = vec![
        format!(
            "history: {} workloads × {} revisions, {objects} objects ({}) in the in-test API server (bookmarks once a minute per watch, as the real server)",
            sz.workloads,
            sz.revisions,
            mib(json_bytes as u64),
        ),
        format!(
            "cluster: {} Nodes, {} Pods (one per workload, {} per Node of DaemonSets); today's agent on {}, the fleet agent on {}, side by side",
            cluster.nodes,
            population.pods.len(),
            cluster.daemon_pods_per_node,
            node_name(0),
            node_name(1)
        ),
        format!(
            "idle windows, each scaled to an hour: quiet {} s (nothing changes), then living {} s (no revision changes; every kubelet writes its Node's status every {} s, {:.0} Pod status changes per hour over the cluster)",
            windows.quiet.as_secs(),
            windows.living.as_secs(),
            cluster.heartbeat.as_secs(),
            cluster.pod_changes_per_hour
        ),
    ];

    progress("fleet: today's agent on the scale history");
    let mut today_p = start_agent(&api, Mode::Today, work, &ctd.socket(), desired).await?;

    progress("fleet: rollcache index on the same history");
    let counter = Counter::start(api.addr()).await?;
    let ikc = write_kubeconfig(&work.join("kubeconfig-fleet-index"), &counter.url())?;
    let t = Instant::now();
    let mut indexer = spawn_indexer(&ikc, "bench-index-0", work.join("rollcache-index.log"))?;
    let shards = wait_published(&mut indexer, Duration::from_secs(600)).await?;
    let mut index_p = Metered {
        proc: indexer,
        start: t.elapsed(),
        start_bytes: counter.bytes(),
        counter,
    };

    let mut fleet_p = if fleet {
        progress("fleet: agent in inventory mode");
        Some(start_agent(&api, Mode::Fleet, work, &ctd.socket(), desired).await?)
    } else {
        notes.push(format!("fleet agent: {PENDING}"));
        None
    };

    let mut all: Vec<&mut Metered> = vec![&mut today_p, &mut index_p];
    all.extend(fleet_p.as_mut());
    progress(&format!(
        "fleet: quiet window, {} s",
        windows.quiet.as_secs()
    ));
    let writes_at_start = fleet_latency::shard_writes(&all[1].proc).await;
    let at_start: Vec<u64> = all.iter().map(|m| m.counter.bytes()).collect();
    api.reset_stats();
    tokio::time::sleep(windows.quiet).await;
    let stats = api.stats();
    let after_quiet: Vec<u64> = all.iter().map(|m| m.counter.bytes()).collect();
    let writes_after_quiet = fleet_latency::shard_writes(&all[1].proc).await;
    progress(&format!(
        "fleet: living window, {} s",
        windows.living.as_secs()
    ));
    let (node_writes, pod_writes) = cluster
        .churn(&api, &mut population, Instant::now() + windows.living)
        .await?;
    let writes_after_living = fleet_latency::shard_writes(&all[1].proc).await;
    let mut measured = Vec::new();
    for (i, m) in all.into_iter().enumerate() {
        m.proc.alive()?;
        let end = m.counter.bytes();
        let (rss, peak) = rss(m.proc.pid())?;
        measured.push(Measured {
            start: m.start,
            start_bytes: m.start_bytes,
            quiet_bytes: after_quiet[i] - at_start[i],
            living_bytes: end - after_quiet[i],
            connections: m.counter.connections(),
            rss,
            peak,
        });
    }
    let mut measured = measured.into_iter();
    let (today, index) = (
        measured.next().expect("today"),
        measured.next().expect("index"),
    );
    let fleet_row = measured.next();
    notes.push(format!(
        "quiet window: {} list/get and {} watch requests from all three processes (relists would be lists), {} inventory writes by the indexer; living window: {node_writes} Node and {pod_writes} Pod status writes, {} inventory writes",
        stats.requests - stats.watch_requests,
        stats.watch_requests,
        writes_after_quiet - writes_at_start,
        writes_after_living - writes_after_quiet
    ));
    let event = |o: &serde_json::Value| o.to_string().len() as u64 + 30;
    notes.push(format!(
        "sizes on the wire of one watch event: a Pod status change {}, a Node status write {} (to rescale the living hour to other rates)",
        mib(event(&population.pods[0])),
        mib(event(&crate::cluster::node(0, "2026-01-05T08:00:00Z")))
    ));
    notes.push(format!(
        "indexer (once per cluster, not per node): start → published {:.1} s, {shards} shards; from the API server at start {} (lists + its shard writes' answers), per hour quiet {}, living {}; RSS {} steady, {} peak",
        index.start.as_secs_f64(),
        mib(index.start_bytes),
        mib(Windows::per_hour(windows.quiet, index.quiet_bytes)),
        mib(Windows::per_hour(windows.living, index.living_bytes)),
        mib(index.rss),
        mib(index.peak)
    ));
    // The latency runs on a machine of its own again.
    drop((today_p, index_p, fleet_p, ctd));
    side_by_side(&mut notes, &today, fleet_row.as_ref(), &windows);

    progress("fleet: reaction latency (new revision → pull request at the registry)");
    let lat = fleet_latency::latency(version, registry, tiny, work, fleet).await?;
    notes.extend(lat.notes);
    report.section(
        &format!(
            "Fleet mode vs today: one agent, {} revisions",
            sz.workloads * per_workload
        ),
        vec![],
        notes,
    );
    if let Some(f) = &fleet_row {
        report.check_ratio(
            "fleet/today: bytes to one agent at start",
            f.start_bytes as f64 / today.start_bytes.max(1) as f64,
            0.05,
        );
        report.check_ratio(
            "fleet/today: bytes to one agent per hour idle (living cluster)",
            f.living_bytes as f64 / today.living_bytes.max(1) as f64,
            0.05,
        );
    }
    if let Some(p99) = lat.fleet_p99 {
        report.check("fleet reaction latency p99", p99, 500.0, Unit::Millis);
    }
    Ok(())
}

fn side_by_side(notes: &mut Vec<String>, today: &Measured, fleet: Option<&Measured>, w: &Windows) {
    let ratio = |t: u64, f: u64| format!("{:.3}", f as f64 / t.max(1) as f64);
    type Row = (&'static str, Box<dyn Fn(&Measured) -> u64>);
    let (quiet, living) = (w.quiet, w.living);
    let rows: [Row; 6] = [
        (
            "bytes from the API server at start",
            Box::new(|m| m.start_bytes),
        ),
        (
            "bytes per hour idle, quiet cluster",
            Box::new(move |m| Windows::per_hour(quiet, m.quiet_bytes)),
        ),
        (
            "bytes per hour idle, living cluster",
            Box::new(move |m| Windows::per_hour(living, m.living_bytes)),
        ),
        ("RSS steady (after the idle windows)", Box::new(|m| m.rss)),
        ("RSS peak (VmHWM)", Box::new(|m| m.peak)),
        (
            "start → plan of every image (ms)",
            Box::new(|m| m.start.as_millis() as u64),
        ),
    ];
    notes.push(format!(
        "{:<40} {:>12} {:>12} {:>12}",
        "figure", "today", "fleet", "fleet/today"
    ));
    for (name, get) in rows {
        let show = |m: &Measured| {
            let v = get(m);
            if name.ends_with("(ms)") {
                v.to_string()
            } else {
                mib(v)
            }
        };
        let (f, r) = match fleet {
            Some(f) => (show(f), ratio(get(today), get(f))),
            None => ("pending".into(), "pending".into()),
        };
        notes.push(format!("{name:<40} {:>12} {f:>12} {r:>12}", show(today)));
    }
    notes.push(format!(
        "connections to the API server: today {}, fleet {}",
        today.connections,
        fleet.map_or("pending".into(), |f| f.connections.to_string())
    ));
}

/// Waits until the first passes after the plan have done their writes: the RollcacheNode summary
/// is written at once and again at most every 10 s while it changes, so "at start" ends after 12 s
/// without a byte (or after 60 s: a bookmark may fall in between).
async fn settle(counter: &Counter) {
    let (begin, mut last, mut quiet_since) = (Instant::now(), counter.bytes(), Instant::now());
    while quiet_since.elapsed() < Duration::from_secs(12)
        && begin.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = counter.bytes();
        if now != last {
            (last, quiet_since) = (now, Instant::now());
        }
    }
}

/// An agent as the DaemonSet runs it (`NODE_NAME`: today's on the first Node, the fleet agent on
/// the second) through its own counting proxy: "start" ends when its plan holds `desired` images;
/// its bytes at start also count the pulls' and pins' summary writes, until they settle.
async fn start_agent(
    api: &ApiServer,
    mode: Mode,
    work: &Path,
    socket: &Path,
    desired: usize,
) -> anyhow::Result<Metered> {
    let counter = Counter::start(api.addr()).await?;
    let (name, node) = match mode {
        Mode::Today => ("today", node_name(0)),
        Mode::Fleet => ("fleet", node_name(1)),
    };
    let kc = write_kubeconfig(&work.join(format!("kubeconfig-{name}")), &counter.url())?;
    let t = Instant::now();
    let mut agent = spawn_agent_on(
        mode,
        &kc,
        socket,
        100,
        Some(&node),
        work.join(format!("rollcache-{name}.log")),
    )?;
    wait_planned(&mut agent, desired, Duration::from_secs(600)).await?;
    let start = t.elapsed();
    // Idle is a node in its steady state: every image of the history pulled and pinned (tiny
    // images, one shared containerd: the second agent finds them there), so that its summary
    // says what a healthy node's says.
    let limit = Instant::now() + Duration::from_secs(600);
    while metric(&agent.metrics().await, "rollcache_images_pinned") != Some(desired as f64) {
        agent.alive()?;
        anyhow::ensure!(
            Instant::now() < limit,
            "{name}: not every image pinned within 600 s; see {}",
            agent.log.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    settle(&counter).await;
    Ok(Metered {
        start,
        start_bytes: counter.bytes(),
        proc: agent,
        counter,
    })
}

pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `rollcache` with `args`, then `--metrics-addr` (and for `run`, `--admin-addr`) on ports of
/// their own, started as `spawn_agent` and `spawn_indexer` start it: for a run that names its own
/// namespaces (the simulated fleet on a real API server, beside whatever else it holds).
pub fn spawn_args(
    args: &[std::ffi::OsString],
    kubeconfig: &Path,
    log: PathBuf,
) -> anyhow::Result<Proc> {
    let [metrics_port, admin_port] = free_ports()?;
    let mut cmd = Command::new(rollcache_bin());
    cmd.args(args)
        .arg("--metrics-addr")
        .arg(format!("127.0.0.1:{metrics_port}"));
    if args.first().is_some_and(|a| a == "run") {
        cmd.arg("--admin-addr")
            .arg(format!("127.0.0.1:{admin_port}"));
    }
    spawn(cmd, kubeconfig, metrics_port, log, None)
}

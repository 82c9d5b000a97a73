//! A simulated fleet: N real `rollcache run` processes started at once against one in-test API
//! server running in a process of its own (this benchmark binary again, `BENCH_FLEET_APISERVER`),
//! so that its CPU seconds and peak memory can be read from /proc, on one shared containerd. Today
//! vs fleet mode (the agents in inventory mode + one `rollcache index`), side by side.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use rollcache_testbed::deps::ContainerdVersion;
use rollcache_testbed::registry::Registry;

use crate::fleet::{
    self, Mode, PENDING, env_u64, spawn_agent, spawn_indexer, wait_published, write_kubeconfig,
};
use crate::scale::{clock_ticks_per_second, cpu_ticks, rss};
use crate::stats::{Report, Unit, percentile};
use crate::{Sizes, bed, history, progress};

/// The server process' side: `spec` is `WORKLOADS,REVISIONS,MANIFEST_BYTES,REGISTRY`. Fills the
/// scale history, prints `URL <url>`, then answers `stats` and `reset` lines on stdin until EOF.
pub async fn serve(spec: &str) -> anyhow::Result<()> {
    let parts: Vec<&str> = spec.split(',').collect();
    anyhow::ensure!(
        parts.len() == 4,
        "BENCH_FLEET_APISERVER={spec}: expected 4 fields"
    );
    let (workloads, revisions, manifest): (usize, u32, usize) =
        (parts[0].parse()?, parts[1].parse()?, parts[2].parse()?);
    let registry = parts[3];
    let api = crate::fleet::api_with_inventory_namespace().await?;
    let mut failed = None;
    history::scale_objects(
        "",
        workloads,
        revisions,
        manifest,
        |w, r| {
            format!(
                "{registry}/tiny/img:t{:04}",
                w * revisions as usize + r as usize - 1
            )
        },
        &mut |o| {
            if let Err(e) = api.apply(o) {
                failed.get_or_insert(e);
            }
        },
    );
    if let Some(e) = failed {
        return Err(e.into());
    }
    println!("URL {}", api.url());
    // stdin is read on a thread of its own: the server's tasks keep the async runtime.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = rx.recv().await {
        match line.as_str() {
            "stats" => {
                let s = api.stats();
                println!("STATS {} {} {}", s.requests, s.watch_requests, s.bytes);
            }
            "reset" => {
                api.reset_stats();
                println!("OK");
            }
            _ => println!("?"),
        }
    }
    Ok(())
}

/// The parent's handle on the server process.
struct Server {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(spec: &str) -> anyhow::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .env("BENCH_FLEET_APISERVER", spec)
            .env_remove("BENCH_ONLY")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the API server process")?;
        let stdin = child.stdin.take().context("no stdin")?;
        let mut stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let url = line
            .strip_prefix("URL ")
            .map(|u| u.trim().to_string())
            .with_context(|| format!("the API server process said {line:?}"))?;
        Ok(Self {
            child,
            stdin,
            stdout,
            url,
        })
    }

    fn ask(&mut self, what: &str) -> anyhow::Result<String> {
        writeln!(self.stdin, "{what}")?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        Ok(line.trim().to_string())
    }

    /// Bytes of response bodies the server sent since the last reset (every client).
    fn bytes(&mut self) -> anyhow::Result<u64> {
        let s = self.ask("stats")?;
        s.split_whitespace()
            .nth(3)
            .and_then(|b| b.parse().ok())
            .with_context(|| format!("unexpected {s:?}"))
    }

    /// Clears the traffic counters and the process' peak RSS (`/proc/PID/clear_refs` 5).
    fn reset(&mut self) -> anyhow::Result<()> {
        self.ask("reset")?;
        std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5")
            .context("resetting the API server's VmHWM")
    }
}

/// One mode's figures.
struct Fleet {
    server_cpu: f64,
    server_peak: u64,
    server_bytes: u64,
    all_planned: Duration,
    per_agent: Vec<f64>,
    agent_rss: Vec<f64>,
    index_cpu: Option<f64>,
}

pub async fn section(
    report: &mut Report,
    sz: &Sizes,
    version: ContainerdVersion,
    registry: &Registry,
    work: &Path,
    quick: bool,
) -> anyhow::Result<()> {
    let agents = env_u64("BENCH_FLEET_AGENTS", if quick { 10 } else { 50 }) as usize;
    let workloads = env_u64("BENCH_FLEET_WORKLOADS", if quick { 50 } else { 100 }) as usize;
    let spec = format!(
        "{workloads},{},{},{}",
        sz.revisions,
        sz.manifest_bytes,
        registry.addr()
    );
    let desired = workloads * sz.revisions as usize;
    let (ctd, _node) = bed::fresh_containerd(version, registry).await?;
    let today = run(&spec, Mode::Today, agents, desired, &ctd.socket(), work).await?;
    let fleet_col = if fleet::fleet_agent_available() {
        Some(run(&spec, Mode::Fleet, agents, desired, &ctd.socket(), work).await?)
    } else {
        None
    };
    let mut notes = vec![
        format!(
            "{agents} `rollcache run` processes started at once; history {workloads} workloads × {} revisions ({desired} images, ~{} KB Helm manifests); one shared containerd, disk budget 1 % (they plan, nothing is pulled); in-test API server in its own process",
            sz.revisions,
            sz.manifest_bytes / 1000
        ),
        format!(
            "{:<44} {:>12} {:>12} {:>12}",
            "figure", "today", "fleet", "fleet/today"
        ),
    ];
    type Row = (&'static str, Unit, fn(&Fleet) -> f64);
    let rows: [Row; 6] = [
        (
            "API server CPU, agents start → all planned",
            Unit::Seconds,
            |f| f.server_cpu,
        ),
        ("API server peak RSS (reset at start)", Unit::Bytes, |f| {
            f.server_peak as f64
        }),
        (
            "API server bytes sent (bodies, all clients)",
            Unit::Bytes,
            |f| f.server_bytes as f64,
        ),
        ("start → every agent has its plan", Unit::Seconds, |f| {
            f.all_planned.as_secs_f64()
        }),
        ("start → plan, agent median", Unit::Seconds, |f| {
            percentile(&f.per_agent, 50.0)
        }),
        ("agent RSS, median", Unit::Bytes, |f| {
            percentile(&f.agent_rss, 50.0)
        }),
    ];
    for (name, unit, get) in rows {
        let (f, r) = match &fleet_col {
            Some(f) => (unit.show(get(f)), format!("{:.3}", get(f) / get(&today))),
            None => ("pending".into(), "pending".into()),
        };
        notes.push(format!(
            "{name:<44} {:>12} {f:>12} {r:>12}",
            unit.show(get(&today))
        ));
    }
    match &fleet_col {
        Some(f) => notes.push(format!(
            "fleet: the indexer published before the agents started (its own CPU, once per cluster: {:.2} s)",
            f.index_cpu.unwrap_or(f64::NAN)
        )),
        None => notes.push(format!("fleet column: {PENDING}")),
    }
    notes.push("API server CPU and peak RSS from /proc of the server process (it also runs this benchmark's counters; its history filling is before the reset)".into());
    if std::env::var_os("KUBECONFIG").is_some_and(|k| !k.is_empty()) {
        notes.push("KUBECONFIG is set: the simulated fleet ran against the in-test server only (a real server's side is not measured by this section)".into());
    }
    report.section(
        &format!("Simulated fleet: {agents} agents at once, today vs fleet mode"),
        vec![],
        notes,
    );
    drop(ctd);
    Ok(())
}

async fn run(
    spec: &str,
    mode: Mode,
    agents: usize,
    desired: usize,
    socket: &Path,
    work: &Path,
) -> anyhow::Result<Fleet> {
    let name = if mode == Mode::Fleet {
        "fleet"
    } else {
        "today"
    };
    progress(&format!(
        "fleet sim ({name}): API server process, filling the history"
    ));
    let mut server = Server::start(spec)?;
    let dir = work.join(format!("sim-{name}"));
    std::fs::create_dir_all(&dir)?;
    let kc = write_kubeconfig(&dir.join("kubeconfig"), &server.url)?;
    let mut indexer = None;
    let mut index_cpu = None;
    if mode == Mode::Fleet {
        let mut ix = spawn_indexer(&kc, "bench-sim-index", dir.join("index.log"))?;
        wait_published(&mut ix, Duration::from_secs(600)).await?;
        index_cpu = Some(cpu_ticks(ix.pid())? as f64 / clock_ticks_per_second());
        indexer = Some(ix);
    }
    server.reset()?;
    let pid = server.child.id();
    let cpu_before = cpu_ticks(pid)?;
    progress(&format!("fleet sim ({name}): {agents} agents at once"));
    let start = Instant::now();
    let mut procs = (0..agents)
        .map(|i| spawn_agent(mode, &kc, socket, 1, dir.join(format!("agent-{i}.log"))))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut planned: Vec<Option<f64>> = vec![None; agents];
    let mut peak = rss(pid)?.1;
    while planned.iter().any(Option::is_none) {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(600),
            "{} of {agents} agents without a plan after 600 s; logs in {}",
            planned.iter().filter(|p| p.is_none()).count(),
            dir.display()
        );
        for (i, p) in procs.iter_mut().enumerate() {
            if planned[i].is_some() {
                continue;
            }
            p.alive()?;
            if p.planned(desired).await {
                planned[i] = Some(start.elapsed().as_secs_f64());
            }
        }
        peak = peak.max(rss(pid)?.1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_planned = start.elapsed();
    let server_cpu = (cpu_ticks(pid)? - cpu_before) as f64 / clock_ticks_per_second();
    let server_bytes = server.bytes()?;
    let agent_rss = procs
        .iter()
        .map(|p| rss(p.pid()).map(|r| r.0 as f64))
        .collect::<anyhow::Result<Vec<_>>>()?;
    progress(&format!(
        "fleet sim ({name}): all planned in {:.1} s, server CPU {server_cpu:.1} s",
        all_planned.as_secs_f64()
    ));
    drop(procs);
    drop(indexer);
    Ok(Fleet {
        server_cpu,
        server_peak: peak,
        server_bytes,
        all_planned,
        per_agent: planned.into_iter().flatten().collect(),
        agent_rss,
        index_cpu,
    })
}

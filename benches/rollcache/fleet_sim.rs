//! A simulated fleet: N real `rollcache run` processes started at once against one in-test API
//! server running in a process of its own (this benchmark binary again, `BENCH_FLEET_APISERVER`),
//! so that its CPU seconds and peak memory can be read from /proc, on one shared containerd. Today
//! vs fleet mode (the agents in inventory mode + one `rollcache index`), side by side; with
//! `KUBECONFIG`, the same against that real API server too (`fleet_sim_real`).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rollcache_testbed::deps::ContainerdVersion;
use rollcache_testbed::registry::Registry;

use crate::api::RealApi;
use crate::fleet::{
    self, Mode, PENDING, Proc, env_u64, spawn_agent, spawn_indexer, wait_published,
    write_kubeconfig,
};
use crate::scale::{clock_ticks_per_second, cpu_ticks, rss};
use crate::server_procs::{Meter, RoleFigures, ServerProc};
use crate::stats::{Report, Unit, percentile};
use crate::{Sizes, bed, fleet_sim_real, history, progress};

/// The server process' side: `spec` is `WORKLOADS,REVISIONS,MANIFEST_BYTES,REGISTRY`. Fills the
/// scale history, prints `URL <url>`, then answers `stats` and `reset` lines on stdin until EOF.
pub async fn serve(spec: &str) -> anyhow::Result<()> {
    let parts: Vec<&str> = spec.split(',').collect();
    anyhow::ensure!(
        parts.len() == 4,
        "BENCH_FLEET_APISERVER={spec}: expected 4 fields"
    );
    let sim = Sim {
        agents: 0,
        workloads: parts[0].parse()?,
        revisions: parts[1].parse()?,
        manifest_bytes: parts[2].parse()?,
        registry: parts[3].to_string(),
    };
    let api = crate::fleet::api_with_inventory_namespace().await?;
    let mut failed = None;
    history::scale_objects(
        "",
        sim.workloads,
        sim.revisions,
        sim.manifest_bytes,
        |w, r| sim.image(w, r),
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

    /// Clears the traffic counters (the peak RSS is the `Meter`'s).
    fn reset(&mut self) -> anyhow::Result<()> {
        self.ask("reset").map(drop)
    }
}

/// One mode's figures: the agents' and the server's over their start.
pub struct Fleet {
    /// The server's processes by role, or why they were not measured.
    pub server: Result<Vec<RoleFigures>, String>,
    pub server_bytes: Result<u64, String>,
    pub all_planned: Duration,
    pub per_agent: Vec<f64>,
    pub agent_rss: Vec<f64>,
    pub index_cpu: Option<f64>,
}

/// The simulated fleet's sizes, the same for the in-test and the real server (and the in-test
/// server's process, which fills the history from them).
#[derive(Clone)]
pub struct Sim {
    pub agents: usize,
    pub workloads: usize,
    pub revisions: u32,
    pub manifest_bytes: usize,
    pub registry: String,
}

impl Sim {
    pub fn desired(&self) -> usize {
        self.workloads * self.revisions as usize
    }

    /// Revision `r` of workload `w`'s image: one of its own per revision (never pulled).
    pub fn image(&self, w: usize, r: u32) -> String {
        format!(
            "{}/tiny/img:t{:04}",
            self.registry,
            w * self.revisions as usize + r as usize - 1
        )
    }

    pub fn history_note(&self, server: &str) -> String {
        format!(
            "{} `rollcache run` processes started at once; history {} workloads × {} revisions ({} images, ~{} KB Helm manifests); one shared containerd, disk budget 1 % (they plan, nothing is pulled); {server}",
            self.agents,
            self.workloads,
            self.revisions,
            self.desired(),
            self.manifest_bytes / 1000
        )
    }
}

pub async fn section(
    report: &mut Report,
    sz: &Sizes,
    version: ContainerdVersion,
    registry: &Registry,
    work: &Path,
    quick: bool,
    real: Option<&Arc<RealApi>>,
) -> anyhow::Result<()> {
    let sim = Sim {
        agents: env_u64("BENCH_FLEET_AGENTS", if quick { 10 } else { 50 }) as usize,
        workloads: env_u64("BENCH_FLEET_WORKLOADS", if quick { 50 } else { 100 }) as usize,
        revisions: sz.revisions,
        manifest_bytes: sz.manifest_bytes,
        registry: registry.addr(),
    };
    let spec = format!(
        "{},{},{},{}",
        sim.workloads, sim.revisions, sim.manifest_bytes, sim.registry
    );
    let (ctd, _node) = bed::fresh_containerd(version, registry).await?;
    let today = run(&spec, Mode::Today, &sim, &ctd.socket(), work).await?;
    let fleet_col = if fleet::fleet_agent_available() {
        Some(run(&spec, Mode::Fleet, &sim, &ctd.socket(), work).await?)
    } else {
        None
    };
    let mut notes = vec![sim.history_note("in-test API server in its own process")];
    notes.extend(table(
        &today,
        fleet_col.as_ref().ok_or(PENDING),
        "API server bytes sent (bodies, all clients)",
    ));
    notes.push("API server CPU and peak RSS from /proc of the server process (it also runs this benchmark's counters; its history filling is before the reset)".into());
    report.section(
        &format!(
            "Simulated fleet: {} agents at once, today vs fleet mode",
            sim.agents
        ),
        vec![],
        notes,
    );
    if let Some(real) = real {
        fleet_sim_real::section(report, &sim, &ctd.socket(), work, real).await?;
    }
    drop(ctd);
    Ok(())
}

/// The side-by-side rows: the server's processes by role (CPU, RSS at the start, peak RSS), its
/// bytes, the agents' times and RSS; for a fleet column not measured, "-" and why.
pub fn table(today: &Fleet, fleet: Result<&Fleet, &str>, bytes_row: &str) -> Vec<String> {
    type Get = Box<dyn Fn(&Fleet) -> Option<f64>>;
    let mut rows: Vec<(String, Unit, Get)> = Vec::new();
    let mut notes = Vec::new();
    // A role's figure in either column, found by the role's name.
    let role = |role: &str, get: fn(&RoleFigures) -> f64| -> Get {
        let role = role.to_string();
        Box::new(move |f: &Fleet| {
            let roles = f.server.as_ref().ok()?;
            roles.iter().find(|r| r.role == role).map(get)
        })
    };
    match &today.server {
        Ok(roles) => {
            for r in roles {
                let label = format!("{} CPU, agents start → all planned", r.role);
                rows.push((label, Unit::Seconds, role(&r.role, |r| r.cpu_seconds)));
            }
            for r in roles {
                let label = format!("{} RSS at the agents' start", r.role);
                rows.push((label, Unit::Bytes, role(&r.role, |r| r.start_rss as f64)));
            }
            for r in roles {
                let label = format!("{} peak RSS ({})", r.role, r.peak_how);
                rows.push((label, Unit::Bytes, role(&r.role, |r| r.peak_rss as f64)));
            }
        }
        Err(why) => notes.push(format!("server CPU and peak RSS: not measured ({why})")),
    }
    match &today.server_bytes {
        Ok(_) => rows.push((
            bytes_row.into(),
            Unit::Bytes,
            Box::new(|f: &Fleet| f.server_bytes.as_ref().ok().map(|b| *b as f64)),
        )),
        Err(why) => notes.push(format!("bytes from the server: not measured ({why})")),
    }
    rows.push((
        "start → every agent has its plan".into(),
        Unit::Seconds,
        Box::new(|f: &Fleet| Some(f.all_planned.as_secs_f64())),
    ));
    rows.push((
        "start → plan, agent median".into(),
        Unit::Seconds,
        Box::new(|f: &Fleet| Some(percentile(&f.per_agent, 50.0))),
    ));
    rows.push((
        "agent RSS, median".into(),
        Unit::Bytes,
        Box::new(|f: &Fleet| Some(percentile(&f.agent_rss, 50.0))),
    ));
    let w = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let mut out = vec![format!(
        "{:<w$} {:>12} {:>12} {:>12}",
        "figure", "today", "fleet", "fleet/today"
    )];
    let show = |unit: Unit, v: Option<f64>| v.map_or("-".into(), |v| unit.show(v));
    for (name, unit, get) in rows {
        let t = get(today);
        let (f, r) = match fleet {
            Ok(f) => (
                show(unit, get(f)),
                t.zip(get(f))
                    .map_or("-".into(), |(t, f)| format!("{:.3}", f / t)),
            ),
            Err(_) => ("-".into(), "-".into()),
        };
        out.push(format!("{name:<w$} {:>12} {f:>12} {r:>12}", show(unit, t)));
    }
    match fleet {
        Ok(f) => out.push(format!(
            "fleet: the indexer published before the agents started (its own CPU, once per cluster: {:.2} s)",
            f.index_cpu.unwrap_or(f64::NAN)
        )),
        Err(why) => out.push(format!("fleet column: {why}")),
    }
    if let Ok(roles) = &today.server {
        for r in roles.iter().filter(|r| !r.role.contains(" + ")) {
            let pids: Vec<String> = r.pids.iter().map(u32::to_string).collect();
            out.push(format!("{}: pid {}", r.role, pids.join(" ")));
        }
    }
    out.extend(notes);
    out
}

async fn run(
    spec: &str,
    mode: Mode,
    sim: &Sim,
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
    let procs = [ServerProc {
        role: "API server".into(),
        pid: server.child.id(),
    }];
    let meter = Meter::start(&procs).map_err(|e| e.to_string());
    progress(&format!(
        "fleet sim ({name}): {} agents at once",
        sim.agents
    ));
    let mut fleet = start_agents(sim, &dir, meter, |i| {
        spawn_agent(mode, &kc, socket, 1, dir.join(format!("agent-{i}.log")))
    })
    .await?;
    fleet.server_bytes = server.bytes().map_err(|e| e.to_string());
    fleet.index_cpu = index_cpu;
    drop(indexer);
    Ok(fleet)
}

/// Starts `sim.agents` processes at once with `spawn(i)` and waits until every one has its plan
/// of `sim.desired()` images, metering the server's processes meanwhile (every 100 ms).
pub async fn start_agents(
    sim: &Sim,
    dir: &Path,
    mut meter: Result<Meter, String>,
    spawn: impl FnMut(usize) -> anyhow::Result<Proc>,
) -> anyhow::Result<Fleet> {
    let (agents, desired) = (sim.agents, sim.desired());
    let start = Instant::now();
    let mut procs = (0..agents).map(spawn).collect::<anyhow::Result<Vec<_>>>()?;
    let mut planned: Vec<Option<f64>> = vec![None; agents];
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
        if let Ok(m) = &mut meter {
            m.sample();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_planned = start.elapsed();
    let server = meter.and_then(|m| m.finish().map_err(|e| e.to_string()));
    let agent_rss = procs
        .iter()
        .map(|p| rss(p.pid()).map(|r| r.0 as f64))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let cpu = server
        .as_ref()
        .ok()
        .and_then(|r| r.last())
        .map_or(String::new(), |r| {
            format!(", server CPU {:.1} s", r.cpu_seconds)
        });
    progress(&format!(
        "  all planned in {:.1} s{cpu}",
        all_planned.as_secs_f64()
    ));
    drop(procs);
    Ok(Fleet {
        server,
        server_bytes: Err("not counted".into()),
        all_planned,
        per_agent: planned.into_iter().flatten().collect(),
        agent_rss,
        index_cpu: None,
    })
}

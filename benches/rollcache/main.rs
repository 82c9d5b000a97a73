//! `make bench`: rollcache measured against the direct path, in one run, on this machine.
//! Pull figures run each on a fresh containerd; Kubernetes figures use the in-test API server
//! and, when `KUBECONFIG` points at one, a real API server too.
//! `BENCH_QUICK=1` runs a smaller set; `BENCH_ONLY=pulls,large,latency,scale,bomb` picks sections;
//! `fleet` and `fleet-sim` (fleet mode vs today) run only when named there (`make bench-fleet`);
//! `fleet-sim` also runs against the real API server `KUBECONFIG` points at.
#![forbid(unsafe_code)]

mod api;
mod bed;
mod bomb;
mod cluster;
mod fleet;
mod fleet_latency;
mod fleet_sim;
mod fleet_sim_real;
mod history;
mod latency;
mod pulls;
mod scale;
mod server_procs;
mod stats;

use std::sync::Arc;
use std::time::Instant;

use rollcache_testbed::containerd::Containerd;
use rollcache_testbed::deps::{self, ContainerdVersion};
use rollcache_testbed::oci::{ImageSpec, LayerSpec, Platform, shared_base_set};
use rollcache_testbed::registry::Registry;

use api::{History, Target};
use stats::{Report, Series, Unit, percentile};

const MB: u64 = 1000 * 1000;

/// The sizes of one run.
struct Sizes {
    repeats: usize,
    images: usize,
    bases: usize,
    base_bytes: u64,
    own_bytes: u64,
    large_layers: u64,
    large_layer_bytes: u64,
    latency_revisions: usize,
    workloads: usize,
    revisions: u32,
    manifest_bytes: usize,
    startup_images: usize,
}

impl Sizes {
    fn full() -> Self {
        Self {
            repeats: 3,
            images: 20,
            bases: 4,
            base_bytes: 100 * MB,
            own_bytes: 10 * MB,
            large_layers: 6,
            large_layer_bytes: 90 * MB,
            latency_revisions: 120,
            workloads: 1000,
            revisions: 10,
            manifest_bytes: 30_000,
            startup_images: 1000,
        }
    }

    fn quick() -> Self {
        Self {
            repeats: 1,
            images: 20,
            bases: 4,
            base_bytes: 25 * MB,
            own_bytes: 2_500_000,
            large_layers: 4,
            large_layer_bytes: 30 * MB,
            latency_revisions: 40,
            workloads: 200,
            revisions: 10,
            manifest_bytes: 30_000,
            startup_images: 200,
        }
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            // The simulated fleet's API server runs as this binary in a process of its own.
            match std::env::var("BENCH_FLEET_APISERVER") {
                Ok(spec) => fleet_sim::serve(&spec).await,
                Err(_) => run().await,
            }
        })
}

fn selected(section: &str) -> bool {
    match std::env::var("BENCH_ONLY") {
        Ok(list) if !list.trim().is_empty() => list.split(',').any(|s| s.trim() == section),
        _ => true,
    }
}

/// Sections that run only when `BENCH_ONLY` names them.
fn named(section: &str) -> bool {
    std::env::var("BENCH_ONLY").is_ok_and(|list| list.split(',').any(|s| s.trim() == section))
}

fn progress(text: &str) {
    eprintln!("bench: {text}");
}

async fn run() -> anyhow::Result<()> {
    let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let sz = if quick { Sizes::quick() } else { Sizes::full() };
    let version = ContainerdVersion::from_env()?;
    let began = Instant::now();
    let load_before = loadavg();
    // Where KUBECONFIG points at a real API server, the Kubernetes figures and the simulated
    // fleet are also taken there.
    let kube_figures = selected("latency") || selected("scale");
    let real = match std::env::var_os("KUBECONFIG") {
        Some(path) if (kube_figures || named("fleet-sim")) && !path.is_empty() => {
            progress(&format!(
                "KUBECONFIG={}: the Kubernetes figures and the simulated fleet are also taken against that API server",
                path.to_string_lossy()
            ));
            let r = Arc::new(api::RealApi::connect(path).await?);
            for line in r.describe() {
                progress(&format!("  {line}"));
            }
            Some(r)
        }
        _ => None,
    };
    let mut report = Report::default();
    let mut machine_notes = machine(version, quick);
    if kube_figures {
        machine_notes
            .push("Kubernetes figures: in-test API server (rollcache_testbed::apiserver)".into());
    }
    if let Some(r) = &real {
        machine_notes.extend(r.describe());
    }
    machine_notes.push(format!(
        "command: {}",
        std::env::args().collect::<Vec<_>>().join(" ")
    ));
    report.section("Machine", vec![], machine_notes);

    let registry = Registry::start(None).await?;
    let reg = registry.addr();
    let work = tempfile::Builder::new().prefix("rc-bench-").tempdir()?;

    if selected("pulls") || selected("large") {
        progress("building and pushing images (not timed)");
        let specs = shared_base_set(
            "bench/app",
            sz.images,
            sz.bases,
            sz.base_bytes,
            sz.own_bytes,
            50,
        );
        let large = vec![(
            "bench/large".to_string(),
            ImageSpec {
                platform: Platform::linux_amd64(),
                layers: (0..sz.large_layers)
                    .map(|i| LayerSpec::new(5_000 + i, sz.large_layer_bytes, 50))
                    .collect(),
                label: "large".into(),
            },
        )];
        let dir = work.path().join("oci");
        let reg2 = reg.clone();
        let (set, big) = tokio::task::spawn_blocking(move || {
            anyhow::Ok((
                pulls::build_and_push(&dir, &reg2, &specs)?,
                pulls::build_and_push(&dir, &reg2, &large)?,
            ))
        })
        .await??;
        if selected("pulls") {
            pull_section(&mut report, &sz, version, &registry, &set).await?;
        }
        if selected("large") {
            large_section(&mut report, &sz, version, &registry, &big).await?;
        }
    }

    if selected("bomb") {
        bomb::section(&mut report, version, work.path()).await?;
    }

    let tiny_count = sz.latency_revisions.max(sz.startup_images);
    let tiny = if selected("latency") || selected("scale") || named("fleet") {
        progress(&format!("pushing {tiny_count} tiny images (not timed)"));
        bed::push_tiny(&reg, tiny_count).await?
    } else {
        Vec::new()
    };
    let mut targets = vec![Target::InTest];
    targets.extend(real.iter().map(|r| Target::Real(r.clone())));
    let mut kube_result = Ok(());
    for target in &targets {
        if let Target::Real(r) = target
            && kube_figures
        {
            progress(&format!(
                "Kubernetes figures against the real API server {} (version {})",
                r.url, r.version
            ));
        }
        if selected("latency")
            && let Err(e) =
                latency_section(&mut report, &sz, version, &registry, &tiny, target).await
        {
            kube_result = Err(e);
            break;
        }
        if selected("scale")
            && let Err(e) = scale_section(
                &mut report,
                &sz,
                version,
                &registry,
                &tiny,
                work.path(),
                target,
            )
            .await
        {
            kube_result = Err(e);
            break;
        }
    }
    if kube_result.is_ok() && named("fleet") {
        kube_result =
            fleet::section(&mut report, &sz, version, &registry, &tiny, work.path()).await;
    }
    if kube_result.is_ok() && named("fleet-sim") {
        kube_result = fleet_sim::section(
            &mut report,
            &sz,
            version,
            &registry,
            work.path(),
            quick,
            real.as_ref(),
        )
        .await;
    }
    if let Some(r) = &real {
        r.cleanup().await;
    }
    kube_result?;
    report.section(
        "Run",
        vec![],
        vec![
            format!("whole run: {:.0} s", began.elapsed().as_secs_f64()),
            format!(
                "load average (1, 5, 15 min) at start: {load_before}; at end: {}",
                loadavg()
            ),
        ],
    );
    println!("{}", report.render());
    Ok(())
}

async fn pull_section(
    report: &mut Report,
    sz: &Sizes,
    version: ContainerdVersion,
    registry: &Registry,
    set: &pulls::PushedSet,
) -> anyhow::Result<()> {
    let mut direct: Vec<(usize, Series)> = [1, 2, 4]
        .into_iter()
        .map(|k| {
            (
                k,
                Series::new(format!("direct CRI, {k} in flight"), Unit::Seconds),
            )
        })
        .collect();
    let mut rc = Series::new("rollcache (default: 2 pulls)", Unit::Seconds);
    let mut rc4 = Series::new("rollcache, max_concurrent_pulls 4", Unit::Seconds);
    for round in 0..sz.repeats {
        for (k, s) in &mut direct {
            let t = pulls::direct(version, registry, &set.refs, *k).await?;
            progress(&format!("round {round}: direct, {k} in flight: {t:.2?}"));
            s.push_duration(t);
        }
        let t = pulls::rollcache(version, registry, &set.refs, None).await?;
        progress(&format!("round {round}: rollcache: {t:.2?}"));
        rc.push_duration(t);
        let t = pulls::rollcache(version, registry, &set.refs, Some(4)).await?;
        progress(&format!("round {round}: rollcache, 4 pulls: {t:.2?}"));
        rc4.push_duration(t);
    }
    let best = direct
        .iter()
        .map(|(_, s)| s.median())
        .fold(f64::INFINITY, f64::min);
    let ratio = rc.median() / best;
    let mut series: Vec<Series> = direct.into_iter().map(|(_, s)| s).collect();
    series.push(rc);
    series.push(rc4);
    report.section(
        &format!("{} images offline-safe", sz.images),
        series,
        vec![
            format!(
                "{} images over {} shared base layers: {} unpacked, {} from the registry (each layer once)",
                sz.images,
                sz.bases,
                Unit::Bytes.show(set.unpacked as f64),
                Unit::Bytes.show(set.compressed as f64)
            ),
            "rollcache: ReplicaSets appear in the API server → CRI lists every image pinned (CRI polled every 10 ms once the daemon reports all pinned)".into(),
            format!("rollcache (default) / best direct median: {ratio:.3}x"),
        ],
    );
    report.check_ratio(
        &format!("{} images: rollcache / best direct", sz.images),
        ratio,
        1.10,
    );
    Ok(())
}

async fn large_section(
    report: &mut Report,
    sz: &Sizes,
    version: ContainerdVersion,
    registry: &Registry,
    big: &pulls::PushedSet,
) -> anyhow::Result<()> {
    let mut direct = Series::new("direct CRI pull", Unit::Seconds);
    let mut rc = Series::new("rollcache", Unit::Seconds);
    for round in 0..sz.repeats {
        let t = pulls::direct(version, registry, &big.refs, 1).await?;
        progress(&format!("round {round}: large, direct: {t:.2?}"));
        direct.push_duration(t);
        let t = pulls::rollcache(version, registry, &big.refs, None).await?;
        progress(&format!("round {round}: large, rollcache: {t:.2?}"));
        rc.push_duration(t);
    }
    let ratio = rc.median() / direct.median();
    report.section(
        "One large image",
        vec![direct, rc],
        vec![
            format!(
                "{} layers: {} unpacked, {} from the registry",
                sz.large_layers,
                Unit::Bytes.show(big.unpacked as f64),
                Unit::Bytes.show(big.compressed as f64)
            ),
            format!("rollcache / direct median: {ratio:.3}x"),
        ],
    );
    report.check_ratio("large image: rollcache / direct", ratio, 1.05);
    Ok(())
}

async fn latency_section(
    report: &mut Report,
    sz: &Sizes,
    version: ContainerdVersion,
    registry: &Registry,
    tiny: &[String],
    target: &Target,
) -> anyhow::Result<()> {
    let images = &tiny[..sz.latency_revisions];
    let mut p50 = Series::new("p50 per run", Unit::Millis);
    let mut p99 = Series::new("p99 per run", Unit::Millis);
    let mut worst = Series::new("max per run", Unit::Millis);
    let mut all = Vec::new();
    for round in 0..sz.repeats {
        let l = latency::reaction(
            version,
            registry,
            images,
            target,
            &format!("latency-{round}"),
        )
        .await?;
        progress(&format!(
            "round {round}: reaction p50 {:.1} ms, p99 {:.1} ms",
            percentile(&l, 50.0),
            percentile(&l, 99.0)
        ));
        p50.push(percentile(&l, 50.0));
        p99.push(percentile(&l, 99.0));
        worst.push(percentile(&l, 100.0));
        all.extend(l);
    }
    let pooled99 = percentile(&all, 99.0);
    let mut notes = vec![format!(
        "pooled over {} revisions: p50 {:.1} ms, p99 {:.1} ms",
        all.len(),
        percentile(&all, 50.0),
        pooled99
    )];
    if target.is_real() {
        notes.push("clock: just before the create request is sent → the daemon's pull call (in-process); the ReplicaSet's status is written through /status right after the create, as its controller would".into());
    }
    report.section(
        &format!(
            "Reaction latency (revision in the API → pull call), start jitter off{}",
            target.title()
        ),
        vec![p50, p99, worst],
        notes,
    );
    report.check(
        &format!("reaction latency p99{}", target.check_suffix()),
        pooled99,
        250.0,
        Unit::Millis,
    );
    Ok(())
}

/// How the objects of a history got into a real API server (None: in-test, not worth a line).
fn filled_note(target: &Target, what: &str, f: &api::Filled) -> Option<String> {
    target.is_real().then(|| {
        format!(
            "{what}: {} objects ({}) created through the API server in {:.0} s, {} in flight ({:.0} objects/s; not timed)",
            f.objects,
            Unit::Bytes.show(f.bytes as f64),
            f.took.as_secs_f64(),
            api::IN_FLIGHT,
            f.objects as f64 / f.took.as_secs_f64().max(0.001)
        )
    })
}

async fn scale_section(
    report: &mut Report,
    sz: &Sizes,
    version: ContainerdVersion,
    registry: &Registry,
    tiny: &[String],
    work: &std::path::Path,
    target: &Target,
) -> anyhow::Result<()> {
    let present = &tiny[..sz.startup_images];
    progress(&format!(
        "pulling {} tiny images into a fresh containerd (not timed)",
        present.len()
    ));
    let (ctd, node) = bed::fresh_containerd(version, registry).await?;
    let t = Instant::now();
    bed::pull_all(&node, present, 8).await?;
    progress(&format!("  took {:.1?}", t.elapsed()));
    let teams = history::team_namespaces();

    // One history at a time: on a real server the daemon may watch cluster-wide.
    progress("rollcache run as a child: empty history (baseline)");
    let empty = History::new(target, "empty", &teams).await?;
    let base = scale::child(&empty, &ctd.socket(), work, 0, &[]).await;
    empty.clear().await?;
    let base = base?;

    progress(&format!(
        "serving {} workloads × {} revisions (not timed)",
        sz.workloads, sz.revisions
    ));
    let h = History::new(target, "scale", &teams).await?;
    let per_workload = sz.revisions as usize;
    let (workloads, revisions, manifest_bytes) = (sz.workloads, sz.revisions, sz.manifest_bytes);
    let (images, prefix) = (present.to_vec(), h.prefix().to_string());
    let filled = h
        .fill("scale history", workloads * per_workload * 2, move |sink| {
            history::scale_objects(
                &prefix,
                workloads,
                revisions,
                manifest_bytes,
                |w, r| images[(w * per_workload + r as usize - 1) % images.len()].clone(),
                sink,
            )
        })
        .await;
    let measured = match filled {
        Ok(filled) => scale_runs(report, sz, target, &h, &node, &ctd, work, &base, &filled).await,
        Err(e) => Err(e),
    };
    progress("removing the scale history");
    h.clear().await?;
    measured?;

    let s = History::new(target, "startup", &teams).await?;
    let images = present.to_vec();
    let prefix = s.prefix().to_string();
    let filled = s
        .fill("start-up history", images.len(), move |sink| {
            for (i, image) in images.iter().enumerate() {
                sink(history::replicaset(
                    &format!("{prefix}team-{:02}", i % 20),
                    &format!("svc-{i:04}"),
                    1,
                    image,
                    true,
                ));
            }
        })
        .await;
    let measured = match filled {
        Ok(filled) => {
            startup_runs(report, sz, target, &s, &node, &ctd, present.len(), &filled).await
        }
        Err(e) => Err(e),
    };
    progress("removing the start-up history");
    s.clear().await?;
    measured?;
    drop(ctd);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn scale_runs(
    report: &mut Report,
    sz: &Sizes,
    target: &Target,
    h: &History,
    node: &rollcache::node::Node,
    ctd: &Containerd,
    work: &std::path::Path,
    base: &scale::ChildRun,
    filled: &api::Filled,
) -> anyhow::Result<()> {
    let mut rss = Series::new("RSS at steady state", Unit::Bytes);
    let mut peak = Series::new("peak RSS (VmHWM)", Unit::Bytes);
    let mut cpu = Series::new("CPU while idle (10 s)", Unit::Percent);
    let mut settle = Series::new("child: process start → all pinned", Unit::Seconds);
    let mut api_bytes = Series::new(
        if target.is_real() {
            "bytes from the API server to the node (wire)"
        } else {
            "bytes sent to the node's watches"
        },
        Unit::Bytes,
    );
    let mut per_rev = Series::new("bytes kept per revision", Unit::Bytes);
    let mut plan_t = Series::new("lists complete → plan (in-process)", Unit::Millis);
    let mut pass_t = Series::new("lists complete → daemon status", Unit::Millis);
    let mut lists_t = Series::new("lists (watchers start → synced)", Unit::Seconds);
    progress("first start on the full history: the daemon pins every image (in-process)");
    let first = scale::plan_run(h, node, &ctd.socket()).await?;
    let mut first_pin = Series::new("first start: lists complete → all pinned", Unit::Seconds);
    first_pin.push_duration(first.daemon_pass);
    let mut revisions = 0;
    let mut traffic = None;
    let mut desired = 0;
    for round in 0..sz.repeats.max(2) {
        progress(&format!("round {round}: plan after lists, in-process"));
        let p = scale::plan_run(h, node, &ctd.socket()).await?;
        plan_t.push_duration(p.plan);
        pass_t.push_duration(p.daemon_pass);
        lists_t.push_duration(p.lists);
        revisions = p.revisions;
        desired = p.images;
    }
    for round in 0..sz.repeats.max(2) {
        progress(&format!(
            "round {round}: rollcache run as a child, full history"
        ));
        let c = scale::child(h, &ctd.socket(), work, desired, &[]).await?;
        rss.push(c.rss as f64);
        peak.push(c.peak_rss as f64);
        cpu.push(c.idle_cpu_percent);
        settle.push_duration(c.settled);
        if let Some(t) = &c.traffic {
            api_bytes.push(t.bytes as f64);
        }
        traffic = c.traffic;
        anyhow::ensure!(
            c.desired as usize == desired,
            "the child planned {} images",
            c.desired
        );
        per_rev.push((c.rss as f64 - base.rss as f64) / revisions.max(1) as f64);
    }
    progress("rollcache run as a child, full history, MALLOC_ARENA_MAX=2");
    let arena = scale::child(
        h,
        &ctd.socket(),
        work,
        desired,
        &[("MALLOC_ARENA_MAX", "2")],
    )
    .await?;
    let rss_median = rss.median();
    let cpu_max = cpu.max();
    let pass_median = pass_t.median() / 1000.0;
    let mut series = vec![
        lists_t, plan_t, pass_t, first_pin, settle, rss, peak, cpu, per_rev,
    ];
    let mut notes = vec![
        format!(
            "{} objects ({}) served: ReplicaSets, ControllerRevisions, Helm release Secrets with ~{} KB manifests",
            filled.objects,
            Unit::Bytes.show(filled.bytes as f64),
            sz.manifest_bytes / 1000
        ),
        format!(
            "inventory: {revisions} revisions; plan: {desired} images (all present; the first start pins them, the later runs find them pinned)"
        ),
    ];
    notes.extend(filled_note(target, "history", filled));
    match (&traffic, target) {
        (Some(t), _) => {
            series.push(api_bytes);
            if let Some(n) = t.requests {
                notes.push(format!("the child's lists and watches: {n} requests"));
            }
            if let Some(n) = t.connections {
                notes.push(format!(
                    "the child's connections to the API server: {n} (through a counting TCP proxy: bytes on the wire, TLS and HTTP framing included; requests inside TLS not counted)"
                ));
            }
        }
        (None, Target::Real(r)) => notes.push(format!(
            "bytes sent to the node's watches: not measured against a real API server ({})",
            r.proxy_error().unwrap_or("no counter")
        )),
        (None, Target::InTest) => {}
    }
    if let Target::Real(r) = target {
        notes.push(if r.cluster_wide {
            "the daemon and the child watch cluster-wide: 5 watches".into()
        } else {
            format!(
                "the daemon and the child watch the history's {} namespaces: {} watches",
                history::team_namespaces().len(),
                5 * history::team_namespaces().len()
            )
        });
    }
    notes.push(format!(
        "one more child with MALLOC_ARENA_MAX=2 (glibc arenas capped): RSS {}, peak {}",
        Unit::Bytes.show(arena.rss as f64),
        Unit::Bytes.show(arena.peak_rss as f64)
    ));
    notes.push(format!(
        "baseline child (same containerd, empty history): RSS {}, idle CPU {:.2} %",
        Unit::Bytes.show(base.rss as f64),
        base.idle_cpu_percent
    ));
    let title = match target {
        Target::InTest => " (in-test API server)".to_string(),
        Target::Real(_) => target.title(),
    };
    report.section(
        &format!(
            "Scale: {} workloads × {} revisions{title}",
            sz.workloads, sz.revisions
        ),
        series,
        notes,
    );
    let sfx = target.check_suffix();
    report.check(
        &format!("plan after lists (daemon pass){sfx}"),
        pass_median,
        2.0,
        Unit::Seconds,
    );
    report.check(
        &format!("RSS at {revisions} revisions{sfx}"),
        rss_median,
        64.0 * 1024.0 * 1024.0,
        Unit::Bytes,
    );
    report.check(
        &format!("CPU while idle (worst run){sfx}"),
        cpu_max,
        1.0,
        Unit::Percent,
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn startup_runs(
    report: &mut Report,
    sz: &Sizes,
    target: &Target,
    h: &History,
    node: &rollcache::node::Node,
    ctd: &Containerd,
    present: usize,
    filled: &api::Filled,
) -> anyhow::Result<()> {
    let mut decided = Series::new("start → nothing to pull decided", Unit::Millis);
    let mut lists = Series::new("of which sources listing", Unit::Millis);
    let mut calls = Series::new("runtime list calls until then", Unit::Count);
    let mut pulls_started = 0;
    for round in 0..sz.repeats {
        let s = scale::startup(h, node, &ctd.socket()).await?;
        progress(&format!(
            "round {round}: start-up decided in {:.1?} ({} list calls, {} pulls)",
            s.decided, s.list_calls, s.pulls
        ));
        decided.push_duration(s.decided);
        lists.push_duration(s.lists);
        calls.push(s.list_calls as f64);
        pulls_started += s.pulls + s.pins;
        anyhow::ensure!(s.images == present, "start-up planned {} images", s.images);
    }
    let decided_median = decided.median() / 1000.0;
    let mut notes = vec![format!(
        "{present} Deployments, one ReplicaSet each, every image present and pinned; pulls + pins started: {pulls_started}"
    )];
    notes.extend(filled_note(target, "history", filled));
    report.section(
        &format!("Start-up with {present} images present{}", target.title()),
        vec![decided, lists, calls],
        notes,
    );
    report.check(
        &format!("start-up: nothing to pull{}", target.check_suffix()),
        decided_median,
        1.0,
        Unit::Seconds,
    );
    Ok(())
}

fn machine(version: ContainerdVersion, quick: bool) -> Vec<String> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let mem = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .unwrap_or_default()
        .to_string();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_default();
    let containerd = deps::containerd(version)
        .ok()
        .and_then(|b| std::process::Command::new(b).arg("--version").output().ok())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "?".into());
    vec![
        format!(
            "nproc {}, {}, {cpu}",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            mem.split_whitespace().skip(1).collect::<Vec<_>>().join(" ")
        ),
        format!("kernel {}", read("/proc/sys/kernel/osrelease").trim()),
        format!("containerd: {containerd} (snapshotter native)"),
        format!(
            "mode: {}",
            if quick {
                "BENCH_QUICK=1 (smaller run)"
            } else {
                "full"
            }
        ),
    ]
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

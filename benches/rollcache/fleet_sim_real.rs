//! The simulated fleet against the real API server `KUBECONFIG` names: rollcache's CRDs created
//! through the API when absent (and deleted afterwards), the history and the inventory in
//! namespaces of the run's own (`api::History`), today vs fleet mode, the server's apiserver and
//! etcd measured by pid (`server_procs`), the bytes by the counting proxy when TLS allows it.

use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, PostParams};
use serde_json::Value;

use crate::api::{Filled, History, RUN_LABEL, RealApi, Target};
use crate::fleet::{Mode, PENDING, fleet_agent_available, spawn_args, wait_published};
use crate::fleet_sim::{Fleet, Sim, start_agents, table};
use crate::scale::{clock_ticks_per_second, cpu_ticks};
use crate::server_procs::{self, Found, Meter};
use crate::stats::{Report, Unit};
use crate::{history, progress};

/// rollcache's CRDs as the manifests install them: the fleet inventory and the node summaries.
const CRDS: [&str; 2] = [
    include_str!("../../daemonset/fleet/crd-rollcacheinventories.yaml"),
    include_str!("../../daemonset/base/crd-rollcachenodes.yaml"),
];

/// The inventory's namespace among the run's (before the run's prefix).
const INVENTORY_BASE: &str = "rollcache";

/// One CRD: already on the server (left as it is), or created by this run (deleted afterwards).
struct Crd {
    name: String,
    established_after: Option<Duration>,
}

pub async fn section(
    report: &mut Report,
    sim: &Sim,
    socket: &Path,
    work: &Path,
    real: &Arc<RealApi>,
) -> anyhow::Result<()> {
    progress(&format!(
        "fleet sim against the real API server {} (version {})",
        real.url, real.version
    ));
    let crds = ensure_crds(real).await?;
    let mut bases = history::team_namespaces();
    bases.push(INVENTORY_BASE.into());
    let h = match History::new(&Target::Real(real.clone()), "fleetsim", &bases).await {
        Ok(h) => h,
        Err(e) => {
            remove_crds(real, &crds).await;
            return Err(e);
        }
    };
    let measured = measure(sim, &h, socket, work, real).await;
    progress("removing the simulated fleet's history, namespaces and CRDs");
    let inventory = h.ns(INVENTORY_BASE);
    let cleared = h.clear().await;
    remove_crds(real, &crds).await;
    let (filled, found, today, fleet) = measured?;
    cleared?;

    let mut notes = vec![
        sim.history_note(&format!(
            "history and inventory in the run's namespaces {}-fleetsim-* (inventory: {inventory})",
            real.run
        )),
        format!(
            "history: {} objects ({}) created through the API server in {:.0} s (not timed)",
            filled.objects,
            Unit::Bytes.show(filled.bytes as f64),
            filled.took.as_secs_f64()
        ),
    ];
    for c in &crds {
        notes.push(match c.established_after {
            Some(t) => format!(
                "CRD {}: created through the API, Established after {:.1} s, deleted afterwards",
                c.name,
                t.as_secs_f64()
            ),
            None => format!("CRD {}: already on the server (left as it was)", c.name),
        });
    }
    if let Ok((_, how)) = &found {
        notes.push(format!("server processes: {how}"));
    }
    notes.extend(table(
        &today,
        fleet.as_ref().map_err(String::as_str),
        "bytes from the API server (wire, all clients)",
    ));
    if found.is_ok() {
        notes.push("server CPU: utime + stime from /proc/PID/stat, agents' start → all planned (the history's creation and the indexer's publishing are before)".into());
        notes.push("one server serves both modes, fleet first then today: a mode starts from the memory the server kept (RSS at the agents' start), so today's peak may be a little high, never the fleet's".into());
    }
    notes.push(match real.proxy_error() {
        None => "bytes: every agent's and the indexer's connections go through one counting TCP proxy on 127.0.0.1 (TLS and HTTP framing included, TLS verified end to end)".into(),
        Some(why) => format!("bytes: not counted ({why})"),
    });
    notes.push(if real.cluster_wide {
        "agents (today) and the indexer watch cluster-wide, as deployed by default: the server held no other history".into()
    } else {
        format!(
            "the agents (both modes) and the indexer watch only the run's namespaces (--namespaces): the server holds other history ({})",
            real.other_history.as_deref().unwrap_or("?")
        )
    });
    report.section(
        &format!(
            "Simulated fleet against the real API server {} (version {}): {} agents at once, today vs fleet mode",
            real.url, real.version, sim.agents
        ),
        vec![],
        notes,
    );
    Ok(())
}

/// Fills the history, then starts the fleet in each mode.
async fn measure(
    sim: &Sim,
    h: &History,
    socket: &Path,
    work: &Path,
    real: &RealApi,
) -> anyhow::Result<(Filled, Found, Fleet, Result<Fleet, String>)> {
    let (s, prefix) = (sim.clone(), h.prefix().to_string());
    let filled = h
        .fill(
            "simulated fleet's history",
            2 * sim.desired(),
            move |sink| {
                history::scale_objects(
                    &prefix,
                    s.workloads,
                    s.revisions,
                    s.manifest_bytes,
                    |w, r| s.image(w, r),
                    sink,
                )
            },
        )
        .await?;
    let dir = work.join("sim-real");
    std::fs::create_dir_all(&dir)?;
    let kc = h.child_kubeconfig(&dir)?;
    let found = server_procs::find(&real.url);
    // Fleet first: both modes share the server's processes, and a Go heap keeps what a run grew,
    // so the mode run second starts from the first one's memory; today's peak is the larger.
    let fleet = if !fleet_agent_available() {
        Err(PENDING.into())
    } else {
        Ok(run(Mode::Fleet, sim, h, Path::new(&kc), &dir, socket, &found).await?)
    };
    let today = run(Mode::Today, sim, h, Path::new(&kc), &dir, socket, &found).await?;
    Ok((filled, found, today, fleet))
}

/// `--namespaces` with the history's namespaces when the server holds other history (for the
/// agents in both modes and the indexer: fleet agents take only what the indexer's scope covers).
fn namespaces_args(h: &History) -> Vec<OsString> {
    let namespaces = h.watch_namespaces();
    if namespaces.is_empty() {
        return Vec::new();
    }
    vec!["--namespaces".into(), namespaces.join(",").into()]
}

/// `rollcache run`'s arguments in `mode` for this run: in fleet mode its own inventory namespace;
/// only its history's namespaces when the server holds others.
fn agent_args(mode: Mode, socket: &Path, h: &History) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["run".into(), "--socket".into(), socket.into()];
    for a in [
        "--no-pull-secrets",
        "--start-jitter",
        "0s",
        "--disk-budget-percent",
        "1",
    ] {
        args.push(a.into());
    }
    if mode == Mode::Fleet {
        for a in ["--history-from", "inventory", "--inventory-namespace"] {
            args.push(a.into());
        }
        args.push(h.ns(INVENTORY_BASE).into());
    }
    args.extend(namespaces_args(h));
    args
}

async fn run(
    mode: Mode,
    sim: &Sim,
    h: &History,
    kc: &Path,
    dir: &Path,
    socket: &Path,
    found: &Found,
) -> anyhow::Result<Fleet> {
    let name = if mode == Mode::Fleet {
        "fleet"
    } else {
        "today"
    };
    let mut indexer = None;
    let mut index_cpu = None;
    if mode == Mode::Fleet {
        progress("fleet sim (real API server, fleet): rollcache index publishing");
        let mut args: Vec<OsString> = [
            "index",
            "--namespace",
            &h.ns(INVENTORY_BASE),
            "--identity",
            "bench-sim-index",
        ]
        .map(OsString::from)
        .to_vec();
        args.extend(namespaces_args(h));
        let mut ix = spawn_args(&args, kc, dir.join("index.log"))?;
        wait_published(&mut ix, Duration::from_secs(600)).await?;
        index_cpu = Some(cpu_ticks(ix.pid())? as f64 / clock_ticks_per_second());
        indexer = Some(ix);
    }
    h.reset_traffic();
    let meter = found
        .clone()
        .and_then(|(procs, _)| Meter::start(&procs).map_err(|e| e.to_string()));
    progress(&format!(
        "fleet sim (real API server, {name}): {} agents at once",
        sim.agents
    ));
    let args = agent_args(mode, socket, h);
    let mut fleet = start_agents(sim, dir, meter, |i| {
        spawn_args(&args, kc, dir.join(format!("agent-{name}-{i}.log")))
    })
    .await?;
    fleet.server_bytes = h
        .traffic()
        .map(|t| t.bytes)
        .ok_or_else(|| "no counting proxy".to_string());
    fleet.index_cpu = index_cpu;
    drop(indexer);
    Ok(fleet)
}

/// Creates each of rollcache's CRDs the server does not have (labelled with the run, so that a
/// run cut short leaves them findable) and waits until it is Established.
async fn ensure_crds(real: &RealApi) -> anyhow::Result<Vec<Crd>> {
    let api: kube::Api<CustomResourceDefinition> = kube::Api::all(real.client().clone());
    let mut out = Vec::new();
    for text in CRDS {
        let mut value: Value = serde_saphyr::from_str(text).context("a CRD of daemonset/")?;
        value["metadata"]["labels"][RUN_LABEL] = Value::String(real.run.clone());
        let crd: CustomResourceDefinition = serde_json::from_value(value)?;
        let name = crd.metadata.name.clone().unwrap_or_default();
        if api
            .get_opt(&name)
            .await
            .with_context(|| format!("reading the CRD {name} on {}", real.url))?
            .is_some()
        {
            out.push(Crd {
                name,
                established_after: None,
            });
            continue;
        }
        let t = Instant::now();
        api.create(&PostParams::default(), &crd)
            .await
            .with_context(|| format!("creating the CRD {name} on {}", real.url))?;
        loop {
            let now = api.get(&name).await?;
            let conditions = now.status.and_then(|s| s.conditions).unwrap_or_default();
            if conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
            {
                break;
            }
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(60),
                "the CRD {name} is not Established after 60 s on {} (remove it with kubectl delete crd -l {RUN_LABEL})",
                real.url
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        out.push(Crd {
            name,
            established_after: Some(t.elapsed()),
        });
    }
    Ok(out)
}

/// Deletes the CRDs this run created (their objects went with the run's namespaces).
async fn remove_crds(real: &RealApi, crds: &[Crd]) {
    let api: kube::Api<CustomResourceDefinition> = kube::Api::all(real.client().clone());
    for c in crds.iter().filter(|c| c.established_after.is_some()) {
        if let Err(e) = api.delete(&c.name, &DeleteParams::default()).await {
            progress(&format!("  could not delete the CRD {}: {e}", c.name));
        }
    }
}

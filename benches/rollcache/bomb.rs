//! `BENCH_ONLY=bomb`: peak memory and CPU of decoding hostile Helm releases (rule 9). Each bomb
//! of `rollcache_testbed::bombs` is written as a release Secret into a history directory beside
//! the exported fixture history; `rollcache plan --from` and `rollcache run --from` (with a real
//! containerd) run on it as child processes, measured against the same history without bombs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use rollcache_testbed::bombs;
use rollcache_testbed::containerd::Containerd;
use rollcache_testbed::deps::ContainerdVersion;

use crate::bed;
use crate::stats::{Report, Series, Unit};

/// The DaemonSet's memory limit.
const LIMIT: f64 = 128.0 * 1024.0 * 1024.0;

/// Peak RSS and CPU of one finished child.
struct Usage {
    peak: u64,
    cpu: Duration,
    wall: Duration,
}

pub async fn section(
    report: &mut Report,
    version: ContainerdVersion,
    work: &Path,
) -> anyhow::Result<()> {
    crate::progress("bomb: writing the hostile releases (not timed)");
    let all = bombs::all();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/history");
    let clean = work.join("bomb-clean");
    copy_dir(&fixture, &clean.join("history"))?;
    let dirty = work.join("bomb-all");
    copy_dir(&fixture, &dirty.join("history"))?;
    for b in &all {
        let text = b.secret("tenant-b").to_string();
        std::fs::create_dir_all(dirty.join("bombs"))?;
        std::fs::write(dirty.join("bombs").join(format!("{}.json", b.name)), &text)?;
        let alone = work.join(format!("bomb-{}", b.name));
        copy_dir(&fixture, &alone.join("history"))?;
        std::fs::write(alone.join(format!("{}.json", b.name)), &text)?;
    }

    let mut notes = vec![
        "each bomb is a release Secret in namespace tenant-b beside the fixture history \
         (tests/fixtures/history); sizes: stored = data.release as Helm writes it, JSON = inflated"
            .to_string(),
    ];
    let mut peaks = Series::new("plan --from: peak RSS, each bomb alone", Unit::Bytes);
    crate::progress("bomb: rollcache plan --from, without and with each bomb");
    let base = plan(&clean)?;
    notes.push(format!(
        "plan --from, fixture history only: peak {}, CPU {:.2} s, wall {:.2} s",
        Unit::Bytes.show(base.peak as f64),
        base.cpu.as_secs_f64(),
        base.wall.as_secs_f64()
    ));
    for b in &all {
        let u = plan(&work.join(format!("bomb-{}", b.name)))?;
        peaks.push(u.peak as f64);
        notes.push(format!(
            "plan --from + {:<15} stored {:>7} B, JSON {:>9} B ({}): peak {}, CPU {:.2} s",
            b.name,
            b.helm_text().len(),
            b.json_bytes,
            b.expect,
            Unit::Bytes.show(u.peak as f64),
            u.cpu.as_secs_f64()
        ));
    }
    let every = plan(&dirty)?;
    notes.push(format!(
        "plan --from, every bomb at once: peak {}, CPU {:.2} s, wall {:.2} s",
        Unit::Bytes.show(every.peak as f64),
        every.cpu.as_secs_f64(),
        every.wall.as_secs_f64()
    ));
    report.check(
        "plan --from with every bomb: peak RSS",
        every.peak as f64,
        LIMIT,
        Unit::Bytes,
    );

    crate::progress(
        "bomb: rollcache run --from with a real containerd, without and with the bombs",
    );
    let ctd = Containerd::start(version).await?;
    let (clean_rss, clean_peak) = daemon(&clean, &ctd.socket(), work).await?;
    let (rss, peak) = daemon(&dirty, &ctd.socket(), work).await?;
    notes.push(format!(
        "run --from, fixture history only: steady {}, peak {}",
        Unit::Bytes.show(clean_rss as f64),
        Unit::Bytes.show(clean_peak as f64)
    ));
    notes.push(format!(
        "run --from, every bomb at once: steady {}, peak {}",
        Unit::Bytes.show(rss as f64),
        Unit::Bytes.show(peak as f64)
    ));
    report.check(
        "run --from with every bomb: peak RSS",
        peak as f64,
        LIMIT,
        Unit::Bytes,
    );
    report.section("Hostile Helm releases (rule 9)", vec![peaks], notes);
    Ok(())
}

/// `rollcache plan --from dir`, measured with GNU time (exact peak and CPU of the child).
fn plan(dir: &Path) -> anyhow::Result<Usage> {
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "rc-usage %M %U %S"])
        .arg(env!("CARGO_BIN_EXE_rollcache"))
        .args(["plan", "--from"])
        .arg(dir)
        .args(["--node", "bl45p-ws001", "--output", "json"])
        .env_remove("KUBECONFIG")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .output()
        .context(
            "running /usr/bin/time rollcache plan (GNU time is needed: apt-get install time)",
        )?;
    let wall = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(out.status.success(), "rollcache plan failed: {err}");
    let line = err
        .lines()
        .find_map(|l| l.strip_prefix("rc-usage "))
        .context("no usage line from GNU time")?;
    let f: Vec<f64> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    Ok(Usage {
        peak: (f[0] * 1024.0) as u64,
        cpu: Duration::from_secs_f64(f[1] + f[2]),
        wall,
    })
}

/// `rollcache run --from dir` until its sources are synced and 3 s more: (VmRSS, VmHWM).
async fn daemon(dir: &Path, socket: &Path, work: &Path) -> anyhow::Result<(u64, u64)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let admin = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let log = std::fs::File::create(work.join("bomb-run.log"))?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_rollcache"))
        .args(["run", "--no-kubernetes", "--from"])
        .arg(dir)
        .arg("--socket")
        .arg(socket)
        // No pulls: the fixture's images live on registries the bench does not reach.
        .args(["--disk-budget-percent", "1", "--start-jitter", "0s"])
        .arg("--metrics-addr")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--admin-addr")
        .arg(format!("127.0.0.1:{admin}"))
        .env("RUST_LOG", "warn")
        .env_remove("KUBECONFIG")
        .env_remove("NODE_NAME")
        .env_remove("ROLLCACHE_CONFIG")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting rollcache run")?;
    let pid = child.id();
    let started = Instant::now();
    let result = async {
        loop {
            anyhow::ensure!(
                child.try_wait()?.is_none(),
                "rollcache run exited early; see bomb-run.log"
            );
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(120),
                "rollcache run did not sync within 120 s"
            );
            if let Ok(status) = bed::http_get(admin, "/status").await
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&status)
                && v["sources"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty() && a.iter().all(|s| s["synced"] == true))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        rss(pid)
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// (VmRSS, VmHWM) of `pid`, in bytes.
fn rss(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> anyhow::Result<u64> {
        let v = status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .with_context(|| format!("no {key} in /proc/{pid}/status"))?;
        Ok(v.split_whitespace()
            .next()
            .context("malformed")?
            .parse::<u64>()?
            * 1024)
    };
    Ok((kib("VmRSS:")?, kib("VmHWM:")?))
}

fn copy_dir(from: &Path, to: &PathBuf) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &target)?;
        } else {
            std::fs::copy(e.path(), target)?;
        }
    }
    Ok(())
}

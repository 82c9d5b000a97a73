//! The API server's own processes, found by pid, and their CPU seconds and peak memory over a
//! measured window: the in-test server's process, or a real server's apiserver and etcd (named by
//! `BENCH_APISERVER_PIDS`, else found by the ports they listen on when the server is local).

use std::collections::BTreeMap;

use anyhow::Context;

use crate::scale::{clock_ticks_per_second, cpu_ticks, rss};

/// One process of the server and what it is ("API server", "apiserver", "etcd").
#[derive(Clone, Debug)]
pub struct ServerProc {
    pub role: String,
    pub pid: u32,
}

/// A real server's processes, or why they were not found.
pub type Found = Result<(Vec<ServerProc>, String), String>;

/// Finds the processes of the API server at `url`: `BENCH_APISERVER_PIDS` (space-separated; a
/// process whose name holds `etcd` is etcd, any other the apiserver) if set; else, when the server
/// is on this machine's loopback, the process listening on its port and, as etcd, the process
/// listening on the loopback port its command line's `--etcd-servers` names.
pub fn find(url: &str) -> Found {
    if let Some(list) = std::env::var("BENCH_APISERVER_PIDS")
        .ok()
        .filter(|l| !l.trim().is_empty())
    {
        let mut procs = Vec::new();
        for word in list.split_whitespace() {
            let pid: u32 = word
                .parse()
                .map_err(|_| format!("BENCH_APISERVER_PIDS: {word:?} is not a pid"))?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map_err(|e| format!("BENCH_APISERVER_PIDS: no process {pid} ({e})"))?;
            let role = if comm.contains("etcd") {
                "etcd"
            } else {
                "apiserver"
            };
            procs.push(ServerProc {
                role: role.into(),
                pid,
            });
        }
        return Ok((procs, "from BENCH_APISERVER_PIDS".into()));
    }
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("the server URL {url} does not parse: {e}"))?;
    let host = uri.host().unwrap_or_default();
    if !is_loopback(host) {
        return Err(format!(
            "the server {url} is not on this machine's loopback: set BENCH_APISERVER_PIDS to its apiserver's and etcd's pids"
        ));
    }
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("http") {
            80
        } else {
            443
        });
    let apiserver = listener(port).map_err(|e| format!("the apiserver on port {port}: {e}"))?;
    let mut procs = vec![ServerProc {
        role: "apiserver".into(),
        pid: apiserver,
    }];
    let mut how = format!("apiserver: pid {apiserver}, listening on port {port}");
    match etcd_ports(apiserver) {
        Ok(ports) => {
            for p in ports {
                match listener(p) {
                    Ok(pid) if pid != apiserver => {
                        procs.push(ServerProc {
                            role: "etcd".into(),
                            pid,
                        });
                        how += &format!(
                            "; etcd: pid {pid}, listening on port {p} (its --etcd-servers)"
                        );
                    }
                    Ok(_) => how += &format!("; etcd on port {p} is the apiserver's own process"),
                    Err(e) => how += &format!("; etcd on port {p} not measured: {e}"),
                }
            }
        }
        Err(e) => how += &format!("; etcd not measured: {e}"),
    }
    Ok((procs, how))
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The loopback ports of the `--etcd-servers` on `pid`'s command line.
fn etcd_ports(pid: u32) -> Result<Vec<u16>, String> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map_err(|e| format!("cannot read the apiserver's command line: {e}"))?;
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let servers = args
        .iter()
        .enumerate()
        .find_map(|(i, a)| match a.strip_prefix("--etcd-servers") {
            Some(v) if v.starts_with('=') => Some(v[1..].to_string()),
            Some("") => args.get(i + 1).cloned(),
            _ => None,
        })
        .ok_or("the apiserver's command line has no --etcd-servers")?;
    let ports: Vec<u16> = servers
        .split(',')
        .filter_map(|s| s.parse::<http::Uri>().ok())
        .filter(|u| u.host().is_some_and(is_loopback))
        .filter_map(|u| u.port_u16())
        .collect();
    if ports.is_empty() {
        return Err(format!(
            "--etcd-servers {servers} names no port on this machine's loopback"
        ));
    }
    Ok(ports)
}

/// The pid holding the socket that listens on TCP `port` (IPv4 or IPv6), found through the
/// socket's inode in /proc/net/tcp{,6} and the processes' /proc/PID/fd links.
fn listener(port: u16) -> Result<u32, String> {
    let hex = format!(":{port:04X}");
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is field 1, st field 3 (0A: LISTEN), inode field 9.
            if f.len() > 9 && f[1].ends_with(&hex) && f[3] == "0A" {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    if inodes.is_empty() {
        return Err(format!(
            "nothing listens on port {port} in this network namespace"
        ));
    }
    let procs = std::fs::read_dir("/proc").map_err(|e| e.to_string())?;
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // Other users' fds are not readable: those processes are skipped.
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path())
                .is_ok_and(|l| inodes.iter().any(|i| l.as_os_str() == i.as_str()))
            {
                return Ok(pid);
            }
        }
    }
    Err(format!(
        "a socket listens on port {port} but no process whose /proc/PID/fd this user can read holds it"
    ))
}

/// How a process' peak RSS is taken.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Peak {
    /// VmHWM after writing 5 to /proc/PID/clear_refs at the start.
    Hwm,
    /// The largest VmRSS sampled (clear_refs not permitted).
    Sampled,
}

/// CPU and peak RSS of the server's processes from `start` on; `sample` as often as the caller
/// polls (every 100 ms in the fleet figures).
pub struct Meter {
    /// Each process, its CPU ticks and RSS at the start, how its peak is taken, the peak sampled.
    procs: Vec<(ServerProc, u64, u64, Peak, u64)>,
}

/// One role's figures (every process of that role summed).
pub struct RoleFigures {
    pub role: String,
    pub pids: Vec<u32>,
    pub cpu_seconds: f64,
    /// RSS when the meter started: what the server held before the agents (a Go heap keeps
    /// what an earlier run grew).
    pub start_rss: u64,
    pub peak_rss: u64,
    /// "VmHWM, reset at start" or "max VmRSS sampled every 100 ms".
    pub peak_how: &'static str,
}

impl Meter {
    pub fn start(procs: &[ServerProc]) -> anyhow::Result<Self> {
        let mut out = Vec::new();
        for p in procs {
            let peak = match std::fs::write(format!("/proc/{}/clear_refs", p.pid), "5") {
                Ok(()) => Peak::Hwm,
                Err(_) => Peak::Sampled,
            };
            let ticks = cpu_ticks(p.pid)
                .with_context(|| format!("reading the CPU time of {} (pid {})", p.role, p.pid))?;
            let now = rss(p.pid)?.0;
            out.push((p.clone(), ticks, now, peak, now));
        }
        Ok(Self { procs: out })
    }

    pub fn sample(&mut self) {
        for (p, _, _, _, peak) in &mut self.procs {
            if let Ok((now, _)) = rss(p.pid) {
                *peak = (*peak).max(now);
            }
        }
    }

    /// Each role's figures since `start`, in the order first seen, then their sum if more than one.
    pub fn finish(mut self) -> anyhow::Result<Vec<RoleFigures>> {
        self.sample();
        let hz = clock_ticks_per_second();
        let mut roles: BTreeMap<usize, RoleFigures> = BTreeMap::new();
        let mut order: Vec<String> = Vec::new();
        for (p, before, start_rss, how, sampled) in &self.procs {
            let cpu = (cpu_ticks(p.pid)? - before) as f64 / hz;
            let peak = match how {
                Peak::Hwm => rss(p.pid)?.1.max(*sampled),
                Peak::Sampled => *sampled,
            };
            let i = order.iter().position(|r| *r == p.role).unwrap_or_else(|| {
                order.push(p.role.clone());
                order.len() - 1
            });
            let r = roles.entry(i).or_insert_with(|| RoleFigures {
                role: p.role.clone(),
                pids: Vec::new(),
                cpu_seconds: 0.0,
                start_rss: 0,
                peak_rss: 0,
                peak_how: "VmHWM, reset at start",
            });
            r.pids.push(p.pid);
            r.cpu_seconds += cpu;
            r.start_rss += start_rss;
            r.peak_rss += peak;
            if *how == Peak::Sampled {
                r.peak_how = "max VmRSS sampled every 100 ms";
            }
        }
        let mut out: Vec<RoleFigures> = roles.into_values().collect();
        if out.len() > 1 {
            out.push(RoleFigures {
                role: out
                    .iter()
                    .map(|r| r.role.as_str())
                    .collect::<Vec<_>>()
                    .join(" + "),
                pids: out.iter().flat_map(|r| r.pids.clone()).collect(),
                cpu_seconds: out.iter().map(|r| r.cpu_seconds).sum(),
                start_rss: out.iter().map(|r| r.start_rss).sum(),
                peak_rss: out.iter().map(|r| r.peak_rss).sum(),
                peak_how: "sum of the peaks",
            });
        }
        Ok(out)
    }
}

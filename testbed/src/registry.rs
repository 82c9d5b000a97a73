//! A private OCI registry (Debian's `docker-registry`, distribution 2.8) on a free 127.0.0.1 port,
//! optionally behind htpasswd basic auth; it can be stopped and started again on the same port and
//! storage to simulate outages.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Result, TestbedError, deps, io_err, log_tail, path_str};

const START_TIMEOUT: Duration = Duration::from_secs(15);
const PORT_ATTEMPTS: usize = 5;

/// A running registry owned by the test bed.
pub struct Registry {
    dir: tempfile::TempDir,
    port: u16,
    auth: Option<(String, String)>,
    binary: PathBuf,
    child: Option<Child>,
}

impl Registry {
    /// Starts a registry; with `auth`, every request needs these basic-auth credentials.
    pub async fn start(auth: Option<(&str, &str)>) -> Result<Self> {
        let binary = deps::docker_registry()?;
        let dir = super::temp_dir("rc-reg-")?;
        let auth = auth.map(|(u, p)| (u.to_string(), p.to_string()));
        if let Some((user, pass)) = &auth {
            let out = super::run(
                Command::new(deps::htpasswd()?)
                    .arg("-Bbn")
                    .arg(user)
                    .arg(pass),
            )?;
            let path = dir.path().join("htpasswd");
            std::fs::write(&path, out).map_err(io_err(format!("writing {}", path.display())))?;
        }
        let mut me = Self {
            dir,
            port: 0,
            auth,
            binary,
            child: None,
        };
        let mut last = None;
        // The port is free when picked but another test may grab it before the registry binds.
        for _ in 0..PORT_ATTEMPTS {
            me.port = super::free_port()?;
            match me.spawn().await {
                Ok(()) => return Ok(me),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| me.start_failed("no attempt made".into())))
    }

    /// `127.0.0.1:PORT`, the registry host as it appears in image references.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The credentials the registry requires, if any.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The registry's log, including one access-log line per HTTP request.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// How many requests the access log shows whose request line contains `needle`
    /// (e.g. `"GET /v2/app/manifests/"`).
    pub fn request_count(&self, needle: &str) -> usize {
        std::fs::read_to_string(self.log_path())
            .map(|log| {
                log.lines()
                    .filter(|l| {
                        l.contains("\"GET ") || l.contains("\"HEAD ") || l.contains("\"PUT ")
                    })
                    .filter(|l| l.contains(needle))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Stops the registry (simulates an outage). Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the registry again on the same port with the same storage.
    pub async fn start_again(&mut self) -> Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        self.spawn().await
    }

    /// Writes `<hosts_dir>/127.0.0.1:PORT/hosts.toml` so that containerd reaches this registry over
    /// plain HTTP.
    pub fn write_hosts_toml(&self, hosts_dir: &Path) -> Result<()> {
        write_hosts_toml(hosts_dir, &self.addr())
    }

    fn config_yaml(&self) -> String {
        let d = path_str(self.dir.path());
        let auth = if self.auth.is_some() {
            format!("auth:\n  htpasswd:\n    realm: rollcache-testbed\n    path: {d}/htpasswd\n")
        } else {
            String::new()
        };
        format!(
            "version: 0.1\nlog:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {d}/data\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: rollcache-testbed\n{auth}",
            port = self.port
        )
    }

    async fn spawn(&mut self) -> Result<()> {
        let config = self.dir.path().join("config.yml");
        std::fs::write(&config, self.config_yaml())
            .map_err(io_err(format!("writing {}", config.display())))?;
        let args = ["serve".as_ref(), config.as_os_str()];
        self.child = Some(super::spawn_logged(&self.binary, &args, &self.log_path())?);
        let started = Instant::now();
        while started.elapsed() < START_TIMEOUT {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(self.start_failed(format!("docker-registry exited with {status}")));
            }
            if self.answers().await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.stop();
        Err(self.start_failed(format!(
            "no answer on {} within {START_TIMEOUT:?}",
            self.addr()
        )))
    }

    /// True when `GET /v2/` gets any HTTP answer (401 counts: the registry is up).
    async fn answers(&self) -> bool {
        let probe = async {
            let mut s = tokio::net::TcpStream::connect(self.addr()).await.ok()?;
            let req = format!("GET /v2/ HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr());
            s.write_all(req.as_bytes()).await.ok()?;
            let mut buf = [0u8; 12];
            s.read_exact(&mut buf).await.ok()?;
            Some(buf.starts_with(b"HTTP/1."))
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(1), probe).await,
            Ok(Some(true))
        )
    }

    fn start_failed(&self, reason: String) -> TestbedError {
        TestbedError::StartFailed {
            what: format!("docker-registry on {}", self.addr()),
            reason,
            log_tail: log_tail(&self.log_path(), 20),
        }
    }
}

/// Writes `<hosts_dir>/<addr>/hosts.toml` telling containerd to reach `addr` over plain HTTP.
pub fn write_hosts_toml(hosts_dir: &Path, addr: &str) -> Result<()> {
    let dir = hosts_dir.join(addr);
    std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
    let text = format!(
        "server = \"http://{addr}\"\n\n[host.\"http://{addr}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
    );
    let path = dir.join("hosts.toml");
    std::fs::write(&path, text).map_err(io_err(format!("writing {}", path.display())))
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

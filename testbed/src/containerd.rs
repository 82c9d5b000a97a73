//! A private containerd (1.7 or 2.x) in a temp dir: its own config, root, state and grpc socket,
//! the `native` snapshotter, registry hosts from `hosts_dir()`; killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::deps::{self, ContainerdVersion};
use super::{Result, TestbedError, io_err, log_tail, path_str};
use rollcache::node::cri_api::ImageFsInfoRequest;
use rollcache::node::cri_api::image_service_client::ImageServiceClient;

const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running containerd owned by the test bed.
pub struct Containerd {
    version: ContainerdVersion,
    binary: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Containerd {
    /// Starts the containerd chosen by `ROLLCACHE_TEST_CONTAINERD` (default 1.7).
    pub async fn start_from_env() -> Result<Self> {
        Self::start(ContainerdVersion::from_env()?).await
    }

    /// Starts containerd `version` in a fresh temp dir and waits until its CRI image service answers.
    pub async fn start(version: ContainerdVersion) -> Result<Self> {
        let binary = deps::containerd(version)?;
        let dir = super::temp_dir("rc-ctd-")?;
        let mut me = Self {
            version,
            binary,
            dir,
            child: None,
        };
        for sub in ["root", "state", "hosts", "cni/bin", "cni/conf", "opt"] {
            let p = me.dir.path().join(sub);
            std::fs::create_dir_all(&p).map_err(io_err(format!("creating {}", p.display())))?;
        }
        let config = me.config_path();
        std::fs::write(&config, me.config_toml())
            .map_err(io_err(format!("writing {}", config.display())))?;
        me.spawn().await?;
        Ok(me)
    }

    pub fn version(&self) -> ContainerdVersion {
        self.version
    }

    /// The grpc socket (containerd API and CRI).
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// The registry hosts dir (`<dir>/<host:port>/hosts.toml`), see `Registry::write_hosts_toml`.
    pub fn hosts_dir(&self) -> PathBuf {
        self.dir.path().join("hosts")
    }

    /// containerd's stdout and stderr.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("containerd.log")
    }

    /// The temp dir holding config, root, state and socket.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops and starts containerd again on the same root, so pulled images survive.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn().await
    }

    /// Stops containerd (SIGTERM, then SIGKILL after a grace period). Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // A graceful stop lets containerd close its database cleanly before a restart.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    fn config_toml(&self) -> String {
        let d = path_str(self.dir.path());
        let common = format!(
            r#"root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[plugins."io.containerd.nri.v1.nri"]
  disable = true
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"#
        );
        // Port 0: parallel containerds must not fight over the CRI streaming port (10010).
        let streaming = r#"  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"#;
        match self.version {
            ContainerdVersion::V1_7 => format!(
                r#"version = 2
{common}[plugins."io.containerd.grpc.v1.cri"]
{streaming}[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "native"
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "{d}/hosts"
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "{d}/cni/bin"
  conf_dir = "{d}/cni/conf"
"#
            ),
            ContainerdVersion::V2 => format!(
                r#"version = 3
{common}[plugins."io.containerd.grpc.v1.cri"]
{streaming}[plugins."io.containerd.cri.v1.images"]
  snapshotter = "native"
[plugins."io.containerd.cri.v1.images".registry]
  config_path = "{d}/hosts"
[plugins."io.containerd.cri.v1.runtime".cni]
  bin_dirs = ["{d}/cni/bin"]
  conf_dir = "{d}/cni/conf"
# Without this, CRI pulls with the native snapshotter fail with "no unpack platforms defined".
[[plugins."io.containerd.transfer.v1.local".unpack_config]]
  platform = "linux/amd64"
  snapshotter = "native"
  differ = "walking"
"#
            ),
        }
    }

    async fn spawn(&mut self) -> Result<()> {
        let _ = std::fs::remove_file(self.socket());
        let config = self.config_path();
        let args = ["--config".as_ref(), config.as_os_str()];
        self.child = Some(super::spawn_logged(&self.binary, &args, &self.log_path())?);
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let started = Instant::now();
        let channel = rollcache::node::unix_channel(&self.socket());
        let mut client = ImageServiceClient::new(channel);
        let mut last = String::from("socket not created yet");
        while started.elapsed() < START_TIMEOUT {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(self.start_failed(format!("containerd exited with {status}")));
            }
            if self.socket().exists() {
                let mut req = tonic::Request::new(ImageFsInfoRequest {});
                req.set_timeout(Duration::from_secs(1));
                // The CRI plugin initialises after the socket opens; wait until it answers.
                match client.image_fs_info(req).await {
                    Ok(_) => return Ok(()),
                    Err(status) => last = status.message().to_string(),
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.stop();
        Err(self.start_failed(format!(
            "CRI image service did not answer within {START_TIMEOUT:?} (last: {last})"
        )))
    }

    fn start_failed(&self, reason: String) -> TestbedError {
        TestbedError::StartFailed {
            what: format!("containerd {} ({})", self.version, self.binary.display()),
            reason,
            log_tail: log_tail(&self.log_path(), 20),
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

//! rollcache's test bed, never shipped: containerd, an OCI registry and a Kubernetes API server
//! speaking the real wire protocol, each started on unix sockets / 127.0.0.1 in a temp dir. Used by
//! the tests, the benchmarks and the demo (`rollcache-demo`); never touches the system containerd.

pub mod apiserver;
pub mod bombs;
pub mod containerd;
pub mod demo;
pub mod deps;
pub mod history;
pub mod oci;
pub mod registry;

/// Why the test bed could not be set up or driven.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    #[error("{what} is missing ({looked}): run `scripts/install-deps.sh` (or `make test`) first")]
    Missing { what: String, looked: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} did not start: {reason}; last log lines:\n{log_tail}")]
    StartFailed {
        what: String,
        reason: String,
        log_tail: String,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("invalid test bed setting {name}={value}: {hint}")]
    Setting {
        name: String,
        value: String,
        hint: String,
    },
}

pub type Result<T, E = TestbedError> = std::result::Result<T, E>;

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TestbedError {
    let what = what.into();
    move |source| TestbedError::Io { what, source }
}

/// Starts `binary` with `args`, stdin closed and stdout and stderr appended to `log`.
pub(crate) fn spawn_logged(
    binary: &std::path::Path,
    args: &[&std::ffi::OsStr],
    log: &std::path::Path,
) -> Result<std::process::Child> {
    let out = std::fs::File::options()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io_err(format!("opening {}", log.display())))?;
    let err = out
        .try_clone()
        .map_err(io_err(format!("duplicating {}", log.display())))?;
    std::process::Command::new(binary)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(io_err(format!("starting {}", binary.display())))
}

/// The last `lines` lines of a log file, for start-up failure messages.
pub(crate) fn log_tail(path: &std::path::Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// A fresh temp dir under the system temp dir. Kept short because unix socket paths are limited to
/// about 100 bytes.
pub(crate) fn temp_dir(prefix: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(std::env::temp_dir())
        .map_err(io_err(format!(
            "creating a temp dir in {}",
            std::env::temp_dir().display()
        )))
}

/// Runs a command to completion, returning stdout; a non-zero exit becomes `TestbedError::Command`.
pub(crate) fn run(cmd: &mut std::process::Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(io_err(format!("running {shown}")))?;
    if !out.status.success() {
        return Err(TestbedError::Command {
            command: shown,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A free TCP port on 127.0.0.1 at the time of asking (the caller retries if it is taken meanwhile).
pub(crate) fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io_err("binding 127.0.0.1:0"))?;
    Ok(l.local_addr()
        .map_err(io_err("reading a bound address"))?
        .port())
}

pub(crate) fn path_str(p: &std::path::Path) -> String {
    p.display().to_string()
}

//! Locates the binaries the test bed runs: containerd (1.7 or 2.x, unpacked by
//! `scripts/install-deps.sh` into the cache dir), runc, docker-registry, skopeo and htpasswd, and
//! the real `kubectl` and `helm` the manifest and chart tests render with (also in the cache dir).

use std::path::{Path, PathBuf};

use super::{Result, TestbedError};

/// The env var choosing the containerd version of the test bed (`1.7`, the default, or `2`).
pub const CONTAINERD_VERSION_ENV: &str = "ROLLCACHE_TEST_CONTAINERD";
/// The env var overriding the cache dir (default `<repo>/.cache`).
pub const CACHE_DIR_ENV: &str = "ROLLCACHE_CACHE_DIR";

/// Which containerd the test bed runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerdVersion {
    /// containerd 1.7 (Debian trixie): config version 2, CRI plugin `io.containerd.grpc.v1.cri`.
    V1_7,
    /// containerd 2.x (Debian sid): config version 3, CRI image plugin `io.containerd.cri.v1.images`.
    V2,
}

impl ContainerdVersion {
    /// The version chosen by `ROLLCACHE_TEST_CONTAINERD` (default 1.7).
    pub fn from_env() -> Result<Self> {
        match std::env::var(CONTAINERD_VERSION_ENV) {
            Err(_) => Ok(Self::V1_7),
            Ok(v) => v.parse(),
        }
    }

    /// The folder name under `<cache>/containerd/`.
    pub fn dir_name(self) -> &'static str {
        match self {
            Self::V1_7 => "1.7",
            Self::V2 => "2",
        }
    }
}

impl std::str::FromStr for ContainerdVersion {
    type Err = TestbedError;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "" | "1.7" | "1" => Ok(Self::V1_7),
            "2" | "2.x" | "2.1" => Ok(Self::V2),
            other => Err(TestbedError::Setting {
                name: CONTAINERD_VERSION_ENV.into(),
                value: other.into(),
                hint: "use `1.7` or `2`".into(),
            }),
        }
    }
}

impl std::fmt::Display for ContainerdVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.dir_name())
    }
}

/// The cache dir holding the unpacked containerd packages.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(CACHE_DIR_ENV) {
        return PathBuf::from(dir);
    }
    // Built from this repository: its `.cache`; otherwise (an installed binary) the working dir's.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache");
    if repo.is_dir() {
        repo
    } else {
        PathBuf::from(".cache")
    }
}

/// The containerd binary of `version` from the cache dir.
pub fn containerd(version: ContainerdVersion) -> Result<PathBuf> {
    let path = cache_dir()
        .join("containerd")
        .join(version.dir_name())
        .join("usr/bin/containerd");
    if path.is_file() {
        Ok(path)
    } else {
        Err(TestbedError::Missing {
            what: format!("containerd {version}"),
            looked: path.display().to_string(),
        })
    }
}

/// The real Kubernetes clients `scripts/install-deps.sh` puts in `<cache>/kube/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KubeClient {
    /// kubectl 1.35 (`kubectl kustomize` renders `daemonset/`).
    Kubectl,
    /// helm 4 (`helm template` and `helm lint` on `charts/rollcache`).
    Helm,
}

/// `client` from the cache dir. Never from PATH: the tests pin the versions install-deps fetches,
/// and a system kubectl's older kustomize renders differently.
pub fn kube_client(client: KubeClient) -> Result<PathBuf> {
    let name = match client {
        KubeClient::Kubectl => "kubectl",
        KubeClient::Helm => "helm",
    };
    let path = cache_dir().join("kube").join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(TestbedError::Missing {
            what: name.to_string(),
            looked: path.display().to_string(),
        })
    }
}

/// A system binary from PATH (or /usr/sbin, /sbin, where Debian puts runc).
pub fn system_binary(name: &str) -> Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from));
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| TestbedError::Missing {
            what: name.to_string(),
            looked: "PATH, /usr/sbin, /sbin".into(),
        })
}

pub fn runc() -> Result<PathBuf> {
    system_binary("runc")
}

pub fn docker_registry() -> Result<PathBuf> {
    system_binary("docker-registry")
}

pub fn skopeo() -> Result<PathBuf> {
    system_binary("skopeo")
}

pub fn htpasswd() -> Result<PathBuf> {
    system_binary("htpasswd")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(
            "1.7".parse::<ContainerdVersion>().unwrap(),
            ContainerdVersion::V1_7
        );
        assert_eq!(
            "2".parse::<ContainerdVersion>().unwrap(),
            ContainerdVersion::V2
        );
        assert!("3".parse::<ContainerdVersion>().is_err());
    }
}

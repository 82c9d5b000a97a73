//! Shared set-up of the node integration tests: a private containerd (version from
//! `ROLLCACHE_TEST_CONTAINERD`), a registry wired to it, an OCI layout to build images in; and for
//! the daemon tests an in-process `rollcache run`, a fast pusher and a proxy (history objects come
//! from `rollcache_testbed::history`); the binary run against a test API server (`cli`).
#![allow(dead_code)]

pub mod cli;
pub mod daemon;
pub mod logs;
pub mod proxy;
pub mod push;

use std::time::{Duration, Instant};

use rollcache::node::{Deadlines, Node};
use rollcache_testbed::TestbedError;
use rollcache_testbed::containerd::Containerd;
use rollcache_testbed::oci::{BuiltImage, ImageSpec, LayerSpec, OciLayout, Platform};
use rollcache_testbed::registry::Registry;

pub const MIB: u64 = 1024 * 1024;

/// Unwraps a test bed result; a missing test bed fails the test (never skips it).
pub fn need<T>(r: Result<T, TestbedError>) -> T {
    r.unwrap_or_else(|e| {
        panic!("test bed not available: {e}\n(run `make test`, which installs it)")
    })
}

pub fn deadlines() -> Deadlines {
    Deadlines {
        call: Duration::from_secs(10),
        pull: Duration::from_secs(120),
    }
}

pub struct Bed {
    pub containerd: Containerd,
    pub registry: Registry,
    pub node: Node,
    pub layout: OciLayout,
    _dir: tempfile::TempDir,
}

impl Bed {
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    pub async fn start_with(auth: Option<(&str, &str)>) -> Self {
        let containerd = need(Containerd::start_from_env().await);
        let registry = need(Registry::start(auth).await);
        need(registry.write_hosts_toml(&containerd.hosts_dir()));
        let dir = tempfile::tempdir().expect("temp dir");
        let layout = need(OciLayout::create(dir.path()));
        let node = Node::connect(containerd.socket(), deadlines());
        Self {
            containerd,
            registry,
            node,
            layout,
            _dir: dir,
        }
    }

    /// `127.0.0.1:PORT/<name_tag>`.
    pub fn reference(&self, name_tag: &str) -> String {
        format!("{}/{name_tag}", self.registry.addr())
    }

    /// Builds and pushes one amd64 image; returns its reference, build facts and pushed digest.
    pub fn push(&mut self, spec: &ImageSpec, name_tag: &str) -> (String, BuiltImage, String) {
        let built = need(self.layout.image(spec));
        let creds = self
            .registry
            .credentials()
            .map(|(u, p)| (u.to_string(), p.to_string()));
        let creds = creds.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
        let digest =
            need(
                self.layout
                    .tag_and_push(&built.manifest, &self.registry.addr(), name_tag, creds),
            );
        assert_eq!(
            digest, built.manifest.digest,
            "the registry holds the manifest as built"
        );
        (self.reference(name_tag), built, digest)
    }

    /// A small image: a shared 1 MiB base plus an own layer from `seed`.
    pub fn push_small(&mut self, seed: u64, name_tag: &str) -> (String, BuiltImage, String) {
        self.push(&small(seed, name_tag), name_tag)
    }
}

pub fn small(seed: u64, label: &str) -> ImageSpec {
    ImageSpec {
        platform: Platform::linux_amd64(),
        layers: vec![
            LayerSpec::new(1, MIB, 50),
            LayerSpec::new(seed, 256 * 1024, 50),
        ],
        label: label.into(),
    }
}

/// Polls `f` every 10 ms until it returns true; returns the time it took.
pub async fn wait_for(within: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

//! A private test bed to try `rollcache run` by hand against a cluster: N containerd instances (one
//! per simulated node) and a registry with a few pushed images. Prints the sockets and the registry
//! address, then waits for Ctrl-C and cleans up.
//!
//! cargo run --example testbed -- 2 demo/app:1.0 demo/app:1.1

use std::time::Duration;

use rollcache_testbed::containerd::Containerd;
use rollcache_testbed::deps::ContainerdVersion;
use rollcache_testbed::oci::{ImageSpec, LayerSpec, OciLayout, Platform};
use rollcache_testbed::registry::Registry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let nodes: usize = args.next().unwrap_or_else(|| "1".into()).parse()?;
    let images: Vec<String> = args.collect();
    let version = ContainerdVersion::from_env()?;
    let registry = Registry::start(None).await?;
    let mut beds = Vec::new();
    for _ in 0..nodes {
        let c = Containerd::start(version).await?;
        registry.write_hosts_toml(&c.hosts_dir())?;
        beds.push(c);
    }
    let work = tempfile::tempdir()?;
    let mut layout = OciLayout::create(work.path())?;
    for (i, name) in images.iter().enumerate() {
        let spec = ImageSpec {
            platform: Platform::linux_amd64(),
            layers: vec![
                LayerSpec::new(1, 4 << 20, 50),
                LayerSpec::new(10 + i as u64, 1 << 20, 50),
            ],
            label: name.clone(),
        };
        let built = layout.image(&spec)?;
        layout.tag_and_push(&built.manifest, &registry.addr(), name, None)?;
        println!("IMAGE={}/{name}", registry.addr());
    }
    println!("REGISTRY={}", registry.addr());
    for (i, c) in beds.iter().enumerate() {
        println!("SOCKET_{i}={}", c.socket().display());
    }
    println!("READY (Ctrl-C to stop)");
    tokio::signal::ctrl_c().await?;
    drop(beds);
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}

//! `rollcache demo`: a private containerd and registry, a few pushed images, and `rollcache node`
//! pull / pin / list / unpin against them, including a pull while the registry is down.

use std::time::Duration;

use rollcache::testbed::containerd::Containerd;
use rollcache::testbed::oci::{ImageSpec, LayerSpec, OciLayout, Platform};
use rollcache::testbed::registry::Registry;

use super::{CliError, DemoArgs, NodeAction, NodeArgs, Output};

const MIB: u64 = 1024 * 1024;

pub async fn run(args: &DemoArgs) -> Result<(), CliError> {
    let version = args.containerd.parse()?;
    say(&format!(
        "starting a private containerd {version} and an OCI registry"
    ));
    let containerd = Containerd::start(version).await?;
    let registry = Registry::start(None).await?;
    registry.write_hosts_toml(&containerd.hosts_dir())?;
    let reg = registry.addr();

    say("building images (two releases of `web` share a base layer, `tool` is multi-arch)");
    let work = tempfile::tempdir().map_err(CliError::Output)?;
    let mut layout = OciLayout::create(work.path())?;
    let base = LayerSpec::new(1, 20 * MIB, 50);
    let image = |seed: u64, label: &str, platform: Platform| ImageSpec {
        platform,
        layers: vec![base, LayerSpec::new(seed, 2 * MIB, 50)],
        label: label.into(),
    };
    let mut refs = Vec::new();
    for (seed, name) in [
        (10, "demo/web:1.0"),
        (11, "demo/web:1.1"),
        (12, "demo/worker:2.0"),
    ] {
        let built = layout.image(&image(seed, name, Platform::linux_amd64()))?;
        layout.tag_and_push(&built.manifest, &reg, name, None)?;
        refs.push(format!("{reg}/{name}"));
    }
    let index = layout.index(&[
        image(20, "tool", Platform::linux_amd64()),
        image(21, "tool", Platform::linux_arm64()),
    ])?;
    layout.tag_and_push(&index.index, &reg, "demo/tool:1", None)?;
    refs.push(format!("{reg}/demo/tool:1"));

    let socket = containerd.socket();
    let cmd = |action: NodeAction| NodeArgs {
        socket: socket.clone(),
        output: Output::Table,
        call_timeout: Duration::from_secs(10),
        pull_timeout: Duration::from_secs(600),
        action,
    };
    let images = refs.clone();
    step(cmd(NodeAction::Pull {
        images: images.clone(),
        username: None,
        password: None,
    }))
    .await?;
    step(cmd(NodeAction::Pin {
        images: images[..3].to_vec(),
    }))
    .await?;
    step(cmd(NodeAction::List)).await?;
    step(cmd(NodeAction::Check)).await?;

    say("the registry goes down: cached images are still there, no registry needed");
    drop(registry);
    step(cmd(NodeAction::Pull {
        images: images.clone(),
        username: None,
        password: None,
    }))
    .await?;

    say("an old release is no longer needed: rollcache unpins it (it never deletes)");
    step(cmd(NodeAction::Unpin {
        images: vec![images[0].clone()],
    }))
    .await?;
    step(cmd(NodeAction::List)).await?;
    say("done; the private containerd and registry are stopped");
    Ok(())
}

fn say(text: &str) {
    println!("\n## {text}");
}

async fn step(args: NodeArgs) -> Result<(), CliError> {
    let words = match &args.action {
        NodeAction::List => "list".to_string(),
        NodeAction::Check => "check".to_string(),
        NodeAction::Pull { images, .. } => format!("pull {}", images.join(" ")),
        NodeAction::Pin { images } => format!("pin {}", images.join(" ")),
        NodeAction::Unpin { images } => format!("unpin {}", images.join(" ")),
    };
    println!(
        "$ rollcache node --socket {} {words}",
        args.socket.display()
    );
    super::node(&args, &mut std::io::stdout().lock()).await
}

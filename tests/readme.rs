//! The README stays true to the binary: every config option, every flag of `rollcache run` with its
//! environment variable, and every subcommand appear in it.

use clap::Args;
use rollcache::commands::run::RunArgs;
use rollcache::config::Config;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

fn keys(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
    for (k, v) in v.as_object().unwrap() {
        let name = format!("{prefix}{k}");
        match v {
            serde_json::Value::Object(_) => keys(&format!("{name}."), v, out),
            _ => out.push(name),
        }
    }
}

#[test]
fn config_reference_covers_every_option() {
    let text = readme();
    let mut all = Vec::new();
    keys(
        "",
        &serde_json::to_value(Config::default()).unwrap(),
        &mut all,
    );
    assert!(all.len() > 20, "{all:?}");
    let missing: Vec<_> = all
        .iter()
        .filter(|k| !text.contains(&format!("| `{k}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "options missing from the README's reference: {missing:?}"
    );
}

#[test]
fn every_run_flag_and_env_var_is_documented() {
    let text = readme();
    let cmd = RunArgs::augment_args(clap::Command::new("run"));
    let mut missing = Vec::new();
    for arg in cmd.get_arguments() {
        if let Some(long) = arg.get_long()
            && !text.contains(&format!("`--{long}`"))
        {
            missing.push(format!("--{long}"));
        }
        if let Some(env) = arg.get_env()
            && !text.contains(&format!("`{}`", env.to_string_lossy()))
        {
            missing.push(env.to_string_lossy().into_owned());
        }
    }
    assert!(missing.is_empty(), "undocumented: {missing:?}");
}

#[test]
fn every_subcommand_is_documented() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rollcache"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let text = readme();
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.len() >= 6, "{help}");
    for c in commands {
        assert!(
            text.contains(&format!("`rollcache {c}")),
            "`rollcache {c}` missing from the README"
        );
    }
}

//! The README stays true to the binary: every config option, every flag of `rollcache run` with its
//! environment variable (and those of `rollcache index`), and every subcommand appear in it.

use clap::Args;
use rollcache::commands::index::IndexArgs;
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
    undocumented_flags(RunArgs::augment_args(clap::Command::new("run")));
}

#[test]
fn every_index_flag_and_env_var_is_documented() {
    undocumented_flags(IndexArgs::augment_args(clap::Command::new("index")));
}

fn undocumented_flags(cmd: clap::Command) {
    let text = readme();
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

/// `check-rollback` and `cluster`, whose flags and exit codes scripts depend on: every flag named.
#[test]
fn every_flag_of_the_cluster_commands_is_documented() {
    use rollcache::commands::{check_rollback::CheckRollbackArgs, cluster::ClusterArgs};
    let text = readme();
    let mut missing = Vec::new();
    for cmd in [
        CheckRollbackArgs::augment_args(clap::Command::new("check-rollback")),
        ClusterArgs::augment_args(clap::Command::new("cluster")),
    ] {
        for arg in cmd.get_arguments() {
            if let Some(long) = arg.get_long()
                && !text.contains(&format!("`--{long}"))
                && !text.contains(&format!("/`--{long}`"))
            {
                missing.push(format!("{} --{long}", cmd.get_name()));
            }
            if let Some(env) = arg.get_env()
                && !text.contains(&format!("`{}`", env.to_string_lossy()))
            {
                missing.push(env.to_string_lossy().into_owned());
            }
        }
    }
    assert!(missing.is_empty(), "undocumented: {missing:?}");
    for code in ["`0` when", "`1` when", "`2` when"] {
        assert!(
            text.contains(code),
            "check-rollback's exit status {code} undocumented"
        );
    }
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
    assert!(commands.len() >= 5, "{help}");
    for c in commands {
        assert!(
            text.contains(&format!("`rollcache {c}")),
            "`rollcache {c}` missing from the README"
        );
    }
}

/// Every `.rs` file under `dir`, recursively.
fn rust_sources(dir: &std::path::Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(std::fs::read_to_string(&path).unwrap());
        }
    }
}

/// The README's safety section names, for each of DESIGN's ten rules, the tests that hold it (and
/// the control tests in which the unpin is right); every test it names exists.
#[test]
fn safety_rules_name_tests_that_exist() {
    let text = readme();
    let section: String = text
        .split("\n## Safety rules")
        .nth(1)
        .expect("README has a `## Safety rules` section")
        .split("\n## ")
        .next()
        .unwrap()
        .to_string();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut sources = Vec::new();
    for dir in ["src", "core", "testbed", "tests"] {
        rust_sources(&root.join(dir), &mut sources);
    }
    let mut rules_seen = Vec::new();
    let mut missing = Vec::new();
    let mut named = 0;
    for row in section.lines().filter(|l| l.starts_with("| ")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let Some(rule) = cells.get(1).and_then(|c| c.parse::<u32>().ok()) else {
            continue;
        };
        rules_seen.push(rule);
        // Columns: rule number, the rule, the tests that hold it, the controls.
        let test_cells = cells[3..].join(" ");
        let tests: Vec<&str> = test_cells
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|t| !t.is_empty())
            .collect();
        assert!(!tests.is_empty(), "rule {rule} names no test: {row}");
        for t in tests {
            named += 1;
            let def = format!("fn {t}(");
            if !sources.iter().any(|s| s.contains(&def)) {
                missing.push(format!("rule {rule}: {t}"));
            }
        }
    }
    assert_eq!(rules_seen, (1..=10).collect::<Vec<_>>(), "one row per rule");
    assert!(named >= 20, "only {named} tests named");
    assert!(
        missing.is_empty(),
        "tests named in the README that do not exist: {missing:?}"
    );
}

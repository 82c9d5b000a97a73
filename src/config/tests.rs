use super::*;

#[test]
fn empty_file_gives_defaults() {
    let c = Config::from_file(&FileConfig::parse("").unwrap()).unwrap();
    assert_eq!(c, Config::default());
    c.validate().unwrap();
}

#[test]
fn file_values_and_durations() {
    let f = FileConfig::parse(
        "extra_images: [busybox:1.36]\nunpin_grace: 90s\nmax_concurrent_pulls: 4\nsources:\n  pods: false\n",
    )
    .unwrap();
    let c = Config::from_file(&f).unwrap();
    assert_eq!(c.extra_images, vec!["busybox:1.36"]);
    assert_eq!(c.unpin_grace, Duration::from_secs(90));
    assert_eq!(c.max_concurrent_pulls, 4);
    assert!(!c.sources.pods);
    assert!(
        c.sources.helm_secrets,
        "unset source keys keep their default"
    );
}

#[test]
fn unknown_key_is_an_error_naming_it() {
    let e = FileConfig::parse("extra_image: [x]\n").unwrap_err();
    assert!(e.contains("extra_image"), "{e}");
}

#[test]
fn unpin_grace_has_a_minimum_and_short_ones_warn() {
    let c = Config {
        unpin_grace: Duration::from_millis(500),
        ..Config::default()
    };
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.contains("unpin_grace") && e.contains("at least 1s"),
        "{e}"
    );
    let c = Config {
        unpin_grace: Duration::from_secs(1),
        ..Config::default()
    };
    c.validate().expect("1s is allowed");
    assert!(
        c.warnings()[0].contains("unpin_grace"),
        "{:?}",
        c.warnings()
    );
    assert!(Config::default().warnings().is_empty());
}

#[test]
fn durations_too_long_for_a_clock_are_errors_not_panics() {
    for option in [
        "pull_timeout",
        "unpin_grace",
        "resync_interval",
        "start_jitter",
        "backoff_initial",
        "backoff_max",
    ] {
        for value in ["1000000000000y", "500000000y", "11y"] {
            let yaml = if option == "backoff_initial" {
                format!("{option}: {value}\nbackoff_max: {value}\n")
            } else {
                format!("{option}: {value}\n")
            };
            let file: FileConfig = serde_saphyr::from_str(&yaml).expect("YAML");
            let e = Config::from_file(&file)
                .and_then(|c| c.validate().map(|()| c))
                .expect_err(&yaml)
                .to_string();
            assert!(e.contains(option), "{yaml}: {e}");
        }
    }
    let file: FileConfig = serde_saphyr::from_str("unpin_grace: 9y\n").expect("YAML");
    Config::from_file(&file)
        .unwrap()
        .validate()
        .expect("9 years is allowed");
}

#[test]
fn bad_duration_names_option() {
    let f = FileConfig::parse("unpin_grace: soon\n").unwrap();
    let e = Config::from_file(&f).unwrap_err().to_string();
    assert!(e.contains("unpin_grace") && e.contains("soon"), "{e}");
}

#[test]
fn validation_rules() {
    let bad = [
        Config {
            max_concurrent_pulls: 0,
            ..Config::default()
        },
        Config {
            disk_budget_percent: 101,
            ..Config::default()
        },
        Config {
            kubernetes: false,
            ..Config::default()
        },
        Config {
            admin_addr: Config::default().metrics_addr,
            ..Config::default()
        },
        Config {
            namespaces: vec!["Bad_NS".into()],
            ..Config::default()
        },
        Config {
            backoff_initial: Duration::from_secs(10),
            backoff_max: Duration::from_secs(1),
            ..Config::default()
        },
    ];
    for c in bad {
        assert!(c.validate().is_err(), "{c:?}");
    }
}

#[test]
fn restart_only_changes_are_named() {
    let a = Config::default();
    let mut b = a.clone();
    b.extra_images.push("x".into());
    assert!(a.restart_only_changes(&b).is_empty());
    b.containerd_socket = "/other.sock".into();
    assert_eq!(a.restart_only_changes(&b), vec!["containerd_socket"]);
}

#[test]
fn history_from_and_inventory_namespace_from_file_and_their_checks() {
    let f = FileConfig::parse("history_from: inventory\ninventory_namespace: fleet\n").unwrap();
    let c = Config::from_file(&f).unwrap();
    assert_eq!(c.history_from, HistoryFrom::Inventory);
    assert_eq!(c.inventory_namespace(), "fleet");
    c.validate().unwrap();
    let e = FileConfig::parse("history_from: everywhere\n").unwrap_err();
    assert!(e.contains("everywhere") || e.contains("variant"), "{e}");
    let bad = Config {
        inventory_namespace: Some("Not_A_Namespace".into()),
        ..c.clone()
    };
    let e = bad.validate().unwrap_err().to_string();
    assert!(e.contains("inventory_namespace"), "{e}");
    let offline = Config {
        kubernetes: false,
        from_dir: Some("/d".into()),
        ..c
    };
    let e = offline.validate().unwrap_err().to_string();
    assert!(e.contains("history_from"), "{e}");
}

//! The alerts in daemonset/monitoring/prometheusrule.yaml: each links a runbook section that exists in
//! docs/ROLLBACK.md, its expression is well formed and keeps every label its text names, and the
//! needs-registry alert groups by exactly the labels rollcache's series carries.

use std::collections::BTreeSet;
use std::path::Path;

use rollcache::metrics::Metrics;
use rollcache::report::Report;
use serde_json::{Value, json};

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn rules() -> Vec<Value> {
    let doc: Value = serde_saphyr::from_str(&read("daemonset/monitoring/prometheusrule.yaml"))
        .expect("prometheusrule.yaml is YAML");
    let rules: Vec<Value> = doc["spec"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").clone())
        .collect();
    assert!(rules.len() >= 9, "{} rules", rules.len());
    rules
}

fn text<'a>(rule: &'a Value, pointer: &str) -> &'a str {
    rule.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{}: no {pointer}", rule["alert"]))
}

/// The anchor GitHub gives a heading: lower case, punctuation other than `-` and `_` dropped,
/// spaces turned into `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown document's headings, code blocks left out.
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut in_code = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            let anchor = slug(line.trim_start_matches('#'));
            assert!(out.insert(anchor.clone()), "two headings make #{anchor}");
        }
    }
    out
}

/// The anchors that `](TARGET#ANCHOR)` links to `target` name (`target` empty: the same document).
fn links_into(markdown: &str, target: &str) -> Vec<String> {
    let needle = format!("]({target}#");
    markdown
        .match_indices(&needle)
        .map(|(i, _)| {
            let rest = &markdown[i + needle.len()..];
            rest[..rest.find(')').expect("link closes")].to_owned()
        })
        .collect()
}

/// The labels the first `by (...)` of an expression keeps.
fn kept_labels(expr: &str) -> Option<BTreeSet<String>> {
    let start = expr.find("by (")? + "by (".len();
    let end = start + expr[start..].find(')')?;
    Some(
        expr[start..end]
            .split(',')
            .map(|l| l.trim().to_owned())
            .collect(),
    )
}

/// The label names `{{ $labels.NAME }}` templates read.
fn template_labels(text: &str) -> BTreeSet<String> {
    text.match_indices("$labels.")
        .map(|(i, m)| {
            let rest = &text[i + m.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            rest[..end].to_owned()
        })
        .collect()
}

/// Brackets nest and close, quotes close: the shape every PromQL expression must have.
fn well_formed(expr: &str) -> Result<(), String> {
    let mut open = Vec::new();
    let mut quoted = false;
    for c in expr.chars() {
        match c {
            '"' => quoted = !quoted,
            _ if quoted => {}
            '(' | '{' | '[' => open.push(c),
            ')' | '}' | ']' => {
                let want = match c {
                    ')' => '(',
                    '}' => '{',
                    _ => '[',
                };
                if open.pop() != Some(want) {
                    return Err(format!("`{c}` closes nothing it opened"));
                }
            }
            _ => {}
        }
    }
    match (quoted, open.last()) {
        (true, _) => Err("a quote is left open".into()),
        (_, Some(c)) => Err(format!("`{c}` is left open")),
        _ => Ok(()),
    }
}

#[test]
fn every_alert_links_an_existing_section_of_the_rollback_runbook() {
    let runbook = read("docs/ROLLBACK.md");
    let sections = anchors(&runbook);
    let mut linked = BTreeSet::new();
    for rule in rules() {
        let name = text(&rule, "/alert");
        let url = text(&rule, "/annotations/runbook_url");
        let (path, anchor) = url
            .split_once('#')
            .unwrap_or_else(|| panic!("{name}: runbook_url {url} names no section"));
        assert_eq!(path, "docs/ROLLBACK.md", "{name}");
        // Named after the alert, so that the link stays when the text around it changes.
        assert_eq!(anchor, name.to_lowercase(), "{name}");
        assert!(
            sections.contains(anchor),
            "{name}: docs/ROLLBACK.md has no section #{anchor}"
        );
        linked.insert(anchor.to_owned());
    }
    // Every alert section in the runbook belongs to an alert that still exists.
    let alert_sections: BTreeSet<String> = sections
        .iter()
        .filter(|a| a.starts_with("rollcache"))
        .cloned()
        .collect();
    assert_eq!(alert_sections, linked);
    // Links into the runbook, from itself and from the other documents, land on a section.
    for (doc, target) in [
        ("docs/ROLLBACK.md", ""),
        ("docs/METRICS.md", "ROLLBACK.md"),
        ("README.md", "docs/ROLLBACK.md"),
    ] {
        let links = links_into(&read(doc), target);
        assert!(!links.is_empty(), "{doc} links nowhere into the runbook");
        for anchor in links {
            assert!(sections.contains(&anchor), "{doc}: #{anchor} is no section");
        }
    }
}

#[test]
fn alert_expressions_are_well_formed_and_keep_the_labels_their_text_names() {
    for rule in rules() {
        let name = text(&rule, "/alert");
        let expr = text(&rule, "/expr");
        well_formed(expr).unwrap_or_else(|e| panic!("{name}: {e} in {expr}"));
        assert!(
            [" > ", " == ", " < "].iter().any(|op| expr.contains(op)),
            "{name}: no comparison, so it fires on every series: {expr}"
        );
        let kept = kept_labels(expr).unwrap_or_else(|| panic!("{name}: no `by (...)` in {expr}"));
        assert!(kept.contains("node"), "{name}: alerts group by node");
        for a in ["summary", "description"] {
            let t = text(&rule, &format!("/annotations/{a}"));
            assert_eq!(
                t.matches("{{").count(),
                t.matches("}}").count(),
                "{name}: {a} has an unclosed template"
            );
            let named = template_labels(t);
            assert!(
                named.is_subset(&kept),
                "{name}: {a} names {named:?}, the expression keeps only {kept:?}"
            );
        }
    }
    // The checks above see a broken expression when there is one.
    assert!(well_formed("max by (node) (rollcache_x{a=\"b\"}").is_err());
    assert!(well_formed("max by (node) (rollcache_x{a=\"b})").is_err());
}

#[test]
fn needs_registry_alert_names_the_container_and_the_fix() {
    let rules = rules();
    let rule = rules
        .iter()
        .find(|r| r["alert"] == "RollcacheRevisionNeedsRegistry")
        .expect("an alert on revisions that need the registry");
    assert_eq!(text(rule, "/labels/severity"), "info");
    let expr = text(rule, "/expr");
    assert!(
        expr.contains("rollcache_revision_needs_registry\n")
            || expr.contains("rollcache_revision_needs_registry)"),
        "{expr}"
    );

    // The labels of the series rollcache really exposes, plus the PodMonitor's `node`.
    let m = Metrics::new();
    let report: Report = serde_json::from_value(json!({
        "workloads": [{"kind": "StatefulSet", "namespace": "bl45p", "name": "bl45p-mo-ioc-01",
            "revisions": [{"revision": 4, "current": false, "sources": ["controller_revisions"],
                "readiness": "needs_registry", "reasons": [],
                "images": [{"container": "load-config", "reference": "ghcr.io/ec/config:latest",
                    "state": "ready", "pull_policy": "Always"}]}]}],
        "summary": {}
    }))
    .expect("a report");
    m.set_needs_registry(&report);
    let exposition = m.encode();
    let line = exposition
        .lines()
        .find(|l| l.starts_with("rollcache_revision_needs_registry{"))
        .unwrap_or_else(|| panic!("no series in {exposition}"));
    let mut exposed: BTreeSet<String> = line[line.find('{').unwrap() + 1..line.find('}').unwrap()]
        .split(',')
        .map(|kv| kv.split_once('=').expect("label=value").0.to_owned())
        .collect();
    exposed.insert("node".into());
    assert_eq!(
        kept_labels(expr).expect("by (...)"),
        exposed,
        "one alert per image, keeping every label that says which"
    );

    let description = text(rule, "/annotations/description");
    for needed in [
        "$labels.container",
        "$labels.image",
        "$labels.workload",
        "$labels.revision",
        "tag or digest",
        "imagePullPolicy: IfNotPresent",
        "imagePullCredentialsVerificationPolicy",
    ] {
        assert!(
            description.contains(needed),
            "the description does not say {needed}"
        );
    }
    let for_ = humantime::parse_duration(text(rule, "/for")).expect("`for` is a duration");
    assert!(for_ >= std::time::Duration::from_secs(30 * 60), "{for_:?}");
}

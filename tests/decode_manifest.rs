//! Splitting and parsing multi-document YAML the way Helm manifests and kubectl exports use it.

use rollcache::history::manifest;

#[test]
fn split_follows_document_markers_only_at_line_starts() {
    let stream = "# leading comment only\n---\n# Source: c/templates/a.yaml\nkind: ConfigMap\ndata:\n  x: |\n    ---\n    not a separator\n--- {kind: Pod, metadata: {name: p}}\n...\n---\r\nkind: Service\r\n---   \n\n---\n";
    let docs = manifest::split(stream);
    let kinds: Vec<_> = docs.iter().map(|d| d.kind_hint()).collect();
    assert_eq!(kinds, vec![Some("ConfigMap"), None, Some("Service")]);
    assert_eq!(
        docs.iter().map(|d| d.index).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert_eq!(docs[0].source, Some("c/templates/a.yaml"));
    assert_eq!(docs[0].describe(), "document 1 (c/templates/a.yaml)");
    let block = manifest::parse(docs[0].text).unwrap();
    assert_eq!(block["data"]["x"], "---\nnot a separator\n");
    let flow = manifest::parse(docs[1].text).unwrap();
    assert_eq!(flow["metadata"]["name"], "p");
    assert_eq!(manifest::parse(docs[2].text).unwrap()["kind"], "Service");
}

#[test]
fn workloads_skip_other_kinds_and_report_nameless_ones() {
    let m = "kind: Deployment\nmetadata:\n  name: d\n  namespace: n\nspec: {}\n---\nkind: Service\nmetadata: {name: s}\n---\nkind: Job\nmetadata: {}\n";
    let (found, errors) = manifest::workloads(m);
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].kind.as_str(), found[0].name.as_str()),
        ("Deployment", "d")
    );
    assert_eq!(found[0].namespace.as_deref(), Some("n"));
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].document, "document 3");
}

#[test]
fn deep_nesting_is_refused() {
    let doc = format!(
        "kind: Pod\nspec: {}{}\n",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let err = manifest::parse(&doc).unwrap_err();
    assert!(!err.is_empty());
}

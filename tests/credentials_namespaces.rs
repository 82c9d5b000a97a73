//! Pull credentials keep namespaces apart (safety rule 10): each namespace that needs an image
//! gets a credential set built from its own secrets and service accounts only, never merged with
//! another's; the secret caches stay bounded whatever names workloads make up. Against the in-test
//! API server (the real list/get protocol).

use std::time::Duration;

use rollcache::credentials::SecretRef;
use rollcache::history::secrets::{MAX_CACHED, SecretReader};
use rollcache::node::RegistryAuth;
use rollcache::plan::{DesiredImage, Tier};
use rollcache::reconcile::credentials::{Credentials, KubeCredentials, NamespaceAuths};
use rollcache_testbed::apiserver::ApiServer;
use serde_json::json;

const REGISTRY: &str = "registry.example:5000";

fn pull_secret(ns: &str, name: &str, user: &str, pass: &str) -> serde_json::Value {
    rollcache_testbed::history::pull_secret(ns, name, REGISTRY, user, pass)
}

fn service_account(ns: &str, name: &str, secrets: &[&str]) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": ns},
        "imagePullSecrets": secrets.iter().map(|s| json!({"name": s})).collect::<Vec<_>>()})
}

fn image(
    repo: &str,
    pull_secrets: &[(&str, &str)],
    service_accounts: &[(&str, &str)],
) -> DesiredImage {
    let reference = format!("{REGISTRY}/{repo}:1");
    DesiredImage {
        pull_ref: reference.clone(),
        reference,
        registry: REGISTRY.into(),
        priority: 0,
        tier: Tier::Current,
        size_bytes: None,
        needed_by: Vec::new(),
        pull_secrets: pull_secrets
            .iter()
            .map(|(ns, name)| SecretRef {
                namespace: ns.to_string(),
                name: name.to_string(),
            })
            .collect(),
        service_accounts: service_accounts
            .iter()
            .map(|(ns, sa)| (ns.to_string(), sa.to_string()))
            .collect(),
        extra: false,
        pull_policies: Vec::new(),
        never_pulled: false,
    }
}

fn basic(user: &str, pass: &str) -> RegistryAuth {
    RegistryAuth::basic(user, pass).with_server(REGISTRY)
}

async fn setup() -> (ApiServer, KubeCredentials) {
    let api = ApiServer::start().await.expect("API server");
    api.apply(pull_secret("team-a", "regcred", "alice", "a-secret"))
        .unwrap();
    api.apply(service_account("team-a", "default", &[]))
        .unwrap();
    api.apply(service_account("team-b", "default", &[]))
        .unwrap();
    let creds = KubeCredentials {
        reader: SecretReader::new(api.client().unwrap(), Duration::from_secs(60)),
    };
    (api, creds)
}

/// Namespace B names A's secret as its own (`imagePullSecrets: [regcred]`) and has none of that
/// name: B's set is empty; A's secret is only in A's set, and only for an image A needs.
#[tokio::test]
async fn each_namespace_gets_only_its_own_secrets() {
    let (_api, creds) = setup().await;

    let only_b = image("private/y", &[("team-b", "regcred")], &[]);
    assert_eq!(
        creds.for_image(&only_b).await,
        vec![NamespaceAuths {
            namespace: "team-b".into(),
            auths: vec![]
        }],
        "B's workload never gets A's secret of the same name"
    );

    let both = image(
        "private/x",
        &[("team-a", "regcred"), ("team-b", "regcred")],
        &[],
    );
    assert_eq!(
        creds.for_image(&both).await,
        vec![
            NamespaceAuths {
                namespace: "team-a".into(),
                auths: vec![basic("alice", "a-secret")]
            },
            NamespaceAuths {
                namespace: "team-b".into(),
                auths: vec![]
            },
        ],
        "one set per namespace, never merged"
    );
}

/// CONTROL: once B has a secret of its own, B's set holds B's credentials (and not A's).
#[tokio::test]
async fn a_namespace_with_its_own_secret_gets_it() {
    let (api, creds) = setup().await;
    api.apply(pull_secret("team-b", "regcred", "bob", "b-secret"))
        .unwrap();
    let only_b = image("private/y", &[("team-b", "regcred")], &[]);
    assert_eq!(
        creds.for_image(&only_b).await,
        vec![NamespaceAuths {
            namespace: "team-b".into(),
            auths: vec![basic("bob", "b-secret")]
        }]
    );
}

/// Service accounts are read in the workload's namespace: B's `default` account never lends A's
/// `default` account's secrets, even with the same names.
#[tokio::test]
async fn service_account_secrets_come_from_the_workloads_namespace() {
    let (api, creds) = setup().await;
    api.apply(service_account("team-a", "default", &["regcred"]))
        .unwrap();
    let only_b = image("private/y", &[], &[("team-b", "default")]);
    assert_eq!(
        creds.for_image(&only_b).await,
        vec![NamespaceAuths {
            namespace: "team-b".into(),
            auths: vec![]
        }]
    );
    let only_a = image("private/x", &[], &[("team-a", "default")]);
    assert_eq!(
        creds.for_image(&only_a).await,
        vec![NamespaceAuths {
            namespace: "team-a".into(),
            auths: vec![basic("alice", "a-secret")]
        }]
    );
}

/// Workloads can name any number of secrets that do not exist; the reader's caches stay bounded.
#[tokio::test]
async fn secret_caches_are_bounded() {
    let (_api, creds) = setup().await;
    for i in 0..MAX_CACHED + 200 {
        let _ = creds.reader.secret("team-b", &format!("made-up-{i}")).await;
    }
    let (secrets, _) = creds.reader.cached_counts();
    assert!(secrets <= MAX_CACHED, "{secrets} cached");
    assert!(
        secrets > MAX_CACHED / 2,
        "the cache still caches: {secrets}"
    );
}

//! Pull secrets parsed and matched to images like the kubelet's credential keyring.

use std::collections::BTreeMap;

use rollcache::credentials::{
    CredentialsError, Keyring, SECRET_TYPE_DOCKER_CONFIG_JSON, SECRET_TYPE_DOCKERCFG, SecretRef,
    parse_secret,
};
use rollcache::image_ref::ImageRef;

fn b64(s: &str) -> String {
    rollcache_testbed::history::b64(s.as_bytes())
}

fn secret(name: &str) -> SecretRef {
    SecretRef {
        namespace: "shop".into(),
        name: name.into(),
    }
}

fn data(key: &str, json: &str) -> BTreeMap<String, Vec<u8>> {
    BTreeMap::from([(key.to_owned(), json.as_bytes().to_vec())])
}

fn keyring(secrets: &[(&str, &str)]) -> Keyring {
    let mut k = Keyring::new();
    for (name, json) in secrets {
        k.add_secret(
            &secret(name),
            SECRET_TYPE_DOCKER_CONFIG_JSON,
            &data(".dockerconfigjson", json),
        )
        .unwrap();
    }
    k
}

fn users(k: &Keyring, image: &str) -> Vec<String> {
    let r = ImageRef::parse(image).unwrap();
    k.lookup(&r).iter().map(|a| a.username.clone()).collect()
}

#[test]
fn docker_hub_credentials_from_kubectl_create_secret() {
    // What `kubectl create secret docker-registry` writes.
    let json = format!(
        r#"{{"auths":{{"https://index.docker.io/v1/":{{"username":"hubuser","password":"hubpass","email":"a@b.c","auth":"{}"}}}}}}"#,
        b64("hubuser:hubpass")
    );
    let k = keyring(&[("regcred", &json)]);
    for image in [
        "busybox",
        "docker.io/library/busybox:1.36",
        "user/app",
        "index.docker.io/user/app",
    ] {
        let r = ImageRef::parse(image).unwrap();
        let found = k.lookup(&r);
        assert_eq!(found.len(), 1, "{image}");
        assert_eq!(found[0].username, "hubuser");
        assert_eq!(found[0].password, "hubpass");
        assert_eq!(found[0].server_address, "https://index.docker.io/v1/");
    }
    assert!(users(&k, "quay.io/org/app").is_empty());
    assert!(users(&k, "localhost:5000/app").is_empty());
}

#[test]
fn auth_field_wins_and_may_be_unpadded() {
    let unpadded = b64("robot$ci:tok3n").trim_end_matches('=').to_owned();
    let json = format!(
        r#"{{"auths":{{"harbor.example.com":{{"username":"ignored","password":"ignored","auth":"{unpadded}"}}}}}}"#
    );
    let k = keyring(&[("harbor", &json)]);
    let r = ImageRef::parse("harbor.example.com/ci/app:1").unwrap();
    let found = k.lookup(&r);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].username, "robot$ci");
    assert_eq!(found[0].password, "tok3n");
    assert_eq!(found[0].auth, unpadded);
}

#[test]
fn tokens_pass_through() {
    let json = r#"{"auths":{"myregistry.azurecr.io":{"identitytoken":"id-token","registrytoken":"reg-token"}}}"#;
    let k = keyring(&[("acr", json)]);
    let r = ImageRef::parse("myregistry.azurecr.io/app:1").unwrap();
    let found = k.lookup(&r);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].identity_token, "id-token");
    assert_eq!(found[0].registry_token, "reg-token");
    assert_eq!(found[0].username, "");
}

#[test]
fn legacy_dockercfg_secrets() {
    let json = format!(
        r#"{{"registry.example.com":{{"auth":"{}"}}}}"#,
        b64("old:style")
    );
    let mut k = Keyring::new();
    let n = k
        .add_secret(
            &secret("legacy"),
            SECRET_TYPE_DOCKERCFG,
            &data(".dockercfg", &json),
        )
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(users(&k, "registry.example.com/team/app:2"), ["old"]);
}

#[test]
fn other_secret_types_and_missing_keys_hold_nothing() {
    let json = r#"{"auths":{"r.example.com":{"username":"u","password":"p"}}}"#;
    let s = secret("x");
    assert!(
        parse_secret(&s, "Opaque", &data(".dockerconfigjson", json))
            .unwrap()
            .is_empty()
    );
    // The type decides which key is read, as in the kubelet.
    assert!(
        parse_secret(&s, SECRET_TYPE_DOCKERCFG, &data(".dockerconfigjson", json))
            .unwrap()
            .is_empty()
    );
    assert!(
        parse_secret(&s, SECRET_TYPE_DOCKER_CONFIG_JSON, &BTreeMap::new())
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        parse_secret(
            &s,
            SECRET_TYPE_DOCKER_CONFIG_JSON,
            &data(".dockerconfigjson", json)
        )
        .unwrap()
        .len(),
        1
    );
}

#[test]
fn ports_must_match_when_given() {
    let json = r#"{"auths":{
        "registry.example.com:5000":{"username":"with-port","password":"p"},
        "registry.example.com":{"username":"no-port","password":"p"}
    }}"#;
    let k = keyring(&[("ports", json)]);
    assert_eq!(users(&k, "registry.example.com:5000/app"), ["with-port"]);
    assert_eq!(users(&k, "registry.example.com/app"), ["no-port"]);
    assert!(users(&k, "registry.example.com:5001/app").is_empty());
}

#[test]
fn wildcards_match_one_label() {
    let json = r#"{"auths":{"*.example.com":{"username":"wild","password":"p"},
                            "*.*.corp.io":{"username":"two","password":"p"},
                            "reg-[0-9].example.org":{"username":"one-char","password":"p"},
                            "mirror-?.example.net":{"username":"query","password":"p"}}}"#;
    let k = keyring(&[("wild", json)]);
    assert_eq!(users(&k, "a.example.com/app"), ["wild"]);
    assert!(users(&k, "a.b.example.com/app").is_empty());
    assert!(users(&k, "example.com/app").is_empty());
    assert_eq!(users(&k, "x.y.corp.io/app"), ["two"]);
    assert!(users(&k, "y.corp.io/app").is_empty());
    assert_eq!(users(&k, "reg-1.example.org/app"), ["one-char"]);
    assert!(users(&k, "reg-12.example.org/app").is_empty());
    // In a URL '?' starts the query: the kubelet's key is just "mirror-", which matches nothing.
    assert!(users(&k, "mirror-1.example.net/app").is_empty());
}

#[test]
fn more_specific_paths_come_first() {
    let json = r#"{"auths":{
        "quay.io":{"username":"host","password":"p"},
        "quay.io/org":{"username":"org","password":"p"},
        "https://quay.io/v2/org/team":{"username":"team","password":"p"}
    }}"#;
    let k = keyring(&[("paths", json)]);
    assert_eq!(users(&k, "quay.io/org/team/app"), ["team", "org", "host"]);
    assert_eq!(users(&k, "quay.io/org/app"), ["org", "host"]);
    assert_eq!(users(&k, "quay.io/other/app"), ["host"]);
    // A key's path is a plain prefix, as in the kubelet.
    assert_eq!(users(&k, "quay.io/organisation/app"), ["org", "host"]);
}

#[test]
fn several_secrets_for_one_registry_are_all_tried_in_order() {
    let a = r#"{"auths":{"ghcr.io":{"username":"first","password":"p"}}}"#;
    let b = r#"{"auths":{"ghcr.io":{"username":"second","password":"p"}}}"#;
    let k = keyring(&[("a", a), ("b", b)]);
    assert_eq!(users(&k, "ghcr.io/org/app:1"), ["first", "second"]);
}

#[test]
fn docker_io_keys_match_hub_images_directly() {
    let json = r#"{"auths":{"docker.io":{"username":"direct","password":"p"},
                            "index.docker.io":{"username":"fallback","password":"p"}}}"#;
    let k = keyring(&[("hub", json)]);
    // A direct match means the index.docker.io fallback is not used.
    assert_eq!(users(&k, "nginx"), ["direct"]);
}

#[test]
fn malformed_secrets_name_the_secret_and_hide_the_data() {
    let s = secret("broken");
    let bad_json = r#"{"auths":{"r.example.com":{"username":"u","password":"hunter2-secret""#;
    let err = parse_secret(
        &s,
        SECRET_TYPE_DOCKER_CONFIG_JSON,
        &data(".dockerconfigjson", bad_json),
    )
    .unwrap_err();
    assert!(matches!(err, CredentialsError::Json { .. }));
    let msg = err.to_string();
    assert!(msg.contains("shop/broken"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");

    let wrong_shape = r#"{"auths":{"r.example.com":"hunter2-secret"}}"#;
    let msg = parse_secret(
        &s,
        SECRET_TYPE_DOCKER_CONFIG_JSON,
        &data(".dockerconfigjson", wrong_shape),
    )
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("shop/broken") && !msg.contains("hunter2"),
        "{msg}"
    );

    let bad_auth = format!(
        r#"{{"auths":{{"r.example.com":{{"auth":"{}"}}}}}}"#,
        b64("no-colon-hunter2")
    );
    let err = parse_secret(
        &s,
        SECRET_TYPE_DOCKER_CONFIG_JSON,
        &data(".dockerconfigjson", &bad_auth),
    )
    .unwrap_err();
    assert!(matches!(err, CredentialsError::Auth { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("shop/broken") && msg.contains("r.example.com"),
        "{msg}"
    );
    assert!(
        !msg.contains("hunter2") && !msg.contains(&b64("no-colon-hunter2")),
        "{msg}"
    );

    let not_base64 = r#"{"auths":{"r.example.com":{"auth":"%%%hunter2"}}}"#;
    assert!(matches!(
        parse_secret(
            &s,
            SECRET_TYPE_DOCKER_CONFIG_JSON,
            &data(".dockerconfigjson", not_base64)
        ),
        Err(CredentialsError::Auth { .. })
    ));
}

#[test]
fn debug_never_shows_secrets() {
    let json = format!(
        r#"{{"auths":{{"r.example.com":{{"auth":"{}","identitytoken":"tok-hunter3","registrytoken":"tok-hunter4"}}}}}}"#,
        b64("alice:hunter2")
    );
    let entries = parse_secret(
        &secret("s"),
        SECRET_TYPE_DOCKER_CONFIG_JSON,
        &data(".dockerconfigjson", &json),
    )
    .unwrap();
    let auth = &entries[0].1;
    assert_eq!(auth.password, "hunter2");
    let shown = format!("{auth:?} {auth:#?}");
    for secret in ["hunter2", "hunter3", "hunter4", &b64("alice:hunter2")] {
        assert!(!shown.contains(secret), "{shown}");
    }
    assert!(
        shown.contains("alice") && shown.contains("<redacted>"),
        "{shown}"
    );
    let mut k = Keyring::new();
    k.add(entries);
    assert!(!format!("{k:?}").contains("hunter2"));
}

#[test]
fn unusable_keys_are_skipped() {
    let json = r#"{"auths":{"registry.example.com:notaport":{"username":"x","password":"p"},
                            "good.example.com":{"username":"good","password":"p"}}}"#;
    let k = keyring(&[("mixed", json)]);
    assert_eq!(users(&k, "good.example.com/app"), ["good"]);
    assert!(users(&k, "registry.example.com/app").is_empty());
}

use super::matching::glob_match;
use super::*;

#[test]
fn globs_follow_go_filepath_match() {
    let cases: &[(&str, &str, Option<bool>)] = &[
        ("*", "anything", Some(true)),
        ("*", "", Some(true)),
        ("a*", "abc", Some(true)),
        ("a*c", "abxc", Some(true)),
        ("a*c", "abx", Some(false)),
        ("?", "a", Some(true)),
        ("?", "", Some(false)),
        ("[a-c]x", "bx", Some(true)),
        ("[^a-c]x", "bx", Some(false)),
        ("[^a-c]x", "dx", Some(true)),
        ("\\*", "*", Some(true)),
        ("[", "a", None),
        ("a[", "b", None),
        ("[]a]", "]", None),
    ];
    for (p, s, want) in cases {
        assert_eq!(glob_match(p.as_bytes(), s.as_bytes()), *want, "{p} vs {s}");
    }
}

#[test]
fn globs_take_linear_time_and_no_stack() {
    // Exponential for a backtracking recursion.
    let p = format!("{}b", "a*".repeat(40));
    assert_eq!(
        glob_match(p.as_bytes(), "a".repeat(200).as_bytes()),
        Some(false)
    );
    assert_eq!(
        glob_match(p.as_bytes(), format!("{}b", "a".repeat(200)).as_bytes()),
        Some(true)
    );
    // One stack frame per `*` overflowed the stack.
    let stars = "*".repeat(1 << 20);
    assert_eq!(glob_match(stars.as_bytes(), b"abc"), Some(true));
    assert_eq!(
        glob_match(format!("{stars}x").as_bytes(), b"abc"),
        Some(false)
    );
}

#[test]
fn keys_are_normalised_like_the_kubelet() {
    let cases = [
        ("https://index.docker.io/v1/", Some("index.docker.io")),
        (
            "http://registry.example.com/v2/team",
            Some("registry.example.com/team"),
        ),
        (
            "registry.example.com:5000",
            Some("registry.example.com:5000"),
        ),
        ("quay.io/org/", Some("quay.io/org/")),
        ("host:abc", None),
        ("", None),
        (&*format!("{}.example.com", "*".repeat(300)), None),
    ];
    for (loc, want) in cases {
        assert_eq!(keyring_key(loc).as_deref(), want, "{loc}");
    }
}

#[test]
fn a_pull_sends_a_token_when_there_is_one_else_user_and_password() {
    let entry = |identity: &str, registry: &str| RegistryAuth {
        username: "robot".into(),
        password: "pw".into(),
        auth: "cm9ib3Q6cHc=".into(),
        server_address: "reg.example:5000".into(),
        identity_token: identity.into(),
        registry_token: registry.into(),
    };
    assert_eq!(
        entry("id", "reg").for_pull(),
        RegistryAuth::identity_token("id").with_server("reg.example:5000")
    );
    assert_eq!(
        entry("", "reg").for_pull(),
        RegistryAuth::identity_token("reg").with_server("reg.example:5000")
    );
    let basic = entry("", "").for_pull();
    assert_eq!(
        basic,
        RegistryAuth::basic("robot", "pw").with_server("reg.example:5000")
    );
    assert!(basic.auth.is_empty(), "the encoded form is not sent twice");
}

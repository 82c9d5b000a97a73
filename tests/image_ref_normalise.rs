//! Image references normalise like containerd's `ParseDockerRef` input
//! (distribution/reference `ParseNormalizedNamed` + `TagNameOnly`).

use proptest::prelude::*;
use rollcache::image_ref::ImageRef;

const D64: &str = "7cc4b5aefd1d0cadf8d97d4350462ba51c694ebca145b08d7d41b41acc8db5aa";

/// input, registry, repository, tag, digest
type Case = (
    String,
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<String>,
);

#[test]
fn normalises_like_containerd() {
    let d512 = "a".repeat(128);
    let d384 = "b".repeat(96);
    let cases: Vec<Case> = vec![
        (
            "busybox".into(),
            "docker.io",
            "library/busybox",
            Some("latest"),
            None,
        ),
        (
            "busybox:1.36".into(),
            "docker.io",
            "library/busybox",
            Some("1.36"),
            None,
        ),
        (
            "library/busybox".into(),
            "docker.io",
            "library/busybox",
            Some("latest"),
            None,
        ),
        (
            "docker.io/busybox".into(),
            "docker.io",
            "library/busybox",
            Some("latest"),
            None,
        ),
        (
            "index.docker.io/user/app:v1".into(),
            "docker.io",
            "user/app",
            Some("v1"),
            None,
        ),
        (
            "index.docker.io/busybox".into(),
            "docker.io",
            "library/busybox",
            Some("latest"),
            None,
        ),
        (
            "user/app".into(),
            "docker.io",
            "user/app",
            Some("latest"),
            None,
        ),
        (
            "user/team/app".into(),
            "docker.io",
            "user/team/app",
            Some("latest"),
            None,
        ),
        ("localhost/x".into(), "localhost", "x", Some("latest"), None),
        (
            "localhost:5000/x".into(),
            "localhost:5000",
            "x",
            Some("latest"),
            None,
        ),
        (
            "127.0.0.1:5000/x:1".into(),
            "127.0.0.1:5000",
            "x",
            Some("1"),
            None,
        ),
        (
            "[::1]:5000/x".into(),
            "[::1]:5000",
            "x",
            Some("latest"),
            None,
        ),
        (
            "[2001:db8::1]/team/x:2".into(),
            "[2001:db8::1]",
            "team/x",
            Some("2"),
            None,
        ),
        (
            "ghcr.io/org/app:v1.2.3-rc.1".into(),
            "ghcr.io",
            "org/app",
            Some("v1.2.3-rc.1"),
            None,
        ),
        (
            "registry:5000/x".into(),
            "registry:5000",
            "x",
            Some("latest"),
            None,
        ),
        // A first component with an uppercase letter can only be a host.
        (
            "Example.com/x".into(),
            "Example.com",
            "x",
            Some("latest"),
            None,
        ),
        ("Foo/bar".into(), "Foo", "bar", Some("latest"), None),
        // Without a '/', "localhost:5000" is the official image "localhost" with tag 5000.
        (
            "localhost:5000".into(),
            "docker.io",
            "library/localhost",
            Some("5000"),
            None,
        ),
        (
            "a.b/c__d/e---f/g.h_i:T_1".into(),
            "a.b",
            "c__d/e---f/g.h_i",
            Some("T_1"),
            None,
        ),
        (
            format!("nginx@sha256:{D64}"),
            "docker.io",
            "library/nginx",
            None,
            Some(format!("sha256:{D64}")),
        ),
        (
            format!("quay.io/org/app:1.0@sha256:{D64}"),
            "quay.io",
            "org/app",
            Some("1.0"),
            Some(format!("sha256:{D64}")),
        ),
        (
            format!("x@sha512:{d512}"),
            "docker.io",
            "library/x",
            None,
            Some(format!("sha512:{d512}")),
        ),
        (
            format!("x@sha384:{d384}"),
            "docker.io",
            "library/x",
            None,
            Some(format!("sha384:{d384}")),
        ),
    ];
    for (input, registry, repository, tag, digest) in cases {
        let r = ImageRef::parse(&input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(r.registry, registry, "{input}");
        assert_eq!(r.repository, repository, "{input}");
        assert_eq!(r.tag.as_deref(), tag, "{input}");
        assert_eq!(r.digest, digest, "{input}");
        assert_eq!(r.registry_host(), registry);
    }
}

#[test]
fn canonical_and_pull_forms() {
    let r = ImageRef::parse("busybox").unwrap();
    assert_eq!(r.canonical(), "docker.io/library/busybox:latest");
    assert_eq!(r.pull_ref(), "docker.io/library/busybox:latest");
    assert_eq!(r.name(), "docker.io/library/busybox");
    assert_eq!(r.to_string(), r.canonical());

    let both = ImageRef::parse(&format!("app:1.0@sha256:{D64}")).unwrap();
    assert_eq!(
        both.canonical(),
        format!("docker.io/library/app:1.0@sha256:{D64}")
    );
    // The digest wins for pulling.
    assert_eq!(
        both.pull_ref(),
        format!("docker.io/library/app@sha256:{D64}")
    );
}

#[test]
fn latest_or_untagged_follows_kubernetes_defaulting() {
    let cases = [
        ("busybox".to_owned(), true),
        ("busybox:latest".to_owned(), true),
        ("busybox:1.36".to_owned(), false),
        (format!("busybox@sha256:{D64}"), false),
        // ParseImageName reports the tag even with a digest: the default policy is Always.
        (format!("busybox:latest@sha256:{D64}"), true),
        ("busybox:Latest".to_owned(), false),
    ];
    for (input, want) in cases {
        assert_eq!(
            ImageRef::parse(&input).unwrap().is_latest_or_untagged(),
            want,
            "{input}"
        );
    }
}

#[test]
fn rejects_what_containerd_rejects() {
    let long_name = format!("example.com/{}", "a".repeat(250));
    let long_tag = format!("x:{}", "t".repeat(129));
    let cases: Vec<(String, &str)> = vec![
        (String::new(), "at least one component"),
        ("Busybox".into(), "lowercase"),
        ("docker.io/Library/x".into(), "lowercase"),
        ("user/App".into(), "lowercase"),
        ("x:".into(), "tag"),
        ("x:-bad".into(), "tag"),
        (long_tag, "tag"),
        ("x@sha256:abc".into(), "digest"),
        (format!("x@sha256:{}", D64.to_uppercase()), "lowercase hex"),
        (format!("x@sha256:{}", &D64[..63]), "digest"),
        (format!("x@sha512:{D64}"), "128 hex digits"),
        (
            format!("x@md5:{}", &D64[..32]),
            "unsupported digest algorithm",
        ),
        (D64.into(), "image ID"),
        (long_name, "maximum is 255"),
        ("a/-b".into(), "path component"),
        ("a//b".into(), "path component"),
        ("a/b/".into(), "path component"),
        ("example.com/".into(), "empty"),
        ("[::1/x".into(), "registry host"),
        ("example:abc/x".into(), "registry host"),
        ("-example.com/x".into(), "registry host"),
        ("x:1:2".into(), "path component"),
        ("x y".into(), "path component"),
        ("my_reg.com/x".into(), "registry host"),
    ];
    for (input, why) in cases {
        match ImageRef::parse(&input) {
            Ok(r) => panic!("{input:?} parsed as {r}"),
            Err(e) => {
                assert!(
                    e.to_string().contains(why),
                    "{input:?}: {e} (wanted {why:?})"
                );
                assert_eq!(e.reference, input);
            }
        }
    }
}

#[test]
fn name_length_counts_the_normalised_name() {
    // "docker.io/library/" is 18 characters: 237 more make exactly 255.
    let ok = "a".repeat(237);
    assert!(ImageRef::parse(&ok).is_ok());
    let too_long = "a".repeat(238);
    assert!(ImageRef::parse(&too_long).is_err());
}

fn component() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-z0-9]{1,4}(([._]|__|-{1,3})[a-z0-9]{1,4}){0,2}").unwrap()
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("docker.io".to_owned()),
        Just("index.docker.io".to_owned()),
        Just("localhost".to_owned()),
        Just("[::1]:5000".to_owned()),
        (1u16..65535).prop_map(|p| format!("127.0.0.1:{p}")),
        proptest::string::string_regex("[a-z][a-z0-9-]{0,6}[a-z0-9]\\.[a-z]{2,4}(:[0-9]{1,5})?")
            .unwrap(),
    ]
}

fn reference() -> impl Strategy<Value = String> {
    (
        proptest::option::of(host()),
        proptest::collection::vec(component(), 1..4),
        proptest::option::of(
            proptest::string::string_regex("[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}").unwrap(),
        ),
        proptest::option::of(proptest::string::string_regex("[a-f0-9]{64}").unwrap()),
    )
        // Without a host, a first component with a '.' would be read as a host.
        .prop_filter("first component is a host", |(h, path, _, _)| {
            h.is_some() || !path[0].contains('.')
        })
        .prop_map(|(h, path, tag, digest)| {
            let mut s = String::new();
            if let Some(h) = h {
                s.push_str(&h);
                s.push('/');
            }
            s.push_str(&path.join("/"));
            if let Some(t) = tag {
                s.push(':');
                s.push_str(&t);
            }
            if let Some(d) = digest {
                s.push_str("@sha256:");
                s.push_str(&d);
            }
            s
        })
}

proptest! {
    #[test]
    fn never_panics_on_arbitrary_strings(s in ".{0,80}") {
        let _ = ImageRef::parse(&s);
    }

    #[test]
    fn never_panics_on_reference_like_strings(s in "[a-zA-Z0-9:/@._\\[\\]-]{0,60}") {
        if let Ok(r) = ImageRef::parse(&s) {
            // Whatever parses normalises to a fixed point.
            prop_assert_eq!(ImageRef::parse(&r.canonical()).unwrap(), r);
        }
    }

    #[test]
    fn normalising_is_idempotent(s in reference()) {
        let r = ImageRef::parse(&s).unwrap();
        let again = ImageRef::parse(&r.canonical()).unwrap();
        prop_assert_eq!(&again, &r);
        prop_assert_eq!(again.canonical(), r.canonical());
        // Pull references are references too, and keep the identity of what is pulled.
        let pulled = ImageRef::parse(&r.pull_ref()).unwrap();
        prop_assert_eq!(pulled.name(), r.name());
        prop_assert_eq!(pulled.digest, r.digest.clone());
    }

    #[test]
    fn round_trips_the_parts(h in host(), path in proptest::collection::vec(component(), 1..4),
                             tag in "[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}") {
        let repo = path.join("/");
        let r = ImageRef::parse(&format!("{h}/{repo}:{tag}")).unwrap();
        let want_host = if h == "index.docker.io" { "docker.io" } else { h.as_str() };
        prop_assert_eq!(&r.registry, want_host);
        let want_repo = if want_host == "docker.io" && path.len() == 1 {
            format!("library/{repo}")
        } else {
            repo.clone()
        };
        prop_assert_eq!(&r.repository, &want_repo);
        prop_assert_eq!(r.tag.as_deref(), Some(tag.as_str()));
        prop_assert_eq!(r.canonical(), format!("{want_host}/{want_repo}:{tag}"));
    }
}

/// The one place a written reference is cut into name, tag and digest: a registry port is not a
/// tag, and a digest reference may keep its tag.
#[test]
fn written_references_split_into_name_tag_and_digest() {
    use rollcache::image_ref::split_written;
    let d = format!("sha256:{}", "ab".repeat(32));
    assert_eq!(split_written("reg:5000/a/b"), ("reg:5000/a/b", None, None));
    assert_eq!(
        split_written("reg:5000/a/b:1"),
        ("reg:5000/a/b", Some("1"), None)
    );
    assert_eq!(
        split_written(&format!("reg:5000/a/b:1@{d}")),
        ("reg:5000/a/b", Some("1"), Some(d.as_str()))
    );
    assert_eq!(
        split_written(&format!("[::1]:5000/a@{d}")),
        ("[::1]:5000/a", None, Some(d.as_str()))
    );
    // Every parsed reference agrees with its own split.
    for written in [
        "busybox",
        "reg:5000/a/b:1",
        "docker.io/library/busybox:1.36",
    ] {
        let r = ImageRef::parse(written).unwrap();
        let (name, tag, digest) = split_written(written);
        assert!(r.name().ends_with(name), "{written}");
        assert_eq!(r.tag.as_deref().filter(|_| tag.is_some()), tag, "{written}");
        assert_eq!(r.digest.as_deref(), digest, "{written}");
    }
}

//! Image references parsed and normalised exactly as containerd and the kubelet do
//! (distribution/reference `ParseNormalizedNamed` followed by `TagNameOnly`).
//!
//! `busybox` → `docker.io/library/busybox:latest`, `index.docker.io/x/y` → `docker.io/x/y:latest`,
//! `name:tag@sha256:…` keeps both (the digest is what gets pulled).

use std::fmt;

use serde::{Deserialize, Serialize};

const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
const DEFAULT_TAG: &str = "latest";
/// distribution/reference `NameTotalLengthMax`: domain + "/" + path.
pub const NAME_TOTAL_LENGTH_MAX: usize = 255;

/// A normalised image reference: always a registry and a repository, and a tag or a digest (or
/// both); a reference written without either gets the tag `latest`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ImageRef {
    /// Registry host with optional port: `docker.io`, `localhost:5000`, `[::1]:5000`.
    pub registry: String,
    /// Repository path: `library/busybox`.
    pub repository: String,
    pub tag: Option<String>,
    /// `algorithm:hex`, validated.
    pub digest: Option<String>,
}

/// Why a string is not an image reference; the message quotes the reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {reference:?}: {reason}")]
pub struct ImageRefError {
    pub reference: String,
    pub reason: String,
}

impl ImageRef {
    /// Parses and normalises like containerd's CRI plugin (`ParseNormalizedNamed` + `TagNameOnly`).
    pub fn parse(s: &str) -> Result<ImageRef, ImageRefError> {
        let fail = |reason: String| ImageRefError {
            reference: s.to_owned(),
            reason,
        };
        if s.is_empty() {
            return Err(fail(
                "repository name must have at least one component".into(),
            ));
        }
        if s.len() == 64 && s.bytes().all(is_lower_hex) {
            return Err(fail(
                "a 64-character hexadecimal string is an image ID, not a repository name".into(),
            ));
        }
        let (domain, remainder) = split_docker_domain(s);
        let remote = remainder.split(':').next().unwrap_or_default();
        if remote.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(fail(format!(
                "repository name ({remote}) must be lowercase"
            )));
        }
        let mut r = parse_full(&format!("{domain}/{remainder}")).map_err(fail)?;
        if r.tag.is_none() && r.digest.is_none() {
            r.tag = Some(DEFAULT_TAG.to_owned());
        }
        Ok(r)
    }

    /// `registry/repository`, the name the kubelet's credential keyring looks up.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The full normalised form: `registry/repository[:tag][@digest]`.
    pub fn canonical(&self) -> String {
        let mut s = self.name();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }

    pub fn registry_host(&self) -> &str {
        &self.registry
    }

    /// What to ask the runtime to pull: the digest form when there is a digest (the tag is then
    /// ignored, as containerd's `ParseDockerRef` does), else `name:tag`.
    pub fn pull_ref(&self) -> String {
        match &self.digest {
            Some(d) => format!("{}@{}", self.name(), d),
            None => self.canonical(),
        }
    }

    /// True when Kubernetes would default the pull policy to `Always`: tag `latest` (even with a
    /// digest, as `parsers.ParseImageName` does), or neither tag nor digest written.
    pub fn is_latest_or_untagged(&self) -> bool {
        match &self.tag {
            Some(t) => t == DEFAULT_TAG,
            None => self.digest.is_none(),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

impl std::str::FromStr for ImageRef {
    type Err = ImageRefError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// distribution/reference `splitDockerDomain`.
fn split_docker_domain(name: &str) -> (&str, String) {
    let Some((maybe_domain, maybe_remote)) = name.split_once('/') else {
        return (DEFAULT_DOMAIN, format!("{OFFICIAL_REPO_PREFIX}{name}"));
    };
    let (domain, remote) = if maybe_domain == "localhost"
        || maybe_domain.contains(['.', ':'])
        || maybe_domain.bytes().any(|b| b.is_ascii_uppercase())
    {
        if maybe_domain == LEGACY_DEFAULT_DOMAIN {
            (DEFAULT_DOMAIN, maybe_remote)
        } else {
            (maybe_domain, maybe_remote)
        }
    } else {
        (DEFAULT_DOMAIN, name)
    };
    if domain == DEFAULT_DOMAIN && !remote.contains('/') {
        (domain, format!("{OFFICIAL_REPO_PREFIX}{remote}"))
    } else {
        (domain, remote.to_owned())
    }
}

/// A reference as written, cut into name, tag and digest without validating or normalising:
/// `reg:5000/a/b:1@sha256:…` → (`reg:5000/a/b`, `1`, `sha256:…`).
pub fn split_written(s: &str) -> (&str, Option<&str>, Option<&str>) {
    // Neither name nor tag may contain '@', so the first '@' starts the digest.
    let (name_tag, digest) = match s.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (s, None),
    };
    // A ':' followed by no '/' ends the name; a ':' before a '/' is the registry port.
    match name_tag.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, Some(t), digest),
        _ => (name_tag, None, digest),
    }
}

/// `Parse` on `domain/remainder`: the reference grammar, then digest validation.
fn parse_full(s: &str) -> Result<ImageRef, String> {
    let (name, tag, digest) = split_written(s);
    if let Some(t) = tag
        && !valid_tag(t)
    {
        return Err(format!(
            "tag {t:?} must match [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}"
        ));
    }
    if let Some(d) = digest {
        validate_digest(d)?;
    }
    let (registry, repository) = split_name(name)?;
    if name.len() > NAME_TOTAL_LENGTH_MAX {
        return Err(format!(
            "repository name is {} characters long, the maximum is {NAME_TOTAL_LENGTH_MAX}",
            name.len()
        ));
    }
    Ok(ImageRef {
        registry: registry.to_owned(),
        repository: repository.to_owned(),
        tag: tag.map(str::to_owned),
        digest: digest.map(str::to_owned),
    })
}

/// `[domain/]path`, where the first component is the domain whenever it parses as one.
fn split_name(name: &str) -> Result<(&str, &str), String> {
    let Some((first, rest)) = name.split_once('/') else {
        return Err(format!("{name:?} has no registry host"));
    };
    if !valid_domain_and_port(first) {
        return Err(format!(
            "registry host {first:?} is not a host name, IPv4 or [IPv6] address with optional :port"
        ));
    }
    if rest.is_empty() {
        return Err("repository path is empty".into());
    }
    for component in rest.split('/') {
        if !valid_path_component(component) {
            return Err(format!(
                "repository path component {component:?} must be lowercase letters and digits \
                 separated by '.', '_', '__' or dashes"
            ));
        }
    }
    Ok((first, rest))
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `(?:domainName|\[[a-fA-F0-9:]+\])(?::[0-9]+)?`
fn valid_domain_and_port(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        let Some((inner, after)) = rest.split_once(']') else {
            return false;
        };
        if inner.is_empty() || !inner.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        let port = match after {
            "" => None,
            p => match p.strip_prefix(':') {
                Some(p) => Some(p),
                None => return false,
            },
        };
        (None, port)
    } else {
        match d.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(d), None),
        }
    };
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    match host {
        None => true,
        Some(h) => !h.is_empty() && h.split('.').all(valid_domain_component),
    }
}

/// `[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`
fn valid_domain_component(c: &str) -> bool {
    let b = c.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
}

/// `[\w][\w.-]{0,127}`
fn valid_tag(t: &str) -> bool {
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b.iter().all(|x| word(*x) || *x == b'.' || *x == b'-')
}

/// The reference grammar's digest, then go-digest's `Validate`: a known algorithm with exactly
/// its length of lowercase hex.
fn validate_digest(d: &str) -> Result<(), String> {
    let Some((alg, hex)) = d.split_once(':') else {
        return Err(format!("digest {d:?} must be algorithm:hex"));
    };
    let alg_ok = !alg.is_empty()
        && alg.split(['-', '_', '+', '.']).all(|c| {
            let b = c.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphabetic()
                && b.iter().all(|x| x.is_ascii_alphanumeric())
        });
    if !alg_ok || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "digest {d:?} must be algorithm:hex with at least 32 hex digits"
        ));
    }
    let want = match alg {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        other => return Err(format!("unsupported digest algorithm {other:?}")),
    };
    if hex.len() != want {
        return Err(format!(
            "{alg} digest must have {want} hex digits, not {}",
            hex.len()
        ));
    }
    if !hex.bytes().all(is_lower_hex) {
        return Err(format!("digest {d:?} must be lowercase hex"));
    }
    Ok(())
}

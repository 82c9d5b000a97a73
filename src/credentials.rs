//! Image pull credentials from `imagePullSecrets`, matched to an image the way the kubelet's
//! credential keyring does (`pkg/credentialprovider`: keys with optional scheme, port and path
//! prefix, `*` globs per host label, most specific key first, `index.docker.io/v1/` for Docker Hub).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use base64::Engine as _;
use serde::Deserialize;

use crate::image_ref::ImageRef;

pub const SECRET_TYPE_DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";
pub const SECRET_TYPE_DOCKERCFG: &str = "kubernetes.io/dockercfg";
pub const DOCKER_CONFIG_JSON_KEY: &str = ".dockerconfigjson";
pub const DOCKERCFG_KEY: &str = ".dockercfg";

/// The kubelet's fallback key for Docker Hub (`https://index.docker.io/v1/` once normalised).
const DEFAULT_REGISTRY_HOST: &str = "index.docker.io";
/// Longest registry host (with port) a key may name: a DNS name (253) and `:65535`. Longer keys
/// can name no registry, and each lookup globs every key against the image's host.
const MAX_HOST_BYTES: usize = 253 + 6;

pub use rollcache_core::model::SecretRef;

/// Credentials for one registry, shaped like the CRI `AuthConfig` (empty string = absent).
/// `Debug` never shows secret values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RegistryAuth {
    pub username: String,
    pub password: String,
    /// base64("user:pass") as written in the secret.
    pub auth: String,
    /// The registry key as written in the secret.
    pub server_address: String,
    pub identity_token: String,
    pub registry_token: String,
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &str| if s.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("password", &redact(&self.password))
            .field("auth", &redact(&self.auth))
            .field("server_address", &self.server_address)
            .field("identity_token", &redact(&self.identity_token))
            .field("registry_token", &redact(&self.registry_token))
            .finish()
    }
}

/// A pull secret that could not be read. Never carries the secret's data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error(
        "pull secret {secret}: key {key} is not valid JSON ({reason}); fix the secret or remove it from imagePullSecrets"
    )]
    Json {
        secret: SecretRef,
        key: &'static str,
        reason: String,
    },
    #[error(
        "pull secret {secret}: registry {registry:?} has an `auth` field that is not base64(\"user:password\"); fix the secret"
    )]
    Auth { secret: SecretRef, registry: String },
}

/// One registry entry of a docker config.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
struct DockerConfigEntry {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    auth: String,
    #[serde(default, rename = "identitytoken")]
    identity_token: String,
    #[serde(default, rename = "registrytoken")]
    registry_token: String,
}

#[derive(Deserialize)]
struct DockerConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, DockerConfigEntry>,
}

/// Parses one pull secret into `(registry key, credentials)` pairs, in key order. Secrets of
/// other types, or without the expected key, hold no credentials (the kubelet ignores them too).
pub fn parse_secret(
    secret: &SecretRef,
    secret_type: &str,
    data: &BTreeMap<String, Vec<u8>>,
) -> Result<Vec<(String, RegistryAuth)>, CredentialsError> {
    let json_err = |key: &'static str, e: serde_json::Error| CredentialsError::Json {
        secret: secret.clone(),
        key,
        // serde_json's message names the position and the expected token, never the content.
        reason: e.classify_text(),
    };
    let entries = match secret_type {
        SECRET_TYPE_DOCKER_CONFIG_JSON => match data.get(DOCKER_CONFIG_JSON_KEY) {
            Some(bytes) if !bytes.is_empty() => {
                serde_json::from_slice::<DockerConfigJson>(bytes)
                    .map_err(|e| json_err(DOCKER_CONFIG_JSON_KEY, e))?
                    .auths
            }
            _ => return Ok(Vec::new()),
        },
        SECRET_TYPE_DOCKERCFG => match data.get(DOCKERCFG_KEY) {
            Some(bytes) if !bytes.is_empty() => {
                serde_json::from_slice::<BTreeMap<String, DockerConfigEntry>>(bytes)
                    .map_err(|e| json_err(DOCKERCFG_KEY, e))?
            }
            _ => return Ok(Vec::new()),
        },
        _ => return Ok(Vec::new()),
    };
    let mut out = Vec::with_capacity(entries.len());
    for (registry, e) in entries {
        let (username, password) = if e.auth.is_empty() {
            (e.username, e.password)
        } else {
            decode_auth(&e.auth).ok_or_else(|| CredentialsError::Auth {
                secret: secret.clone(),
                registry: registry.clone(),
            })?
        };
        out.push((
            registry.clone(),
            RegistryAuth {
                username,
                password,
                auth: e.auth,
                server_address: registry,
                identity_token: e.identity_token,
                registry_token: e.registry_token,
            },
        ));
    }
    Ok(out)
}

trait ClassifyText {
    fn classify_text(&self) -> String;
}

impl ClassifyText for serde_json::Error {
    fn classify_text(&self) -> String {
        let what = match self.classify() {
            serde_json::error::Category::Io => "read error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "unexpected structure",
            serde_json::error::Category::Eof => "truncated",
        };
        format!("{what} at line {} column {}", self.line(), self.column())
    }
}

/// base64("user:pass"), padded or not, as the kubelet's `decodeDockerConfigFieldAuth` accepts.
fn decode_auth(field: &str) -> Option<(String, String)> {
    let e = &base64::engine::general_purpose::STANDARD;
    let raw = &base64::engine::general_purpose::STANDARD_NO_PAD;
    let decoded = if field.trim().ends_with('=') {
        e.decode(field)
    } else {
        raw.decode(field)
    }
    .ok()?;
    let s = String::from_utf8(decoded).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

/// Registry credentials indexed like the kubelet's `BasicDockerKeyring`.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    /// Keys (`host[:port][/path]`), reverse-sorted so that longer paths come first.
    index: Vec<String>,
    creds: HashMap<String, Vec<RegistryAuth>>,
}

impl Keyring {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds every entry of one secret. Add secrets in the pod's `imagePullSecrets` order (a
    /// template without any gets its service account's), as the kubelet reads them.
    pub fn add_secret(
        &mut self,
        secret: &SecretRef,
        secret_type: &str,
        data: &BTreeMap<String, Vec<u8>>,
    ) -> Result<usize, CredentialsError> {
        let entries = parse_secret(secret, secret_type, data)?;
        let n = entries.len();
        self.add(entries);
        Ok(n)
    }

    /// Adds `(registry key, credentials)` pairs. Keys that are not a URL-ish host are skipped.
    pub fn add(&mut self, entries: impl IntoIterator<Item = (String, RegistryAuth)>) {
        for (loc, auth) in entries {
            let Some(key) = keyring_key(&loc) else {
                tracing::debug!(registry = %loc, "pull secret entry is not a registry address; ignored");
                continue;
            };
            let slot = self.creds.entry(key.clone()).or_default();
            if slot.is_empty() {
                self.index.push(key);
            }
            slot.push(auth);
        }
        self.index.sort_unstable_by(|a, b| b.cmp(a));
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Credentials to try for `image`, most specific key first; several secrets for one key are
    /// tried in the order they were added.
    pub fn lookup(&self, image: &ImageRef) -> Vec<&RegistryAuth> {
        self.lookup_name(&image.name())
    }

    /// Like `lookup`, for a normalised `registry/repository` name.
    pub fn lookup_name(&self, name: &str) -> Vec<&RegistryAuth> {
        let target = SchemelessUrl::parse(name);
        let mut out = Vec::new();
        for k in &self.index {
            if urls_match(&SchemelessUrl::parse(k), &target) {
                out.extend(self.creds[k].iter());
            }
        }
        if out.is_empty()
            && is_default_registry_match(name)
            && let Some(c) = self.creds.get(DEFAULT_REGISTRY_HOST)
        {
            out.extend(c.iter());
        }
        out
    }
}

/// The keyring key for a secret's registry entry: scheme stripped, `/v1/` and `/v2/` reduced
/// to the host (the docker client treats them as the host itself).
fn keyring_key(loc: &str) -> Option<String> {
    let rest = loc
        .strip_prefix("https://")
        .or_else(|| loc.strip_prefix("http://"))
        .unwrap_or(loc);
    let u = SchemelessUrl::parse(rest);
    if u.host.is_empty() || u.host.len() > MAX_HOST_BYTES || !port_ok(u.host) {
        return None;
    }
    let mut path = u.path;
    if path.starts_with("/v2/") || path.starts_with("/v1/") {
        path = &path[3..];
    }
    if path.is_empty() || path == "/" {
        Some(u.host.to_owned())
    } else {
        Some(format!("{}{}", u.host, path))
    }
}

/// Go's url.Parse rejects a non-numeric port.
fn port_ok(host: &str) -> bool {
    let after_bracket = host.rsplit_once(']').map_or(host, |(_, a)| a);
    match after_bracket.rsplit_once(':') {
        Some((_, p)) => p.bytes().all(|b| b.is_ascii_digit()),
        None => true,
    }
}

/// `host[:port]` and `/path` of a schemeless URL, as `url.Parse("https://" + s)` splits them.
struct SchemelessUrl<'a> {
    host: &'a str,
    path: &'a str,
}

impl<'a> SchemelessUrl<'a> {
    fn parse(s: &'a str) -> Self {
        let end = s.find(['?', '#']).unwrap_or(s.len());
        let s = &s[..end];
        let (authority, path) = match s.find('/') {
            Some(i) => (&s[..i], &s[i..]),
            None => (s, ""),
        };
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        SchemelessUrl { host, path }
    }

    /// Host labels and port (`net.SplitHostPort`; without a port the whole host is split).
    fn parts(&self) -> (Vec<&'a str>, &'a str) {
        let (host, port) = split_host_port(self.host).unwrap_or((self.host, ""));
        (host.split('.').collect(), port)
    }
}

fn split_host_port(hp: &str) -> Option<(&str, &str)> {
    if let Some(rest) = hp.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':')?;
        return Some((h, port));
    }
    let (h, p) = hp.rsplit_once(':')?;
    if h.contains(':') {
        return None; // "too many colons"
    }
    Some((h, p))
}

/// The kubelet's `URLsMatch`: same port, same number of host labels each matching the glob
/// label, and the key's path a prefix of the image's path.
fn urls_match(glob: &SchemelessUrl<'_>, target: &SchemelessUrl<'_>) -> bool {
    let (gparts, gport) = glob.parts();
    let (tparts, tport) = target.parts();
    gport == tport
        && gparts.len() == tparts.len()
        && target.path.starts_with(glob.path)
        && gparts
            .iter()
            .zip(&tparts)
            .all(|(g, t)| glob_match(g.as_bytes(), t.as_bytes()).unwrap_or(false))
}

/// The kubelet's `isDefaultRegistryMatch`.
fn is_default_registry_match(image: &str) -> bool {
    let (first, rest) = match image.split_once('/') {
        Some((f, r)) => (f, Some(r)),
        None => (image, None),
    };
    if first.is_empty() {
        return false;
    }
    rest.is_none()
        || first == "docker.io"
        || first == "index.docker.io"
        || !first.contains(['.', ':'])
}

/// Go's `filepath.Match` on one host label (no separators): `*`, `?`, `[...]` with ranges and
/// `^` negation, `\` escapes. `None` for a malformed pattern (which matches nothing).
///
/// Ported from Go's chunk-by-chunk algorithm rather than written as a backtracking recursion:
/// keys come from Secrets, and a recursion over `*` takes exponential time on keys such as
/// `a*a*a*…b` and overflows the stack on a long run of `*`. This is O(pattern × label) and
/// uses no recursion.
fn glob_match(mut p: &[u8], mut s: &[u8]) -> Option<bool> {
    'pattern: while !p.is_empty() {
        let (star, chunk, rest) = scan_chunk(p);
        p = rest;
        if star && chunk.is_empty() {
            // A trailing `*` matches the rest of the label.
            return Some(true);
        }
        // The last chunk must use up the label; an earlier one may leave some for the next.
        let (t, ok) = match_chunk(chunk, s)?;
        if ok && (t.is_empty() || !p.is_empty()) {
            s = t;
            continue;
        }
        if star {
            for i in 0..s.len() {
                let (t, ok) = match_chunk(chunk, &s[i + 1..])?;
                if ok {
                    if p.is_empty() && !t.is_empty() {
                        continue;
                    }
                    s = t;
                    continue 'pattern;
                }
            }
        }
        // Go reports a bad pattern even when the match already failed.
        while !p.is_empty() {
            let (_, chunk, rest) = scan_chunk(p);
            p = rest;
            match_chunk(chunk, b"")?;
        }
        return Some(false);
    }
    Some(s.is_empty())
}

/// Go's `scanChunk`: leading stars, then the pattern up to the next star outside a class.
fn scan_chunk(p: &[u8]) -> (bool, &[u8], &[u8]) {
    let stars = p.iter().take_while(|b| **b == b'*').count();
    let p = &p[stars..];
    let mut in_range = false;
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'\\' if i + 1 < p.len() => i += 1,
            b'[' => in_range = true,
            b']' => in_range = false,
            b'*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    (stars > 0, &p[..i], &p[i..])
}

/// Go's `matchChunk`: matches a star-free chunk at the start of `s`; returns the rest of `s` and
/// whether it matched. Keeps reading the chunk after a mismatch so that a malformed one is
/// always `None`.
fn match_chunk<'a>(mut chunk: &[u8], mut s: &'a [u8]) -> Option<(&'a [u8], bool)> {
    let mut failed = false;
    while let Some(&c) = chunk.first() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match c {
            b'[' => {
                let r = if failed {
                    None
                } else {
                    let r = s[0];
                    s = &s[1..];
                    Some(r)
                };
                chunk = &chunk[1..];
                let negated = chunk.first() == Some(&b'^');
                if negated {
                    chunk = &chunk[1..];
                }
                let mut matched = false;
                let mut ranges = 0;
                loop {
                    if chunk.first() == Some(&b']') && ranges > 0 {
                        chunk = &chunk[1..];
                        break;
                    }
                    let lo = class_char(&mut chunk)?;
                    let mut hi = lo;
                    if chunk.first() == Some(&b'-') {
                        chunk = &chunk[1..];
                        hi = class_char(&mut chunk)?;
                    }
                    if r.is_some_and(|r| lo <= r && r <= hi) {
                        matched = true;
                    }
                    ranges += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            b'?' => {
                if !failed {
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
            _ => {
                let literal = if c == b'\\' {
                    chunk = &chunk[1..];
                    *chunk.first()?
                } else {
                    c
                };
                if !failed {
                    if s[0] != literal {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
        }
    }
    Some(if failed { (&[][..], false) } else { (s, true) })
}

/// Go's `getEsc`: one character of a class, `\` escapes honoured; `-`, `]` and the end are
/// malformed here.
fn class_char(chunk: &mut &[u8]) -> Option<u8> {
    let (&b, rest) = chunk.split_first()?;
    let (c, rest) = match b {
        b'-' | b']' => return None,
        b'\\' => rest.split_first().map(|(c, r)| (*c, r))?,
        _ => (b, rest),
    };
    // Go also rejects a class char that ends the pattern (`[a`).
    if rest.is_empty() {
        return None;
    }
    *chunk = rest;
    Some(c)
}

#[cfg(test)]
mod tests {
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
}

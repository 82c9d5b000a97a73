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

/// Credentials for one registry, shaped like the CRI `AuthConfig` (empty string = absent): as a
/// pull secret's entry wrote them, and (after `for_pull`) as a pull sends them.
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

impl RegistryAuth {
    /// Basic credentials (username + password or token).
    pub fn basic(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
            ..Self::default()
        }
    }

    /// An OAuth identity (refresh) token.
    pub fn identity_token(token: impl Into<String>) -> Self {
        Self {
            identity_token: token.into(),
            ..Self::default()
        }
    }

    pub fn with_server(mut self, server: impl Into<String>) -> Self {
        self.server_address = server.into();
        self
    }

    /// What a pull sends, as the kubelet sends a secret's entry: a token when there is one (the
    /// identity token, else the registry token), else the user and password (`auth` decoded).
    pub fn for_pull(&self) -> RegistryAuth {
        let token = if self.identity_token.is_empty() {
            &self.registry_token
        } else {
            &self.identity_token
        };
        let auth = if token.is_empty() {
            RegistryAuth::basic(self.username.clone(), self.password.clone())
        } else {
            RegistryAuth::identity_token(token.clone())
        };
        auth.with_server(self.server_address.clone())
    }
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

mod matching;

use matching::{SchemelessUrl, is_default_registry_match, keyring_key, urls_match};

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

#[cfg(test)]
mod tests;

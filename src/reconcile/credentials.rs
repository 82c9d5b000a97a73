//! Pull credentials from the cluster, the kubelet's way: the template's imagePullSecrets, else its
//! service account's, parsed into a keyring and matched to the image's registry. One keyring per
//! namespace: the secrets of different namespaces are never merged for one pull (rule 10). Secret
//! contents are never logged; a secret that cannot be read is logged by namespace/name and
//! skipped.

use crate::credentials::{Keyring, SecretRef};
use crate::history::secrets::SecretReader;
use crate::node::{ImageRuntime, NodeError, PullOutcome, RegistryAuth};
use crate::plan::DesiredImage;

/// Where pull credentials come from (imagePullSecrets of the templates and service accounts).
#[async_trait::async_trait]
pub trait Credentials: Send + Sync {
    /// One set per namespace whose workloads need `image`, each from that namespace's secrets
    /// alone and in the kubelet's order (empty: that namespace's pods would pull anonymously).
    /// Sets are never merged: one namespace's secrets never pull for another (rule 10).
    async fn for_image(&self, image: &DesiredImage) -> Vec<NamespaceAuths>;
}

/// The credentials of one namespace for one image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceAuths {
    pub namespace: String,
    pub auths: Vec<RegistryAuth>,
}

/// Tries each namespace's credentials in turn, each credential in the kubelet's order; then
/// anonymous once, when some namespace has none for this image (its pods would pull that way) or
/// no namespace asks (extra and manual images). A namespace's credentials are only ever used for
/// an image that namespace's workloads need: `sets` comes from those workloads alone.
pub async fn pull_with(
    runtime: &dyn ImageRuntime,
    image: &str,
    sets: &[NamespaceAuths],
) -> Result<PullOutcome, NodeError> {
    let mut last = None;
    for set in sets {
        for auth in &set.auths {
            match runtime.pull(image, Some(auth)).await {
                Ok(o) => return Ok(o),
                Err(e @ NodeError::Unauthorized { .. }) => {
                    tracing::debug!(image, namespace = %set.namespace, "a pull secret of this namespace was refused; trying the next");
                    last = Some(e)
                }
                Err(e) => return Err(e),
            }
        }
    }
    if sets.is_empty() || sets.iter().any(|s| s.auths.is_empty()) {
        return runtime.pull(image, None).await;
    }
    Err(last.expect("at least one credential was tried"))
}

pub struct KubeCredentials {
    pub reader: SecretReader,
}

#[async_trait::async_trait]
impl Credentials for KubeCredentials {
    async fn for_image(&self, image: &DesiredImage) -> Vec<NamespaceAuths> {
        let name = match crate::image_ref::ImageRef::parse(&image.reference) {
            Ok(r) => r.name(),
            Err(_) => return Vec::new(),
        };
        // Namespaces in first-seen order: the plan lists the newest revisions' first.
        let mut namespaces: Vec<&str> = Vec::new();
        let seen = image
            .pull_secrets
            .iter()
            .map(|r| r.namespace.as_str())
            .chain(image.service_accounts.iter().map(|(ns, _)| ns.as_str()));
        for ns in seen {
            if !namespaces.contains(&ns) {
                namespaces.push(ns);
            }
        }
        let mut out = Vec::with_capacity(namespaces.len());
        for ns in namespaces {
            let keyring = self.keyring(image, ns).await;
            out.push(NamespaceAuths {
                namespace: ns.to_owned(),
                auths: keyring
                    .lookup_name(&name)
                    .into_iter()
                    .map(RegistryAuth::for_pull)
                    .collect(),
            });
        }
        out
    }
}

impl KubeCredentials {
    /// The keyring of namespace `ns` for `image`: the pull secrets its workloads name, and those
    /// of its service accounts, all read from `ns` itself.
    async fn keyring(&self, image: &DesiredImage, ns: &str) -> Keyring {
        let mut refs: Vec<SecretRef> = image
            .pull_secrets
            .iter()
            .filter(|r| r.namespace == ns)
            .cloned()
            .collect();
        for (_, sa) in image.service_accounts.iter().filter(|(n, _)| n == ns) {
            match self.reader.image_pull_secrets(ns, Some(sa)).await {
                Ok(names) => refs.extend(names.iter().map(|n| SecretRef {
                    namespace: ns.to_owned(),
                    name: n.clone(),
                })),
                Err(e) => {
                    tracing::warn!(service_account = %format!("{ns}/{sa}"), error = %e, "cannot read the service account's imagePullSecrets")
                }
            }
        }
        let mut keyring = Keyring::new();
        for r in &refs {
            match self.reader.secret(&r.namespace, &r.name).await {
                Ok(secret) => {
                    if let Err(e) = keyring.add_secret(r, &secret.type_, &secret.data) {
                        tracing::warn!(secret = %r, error = %e, "pull secret skipped");
                    }
                }
                Err(e) => tracing::warn!(secret = %r, error = %e, "pull secret cannot be read"),
            }
        }
        keyring
    }
}

//! Pull credentials from the cluster, the kubelet's way: the template's imagePullSecrets, else its
//! service account's, parsed into a keyring and matched to the image's registry. Secret contents
//! are never logged; a secret that cannot be read is logged by namespace/name and skipped.

use crate::credentials::{Keyring, SecretRef};
use crate::history::secrets::SecretReader;
use crate::node::RegistryAuth;
use crate::plan::DesiredImage;

use super::daemon::Credentials;

pub struct KubeCredentials {
    pub reader: SecretReader,
}

/// CRI-shaped credentials from a keyring entry.
pub fn to_node_auth(a: &crate::credentials::RegistryAuth) -> RegistryAuth {
    let auth = if !a.identity_token.is_empty() {
        RegistryAuth::identity_token(a.identity_token.clone())
    } else if !a.registry_token.is_empty() {
        RegistryAuth::identity_token(a.registry_token.clone())
    } else {
        RegistryAuth::basic(a.username.clone(), a.password.clone())
    };
    auth.with_server(a.server_address.clone())
}

#[async_trait::async_trait]
impl Credentials for KubeCredentials {
    async fn for_image(&self, image: &DesiredImage) -> Vec<RegistryAuth> {
        let mut refs: Vec<SecretRef> = image.pull_secrets.clone();
        for (ns, sa) in &image.service_accounts {
            match self.reader.image_pull_secrets(ns, Some(sa)).await {
                Ok(names) => refs.extend(names.iter().map(|n| SecretRef {
                    namespace: ns.clone(),
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
        let name = match crate::image_ref::ImageRef::parse(&image.reference) {
            Ok(r) => r.name(),
            Err(_) => return Vec::new(),
        };
        keyring
            .lookup_name(&name)
            .into_iter()
            .map(to_node_auth)
            .collect()
    }
}

//! containerd's images service in namespace `k8s.io`: version, image records and their labels.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use containerd_client::services::v1::{
    Image, ListImagesRequest, UpdateImageRequest, images_client::ImagesClient,
    version_client::VersionClient,
};
use tonic::transport::Channel;

use super::error::{CallContext, NodeError};
use super::{K8S_NAMESPACE, MAX_MESSAGE_BYTES, call, request};

/// One containerd image record (CRI creates several per image: tag, repo@digest, config digest).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRecord {
    pub name: String,
    pub target_digest: String,
    pub labels: HashMap<String, String>,
    raw: Image,
}

/// containerd's images and version services on one socket.
#[derive(Clone)]
pub struct ContainerdImages {
    images: ImagesClient<Channel>,
    version: VersionClient<Channel>,
    socket: Arc<PathBuf>,
    deadline: std::time::Duration,
}

impl ContainerdImages {
    pub fn new(channel: Channel, socket: &Path, deadline: std::time::Duration) -> Self {
        Self {
            images: ImagesClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES),
            version: VersionClient::new(channel),
            socket: Arc::new(socket.to_path_buf()),
            deadline,
        }
    }

    fn ctx<'a>(&'a self, op: &'static str, subject: &'a str) -> CallContext<'a> {
        CallContext {
            op,
            subject,
            socket: &self.socket,
            deadline: self.deadline,
        }
    }

    /// containerd's version string, e.g. `1.7.24~ds1` or `v2.1.9`.
    pub async fn version(&self) -> Result<String, NodeError> {
        let ctx = self.ctx("read version", "containerd");
        let mut client = self.version.clone();
        let resp = call(&ctx, client.version(request((), ctx.deadline))).await?;
        Ok(resp.version)
    }

    /// Every image record in namespace `k8s.io`.
    pub async fn list(&self) -> Result<Vec<ImageRecord>, NodeError> {
        self.list_filtered(vec![]).await
    }

    /// The image records named `names` (those that exist), in one call: containerd filters on its
    /// side, so a pin on a node with thousands of images does not transfer all of them.
    pub async fn list_named(&self, names: &[&str]) -> Result<Vec<ImageRecord>, NodeError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        // Filters are ORed; quoted values may hold the `:`, `/` and `@` of references.
        let filters = names
            .iter()
            .map(|n| format!("name==\"{}\"", n.replace('\\', "\\\\").replace('"', "\\\"")))
            .collect();
        self.list_filtered(filters).await
    }

    async fn list_filtered(&self, filters: Vec<String>) -> Result<Vec<ImageRecord>, NodeError> {
        let ctx = self.ctx("list image records", K8S_NAMESPACE);
        let mut client = self.images.clone();
        let req = namespaced(request(ListImagesRequest { filters }, ctx.deadline));
        let resp = call(&ctx, client.list(req)).await?;
        Ok(resp
            .images
            .into_iter()
            .map(|raw| ImageRecord {
                name: raw.name.clone(),
                target_digest: raw
                    .target
                    .as_ref()
                    .map(|t| t.digest.clone())
                    .unwrap_or_default(),
                labels: raw.labels.clone(),
                raw,
            })
            .collect())
    }

    /// Sets (`Some`) or removes (`None`) labels on one record, touching no other label.
    pub async fn update_labels(
        &self,
        record: &ImageRecord,
        changes: &[(&str, Option<&str>)],
    ) -> Result<(), NodeError> {
        let ctx = self.ctx("update labels of", &record.name);
        let mut image = record.raw.clone();
        let mut paths = Vec::with_capacity(changes.len());
        for (key, value) in changes {
            match value {
                Some(v) => {
                    image.labels.insert((*key).to_string(), (*v).to_string());
                }
                // A masked label absent from the request is deleted by containerd.
                None => {
                    image.labels.remove(*key);
                }
            }
            paths.push(format!("labels.{key}"));
        }
        let msg = UpdateImageRequest {
            image: Some(image),
            update_mask: Some(prost_types::FieldMask { paths }),
            source_date_epoch: None,
        };
        let mut client = self.images.clone();
        call(&ctx, client.update(namespaced(request(msg, ctx.deadline)))).await?;
        Ok(())
    }
}

fn namespaced<T>(mut req: tonic::Request<T>) -> tonic::Request<T> {
    req.metadata_mut().insert(
        "containerd-namespace",
        tonic::metadata::MetadataValue::from_static(K8S_NAMESPACE),
    );
    req
}

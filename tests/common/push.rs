//! Pushes images from the OCI layout straight over the registry's HTTP API (many small images in
//! seconds, where one `skopeo copy` each would take minutes).

use std::path::Path;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rollcache_testbed::oci::BuiltImage;

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn send(
    c: &HttpClient,
    method: hyper::Method,
    uri: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Option<String>) {
    let req = hyper::Request::builder()
        .method(method.clone())
        .uri(uri)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let resp = c
        .request(req)
        .await
        .unwrap_or_else(|e| panic!("{method} {uri}: {e}"));
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let _ = resp.into_body().collect().await;
    (status, location)
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let path = layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Pushes `image` (config, layers, manifest) as `registry/name:tag`.
pub async fn push(
    c: &HttpClient,
    layout: &Path,
    registry: &str,
    name: &str,
    tag: &str,
    image: &BuiltImage,
) {
    let base = format!("http://{registry}/v2/{name}");
    let config = image.config_digest.clone();
    for digest in std::iter::once(&config).chain(image.layers.iter().map(|l| &l.blob.digest)) {
        let (found, _) = send(
            c,
            hyper::Method::HEAD,
            &format!("{base}/blobs/{digest}"),
            "application/octet-stream",
            vec![],
        )
        .await;
        if found == 200 {
            continue;
        }
        let (status, location) = send(
            c,
            hyper::Method::POST,
            &format!("{base}/blobs/uploads/"),
            "application/octet-stream",
            vec![],
        )
        .await;
        assert_eq!(status, 202, "start upload of {digest}");
        let location = location.expect("upload location");
        let location = if location.starts_with('/') {
            format!("http://{registry}{location}")
        } else {
            location
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let (status, _) = send(
            c,
            hyper::Method::PUT,
            &format!("{location}{sep}digest={digest}"),
            "application/octet-stream",
            blob(layout, digest),
        )
        .await;
        assert_eq!(status, 201, "upload of {digest}");
    }
    let (status, _) = send(
        c,
        hyper::Method::PUT,
        &format!("{base}/manifests/{tag}"),
        &image.manifest.media_type,
        blob(layout, &image.manifest.digest),
    )
    .await;
    assert_eq!(status, 201, "manifest {name}:{tag}");
}

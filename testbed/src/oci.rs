//! Builds OCI image layouts in Rust (gzip layers of deterministic pseudo-random bytes with a chosen
//! compressibility, config, manifest, multi-arch index) and pushes them to a registry with skopeo.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{Result, TestbedError, deps, io_err};

pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// An OS/architecture pair of an image.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
}

impl Platform {
    pub fn linux(architecture: &str) -> Self {
        Self {
            os: "linux".into(),
            architecture: architecture.into(),
        }
    }
    pub fn linux_amd64() -> Self {
        Self::linux("amd64")
    }
    pub fn linux_arm64() -> Self {
        Self::linux("arm64")
    }
}

/// One layer: `size` bytes of content derived from `seed`, of which `compressible_percent` are a
/// repeated pattern (gzip shrinks them) and the rest pseudo-random (gzip cannot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LayerSpec {
    pub seed: u64,
    pub size: u64,
    pub compressible_percent: u8,
}

impl LayerSpec {
    pub fn new(seed: u64, size: u64, compressible_percent: u8) -> Self {
        Self {
            seed,
            size,
            compressible_percent: compressible_percent.min(100),
        }
    }
}

/// One single-platform image: its layers, in order, and a label that makes its config unique.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    pub platform: Platform,
    pub layers: Vec<LayerSpec>,
    pub label: String,
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

impl Descriptor {
    fn to_json(&self) -> serde_json::Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

/// A layer written into a layout: the compressed blob and the digest of the uncompressed tar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltLayer {
    pub blob: Descriptor,
    pub diff_id: String,
    /// Uncompressed tar size.
    pub tar_size: u64,
}

/// An image written into a layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    pub manifest: Descriptor,
    /// The config digest: what CRI reports as the image id.
    pub config_digest: String,
    pub platform: Platform,
    pub layers: Vec<BuiltLayer>,
}

impl BuiltImage {
    /// Bytes the registry serves for this image (manifest, config, compressed layers).
    pub fn compressed_size(&self) -> u64 {
        self.manifest.size + self.layers.iter().map(|l| l.blob.size).sum::<u64>()
    }
}

/// A multi-platform index written into a layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltIndex {
    pub index: Descriptor,
    pub images: Vec<BuiltImage>,
}

impl BuiltIndex {
    pub fn for_platform(&self, platform: &Platform) -> Option<&BuiltImage> {
        self.images.iter().find(|i| &i.platform == platform)
    }
}

/// An OCI image layout directory; layers are built once per spec and shared between images.
pub struct OciLayout {
    dir: PathBuf,
    layers: HashMap<LayerSpec, BuiltLayer>,
    refs: Vec<(String, Descriptor)>,
}

impl OciLayout {
    /// Creates (or reuses) a layout in `dir`.
    pub fn create(dir: &Path) -> Result<Self> {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).map_err(io_err(format!("creating {}", blobs.display())))?;
        let marker = dir.join("oci-layout");
        std::fs::write(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)
            .map_err(io_err(format!("writing {}", marker.display())))?;
        let me = Self {
            dir: dir.to_path_buf(),
            layers: HashMap::new(),
            refs: Vec::new(),
        };
        me.write_index_json()?;
        Ok(me)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Builds (once) the layer for `spec`.
    pub fn layer(&mut self, spec: &LayerSpec) -> Result<BuiltLayer> {
        if let Some(l) = self.layers.get(spec) {
            return Ok(l.clone());
        }
        let built = self.write_layer(spec)?;
        self.layers.insert(*spec, built.clone());
        Ok(built)
    }

    /// Builds an image (config + manifest) over its layers.
    pub fn image(&mut self, spec: &ImageSpec) -> Result<BuiltImage> {
        let layers = spec
            .layers
            .iter()
            .map(|l| self.layer(l))
            .collect::<Result<Vec<_>>>()?;
        let config = json!({
            "architecture": spec.platform.architecture,
            "os": spec.platform.os,
            "config": {
                "Labels": {"io.rollcache.testbed": spec.label},
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            },
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
        });
        let config = self.write_json_blob(MEDIA_CONFIG, &config)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": config.to_json(),
            "layers": layers.iter().map(|l| l.blob.to_json()).collect::<Vec<_>>(),
        });
        let manifest = self.write_json_blob(MEDIA_MANIFEST, &manifest)?;
        Ok(BuiltImage {
            manifest,
            config_digest: config.digest,
            platform: spec.platform.clone(),
            layers,
        })
    }

    /// Builds each image and an index over them.
    pub fn index(&mut self, specs: &[ImageSpec]) -> Result<BuiltIndex> {
        let images = specs
            .iter()
            .map(|s| self.image(s))
            .collect::<Result<Vec<_>>>()?;
        let index = json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_INDEX,
            "manifests": images.iter().map(|i| {
                let mut d = i.manifest.to_json();
                d["platform"] = json!({"architecture": i.platform.architecture, "os": i.platform.os});
                d
            }).collect::<Vec<_>>(),
        });
        let index = self.write_json_blob(MEDIA_INDEX, &index)?;
        Ok(BuiltIndex { index, images })
    }

    /// Names `desc` as `tag` in the layout's `index.json` (what `oci:DIR:TAG` refers to).
    pub fn tag(&mut self, tag: &str, desc: &Descriptor) -> Result<()> {
        self.refs.retain(|(t, _)| t != tag);
        self.refs.push((tag.to_string(), desc.clone()));
        self.write_index_json()
    }

    /// Copies `tag` (with every platform of an index) to `docker://<registry>/<name_tag>` and
    /// returns the digest of the pushed manifest or index.
    pub fn push(
        &self,
        tag: &str,
        registry: &str,
        name_tag: &str,
        creds: Option<(&str, &str)>,
    ) -> Result<String> {
        let digest_file = tempfile::NamedTempFile::new().map_err(io_err("creating a temp file"))?;
        let mut cmd = Command::new(deps::skopeo()?);
        cmd.args([
            "copy",
            "--all",
            "--quiet",
            "--insecure-policy",
            "--preserve-digests",
        ])
        .args(["--dest-tls-verify=false", "--digestfile"])
        .arg(digest_file.path());
        if let Some((user, pass)) = creds {
            cmd.arg("--dest-creds").arg(format!("{user}:{pass}"));
        }
        cmd.arg(format!("oci:{}:{tag}", self.dir.display()))
            .arg(format!("docker://{registry}/{name_tag}"));
        super::run(&mut cmd)?;
        let digest = std::fs::read_to_string(digest_file.path())
            .map_err(io_err("reading skopeo's digest file"))?;
        Ok(digest.trim().to_string())
    }

    /// Tags and pushes a built image or index in one step.
    pub fn tag_and_push(
        &mut self,
        desc: &Descriptor,
        registry: &str,
        name_tag: &str,
        creds: Option<(&str, &str)>,
    ) -> Result<String> {
        let tag = name_tag.replace(['/', ':', '@'], "_");
        self.tag(&tag, desc)?;
        self.push(&tag, registry, name_tag, creds)
    }

    fn write_index_json(&self) -> Result<()> {
        let index = json!({
            "schemaVersion": 2,
            "manifests": self.refs.iter().map(|(tag, d)| {
                let mut v = d.to_json();
                v["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
                v
            }).collect::<Vec<_>>(),
        });
        let path = self.dir.join("index.json");
        std::fs::write(&path, index.to_string())
            .map_err(io_err(format!("writing {}", path.display())))
    }

    fn write_json_blob(&self, media_type: &str, value: &serde_json::Value) -> Result<Descriptor> {
        let bytes = value.to_string().into_bytes();
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        let path = self.blob_path(&digest);
        std::fs::write(&path, &bytes).map_err(io_err(format!("writing {}", path.display())))?;
        Ok(Descriptor {
            media_type: media_type.into(),
            digest,
            size: bytes.len() as u64,
        })
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    fn write_layer(&self, spec: &LayerSpec) -> Result<BuiltLayer> {
        let tmp = tempfile::NamedTempFile::new_in(self.dir.join("blobs"))
            .map_err(io_err("creating a layer temp file"))?;
        let file = tmp.reopen().map_err(io_err("opening a layer temp file"))?;
        let gz = GzEncoder::new(HashingWriter::new(file), Compression::fast());
        let mut tar = tar::Builder::new(HashingWriter::new(gz));
        let mut header = tar::Header::new_gnu();
        header.set_size(spec.size);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        let name = format!("data/layer-{:016x}.bin", spec.seed);
        tar.append_data(&mut header, name, PatternReader::new(spec))
            .map_err(io_err("writing a layer tar"))?;
        let tar_hash = tar.into_inner().map_err(io_err("finishing a layer tar"))?;
        let (tar_size, diff, gz) = tar_hash.finish();
        let (blob_size, digest, _file) = gz
            .finish()
            .map_err(io_err("finishing a layer gzip stream"))?
            .finish();
        let digest = format!("sha256:{digest}");
        let path = self.blob_path(&digest);
        tmp.persist(&path).map_err(|e| TestbedError::Io {
            what: format!("moving a layer to {}", path.display()),
            source: e.error,
        })?;
        Ok(BuiltLayer {
            blob: Descriptor {
                media_type: MEDIA_LAYER_GZIP.into(),
                digest,
                size: blob_size,
            },
            diff_id: format!("sha256:{diff}"),
            tar_size,
        })
    }
}

/// `images` image specs over `bases` shared base layers of `base_size` bytes, each image adding its
/// own layer of `own_size` bytes; image `i` uses base `i % bases`. Names are `{prefix}-{i}`.
pub fn shared_base_set(
    prefix: &str,
    images: usize,
    bases: usize,
    base_size: u64,
    own_size: u64,
    compressible_percent: u8,
) -> Vec<(String, ImageSpec)> {
    (0..images)
        .map(|i| {
            let base = LayerSpec::new(
                1_000 + (i % bases.max(1)) as u64,
                base_size,
                compressible_percent,
            );
            let own = LayerSpec::new(2_000_000 + i as u64, own_size, compressible_percent);
            let name = format!("{prefix}-{i}");
            let spec = ImageSpec {
                platform: Platform::linux_amd64(),
                layers: vec![base, own],
                label: name.clone(),
            };
            (name, spec)
        })
        .collect()
}

/// Hashes (sha256) and counts what passes through.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    fn finish(self) -> (u64, String, W) {
        (self.count, hex::encode(self.hasher.finalize()), self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

const CHUNK: usize = 4096;

/// Deterministic layer content: per 4 KiB chunk, a compressible run of one byte value followed by
/// splitmix64 output.
struct PatternReader {
    state: u64,
    remaining: u64,
    compressible: usize,
    chunk: [u8; CHUNK],
    pos: usize,
}

impl PatternReader {
    fn new(spec: &LayerSpec) -> Self {
        Self {
            state: spec.seed ^ 0x9E37_79B9_7F4A_7C15,
            remaining: spec.size,
            compressible: CHUNK * spec.compressible_percent as usize / 100,
            chunk: [0; CHUNK],
            pos: CHUNK,
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn refill(&mut self) {
        let fill = (self.next_u64() & 0xff) as u8;
        let mut chunk = [0u8; CHUNK];
        chunk[..self.compressible].fill(fill);
        for word in chunk[self.compressible..].chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            word.copy_from_slice(&bytes[..word.len()]);
        }
        self.chunk = chunk;
        self.pos = 0;
    }
}

impl Read for PatternReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        if self.pos == CHUNK {
            self.refill();
        }
        let n = buf
            .len()
            .min(CHUNK - self.pos)
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_are_deterministic_and_compress_as_asked() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = OciLayout::create(&dir.path().join("a")).unwrap();
        let mut b = OciLayout::create(&dir.path().join("b")).unwrap();
        let half = LayerSpec::new(7, 1 << 20, 50);
        let la = a.layer(&half).unwrap();
        assert_eq!(la, b.layer(&half).unwrap());
        let ratio = la.blob.size as f64 / la.tar_size as f64;
        assert!(
            (0.4..0.65).contains(&ratio),
            "half-compressible ratio {ratio}"
        );
        let random = a.layer(&LayerSpec::new(7, 1 << 20, 0)).unwrap();
        assert!(random.blob.size as f64 > 0.95 * random.tar_size as f64);
        assert_ne!(random.diff_id, la.diff_id);
    }

    #[test]
    fn index_distinguishes_platforms() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = OciLayout::create(dir.path()).unwrap();
        let base = LayerSpec::new(1, 4096, 50);
        let idx = l
            .index(&[
                ImageSpec {
                    platform: Platform::linux_amd64(),
                    layers: vec![base],
                    label: "x".into(),
                },
                ImageSpec {
                    platform: Platform::linux_arm64(),
                    layers: vec![base],
                    label: "x".into(),
                },
            ])
            .unwrap();
        let amd = idx.for_platform(&Platform::linux_amd64()).unwrap();
        let arm = idx.for_platform(&Platform::linux_arm64()).unwrap();
        assert_ne!(amd.config_digest, arm.config_digest);
        assert!(l.blob_path(&idx.index.digest).is_file());
    }
}

//! Push-side layer compression: which layers of a local image need compressing for a
//! registry, doing it (in parallel, into the content store), and the manifest that
//! names the results.
//!
//! Local stores may keep layers uncompressed (as `berth build` may, like Docker's and
//! Podman's stores), but registries and their clients expect compressed layers. A layer
//! whose blob is a plain tar is compressed while pushing: gzip unless zstd is asked for.
//! A compressed layer is sent as it is, unless `force` is set or zstd is asked for and
//! the layer is gzip. The compressed blob is committed to the content store and
//! remembered in the metadata DB by (diff id, format), so a second push reuses it (and
//! finds it in the registry by HEAD) instead of compressing again; compression is
//! deterministic, so even a recompression gives the same digest. The image's config,
//! and so its id, is never touched; only the pushed manifest differs from the stored one.

use std::io::{BufWriter, Read, Write};
use std::sync::Arc;

use berth_image::compress::{compress, default_level};
use berth_image::{Compression, ContentStore, Digest};
use serde_json::Value;
use tokio::sync::Semaphore;

use super::error::{content_ctx, io_ctx, Error, Result};
use super::manifest::{Descriptor, ImageConfig, Kind, DOCKER_MANIFEST, OCI_MANIFEST};
use super::store::LocalStore;

/// How push compresses layers (podman's `--compression-format`, `--compression-level`,
/// `--force-compression`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressOptions {
    /// gzip (the default, what every client reads) or zstd.
    pub format: Compression,
    /// The format's level; `None` for its default.
    pub level: Option<i32>,
    /// Recompress layers that are already compressed.
    pub force: bool,
}

impl Default for CompressOptions {
    fn default() -> Self {
        CompressOptions {
            format: Compression::Gzip,
            level: None,
            force: false,
        }
    }
}

impl CompressOptions {
    fn level(&self) -> i32 {
        self.level.unwrap_or_else(|| default_level(self.format))
    }

    /// Whether a layer stored as `current` must be (re)compressed.
    fn wants(&self, current: Compression) -> bool {
        match current {
            Compression::None => true,
            Compression::Gzip if self.format == Compression::Zstd => true,
            _ => self.force,
        }
    }
}

/// The name a format has in the metadata DB.
fn format_name(c: Compression) -> &'static str {
    match c {
        Compression::None => "none",
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
    }
}

/// The layers as they go to the registry, and whether any differs from the stored one.
pub(crate) struct Prepared {
    pub layers: Vec<Descriptor>,
    pub changed: bool,
}

/// Compresses what `opts` asks for among `layers` (bottom first, as in the manifest),
/// at most `parallel` at once.
pub(crate) async fn prepare_layers(
    store: &LocalStore,
    config: &Descriptor,
    layers: &[Descriptor],
    opts: &CompressOptions,
    parallel: usize,
) -> Result<Prepared> {
    // An artifact (a build cache, say) is not an image: its "layers" are whatever its
    // config says they are, and it goes to the registry byte for byte.
    let image_config = matches!(
        config.media_type.as_str(),
        "application/vnd.oci.image.config.v1+json"
            | "application/vnd.docker.container.image.v1+json"
    );
    let mut current = Vec::with_capacity(layers.len());
    for l in layers {
        current.push(stored_compression(&store.content, l)?);
    }
    if !image_config || !current.iter().any(|c| opts.wants(*c)) {
        return Ok(Prepared {
            layers: layers.to_vec(),
            changed: false,
        });
    }
    let config_bytes = store
        .content
        .read_blob(&config.digest)
        .map_err(content_ctx(format!("read config {}", config.digest)))?;
    let diff_ids = ImageConfig::parse(&config_bytes, &config.digest.to_string())?
        .rootfs
        .diff_ids;
    if diff_ids.len() != layers.len() {
        return Err(Error::InvalidManifest {
            reference: config.digest.to_string(),
            reason: format!(
                "{} layers but {} diff ids in the config",
                layers.len(),
                diff_ids.len()
            ),
        });
    }
    let limit = Arc::new(Semaphore::new(parallel.max(1)));
    let mut pending = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        if !opts.wants(current[i]) {
            continue;
        }
        let job = Job {
            content: store.content.clone(),
            source: layer.digest.clone(),
            diff_id: diff_ids[i].clone(),
            opts: *opts,
        };
        if let Some(found) = job.reuse(store)? {
            pending.push((i, Pending::Ready(found)));
            continue;
        }
        let limit = limit.clone();
        let handle = tokio::spawn(async move {
            let _permit = limit.acquire_owned().await;
            tokio::task::spawn_blocking(move || job.run())
                .await
                .map_err(|e| Error::Internal(format!("compress task: {e}")))?
        });
        pending.push((i, Pending::Running(handle)));
    }
    let mut out = layers.to_vec();
    for (i, p) in pending {
        let (digest, size) = match p {
            Pending::Ready(found) => found,
            Pending::Running(h) => {
                let (d, s) = h
                    .await
                    .map_err(|e| Error::Internal(format!("compress task: {e}")))??;
                // Recorded only once the blob is committed: the row never names a
                // blob that is not there.
                let replaced = store.meta.record_compressed_layer(
                    &diff_ids[i],
                    format_name(opts.format),
                    &d,
                    s,
                )?;
                if let Some(old) = replaced {
                    forget_blob(store, &old)?;
                }
                (d, s)
            }
        };
        out[i] = Descriptor {
            media_type: layer_media_type(&layers[i].media_type, opts.format),
            digest,
            size,
            platform: None,
        };
    }
    Ok(Prepared {
        layers: out,
        changed: true,
    })
}

/// Deletes a compressed blob a recompression replaced, unless an image names it.
fn forget_blob(store: &LocalStore, blob: &Digest) -> Result<()> {
    let (used, _) = store.referenced()?;
    if !used.contains(blob) {
        store
            .content
            .delete(blob)
            .map_err(content_ctx(format!("delete blob {blob}")))?;
    }
    Ok(())
}

/// The compression of a stored layer blob: its magic bytes, else its media type.
fn stored_compression(content: &ContentStore, layer: &Descriptor) -> Result<Compression> {
    let mut head = [0u8; 4];
    let mut file = content
        .open_blob(&layer.digest)
        .map_err(content_ctx(format!("open layer {}", layer.digest)))?;
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(io_ctx(format!("read layer {}", layer.digest))(e)),
        }
    }
    Ok(Compression::detect(&head[..n], Some(&layer.media_type)))
}

/// The media type of a layer of `old` type once compressed as `format`, in the
/// family (OCI or Docker) of the old one; foreign and non-distributable layers stay so.
fn layer_media_type(old: &str, format: Compression) -> String {
    let docker = old.starts_with("application/vnd.docker.");
    let foreign = old.contains(".foreign.") || old.contains(".nondistributable.");
    match (docker, foreign, format) {
        (true, false, Compression::Gzip) => "application/vnd.docker.image.rootfs.diff.tar.gzip",
        (true, true, Compression::Gzip) => {
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
        }
        (_, true, Compression::Zstd) => {
            "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
        }
        (false, true, Compression::Gzip) => {
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        }
        (_, _, f) => f.oci_media_type(),
    }
    .to_string()
}

/// The OCI name of a Docker layer media type (for a manifest converted to OCI).
fn oci_layer_media_type(mt: &str) -> String {
    match Compression::from_media_type(mt) {
        Some(c) if mt.starts_with("application/vnd.docker.") => {
            let foreign = mt.contains(".foreign.");
            match (foreign, c) {
                (false, c) => c.oci_media_type().to_string(),
                (true, Compression::None) => {
                    "application/vnd.oci.image.layer.nondistributable.v1.tar".to_string()
                }
                (true, Compression::Gzip) => {
                    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip".to_string()
                }
                (true, Compression::Zstd) => {
                    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd".to_string()
                }
            }
        }
        _ => mt.to_string(),
    }
}

/// The stored manifest `bytes` with `layers` in place of its own (everything else kept),
/// and its media type. Docker's schema has no zstd layers, so a Docker manifest that
/// gets one becomes an OCI manifest, as podman makes it.
pub(crate) fn rewrite_manifest(
    bytes: &[u8],
    kind: Kind,
    layers: &[Descriptor],
) -> Result<(String, Vec<u8>)> {
    let bad = |reason: String| Error::InvalidManifest {
        reference: "stored manifest".into(),
        reason,
    };
    let mut doc: Value = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    let to_oci = kind == Kind::DockerManifest
        && layers
            .iter()
            .any(|l| Compression::from_media_type(&l.media_type) == Some(Compression::Zstd));
    let entries = doc
        .get_mut("layers")
        .and_then(Value::as_array_mut)
        .filter(|a| a.len() == layers.len())
        .ok_or_else(|| bad("its layers do not match the image's".into()))?;
    for (entry, layer) in entries.iter_mut().zip(layers) {
        let mt = if to_oci {
            oci_layer_media_type(&layer.media_type)
        } else {
            layer.media_type.clone()
        };
        entry["mediaType"] = Value::from(mt);
        entry["digest"] = Value::from(layer.digest.to_string());
        entry["size"] = Value::from(layer.size);
    }
    let media_type = if to_oci {
        doc["mediaType"] = Value::from(OCI_MANIFEST);
        doc["config"]["mediaType"] = Value::from("application/vnd.oci.image.config.v1+json");
        OCI_MANIFEST
    } else if kind == Kind::DockerManifest {
        DOCKER_MANIFEST
    } else {
        OCI_MANIFEST
    };
    let out = serde_json::to_vec_pretty(&doc).map_err(|e| bad(e.to_string()))?;
    Ok((media_type.to_string(), out))
}

enum Pending {
    Ready((Digest, u64)),
    Running(tokio::task::JoinHandle<Result<(Digest, u64)>>),
}

/// Compressing one layer blob into the content store.
struct Job {
    content: ContentStore,
    source: Digest,
    diff_id: Digest,
    opts: CompressOptions,
}

impl Job {
    /// The blob an earlier push made of this layer in this format, if it is still there.
    fn reuse(&self, store: &LocalStore) -> Result<Option<(Digest, u64)>> {
        if self.opts.force {
            return Ok(None);
        }
        let found = store
            .meta
            .compressed_layer(&self.diff_id, format_name(self.opts.format))?;
        Ok(found.filter(|(d, _)| self.content.contains(d)))
    }

    fn run(self) -> Result<(Digest, u64)> {
        let fmt = format_name(self.opts.format);
        let level = self.opts.level();
        let what = format!("compress layer {} as {fmt}", self.diff_id);
        let mut input = self
            .content
            .open_blob(&self.source)
            .map_err(content_ctx(what.clone()))?;
        let mut writer = self
            .content
            .writer(&format!("compress {} {fmt} {level}", self.diff_id))
            .map_err(content_ctx(what.clone()))?;
        writer.truncate().map_err(content_ctx(what.clone()))?;
        let mut out = BufWriter::with_capacity(256 << 10, writer);
        let read = compress(&mut input, &mut out, self.opts.format, level)
            .map_err(io_ctx(what.clone()))?;
        out.flush().map_err(io_ctx(what.clone()))?;
        let writer = out
            .into_inner()
            .map_err(|e| io_ctx(what.clone())(e.into_error()))?;
        // The blob must really be the layer the config names, or the pushed image
        // would not be the local one.
        if read.diff_id != self.diff_id {
            return Err(Error::DigestMismatch {
                location: "local store".into(),
                what: format!("layer {}", self.source),
                expected: self.diff_id,
                actual: read.diff_id,
            });
        }
        let digest = writer.digest();
        let size = writer.offset();
        writer
            .commit(size, &digest)
            .map_err(content_ctx(what.clone()))?;
        Ok((digest, size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(mt: &str, d: &str, size: u64) -> Descriptor {
        Descriptor {
            media_type: mt.into(),
            digest: Digest::sha256_of(d.as_bytes()),
            size,
            platform: None,
        }
    }

    #[test]
    fn what_gets_compressed() {
        let gzip = CompressOptions::default();
        assert!(gzip.wants(Compression::None));
        assert!(!gzip.wants(Compression::Gzip));
        assert!(!gzip.wants(Compression::Zstd));
        let zstd = CompressOptions {
            format: Compression::Zstd,
            ..gzip
        };
        assert!(zstd.wants(Compression::None));
        assert!(zstd.wants(Compression::Gzip));
        assert!(!zstd.wants(Compression::Zstd));
        let force = CompressOptions {
            force: true,
            ..gzip
        };
        assert!(force.wants(Compression::Gzip) && force.wants(Compression::Zstd));
    }

    #[test]
    fn media_types_follow_the_manifest_family() {
        let d = "application/vnd.docker.image.rootfs.diff.tar";
        assert_eq!(
            layer_media_type(d, Compression::Gzip),
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        );
        assert_eq!(
            layer_media_type("application/vnd.oci.image.layer.v1.tar", Compression::Zstd),
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
        assert_eq!(
            oci_layer_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
    }

    #[test]
    fn docker_manifest_with_zstd_becomes_oci_keeping_other_fields() {
        let old = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                       "digest": Digest::sha256_of(b"c").to_string(), "size": 3},
            "layers": [
                {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                 "digest": Digest::sha256_of(b"a").to_string(), "size": 1},
                {"mediaType": "application/vnd.docker.image.rootfs.diff.tar",
                 "digest": Digest::sha256_of(b"b").to_string(), "size": 2,
                 "annotations": {"k": "v"}}
            ]
        });
        let layers = [
            desc("application/vnd.docker.image.rootfs.diff.tar.gzip", "a", 1),
            desc("application/vnd.oci.image.layer.v1.tar+zstd", "z", 9),
        ];
        let bytes = serde_json::to_vec(&old).unwrap();
        let (mt, out) = rewrite_manifest(&bytes, Kind::DockerManifest, &layers).unwrap();
        assert_eq!(mt, OCI_MANIFEST);
        let new: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(new["mediaType"], OCI_MANIFEST);
        assert_eq!(
            new["config"]["mediaType"],
            "application/vnd.oci.image.config.v1+json"
        );
        assert_eq!(new["config"]["digest"], old["config"]["digest"]);
        assert_eq!(
            new["layers"][0]["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        assert_eq!(
            new["layers"][1]["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
        assert_eq!(new["layers"][1]["size"], 9);
        assert_eq!(new["layers"][1]["annotations"]["k"], "v");
        // The same input gives the same bytes, so the manifest digest is stable.
        let (_, again) = rewrite_manifest(&bytes, Kind::DockerManifest, &layers).unwrap();
        assert_eq!(out, again);
    }
}

//! Layers in, images out: committing a step's changes as a layer, and
//! writing the finished image (config, manifest, tags) into the local store
//! or an OCI layout archive.
//!
//! A layer is written once: the upper directory's timestamps are set to the
//! build's epoch, [`berth_image::layer::write_layer_and_adopt`] turns it
//! into a sorted tar (uncompressed unless `--compression` asks, as Docker's
//! and Podman's local stores keep layers; pushing compresses) written
//! straight into the content store, and the upper directory itself moves
//! into the layer store under its chain id, where the next step's overlay
//! and `berth run` find it. The image itself is recorded only when every step has
//! succeeded, so a failed build adds no image and no tag.

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::Path;

use berth_image::layer::{chain_id, AppliedLayer, ApplyOptions, Compression};
use berth_image::{Digest, ImageRecord, LayerRecord, Reference};
use berth_registry::client::LocalStore;
use serde_json::{json, Value};

use crate::cache::CachedLayer;
use crate::fsutil;

/// OCI media types written by the exporter.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Exporter failures.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {message}")]
pub struct ExportError {
    pub context: String,
    pub message: String,
}

fn ctx<E: std::fmt::Display>(context: impl Into<String>) -> impl FnOnce(E) -> ExportError {
    let context = context.into();
    move |e| ExportError {
        context,
        message: e.to_string(),
    }
}

/// One layer of the image being built.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Layer {
    pub diff_id: Digest,
    pub chain_id: Digest,
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub content_size: u64,
}

impl Layer {
    /// The cache record for this layer.
    pub fn record(&self) -> CachedLayer {
        CachedLayer {
            diff_id: self.diff_id.to_string(),
            digest: self.digest.to_string(),
            size: self.size,
            media_type: self.media_type.clone(),
            content_size: self.content_size,
        }
    }

    /// The layer a cache record names on top of `parent`, if its blob and
    /// unpacked directory are both still in the store.
    pub fn from_record(
        store: &LocalStore,
        parent: Option<&Digest>,
        rec: &CachedLayer,
    ) -> Option<Layer> {
        let diff_id: Digest = rec.diff_id.parse().ok()?;
        let digest: Digest = rec.digest.parse().ok()?;
        let chain = chain_id(parent, &diff_id);
        (store.layers.contains(&chain) && store.content.contains(&digest)).then(|| Layer {
            diff_id,
            chain_id: chain,
            digest,
            size: rec.size,
            media_type: rec.media_type.clone(),
            content_size: rec.content_size,
        })
    }

    /// The layer a cache record names on top of `parent`, unpacked now from
    /// its blob when only the blob is in the store (records imported with
    /// `--cache-from`). `None` when the blob is missing too.
    pub fn from_blob(
        store: &LocalStore,
        parent: Option<&Digest>,
        rec: &CachedLayer,
    ) -> Result<Option<Layer>, ExportError> {
        let (Ok(diff_id), Ok(digest)) = (rec.diff_id.parse::<Digest>(), rec.digest.parse()) else {
            return Ok(None);
        };
        if !store.content.contains(&digest) {
            return Ok(None);
        }
        let blob = store
            .content
            .open_blob(&digest)
            .map_err(ctx(format!("open blob {digest}")))?;
        let applied = store
            .layers
            .apply(
                parent,
                BufReader::with_capacity(256 * 1024, blob),
                Some(&rec.media_type),
                Some(&diff_id),
                &ApplyOptions::default(),
            )
            .map_err(ctx(format!("unpack layer {diff_id}")))?;
        Ok(Some(Layer {
            diff_id,
            chain_id: applied.chain_id,
            digest,
            size: rec.size,
            media_type: rec.media_type.clone(),
            content_size: rec.content_size,
        }))
    }
}

/// Commits the changes in `upper` as a layer on top of `parent`: returns
/// `None` when there are no changes. `upper` must be unmounted; it is moved
/// into the layer store, so the caller must not use it afterwards.
///
/// One walk of `upper` hashes the tar (and, compressed, writes it into a content-store
/// ingest), and `upper` itself becomes the layer directory: the data is written once,
/// never unpacked again, and one filesystem sync makes it durable before it becomes
/// visible. An uncompressed layer's blob is not written at all but deferred to the layer
/// directory (see `berth_image::content`): a large COPY is not copied and synced twice.
pub fn commit_layer(
    store: &LocalStore,
    upper: &Path,
    parent: Option<&Digest>,
    epoch: i64,
    compression: Compression,
) -> Result<Option<Layer>, ExportError> {
    if fsutil::is_empty_dir(upper).map_err(ctx(format!("list {}", upper.display())))? {
        return Ok(None);
    }
    fsutil::normalize_mtimes(upper, epoch).map_err(ctx("normalise timestamps"))?;
    tracing::debug!("layer: timestamps set");
    if compression == Compression::None {
        let (diff, applied) = write_and_adopt(store, std::io::sink(), upper, parent, compression)?;
        if !store.content.contains(&diff.digest) {
            store
                .content
                .defer(&diff.digest, diff.size, &applied.path)
                .map_err(ctx(format!("store layer blob {}", diff.digest)))?;
        }
        return Ok(Some(layer_of(diff, applied)));
    }
    let reference = format!("build-layer {}", upper.display());
    let mut writer = store
        .content
        .writer(&reference)
        .map_err(ctx("start layer blob"))?;
    let written = writer
        .truncate()
        .map_err(ctx("start layer blob"))
        .and_then(|()| {
            let out = std::io::BufWriter::with_capacity(1 << 20, &mut writer);
            write_and_adopt(store, out, upper, parent, compression)
        });
    match written {
        Ok((diff, applied)) => {
            writer
                .commit(diff.size, &diff.digest)
                .map_err(ctx(format!("store layer blob {}", diff.digest)))?;
            Ok(Some(layer_of(diff, applied)))
        }
        Err(e) => {
            drop(writer);
            let _ = store.content.abort(&reference);
            Err(e)
        }
    }
}

/// Writes the layer tar of `upper` into `out` (which the walk flushes) and moves
/// `upper` into the layer store.
fn write_and_adopt(
    store: &LocalStore,
    out: impl Write,
    upper: &Path,
    parent: Option<&Digest>,
    compression: Compression,
) -> Result<(berth_image::layer::DiffOutput, AppliedLayer), ExportError> {
    let diff = berth_image::layer::write_layer_and_adopt(upper, out, compression)
        .map_err(ctx("write layer"))?;
    tracing::debug!("layer: tar written and hashed");
    let applied = store
        .layers
        .adopt(parent, upper, &diff.diff_id, diff.content_size)
        .map_err(ctx(format!("store layer {}", diff.diff_id)))?;
    Ok((diff, applied))
}

fn layer_of(diff: berth_image::layer::DiffOutput, applied: AppliedLayer) -> Layer {
    Layer {
        media_type: diff.compression.oci_media_type().to_string(),
        diff_id: diff.diff_id,
        chain_id: applied.chain_id,
        digest: diff.digest,
        size: diff.size,
        content_size: applied.content_size,
    }
}

/// The finished image's bytes and digests.
#[derive(Debug, Clone)]
pub struct Image {
    pub config: Vec<u8>,
    pub config_digest: Digest,
    pub manifest: Vec<u8>,
    pub manifest_digest: Digest,
    pub layers: Vec<Layer>,
}

/// Serialises the config and the OCI manifest.
pub fn assemble(config: &Value, layers: &[Layer]) -> Result<Image, ExportError> {
    let config_bytes = serde_json::to_vec(config).map_err(ctx("serialise config"))?;
    let config_digest = Digest::sha256_of(&config_bytes);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest.to_string(), "size": config_bytes.len()},
        "layers": layers.iter().map(|l| json!({
            "mediaType": l.media_type, "digest": l.digest.to_string(), "size": l.size,
        })).collect::<Vec<_>>(),
    });
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(ctx("serialise manifest"))?;
    Ok(Image {
        manifest_digest: Digest::sha256_of(&manifest_bytes),
        config: config_bytes,
        config_digest,
        manifest: manifest_bytes,
        layers: layers.to_vec(),
    })
}

/// Records the image in the store and points `tags` at it.
pub fn to_store(
    store: &mut LocalStore,
    image: &Image,
    config: &Value,
    tags: &[Reference],
) -> Result<(), ExportError> {
    for (bytes, d) in [
        (&image.config, &image.config_digest),
        (&image.manifest, &image.manifest_digest),
    ] {
        store
            .content
            .put(&mut &bytes[..], bytes.len() as u64, d)
            .map_err(ctx(format!("store blob {d}")))?;
    }
    let stack: Vec<(Digest, u64)> = image
        .layers
        .iter()
        .map(|l| (l.diff_id.clone(), l.content_size))
        .collect();
    let rec = ImageRecord {
        manifest_digest: image.manifest_digest.clone(),
        config_digest: image.config_digest.clone(),
        media_type: OCI_MANIFEST.to_string(),
        platform: berth_image::Platform {
            os: config["os"].as_str().unwrap_or("linux").to_string(),
            architecture: config["architecture"]
                .as_str()
                .unwrap_or("amd64")
                .to_string(),
            variant: config["variant"].as_str().map(str::to_string),
        },
        layers: LayerRecord::stack(&stack),
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    };
    store
        .meta
        .add_image(&rec)
        .map_err(ctx("record the image"))?;
    for t in tags {
        store
            .meta
            .tag(t, &image.manifest_digest)
            .map_err(ctx(format!("tag {}", t.familiar())))?;
    }
    Ok(())
}

/// Writes the image as an OCI image layout tar archive to `dest` (`-` for
/// stdout), named by `ref_name` when given.
pub fn to_oci_archive(
    store: &LocalStore,
    image: &Image,
    ref_name: Option<&str>,
    dest: &str,
) -> Result<(), ExportError> {
    let out: Box<dyn Write> = if dest == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(File::create(dest).map_err(ctx(format!("create {dest}")))?)
    };
    let mut ar = tar::Builder::new(out);
    let mut add = |name: &str, data: &mut dyn std::io::Read, size: u64| {
        let mut h = tar::Header::new_ustar();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        ar.append_data(&mut h, name, data)
            .map_err(ctx(format!("write {name}")))
    };
    add(
        "oci-layout",
        &mut &br#"{"imageLayoutVersion":"1.0.0"}"#[..],
        30,
    )?;
    let mut annotations = serde_json::Map::new();
    if let Some(r) = ref_name {
        annotations.insert("org.opencontainers.image.ref.name".into(), json!(r));
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": OCI_MANIFEST,
            "digest": image.manifest_digest.to_string(),
            "size": image.manifest.len(),
            "annotations": annotations,
        }],
    });
    let index = serde_json::to_vec(&index).map_err(ctx("serialise index"))?;
    add("index.json", &mut &index[..], index.len() as u64)?;
    let blob_name = |d: &Digest| format!("blobs/sha256/{}", d.hex());
    add(
        &blob_name(&image.config_digest),
        &mut &image.config[..],
        image.config.len() as u64,
    )?;
    add(
        &blob_name(&image.manifest_digest),
        &mut &image.manifest[..],
        image.manifest.len() as u64,
    )?;
    for l in &image.layers {
        let mut f = store
            .content
            .open_blob(&l.digest)
            .map_err(ctx(format!("open blob {}", l.digest)))?;
        add(&blob_name(&l.digest), &mut f, l.size)?;
    }
    let mut out = ar.into_inner().map_err(ctx("finish archive"))?;
    out.flush().map_err(ctx("finish archive"))
}

/// `--output type=local|tar`: the image's file tree, as a directory or a
/// tar archive (`-` for stdout). The layers are viewed through a read-only
/// snapshot under `<root>/build`.
pub fn to_files(
    store: &LocalStore,
    image: &Image,
    dest: &str,
    as_tar: bool,
) -> Result<(), ExportError> {
    let snaps = berth_image::Snapshotter::new(
        store.root().join("build/snapshots"),
        store.layers.clone(),
        berth_image::SnapshotMode::Auto,
    )
    .map_err(ctx("open the snapshotter"))?;
    let key = format!("export-{}", std::process::id());
    let dir = store.root().join("build/work").join(&key);
    let chains: Vec<Digest> = image.layers.iter().map(|l| l.chain_id.clone()).collect();
    let view = View::new(&snaps, &key, &dir, &chains)?;
    if as_tar {
        let out: Box<dyn Write> = if dest == "-" {
            Box::new(std::io::stdout().lock())
        } else {
            Box::new(File::create(dest).map_err(ctx(format!("create {dest}")))?)
        };
        let mut ar = tar::Builder::new(out);
        ar.follow_symlinks(false);
        ar.append_dir_all(".", &view.fs)
            .map_err(ctx("archive the file tree"))?;
        let mut out = ar.into_inner().map_err(ctx("finish archive"))?;
        out.flush().map_err(ctx("finish archive"))?;
    } else {
        std::fs::create_dir_all(dest).map_err(ctx(format!("create {dest}")))?;
        let root = crate::copy::SourceRoot {
            dir: &view.fs,
            ignore: None,
            keep_owner: true,
            rootfs: true,
            exclude: None,
        };
        let sources = crate::copy::expand_sources(&root, &["/".to_string()])
            .map_err(ctx("read the file tree"))?;
        crate::copy::copy_into(
            &root,
            &sources,
            Path::new(dest),
            "/",
            &crate::copy::CopyOptions::default(),
        )
        .map_err(ctx(format!("copy the file tree to {dest}")))?;
    }
    Ok(())
}

/// A read-only mount of some layers, undone on drop.
struct View<'a> {
    snaps: &'a berth_image::Snapshotter,
    key: String,
    dir: std::path::PathBuf,
    fs: std::path::PathBuf,
    mounted: bool,
}

impl<'a> View<'a> {
    fn new(
        snaps: &'a berth_image::Snapshotter,
        key: &str,
        dir: &Path,
        chains: &[Digest],
    ) -> Result<View<'a>, ExportError> {
        let mut v = View {
            snaps,
            key: key.to_string(),
            dir: dir.to_path_buf(),
            fs: dir.join("fs"),
            mounted: false,
        };
        std::fs::create_dir_all(&v.fs).map_err(ctx(format!("create {}", v.fs.display())))?;
        let mounts = snaps.view(key, chains).map_err(ctx("view the layers"))?;
        for m in &mounts {
            m.mount_at(&v.fs).map_err(ctx("mount the layers"))?;
            v.mounted = true;
        }
        Ok(v)
    }
}

impl Drop for View<'_> {
    fn drop(&mut self) {
        if self.mounted {
            let _ = nix::mount::umount2(&self.fs, nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = self.snaps.remove(&self.key);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

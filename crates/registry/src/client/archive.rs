//! `save` and `load`: images as one tar file.
//!
//! `save` writes the layout Docker 25+ writes, which is both an OCI image layout
//! (`oci-layout`, `index.json`, `blobs/sha256/…`) and a docker-archive (`manifest.json`
//! naming the config and layer files inside `blobs/`), so `docker load`, `skopeo copy
//! docker-archive:` and `skopeo copy oci-archive:` all read it. Blobs are written exactly
//! as stored, so digests survive a round trip.
//!
//! `load` reads either form. An OCI layout is imported as is (an index entry that is
//! itself an index is resolved to the host's platform). A docker-archive has no
//! manifest, so one is made: Docker schema 2, each layer file a blob of its own (plain
//! or gzip tar, told apart by magic bytes), as `docker save` output has always been.
//! The archive is untrusted: it is unpacked into a private directory under the store
//! and every path it names must stay inside that directory.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use berth_image::layer::{chain_ids, ApplyOptions, Compression};
use berth_image::{Digest, ImageRecord, LayerRecord, Reference};
use serde_json::{json, Value};

use super::error::{content_ctx, io_ctx, Error, Result};
use super::manifest::{ImageConfig, Manifest, Platform, DOCKER_MANIFEST, OCI_INDEX};
use super::store::LocalStore;

/// An image `load` added.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Config digest (the image id).
    pub id: Digest,
    /// References it was tagged with.
    pub tags: Vec<Reference>,
}

/// Writes the images `names` to `out` as one archive.
pub fn save(store: &LocalStore, names: &[String], out: impl Write) -> Result<()> {
    let mut tar = tar::Builder::new(out);
    let mut written = HashSet::new();
    let mut index = Vec::new();
    let mut docker = Vec::new();
    for name in names {
        let rec = store.find(name)?;
        let tags = tags_for(store, name, &rec)?;
        for blob in store.blobs_of(&rec.manifest_digest)? {
            if written.insert(blob.clone()) {
                append_blob(&mut tar, store, &blob)?;
            }
        }
        let (config, layers) = match store.manifest(&rec.manifest_digest)? {
            Manifest::Image { config, layers, .. } => (config, layers),
            Manifest::Index { .. } => continue,
        };
        let size = store.manifest_bytes(&rec.manifest_digest)?.len();
        let mut entry = |annotations: Value| {
            index.push(json!({
                "mediaType": rec.media_type,
                "digest": rec.manifest_digest.to_string(),
                "size": size,
                "annotations": annotations,
            }))
        };
        if tags.is_empty() {
            entry(json!({}));
        }
        for t in &tags {
            entry(json!({
                "io.containerd.image.name": t.to_string(),
                "org.opencontainers.image.ref.name": t.tag().unwrap_or("latest"),
            }));
        }
        docker.push(json!({
            "Config": blob_name(&config.digest),
            "RepoTags": tags.iter().map(Reference::familiar).collect::<Vec<_>>(),
            "Layers": layers.iter().map(|l| blob_name(&l.digest)).collect::<Vec<_>>(),
        }));
    }
    let files = [
        ("oci-layout", json!({"imageLayoutVersion": "1.0.0"})),
        (
            "index.json",
            json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": index}),
        ),
        ("manifest.json", Value::Array(docker)),
    ];
    for (name, value) in files {
        let bytes = serde_json::to_vec(&value).map_err(|e| Error::Internal(e.to_string()))?;
        append_bytes(&mut tar, name, &bytes)?;
    }
    tar.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(io_ctx("finish archive"))
}

/// The tags to save: the one named, or every tag of an image named by id.
fn tags_for(store: &LocalStore, name: &str, rec: &ImageRecord) -> Result<Vec<Reference>> {
    let all: Vec<Reference> = store
        .meta
        .tags_of(&rec.manifest_digest)?
        .iter()
        .filter_map(|t| Reference::parse(t).ok())
        .filter(|r| r.tag().is_some())
        .collect();
    Ok(match Reference::parse(name) {
        Ok(r) if all.contains(&r) => vec![r],
        _ => all,
    })
}

fn blob_name(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm(), d.hex())
}

fn append_blob(tar: &mut tar::Builder<impl Write>, store: &LocalStore, d: &Digest) -> Result<()> {
    let mut file = store
        .content
        .open_blob(d)
        .map_err(content_ctx(format!("save blob {d}")))?;
    let size = file
        .metadata()
        .map_err(io_ctx(format!("stat blob {d}")))?
        .len();
    let mut header = tar::Header::new_ustar();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, blob_name(d), &mut file)
        .map_err(io_ctx(format!("write blob {d} to the archive")))
}

fn append_bytes(tar: &mut tar::Builder<impl Write>, name: &str, bytes: &[u8]) -> Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, name, bytes)
        .map_err(io_ctx(format!("write {name} to the archive")))
}

/// Reads an archive (OCI layout or docker-archive) into the store.
pub fn load(store: &mut LocalStore, input: impl Read) -> Result<Vec<Loaded>> {
    let dir = Scratch::new(store.root())?;
    tar::Archive::new(input)
        .unpack(&dir.0)
        .map_err(io_ctx("unpack the archive"))?;
    // Docker 25+ writes both; the OCI index keeps the original manifests and digests.
    let images = if dir.0.join("index.json").is_file() {
        oci_images(&dir.0)?
    } else if dir.0.join("manifest.json").is_file() {
        docker_images(&dir.0)?
    } else {
        return Err(Error::InvalidManifest {
            reference: "archive".into(),
            reason: "neither manifest.json nor index.json found".into(),
        });
    };
    let mut out = Vec::new();
    for img in images {
        out.push(import(store, img)?);
    }
    Ok(out)
}

/// A private directory under the store root, removed when dropped.
pub(crate) struct Scratch(pub(crate) PathBuf);

impl Scratch {
    pub(crate) fn new(root: &Path) -> Result<Scratch> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let p = root.join(format!(".load-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&p).map_err(io_ctx(format!("create {}", p.display())))?;
        Ok(Scratch(p))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One image found in an archive.
struct Found {
    manifest: Vec<u8>,
    /// Where each blob the manifest names is, inside the archive directory.
    blobs: HashMap<Digest, PathBuf>,
    tags: Vec<Reference>,
}

fn invalid(reason: String) -> Error {
    Error::InvalidManifest {
        reference: "archive".into(),
        reason,
    }
}

/// `dir/rel`, refusing names that leave `dir` lexically or through symlinks.
fn inside(dir: &Path, rel: &str) -> Result<PathBuf> {
    let lexical_ok = Path::new(rel)
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    let path = dir.join(rel);
    let real = path
        .canonicalize()
        .map_err(io_ctx(format!("archive entry {rel:?}")))?;
    let base = dir.canonicalize().map_err(io_ctx("archive directory"))?;
    if !lexical_ok || !real.starts_with(&base) {
        return Err(invalid(format!("path {rel:?} leaves the archive")));
    }
    Ok(real)
}

fn read_json(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).map_err(io_ctx(format!("read {}", path.display())))?;
    serde_json::from_slice(&bytes).map_err(|e| invalid(format!("{}: {e}", path.display())))
}

fn hash_file(path: &Path) -> Result<(Digest, u64)> {
    let mut f = File::open(path).map_err(io_ctx(format!("open {}", path.display())))?;
    let mut h = berth_image::Algorithm::Sha256.hasher();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(io_ctx(format!("read {}", path.display())))?;
        if n == 0 {
            return Ok((h.finish(), size));
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
}

/// docker-archive: a schema 2 manifest is made for each `manifest.json` entry.
fn docker_images(dir: &Path) -> Result<Vec<Found>> {
    let entries = read_json(&dir.join("manifest.json"))?;
    let entries = entries
        .as_array()
        .ok_or_else(|| invalid("manifest.json is not an array".into()))?;
    let mut out = Vec::new();
    for e in entries {
        let config_path = inside(dir, e["Config"].as_str().unwrap_or(""))?;
        let (config_digest, config_size) = hash_file(&config_path)?;
        let mut blobs = HashMap::from([(config_digest.clone(), config_path)]);
        let mut layers = Vec::new();
        for l in e["Layers"].as_array().into_iter().flatten() {
            let path = inside(dir, l.as_str().unwrap_or(""))?;
            let (digest, size) = hash_file(&path)?;
            let media_type = match sniff(&path)? {
                Compression::Gzip => "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Compression::Zstd => "application/vnd.docker.image.rootfs.diff.tar.zstd",
                Compression::None => "application/vnd.docker.image.rootfs.diff.tar",
            };
            layers
                .push(json!({"mediaType": media_type, "digest": digest.to_string(), "size": size}));
            blobs.insert(digest, path);
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "digest": config_digest.to_string(),
                "size": config_size,
            },
            "layers": layers,
        });
        let tags = e["RepoTags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().and_then(|t| Reference::parse(t).ok()))
            .collect();
        out.push(Found {
            manifest: serde_json::to_vec(&manifest).map_err(|e| Error::Internal(e.to_string()))?,
            blobs,
            tags,
        });
    }
    Ok(out)
}

fn sniff(path: &Path) -> Result<Compression> {
    let mut head = [0u8; 8];
    let mut f = File::open(path).map_err(io_ctx(format!("open {}", path.display())))?;
    let n = f
        .read(&mut head)
        .map_err(io_ctx(format!("read {}", path.display())))?;
    Ok(Compression::detect(&head[..n], None))
}

/// OCI layout: blobs are used as they are.
fn oci_images(dir: &Path) -> Result<Vec<Found>> {
    let index = read_json(&dir.join("index.json"))?;
    let mut out = Vec::new();
    for entry in index["manifests"].as_array().into_iter().flatten() {
        let mut digest: Digest = entry["digest"]
            .as_str()
            .unwrap_or("")
            .parse()
            .map_err(|e| invalid(format!("index.json: {e}")))?;
        let mut bytes = read_blob(dir, &digest)?;
        if let Manifest::Index { manifests, .. } = Manifest::parse(&bytes, None, "archive")? {
            digest = Platform::host()
                .select(&manifests, "archive")?
                .digest
                .clone();
            bytes = read_blob(dir, &digest)?;
        }
        let mut blobs = HashMap::new();
        if let Manifest::Image { config, layers, .. } = Manifest::parse(&bytes, None, "archive")? {
            for d in std::iter::once(config).chain(layers) {
                blobs.insert(d.digest.clone(), inside(dir, &blob_name(&d.digest))?);
            }
        }
        let annotations = &entry["annotations"];
        // `ref.name` may be a bare tag ("latest"), which names no repository.
        let tags = annotations["io.containerd.image.name"]
            .as_str()
            .or_else(|| {
                annotations["org.opencontainers.image.ref.name"]
                    .as_str()
                    .filter(|n| n.contains(':') || n.contains('/'))
            })
            .and_then(|n| Reference::parse(n).ok())
            .into_iter()
            .collect();
        out.push(Found {
            manifest: bytes,
            blobs,
            tags,
        });
    }
    Ok(out)
}

fn read_blob(dir: &Path, d: &Digest) -> Result<Vec<u8>> {
    let path = inside(dir, &blob_name(d))?;
    let bytes = std::fs::read(&path).map_err(io_ctx(format!("read {}", path.display())))?;
    if Digest::sha256_of(&bytes) != *d {
        return Err(invalid(format!("blob {d} does not match its digest")));
    }
    Ok(bytes)
}

/// Stores one image's blobs, unpacks its layers and records it; on failure removes what
/// it added.
fn import(store: &mut LocalStore, img: Found) -> Result<Loaded> {
    let mut added_blobs = Vec::new();
    let mut added_layers = Vec::new();
    let result = import_inner(store, &img, &mut added_blobs, &mut added_layers);
    if result.is_err() {
        for c in &added_layers {
            let _ = store.layers.remove(c);
        }
        for b in &added_blobs {
            let _ = store.content.delete(b);
        }
    }
    result
}

fn import_inner(
    store: &mut LocalStore,
    img: &Found,
    added_blobs: &mut Vec<Digest>,
    added_layers: &mut Vec<Digest>,
) -> Result<Loaded> {
    let manifest_digest = Digest::sha256_of(&img.manifest);
    let (kind, config, layers) = match Manifest::parse(&img.manifest, None, "archive")? {
        Manifest::Image {
            kind,
            config,
            layers,
        } => (kind, config, layers),
        Manifest::Index { .. } => return Err(invalid("nested index".into())),
    };
    for d in std::iter::once(&config).chain(&layers) {
        if store.content.contains(&d.digest) {
            continue;
        }
        let path = img
            .blobs
            .get(&d.digest)
            .ok_or_else(|| invalid(format!("blob {} missing from the archive", d.digest)))?;
        let mut f = File::open(path).map_err(io_ctx(format!("open {}", path.display())))?;
        store
            .content
            .put(&mut f, d.size, &d.digest)
            .map_err(content_ctx(format!("load blob {}", d.digest)))?;
        added_blobs.push(d.digest.clone());
    }
    let config_bytes = store
        .content
        .read_blob(&config.digest)
        .map_err(content_ctx(format!("read config {}", config.digest)))?;
    let cfg = ImageConfig::parse(&config_bytes, "archive")?;
    if cfg.rootfs.diff_ids.len() != layers.len() {
        return Err(invalid(
            "layer count differs from the config's diff ids".into(),
        ));
    }
    let chains = chain_ids(&cfg.rootfs.diff_ids);
    let mut sizes = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let blob = store
            .content
            .open_blob(&l.digest)
            .map_err(content_ctx(format!("open layer {}", l.digest)))?;
        let applied = store
            .layers
            .apply(
                i.checked_sub(1).map(|p| &chains[p]),
                std::io::BufReader::new(blob),
                Some(&l.media_type),
                Some(&cfg.rootfs.diff_ids[i]),
                &ApplyOptions::default(),
            )
            .map_err(|source| Error::Layer {
                context: format!("load layer {}", l.digest),
                source,
            })?;
        if !applied.already_present {
            added_layers.push(applied.chain_id.clone());
        }
        sizes.push((cfg.rootfs.diff_ids[i].clone(), applied.content_size));
    }
    if !store.content.contains(&manifest_digest) {
        store
            .content
            .put(
                &mut &img.manifest[..],
                img.manifest.len() as u64,
                &manifest_digest,
            )
            .map_err(content_ctx(format!("store manifest {manifest_digest}")))?;
        added_blobs.push(manifest_digest.clone());
    }
    let rec = ImageRecord {
        manifest_digest: manifest_digest.clone(),
        config_digest: config.digest.clone(),
        media_type: kind.media_type().to_string(),
        platform: berth_image::Platform {
            os: cfg.os.clone(),
            architecture: cfg.architecture.clone(),
            variant: cfg.variant.clone(),
        },
        layers: LayerRecord::stack(&sizes),
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    };
    if !store.meta.add_image(&rec)? {
        // Already known: nothing this load added is needed beyond the tags.
        added_blobs.clear();
        added_layers.clear();
    }
    for t in &img.tags {
        store.meta.tag(t, &manifest_digest)?;
    }
    Ok(Loaded {
        id: config.digest,
        tags: img.tags.clone(),
    })
}

//! The local image store as the image commands see it: blobs, unpacked layers and the
//! metadata database under one root, plus the operations that touch all three (find an
//! image by any name, tag, remove with garbage collection, inspect).
//!
//! It lives here rather than in `berth-image` only because pull and push are its main
//! users; it holds no registry logic and could move down unchanged.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use berth_image::layer::LayerStore;
use berth_image::{AnyReference, ContentStore, Digest, ImageRecord, MetaStore, Reference};

use super::error::{content_ctx, io_ctx, Error, Result};
use super::manifest::{Manifest, MAX_MANIFEST_SIZE};

/// `<root>/blobs`, `<root>/layers`, `<root>/berth.db`.
pub struct LocalStore {
    root: PathBuf,
    /// Verified blobs.
    pub content: ContentStore,
    /// Unpacked layers.
    pub layers: LayerStore,
    /// Images, tags, layer reference counts.
    pub meta: MetaStore,
}

/// What [`LocalStore::prune`] did.
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    /// Untagged references and deleted images, in order.
    pub removed: Vec<Removal>,
    /// Bytes freed.
    pub reclaimed: u64,
}

/// A running pull's hold on the store; see [`LocalStore::pull_guard`].
pub struct PullGuard(std::fs::File);

impl PullGuard {
    /// Whether this is the only pull running; if so, it now holds the store
    /// exclusively until dropped.
    pub fn alone(&self) -> bool {
        self.0.try_lock().is_ok()
    }
}

/// What `rmi` did, in Docker's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// A tag was removed.
    Untagged(String),
    /// An image (by config digest, Docker's id) was deleted.
    Deleted(Digest),
}

impl LocalStore {
    /// Opens (creating if needed) the store under `root`.
    pub fn open(root: impl AsRef<Path>) -> Result<LocalStore> {
        let root = root.as_ref().to_path_buf();
        std::fs::create_dir_all(&root).map_err(io_ctx(format!("create {}", root.display())))?;
        let content = ContentStore::open(&root).map_err(content_ctx(format!(
            "open content store in {}",
            root.display()
        )))?;
        let layers = LayerStore::open(root.join("layers")).map_err(|source| Error::Layer {
            context: format!("open layer store in {}", root.display()),
            source,
        })?;
        let meta = MetaStore::open(root.join("berth.db"))?;
        Ok(LocalStore {
            root,
            content,
            layers,
            meta,
        })
    }

    /// Taken (shared) by every pull for its whole run. A pull that fails only rolls
    /// back what it added when it can turn this into an exclusive lock, that is when
    /// no other pull is running: a concurrent pull may have found that blob or layer
    /// already present and be about to record an image on it.
    pub fn pull_guard(&self) -> Result<PullGuard> {
        let file = self.lock_file()?;
        file.lock_shared()
            .map_err(io_ctx("lock the store for a pull"))?;
        Ok(PullGuard(file))
    }

    fn lock_file(&self) -> Result<std::fs::File> {
        let path = self.root.join("pull.lock");
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_ctx(format!("open {}", path.display())))
    }

    /// Every blob and layer (chain id) some image record references.
    pub fn referenced(&self) -> Result<(HashSet<Digest>, HashSet<Digest>)> {
        let mut blobs = HashSet::new();
        let mut layers = HashSet::new();
        for rec in self.meta.images()? {
            blobs.insert(rec.config_digest.clone());
            // An unreadable manifest still pins the blobs it may name; keep them all.
            match self.blobs_of(&rec.manifest_digest) {
                Ok(b) => blobs.extend(b),
                Err(_) => {
                    blobs.insert(rec.manifest_digest.clone());
                }
            }
            layers.extend(rec.layers.into_iter().map(|l| l.chain_id));
        }
        Ok((blobs, layers))
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Finds an image by reference (`busybox`, `host/x:tag`, `name@sha256:…`), by full
    /// digest of its manifest or config, or by a unique prefix of its id (config digest
    /// hex, as `docker images` shows it).
    pub fn find(&self, name: &str) -> Result<ImageRecord> {
        let not_found = || Error::ImageNotFound(name.to_string());
        if let Some(rec) = self.find_by_id_prefix(name)? {
            return Ok(rec);
        }
        let manifest = match Reference::parse_any(name).map_err(|_| not_found())? {
            AnyReference::Digest(d) => self.by_digest(&d)?,
            AnyReference::Named(r) => match self.meta.resolve(&r)? {
                Some(d) => Some(d),
                None => match r.digest() {
                    Some(d) => self.by_digest(d)?,
                    None => None,
                },
            },
        };
        let manifest = manifest.ok_or_else(not_found)?;
        self.meta.image(&manifest)?.ok_or_else(not_found)
    }

    fn by_digest(&self, d: &Digest) -> Result<Option<Digest>> {
        if self.meta.image(d)?.is_some() {
            return Ok(Some(d.clone()));
        }
        Ok(self
            .meta
            .images()?
            .into_iter()
            .find(|i| &i.config_digest == d)
            .map(|i| i.manifest_digest))
    }

    fn find_by_id_prefix(&self, name: &str) -> Result<Option<ImageRecord>> {
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        let is_prefix = (4..64).contains(&hex.len())
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !is_prefix {
            return Ok(None);
        }
        let mut hits: Vec<ImageRecord> = self
            .meta
            .images()?
            .into_iter()
            .filter(|i| i.config_digest.hex().starts_with(hex))
            .collect();
        // Several manifests may share a config; any of them is the same image to a user.
        Ok(if hits.is_empty() {
            None
        } else {
            Some(hits.swap_remove(0))
        })
    }

    /// Points `target` at the image `source` names.
    pub fn tag(&mut self, source: &str, target: &Reference) -> Result<()> {
        let rec = self.find(source)?;
        self.meta.tag(target, &rec.manifest_digest)?;
        Ok(())
    }

    /// Removes `name` as `docker rmi` does: a tag is untagged, and the image is deleted
    /// once no tag is left; an id or digest deletes the image, which needs `force` when
    /// it still has several tags. Layers and blobs nothing else uses are freed.
    pub fn remove(&mut self, name: &str, force: bool) -> Result<Vec<Removal>> {
        let rec = self.find(name)?;
        let tags = self.meta.tags_of(&rec.manifest_digest)?;
        let by_tag = tags
            .iter()
            .any(|t| Reference::parse(name).is_ok_and(|r| &r.to_string() == t));
        let mut out = Vec::new();
        if by_tag && tags.len() > 1 {
            let r = Reference::parse(name)?;
            self.meta.untag(&r)?;
            out.push(Removal::Untagged(r.familiar()));
            return Ok(out);
        }
        if !by_tag && tags.len() > 1 && !force {
            return Err(Error::Conflict(format!(
                "unable to delete {} (must be forced) - image is referenced in multiple repositories",
                short_id(&rec.config_digest)
            )));
        }
        for t in &tags {
            out.push(Removal::Untagged(
                Reference::parse(t).map_or_else(|_| t.clone(), |r| r.familiar()),
            ));
        }
        self.delete_image(&rec)?;
        out.push(Removal::Deleted(rec.config_digest.clone()));
        Ok(out)
    }

    /// Removes images as `docker image prune` does: the dangling ones (no tag left),
    /// or with `all` every image not in `in_use` (config digests of images containers
    /// run from; berth has no containers yet, so callers pass none). Reports what was
    /// untagged and deleted and the bytes freed (blobs plus unpacked layers).
    pub fn prune(&mut self, all: bool, in_use: &HashSet<Digest>) -> Result<PruneReport> {
        self.prune_where(all, in_use, |_| true)
    }

    /// [`prune`](Self::prune) of the images `eligible` accepts only (`--filter`).
    pub fn prune_where(
        &mut self,
        all: bool,
        in_use: &HashSet<Digest>,
        eligible: impl Fn(&ImageRecord) -> bool,
    ) -> Result<PruneReport> {
        let mut report = PruneReport::default();
        for rec in self.meta.images()? {
            if in_use.contains(&rec.config_digest) || !eligible(&rec) {
                continue;
            }
            let tags = self.meta.tags_of(&rec.manifest_digest)?;
            // As in Docker and `images --filter dangling=true`, an image still named
            // by `name@digest` (a pull by digest) is not dangling.
            if !tags.is_empty() && !all {
                continue;
            }
            for t in &tags {
                report.removed.push(Removal::Untagged(
                    Reference::parse(t).map_or_else(|_| t.clone(), |r| r.familiar()),
                ));
            }
            report.reclaimed += self.delete_image(&rec)?;
            report
                .removed
                .push(Removal::Deleted(rec.config_digest.clone()));
        }
        Ok(report)
    }

    /// Deletes an image record, then the layers and blobs no other image uses;
    /// returns the bytes freed.
    fn delete_image(&mut self, rec: &ImageRecord) -> Result<u64> {
        // Wait for running pulls: one may be about to record an image on a blob or
        // layer that looks unused now.
        let lock = self.lock_file()?;
        lock.lock()
            .map_err(io_ctx("lock the store against pulls"))?;
        let mut blobs = self.blobs_of(&rec.manifest_digest)?;
        let unused_layers = self.meta.remove_image(&rec.manifest_digest)?;
        // The compressed forms pushes made of layers now gone go with them.
        blobs.extend(self.meta.drop_unused_compressed_layers()?);
        let mut freed: u64 = unused_layers.iter().map(|l| l.size).sum();
        let mut still_used = HashSet::new();
        for other in self.meta.images()? {
            still_used.extend(self.blobs_of(&other.manifest_digest)?);
        }
        for l in unused_layers {
            self.content
                .materialize_from(&still_used, &self.layers.path(&l.chain_id))
                .map_err(content_ctx(format!(
                    "keep the blobs of layer {}",
                    l.chain_id
                )))?;
            self.layers
                .remove(&l.chain_id)
                .map_err(|source| Error::Layer {
                    context: format!("remove layer {}", l.chain_id),
                    source,
                })?;
        }
        for b in blobs.difference(&still_used) {
            let size = self.content.info(b).ok().flatten().unwrap_or(0);
            if self
                .content
                .delete(b)
                .map_err(content_ctx(format!("delete blob {b}")))?
            {
                freed += size;
            }
        }
        Ok(freed)
    }

    /// The manifest, config and layer blobs of an image.
    pub fn blobs_of(&self, manifest: &Digest) -> Result<HashSet<Digest>> {
        let mut out = HashSet::from([manifest.clone()]);
        if let Manifest::Image { config, layers, .. } = self.manifest(manifest)? {
            out.insert(config.digest);
            out.extend(layers.into_iter().map(|l| l.digest));
        }
        Ok(out)
    }

    /// Reads and parses a stored manifest.
    pub fn manifest(&self, digest: &Digest) -> Result<Manifest> {
        let bytes = self.manifest_bytes(digest)?;
        Manifest::parse(&bytes, None, &digest.to_string())
    }

    /// The stored bytes of a manifest.
    pub fn manifest_bytes(&self, digest: &Digest) -> Result<Vec<u8>> {
        let size = self
            .content
            .info(digest)
            .map_err(content_ctx(format!("stat manifest {digest}")))?;
        if size.is_some_and(|s| s > MAX_MANIFEST_SIZE as u64) {
            return Err(Error::InvalidManifest {
                reference: digest.to_string(),
                reason: "stored manifest is over the size limit".into(),
            });
        }
        self.content
            .read_blob(digest)
            .map_err(content_ctx(format!("read manifest {digest}")))
    }

    /// The image config as JSON.
    pub fn config_json(&self, rec: &ImageRecord) -> Result<serde_json::Value> {
        let bytes = self
            .content
            .read_blob(&rec.config_digest)
            .map_err(content_ctx(format!("read config {}", rec.config_digest)))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::InvalidManifest {
            reference: rec.config_digest.to_string(),
            reason: format!("stored config is not JSON: {e}"),
        })
    }

    /// Docker-style `image inspect` JSON of an image.
    pub fn inspect(&self, rec: &ImageRecord) -> Result<serde_json::Value> {
        let config = self.config_json(rec)?;
        let tags = self.meta.tags_of(&rec.manifest_digest)?;
        let parsed: Vec<Reference> = tags
            .iter()
            .filter_map(|t| Reference::parse(t).ok())
            .collect();
        let repo_tags: Vec<String> = parsed
            .iter()
            .filter(|r| r.tag().is_some())
            .map(|r| r.familiar())
            .collect();
        let mut repo_digests: Vec<String> = parsed
            .iter()
            .map(|r| format!("{}@{}", r.familiar_name(), rec.manifest_digest))
            .collect();
        repo_digests.dedup();
        let size: u64 = rec.layers.iter().map(|l| l.size).sum();
        // Docker prints these strings even when empty (`jq .Author` gives "", not null).
        let text = |key: &str| config.get(key).and_then(|v| v.as_str()).unwrap_or_default();
        let mut out = serde_json::json!({
            "Id": rec.config_digest.to_string(),
            "RepoTags": repo_tags,
            "RepoDigests": repo_digests,
            "Parent": "",
            "Comment": text("comment"),
            "Created": config.get("created").cloned().unwrap_or(serde_json::Value::Null),
            "DockerVersion": text("docker_version"),
            "Author": text("author"),
            "Config": config.get("config").cloned().unwrap_or_else(|| serde_json::json!({})),
            "Architecture": rec.platform.architecture,
            "Os": rec.platform.os,
            "Size": size,
            "RootFS": {
                "Type": "layers",
                "Layers": rec.layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>(),
            },
            "Descriptor": {
                "mediaType": rec.media_type,
                "digest": rec.manifest_digest.to_string(),
                "size": self.content.info(&rec.manifest_digest).ok().flatten(),
            },
            "GraphDriver": {
                "Name": "overlay",
                "Data": {
                    "LowerDir": rec.layers.iter().rev()
                        .map(|l| self.layers.path(&l.chain_id).display().to_string())
                        .collect::<Vec<_>>().join(":"),
                },
            },
        });
        // Docker's JSON leaves an empty Variant out, but its templates run on the struct
        // and print "" for it; an empty string serves both (`null` served neither).
        out["Variant"] = serde_json::json!(rec.platform.variant.as_deref().unwrap_or_default());
        Ok(out)
    }
}

/// One step of an image's history, newest first as `docker history` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The image id for the top entry; `None` ("<missing>") for the ones below.
    pub id: Option<Digest>,
    /// When the step ran (RFC 3339), if recorded.
    pub created: Option<String>,
    /// The instruction.
    pub created_by: String,
    /// Size of the layer the step made (0 for steps without one).
    pub size: u64,
    /// Comment.
    pub comment: String,
}

impl LocalStore {
    /// The image's history from its config, each step paired with its layer's size.
    /// Images without history get one entry per layer.
    pub fn history(&self, rec: &ImageRecord) -> Result<Vec<HistoryEntry>> {
        let config = self.config_json(rec)?;
        let steps = config["history"].as_array().cloned().unwrap_or_default();
        let mut sizes = rec.layers.iter().map(|l| l.size);
        let mut out: Vec<HistoryEntry> = if steps.is_empty() {
            sizes
                .map(|size| HistoryEntry {
                    id: None,
                    created: None,
                    created_by: String::new(),
                    size,
                    comment: String::new(),
                })
                .collect()
        } else {
            steps
                .iter()
                .map(|h| {
                    let empty = h["empty_layer"].as_bool().unwrap_or(false);
                    HistoryEntry {
                        id: None,
                        created: h["created"].as_str().map(str::to_string),
                        created_by: h["created_by"].as_str().unwrap_or("").to_string(),
                        size: if empty { 0 } else { sizes.next().unwrap_or(0) },
                        comment: h["comment"].as_str().unwrap_or("").to_string(),
                    }
                })
                .collect()
        };
        out.reverse();
        if let Some(top) = out.first_mut() {
            top.id = Some(rec.config_digest.clone());
        }
        Ok(out)
    }
}

/// The 12-hex short id Docker prints.
pub fn short_id(d: &Digest) -> String {
    d.hex().chars().take(12).collect()
}

/// One inconsistency found by [`LocalStore::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A committed blob does not hash to its name (or cannot be read).
    CorruptBlob {
        /// The blob's name.
        digest: Digest,
        /// What went wrong.
        detail: String,
    },
    /// An image record names a blob the content store lacks.
    MissingBlob {
        /// The image (manifest digest).
        image: Digest,
        /// `manifest`, `config` or `layer`.
        role: &'static str,
        /// The missing blob.
        blob: Digest,
    },
    /// A layer of an image is not unpacked under `layers/`.
    MissingLayer {
        /// The image (manifest digest).
        image: Digest,
        /// The layer's chain id (its directory name).
        chain_id: Digest,
    },
    /// The stored manifest of an image cannot be parsed.
    BadManifest {
        /// The image (manifest digest).
        image: Digest,
        /// Why.
        detail: String,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::CorruptBlob { digest, detail } => write!(f, "blob {digest}: {detail}"),
            Problem::MissingBlob { image, role, blob } => {
                write!(f, "image {image}: {role} blob {blob} is missing")
            }
            Problem::MissingLayer { image, chain_id } => write!(
                f,
                "image {image}: layer {chain_id} is missing (layers/{})",
                chain_id.hex()
            ),
            Problem::BadManifest { image, detail } => {
                write!(f, "image {image}: manifest unreadable: {detail}")
            }
        }
    }
}

/// What [`LocalStore::check`] looked at and what it found.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Blobs re-hashed.
    pub blobs: usize,
    /// Image records checked.
    pub images: usize,
    /// Layer references checked.
    pub layers: usize,
    /// Everything inconsistent; empty when the store is sound.
    pub problems: Vec<Problem>,
}

impl LocalStore {
    /// Verifies the store end to end: every committed blob hashes to its name, every
    /// image's manifest, config and layer blobs are present, and every layer of every
    /// image is unpacked. Reads every blob, so its cost is the store's size; it only
    /// reports and never repairs, so that a user sees damage before anything is lost.
    pub fn check(&self) -> Result<CheckReport> {
        let mut report = CheckReport::default();
        let blobs = self.content.list().map_err(content_ctx("list blobs"))?;
        for d in blobs {
            report.blobs += 1;
            if let Err(e) = self.content.verify(&d) {
                report.problems.push(Problem::CorruptBlob {
                    digest: d,
                    detail: e.to_string(),
                });
            }
        }
        for rec in self.meta.images()? {
            report.images += 1;
            let image = rec.manifest_digest.clone();
            let mut wanted = vec![("manifest", rec.manifest_digest.clone())];
            wanted.push(("config", rec.config_digest.clone()));
            if self.content.contains(&rec.manifest_digest) {
                match self.manifest(&rec.manifest_digest) {
                    Ok(Manifest::Image { layers, .. }) => {
                        wanted.extend(layers.into_iter().map(|l| ("layer", l.digest)));
                    }
                    Ok(_) => {}
                    Err(e) => report.problems.push(Problem::BadManifest {
                        image: image.clone(),
                        detail: e.to_string(),
                    }),
                }
            }
            for (role, blob) in wanted {
                if !self.content.contains(&blob) {
                    report.problems.push(Problem::MissingBlob {
                        image: image.clone(),
                        role,
                        blob,
                    });
                }
            }
            for l in &rec.layers {
                report.layers += 1;
                if !self.layers.contains(&l.chain_id) {
                    report.problems.push(Problem::MissingLayer {
                        image: image.clone(),
                        chain_id: l.chain_id.clone(),
                    });
                }
            }
        }
        Ok(report)
    }
}

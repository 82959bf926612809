//! Push: send an image of the local store to a registry.
//!
//! Each blob (config and layers, in parallel) is first looked up with HEAD and skipped
//! when the repository has it. Otherwise, when another tag of the same image lives in a
//! repository of the same registry, a cross-repository mount is asked for, which costs
//! no upload; if the registry declines it answers with an upload session, used as is.
//! Uploads are monolithic (POST for a session, then one PUT with `?digest=`, streamed
//! from the blob file) or, with [`Options::chunk_size`], chunked: one PATCH per chunk
//! with its `Content-Range`, each to the `Location` the previous answer gave, then an
//! empty PUT with `?digest=` that closes the session. The manifest goes last, byte for
//! byte as stored (so its digest is unchanged) unless layers were compressed for the
//! push (see [`super::recompress`]): then it names the compressed blobs and is a new
//! manifest of the same image (same config). The registry's `Docker-Content-Digest` is
//! checked against what was sent.

use std::sync::Arc;

use berth_image::{ContentStore, Digest, Reference};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::StatusCode;
use tokio::sync::Semaphore;

use super::error::{io_ctx, Error, Result};
use super::manifest::{Descriptor, Manifest};
use super::progress::Event;
pub use super::recompress::CompressOptions;
use super::recompress::{prepare_layers, rewrite_manifest};
use super::registry::{push_scope, Options, Registry};
use super::store::LocalStore;

/// How a blob got to the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobStatus {
    /// The repository already had it.
    LayerAlreadyExists,
    /// Mounted from another repository of the registry.
    Mounted,
    /// Uploaded.
    Pushed,
}

/// The outcome of a push.
#[derive(Debug, Clone)]
pub struct PushReport {
    /// Where it went.
    pub reference: Reference,
    /// Manifest digest.
    pub manifest_digest: Digest,
    /// Manifest size in bytes.
    pub manifest_size: u64,
    /// Each blob (config first, then layers) and what happened to it.
    pub blobs: Vec<(Digest, BlobStatus)>,
    /// The repository blobs were mounted from, when a mount was asked for.
    pub mounted_from: Option<String>,
}

/// Pushes the local image `source` to `dest` (blocking), compressing uncompressed
/// layers with gzip.
pub fn push(
    store: &LocalStore,
    source: &str,
    dest: &Reference,
    opts: &Options,
) -> Result<PushReport> {
    push_with(store, source, dest, opts, &CompressOptions::default())
}

/// [`push`] with a choice of layer compression.
pub fn push_with(
    store: &LocalStore,
    source: &str,
    dest: &Reference,
    opts: &Options,
    compress: &CompressOptions,
) -> Result<PushReport> {
    super::block_on(push_async(store, source, dest, opts, compress))
}

async fn push_async(
    store: &LocalStore,
    source: &str,
    dest: &Reference,
    opts: &Options,
    compress: &CompressOptions,
) -> Result<PushReport> {
    let rec = store.find(source)?;
    let stored = store.manifest_bytes(&rec.manifest_digest)?;
    let (kind, config, layers) = match Manifest::parse(&stored, Some(&rec.media_type), source)? {
        Manifest::Image {
            kind,
            config,
            layers,
        } => (kind, config, layers),
        Manifest::Index { .. } => {
            return Err(Error::InvalidManifest {
                reference: source.to_string(),
                reason: "pushing an index is not supported".into(),
            })
        }
    };
    // Compressing needs no connection: start it first, so that a long compression
    // cannot outlive a short-lived token.
    let prepared = prepare_layers(store, &config, &layers, compress, opts.parallel).await?;
    let (media_type, bytes, manifest_digest) = if prepared.changed {
        let (mt, bytes) = rewrite_manifest(&stored, kind, &prepared.layers)?;
        let digest = Digest::sha256_of(&bytes);
        (mt, bytes, digest)
    } else {
        (rec.media_type.clone(), stored, rec.manifest_digest.clone())
    };
    let layers = prepared.layers;
    let mount_from = mount_source(store, &rec.manifest_digest, dest)?;
    let reg = Arc::new(Registry::connect(dest.domain(), opts.clone()).await?);
    let mut blobs = vec![config];
    blobs.extend(layers);
    let statuses = push_blobs(
        &reg,
        dest.path(),
        &blobs,
        &store.content,
        mount_from.clone(),
        opts,
    )
    .await?;
    put_manifest(&reg, dest, &media_type, &bytes, &manifest_digest).await?;
    Ok(PushReport {
        reference: dest.clone(),
        manifest_digest,
        manifest_size: bytes.len() as u64,
        blobs: blobs.into_iter().map(|d| d.digest).zip(statuses).collect(),
        mounted_from: mount_from,
    })
}

/// Another repository of the same registry known to hold this image, if any.
fn mount_source(store: &LocalStore, manifest: &Digest, dest: &Reference) -> Result<Option<String>> {
    Ok(store
        .meta
        .tags_of(manifest)?
        .iter()
        .filter_map(|t| Reference::parse(t).ok())
        .find(|r| r.domain() == dest.domain() && r.path() != dest.path())
        .map(|r| r.path().to_string()))
}

async fn push_blobs(
    reg: &Arc<Registry>,
    repo: &str,
    blobs: &[Descriptor],
    content: &ContentStore,
    mount_from: Option<String>,
    opts: &Options,
) -> Result<Vec<BlobStatus>> {
    let limit = Arc::new(Semaphore::new(opts.parallel.max(1)));
    let mut tasks = Vec::new();
    for desc in blobs {
        let job = BlobJob {
            reg: reg.clone(),
            repo: repo.to_string(),
            desc: desc.clone(),
            content: content.clone(),
            mount_from: mount_from.clone(),
            chunk_size: opts.chunk_size,
        };
        let limit = limit.clone();
        let progress = opts.progress.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire_owned().await;
            let digest = job.desc.digest.clone();
            progress.emit(Event::Started {
                digest: &digest,
                total: job.desc.size,
            });
            let status = job.run().await;
            // The body streams from the file without a byte count, so a pushed blob
            // goes from started to finished in one step.
            if let Ok(s) = &status {
                progress.emit(Event::Finished {
                    digest: &digest,
                    status: match s {
                        BlobStatus::Pushed => "Pushed",
                        BlobStatus::Mounted => "Mounted",
                        BlobStatus::LayerAlreadyExists => "Layer already exists",
                    },
                });
            }
            status
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(
            t.await
                .map_err(|e| Error::Internal(format!("blob task: {e}")))??,
        );
    }
    Ok(out)
}

struct BlobJob {
    reg: Arc<Registry>,
    repo: String,
    desc: Descriptor,
    content: ContentStore,
    mount_from: Option<String>,
    chunk_size: Option<u64>,
}

impl BlobJob {
    async fn run(self) -> Result<BlobStatus> {
        if self.exists().await? {
            return Ok(BlobStatus::LayerAlreadyExists);
        }
        let started = match self.start_upload(self.mount_from.is_some()).await {
            // No read access to the source repository: upload instead, as Docker does.
            Err(Error::Unauthorized { .. }) if self.mount_from.is_some() => {
                self.start_upload(false).await?
            }
            other => other?,
        };
        let location = match started {
            Upload::Mounted => return Ok(BlobStatus::Mounted),
            Upload::Session(l) => l,
        };
        match self.chunk_size {
            Some(chunk) if chunk > 0 && self.desc.size > chunk => {
                self.upload_chunked(&location, chunk).await?
            }
            _ => self.upload(&location).await?,
        }
        Ok(BlobStatus::Pushed)
    }

    fn what(&self, verb: &str) -> String {
        format!("{verb} blob {}@{}", self.repo, self.desc.digest)
    }

    async fn exists(&self) -> Result<bool> {
        let url = self
            .reg
            .url(&self.repo, &format!("blobs/{}", self.desc.digest));
        let what = self.what("check");
        let make = || Ok(self.reg.http().head(&url));
        let resp = self.reg.send(&push_scope(&self.repo), &what, &make).await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(false),
            s if s.is_success() => Ok(true),
            _ => self.reg.check(resp, &self.repo, &what).await.map(|_| false),
        }
    }

    /// POST an upload session, asking for a mount from the source repository with `mount`.
    async fn start_upload(&self, mount: bool) -> Result<Upload> {
        let url = self.reg.url(&self.repo, "blobs/uploads/");
        let what = self.what("start upload of");
        let digest = self.desc.digest.to_string();
        let make = || {
            let req = self.reg.http().post(&url).header(CONTENT_LENGTH, "0");
            Ok(match self.mount_from.as_ref().filter(|_| mount) {
                Some(from) => req.query(&[("mount", digest.as_str()), ("from", from.as_str())]),
                None => req,
            })
        };
        let resp = self.reg.send(&push_scope(&self.repo), &what, &make).await?;
        if resp.status() == StatusCode::CREATED && mount {
            return Ok(Upload::Mounted);
        }
        let resp = self.reg.check(resp, &self.repo, &what).await?;
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::Status {
                registry: self.reg.domain().to_string(),
                context: what.clone(),
                status: resp.status().as_u16(),
                message: "no Location header for the upload".into(),
            })?;
        Ok(Upload::Session(self.reg.resolve_location(location)))
    }

    /// One PUT carrying the whole blob, streamed from the store.
    async fn upload(&self, location: &str) -> Result<()> {
        let what = self.what("upload");
        if !self.content.contains(&self.desc.digest) {
            return Err(Error::Content {
                context: format!("push {}", self.repo),
                source: berth_image::ContentError::NotFound(self.desc.digest.clone()),
            });
        }
        let path = self.stored_blob()?;
        let digest = self.desc.digest.to_string();
        let size = self.desc.size;
        let make = || {
            let file =
                std::fs::File::open(&path).map_err(io_ctx(format!("open {}", path.display())))?;
            Ok(self
                .reg
                .http()
                .put(location)
                .query(&[("digest", digest.as_str())])
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, size)
                .body(file_body(file)))
        };
        let resp = self.reg.send(&push_scope(&self.repo), &what, &make).await?;
        self.reg.check(resp, &self.repo, &what).await.map(|_| ())
    }
}

impl BlobJob {
    /// The blob's file, written out first if the store deferred it (a built layer).
    fn stored_blob(&self) -> Result<std::path::PathBuf> {
        self.content
            .materialize(&self.desc.digest)
            .map_err(|source| Error::Content {
                context: format!("push {}", self.repo),
                source,
            })?;
        Ok(self.content.blob_path(&self.desc.digest))
    }

    /// PATCHes the blob chunk by chunk, then closes the session with `?digest=`.
    async fn upload_chunked(&self, location: &str, chunk: u64) -> Result<()> {
        use std::io::{Read, Seek, SeekFrom};
        let what = self.what("upload chunk of");
        let path = self.stored_blob()?;
        let mut file =
            std::fs::File::open(&path).map_err(io_ctx(format!("open {}", path.display())))?;
        let mut location = location.to_string();
        let mut offset = 0u64;
        while offset < self.desc.size {
            let len = chunk.min(self.desc.size - offset);
            let mut buf = vec![0u8; len as usize];
            file.seek(SeekFrom::Start(offset))
                .and_then(|_| file.read_exact(&mut buf))
                .map_err(io_ctx(format!("read {}", path.display())))?;
            let range = format!("{offset}-{}", offset + len - 1);
            let make = || {
                Ok(self
                    .reg
                    .http()
                    .patch(&location)
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header("Content-Range", range.as_str())
                    .header(CONTENT_LENGTH, len)
                    .body(buf.clone()))
            };
            let resp = self.reg.send(&push_scope(&self.repo), &what, &make).await?;
            let resp = self.reg.check(resp, &self.repo, &what).await?;
            // Each answer names where the next chunk goes.
            if let Some(l) = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()) {
                location = self.reg.resolve_location(l);
            }
            offset += len;
        }
        let what = self.what("finish upload of");
        let digest = self.desc.digest.to_string();
        let make = || {
            Ok(self
                .reg
                .http()
                .put(&location)
                .query(&[("digest", digest.as_str())])
                .header(CONTENT_LENGTH, 0))
        };
        let resp = self.reg.send(&push_scope(&self.repo), &what, &make).await?;
        self.reg.check(resp, &self.repo, &what).await.map(|_| ())
    }
}

enum Upload {
    Mounted,
    Session(String),
}

pub(crate) async fn put_manifest(
    reg: &Registry,
    dest: &Reference,
    media_type: &str,
    bytes: &[u8],
    digest: &Digest,
) -> Result<()> {
    let repo = dest.path();
    let target = match (dest.tag(), dest.digest()) {
        (Some(t), _) => t.to_string(),
        (None, Some(d)) => d.to_string(),
        (None, None) => "latest".to_string(),
    };
    let url = reg.url(repo, &format!("manifests/{target}"));
    let what = format!("put manifest {repo}:{target}");
    let body = bytes.to_vec();
    let make = || {
        Ok(reg
            .http()
            .put(&url)
            .header(CONTENT_TYPE, media_type)
            .body(body.clone()))
    };
    let resp = reg.send(&push_scope(repo), &what, &make).await?;
    let resp = reg.check(resp, repo, &what).await?;
    let announced = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Digest>().ok());
    match announced {
        Some(a) if &a != digest => Err(Error::DigestMismatch {
            location: format!("{}/{repo}", reg.domain()),
            what: format!("pushed manifest {target}"),
            expected: digest.clone(),
            actual: a,
        }),
        _ => Ok(()),
    }
}

/// A request body streamed from a blob file in large reads. reqwest's own conversion
/// from a tokio file reads 4 KiB at a time, each a trip through the blocking pool, which
/// made pushes slower than the network.
fn file_body(file: std::fs::File) -> reqwest::Body {
    const READ_SIZE: usize = 256 << 10;
    let stream =
        tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(file), READ_SIZE);
    reqwest::Body::wrap_stream(stream)
}

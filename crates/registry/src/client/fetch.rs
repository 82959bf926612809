//! Fetching manifests and blobs, verified.
//!
//! Manifests are small and read into memory (bounded by [`MAX_MANIFEST_SIZE`]); their
//! digest is checked against the digest asked for, or against `Docker-Content-Digest`
//! when fetched by tag. Blobs stream into a content store ingest, hashed as they arrive;
//! a download cut off mid-way resumes from the ingest's length with `Range`, and the
//! commit refuses anything whose size or digest is wrong.

use std::io::Write;

use berth_image::{Claim, ContentError, ContentStore, Digest};
use reqwest::header::{ACCEPT, CONTENT_TYPE, RANGE};
use reqwest::StatusCode;

use super::error::{content_ctx, Error, Result};
use super::manifest::{Descriptor, ACCEPT_ALL, MAX_MANIFEST_SIZE};
use super::progress::Event;
use super::registry::{pull_scope, Registry};

/// A manifest as fetched: its bytes, digest and media type.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// Exact bytes (the digest covers these).
    pub bytes: Vec<u8>,
    /// Their sha256 (or the pinned algorithm's) digest.
    pub digest: Digest,
    /// Content-Type the registry sent.
    pub content_type: Option<String>,
}

/// Fetches the manifest `reference` (a tag or digest) of `repo`.
pub async fn manifest(reg: &Registry, repo: &str, reference: &str) -> Result<FetchedManifest> {
    let url = reg.url(repo, &format!("manifests/{reference}"));
    let what = format!("fetch manifest {repo}:{reference}");
    let make = || Ok(reg.http().get(&url).header(ACCEPT, ACCEPT_ALL));
    let resp = reg.send(&pull_scope(repo), &what, &make).await?;
    if resp.status() == StatusCode::NOT_FOUND {
        return Err(Error::ManifestNotFound {
            registry: reg.domain().to_string(),
            reference: format!("{repo}{}{reference}", sep(reference)),
        });
    }
    let mut resp = reg.check(resp, repo, &what).await?;
    let content_type = header(&resp, CONTENT_TYPE.as_str());
    let announced = header(&resp, "docker-content-digest");
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| reg.http_err(&what, e))? {
        if bytes.len() + chunk.len() > MAX_MANIFEST_SIZE {
            return Err(Error::InvalidManifest {
                reference: format!("{}/{repo}{}{reference}", reg.domain(), sep(reference)),
                reason: format!("manifest is over the {MAX_MANIFEST_SIZE}-byte limit"),
            });
        }
        bytes.extend_from_slice(&chunk);
    }
    let digest = verify_manifest(reg, repo, reference, &bytes, announced.as_deref())?;
    Ok(FetchedManifest {
        bytes,
        digest,
        content_type,
    })
}

fn sep(reference: &str) -> &'static str {
    if reference.contains(':') {
        "@"
    } else {
        ":"
    }
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A pinned digest must match the bytes; a tag's `Docker-Content-Digest`, when sent,
/// must too (it is what a later pull by digest would ask for).
fn verify_manifest(
    reg: &Registry,
    repo: &str,
    reference: &str,
    bytes: &[u8],
    announced: Option<&str>,
) -> Result<Digest> {
    let expected: Option<Digest> = match reference.parse::<Digest>() {
        Ok(d) => Some(d),
        Err(_) => announced.and_then(|a| a.trim().parse().ok()),
    };
    let algorithm = expected
        .as_ref()
        .map_or(berth_image::Algorithm::Sha256, Digest::algorithm);
    let mut h = algorithm.hasher();
    h.update(bytes);
    let actual = h.finish();
    match expected {
        Some(e) if e != actual => Err(Error::DigestMismatch {
            location: format!("{}/{repo}", reg.domain()),
            what: format!("manifest {reference}"),
            expected: e,
            actual,
        }),
        _ => Ok(actual),
    }
}

/// Fetches a small blob (a config) into memory, verified.
pub async fn small_blob(reg: &Registry, repo: &str, desc: &Descriptor) -> Result<Vec<u8>> {
    let url = reg.url(repo, &format!("blobs/{}", desc.digest));
    let what = format!("fetch blob {repo}@{}", desc.digest);
    if desc.size > MAX_MANIFEST_SIZE as u64 * 4 {
        return Err(Error::InvalidManifest {
            reference: format!("{}/{repo}", reg.domain()),
            reason: format!("config {} of {} bytes is too large", desc.digest, desc.size),
        });
    }
    let make = || Ok(reg.http().get(&url));
    let resp = reg.send(&pull_scope(repo), &what, &make).await?;
    let bytes = reg
        .check(resp, repo, &what)
        .await?
        .bytes()
        .await
        .map_err(|e| reg.http_err(&what, e))?;
    let mut h = desc.digest.algorithm().hasher();
    h.update(&bytes);
    let actual = h.finish();
    if actual != desc.digest || bytes.len() as u64 != desc.size {
        return Err(Error::DigestMismatch {
            location: format!("{}/{repo}", reg.domain()),
            what: format!("blob of {} bytes (expected {})", bytes.len(), desc.size),
            expected: desc.digest.clone(),
            actual,
        });
    }
    Ok(bytes.to_vec())
}

/// A copy of a blob's bytes, in order, for a consumer that reads while the download
/// runs (the layer unpacker). Once the stream cannot continue in order (the ingest had
/// data from an earlier process, or a registry restarted the body) the consumer gets an
/// error and the copy stops; the ingest itself is unaffected.
pub struct Tee {
    tx: Option<tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>>,
    broken: bool,
}

impl Tee {
    /// A tee feeding `tx`.
    pub fn new(tx: tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>) -> Tee {
        Tee {
            tx: Some(tx),
            broken: false,
        }
    }

    /// Whether the copy was cut off (the consumer saw an error, not the whole blob).
    pub fn broken(&self) -> bool {
        self.broken
    }

    async fn feed(&mut self, chunk: &bytes::Bytes) {
        if let Some(tx) = &self.tx {
            if tx.send(Ok(chunk.clone())).await.is_err() {
                // The consumer stopped reading; its own result tells why.
                self.tx = None;
            }
        }
    }

    /// Ends the copy with an error, so the consumer cannot take a prefix for the whole.
    pub async fn fail(&mut self, why: &str) {
        if let Some(tx) = self.tx.take() {
            let _ = tx
                .send(Err(std::io::Error::new(
                    std::io::ErrorKind::Interrupted,
                    why.to_string(),
                )))
                .await;
        }
        self.broken = true;
    }
}

/// Downloads a blob into the content store unless it is already there. Returns whether
/// it was downloaded (false: already present). With `tee`, every byte is also handed on
/// in order as it arrives.
pub async fn blob_to_store(
    reg: &Registry,
    repo: &str,
    desc: &Descriptor,
    store: &ContentStore,
    mut tee: Option<&mut Tee>,
) -> Result<bool> {
    let what = format!("fetch blob {repo}@{}", desc.digest);
    let reference = format!("pull-{}", desc.digest);
    let writer = loop {
        match store
            .claim(&reference, &desc.digest)
            .map_err(content_ctx(format!("open ingest for {}", desc.digest)))?
        {
            Claim::Stored => break None,
            Claim::Writer(w) => break Some(*w),
            // Another pull (this process or another) is downloading the same blob:
            // wait for it instead of failing. It either commits (then the blob is
            // here and nothing is left to do) or stops, releasing the lock so that
            // this pull resumes its ingest. A killed holder's lock dies with it.
            Claim::Busy => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    };
    let Some(mut writer) = writer else {
        if let Some(t) = tee {
            t.fail("blob already stored").await;
        }
        return Ok(false);
    };
    if writer.offset() > 0 {
        if let Some(t) = tee.as_deref_mut() {
            t.fail("resuming an earlier ingest").await;
        }
    }
    let attempts = reg.options().attempts.max(1);
    let mut attempt = 0;
    loop {
        match download_into(reg, repo, desc, &mut writer, tee.as_deref_mut()).await {
            Ok(()) => break,
            // A body cut off mid-way: keep what arrived and ask for the rest.
            Err(e @ Error::Http { .. }) if attempt + 1 < attempts => {
                tracing::debug!(error = %e, offset = writer.offset(), "resuming blob download");
                tokio::time::sleep(reg.backoff(attempt, None)).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
    // The commit's fsync waits for the disk; on the runtime's one thread it would
    // stall every other layer's download for as long, so it runs aside.
    let (size, digest) = (desc.size, desc.digest.clone());
    tokio::task::spawn_blocking(move || writer.commit(size, &digest))
        .await
        .map_err(|e| Error::Internal(format!("commit task: {e}")))?
        .map_err(|e| commit_error(reg, repo, &what, desc, e))?;
    Ok(true)
}

fn commit_error(
    reg: &Registry,
    repo: &str,
    what: &str,
    desc: &Descriptor,
    e: ContentError,
) -> Error {
    match e {
        ContentError::DigestMismatch { expected, actual } => Error::DigestMismatch {
            location: format!("{}/{repo}", reg.domain()),
            what: format!("blob {}", desc.digest),
            expected,
            actual,
        },
        other => Error::Content {
            context: format!("{}: {what}", reg.domain()),
            source: other,
        },
    }
}

/// One GET of the blob from the writer's offset on, appended to the ingest.
async fn download_into(
    reg: &Registry,
    repo: &str,
    desc: &Descriptor,
    writer: &mut berth_image::Writer,
    mut tee: Option<&mut Tee>,
) -> Result<()> {
    let url = reg.url(repo, &format!("blobs/{}", desc.digest));
    let what = format!("fetch blob {repo}@{}", desc.digest);
    if writer.offset() >= desc.size {
        // More than announced (or exactly it, unverified): start over.
        restart(writer, tee.as_deref_mut(), &what).await?;
    }
    let offset = writer.offset();
    let make = || {
        let req = reg.http().get(&url);
        Ok(if offset > 0 {
            req.header(RANGE, format!("bytes={offset}-"))
        } else {
            req
        })
    };
    let resp = reg.send(&pull_scope(repo), &what, &make).await?;
    if resp.status() == StatusCode::RANGE_NOT_SATISFIABLE {
        restart(writer, tee.as_deref_mut(), &what).await?;
        return Err(Error::Status {
            registry: reg.domain().to_string(),
            context: what,
            status: 416,
            message: "range not satisfiable".into(),
        });
    }
    let mut resp = reg.check(resp, repo, &what).await?;
    if offset > 0 && resp.status() != StatusCode::PARTIAL_CONTENT {
        // The registry ignored Range and sends everything: restart the ingest.
        restart(writer, tee.as_deref_mut(), &what).await?;
    }
    // HTTP chunks are a few KiB; gathering them into large writes saves most of the
    // write calls. When the stream breaks, what arrived is written first so that the
    // resumed download (from `writer.offset()`) continues after it.
    let mut pending: Vec<u8> = Vec::with_capacity(WRITE_BATCH);
    let write = |writer: &mut berth_image::Writer, data: &mut Vec<u8>| {
        let r = writer.write_all(data).map_err(|source| Error::Io {
            context: format!("write {what} to the store"),
            source,
        });
        data.clear();
        r
    };
    loop {
        let chunk = match resp.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                write(writer, &mut pending)?;
                return Err(reg.http_err(&what, e));
            }
        };
        if writer.offset() + (pending.len() + chunk.len()) as u64 > desc.size {
            restart(writer, tee.as_deref_mut(), &what).await?;
            return Err(Error::BlobTooLong {
                registry: reg.domain().to_string(),
                repository: repo.to_string(),
                digest: desc.digest.clone(),
                size: desc.size,
            });
        }
        pending.extend_from_slice(&chunk);
        if pending.len() >= WRITE_BATCH {
            write(writer, &mut pending)?;
        }
        reg.options().progress.emit(Event::Advanced {
            digest: &desc.digest,
            bytes: chunk.len() as u64,
        });
        if let Some(t) = tee.as_deref_mut() {
            t.feed(&chunk).await;
        }
    }
    write(writer, &mut pending)
}

/// Bytes gathered before one write to the ingest file.
const WRITE_BATCH: usize = 256 << 10;

/// Drops the ingest's data; a tee that already passed some of it on is cut off.
async fn restart(
    writer: &mut berth_image::Writer,
    tee: Option<&mut Tee>,
    what: &str,
) -> Result<()> {
    if let Some(t) = tee {
        if writer.offset() > 0 {
            t.fail("download restarted").await;
        }
    }
    writer.truncate().map_err(content_ctx(what))
}

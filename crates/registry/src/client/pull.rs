//! Pull: resolve a reference to one platform's image, fetch its config and layers into
//! the local store, unpack the layers, and record the image.
//!
//! Layers download in parallel (bounded by [`Options::parallel`]); each one is unpacked
//! on a blocking thread from the bytes as they arrive (a tee of the download), so
//! decompression and extraction overlap the transfer. The unpacker checks the diff id,
//! the ingest commit checks the blob digest; if either fails the layer is removed. Chain ids come from the config's diff ids, so layers do not wait for their
//! parents. Nothing is recorded in the database until every layer is in place, and a
//! failed pull removes the blobs and layers it added, so the store is as it was —
//! unless another pull is running, which may be using them (see [`Added::roll_back`]).
//! Two pulls of one blob do not race: the second waits on the ingest lock and then
//! finds the blob committed.

use std::io::Read;
use std::sync::Arc;

use berth_image::layer::{chain_ids, AppliedLayer, ApplyOptions, LayerStore};
use berth_image::{ContentStore, Digest, ImageRecord, LayerRecord, Reference};
use tokio::sync::Semaphore;

use super::error::{content_ctx, Error, Result};
use super::fetch::{self, FetchedManifest};
use super::manifest::{Descriptor, ImageConfig, Manifest, Platform};
use super::progress::Event;
use super::registry::{Options, Registry};
use super::store::{LocalStore, PullGuard};

/// How to pull.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Connection, credentials, retries, parallelism.
    pub registry: Options,
    /// Platform to pick from an index; the host's when `None`.
    pub platform: Option<Platform>,
}

/// What happened to one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerStatus {
    /// Blob and unpacked layer were already in the store.
    AlreadyExists,
    /// Downloaded (or unpacked) by this pull.
    PullComplete,
}

/// The outcome of a pull.
#[derive(Debug, Clone)]
pub struct PullReport {
    /// The reference recorded in the store.
    pub reference: Reference,
    /// Digest of the platform image's manifest.
    pub manifest_digest: Digest,
    /// Digest of the manifest the reference named (an index for multi-platform images).
    pub resolved_digest: Digest,
    /// Digest of the config (the image id).
    pub config_digest: Digest,
    /// Each layer's blob digest and what happened to it, bottom first.
    pub layers: Vec<(Digest, LayerStatus)>,
    /// The image was already in the store.
    pub up_to_date: bool,
}

/// Pulls `reference` into `store` (blocking; runs its own single-threaded runtime).
pub fn pull(
    store: &mut LocalStore,
    reference: &Reference,
    opts: &PullOptions,
) -> Result<PullReport> {
    super::block_on(pull_async(store, reference, opts))
}

/// What the registry reference resolved to for our platform.
struct Resolved {
    top: FetchedManifest,
    image: FetchedManifest,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

async fn resolve(reg: &Registry, reference: &Reference, platform: &Platform) -> Result<Resolved> {
    let repo = reference.path();
    let name = reference.to_string();
    let wanted = match (reference.digest(), reference.tag()) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.to_string(),
        (None, None) => "latest".to_string(),
    };
    let top = fetch::manifest(reg, repo, &wanted).await?;
    let (image, parsed) = match Manifest::parse(&top.bytes, top.content_type.as_deref(), &name)? {
        Manifest::Index { manifests, .. } => {
            let entry = platform.select(&manifests, &name)?;
            let m = fetch::manifest(reg, repo, &entry.digest.to_string()).await?;
            let parsed = Manifest::parse(&m.bytes, m.content_type.as_deref(), &name)?;
            (m, parsed)
        }
        m => (top.clone(), m),
    };
    match parsed {
        Manifest::Image { config, layers, .. } => Ok(Resolved {
            top,
            image,
            config,
            layers,
        }),
        Manifest::Index { .. } => Err(Error::InvalidManifest {
            reference: name,
            reason: "an index entry points at another index".into(),
        }),
    }
}

async fn pull_async(
    store: &mut LocalStore,
    reference: &Reference,
    opts: &PullOptions,
) -> Result<PullReport> {
    let guard = store.pull_guard()?;
    let reg = Arc::new(Registry::connect(reference.domain(), opts.registry.clone()).await?);
    let platform = opts.platform.clone().unwrap_or_else(Platform::host);
    let resolved = resolve(&reg, reference, &platform).await?;
    let local_ref = stored_reference(reference);
    if let Some(rec) = store.meta.image(&resolved.image.digest)? {
        store.meta.tag(&local_ref, &rec.manifest_digest)?;
        return Ok(report(
            local_ref,
            &resolved,
            rec.config_digest,
            vec![],
            true,
        ));
    }
    let repo = reference.path();
    let config_bytes = fetch::small_blob(&reg, repo, &resolved.config).await?;
    let config = ImageConfig::parse(&config_bytes, &reference.to_string())?;
    if config.rootfs.diff_ids.len() != resolved.layers.len() {
        return Err(Error::InvalidManifest {
            reference: reference.to_string(),
            reason: format!(
                "{} layers in the manifest but {} diff ids in the config",
                resolved.layers.len(),
                config.rootfs.diff_ids.len()
            ),
        });
    }
    let mut added = Added::default();
    let result = fetch_layers(
        &reg,
        repo,
        &resolved.layers,
        &config,
        store,
        opts,
        &mut added,
    )
    .await;
    let result = match result {
        Ok(layers) => record(
            store,
            &local_ref,
            &resolved,
            &config_bytes,
            &config,
            layers,
            &mut added,
        ),
        Err(e) => Err(e),
    };
    match result {
        Ok(statuses) => Ok(report(
            local_ref,
            &resolved,
            resolved.config.digest.clone(),
            statuses,
            false,
        )),
        Err(e) => {
            added.roll_back(store, guard);
            Err(e)
        }
    }
}

/// A reference by digest is stored as `name@digest`; a tag as `name:tag`.
fn stored_reference(reference: &Reference) -> Reference {
    match reference.digest() {
        Some(d) => Reference::parse_name(&reference.name())
            .map(|r| r.with_digest(d.clone()))
            .unwrap_or_else(|_| reference.clone()),
        None => reference.clone().with_default_tag(),
    }
}

fn report(
    reference: Reference,
    r: &Resolved,
    config_digest: Digest,
    statuses: Vec<LayerStatus>,
    up_to_date: bool,
) -> PullReport {
    PullReport {
        reference,
        manifest_digest: r.image.digest.clone(),
        resolved_digest: r.top.digest.clone(),
        config_digest,
        layers: r
            .layers
            .iter()
            .zip(
                statuses
                    .into_iter()
                    .chain(std::iter::repeat(LayerStatus::AlreadyExists)),
            )
            .map(|(d, s)| (d.digest.clone(), s))
            .collect(),
        up_to_date,
    }
}

/// What this pull put in the store, to take out again if it fails.
#[derive(Default)]
struct Added {
    blobs: Vec<Digest>,
    layers: Vec<Digest>,
}

impl Added {
    /// Removes what this pull added, unless another pull is running (it may have
    /// found these present and be about to use them) or an image references them.
    /// Only things this pull committed are listed, so nothing that was in the store
    /// before it started is touched. Best effort: what stays is unreferenced and
    /// harmless.
    fn roll_back(&self, store: &LocalStore, guard: PullGuard) {
        if !guard.alone() {
            return;
        }
        let Ok((blobs, layers)) = store.referenced() else {
            return;
        };
        for chain in self.layers.iter().filter(|c| !layers.contains(*c)) {
            let _ = store.layers.remove(chain);
        }
        for b in self.blobs.iter().filter(|b| !blobs.contains(*b)) {
            let _ = store.content.delete(b);
        }
    }
}

/// One layer once fetched and unpacked.
struct LayerDone {
    downloaded: bool,
    unpacked: bool,
    content_size: u64,
}

async fn fetch_layers(
    reg: &Arc<Registry>,
    repo: &str,
    layers: &[Descriptor],
    config: &ImageConfig,
    store: &LocalStore,
    opts: &PullOptions,
    added: &mut Added,
) -> Result<Vec<LayerDone>> {
    let chains = chain_ids(&config.rootfs.diff_ids);
    let limit = Arc::new(Semaphore::new(opts.registry.parallel.max(1)));
    let mut tasks = Vec::new();
    for (i, desc) in layers.iter().enumerate() {
        let job = LayerJob {
            reg: reg.clone(),
            repo: repo.to_string(),
            desc: desc.clone(),
            diff_id: config.rootfs.diff_ids[i].clone(),
            parent: i.checked_sub(1).map(|p| chains[p].clone()),
            content: store.content.clone(),
            layers: store.layers.clone(),
        };
        let limit = limit.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire_owned().await;
            job.run().await
        }));
    }
    // Every task is awaited, even after a failure, so that nothing is still writing
    // when the caller rolls back.
    let mut first_err = None;
    let mut done = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        let r = match t.await {
            Ok((added_here, r)) => {
                if added_here.blob {
                    added.blobs.push(layers[i].digest.clone());
                }
                added.layers.extend(added_here.failed_layer);
                r
            }
            Err(e) => Err(Error::Internal(format!("layer task: {e}"))),
        };
        match r {
            Ok(d) => {
                if d.unpacked {
                    added.layers.push(chains[i].clone());
                }
                done.push(d);
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(done),
    }
}

/// What one layer job added to the store, reported even when the job failed.
#[derive(Default)]
struct JobAdded {
    /// The job committed the layer blob.
    blob: bool,
    /// A layer the job unpacked before its blob failed verification.
    failed_layer: Option<Digest>,
}

struct LayerJob {
    reg: Arc<Registry>,
    repo: String,
    desc: Descriptor,
    diff_id: Digest,
    parent: Option<Digest>,
    content: ContentStore,
    layers: LayerStore,
}

impl LayerJob {
    /// Fetches and unpacks the layer; also says what this job put in the store even
    /// when it failed, so that the pull's roll-back (which knows whether another pull
    /// may be using it) takes it out rather than the job itself.
    async fn run(self) -> (JobAdded, Result<LayerDone>) {
        let progress = self.reg.options().progress.clone();
        let digest = &self.desc.digest;
        progress.emit(Event::Started {
            digest,
            total: self.desc.size,
        });
        let mut committed = JobAdded::default();
        let result = self.fetch_and_unpack(&mut committed).await;
        if let Ok(done) = &result {
            let status = if done.downloaded || done.unpacked {
                "Pull complete"
            } else {
                "Already exists"
            };
            progress.emit(Event::Finished { digest, status });
        }
        (committed, result)
    }

    async fn fetch_and_unpack(&self, committed: &mut JobAdded) -> Result<LayerDone> {
        let chain = berth_image::chain_id(self.parent.as_ref(), &self.diff_id);
        if self.content.contains(&self.desc.digest) || self.layers.contains(&chain) {
            let downloaded =
                fetch::blob_to_store(&self.reg, &self.repo, &self.desc, &self.content, None)
                    .await?;
            committed.blob = downloaded;
            return self.done(downloaded, self.unpack_stored().await?);
        }
        // Unpack while downloading: the unpacker reads the bytes as they arrive, so
        // decompression and extraction overlap the transfer instead of following it.
        // A short queue: each chunk pins the receive buffer it was cut from, so a long
        // one lets a lagging unpacker hold tens of megabytes.
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let streamed = self.spawn_unpack(Box::new(ChannelReader::new(rx)));
        let mut tee = fetch::Tee::new(tx);
        let downloaded = fetch::blob_to_store(
            &self.reg,
            &self.repo,
            &self.desc,
            &self.content,
            Some(&mut tee),
        )
        .await;
        if downloaded.is_err() {
            tee.fail("download failed").await;
        }
        let broken = tee.broken();
        drop(tee); // end of stream for the unpacker
        let streamed = streamed
            .await
            .map_err(|e| Error::Internal(format!("unpack task: {e}")))?;
        let downloaded = match downloaded {
            Ok(d) => {
                committed.blob = d;
                d
            }
            Err(e) => {
                // The blob failed its checks: a layer unpacked from it goes too.
                if let Ok(a) = &streamed {
                    if !a.already_present {
                        committed.failed_layer = Some(a.chain_id.clone());
                    }
                }
                return Err(e);
            }
        };
        match streamed {
            Ok(applied) if !broken => self.done(downloaded, applied),
            // The stream was cut (resumed ingest, restarted body) or failed: unpack
            // again from the verified blob, which also gives the real error if any.
            _ => self.done(downloaded, self.unpack_stored().await?),
        }
    }

    fn done(&self, downloaded: bool, applied: AppliedLayer) -> Result<LayerDone> {
        Ok(LayerDone {
            downloaded,
            unpacked: !applied.already_present,
            content_size: applied.content_size,
        })
    }

    /// Unpacks from the verified blob in the store.
    async fn unpack_stored(&self) -> Result<AppliedLayer> {
        let file = self
            .content
            .open_blob(&self.desc.digest)
            .map_err(content_ctx(format!("open layer blob {}", self.desc.digest)))?;
        self.spawn_unpack(Box::new(file))
            .await
            .map_err(|e| Error::Internal(format!("unpack task: {e}")))?
    }

    /// Runs the layer unpacker on a blocking thread (tar extraction is synchronous file
    /// work).
    fn spawn_unpack(
        &self,
        input: Box<dyn Read + Send>,
    ) -> tokio::task::JoinHandle<Result<AppliedLayer>> {
        let layers = self.layers.clone();
        let (desc, parent, diff_id) =
            (self.desc.clone(), self.parent.clone(), self.diff_id.clone());
        let context = format!(
            "{}/{}: unpack layer {}",
            self.reg.domain(),
            self.repo,
            desc.digest
        );
        tokio::task::spawn_blocking(move || {
            let reader = std::io::BufReader::with_capacity(256 * 1024, input);
            layers
                .apply(
                    parent.as_ref(),
                    reader,
                    Some(&desc.media_type),
                    Some(&diff_id),
                    &ApplyOptions::default(),
                )
                .map_err(|source| Error::Layer { context, source })
        })
    }
}

/// Reads the chunks a download hands over, blocking the unpacker thread until the next
/// one arrives.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
    buf: bytes::Bytes,
}

impl ChannelReader {
    fn new(rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>) -> Self {
        ChannelReader {
            rx,
            buf: bytes::Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.buf.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.buf = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf.split_to(n));
        Ok(n)
    }
}

/// Stores config and manifest and records the image and its tag.
fn record(
    store: &mut LocalStore,
    local_ref: &Reference,
    r: &Resolved,
    config_bytes: &[u8],
    config: &ImageConfig,
    layers: Vec<LayerDone>,
    added: &mut Added,
) -> Result<Vec<LayerStatus>> {
    for (bytes, digest) in [
        (config_bytes, &r.config.digest),
        (&r.image.bytes[..], &r.image.digest),
    ] {
        if !store.content.contains(digest) {
            store
                .content
                .put(&mut &bytes[..], bytes.len() as u64, digest)
                .map_err(content_ctx(format!("store {digest}")))?;
            added.blobs.push(digest.clone());
        }
    }
    let stack: Vec<(Digest, u64)> = config
        .rootfs
        .diff_ids
        .iter()
        .cloned()
        .zip(layers.iter().map(|l| l.content_size))
        .collect();
    let media_type = Manifest::parse(&r.image.bytes, r.image.content_type.as_deref(), "")?
        .kind()
        .media_type();
    let rec = ImageRecord {
        manifest_digest: r.image.digest.clone(),
        config_digest: r.config.digest.clone(),
        media_type: media_type.to_string(),
        platform: berth_image::Platform {
            os: config.os.clone(),
            architecture: config.architecture.clone(),
            variant: config.variant.clone(),
        },
        layers: LayerRecord::stack(&stack),
        created_unix: now_unix(),
    };
    store.meta.add_image(&rec)?;
    if let Err(e) = store.meta.tag(local_ref, &rec.manifest_digest) {
        // Undo the record so the caller's roll-back leaves no image without its layers.
        let _ = store.meta.remove_image(&rec.manifest_digest);
        return Err(e.into());
    }
    Ok(layers
        .iter()
        .map(|l| {
            if l.downloaded || l.unpacked {
                LayerStatus::PullComplete
            } else {
                LayerStatus::AlreadyExists
            }
        })
        .collect())
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

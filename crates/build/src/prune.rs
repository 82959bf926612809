//! `berth builder prune`: forget the build cache and free what only it used.
//!
//! Build steps leave layers (blob and unpacked directory) that no image
//! record references, so image removal never frees them. Pruning clears the
//! `build_cache` table, then deletes every unpacked layer and blob that no
//! image references, and the `RUN --mount=type=cache` directories. It runs
//! only while no pull is running (a pull may be about to record an image on
//! a layer that looks unused now).

use berth_image::Digest;
use berth_registry::client::LocalStore;

use crate::cache::{Cache, RecordInfo};
use crate::executor::BuildError;

/// What a prune freed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneStats {
    pub cache_records: usize,
    pub layers: usize,
    pub blobs: usize,
    pub bytes: u64,
}

fn fail<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> BuildError {
    move |e| BuildError::Other(format!("{what}: {e}"))
}

/// Which records a prune takes (`builder prune --filter until=…`, `--keep-storage`);
/// the default takes them all.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Only records made before this time (seconds since the epoch).
    pub until: Option<i64>,
    /// Then keep the newest records whose layers add up to at most this many bytes.
    pub keep_storage: Option<u64>,
}

impl PruneOptions {
    fn takes_all(&self) -> bool {
        self.until.is_none() && self.keep_storage.is_none()
    }
}

/// Prunes the whole build cache of the store at `store.root()`.
pub fn prune(store: &LocalStore) -> Result<PruneStats, BuildError> {
    prune_with(store, &PruneOptions::default())
}

/// Prunes the records `opts` selects, then every layer and blob that neither an image
/// nor a remaining record uses. A remaining record that does not name its layer
/// directory (imported with `--cache-from`, or made before berth recorded it) keeps
/// every layer: which one it needs cannot be told.
pub fn prune_with(store: &LocalStore, opts: &PruneOptions) -> Result<PruneStats, BuildError> {
    let guard = store.pull_guard().map_err(fail("lock the store"))?;
    if !guard.alone() {
        return Err(BuildError::Other(
            "a pull is running on this store; prune again when it is done".into(),
        ));
    }
    let root = store.root();
    let cache = Cache::open(&root.join("berth.db")).map_err(fail("open the build cache"))?;
    let (mut blobs, mut layers) = store
        .referenced()
        .map_err(fail("list referenced content"))?;
    let mut stats = PruneStats::default();
    let mut sweep_layers = true;
    if opts.takes_all() {
        stats.cache_records = cache.clear().map_err(fail("clear the build cache"))?;
    } else {
        let records = cache.records().map_err(fail("read the build cache"))?;
        let (gone, kept) = select(records, opts);
        for r in &kept {
            if let Ok(d) = r.digest.parse::<Digest>() {
                blobs.insert(d);
            }
            match r.chain_id.as_deref().map(|c| c.parse::<Digest>()) {
                Some(Ok(c)) => {
                    layers.insert(c);
                }
                _ if !r.diff_id.is_empty() => sweep_layers = false,
                _ => {}
            }
        }
        let keys: Vec<String> = gone.iter().map(|r| r.key.clone()).collect();
        let chains: Vec<String> = gone.iter().filter_map(|r| r.chain_id.clone()).collect();
        cache
            .remove(&keys, &chains)
            .map_err(fail("forget build cache records"))?;
        stats.cache_records = keys.len();
    }
    if sweep_layers {
        remove_layers(store, &blobs, &layers, &mut stats)?;
    }
    remove_blobs(store, &blobs, &mut stats)?;
    let mounts = root.join("build/cache-mounts");
    if opts.takes_all() && mounts.exists() {
        std::fs::remove_dir_all(&mounts).map_err(fail("remove cache mounts"))?;
    }
    Ok(stats)
}

/// Splits the records into those the prune takes and those it keeps.
fn select(mut records: Vec<RecordInfo>, opts: &PruneOptions) -> (Vec<RecordInfo>, Vec<RecordInfo>) {
    // Newest first, so that `keep_storage` keeps the most recent.
    records.sort_by_key(|r| std::cmp::Reverse(r.created_unix));
    let mut gone = Vec::new();
    let mut kept = Vec::new();
    let mut kept_bytes = 0u64;
    for r in records {
        let old_enough = opts.until.is_none_or(|u| r.created_unix < u);
        let fits = opts
            .keep_storage
            .is_some_and(|k| kept_bytes + r.content_size <= k);
        if old_enough && (opts.keep_storage.is_none() || !fits) {
            gone.push(r);
        } else {
            kept_bytes += r.content_size;
            kept.push(r);
        }
    }
    (gone, kept)
}

fn remove_layers(
    store: &LocalStore,
    blobs: &std::collections::HashSet<Digest>,
    layers: &std::collections::HashSet<Digest>,
    stats: &mut PruneStats,
) -> Result<(), BuildError> {
    let layer_dir = store.root().join("layers");
    for entry in std::fs::read_dir(&layer_dir).map_err(fail("list layers"))? {
        let name = entry.map_err(fail("list layers"))?.file_name();
        let name = name.to_string_lossy();
        let Ok(chain) = format!("sha256:{name}").parse::<Digest>() else {
            continue;
        };
        if layers.contains(&chain) {
            continue;
        }
        store
            .content
            .materialize_from(blobs, &store.layers.path(&chain))
            .map_err(fail("keep the blobs of a layer"))?;
        if store.layers.remove(&chain).map_err(fail("remove layer"))? {
            stats.layers += 1;
        }
    }
    Ok(())
}

fn remove_blobs(
    store: &LocalStore,
    blobs: &std::collections::HashSet<Digest>,
    stats: &mut PruneStats,
) -> Result<(), BuildError> {
    for d in store.content.list().map_err(fail("list blobs"))? {
        if blobs.contains(&d) {
            continue;
        }
        let size = store.content.info(&d).ok().flatten().unwrap_or(0);
        if store.content.delete(&d).map_err(fail("delete blob"))? {
            stats.blobs += 1;
            stats.bytes += size;
        }
    }
    Ok(())
}

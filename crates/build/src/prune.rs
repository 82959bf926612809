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

use crate::cache::Cache;
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

/// Prunes the build cache of the store at `store.root()`.
pub fn prune(store: &LocalStore) -> Result<PruneStats, BuildError> {
    let guard = store.pull_guard().map_err(fail("lock the store"))?;
    if !guard.alone() {
        return Err(BuildError::Other(
            "a pull is running on this store; prune again when it is done".into(),
        ));
    }
    let root = store.root();
    let mut stats = PruneStats {
        cache_records: Cache::open(&root.join("berth.db"))
            .and_then(|c| c.clear())
            .map_err(fail("clear the build cache"))?,
        ..Default::default()
    };
    let (blobs, layers) = store
        .referenced()
        .map_err(fail("list referenced content"))?;
    let layer_dir = root.join("layers");
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
            .materialize_from(&blobs, &store.layers.path(&chain))
            .map_err(fail("keep the blobs of a layer"))?;
        if store.layers.remove(&chain).map_err(fail("remove layer"))? {
            stats.layers += 1;
        }
    }
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
    let mounts = root.join("build/cache-mounts");
    if mounts.exists() {
        std::fs::remove_dir_all(&mounts).map_err(fail("remove cache mounts"))?;
    }
    Ok(stats)
}

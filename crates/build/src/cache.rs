//! The build cache: which layer a step with a given cache key produced.
//!
//! Records live in their own `build_cache` table of the store's `berth.db`,
//! so every build on the machine shares them. The schema is created with
//! `CREATE TABLE IF NOT EXISTS` and never touches `PRAGMA user_version`,
//! which belongs to `berth_image::MetaStore`'s migrations.
//!
//! A record only says what a step made; the blob and the unpacked layer live
//! in the content and layer stores, where image removal may delete them. A
//! hit is therefore only used when both are still there (see the executor).

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest as _, Sha256};

/// Cache failures.
#[derive(Debug, thiserror::Error)]
#[error("build cache: {0}")]
pub struct CacheError(#[from] rusqlite::Error);

/// What one step produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedLayer {
    /// The uncompressed tar's digest (`sha256:…`); empty when the step
    /// changed nothing and so made no layer.
    pub diff_id: String,
    /// The stored blob's digest.
    pub digest: String,
    /// The blob's size.
    pub size: u64,
    /// The blob's media type.
    pub media_type: String,
    /// Bytes of content in the layer (for image sizes).
    pub content_size: u64,
}

impl CachedLayer {
    /// Whether the step made no layer.
    pub fn is_empty(&self) -> bool {
        self.diff_id.is_empty()
    }
}

/// A record as a partial prune sees it.
#[derive(Debug, Clone)]
pub struct RecordInfo {
    pub key: String,
    pub created_unix: i64,
    pub content_size: u64,
    pub digest: String,
    pub diff_id: String,
    pub chain_id: Option<String>,
}

/// The cache table in the store's database.
pub struct Cache {
    conn: Connection,
}

impl Cache {
    /// Opens the cache in `<root>/berth.db` (which the image store has
    /// created and put in WAL mode).
    pub fn open(db: &Path) -> Result<Cache, CacheError> {
        let conn = Connection::open(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS build_cache (
                cache_key    TEXT PRIMARY KEY,
                diff_id      TEXT NOT NULL,
                digest       TEXT NOT NULL,
                size         INTEGER NOT NULL,
                media_type   TEXT NOT NULL,
                content_size INTEGER NOT NULL,
                created_unix INTEGER NOT NULL
            );
            CREATE TABLE IF NOT EXISTS build_file_digests (
                path     TEXT PRIMARY KEY,
                dev      INTEGER NOT NULL,
                ino      INTEGER NOT NULL,
                size     INTEGER NOT NULL,
                mtime_ns INTEGER NOT NULL,
                ctime_ns INTEGER NOT NULL,
                digest   BLOB NOT NULL
            );
            CREATE TABLE IF NOT EXISTS build_copy_layers (
                shape    TEXT PRIMARY KEY,
                chain_id TEXT NOT NULL,
                files    BLOB NOT NULL
            )",
        )?;
        // The layer directory a record's step made (`builder prune --filter` keeps the
        // layers of the records it keeps); added to stores made before it existed. Two
        // builds may race to add it: the loser's "duplicate column" is harmless.
        if conn
            .prepare("SELECT chain_id FROM build_cache LIMIT 0")
            .is_err()
        {
            let _ = conn.execute_batch("ALTER TABLE build_cache ADD COLUMN chain_id TEXT");
        }
        // Records are a cache: losing the last ones on a power cut costs a
        // re-run, so commits need not wait for the disk.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Ok(Cache { conn })
    }

    /// Starts a transaction around many digest lookups and records.
    pub fn begin(&self) -> Result<(), CacheError> {
        Ok(self.conn.execute_batch("BEGIN")?)
    }

    /// Ends the transaction [`Cache::begin`] started.
    pub fn commit(&self) -> Result<(), CacheError> {
        Ok(self.conn.execute_batch("COMMIT")?)
    }

    /// The sha256 of each context file's content, in order, remembered by path,
    /// device, inode, size and change times: a file whose inode, size, mtime and
    /// ctime are unchanged is not read again. The ctime is what makes this
    /// safe: every write, chmod or rename sets it to the current time, and
    /// no user call can set it back, so restoring the mtime after an edit
    /// does not hide it. The files that must be read are read on a few threads
    /// (the first build of a large context hashes every byte of it).
    pub fn file_digests(
        &self,
        files: &[(PathBuf, std::fs::Metadata)],
    ) -> std::io::Result<Vec<[u8; 32]>> {
        self.file_digests_at(files, now_ns())
    }

    /// [`Cache::file_digests`] at time `now` (ns since the epoch).
    fn file_digests_at(
        &self,
        files: &[(PathBuf, std::fs::Metadata)],
        now: i64,
    ) -> std::io::Result<Vec<[u8; 32]>> {
        let mut found: Vec<Option<[u8; 32]>> = Vec::with_capacity(files.len());
        let mut unknown = Vec::new();
        for (i, (path, md)) in files.iter().enumerate() {
            let d = self.known_digest(path, &FileStat::of(md));
            if d.is_none() {
                unknown.push(i);
            }
            found.push(d);
        }
        let hashed = crate::par::map(&unknown, |&i| {
            let path = &files[i].0;
            crate::copy::digest_file(path)
                .map_err(|e| std::io::Error::new(e.kind(), format!("read {}: {e}", path.display())))
        })?;
        for (i, d) in unknown.into_iter().zip(hashed) {
            let (path, md) = &files[i];
            let stat = FileStat::of(md);
            // The kernel stamps ctime from a coarse clock (one tick, up to 10 ms),
            // so a file changed again within the tick of its last change keeps
            // the same ctime. A file changed that recently is therefore not
            // remembered: it is read again next time, once its times are old
            // enough to tell a later change apart.
            if now - stat.ctime_ns.max(stat.mtime_ns) > RACY_NS {
                self.remember(path, &stat, &d);
            }
            found[i] = Some(d);
        }
        Ok(found.into_iter().flatten().collect())
    }

    fn known_digest(&self, path: &Path, stat: &FileStat) -> Option<[u8; 32]> {
        let known: Option<Vec<u8>> = self
            .conn
            .prepare_cached(
                "SELECT digest FROM build_file_digests
                 WHERE path = ?1 AND dev = ?2 AND ino = ?3 AND size = ?4 AND mtime_ns = ?5 AND ctime_ns = ?6",
            )
            .and_then(|mut st| {
                st.query_row(
                    params![
                        path.to_string_lossy(),
                        stat.dev,
                        stat.ino,
                        stat.size,
                        stat.mtime_ns,
                        stat.ctime_ns
                    ],
                    |r| r.get(0),
                )
                .optional()
            })
            .ok()
            .flatten();
        known.and_then(|k| <[u8; 32]>::try_from(k.as_slice()).ok())
    }

    fn remember(&self, path: &Path, stat: &FileStat, digest: &[u8; 32]) {
        // A failed record only costs a re-read next time.
        let _ = self
            .conn
            .prepare_cached(
                "INSERT OR REPLACE INTO build_file_digests
                    (path, dev, ino, size, mtime_ns, ctime_ns, digest)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    path.to_string_lossy(),
                    stat.dev,
                    stat.ino,
                    stat.size,
                    stat.mtime_ns,
                    stat.ctime_ns,
                    &digest[..]
                ])
            });
    }

    /// The layer recorded for `key`.
    pub fn get(&self, key: &str) -> Result<Option<CachedLayer>, CacheError> {
        Ok(self
            .conn
            .query_row(
                "SELECT diff_id, digest, size, media_type, content_size FROM build_cache WHERE cache_key = ?1",
                [key],
                |r| {
                    Ok(CachedLayer {
                        diff_id: r.get(0)?,
                        digest: r.get(1)?,
                        size: r.get::<_, i64>(2)? as u64,
                        media_type: r.get(3)?,
                        content_size: r.get::<_, i64>(4)? as u64,
                    })
                },
            )
            .optional()?)
    }

    /// Records (or replaces) what `key` produced; `chain_id` is the layer directory it
    /// is unpacked in, when known (not for records imported with `--cache-from`).
    pub fn put(
        &self,
        key: &str,
        layer: &CachedLayer,
        chain_id: Option<&str>,
    ) -> Result<(), CacheError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.conn.execute(
            "INSERT OR REPLACE INTO build_cache
                (cache_key, diff_id, digest, size, media_type, content_size, created_unix, chain_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                key,
                layer.diff_id,
                layer.digest,
                layer.size as i64,
                layer.media_type,
                layer.content_size as i64,
                now,
                chain_id
            ],
        )?;
        Ok(())
    }

    /// Every record, for a partial prune.
    pub fn records(&self) -> Result<Vec<RecordInfo>, CacheError> {
        let mut st = self.conn.prepare(
            "SELECT cache_key, created_unix, content_size, digest, diff_id, chain_id FROM build_cache",
        )?;
        let rows = st.query_map([], |r| {
            Ok(RecordInfo {
                key: r.get(0)?,
                created_unix: r.get(1)?,
                content_size: r.get::<_, i64>(2)?.max(0) as u64,
                digest: r.get(3)?,
                diff_id: r.get(4)?,
                chain_id: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Forgets these records, and the copy-layer notes that name any of `chains`.
    pub fn remove(&self, keys: &[String], chains: &[String]) -> Result<(), CacheError> {
        self.conn.execute_batch("BEGIN")?;
        for k in keys {
            self.conn
                .execute("DELETE FROM build_cache WHERE cache_key = ?1", [k])?;
        }
        for c in chains {
            self.conn
                .execute("DELETE FROM build_copy_layers WHERE chain_id = ?1", [c])?;
        }
        Ok(self.conn.execute_batch("COMMIT")?)
    }

    /// The layer a COPY of this `shape` (see the executor) made last time, and its files'
    /// digests ([`crate::relink::encode`]).
    pub fn copy_layer(&self, shape: &str) -> Result<Option<(String, Vec<u8>)>, CacheError> {
        Ok(self
            .conn
            .query_row(
                "SELECT chain_id, files FROM build_copy_layers WHERE shape = ?1",
                [shape],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// Records the layer a COPY of this `shape` made.
    pub fn put_copy_layer(
        &self,
        shape: &str,
        chain_id: &str,
        files: &[u8],
    ) -> Result<(), CacheError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO build_copy_layers (shape, chain_id, files) VALUES (?1, ?2, ?3)",
            params![shape, chain_id, files],
        )?;
        Ok(())
    }

    /// How many step records the cache holds.
    pub fn count(&self) -> Result<usize, CacheError> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM build_cache", [], |r| r.get(0))?;
        Ok(n as usize)
    }

    /// Forgets every record (`builder prune`); returns how many there were.
    pub fn clear(&self) -> Result<usize, CacheError> {
        self.conn.execute("DELETE FROM build_file_digests", [])?;
        self.conn.execute("DELETE FROM build_copy_layers", [])?;
        Ok(self.conn.execute("DELETE FROM build_cache", [])?)
    }
}

/// How recent a change must be for a file's digest not to be remembered
/// (well above the kernel's timestamp granularity).
const RACY_NS: i64 = 1_000_000_000;

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// What identifies one version of a file without reading it.
struct FileStat {
    dev: i64,
    ino: i64,
    size: i64,
    mtime_ns: i64,
    ctime_ns: i64,
}

impl FileStat {
    fn of(md: &std::fs::Metadata) -> FileStat {
        use std::os::unix::fs::MetadataExt;
        FileStat {
            dev: md.dev() as i64,
            ino: md.ino() as i64,
            size: md.len() as i64,
            mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
            ctime_ns: md.ctime() * 1_000_000_000 + md.ctime_nsec(),
        }
    }
}

/// Builds a cache key: the parent key and the parts that decide what a step
/// produces, each length-prefixed so that no two part lists hash alike.
#[derive(Clone)]
pub struct KeyHasher(Sha256);

impl KeyHasher {
    /// Starts a key under `parent` (the previous step's key).
    pub fn new(parent: &str) -> KeyHasher {
        let mut h = KeyHasher(Sha256::new());
        // Bump when the meaning of keys changes, so old records stop matching.
        h.part(b"berth-build-cache-v1");
        h.part(parent.as_bytes());
        h
    }

    /// Adds one part.
    pub fn part(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    /// Adds a string part.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.part(s.as_bytes())
    }

    /// The key, `sha256:<hex>`.
    pub fn finish(self) -> String {
        format!("sha256:{}", hex::encode(self.0.finalize()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_keys_separate_parts() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::open(&d.path().join("berth.db")).unwrap();
        let layer = CachedLayer {
            diff_id: "sha256:aa".into(),
            digest: "sha256:bb".into(),
            size: 3,
            media_type: "m".into(),
            content_size: 9,
        };
        cache.put("k", &layer, None).unwrap();
        assert_eq!(cache.get("k").unwrap(), Some(layer));
        assert_eq!(cache.get("other").unwrap(), None);
        let mut a = KeyHasher::new("p");
        a.str("ab").str("c");
        let mut b = KeyHasher::new("p");
        b.str("a").str("bc");
        assert_ne!(a.finish(), b.finish());
        assert_eq!(cache.clear().unwrap(), 1);
    }

    fn sha(data: &[u8]) -> [u8; 32] {
        Sha256::digest(data).into()
    }

    /// One file's digest through [`Cache::file_digests_at`].
    fn digest_at(cache: &Cache, f: &Path, md: &std::fs::Metadata, now: i64) -> [u8; 32] {
        cache
            .file_digests_at(&[(f.to_path_buf(), md.clone())], now)
            .unwrap()[0]
    }

    fn set_mtime(path: &Path, md: &std::fs::Metadata) {
        use nix::sys::stat::{utimensat, UtimensatFlags};
        use nix::sys::time::TimeSpec;
        use std::os::unix::fs::MetadataExt;
        let t = TimeSpec::new(md.mtime(), md.mtime_nsec());
        utimensat(None, path, &t, &t, UtimensatFlags::NoFollowSymlink).unwrap();
    }

    #[test]
    fn many_files_are_hashed_at_once_and_only_old_ones_remembered() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::open(&d.path().join("berth.db")).unwrap();
        let mut files = Vec::new();
        for i in 0..20 {
            let f = d.path().join(format!("f{i}"));
            std::fs::write(&f, format!("content {i}")).unwrap();
            files.push(f);
        }
        // f0 was hashed and remembered before; the other 19 are new.
        let old = std::fs::symlink_metadata(&files[0]).unwrap();
        digest_at(
            &cache,
            &files[0],
            &old,
            FileStat::of(&old).ctime_ns + 10 * RACY_NS,
        );
        let with_md = |fs: &[PathBuf]| -> Vec<(PathBuf, std::fs::Metadata)> {
            fs.iter()
                .map(|f| (f.clone(), std::fs::symlink_metadata(f).unwrap()))
                .collect()
        };
        let got = cache.file_digests(&with_md(&files)).unwrap();
        let want: Vec<[u8; 32]> = (0..20)
            .map(|i| sha(format!("content {i}").as_bytes()))
            .collect();
        assert_eq!(got, want);
        // Files changed within the last second are not remembered (see file_digests_at).
        let md1 = std::fs::symlink_metadata(&files[1]).unwrap();
        assert_eq!(cache.known_digest(&files[1], &FileStat::of(&md1)), None);
        // A file that cannot be read fails the whole lookup, naming it.
        let missing = vec![(d.path().join("gone"), md1)];
        let Err(err) = cache.file_digests(&missing) else {
            panic!("an unreadable file was hashed");
        };
        assert!(err.to_string().contains("gone"), "{err}");
    }

    #[test]
    fn an_edit_with_the_same_size_and_mtime_is_read_again() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::open(&d.path().join("berth.db")).unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, "aaaa").unwrap();
        let old = std::fs::symlink_metadata(&f).unwrap();
        // Long after the change: the digest is remembered.
        let later = FileStat::of(&old).ctime_ns + 10 * RACY_NS;
        assert_eq!(digest_at(&cache, &f, &old, later), sha(b"aaaa"));
        assert_eq!(
            cache.known_digest(&f, &FileStat::of(&old)),
            Some(sha(b"aaaa"))
        );
        // Past the kernel's timestamp tick, edit in place (same inode, same
        // size) and put the mtime back: the ctime still tells.
        std::thread::sleep(std::time::Duration::from_millis(30));
        std::fs::write(&f, "bbbb").unwrap();
        set_mtime(&f, &old);
        let edited = std::fs::symlink_metadata(&f).unwrap();
        assert_eq!(
            (edited.len(), edited.modified().unwrap()),
            (old.len(), old.modified().unwrap())
        );
        assert_eq!(cache.known_digest(&f, &FileStat::of(&edited)), None);
        let later = FileStat::of(&edited).ctime_ns + 10 * RACY_NS;
        assert_eq!(digest_at(&cache, &f, &edited, later), sha(b"bbbb"));
        // Replaced by another file (a new inode) with the same size and mtime.
        std::thread::sleep(std::time::Duration::from_millis(30));
        let tmp = d.path().join("tmp");
        std::fs::write(&tmp, "cccc").unwrap();
        set_mtime(&tmp, &old);
        std::fs::rename(&tmp, &f).unwrap();
        let replaced = std::fs::symlink_metadata(&f).unwrap();
        assert_eq!(digest_at(&cache, &f, &replaced, later), sha(b"cccc"));
    }

    #[test]
    fn a_file_changed_just_now_is_not_remembered() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::open(&d.path().join("berth.db")).unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, "aaaa").unwrap();
        let md = std::fs::symlink_metadata(&f).unwrap();
        assert_eq!(digest_at(&cache, &f, &md, now_ns()), sha(b"aaaa"));
        // A second edit within the same clock tick could keep every time
        // stamp: nothing may have been recorded for it to match.
        assert_eq!(cache.known_digest(&f, &FileStat::of(&md)), None);
        std::fs::write(&f, "bbbb").unwrap();
        let md = std::fs::symlink_metadata(&f).unwrap();
        assert_eq!(digest_at(&cache, &f, &md, now_ns()), sha(b"bbbb"));
    }
}

//! Content store: immutable blobs addressed by digest, written via ingests.
//!
//! A blob is written through a [`Writer`] obtained for a caller-chosen ingest
//! reference (for a pull, typically the descriptor digest). Data goes to
//! `ingest/<id>/data`; the digest is computed while writing. `commit` checks
//! size and digest, fsyncs the file, makes it read-only, renames it into
//! `blobs/<alg>/<hex>` and fsyncs that directory, so a blob path either does
//! not exist or holds exactly the verified content. An ingest that was
//! interrupted (process killed, writer dropped) stays under `ingest/` and can
//! be resumed: opening a writer for the same reference re-reads the partial
//! data to rebuild the hash state and reports the offset to continue from.
//!
//! A *deferred* blob is an uncompressed layer that a build made from a directory now in
//! the layer store: its tar is that directory, written out again, so storing it as well
//! would only copy (and sync) every byte of the layer a second time. The store keeps
//! `deferred/<alg>/<hex>` naming the directory and the size instead; the blob counts as
//! present, and the first reader makes it a real blob through an ingest, checked
//! against its digest like any other.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::digest::{Algorithm, Digest, Hasher};

/// Content store failures.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// A filesystem operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// Another writer holds this ingest.
    #[error("ingest {0:?} is locked by another writer")]
    Locked(String),
    /// The committed size differs from the expected size.
    #[error("size mismatch: expected {expected} bytes, wrote {actual}")]
    SizeMismatch {
        /// Size the caller expected.
        expected: u64,
        /// Bytes actually written.
        actual: u64,
    },
    /// The content does not hash to the expected digest.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// Digest the caller expected.
        expected: Digest,
        /// Digest of what was written.
        actual: Digest,
    },
    /// No such blob.
    #[error("blob {0} not found")]
    NotFound(Digest),
}

type Result<T> = std::result::Result<T, ContentError>;

fn io_ctx(context: impl Into<String>) -> impl FnOnce(io::Error) -> ContentError {
    let context = context.into();
    move |source| ContentError::Io { context, source }
}

/// An ingest left behind by an interrupted writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestStatus {
    /// The reference the writer was opened with.
    pub reference: String,
    /// Bytes written so far.
    pub offset: u64,
}

/// A content store rooted at a directory (`blobs/` and `ingest/` below it).
#[derive(Debug, Clone)]
pub struct ContentStore {
    root: PathBuf,
}

impl ContentStore {
    /// Opens (creating if needed) the store under `root`.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        for dir in ["blobs/sha256", "ingest", "deferred/sha256"] {
            let p = root.join(dir);
            fs::create_dir_all(&p).map_err(io_ctx(format!("create {}", p.display())))?;
        }
        Ok(ContentStore { root })
    }

    /// Where the blob with digest `d` lives (whether or not it exists).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(d.algorithm().as_str())
            .join(d.hex())
    }

    /// Size of a committed blob, or `None` if absent.
    pub fn info(&self, d: &Digest) -> Result<Option<u64>> {
        match fs::metadata(self.blob_path(d)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(self.deferred(d).map(|x| x.0)),
            Err(e) => Err(io_ctx(format!("stat blob {d}"))(e)),
        }
    }

    /// Whether a blob is committed (or deferred, with its layer still there).
    pub fn contains(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file() || self.deferred(d).is_some()
    }

    /// Opens a committed blob for reading (writing a deferred one out first).
    pub fn open_blob(&self, d: &Digest) -> Result<File> {
        self.materialize(d)?;
        File::open(self.blob_path(d)).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ContentError::NotFound(d.clone()),
            _ => io_ctx(format!("open blob {d}"))(e),
        })
    }

    /// Reads a whole committed blob (for manifests and configs).
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.open_blob(d)?
            .read_to_end(&mut buf)
            .map_err(io_ctx(format!("read blob {d}")))?;
        Ok(buf)
    }

    /// Re-hashes a committed blob and checks it against its name.
    pub fn verify(&self, d: &Digest) -> Result<()> {
        let actual = hash_file(&mut self.open_blob(d)?, d.algorithm())
            .map_err(io_ctx(format!("read blob {d}")))?;
        if &actual != d {
            return Err(ContentError::DigestMismatch {
                expected: d.clone(),
                actual,
            });
        }
        Ok(())
    }

    /// Deletes a committed or deferred blob; returns whether it existed.
    pub fn delete(&self, d: &Digest) -> Result<bool> {
        let mut existed = false;
        for path in [self.blob_path(d), self.deferred_path(d)] {
            match fs::remove_file(&path) {
                Ok(()) => existed = true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_ctx(format!("delete blob {d}"))(e)),
            }
        }
        Ok(existed)
    }

    /// All committed and deferred blobs.
    pub fn list(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for top in ["blobs", "deferred"] {
            let dir = self.root.join(top);
            for alg in read_dir_names(&dir)? {
                for hex in read_dir_names(&dir.join(&alg))? {
                    if let Ok(d) = format!("{alg}:{hex}").parse() {
                        out.push(d);
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Records `d` (`size` bytes) as the uncompressed tar of `layer_dir`, a directory
    /// under this store's root that is never written again (see the module comment).
    /// The caller has checked the digest and synced the directory.
    pub fn defer(&self, d: &Digest, size: u64, layer_dir: &Path) -> Result<()> {
        let rel = layer_dir.strip_prefix(&self.root).map_err(|_| {
            io_ctx(format!("defer blob {d}"))(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is outside the store", layer_dir.display()),
            ))
        })?;
        static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let path = self.deferred_path(d);
        // Two builds (or two stages of one) may defer the same blob at once.
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp-{}-{seq}", std::process::id()));
        fs::write(&tmp, format!("{size}\n{}\n", rel.display()))
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(io_ctx(format!("defer blob {d}")))?;
        if let Some(dir) = path.parent() {
            fsync_dir(dir).map_err(io_ctx(format!("defer blob {d}")))?;
        }
        Ok(())
    }

    fn deferred_path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("deferred")
            .join(d.algorithm().as_str())
            .join(d.hex())
    }

    /// A deferred blob's size and directory, if it has one that still exists.
    fn deferred(&self, d: &Digest) -> Option<(u64, PathBuf)> {
        let text = fs::read_to_string(self.deferred_path(d)).ok()?;
        let (size, rel) = text.trim_end().split_once('\n')?;
        let dir = self.root.join(rel);
        dir.is_dir().then_some((size.parse().ok()?, dir))
    }

    /// Writes out each of `blobs` that is deferred to `dir`: called before `dir` leaves
    /// the layer store while those blobs are still in use.
    pub fn materialize_from<'d>(
        &self,
        blobs: impl IntoIterator<Item = &'d Digest>,
        dir: &Path,
    ) -> Result<()> {
        for d in blobs {
            if self.deferred(d).is_some_and(|(_, at)| at == dir) {
                self.materialize(d)?;
            }
        }
        Ok(())
    }

    /// Writes a deferred blob out as a committed one (nothing to do for others).
    pub fn materialize(&self, d: &Digest) -> Result<()> {
        loop {
            if self.blob_path(d).is_file() {
                return Ok(());
            }
            let Some((size, dir)) = self.deferred(d) else {
                return Ok(());
            };
            let mut w = match self.writer(&format!("deferred-{d}")) {
                Ok(w) => w,
                // Another reader is writing it: wait for that one.
                Err(ContentError::Locked(_)) => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    continue;
                }
                Err(e) => return Err(e),
            };
            w.truncate()?;
            let mut out = io::BufWriter::with_capacity(1 << 20, &mut w);
            crate::layer::write_layer(&dir, &mut out, crate::Compression::None).map_err(|e| {
                io_ctx(format!("write out blob {d} from {}", dir.display()))(io::Error::other(
                    e.to_string(),
                ))
            })?;
            out.flush().map_err(io_ctx(format!("write out blob {d}")))?;
            drop(out);
            w.commit(size, d)?;
            let _ = fs::remove_file(self.deferred_path(d));
            return Ok(());
        }
    }

    /// Opens a writer for `reference`, resuming an interrupted ingest of the
    /// same reference if one exists ([`Writer::offset`] tells where).
    pub fn writer(&self, reference: &str) -> Result<Writer> {
        Writer::open(self, reference)
    }

    /// Interrupted ingests that could be resumed.
    pub fn ingests(&self) -> Result<Vec<IngestStatus>> {
        let mut out = Vec::new();
        for id in read_dir_names(&self.root.join("ingest"))? {
            let dir = self.root.join("ingest").join(&id);
            let Ok(reference) = fs::read_to_string(dir.join("ref")) else {
                continue;
            };
            let offset = fs::metadata(dir.join("data")).map(|m| m.len()).unwrap_or(0);
            out.push(IngestStatus { reference, offset });
        }
        out.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(out)
    }

    /// Discards an ingest.
    pub fn abort(&self, reference: &str) -> Result<()> {
        remove_dir_if_exists(&self.ingest_dir(reference))
    }

    /// Writes a whole blob from `reader` and commits it.
    pub fn put(&self, reader: &mut dyn Read, size: u64, expected: &Digest) -> Result<()> {
        let mut w = loop {
            match self.claim(&format!("put-{expected}"), expected)? {
                Claim::Stored => return Ok(()),
                Claim::Writer(w) => break *w,
                // Another process is storing the same blob: wait for it to finish
                // (commit or give up) rather than fail a pull that merely overlaps.
                Claim::Busy => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        };
        w.truncate()?;
        io::copy(reader, &mut w).map_err(io_ctx(format!("write blob {expected}")))?;
        w.commit(size, expected).map(|_| ())
    }

    /// Takes the ingest `reference` for the blob `expected`, unless the blob is stored
    /// already — also when a writer that held the ingest committed it just before we
    /// took it over. Never waits: a caller retries on [`Claim::Busy`] in its own way
    /// (a thread sleeps, an async pull yields).
    pub fn claim(&self, reference: &str, expected: &Digest) -> Result<Claim> {
        if self.contains(expected) {
            return Ok(Claim::Stored);
        }
        match self.writer(reference) {
            Ok(w) if self.contains(expected) => {
                w.discard();
                Ok(Claim::Stored)
            }
            Ok(w) => Ok(Claim::Writer(Box::new(w))),
            Err(ContentError::Locked(_)) => Ok(Claim::Busy),
            Err(e) => Err(e),
        }
    }

    /// Ingest references can be any text (a digest, a URL), so the directory
    /// is named by their hash.
    fn ingest_dir(&self, reference: &str) -> PathBuf {
        self.root
            .join("ingest")
            .join(Digest::sha256_of(reference.as_bytes()).hex())
    }
}

/// What [`ContentStore::claim`] found.
pub enum Claim {
    /// The blob is in the store: nothing to write.
    Stored,
    /// Another writer holds the ingest.
    Busy,
    /// The ingest is ours (possibly resumed: see [`Writer::offset`]).
    Writer(Box<Writer>),
}

/// One in-progress blob. Dropping it without [`Writer::commit`] leaves the
/// partial data in `ingest/` (resumable, never visible as a blob).
pub struct Writer {
    reference: String,
    dir: PathBuf,
    blobs: PathBuf,
    file: File,
    hasher: Hasher,
    offset: u64,
    writeback: crate::sys::Writeback,
}

impl Writer {
    fn open(store: &ContentStore, reference: &str) -> Result<Self> {
        let dir = store.ingest_dir(reference);
        let mut tries = 0;
        let mut file = loop {
            let file = match open_ingest_data(&dir, reference) {
                Ok(file) => file,
                // A writer that just committed or gave up removed the directory
                // between our create and our open: start over on a fresh one. The
                // same removal between create_dir_all's mkdir (EEXIST) and its own
                // check that the directory is there reads as AlreadyExists.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::AlreadyExists
                    ) && tries < 100 =>
                {
                    tries += 1;
                    continue;
                }
                Err(e) => return Err(io_ctx("open ingest data")(e)),
            };
            lock_exclusive(&file, reference)?;
            // The writer that held the lock before us may have committed (renamed
            // `data` into blobs/) or discarded the ingest between our open and our
            // lock: then this descriptor is a committed blob or an orphan, and writing
            // to it would corrupt the one or lose data. Only keep it if the path still
            // names it.
            let ours = file.metadata().map_err(io_ctx("stat ingest data"))?;
            match fs::metadata(dir.join("data")) {
                Ok(m) if m.ino() == ours.ino() && m.dev() == ours.dev() => break file,
                _ if tries < 100 => tries += 1,
                _ => return Err(ContentError::Locked(reference.to_string())),
            }
        };
        // The hash state cannot be saved portably, so resuming re-reads what
        // is already on disk; it also makes the offset the true file length.
        file.seek(SeekFrom::Start(0))
            .map_err(io_ctx("seek ingest"))?;
        let mut hasher = Algorithm::Sha256.hasher();
        let offset = feed(&mut file, &mut hasher).map_err(io_ctx("re-read ingest"))?;
        Ok(Writer {
            reference: reference.to_string(),
            dir,
            blobs: store.root.join("blobs"),
            file,
            hasher,
            offset,
            writeback: Default::default(),
        })
    }

    /// The ingest reference.
    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// Bytes already written: where a resumed download should continue.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The sha256 of what was written so far: the name a blob whose digest is not
    /// known in advance (one compressed here) commits under.
    pub fn digest(&self) -> Digest {
        self.hasher.clone().finish()
    }

    /// Drops any partial data and starts the ingest from zero.
    pub fn truncate(&mut self) -> Result<()> {
        self.file.set_len(0).map_err(io_ctx("truncate ingest"))?;
        self.file
            .seek(SeekFrom::Start(0))
            .map_err(io_ctx("seek ingest"))?;
        self.hasher = Algorithm::Sha256.hasher();
        self.offset = 0;
        Ok(())
    }

    /// Verifies size and digest and makes the blob visible. On a mismatch the
    /// ingest is discarded and nothing appears under `blobs/`.
    pub fn commit(mut self, expected_size: u64, expected: &Digest) -> Result<Digest> {
        if let Err(e) = self.verify(expected_size, expected) {
            self.discard();
            return Err(e);
        }
        let target_dir = self.blobs.join(expected.algorithm().as_str());
        let target = target_dir.join(expected.hex());
        if target.exists() {
            self.discard();
            return Ok(expected.clone());
        }
        self.file.sync_all().map_err(io_ctx("fsync ingest"))?;
        self.file
            .set_permissions(fs::Permissions::from_mode(0o444))
            .map_err(io_ctx("make blob read-only"))?;
        fs::create_dir_all(&target_dir).map_err(io_ctx("create blob dir"))?;
        if let Err(e) = fs::rename(self.dir.join("data"), &target) {
            // A writer of the same blob that committed first removes the ingest
            // directory, ours included; its blob is the one we were writing.
            if e.kind() == io::ErrorKind::NotFound && target.exists() {
                return Ok(expected.clone());
            }
            return Err(io_ctx("rename blob")(e));
        }
        fsync_dir(&target_dir).map_err(io_ctx("fsync blob dir"))?;
        self.discard();
        Ok(expected.clone())
    }

    fn verify(&mut self, expected_size: u64, expected: &Digest) -> Result<()> {
        if self.offset != expected_size {
            return Err(ContentError::SizeMismatch {
                expected: expected_size,
                actual: self.offset,
            });
        }
        let actual = if expected.algorithm() == Algorithm::Sha256 {
            self.hasher.clone().finish()
        } else {
            // Other algorithms are rare; hash the file once more for them.
            self.file.flush().map_err(io_ctx("flush ingest"))?;
            hash_file(&mut self.file, expected.algorithm()).map_err(io_ctx("re-read ingest"))?
        };
        if &actual != expected {
            return Err(ContentError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        Ok(())
    }

    /// Best effort: a leftover ingest directory is harmless (never a blob).
    fn discard(&self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.offset += n as u64;
        self.writeback
            .advance(std::os::fd::AsFd::as_fd(&self.file), self.offset);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Two writers on one ingest would interleave data; flock makes the second
/// fail fast, and the kernel drops the lock when a killed process exits.
fn lock_exclusive(file: &File, reference: &str) -> Result<()> {
    // SAFETY: flock on a valid open descriptor has no memory effects.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Err(ContentError::Locked(reference.to_string()));
    }
    Err(io_ctx("lock ingest")(err))
}

fn open_ingest_data(dir: &Path, reference: &str) -> io::Result<File> {
    fs::create_dir_all(dir)?;
    fs::write(dir.join("ref"), reference)?;
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join("data"))
}

fn feed(r: &mut impl Read, hasher: &mut Hasher) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
}

fn hash_file(file: &mut File, alg: Algorithm) -> io::Result<Digest> {
    let pos = file.stream_position()?;
    file.seek(SeekFrom::Start(0))?;
    let mut h = alg.hasher();
    feed(file, &mut h)?;
    file.seek(SeekFrom::Start(pos))?;
    Ok(h.finish())
}

/// A rename is durable only once the directory holding the new name is.
pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn read_dir_names(dir: &Path) -> Result<Vec<String>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_ctx(format!("list {}", dir.display()))(e)),
    };
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.map_err(io_ctx(format!("list {}", dir.display())))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

fn remove_dir_if_exists(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(io_ctx(format!("remove {}", dir.display()))(e))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, ContentStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = ContentStore::open(dir.path()).unwrap();
        (dir, s)
    }

    #[test]
    fn a_deferred_blob_is_written_out_when_first_read_and_checked() {
        let (d, s) = store();
        let layer = d.path().join("layers/abc");
        fs::create_dir_all(layer.join("sub")).unwrap();
        // The tar records mtimes: every write below puts the same one back, or a
        // rewrite in the next second would change the digest as much as the content.
        let write = |content: &[u8]| {
            let f = layer.join("sub/f");
            fs::write(&f, content).unwrap();
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
            fs::File::options()
                .write(true)
                .open(&f)
                .unwrap()
                .set_modified(t)
                .unwrap();
        };
        write(b"layer content");
        let mut tar = Vec::new();
        let out = crate::layer::write_layer(&layer, &mut tar, crate::Compression::None).unwrap();
        let digest = out.digest.clone();
        assert!(!s.contains(&digest));
        s.defer(&digest, out.size, &layer).unwrap();
        assert!(s.contains(&digest));
        assert_eq!(s.info(&digest).unwrap(), Some(tar.len() as u64));
        assert!(!s.blob_path(&digest).exists(), "nothing written yet");
        assert_eq!(s.list().unwrap(), vec![digest.clone()]);
        assert_eq!(s.read_blob(&digest).unwrap(), tar);
        assert!(s.blob_path(&digest).is_file());
        s.verify(&digest).unwrap();
        assert!(s.delete(&digest).unwrap());
        assert!(!s.contains(&digest));

        // Outside the store: refused. A directory that no longer matches: the read
        // fails and no blob appears.
        assert!(s.defer(&digest, out.size, Path::new("/tmp")).is_err());
        s.defer(&digest, out.size, &layer).unwrap();
        write(b"layer CONTENT");
        assert!(s.open_blob(&digest).is_err());
        assert!(!s.blob_path(&digest).exists());

        // A layer about to be removed first writes out the blobs deferred to it.
        write(b"layer content");
        s.materialize_from([&digest], &d.path().join("layers/other"))
            .unwrap();
        assert!(!s.blob_path(&digest).exists());
        s.materialize_from([&digest], &layer).unwrap();
        assert!(s.blob_path(&digest).is_file());
        fs::remove_dir_all(&layer).unwrap();
        assert_eq!(s.read_blob(&digest).unwrap(), tar);

        // A deferred blob whose directory is gone is absent.
        let (d2, s2) = store();
        let gone = d2.path().join("layers/gone");
        fs::create_dir_all(&gone).unwrap();
        s2.defer(&digest, out.size, &gone).unwrap();
        fs::remove_dir_all(&gone).unwrap();
        assert!(!s2.contains(&digest));
        assert!(matches!(
            s2.open_blob(&digest),
            Err(ContentError::NotFound(_))
        ));
    }

    #[test]
    fn write_commit_read() {
        let (_d, s) = store();
        let data = b"hello blob".repeat(1000);
        let dg = Digest::sha256_of(&data);
        let mut w = s.writer("r1").unwrap();
        assert_eq!(w.offset(), 0);
        w.write_all(&data).unwrap();
        assert_eq!(w.commit(data.len() as u64, &dg).unwrap(), dg);
        assert_eq!(s.read_blob(&dg).unwrap(), data);
        assert_eq!(s.info(&dg).unwrap(), Some(data.len() as u64));
        s.verify(&dg).unwrap();
        assert_eq!(s.list().unwrap(), vec![dg.clone()]);
        assert!(s.ingests().unwrap().is_empty());
        let mode = fs::metadata(s.blob_path(&dg)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o444, "committed blobs are read-only");
        // Committing identical content again is a no-op.
        s.put(&mut &data[..], data.len() as u64, &dg).unwrap();
    }

    #[test]
    fn wrong_digest_or_size_leaves_nothing() {
        let (_d, s) = store();
        let data = b"some content";
        let good = Digest::sha256_of(data);
        let bad = Digest::sha256_of(b"other");
        let mut w = s.writer("r").unwrap();
        w.write_all(data).unwrap();
        let e = w.commit(data.len() as u64, &bad).unwrap_err();
        assert!(matches!(e, ContentError::DigestMismatch { .. }), "{e}");
        let mut w = s.writer("r").unwrap();
        assert_eq!(w.offset(), 0, "a failed commit discards the ingest");
        w.write_all(data).unwrap();
        let e = w.commit(data.len() as u64 + 1, &good).unwrap_err();
        assert!(matches!(e, ContentError::SizeMismatch { .. }), "{e}");
        assert!(s.list().unwrap().is_empty());
        assert!(!s.contains(&good) && !s.contains(&bad));
        assert!(s.ingests().unwrap().is_empty());
    }

    #[test]
    fn dropped_writer_is_invisible_and_resumable() {
        let (_d, s) = store();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let dg = Digest::sha256_of(&data);
        {
            let mut w = s.writer("layer").unwrap();
            w.write_all(&data[..70_000]).unwrap();
            // Dropped here: the "process" stops mid-write.
        }
        assert!(!s.contains(&dg));
        assert!(s.list().unwrap().is_empty());
        let st = s.ingests().unwrap();
        assert_eq!(
            st,
            vec![IngestStatus {
                reference: "layer".into(),
                offset: 70_000
            }]
        );
        let mut w = s.writer("layer").unwrap();
        assert_eq!(w.offset(), 70_000);
        w.write_all(&data[70_000..]).unwrap();
        w.commit(data.len() as u64, &dg).unwrap();
        assert_eq!(s.read_blob(&dg).unwrap(), data);
    }

    /// Writers of one blob racing each other: one commits and removes the ingest
    /// directory while the others create, open or lock theirs. Every put must
    /// succeed and leave exactly the blob.
    #[test]
    fn racing_puts_of_one_blob_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let blobs: Vec<Vec<u8>> = (0..300u32)
            .map(|i| i.to_le_bytes().repeat(64 + i as usize))
            .collect();
        std::thread::scope(|scope| {
            for _ in 0..6 {
                let (root, blobs) = (dir.path(), &blobs);
                scope.spawn(move || {
                    let s = ContentStore::open(root).unwrap();
                    for data in blobs {
                        let dg = Digest::sha256_of(data);
                        s.put(&mut &data[..], data.len() as u64, &dg)
                            .unwrap_or_else(|e| panic!("put {dg}: {e}"));
                    }
                });
            }
        });
        let s = ContentStore::open(dir.path()).unwrap();
        assert_eq!(s.list().unwrap().len(), blobs.len());
        for data in &blobs {
            assert_eq!(s.read_blob(&Digest::sha256_of(data)).unwrap(), *data);
        }
        assert!(s.ingests().unwrap().is_empty());
    }

    #[test]
    fn second_writer_is_locked_out() {
        let (_d, s) = store();
        let _w = s.writer("x").unwrap();
        assert!(matches!(s.writer("x"), Err(ContentError::Locked(_))));
        drop(_w);
        s.abort("x").unwrap();
        assert!(s.ingests().unwrap().is_empty());
    }

    #[test]
    fn sha512_commit() {
        let (_d, s) = store();
        let data = b"sha512 data";
        let mut h = Algorithm::Sha512.hasher();
        h.update(data);
        let dg = h.finish();
        let mut w = s.writer("s").unwrap();
        w.write_all(data).unwrap();
        w.commit(data.len() as u64, &dg).unwrap();
        assert!(s.blob_path(&dg).to_str().unwrap().contains("blobs/sha512/"));
        s.verify(&dg).unwrap();
    }

    /// Helper run in a child process by `killed_writer_leaves_nothing`.
    #[test]
    fn child_writer_process() {
        let Ok(root) = std::env::var("BERTH_TEST_CHILD_WRITER") else {
            return;
        };
        let s = ContentStore::open(&root).unwrap();
        let mut w = s.writer("killed").unwrap();
        w.write_all(&[7u8; 4096]).unwrap();
        w.flush().unwrap();
        fs::write(Path::new(&root).join("ready"), b"").unwrap();
        std::thread::sleep(std::time::Duration::from_secs(60));
    }

    #[test]
    fn killed_writer_leaves_nothing() {
        let (d, s) = store();
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "content::tests::child_writer_process",
                "--nocapture",
            ])
            .env("BERTH_TEST_CHILD_WRITER", d.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let ready = d.path().join("ready");
        for _ in 0..600 {
            if ready.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(ready.exists(), "child never wrote");
        child.kill().unwrap(); // SIGKILL mid-ingest
        child.wait().unwrap();
        assert!(s.list().unwrap().is_empty(), "no blob may be visible");
        let mut w = s.writer("killed").unwrap(); // the lock died with the child
        assert_eq!(w.offset(), 4096);
        w.write_all(&[7u8; 4096]).unwrap();
        let all = [7u8; 8192];
        w.commit(8192, &Digest::sha256_of(&all)).unwrap();
    }
}

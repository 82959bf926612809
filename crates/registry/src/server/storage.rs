//! The registry's files. Synchronous: handlers call it on tokio's blocking pool.
//!
//! Layout under the storage directory:
//! ```text
//! blobs/<alg>/<hex>                              content, shared by all repositories
//! repositories/<name>/_layers/<alg>/<hex>        empty: the repository may read this blob
//! repositories/<name>/_manifests/revisions/<alg>/<hex>   media type of a manifest
//! repositories/<name>/_manifests/tags/<tag>      digest the tag points at
//! uploads/<id>/data, uploads/<id>/repo           upload sessions (never visible as blobs)
//! tmp/                                           files being written before a rename
//! ```
//! Every visible file appears by rename after its content is fsynced, and a blob is
//! renamed into place before any link to it, so a crash at any instant exposes nothing
//! partial. Repository name components never start with `_`, so `_layers` and `_manifests`
//! cannot clash with a nested repository.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use berth_image::digest::{Algorithm, Digest};

/// Storage failures that the API reports with their own codes.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("upload content has digest {actual}, not {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("upload unknown to this repository")]
    UploadUnknown,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The filesystem store behind one registry.
#[derive(Debug, Clone)]
pub struct Storage {
    root: PathBuf,
    /// Manifest bytes by digest. Content-addressed, so an entry never goes stale; what
    /// may change (tags, a repository's revision links) is always read from disk.
    manifests: std::sync::Arc<std::sync::Mutex<ManifestCache>>,
}

/// A bounded map of manifest bytes; emptied when it would pass its budget (manifests are
/// small and hot ones come straight back).
#[derive(Debug, Default)]
struct ManifestCache {
    bytes: usize,
    map: std::collections::HashMap<Digest, std::sync::Arc<Vec<u8>>>,
}

/// What the manifest cache may hold.
const MANIFEST_CACHE_BYTES: usize = 16 << 20;

impl ManifestCache {
    fn get(&self, d: &Digest) -> Option<std::sync::Arc<Vec<u8>>> {
        self.map.get(d).cloned()
    }

    fn put(&mut self, d: &Digest, content: &[u8]) {
        if content.len() > MANIFEST_CACHE_BYTES / 16 {
            return;
        }
        if self.bytes + content.len() > MANIFEST_CACHE_BYTES {
            self.map.clear();
            self.bytes = 0;
        }
        self.bytes += content.len();
        self.map
            .insert(d.clone(), std::sync::Arc::new(content.to_vec()));
    }
}

/// A manifest as stored: its digest, media type and bytes.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    pub content: Vec<u8>,
}

fn not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

/// 16 random bytes as hex: upload ids and temporary file names.
pub fn random_id() -> io::Result<String> {
    let mut b = [0u8; 16];
    File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn digest_path(base: &Path, d: &Digest) -> PathBuf {
    base.join(d.algorithm().as_str()).join(d.hex())
}

/// Hashes a file with `alg`.
pub fn hash_file(path: &Path, alg: Algorithm) -> io::Result<Digest> {
    let mut f = File::open(path)?;
    let mut h = alg.hasher();
    // 256 KiB: as fast as larger reads, and cheap when many uploads commit at once.
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finish());
        }
        h.update(&buf[..n]);
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Storage {
    /// Opens (creating) a store rooted at `root`.
    pub fn open(root: &Path) -> io::Result<Self> {
        for d in ["blobs", "repositories", "uploads", "tmp"] {
            fs::create_dir_all(root.join(d))?;
        }
        Ok(Storage {
            root: root.to_path_buf(),
            manifests: Default::default(),
        })
    }

    /// The storage directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a blob's content lives.
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        digest_path(&self.root.join("blobs"), d)
    }

    fn repo_dir(&self, name: &str) -> PathBuf {
        self.root.join("repositories").join(name)
    }

    fn layer_link(&self, name: &str, d: &Digest) -> PathBuf {
        digest_path(&self.repo_dir(name).join("_layers"), d)
    }

    fn revision_link(&self, name: &str, d: &Digest) -> PathBuf {
        digest_path(&self.repo_dir(name).join("_manifests/revisions"), d)
    }

    fn tags_dir(&self, name: &str) -> PathBuf {
        self.repo_dir(name).join("_manifests/tags")
    }

    /// Writes `data` to `target` atomically: aside in tmp/, fsync, rename, fsync the
    /// directory.
    fn write_atomic(&self, target: &Path, data: &[u8]) -> io::Result<()> {
        let tmp = self.root.join("tmp").join(random_id()?);
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        self.install(&tmp, target)
    }

    /// Renames a finished file into place, creating parents, and makes the rename durable.
    fn install(&self, tmp: &Path, target: &Path) -> io::Result<()> {
        let parent = target.parent().unwrap_or(&self.root);
        fs::create_dir_all(parent)?;
        if let Err(e) = fs::rename(tmp, target) {
            let _ = fs::remove_file(tmp);
            return Err(e);
        }
        sync_dir(parent)
    }

    /// Whether the store holds a blob, and its size.
    pub fn blob_size(&self, d: &Digest) -> io::Result<Option<u64>> {
        match fs::metadata(self.blob_path(d)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The blob's size when `name` may read it.
    pub fn repo_blob_size(&self, name: &str, d: &Digest) -> io::Result<Option<u64>> {
        if !self.layer_link(name, d).exists() {
            return Ok(None);
        }
        self.blob_size(d)
    }

    /// Marks a blob as just used, so a concurrent garbage collection keeps it.
    pub fn touch_blob(&self, d: &Digest) -> io::Result<()> {
        File::options()
            .append(true)
            .open(self.blob_path(d))?
            .set_modified(std::time::SystemTime::now())
    }

    /// Gives `name` access to a blob already in the store (uploads and mounts).
    pub fn link_blob(&self, name: &str, d: &Digest) -> io::Result<()> {
        let link = self.layer_link(name, d);
        if link.exists() {
            return Ok(());
        }
        self.write_atomic(&link, b"")
    }

    /// Removes `name`'s access to a blob; false when it had none. The content stays until
    /// garbage collection, since other repositories may share it.
    pub fn unlink_blob(&self, name: &str, d: &Digest) -> io::Result<bool> {
        match fs::remove_file(self.layer_link(name, d)) {
            Ok(()) => Ok(true),
            Err(e) if not_found(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Starts an upload session for `name`.
    pub fn new_upload(&self, name: &str) -> io::Result<String> {
        let id = random_id()?;
        let dir = self.root.join("uploads").join(&id);
        fs::create_dir(&dir)?;
        File::create(dir.join("data"))?;
        fs::write(dir.join("repo"), name)?;
        Ok(id)
    }

    /// The data file of an upload that belongs to `name`.
    pub fn upload_data(&self, name: &str, id: &str) -> Result<PathBuf, StorageError> {
        // Ids are our own hex; anything else could walk out of uploads/.
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StorageError::UploadUnknown);
        }
        let dir = self.root.join("uploads").join(id);
        match fs::read_to_string(dir.join("repo")) {
            Ok(repo) if repo == name => Ok(dir.join("data")),
            Ok(_) => Err(StorageError::UploadUnknown),
            Err(e) if not_found(&e) => Err(StorageError::UploadUnknown),
            Err(e) => Err(e.into()),
        }
    }

    /// Bytes received so far by an upload.
    pub fn upload_size(&self, name: &str, id: &str) -> Result<u64, StorageError> {
        Ok(fs::metadata(self.upload_data(name, id)?)?.len())
    }

    /// Drops an upload session and its data.
    pub fn cancel_upload(&self, name: &str, id: &str) -> Result<(), StorageError> {
        let data = self.upload_data(name, id)?;
        let dir = data.parent().unwrap_or(&self.root);
        fs::remove_dir_all(dir)?;
        Ok(())
    }

    /// Finishes an upload: verifies the content against `expected`, makes it durable,
    /// moves it into the blob store and links it into `name`. On a mismatch the session
    /// is dropped and nothing becomes visible. Returns the blob's size.
    pub fn commit_upload(
        &self,
        name: &str,
        id: &str,
        expected: &Digest,
    ) -> Result<u64, StorageError> {
        let data = self.upload_data(name, id)?;
        let actual = hash_file(&data, expected.algorithm())?;
        if &actual != expected {
            let _ = self.cancel_upload(name, id);
            return Err(StorageError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        let target = self.blob_path(expected);
        if target.exists() {
            // Identical content is already stored; refresh its time so a concurrent
            // garbage collection treats it as new.
            self.touch_blob(expected)?;
        } else {
            File::open(&data)?.sync_all()?;
            self.install(&data, &target)?;
        }
        let size = fs::metadata(&target)?.len();
        self.link_blob(name, expected)?;
        let _ = self.cancel_upload(name, id);
        Ok(size)
    }

    /// Stores a manifest under its digest and, when given, points `tag` at it.
    pub fn put_manifest(
        &self,
        name: &str,
        m: &StoredManifest,
        tag: Option<&str>,
    ) -> io::Result<()> {
        let blob = self.blob_path(&m.digest);
        if !blob.exists() {
            self.write_atomic(&blob, &m.content)?;
        }
        self.write_atomic(
            &self.revision_link(name, &m.digest),
            m.media_type.as_bytes(),
        )?;
        if let Some(tag) = tag {
            self.write_atomic(
                &self.tags_dir(name).join(tag),
                m.digest.to_string().as_bytes(),
            )?;
        }
        Ok(())
    }

    /// The digest a tag points at.
    pub fn resolve_tag(&self, name: &str, tag: &str) -> io::Result<Option<Digest>> {
        match fs::read_to_string(self.tags_dir(name).join(tag)) {
            Ok(s) => Ok(s.trim().parse().ok()),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A manifest of `name` by digest.
    pub fn get_manifest(&self, name: &str, d: &Digest) -> io::Result<Option<StoredManifest>> {
        let media_type = match fs::read_to_string(self.revision_link(name, d)) {
            Ok(s) => s,
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let cached = self.manifests.lock().ok().and_then(|c| c.get(d));
        let content = match cached {
            Some(c) => c.as_ref().clone(),
            None => match fs::read(self.blob_path(d)) {
                Ok(c) => {
                    if let Ok(mut cache) = self.manifests.lock() {
                        cache.put(d, &c);
                    }
                    c
                }
                Err(e) if not_found(&e) => return Ok(None),
                Err(e) => return Err(e),
            },
        };
        Ok(Some(StoredManifest {
            digest: d.clone(),
            media_type,
            content,
        }))
    }

    /// Whether `name` holds a manifest revision.
    pub fn has_manifest(&self, name: &str, d: &Digest) -> bool {
        self.revision_link(name, d).exists()
    }

    /// Deletes a manifest revision and every tag pointing at it; false if unknown.
    pub fn delete_manifest(&self, name: &str, d: &Digest) -> io::Result<bool> {
        match fs::remove_file(self.revision_link(name, d)) {
            Ok(()) => {}
            Err(e) if not_found(&e) => return Ok(false),
            Err(e) => return Err(e),
        }
        for tag in self.tags(name)?.unwrap_or_default() {
            if self.resolve_tag(name, &tag)?.as_ref() == Some(d) {
                self.delete_tag(name, &tag)?;
            }
        }
        Ok(true)
    }

    /// Deletes a tag (the manifest stays); false if unknown.
    pub fn delete_tag(&self, name: &str, tag: &str) -> io::Result<bool> {
        match fs::remove_file(self.tags_dir(name).join(tag)) {
            Ok(()) => Ok(true),
            Err(e) if not_found(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether the repository exists at all.
    pub fn repo_exists(&self, name: &str) -> bool {
        let dir = self.repo_dir(name);
        dir.join("_manifests").is_dir() || dir.join("_layers").is_dir()
    }

    /// The repository's tags, sorted; `None` when the repository does not exist.
    pub fn tags(&self, name: &str) -> io::Result<Option<Vec<String>>> {
        if !self.repo_exists(name) {
            return Ok(None);
        }
        let mut tags = list_dir(&self.tags_dir(name))?;
        tags.sort();
        Ok(Some(tags))
    }

    /// Every manifest revision of a repository.
    pub fn revisions(&self, name: &str) -> io::Result<Vec<Digest>> {
        digests_under(&self.repo_dir(name).join("_manifests/revisions"))
    }

    /// Every blob a repository links, manifests included.
    pub fn linked_blobs(&self, name: &str) -> io::Result<Vec<Digest>> {
        digests_under(&self.repo_dir(name).join("_layers"))
    }

    /// All repository names, sorted.
    pub fn catalog(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        self.walk_repos(&self.root.join("repositories"), "", &mut out)?;
        out.sort();
        Ok(out)
    }

    fn walk_repos(&self, dir: &Path, prefix: &str, out: &mut Vec<String>) -> io::Result<()> {
        for entry in list_dir(dir)? {
            if entry.starts_with('_') {
                continue;
            }
            let name = if prefix.is_empty() {
                entry.clone()
            } else {
                format!("{prefix}/{entry}")
            };
            let path = dir.join(&entry);
            if self.repo_exists(&name) {
                out.push(name.clone());
            }
            if path.is_dir() {
                self.walk_repos(&path, &name, out)?;
            }
        }
        Ok(())
    }

    /// Every blob in the store.
    pub fn all_blobs(&self) -> io::Result<Vec<Digest>> {
        let base = self.root.join("blobs");
        let mut out = Vec::new();
        for alg in list_dir(&base)? {
            let Ok(alg) = alg.parse::<Algorithm>() else {
                continue;
            };
            for hex in list_dir(&base.join(alg.as_str()))? {
                if let Ok(d) = Digest::new(alg, &hex) {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }

    /// Opens an upload's data file for appending.
    pub fn open_upload_append(&self, name: &str, id: &str) -> Result<File, StorageError> {
        Ok(OpenOptions::new()
            .append(true)
            .open(self.upload_data(name, id)?)?)
    }
}

/// Names in a directory; empty when it does not exist.
fn list_dir(dir: &Path) -> io::Result<Vec<String>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if not_found(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for e in rd {
        if let Some(n) = e?.file_name().to_str() {
            out.push(n.to_string());
        }
    }
    Ok(out)
}

/// The digests stored as `<base>/<algorithm>/<hex>` entries; other names are ignored.
fn digests_under(base: &Path) -> io::Result<Vec<Digest>> {
    let mut out = Vec::new();
    for alg in list_dir(base)? {
        let Ok(alg) = alg.parse::<Algorithm>() else {
            continue;
        };
        for hex in list_dir(&base.join(alg.as_str()))? {
            if let Ok(d) = Digest::new(alg, &hex) {
                out.push(d);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_cache_stays_within_its_budget() {
        let mut c = ManifestCache::default();
        let small = vec![7u8; 1000];
        let d = Digest::sha256_of(&small);
        c.put(&d, &small);
        assert_eq!(c.get(&d).as_deref(), Some(&small));
        // Too big for the cache: not kept.
        let big = vec![1u8; MANIFEST_CACHE_BYTES / 8];
        let bd = Digest::sha256_of(&big);
        c.put(&bd, &big);
        assert!(c.get(&bd).is_none());
        // Filling past the budget starts over rather than growing.
        let chunk = vec![2u8; MANIFEST_CACHE_BYTES / 16];
        for i in 0..20u8 {
            let mut v = chunk.clone();
            v[0] = i;
            c.put(&Digest::sha256_of(&v), &v);
            assert!(c.bytes <= MANIFEST_CACHE_BYTES);
        }
        assert!(c.get(&d).is_none(), "the first entry went with the reset");
    }

    #[test]
    fn a_served_manifest_comes_from_the_cache_only_while_its_revision_exists() {
        let dir = tempfile::tempdir().unwrap();
        let st = Storage::open(dir.path()).unwrap();
        let body = br#"{"schemaVersion":2}"#.to_vec();
        let d = Digest::sha256_of(&body);
        let m = StoredManifest {
            digest: d.clone(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            content: body.clone(),
        };
        st.put_manifest("a/b", &m, Some("t")).unwrap();
        assert_eq!(st.get_manifest("a/b", &d).unwrap().unwrap().content, body);
        assert!(st.manifests.lock().unwrap().get(&d).is_some());
        st.delete_manifest("a/b", &d).unwrap();
        assert!(st.get_manifest("a/b", &d).unwrap().is_none());
        assert!(st.get_manifest("other/repo", &d).unwrap().is_none());
    }
}

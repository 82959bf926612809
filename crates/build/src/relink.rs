//! Taking unchanged files of a COPY from the layer the same COPY made last time.
//!
//! A large context where one file changed misses the cache, and copying every file again
//! costs a new inode and a full data copy per file (on a journal-less ext4 an inode
//! allocation alone can take half a millisecond). Layers are never written once stored, so
//! two layers may share an inode: a file whose content digest, size, mode, owner and
//! timestamp match the earlier layer's is hard-linked from it instead. Links into a mounted
//! overlay are refused (EXDEV), so the copy only plans them; [`Relink::finish`] makes them
//! in the upper directory once the overlay is unmounted. The resulting layer is the same,
//! byte for byte, as a full copy would have made.
//!
//! The other files are written into the upper directory the same way, after the unmount:
//! creating a file through overlayfs costs several times what it costs on the filesystem
//! below (`cp -a` of a 10,000-file context: 3.3 s into an overlay, 0.9 s beside it, here).
//! This holds for any file whose path is free in the merged view and whose parent
//! directory is already in the upper directory — the copy makes new directories through
//! the overlay, which keeps the overlay's rules for them (an opaque directory where a
//! lower one was deleted). A whiteout in the upper directory at such a path (a lower file
//! deleted by an earlier layer) is replaced, as overlayfs itself would do.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::copy::{CopyError, Reuse};
use crate::fsutil::Ids;

/// Content digests of a layer's regular files, by path relative to the layer's root.
pub type FileDigests = HashMap<String, [u8; 32]>;

/// The earlier layer: its directory and what its files hold.
pub struct Earlier {
    pub dir: PathBuf,
    pub files: FileDigests,
}

/// Plans links for one COPY (see the module comment).
pub struct Relink<'a> {
    rootfs: &'a Path,
    upper: &'a Path,
    earlier: Option<Earlier>,
    /// This build's digests of the context files, by host path.
    digests: &'a HashMap<PathBuf, [u8; 32]>,
    epoch: i64,
    /// Links to make, by path relative to the root; a later source for the same path
    /// replaces an earlier one, as the copy would.
    planned: HashMap<String, Planned>,
    /// What the new layer holds, for the next build.
    files: FileDigests,
}

struct Planned {
    /// The earlier layer's file to link, if it matches; else `src` is copied.
    from: Option<PathBuf>,
    src: PathBuf,
    mode: u32,
    ids: Ids,
}

impl<'a> Relink<'a> {
    /// `rootfs`: the mounted view the copy writes through; `upper`: its upper directory.
    pub fn new(
        rootfs: &'a Path,
        upper: &'a Path,
        earlier: Option<Earlier>,
        digests: &'a HashMap<PathBuf, [u8; 32]>,
        epoch: i64,
    ) -> Relink<'a> {
        Relink {
            rootfs,
            upper,
            earlier,
            digests,
            epoch,
            planned: HashMap::new(),
            files: HashMap::new(),
        }
    }

    /// The earlier file at `rel` when it is exactly what copying `src` would make.
    fn earlier_file(
        &self,
        rel: &str,
        digest: &[u8; 32],
        md: &fs::Metadata,
        mode: u32,
        ids: Ids,
    ) -> Option<PathBuf> {
        let e = self.earlier.as_ref()?;
        if e.files.get(rel) != Some(digest) {
            return None;
        }
        let from = e.dir.join(rel);
        let old = fs::symlink_metadata(&from).ok()?;
        let same = old.is_file()
            && old.len() == md.len()
            && old.mode() & 0o7777 == mode
            && (old.uid(), old.gid()) == (ids.uid, ids.gid)
            && (old.mtime(), old.mtime_nsec()) == (self.epoch, 0);
        same.then_some(from)
    }

    /// Whether the parent of `rel` is a directory in the upper directory: a file written
    /// there, not through the overlay, must not hide a lower directory's metadata.
    fn parent_in_upper(&self, rel: &str) -> bool {
        Path::new(rel)
            .parent()
            .is_some_and(|p| fs::symlink_metadata(self.upper.join(p)).is_ok_and(|m| m.is_dir()))
    }

    /// Makes the planned links and copies in the upper directory (the overlay must be
    /// unmounted by now); a link the kernel refuses becomes a copy. Returns the new
    /// layer's file digests.
    pub fn finish(mut self) -> Result<FileDigests, CopyError> {
        let planned: Vec<(String, Planned)> = self.planned.drain().collect();
        // Like the copy itself, mostly the kernel creating inodes: on a few threads.
        let placed = crate::par::map(&planned, |(rel, p)| place(self.upper, rel, p))?;
        for ((rel, _), placed) in planned.iter().zip(placed) {
            if !placed {
                self.files.remove(rel);
            }
        }
        Ok(self.files)
    }

    /// How many files will be written after the unmount, and how many of them linked.
    pub fn planned(&self) -> (usize, usize) {
        let links = self.planned.values().filter(|p| p.from.is_some()).count();
        (self.planned.len(), links)
    }
}

/// Links or copies one planned file into `upper`; false when a later source already put
/// something else (a directory, a link) at its path.
fn place(upper: &Path, rel: &str, p: &Planned) -> Result<bool, CopyError> {
    let to = upper.join(rel);
    match fs::symlink_metadata(&to) {
        Err(_) => {}
        Ok(m) if is_whiteout(&m) => fs::remove_file(&to).map_err(|e| CopyError::Io {
            context: format!("replace the whiteout {rel}"),
            source: e,
        })?,
        Ok(_) => return Ok(false),
    }
    let linked = p
        .from
        .as_ref()
        .is_some_and(|f| fs::hard_link(f, &to).is_ok());
    if !linked {
        crate::copy::copy_file(&p.src, &to, p.mode, p.ids)?;
    }
    Ok(true)
}

/// overlayfs' mark of a deleted lower entry: a character device 0:0.
fn is_whiteout(m: &fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    m.file_type().is_char_device() && m.rdev() == 0
}

impl Reuse for Relink<'_> {
    fn take(&mut self, src: &Path, md: &fs::Metadata, target: &Path, mode: u32, ids: Ids) -> bool {
        let (Some(digest), Ok(rel)) = (self.digests.get(src), target.strip_prefix(self.rootfs))
        else {
            return false;
        };
        let Some(rel) = rel.to_str().map(str::to_string) else {
            return false;
        };
        self.files.insert(rel.clone(), *digest);
        self.planned.remove(&rel);
        if !self.parent_in_upper(&rel) {
            return false;
        }
        let from = self.earlier_file(&rel, digest, md, mode, ids);
        let src = src.to_path_buf();
        self.planned.insert(
            rel,
            Planned {
                from,
                src,
                mode,
                ids,
            },
        );
        true
    }

    fn replaced(&mut self, target: &Path) {
        if let Some(rel) = target.strip_prefix(self.rootfs).ok().and_then(Path::to_str) {
            self.files.remove(rel);
            self.planned.remove(rel);
        }
    }
}

/// Packs file digests for the cache: per file, the path's length (u32, little-endian),
/// the path, the digest.
pub fn encode(files: &FileDigests) -> Vec<u8> {
    let mut names: Vec<&String> = files.keys().collect();
    names.sort();
    let mut out = Vec::with_capacity(files.len() * 64);
    for n in names {
        out.extend_from_slice(&(n.len() as u32).to_le_bytes());
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(&files[n]);
    }
    out
}

/// Reads what [`encode`] wrote; `None` if it is damaged.
pub fn decode(mut b: &[u8]) -> Option<FileDigests> {
    let mut files = HashMap::new();
    while !b.is_empty() {
        let len = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
        let name = std::str::from_utf8(b.get(4..4 + len)?).ok()?;
        let digest: [u8; 32] = b.get(4 + len..36 + len)?.try_into().ok()?;
        files.insert(name.to_string(), digest);
        b = &b[36 + len..];
    }
    Some(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_survive_encoding_and_damage_is_refused() {
        let mut f = FileDigests::new();
        f.insert("ctx/a".into(), [1; 32]);
        f.insert("ctx/dir/ü b".into(), [2; 32]);
        let bytes = encode(&f);
        assert_eq!(decode(&bytes), Some(f));
        assert_eq!(decode(&bytes[..bytes.len() - 1]), None);
        assert_eq!(decode(&[]), Some(FileDigests::new()));
    }
}

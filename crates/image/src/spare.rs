//! Spare snapshot directories: the emptied directories of removed snapshots, kept for the
//! next `prepare` instead of being deleted and made again.
//!
//! Why: a container snapshot is three directories (the key dir, `upper`, `work`), made at
//! create and deleted at removal. On ext4 every directory holds a data block, and where
//! the filesystem runs without a journal and with `discard` (the project's machines)
//! freeing that block is a synchronous discard: an `rmdir` costs ~0.2 ms and a `mkdir`
//! ~0.1 ms there, about 1 ms of every `run --rm`. A rename of an emptied directory costs
//! neither.
//!
//! The files at the top of the key dir (the snapshot record, the owner's bundle, hosts
//! files and log) are kept too, emptied, under their names: the next owner writes them
//! again in place. Why: without a journal, ext4 will not reuse an inode deleted in the
//! last minutes (`recently_deleted`), and every new inode in a block group first steps
//! over each such one, so each file a `run --rm` creates and deletes makes every later
//! creation slower — at benchmark rates, milliseconds a run. An inode written again is
//! neither created nor deleted.
//!
//! A spare is taken with `renameat2(RENAME_NOREPLACE)`, so two takers never share one and
//! a key that exists is never replaced. Only directories that hold nothing but empty
//! subdirectories on the same filesystem and such emptied files, with the mode and owner a
//! fresh one would have and no extended attributes but overlay's uuid (an `opaque` mark on
//! a reused upper dir would hide the image), become spares; anything else is deleted as
//! before. A kept file must be what its owner made: a container may chmod, chown or
//! label a file bind-mounted into it (its /etc/hosts), and the next container must not
//! inherit that, so a file with another mode, owner, link count or any extended attribute
//! is deleted instead. The owner's mount point is removed (an rmdir also detaches the
//! copies of the mount other namespaces hold, which would keep the old overlay using the
//! upper dir).

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The spares of one snapshotter root.
#[derive(Debug, Clone)]
pub(crate) struct Spares {
    dir: PathBuf,
    cap: usize,
}

impl Spares {
    /// Spares kept in `dir`, at most `cap` of them.
    pub(crate) fn new(dir: PathBuf, cap: usize) -> Spares {
        Spares { dir, cap }
    }

    /// Moves a spare to `dest`; false when none could be had (the caller makes the
    /// directory itself).
    pub(crate) fn take(&self, dest: &Path) -> bool {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return false;
        };
        for e in entries.flatten() {
            match renameat2_noreplace(&e.path(), dest) {
                Ok(()) => return true,
                // Taken by another process meanwhile: try the next one.
                Err(err) if err.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(_) => return false,
            }
        }
        false
    }

    /// Keeps `dir` (its subdirectories already emptied) as a spare when it qualifies and
    /// there is room; false when the caller must delete it.
    pub(crate) fn put(&self, dir: &Path, upper_mode: u32) -> bool {
        if !reusable(dir, upper_mode).unwrap_or(false) {
            return false;
        }
        match fs::read_dir(&self.dir).map(Iterator::count) {
            Ok(n) if n >= self.cap => return false,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if fs::create_dir(&self.dir).is_err() && !self.dir.is_dir() {
                    return false;
                }
            }
            Err(_) => return false,
        }
        renameat2_noreplace(dir, &self.dir.join(unique_name())).is_ok()
    }
}

/// The mode a kept file must have: what the owner's `File::create` makes under the usual
/// umask.
const KEPT_FILE_MODE: u32 = 0o644;

/// Empties the file at `path` for the next owner, when it is one as its owner made it
/// (see the module's notes); false when it must be deleted instead.
pub(crate) fn keep_file(path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::OpenOptionsExt;
    // O_NONBLOCK: a FIFO without a reader fails here instead of blocking.
    let f = fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let m = f.metadata()?;
    if !owned_plain_file(&m) || crate::sys::has_xattrs(&f)? {
        return Ok(false);
    }
    f.set_len(0)?;
    Ok(true)
}

/// Writes `data` as the whole content of the file at `path`, creating it when missing,
/// the way a kept file must be written again: in place, never through `O_TRUNC`.
///
/// Why: ext4 (without `noauto_da_alloc`) treats a file truncated to nothing and written
/// again as a replacement that must survive a crash, and starts its writeback when it is
/// closed — a block allocation and a disk request on the writer's path, ~0.1 ms for each
/// of the half-dozen files a container start writes. A file that is only written over and
/// then cut to its new length (never to zero) is left to the usual background writeback.
/// A fresh file is not affected either way.
pub fn write_in_place(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    f.write_all(data)?;
    // Only a longer old content is cut; the file is never truncated before the write.
    let len = data.len() as u64;
    if f.metadata()?.len() != len {
        f.set_len(len)?;
    }
    Ok(())
}

/// A regular file of ours, of one link and the mode a fresh one has.
fn owned_plain_file(m: &fs::Metadata) -> bool {
    m.file_type().is_file()
        && m.nlink() == 1
        && m.mode() & 0o7777 == KEPT_FILE_MODE
        && m.uid() == nix::unistd::geteuid().as_raw()
        && m.gid() == nix::unistd::getegid().as_raw()
}

/// Whether `dir` holds only empty directories on its own filesystem and emptied files as
/// [`keep_file`] leaves them, `upper` among the directories with `upper_mode`, our owner
/// and no extended attributes.
fn reusable(dir: &Path, upper_mode: u32) -> io::Result<bool> {
    let dev = fs::symlink_metadata(dir)?.dev();
    let (uid, gid) = (nix::unistd::geteuid(), nix::unistd::getegid());
    for e in fs::read_dir(dir)? {
        let e = e?;
        let m = fs::symlink_metadata(e.path())?;
        if m.file_type().is_file() {
            if !owned_plain_file(&m) || m.len() != 0 {
                return Ok(false);
            }
            continue;
        }
        // A different device is a mount point still in place (a rootfs not unmounted).
        if !m.is_dir() || m.dev() != dev || fs::read_dir(e.path())?.next().is_some() {
            return Ok(false);
        }
        if e.file_name() == OsStr::new("upper")
            && (m.mode() & 0o7777 != upper_mode
                || m.uid() != uid.as_raw()
                || m.gid() != gid.as_raw()
                || !only_overlay_uuid(&crate::sys::llistxattr(&e.path())?))
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Overlay marks an upper dir's root with the mount's uuid (for file handles); it carries
/// no meaning for the tree. Any other mark (opaque, impure, origin, redirect) might.
fn only_overlay_uuid(names: &[std::ffi::OsString]) -> bool {
    names.iter().all(|n| {
        matches!(
            n.to_str(),
            Some("trusted.overlay.uuid" | "user.overlay.uuid")
        )
    })
}

fn renameat2_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE).map_err(io::Error::from)
}

/// A name no other spare has: a clash only fails the rename, and the dir is deleted.
pub(crate) fn unique_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{nanos}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_in_place_rewrites_the_same_inode_to_exactly_the_new_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        write_in_place(&path, b"a longer first content\n").unwrap();
        let ino = fs::metadata(&path).unwrap().ino();
        write_in_place(&path, b"short\n").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"short\n");
        write_in_place(&path, b"longer than short\n").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"longer than short\n");
        write_in_place(&path, b"").unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), 0);
        assert_eq!(fs::metadata(&path).unwrap().ino(), ino);
    }
}

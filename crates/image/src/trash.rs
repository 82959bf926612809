//! The trash of a snapshotter root: removed snapshots' directories, moved out of their
//! keys at once and deleted (or kept as spares) afterwards.
//!
//! Why: deleting a container's directory is most of the cost of removing it where freeing
//! a directory's block is a synchronous discard (ext4 mounted with `discard` and no
//! journal, the project's machines: ~0.2 ms an `rmdir`, and a container leaves four
//! directories overlay made). A rename costs a few µs, so removal renames the directory
//! here and the deletion can run later, in another process, while the caller goes on —
//! as containerd's snapshotters move a removed snapshot aside and delete it in their
//! cleanup pass.
//!
//! Whoever will still purge an entry holds an exclusive `flock` on it, taken before the
//! entry is moved here, so a sweep ([`unheld`]) never takes an entry from its purger. An
//! entry let go unpurged — handed to another process's sweep, or left by a purger that
//! was killed — is swept by the next one.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// A directory moved to the trash, locked until purged.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) path: PathBuf,
    /// Held while the entry is; closing it without purging leaves the entry to a later
    /// sweep.
    _lock: OwnedFd,
}

/// Locks `dir` and moves it into `trash` (made when missing) under a fresh name.
pub(crate) fn retire(dir: &Path, trash: &Path) -> io::Result<Entry> {
    let lock = lock_dir(dir, false)?;
    let path = trash.join(crate::spare::unique_name());
    match fs::rename(dir, &path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound && !trash.exists() => {
            if let Err(e) = fs::create_dir(trash) {
                if e.kind() != io::ErrorKind::AlreadyExists {
                    return Err(e);
                }
            }
            fs::rename(dir, &path)?;
        }
        r => r?,
    }
    Ok(Entry { path, _lock: lock })
}

/// The entries of `trash` no one holds, each locked for the caller to purge.
pub(crate) fn unheld(trash: &Path) -> Vec<Entry> {
    let Ok(entries) = fs::read_dir(trash) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let path = e.path();
            // Held (a purger is at it) or gone meanwhile: not ours.
            let lock = lock_dir(&path, true).ok()?;
            Some(Entry { path, _lock: lock })
        })
        .collect()
}

fn lock_dir(dir: &Path, nonblocking: bool) -> io::Result<OwnedFd> {
    use rustix::fs::FlockOperation::{LockExclusive, NonBlockingLockExclusive};
    let fd: OwnedFd = fs::File::open(dir)?.into();
    let op = if nonblocking {
        NonBlockingLockExclusive
    } else {
        LockExclusive
    };
    rustix::fs::flock(&fd, op)?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retired_dir_is_held_until_its_lock_is_closed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("key");
        fs::create_dir_all(dir.join("upper")).expect("mkdir");
        let trash = tmp.path().join(".trash");
        let entry = retire(&dir, &trash).expect("retire");
        assert!(!dir.exists());
        assert!(entry.path.join("upper").is_dir());
        assert!(unheld(&trash).is_empty(), "a held entry is not swept");
        drop(entry);
        let swept = unheld(&trash);
        assert_eq!(swept.len(), 1);
        assert!(unheld(&trash).is_empty(), "the sweeper holds it now");
    }
}

//! Deleting a removed container's directory in a process of its own.
//!
//! Why: a foreground `run --rm` is done for its user once the container's record is
//! gone, but deleting the directory it leaves (the overlay upper and work dirs, the mount
//! point, the bundle) costs about a millisecond where every freed directory block is a
//! synchronous discard (see berth-image's `trash.rs`). The directory is already out of
//! the way in the trash, so a purger deletes it while the command exits.
//!
//! The purger is forked ahead, while the container runs and this process only waits,
//! so its fork (a copy of this process's page tables, then copy-on-write faults) is not
//! paid between the container's exit and the command's. It waits on a pipe; when the
//! pipe closes — the container's directory retired and its lock let go, or this process
//! gone — it sweeps the trash (`Snapshotter::sweep_trash`: every entry no one holds) and
//! exits.

use std::os::fd::{AsRawFd, OwnedFd};

use berth_image::Snapshotter;
use nix::unistd::ForkResult;

/// A purger waiting for its signal: dropping this closes the pipe it waits on.
#[derive(Debug)]
pub(crate) struct Purger {
    _go: OwnedFd,
}

impl Purger {
    /// Forks the purger; `None` when it cannot. It stays this process's child, but no one
    /// waits for it: it cannot finish before the pipe closes, which this process does only
    /// as it is done, so it is soon an orphan that init reaps. Why not fork twice to
    /// orphan it at once: the middle child's fork and exit were the larger part of the
    /// cost, paid on this process's path while the container starts.
    pub(crate) fn spawn(snapshotter: &Snapshotter) -> Option<Purger> {
        let (wait_end, go) = nix::unistd::pipe().ok()?;
        // SAFETY: the child makes syscalls and allocates (glibc's fork leaves malloc
        // usable in the child) and ends with `_exit`, running no destructor of the
        // parent's state (its SQLite connection above all).
        match unsafe { nix::unistd::fork() } {
            Ok(ForkResult::Child) => {
                drop(go);
                let _ = nix::sys::prctl::set_name(c"berth-purge");
                detach(wait_end.as_raw_fd());
                wait_for_eof(&wait_end);
                snapshotter.sweep_trash();
                // SAFETY: as above.
                unsafe { libc::_exit(0) }
            }
            Ok(ForkResult::Parent { .. }) => {
                drop(wait_end);
                tracing::debug!("purger forked");
                Some(Purger { _go: go })
            }
            Err(_) => None,
        }
    }
}

fn wait_for_eof(fd: &OwnedFd) {
    let mut buf = [0u8; 64];
    loop {
        match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
            Ok(0) => return,
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// Leaves the caller's session and streams: a pipe reader waiting for the command's
/// output to end must not wait for the purger, nor a terminal's signals reach it, nor
/// the container's pipes stay open in it.
fn detach(keep: std::os::fd::RawFd) {
    let _ = nix::unistd::setsid();
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
        }
    }
    close_from(3, keep);
}

/// Closes every descriptor from `first` on but `keep`.
fn close_from(first: libc::c_uint, keep: std::os::fd::RawFd) {
    let close_range = |lo: libc::c_uint, hi: libc::c_uint| {
        if lo <= hi {
            // SAFETY: closes descriptors of this process only; nothing here uses them.
            unsafe { libc::syscall(libc::SYS_close_range, lo, hi, 0) };
        }
    };
    match libc::c_uint::try_from(keep) {
        Ok(k) if k >= first => {
            close_range(first, k.saturating_sub(1));
            close_range(k + 1, libc::c_uint::MAX);
        }
        _ => close_range(first, libc::c_uint::MAX),
    }
}

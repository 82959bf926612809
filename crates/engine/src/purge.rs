//! Deleting a removed container's directory in a process of its own.
//!
//! Why: a foreground `run --rm` is done for its user once the container's record is
//! gone, but deleting the directory it leaves (the overlay upper and work dirs, the mount
//! point, the bundle) costs about a millisecond where every freed directory block is a
//! synchronous discard (see berth-image's `trash.rs`). The directory is already out of
//! the way in the trash, so a detached purger deletes it while the command exits.

use berth_image::{Retired, Snapshotter};
use nix::unistd::{ForkResult, Pid};

/// Purges `retired` (then sweeps the trash) in a grandchild nobody waits for, and returns
/// the middle child, which exits at once: the caller reaps it when convenient (a process
/// about to exit need not — init does), so it waits for neither fork but its own. The
/// purger belongs to init and holds the entry's lock until done.
pub(crate) fn detached(retired: Retired, snapshotter: &Snapshotter) -> Option<Pid> {
    // SAFETY: the children make syscalls and allocate (glibc's fork leaves malloc usable
    // in the child) and end with `_exit`, running no destructor of the parent's state.
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Child) => {
            if let Ok(ForkResult::Parent { .. }) = unsafe { nix::unistd::fork() } {
                // SAFETY: ends the middle child without unwinding or flushing.
                unsafe { libc::_exit(0) }
            }
            // The grandchild, or the middle child when it could not fork: purge here,
            // under a name `ps` and `top` show for what it is.
            let _ = nix::sys::prctl::set_name(c"berth-purge");
            detach(retired.lock_fd());
            let _ = retired.purge();
            snapshotter.sweep_trash();
            // SAFETY: as above; the SQLite connection and the rest are the parent's.
            unsafe { libc::_exit(0) }
        }
        // Closing our copy of the lock (dropping `retired`) leaves it held by the purger.
        Ok(ForkResult::Parent { child }) => Some(child),
        Err(_) => {
            let _ = retired.purge();
            None
        }
    }
}

/// Reaps the middle children [`detached`] returned.
pub(crate) fn reap(children: &mut Vec<Pid>) {
    if children.is_empty() {
        return;
    }
    for pid in children.drain(..) {
        let _ = nix::sys::wait::waitpid(pid, None);
    }
    tracing::debug!("purgers reaped");
}

/// Leaves the caller's session and streams: a pipe reader waiting for the command's
/// output to end must not wait for the purger, nor a terminal's signals reach it.
fn detach(keep: std::os::fd::RawFd) {
    let _ = nix::unistd::setsid();
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        use std::os::fd::AsRawFd;
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

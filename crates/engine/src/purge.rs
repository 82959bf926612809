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
//! gone — it sweeps the trash (`Snapshotter::sweep_trash`: every entry no one holds),
//! removes the container's cgroup when it was handed one on the pipe, and exits.

use std::os::fd::{AsRawFd, OwnedFd};

use berth_image::Snapshotter;
use berth_runtime::cgroups::Cgroup;
use nix::unistd::ForkResult;

/// A purger waiting for its signal: dropping this closes the pipe it waits on.
#[derive(Debug)]
pub(crate) struct Purger {
    go: OwnedFd,
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
                let cgroup = read_to_eof(&wait_end);
                snapshotter.sweep_trash();
                if let Ok(cgroup) = serde_json::from_slice::<Cgroup>(&cgroup) {
                    if let Err(e) = cgroup.destroy() {
                        tracing::warn!("purger: {e}");
                    }
                }
                // SAFETY: as above.
                unsafe { libc::_exit(0) }
            }
            Ok(ForkResult::Parent { .. }) => {
                drop(wait_end);
                tracing::debug!("purger forked");
                Some(Purger { go })
            }
            Err(_) => None,
        }
    }

    /// Lets the purger go, with a container's cgroup to remove after its sweep (see
    /// `Runtime::delete_started_but_cgroup`). A cgroup's JSON is a few hundred bytes,
    /// far within what a pipe holds, so the write never waits for the purger.
    pub(crate) fn finish(self, cgroup: Option<&Cgroup>) {
        if let Some(json) = cgroup.and_then(|c| serde_json::to_vec(c).ok()) {
            let _ = nix::unistd::write(&self.go, &json);
        }
    }
}

/// Everything written to the pipe until its writer closes it.
fn read_to_eof(fd: &OwnedFd) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return out,
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

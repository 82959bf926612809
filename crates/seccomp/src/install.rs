//! Loading a program into the kernel with seccomp(2).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

use crate::{Error, Filter};

const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;
const SECCOMP_FILTER_FLAG_TSYNC: u32 = 1 << 0;
pub const SECCOMP_FILTER_FLAG_LOG: u32 = 1 << 1;
pub const SECCOMP_FILTER_FLAG_SPEC_ALLOW: u32 = 1 << 2;
pub const SECCOMP_FILTER_FLAG_NEW_LISTENER: u32 = 1 << 3;
const SECCOMP_FILTER_FLAG_TSYNC_ESRCH: u32 = 1 << 4;
pub const SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV: u32 = 1 << 5;
pub const TSYNC: u32 = SECCOMP_FILTER_FLAG_TSYNC;

/// The flags seccomp(2) gets for a filter with the spec's `flags`.
pub fn kernel_flags(spec_flags: u32, needs_listener: bool) -> u32 {
    let mut flags = spec_flags;
    if needs_listener {
        flags |= SECCOMP_FILTER_FLAG_NEW_LISTENER;
        // TSYNC returns a thread id on failure, which cannot be told apart
        // from the listener fd; the kernel refuses the pair unless failures
        // are reported as ESRCH instead (what libseccomp does too).
        if flags & SECCOMP_FILTER_FLAG_TSYNC != 0 {
            flags |= SECCOMP_FILTER_FLAG_TSYNC_ESRCH;
        }
    } else {
        // The kernel rejects WAIT_KILLABLE_RECV without a listener; with no
        // SCMP_ACT_NOTIFY rule there is nothing for it to change.
        flags &= !SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
    }
    flags
}

pub fn install(filter: &Filter) -> Result<Option<OwnedFd>, Error> {
    let prog = libc::sock_fprog {
        // Filters are checked against MAX_INSNS (4096) when built or read.
        len: filter.insns.len() as libc::c_ushort,
        filter: filter.insns.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at `filter.insns`, which outlives the call; the
    // kernel copies the program and does not keep the pointer.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            libc::c_ulong::from(filter.flags),
            &prog,
        )
    };
    let fail = |source| Error::Install {
        flags: filter.flags,
        source,
    };
    if rc < 0 {
        return Err(fail(io::Error::last_os_error()));
    }
    if filter.flags & SECCOMP_FILTER_FLAG_NEW_LISTENER != 0 {
        // SAFETY: with NEW_LISTENER, success returns a new fd we now own.
        return Ok(Some(unsafe { OwnedFd::from_raw_fd(rc as libc::c_int) }));
    }
    if rc > 0 {
        // TSYNC without a listener: the id of a thread that could not sync.
        return Err(fail(io::Error::other(format!(
            "thread {rc} could not be synchronised (TSYNC)"
        ))));
    }
    Ok(None)
}

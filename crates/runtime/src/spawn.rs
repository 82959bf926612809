//! clone3 without a new stack: a fork that also creates namespaces and, on cgroup v2,
//! starts the child directly inside its cgroup (CLONE_INTO_CGROUP), saving a
//! cgroup.procs write and the window in which the child runs unconfined.
//! nix has no clone3 wrapper, hence the raw syscall.

use std::os::fd::{AsRawFd, OwnedFd};

use crate::error::{Error, Result};

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x200000000;

pub enum Forked {
    Child,
    Parent(i32),
}

/// Must only be called while the process has a single thread.
pub fn clone3(ns_flags: u64, cgroup: Option<&OwnedFd>) -> Result<Forked> {
    let mut args = CloneArgs {
        flags: ns_flags,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    if let Some(fd) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd.as_raw_fd() as u64;
    }
    // SAFETY: clone3 with a zero stack behaves like fork; the struct outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match r {
        0 => Ok(Forked::Child),
        pid if pid > 0 => Ok(Forked::Parent(pid as i32)),
        _ => {
            let err = std::io::Error::last_os_error();
            Err(Error::Io {
                context: format!("clone3 (flags {:#x})", args.flags),
                err,
            })
        }
    }
}

//! The sync channel between the runtime and the container's init: a SOCK_SEQPACKET
//! socketpair, so every message arrives whole and a closed peer reads as EOF. Init's end
//! is close-on-exec: EOF after `Start` therefore means the user program was exec'd.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

use crate::error::{Context, Result};

/// Message tags. The payload follows the tag byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Tag {
    /// runtime → init: ids mapped and cgroup joined; payload = state JSON for hooks.
    Go = 1,
    /// init → runtime: mounts done, run createRuntime/prestart hooks now.
    RuntimeHooks = 2,
    /// runtime → init: hooks done, carry on.
    Continue = 3,
    /// init → runtime: everything is ready; waiting for start.
    Ready = 4,
    /// runtime → init: start the user program (used by `run`, which has no exec fifo).
    Start = 5,
    /// init → runtime: failed; payload = one-line message.
    Error = 6,
    /// init → runtime: the program cannot be found (127) or executed (126); payload = name.
    NotFound = 7,
    NoPermission = 8,
    /// runtime → init: the init is in its cgroups. Sent after `Go` so that the slow
    /// cgroup.procs writes (an RCU grace period on v1) overlap the init's mount work.
    Joined = 9,
}

pub struct Channel {
    pub fd: OwnedFd,
}

pub fn pair() -> Result<(Channel, Channel)> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .ctx(|| "socketpair".into())?;
    Ok((Channel { fd: a }, Channel { fd: b }))
}

impl Channel {
    pub fn send(&self, tag: Tag, payload: &[u8]) -> Result<()> {
        let mut buf = Vec::with_capacity(payload.len() + 1);
        buf.push(tag as u8);
        buf.extend_from_slice(payload);
        nix::unistd::write(&self.fd, &buf).ctx(|| "sync channel write".into())?;
        Ok(())
    }

    /// Next message, or None when the peer closed (or exec'd) its end.
    pub fn recv(&self) -> Result<Option<(Tag, Vec<u8>)>> {
        let mut buf = vec![0u8; 1 << 16];
        let n = loop {
            match nix::unistd::read(self.fd.as_raw_fd(), &mut buf) {
                Err(nix::errno::Errno::EINTR) => continue,
                r => break r.ctx(|| "sync channel read".into())?,
            }
        };
        if n == 0 {
            return Ok(None);
        }
        let tag = match buf[0] {
            1 => Tag::Go,
            2 => Tag::RuntimeHooks,
            3 => Tag::Continue,
            4 => Tag::Ready,
            5 => Tag::Start,
            6 => Tag::Error,
            7 => Tag::NotFound,
            8 => Tag::NoPermission,
            9 => Tag::Joined,
            other => {
                return Err(crate::Error::Init(format!(
                    "sync channel: unknown message {other}"
                )))
            }
        };
        buf.truncate(n);
        buf.remove(0);
        Ok(Some((tag, buf)))
    }
}

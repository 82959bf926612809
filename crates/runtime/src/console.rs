//! `process.terminal`: the init allocates a pty inside the container (from its own devpts)
//! and hands the master to whoever listens on `--console-socket`, with SCM_RIGHTS, as runc
//! does; containerd's shim and `berth run -t` read it from there.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use crate::error::{Context, Error, Result};

/// Allocates the pty, sends the master over `socket`, and makes the slave the calling
/// process's controlling terminal and stdio. With `bind_console` (a container's init in
/// its own mount namespace) the slave is also bound over `/dev/console`, as the runtime
/// spec asks for a process with a terminal; an exec joins a /dev that has it already.
pub fn setup(socket: BorrowedFd<'_>, size: Option<(u16, u16)>, bind_console: bool) -> Result<()> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .ctx(|| "open /dev/ptmx".into())?;
    grantpt(&master).ctx(|| "grantpt".into())?;
    unlockpt(&master).ctx(|| "unlockpt".into())?;
    let name = ptsname_r(&master).ctx(|| "ptsname".into())?;
    if let Some((rows, cols)) = size {
        set_window_size(master.as_raw_fd(), rows, cols);
    }
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY,
        nix::sys::stat::Mode::empty(),
    )
    .ctx(|| format!("open {name}"))?;
    if bind_console {
        bind_dev_console(&name)?;
    }
    send_fd(socket, master.as_raw_fd(), name.as_bytes())?;
    drop(master);
    nix::unistd::setsid().ctx(|| "setsid".into())?;
    // SAFETY: TIOCSCTTY takes an integer argument.
    if unsafe { libc::ioctl(slave, libc::TIOCSCTTY, 0) } != 0 {
        return Err(Error::Io {
            context: "TIOCSCTTY".into(),
            err: std::io::Error::last_os_error(),
        });
    }
    for target in 0..3 {
        nix::unistd::dup2(slave, target).ctx(|| "dup2 pty".into())?;
    }
    if slave > 2 {
        let _ = nix::unistd::close(slave);
    }
    Ok(())
}

/// Binds the pty slave `slave` (`/dev/pts/N` of the container's own devpts) over
/// `/dev/console`, made as an empty file first when missing.
fn bind_dev_console(slave: &str) -> Result<()> {
    let console = std::path::Path::new("/dev/console");
    if std::fs::symlink_metadata(console).is_err() {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(console)
            .ctx(|| "create /dev/console".into())?;
    }
    nix::mount::mount(
        Some(slave),
        console,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .ctx(|| format!("bind {slave} over /dev/console"))
}

pub fn send_fd(socket: BorrowedFd<'_>, fd: RawFd, name: &[u8]) -> Result<()> {
    let fds = [fd];
    let iov = [IoSlice::new(name)];
    sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .ctx(|| "send pty master over the console socket".into())?;
    Ok(())
}

/// The receiving side, for `run` in the foreground with a terminal and for tests.
pub fn recv_fd(socket: BorrowedFd<'_>) -> Result<OwnedFd> {
    let mut buf = [0u8; 4096];
    recv_with_fd(socket, &mut buf, false)?
        .1
        .ok_or_else(|| Error::Init("console socket: no file descriptor received".into()))
}

/// One message into `buf` (all of it with `whole`), with the descriptor sent along with
/// it, if any: how many bytes came, and the descriptor.
pub fn recv_with_fd(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    whole: bool,
) -> Result<(usize, Option<OwnedFd>)> {
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let flags = if whole {
        MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_WAITALL
    } else {
        MsgFlags::MSG_CMSG_CLOEXEC
    };
    let msg = recvmsg::<()>(socket.as_raw_fd(), &mut iov, Some(&mut cmsg), flags)
        .ctx(|| "receive a descriptor".into())?;
    let mut fd = None;
    for c in msg.cmsgs().ctx(|| "receive a descriptor".into())? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the kernel installed these descriptors for us; we own them now.
            fd = fds
                .first()
                .map(|&f| unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(f) });
        }
    }
    Ok((msg.bytes, fd))
}

/// Gives the pty master `to` the window size of the terminal on `from` (nothing when
/// `from` is no terminal). The kernel then signals SIGWINCH to the foreground process
/// group on the pty, as a resized terminal window would. Async-signal-safe (two ioctls),
/// so a SIGWINCH handler may call it.
pub fn copy_window_size(from: std::os::fd::RawFd, to: std::os::fd::RawFd) {
    if let Some(ws) = window_size(from) {
        // SAFETY: TIOCSWINSZ reads a winsize we own.
        unsafe { libc::ioctl(to, libc::TIOCSWINSZ, &ws) };
    }
}

/// Sets the window size of the pty master `fd`.
pub fn set_window_size(fd: RawFd, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize we own.
    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
}

/// The (rows, columns) of the terminal on `fd`, if it is one with a size.
pub fn terminal_size(fd: std::os::fd::RawFd) -> Option<(u16, u16)> {
    window_size(fd).map(|w| (w.ws_row, w.ws_col))
}

fn window_size(fd: std::os::fd::RawFd) -> Option<libc::winsize> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills the winsize we own.
    let ok = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_row > 0).then_some(ws)
}

//! A foreground `run`/`exec` with a terminal and no console socket: copy between our stdio
//! and the pty master. `run` uses threads ([`Proxy`]: every fork has already happened);
//! `exec` cannot ([`pump_until_exit`]).

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::thread::JoinHandle;

/// The pty master the SIGWINCH handler resizes (-1: none).
static MASTER: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_winch(_: libc::c_int) {
    let master = MASTER.load(Ordering::Relaxed);
    if master >= 0 {
        crate::console::copy_window_size(0, master);
    }
}

pub struct Proxy {
    output: Option<JoinHandle<()>>,
    /// Dropped after `output` is joined (fields drop after `Drop::drop`).
    _terminal: Terminal,
}

/// Our terminal in raw mode, following the pty's window size, for as long as it lives;
/// restored on drop. Also for `berth attach`, which gets the pty master from the monitor.
pub struct Terminal {
    saved: Option<nix::sys::termios::Termios>,
}

impl Terminal {
    pub fn take(master: &OwnedFd) -> Terminal {
        let saved = make_raw();
        follow_window_size(master);
        Terminal { saved }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        MASTER.store(-1, Ordering::Relaxed);
        if let Some(t) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
        }
    }
}

impl Proxy {
    pub fn start(master: OwnedFd) -> Proxy {
        let terminal = Terminal::take(&master);
        let mut reader = std::fs::File::from(master);
        let mut writer = match reader.try_clone() {
            Ok(w) => w,
            Err(_) => {
                return Proxy {
                    output: None,
                    _terminal: terminal,
                }
            }
        };
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin();
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 || writer.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
        let output = std::thread::spawn(move || {
            let mut stdout = std::io::stdout();
            let mut buf = [0u8; 4096];
            // EIO once every slave fd is closed: the container is gone.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || stdout.write_all(&buf[..n]).is_err() {
                    break;
                }
                let _ = stdout.flush();
            }
        });
        Proxy {
            output: Some(output),
            _terminal: terminal,
        }
    }
}

/// `exec -t` in the foreground: copies stdin to the pty master and the master to
/// stdout on this thread until `child` has exited and its output is drained, then
/// reaps it and returns its exit code. No threads: an exec has joined the container's
/// PID namespace for its children, after which the kernel refuses this process new
/// threads (clone with CLONE_THREAD fails with EINVAL), and threads started before the
/// fork could hold locks the child then waits on forever.
pub fn pump_until_exit(master: OwnedFd, child: i32) -> i32 {
    let terminal = Terminal::take(&master);
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, child, 0) } as i32;
    let mut stdin_open = true;
    let mut buf = [0u8; 4096];
    if raw >= 0 {
        // SAFETY: a descriptor just returned to us, owned from here on.
        let pidfd = unsafe { OwnedFd::from_raw_fd(raw) };
        let (mut exited, mut master_open) = (false, true);
        while !exited || master_open {
            let mut fds = Vec::with_capacity(3);
            let mut wanted = |fd: i32, on: bool| {
                if on {
                    fds.push(libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    });
                }
            };
            wanted(master.as_raw_fd(), master_open);
            wanted(pidfd.as_raw_fd(), !exited);
            wanted(0, stdin_open && !exited);
            // Once the child has exited, only what the master still holds is wanted.
            let timeout = if exited { 50 } else { -1 };
            // SAFETY: fds is a valid array of pollfd of the given length.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                break;
            }
            if n == 0 && exited {
                break;
            }
            for f in fds.iter().filter(|f| f.revents != 0) {
                if f.fd == master.as_raw_fd() {
                    match nix::unistd::read(master.as_raw_fd(), &mut buf) {
                        Ok(n) if n > 0 => write_all(1, &buf[..n]),
                        // EIO: every slave descriptor is closed.
                        _ => master_open = false,
                    }
                } else if f.fd == 0 {
                    match nix::unistd::read(0, &mut buf) {
                        Ok(n) if n > 0 => write_all(master.as_raw_fd(), &buf[..n]),
                        _ => stdin_open = false,
                    }
                } else {
                    exited = true;
                }
            }
        }
    }
    drop(terminal);
    crate::container::wait_exit(child)
}

fn write_all(fd: std::os::fd::RawFd, mut data: &[u8]) {
    while !data.is_empty() {
        // SAFETY: fd stays open for the duration of the call.
        let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        match nix::unistd::write(b, data) {
            Ok(n) => data = &data[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// The pty follows our terminal's size, now and on every SIGWINCH.
fn follow_window_size(master: &OwnedFd) {
    crate::console::copy_window_size(0, master.as_raw_fd());
    MASTER.store(master.as_raw_fd(), Ordering::Relaxed);
    // SAFETY: the handler only does two ioctls on descriptors it loads atomically.
    unsafe {
        libc::signal(
            libc::SIGWINCH,
            on_winch as extern "C" fn(libc::c_int) as libc::sighandler_t,
        )
    };
}

fn make_raw() -> Option<nix::sys::termios::Termios> {
    let stdin = std::io::stdin();
    let saved = nix::sys::termios::tcgetattr(&stdin).ok()?;
    let mut raw = saved.clone();
    nix::sys::termios::cfmakeraw(&mut raw);
    nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, &raw).ok()?;
    Some(saved)
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(h) = self.output.take() {
            let _ = h.join();
        }
    }
}

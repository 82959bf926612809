//! `berth attach`, and `berth run -it`, which is a detached start and an attach: the
//! container's monitor serves its output and takes its input on a unix socket
//! (`berth_engine::monitor`'s frames), so the detach keys can leave the container
//! running with nothing of the CLI's behind.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use berth_engine::monitor::{self, FRAME_EXIT, FRAME_HELLO, FRAME_STDERR};
use berth_engine::record::Container;
use berth_engine::Engine;

use crate::containers::{fail, print_entries};

/// `--detach-keys` in Docker's form (`ctrl-p,ctrl-q`, `a`, `ctrl-@`, `ctrl-[` …) as
/// the bytes a terminal sends for them.
pub fn parse_detach_keys(s: &str) -> Result<Vec<u8>, String> {
    let bad = || format!("Invalid detach keys ({s}) provided");
    s.split(',')
        .map(|k| match k.strip_prefix("ctrl-") {
            Some(c) if c.len() == 1 => match c.as_bytes()[0] {
                b @ b'a'..=b'z' => Ok(b - b'a' + 1),
                b'@' => Ok(0),
                b @ b'['..=b'_' => Ok(b - b'@'),
                _ => Err(bad()),
            },
            None if k.len() == 1 => Ok(k.as_bytes()[0]),
            _ => Err(bad()),
        })
        .collect()
}

/// `berth attach NAME`.
pub fn attach(root: &Path, name: &str, with_stdin: bool, detach_keys: &[u8]) -> i32 {
    let mut engine = match Engine::open(root) {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    let c = match engine.find(name) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if !c.state.status.is_active() {
        eprintln!("You cannot attach to a stopped container, start it first");
        return 1;
    }
    let sock = monitor::attach_socket(&engine, &c.id);
    if let Ok(stream) = UnixStream::connect(&sock) {
        let with_stdin = with_stdin && c.config.interactive;
        return attach_stream(&mut engine, &c, stream, with_stdin, detach_keys);
    }
    follow_log(&mut engine, &c)
}

/// `run -it` and `start -ai` of a tty container: the container starts under its own
/// monitor, which waits for us before it reads the output; then we attach (a running
/// one is only attached to).
pub fn start_attached(engine: &mut Engine, c: &Container, detach_keys: &[u8]) -> i32 {
    if !c.state.status.is_active() {
        let exe = match std::env::current_exe() {
            Ok(e) => e,
            Err(e) => return fail(e),
        };
        let size = berth_runtime::console::terminal_size(0).unwrap_or((0, 0));
        if let Err(e) = monitor::spawn_detached(&exe, &engine.root, &c.id, Some(size)) {
            eprintln!("berth: Error response from daemon: {e}");
            return berth_engine::exit_code_for(&e);
        }
    }
    let sock = monitor::attach_socket(engine, &c.id);
    match UnixStream::connect(&sock) {
        Ok(stream) => attach_stream(engine, c, stream, true, detach_keys),
        // Already gone (a container that exits at once and whose monitor did not wait):
        // what it printed is in the log.
        Err(_) => follow_log(engine, c),
    }
}

/// Without the monitor's socket (a container run in the foreground elsewhere): follow
/// the log from its end until the container stops.
fn follow_log(engine: &mut Engine, c: &Container) -> i32 {
    let path = engine.log_path(&c.id);
    let mut offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    loop {
        let (entries, next) = berth_engine::logs::read_from(&path, offset).unwrap_or_default();
        offset = next;
        print_entries(&entries, false);
        match engine.find(&c.id) {
            Ok(now) if now.state.status.is_active() => {}
            Ok(now) => {
                let (rest, _) = berth_engine::logs::read_from(&path, offset).unwrap_or_default();
                print_entries(&rest, false);
                return now.state.exit_code;
            }
            Err(_) => return 0,
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Attached through the monitor's socket: its output frames to our stdout/stderr, our
/// stdin (raw, for a tty) to the container; ends when the container does (its exit
/// code) or at the detach keys (0, the container left running).
fn attach_stream(
    engine: &mut Engine,
    c: &Container,
    stream: UnixStream,
    with_stdin: bool,
    detach_keys: &[u8],
) -> i32 {
    let (pty, first) = read_hello(&stream);
    // On a terminal, a tty container's pty takes our window size and follows it.
    let terminal = match (&pty, c.config.tty && with_stdin) {
        (Some(pty), true) if nix::unistd::isatty(0).unwrap_or(false) => {
            Some(berth_runtime::tty::Terminal::take(pty))
        }
        _ => None,
    };
    let raw = (pty.is_none() && c.config.tty && with_stdin)
        .then(|| crate::format::RawTerminal::enter(0))
        .flatten();
    let detached = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if with_stdin {
        if let Ok(mut to) = stream.try_clone() {
            // Docker reads the detach sequence on tty containers only.
            let keys = c.config.tty.then(|| detach_keys.to_vec());
            let flag = detached.clone();
            std::thread::spawn(move || {
                let mut stdin = std::io::stdin().lock();
                let escaped = match keys {
                    Some(k) if !k.is_empty() => copy_escapable(&mut stdin, &mut to, &k),
                    _ => std::io::copy(&mut stdin, &mut to).map(|_| false),
                };
                if escaped.unwrap_or(false) {
                    // Leave the container running: end our output copy, not its input.
                    flag.store(true, std::sync::atomic::Ordering::SeqCst);
                    let _ = to.shutdown(std::net::Shutdown::Read);
                    return;
                }
                // Our input ended; the container's stdin stays open for others, as Docker.
                let _ = to.shutdown(std::net::Shutdown::Write);
            });
        }
    }
    let exit = copy_frames(stream, first);
    drop(terminal);
    drop(raw);
    drop(pty);
    if detached.load(std::sync::atomic::Ordering::SeqCst) {
        return 0;
    }
    let exit = match exit {
        Ok(code) => code,
        Err(e) => {
            eprintln!("attach: {e}");
            None
        }
    };
    settle(engine, c, exit)
}

/// Once the monitor has said the container ended: wait (briefly) until the record says
/// so too, or is gone with `--rm`, so that the next command sees it as Docker's would.
fn settle(engine: &mut Engine, c: &Container, exit: Option<i32>) -> i32 {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match engine.find(&c.id) {
            Ok(now) if !now.state.status.is_active() && !c.config.auto_remove => {
                return exit.unwrap_or(now.state.exit_code)
            }
            Ok(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Ok(now) => return exit.unwrap_or(now.state.exit_code),
            Err(_) => return exit.unwrap_or(0),
        }
    }
}

/// The monitor's first frame: with a tty container, the pty master that came with it.
/// A monitor started by an older berth sends no hello: its first frame's header is
/// handed back, for the copy to begin with.
fn read_hello(stream: &UnixStream) -> (Option<OwnedFd>, Option<[u8; 5]>) {
    let mut head = [0u8; 5];
    match berth_runtime::console::recv_with_fd(stream.as_fd(), &mut head, true) {
        Ok((5, fd)) if head[0] == FRAME_HELLO => (fd, None),
        Ok((5, _)) => (None, Some(head)),
        _ => (None, None),
    }
}

/// Copies output frames to stdout and stderr until the socket ends; the exit code if
/// the monitor sent one.
fn copy_frames(
    mut from: impl std::io::Read,
    mut first: Option<[u8; 5]>,
) -> std::io::Result<Option<i32>> {
    let mut head = [0u8; 5];
    let mut data = Vec::new();
    let mut exit = None;
    loop {
        match first.take() {
            Some(h) => head = h,
            None => match from.read_exact(&mut head) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(exit),
                Err(e) => return Err(e),
            },
        }
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        data.resize(len, 0);
        from.read_exact(&mut data)?;
        match head[0] {
            FRAME_EXIT => {
                exit = <[u8; 4]>::try_from(&data[..]).ok().map(i32::from_be_bytes);
            }
            FRAME_STDERR => {
                let mut err = std::io::stderr().lock();
                err.write_all(&data)?;
                err.flush()?;
            }
            FRAME_HELLO => {}
            _ => {
                let mut out = std::io::stdout().lock();
                out.write_all(&data)?;
                out.flush()?;
            }
        }
    }
}

/// Copies `from` to `to` until EOF (false) or the detach sequence `keys` (true). Bytes
/// that may begin the sequence are held back until it completes or breaks, so the
/// container never sees a completed sequence, as with Docker.
fn copy_escapable(
    mut from: impl std::io::Read,
    mut to: impl Write,
    keys: &[u8],
) -> std::io::Result<bool> {
    let mut matched = 0;
    let mut buf = [0u8; 4096];
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            return Ok(false);
        }
        let mut out = Vec::with_capacity(n + keys.len());
        for &b in &buf[..n] {
            if b != keys[matched] {
                out.extend_from_slice(&keys[..matched]);
                matched = 0;
            }
            if b == keys[matched] {
                matched += 1;
                if matched == keys.len() {
                    to.write_all(&out)?;
                    return Ok(true);
                }
            } else {
                out.push(b);
            }
        }
        to.write_all(&out)?;
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_parse_as_dockers() {
        assert_eq!(parse_detach_keys("ctrl-p,ctrl-q").unwrap(), [16, 17]);
        assert_eq!(
            parse_detach_keys("ctrl-@,a,ctrl-[,ctrl-_").unwrap(),
            [0, b'a', 27, 31]
        );
        for bad in ["", "ctrl-", "ctrl-pp", "ab", "ctrl-1"] {
            assert!(parse_detach_keys(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn frames_end_with_the_exit_code_and_may_start_from_a_header_already_read() {
        let mut bytes = vec![0u8, 0, 0, 0, 2];
        bytes.extend_from_slice(b"hi");
        bytes.extend_from_slice(&[3, 0, 0, 0, 4]);
        bytes.extend_from_slice(&7i32.to_be_bytes());
        assert_eq!(copy_frames(&bytes[..], None).unwrap(), Some(7));
        let head = [0u8, 0, 0, 0, 2];
        assert_eq!(copy_frames(&bytes[5..], Some(head)).unwrap(), Some(7));
        assert_eq!(
            copy_frames(&bytes[..7], None).unwrap(),
            None,
            "no exit frame"
        );
    }

    #[test]
    fn escapable_copy_holds_a_partial_sequence_and_stops_on_the_whole() {
        let keys = [16, 17];
        let mut out = Vec::new();
        // A broken sequence passes through; the whole one ends the copy unsent.
        let input = b"ab\x10c\x10\x10\x11rest";
        assert!(copy_escapable(&input[..], &mut out, &keys).unwrap());
        assert_eq!(out, b"ab\x10c\x10");
        let mut out = Vec::new();
        assert!(!copy_escapable(&b"plain\x10"[..], &mut out, &keys).unwrap());
        assert_eq!(out, b"plain", "a sequence cut by EOF is not sent");
    }
}

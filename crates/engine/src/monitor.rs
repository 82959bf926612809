//! The monitor: one `poll(2)` loop over a container's output, its init's pidfd, forwarded
//! signals and the health-check timer. The detached form ([`main`]) also reports the
//! start's outcome to the CLI, and applies the restart policy and `--rm`.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::engine::{exit_code_for, Launched};
use crate::record::{Container, HealthConfig, Status};
use crate::{logs, Engine, Error, Result};

/// How the loop treats the caller's own stdio.
#[derive(Debug, Default)]
pub struct PumpOptions {
    /// Copy stdout to fd 1, stderr to fd 2 (foreground `run`, `start -a`; `-a` picks).
    pub echo: [bool; 2],
    /// Feed fd 0 to the container (`-i`).
    pub stdin: bool,
    /// Forward SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1/2 to the container.
    pub signals: bool,
    /// Serve `berth attach` clients on this socket (detached containers): output is
    /// copied to them in frames, their input goes to the container's stdin.
    pub attach: Option<AttachServer>,
    /// The container was created with `-i`: attach clients may write to its stdin.
    pub attach_stdin: bool,
    /// Where its output is kept (`--log-driver`, `--log-opt`).
    pub log: logs::LogConfig,
}

const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, c) => Some(c),
        WaitStatus::Signaled(_, s, _) => Some(128 + s as i32),
        _ => None,
    }
}

fn write_fd(fd: RawFd, mut data: &[u8]) {
    while !data.is_empty() {
        // SAFETY: fd is one of this process's open descriptors for its whole lifetime.
        let b = unsafe { BorrowedFd::borrow_raw(fd) };
        match nix::unistd::write(b, data) {
            Ok(n) => data = &data[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// How the loop runs health probes: a `berth container-health <id>` child every
/// `interval`, which runs the check and records its result itself (so the loop never
/// touches the database); killed if it outlives `kill_after`.
#[derive(Debug, Clone)]
pub struct ProbeSpec {
    pub exe: PathBuf,
    pub root: PathBuf,
    pub id: String,
    pub interval: Duration,
    pub kill_after: Duration,
    /// The interval for the first `start_period` after the loop starts.
    pub start_interval: Duration,
    pub start_period: Duration,
}

impl ProbeSpec {
    pub fn for_container(engine: &Engine, c: &Container) -> Option<ProbeSpec> {
        let cfg = c.config.healthcheck.clone().filter(HealthConfig::enabled)?;
        Some(ProbeSpec {
            exe: std::env::current_exe().ok()?,
            root: engine.root.clone(),
            id: c.id.clone(),
            interval: Duration::from_nanos(cfg.interval_ns()),
            kill_after: Duration::from_nanos(cfg.timeout_ns()) + Duration::from_secs(5),
            start_interval: Duration::from_nanos(cfg.start_interval_ns()),
            start_period: Duration::from_nanos(cfg.start_period),
        })
    }
}

struct Health {
    spec: ProbeSpec,
    next: Instant,
    probe: Option<(Child, Instant)>,
    /// The end of the start period, when probes go from `start_interval` to `interval`.
    start_ends: Instant,
}

impl Health {
    fn new(spec: ProbeSpec) -> Health {
        let now = Instant::now();
        let mut h = Health {
            next: now,
            start_ends: now + spec.start_period,
            spec,
            probe: None,
        };
        h.next = now + h.gap();
        h
    }

    /// Time to the next probe: the start interval inside the start period.
    fn gap(&self) -> Duration {
        if Instant::now() < self.start_ends {
            self.spec.start_interval
        } else {
            self.spec.interval
        }
    }

    fn deadline(&self) -> Instant {
        match &self.probe {
            Some(_) => Instant::now() + Duration::from_millis(20),
            None => self.next,
        }
    }

    fn tick(&mut self) {
        let now = Instant::now();
        if let Some((child, started)) = &mut self.probe {
            let done = match child.try_wait() {
                Ok(Some(_)) | Err(_) => true,
                Ok(None) if now >= *started + self.spec.kill_after => {
                    let _ = child.kill();
                    let _ = child.wait();
                    true
                }
                Ok(None) => false,
            };
            if done {
                self.probe = None;
                self.next = Instant::now() + self.gap();
            }
            return;
        }
        if now >= self.next {
            let spawned = Command::new(&self.spec.exe)
                .arg("--root")
                .arg(&self.spec.root)
                .arg("container-health")
                .arg(&self.spec.id)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            match spawned {
                Ok(child) => self.probe = Some((child, now)),
                Err(_) => self.next = now + self.gap(),
            }
        }
    }

    fn stop(&mut self) {
        if let Some((mut child, _)) = self.probe.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Stream {
    fd: OwnedFd,
    /// 0 stdout, 1 stderr.
    index: usize,
    open: bool,
}

/// Copies a launched container's output to its log (and to our stdio with `echo`) until
/// its init exits and the output ends; returns the exit code (128+signal when killed).
const ATTACH_LISTENER: u8 = 13;
/// Poll kinds from here up are attach clients (kind - ATTACH_CLIENT = index).
const ATTACH_CLIENT: u8 = 32;
/// At most this many attach clients at once (poll kinds stay in a u8).
const MAX_ATTACH: usize = 64;
/// How long output waits for `run -it`'s client ([`AttachServer::waiting_for_first`]).
pub const HOLD_LIMIT: Duration = Duration::from_secs(10);

/// Attach frame streams: output, then the monitor's own messages.
pub const FRAME_STDOUT: u8 = 0;
pub const FRAME_STDERR: u8 = 1;
/// First frame to every client, empty; with a tty it carries the pty master
/// (SCM_RIGHTS), so that the client can give the pty its terminal's window size.
pub const FRAME_HELLO: u8 = 2;
/// Last frame: the container's exit code (i32 BE), sent before the socket closes.
pub const FRAME_EXIT: u8 = 3;

/// `berth attach`'s end in the monitor: a unix socket in the container's directory.
/// Output goes to every client as frames (`[stream, len as u32 BE, bytes]`, see the
/// `FRAME_` streams); a client that cannot take a frame at once is dropped rather than
/// let it block the container, except `run -it`'s own (`waits`). Client input is
/// written to the container's stdin.
#[derive(Debug)]
pub struct AttachServer {
    path: PathBuf,
    listener: std::os::unix::net::UnixListener,
    clients: Vec<Client>,
    /// The pty master, handed to each client in its hello.
    pty: Option<RawFd>,
    /// The next client accepted is `run -it`'s own.
    first_waits: bool,
}

#[derive(Debug)]
struct Client {
    sock: std::os::unix::net::UnixStream,
    /// Output waits for this client instead of dropping it.
    waits: bool,
    /// Its input has ended (the client shut down its writing side): it still gets the
    /// output until it goes.
    input_done: bool,
}

impl AttachServer {
    /// Binds before the monitor reports the start, so a `berth attach` issued as soon
    /// as `run -d` returns finds the socket rather than falling back to the log.
    pub fn bind(path: &Path) -> Option<AttachServer> {
        let _ = std::fs::remove_file(path);
        let listener = std::os::unix::net::UnixListener::bind(path)
            .map_err(|e| tracing::warn!("attach socket {}: {e}", path.display()))
            .ok()?;
        AttachServer::serving(path, listener)
    }

    fn serving(path: &Path, listener: std::os::unix::net::UnixListener) -> Option<AttachServer> {
        listener.set_nonblocking(true).ok()?;
        Some(AttachServer {
            path: path.to_path_buf(),
            listener,
            clients: Vec::new(),
            pty: None,
            first_waits: false,
        })
    }

    /// `run -it`'s own client attaches as soon as the start is reported: leave the
    /// output in the pty until a client connects (at most [`HOLD_LIMIT`]), and let that
    /// client slow the container down, as a terminal would, rather than be dropped.
    pub fn waiting_for_first(mut self, yes: bool) -> AttachServer {
        self.first_waits = yes;
        self
    }

    /// Takes over the listener the monitor bound before it exec'd the loop binary.
    fn adopt(path: &Path, fd: RawFd) -> Option<AttachServer> {
        if fd < 0 {
            return None;
        }
        // SAFETY: the monitor passed this listening socket to this process to own.
        let listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
        AttachServer::serving(path, listener)
    }

    fn register<'a>(&'a self, fds: &mut Vec<PollFd<'a>>, kinds: &mut Vec<u8>) {
        fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
        kinds.push(ATTACH_LISTENER);
        for (i, c) in self.clients.iter().enumerate() {
            // Once its input is done, only POLLHUP (always reported): the client is gone.
            let events = if c.input_done {
                PollFlags::empty()
            } else {
                PollFlags::POLLIN
            };
            fds.push(PollFd::new(c.sock.as_fd(), events));
            kinds.push(ATTACH_CLIENT + i as u8);
        }
    }

    fn accept(&mut self) {
        while let Ok((sock, _)) = self.listener.accept() {
            if self.clients.len() < MAX_ATTACH
                && sock.set_nonblocking(true).is_ok()
                && hello(&sock, self.pty)
            {
                let waits = std::mem::take(&mut self.first_waits);
                self.clients.push(Client {
                    sock,
                    waits,
                    input_done: false,
                });
            }
        }
    }

    fn broadcast(&mut self, stream: u8, data: &[u8]) {
        use std::io::Write;
        let mut frame = Vec::with_capacity(5 + data.len());
        frame.push(stream);
        frame.extend_from_slice(&(data.len() as u32).to_be_bytes());
        frame.extend_from_slice(data);
        self.clients.retain_mut(|c| {
            if c.waits {
                write_waiting(&c.sock, &frame)
            } else {
                matches!(c.sock.write(&frame), Ok(n) if n == frame.len())
            }
        });
    }

    /// Tells every client the exit code; the socket closes after.
    fn finish(&mut self, code: i32) {
        self.broadcast(FRAME_EXIT, &code.to_be_bytes());
    }

    fn read_client(&mut self, i: usize, buf: &mut [u8], stdin: Option<RawFd>) {
        use std::io::Read;
        let Some(c) = self.clients.get_mut(i) else {
            return;
        };
        if c.input_done {
            self.clients.remove(i);
            return;
        }
        match c.sock.read(buf) {
            Ok(0) => c.input_done = true,
            Ok(n) => {
                if let Some(fd) = stdin {
                    write_fd(fd, &buf[..n]);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => {
                self.clients.remove(i);
            }
        }
    }
}

impl Drop for AttachServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Sends a new client its hello frame, with the pty master when there is one.
fn hello(sock: &std::os::unix::net::UnixStream, pty: Option<RawFd>) -> bool {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let frame = [FRAME_HELLO, 0, 0, 0, 0];
    let iov = [std::io::IoSlice::new(&frame)];
    let fds: Vec<RawFd> = pty.into_iter().collect();
    let cmsg: Vec<ControlMessage> = if fds.is_empty() {
        Vec::new()
    } else {
        vec![ControlMessage::ScmRights(&fds)]
    };
    matches!(
        sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None),
        Ok(n) if n == frame.len()
    )
}

/// Writes all of `data` to a non-blocking socket, waiting while it is full; false once
/// the client is gone.
fn write_waiting(mut sock: &std::os::unix::net::UnixStream, mut data: &[u8]) -> bool {
    use std::io::Write;
    while !data.is_empty() {
        match sock.write(data) {
            Ok(0) => return false,
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLOUT)];
                if poll(&mut fds, PollTimeout::NONE).is_err() {
                    return false;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

pub fn pump(engine: &mut Engine, c: &Container, l: Launched, mut opts: PumpOptions) -> Result<i32> {
    let probe = ProbeSpec::for_container(engine, c);
    opts.log = log_config(c);
    pump_loop(&engine.log_path(&c.id), l, probe, opts)
}

/// The container's log settings (checked at create; a record that no longer parses gets
/// the default).
pub fn log_config(c: &Container) -> logs::LogConfig {
    logs::LogConfig::parse(&c.config.log_driver, &c.config.log_opts).unwrap_or_default()
}

/// The loop itself: no database, no runtime, so the process running it stays small.
pub fn pump_loop(
    log_path: &Path,
    l: Launched,
    probe: Option<ProbeSpec>,
    opts: PumpOptions,
) -> Result<i32> {
    let mut log = logs::Writer::open(log_path, opts.log).unwrap_or_else(|_| logs::Writer::none());
    let mut streams = vec![Stream {
        fd: l.out,
        index: 0,
        open: true,
    }];
    if let Some(err) = l.err {
        streams.push(Stream {
            fd: err,
            index: 1,
            open: true,
        });
    }
    for s in &streams {
        let _ = nix::fcntl::fcntl(
            s.fd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
    }
    // With a pty, stdin goes to the master; otherwise to the stdin pipe.
    let mut stdin_dst: Option<RawFd> = None;
    if opts.stdin {
        stdin_dst = match (&l.stdin, l.tty) {
            (Some(w), _) => Some(w.as_raw_fd()),
            (None, true) => Some(streams[0].fd.as_raw_fd()),
            _ => None,
        };
    }
    let mut stdin_pipe = l.stdin;
    // What attach clients type goes where fd 0 would (the stdin pipe, or the pty master
    // for `-it`), when the container was created with `-i`.
    let mut attach_in: Option<RawFd> = match (opts.attach_stdin, &stdin_pipe, l.tty) {
        (false, _, _) => None,
        (true, Some(w), _) => Some(w.as_raw_fd()),
        (true, None, true) => Some(streams[0].fd.as_raw_fd()),
        (true, None, false) => None,
    };
    let mut attach = opts.attach;
    if let Some(a) = &mut attach {
        a.pty = l.tty.then(|| streams[0].fd.as_raw_fd());
    }
    let mut holding = attach
        .as_ref()
        .is_some_and(|a| a.first_waits)
        .then(|| Instant::now() + HOLD_LIMIT);
    // A terminal here and a pty there (`run -it`): the pty follows our window's size.
    let resize = (l.tty && opts.stdin).then(|| streams[0].fd.as_raw_fd());
    if let Some(master) = resize {
        berth_runtime::console::copy_window_size(0, master);
    }
    let sigfd = if opts.signals || resize.is_some() {
        let mut set = SigSet::empty();
        if opts.signals {
            for s in FORWARDED {
                set.add(s);
            }
        }
        if resize.is_some() {
            set.add(Signal::SIGWINCH);
        }
        set.thread_block()
            .ok()
            .and_then(|_| SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC).ok())
    } else {
        None
    };
    let mut health = probe.map(Health::new);
    let mut code: Option<i32> = None;
    let mut drain_until: Option<Instant> = None;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if code.is_some()
            && (streams.iter().all(|s| !s.open) || drain_until.is_some_and(|d| Instant::now() >= d))
        {
            break;
        }
        let client_came = attach.as_ref().is_some_and(|a| !a.clients.is_empty());
        if client_came || code.is_some() || holding.is_some_and(|d| Instant::now() >= d) {
            holding = None;
        }
        let mut fds: Vec<PollFd> = Vec::with_capacity(5);
        let mut kinds: Vec<u8> = Vec::with_capacity(5);
        for (i, s) in streams.iter().enumerate() {
            if s.open && holding.is_none() {
                fds.push(PollFd::new(s.fd.as_fd(), PollFlags::POLLIN));
                kinds.push(i as u8);
            }
        }
        if code.is_none() {
            fds.push(PollFd::new(l.pidfd.as_fd(), PollFlags::POLLIN));
            kinds.push(10);
        }
        if let Some(sfd) = &sigfd {
            fds.push(PollFd::new(sfd.as_fd(), PollFlags::POLLIN));
            kinds.push(11);
        }
        // SAFETY: fd 0 stays open for the life of the process.
        let stdin_fd = unsafe { BorrowedFd::borrow_raw(0) };
        if stdin_dst.is_some() {
            fds.push(PollFd::new(stdin_fd, PollFlags::POLLIN));
            kinds.push(12);
        }
        if let Some(a) = &attach {
            a.register(&mut fds, &mut kinds);
        }
        let mut deadline = drain_until.or(holding);
        if let (Some(h), None) = (&health, code) {
            let d = h.deadline();
            deadline = Some(deadline.map_or(d, |x| x.min(d)));
        }
        let timeout = match deadline {
            Some(d) => {
                let ms = d.saturating_duration_since(Instant::now()).as_millis();
                PollTimeout::try_from(ms.min(60_000) as i32).unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                return Err(Error::Io {
                    context: "poll".into(),
                    source: e.into(),
                })
            }
        }
        let ready: Vec<(u8, PollFlags)> = fds
            .iter()
            .zip(&kinds)
            .filter_map(|(f, k)| f.revents().filter(|r| !r.is_empty()).map(|r| (*k, r)))
            .collect();
        drop(fds);
        for (kind, _) in ready {
            match kind {
                i @ 0..=1 => {
                    let s = &mut streams[i as usize];
                    match nix::unistd::read(s.fd.as_raw_fd(), &mut buf) {
                        Ok(0) | Err(nix::errno::Errno::EIO) => {
                            s.open = false;
                            log.flush(s.index);
                        }
                        Ok(n) => {
                            log.write(s.index, &buf[..n]);
                            if opts.echo[s.index.min(1)] {
                                write_fd(1 + s.index as RawFd, &buf[..n]);
                            }
                            if let Some(a) = &mut attach {
                                a.broadcast(s.index as u8, &buf[..n]);
                            }
                        }
                        Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
                        Err(_) => {
                            s.open = false;
                            log.flush(s.index);
                        }
                    }
                }
                10 => {
                    if let Ok(st) = waitpid(Pid::from_raw(l.pid), Some(WaitPidFlag::WNOHANG)) {
                        if let Some(c) = exit_code(st) {
                            code = Some(c);
                            // Orphans holding the pipes die with the pid namespace; give
                            // them a moment, never forever.
                            drain_until = Some(Instant::now() + Duration::from_secs(2));
                            stdin_dst = None;
                            stdin_pipe = None;
                            attach_in = None;
                        }
                    }
                }
                11 => {
                    if let Some(Ok(Some(info))) = sigfd.as_ref().map(|s| s.read_signal()) {
                        match (Signal::try_from(info.ssi_signo as i32), resize) {
                            (Ok(Signal::SIGWINCH), Some(master)) => {
                                berth_runtime::console::copy_window_size(0, master)
                            }
                            (Ok(sig), _) => {
                                let _ = nix::sys::signal::kill(Pid::from_raw(l.pid), sig);
                            }
                            _ => {}
                        }
                    }
                }
                12 => {
                    let n = nix::unistd::read(0, &mut buf).unwrap_or(0);
                    match (n, stdin_dst) {
                        (0, _) => {
                            stdin_dst = None;
                            stdin_pipe = None;
                        }
                        (n, Some(dst)) => write_fd(dst, &buf[..n]),
                        _ => {}
                    }
                }
                ATTACH_LISTENER => {
                    if let Some(a) = &mut attach {
                        a.accept();
                    }
                }
                k if k >= ATTACH_CLIENT => {
                    if let Some(a) = &mut attach {
                        a.read_client((k - ATTACH_CLIENT) as usize, &mut buf, attach_in);
                    }
                }
                _ => {}
            }
        }
        if let (Some(h), None) = (&mut health, code) {
            h.tick();
        }
    }
    drop(stdin_pipe);
    if let Some(a) = &mut attach {
        a.finish(code.unwrap_or(255));
    }
    drop(attach);
    if let Some(h) = &mut health {
        h.stop();
    }
    for s in &streams {
        if s.open {
            log.flush(s.index);
        }
    }
    if opts.signals {
        let mut set = SigSet::empty();
        for s in FORWARDED {
            set.add(s);
        }
        let _ = set.thread_unblock();
    }
    Ok(code.unwrap_or(255))
}

/// Whether the policy restarts a container that just exited.
pub fn should_restart(c: &Container) -> bool {
    if c.state.manual_stop {
        return false;
    }
    let p = &c.config.restart;
    match p.name.as_str() {
        "always" | "unless-stopped" => true,
        "on-failure" => {
            c.state.exit_code != 0 && (p.max_retries == 0 || c.state.restart_count < p.max_retries)
        }
        _ => false,
    }
}

fn report(fd: &mut Option<File>, msg: &str) {
    if let Some(mut f) = fd.take() {
        let _ = f.write_all(msg.as_bytes());
    }
}

/// Sleeps out the restart back-off; false if a stop came meanwhile.
fn backoff(engine: &mut Engine, id: &str, delay: Duration) -> bool {
    let end = Instant::now() + delay;
    while Instant::now() < end {
        match engine.db.get(id) {
            Ok(Some(c)) if !c.state.manual_stop => {}
            _ => return false,
        }
        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(50)));
    }
    true
}

/// The detached monitor (`berth container-monitor <id>`): writes "ok\n" or
/// `err <code>\n<message>` to `report` once the first start is decided, then hands the
/// running container to the small `berth-monitor` loop binary (exec, so the container
/// stays its child). That binary execs back here with `exited` = (code, back-off) when
/// the container ends, to record it and apply the restart policy. `attach_first` is
/// `run -it`'s terminal size: its client attaches at once (see `hold_output`).
pub fn main(
    root: &Path,
    id: &str,
    report_fd: Option<OwnedFd>,
    exited: Option<(i32, Duration)>,
    attach_first: Option<(u16, u16)>,
) -> i32 {
    // SAFETY: plain signal disposition changes before any other work.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let mut rep = report_fd.map(File::from);
    let mut engine = match Engine::open(root) {
        Ok(e) => e,
        Err(e) => {
            report(&mut rep, &format!("err 125\n{e}"));
            return 1;
        }
    };
    engine.tty_size = attach_first.filter(|s| s.0 > 0 && s.1 > 0);
    let mut hold = attach_first.is_some();
    let mut delay = exited.map_or(Duration::from_millis(100), |e| e.1);
    let mut pending = exited.map(|e| e.0);
    loop {
        if let Some(code) = pending.take() {
            if !after_exit(&mut engine, id, code, &mut delay) {
                break;
            }
        }
        // `-d -i` keeps a stdin pipe open for `berth attach` to write to.
        let interactive = engine.db.find(id).is_ok_and(|c| c.config.interactive);
        let l = match engine.launch(id, interactive) {
            Ok(l) => l,
            Err(e) => {
                report(&mut rep, &format!("err {}\n{e}", exit_code_for(&e)));
                break;
            }
        };
        // Only the first start has `run -it`'s client waiting; restarts do not.
        let first = std::mem::take(&mut hold);
        let attach =
            AttachServer::bind(&attach_socket(&engine, id)).map(|a| a.waiting_for_first(first));
        report(&mut rep, "ok\n");
        let Ok(c) = engine.find(id) else { break };
        let probe = ProbeSpec::for_container(&engine, &c);
        if let Some(bin) = loop_binary() {
            let err = exec_loop(
                &bin,
                &engine,
                &c,
                &l,
                probe.as_ref(),
                delay,
                attach.as_ref(),
            );
            tracing::warn!("exec {}: {err}; monitoring in-process", bin.display());
        }
        let opts = PumpOptions {
            attach,
            attach_stdin: c.config.interactive,
            log: log_config(&c),
            ..Default::default()
        };
        let code = pump_loop(&engine.log_path(id), l, probe, opts);
        pending = Some(code.unwrap_or(255));
    }
    let _ = engine.detach_monitor(id);
    if let Ok(c) = engine.db.find(id) {
        if c.config.auto_remove && !c.state.status.is_active() {
            let _ = engine.remove(id, true, true);
        }
    }
    0
}

/// Records an exit; returns whether the policy restarts the container (after sleeping
/// out Docker's back-off: 100 ms doubling, back to 100 ms after 10 s of running).
fn after_exit(engine: &mut Engine, id: &str, code: i32, delay: &mut Duration) -> bool {
    let c = match engine.finish(id, code) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("{id}: recording the exit failed: {e}");
            return false;
        }
    };
    if !should_restart(&c) {
        return false;
    }
    let ran = humantime::parse_rfc3339_weak(&c.state.started_at)
        .ok()
        .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
        .unwrap_or_default();
    if ran >= Duration::from_secs(10) {
        *delay = Duration::from_millis(100);
    }
    let marked = engine.db.update(id, |c| {
        if !c.state.manual_stop {
            c.state.status = Status::Restarting;
            c.state.restart_count += 1;
        }
    });
    let restarting = matches!(marked, Ok(ref c) if c.state.status == Status::Restarting);
    if !restarting || !backoff(engine, id, *delay) {
        let _ = engine.db.update(id, |c| {
            if c.state.status == Status::Restarting {
                c.state.status = Status::Exited;
            }
        });
        return false;
    }
    *delay = (*delay * 2).min(Duration::from_secs(60));
    true
}

/// Where a detached container's monitor serves `berth attach`.
pub fn attach_socket(engine: &Engine, id: &str) -> PathBuf {
    engine.dir(id).join("attach.sock")
}

/// `berth-monitor` next to this binary, if installed.
fn loop_binary() -> Option<PathBuf> {
    let p = std::env::current_exe()
        .ok()?
        .parent()?
        .join("berth-monitor");
    p.is_file().then_some(p)
}

fn inheritable(fd: RawFd) -> std::io::Result<()> {
    nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .map(|_| ())
    .map_err(std::io::Error::from)
}

/// Replaces this process with the loop binary; returns only if that fails.
fn exec_loop(
    bin: &Path,
    engine: &Engine,
    c: &Container,
    l: &Launched,
    probe: Option<&ProbeSpec>,
    delay: Duration,
    attach: Option<&AttachServer>,
) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let err_fd = l.err.as_ref().map_or(-1, |f| f.as_raw_fd());
    let in_fd = l.stdin.as_ref().map_or(-1, |f| f.as_raw_fd());
    let listen_fd = attach.map_or(-1, |a| a.listener.as_raw_fd());
    for fd in [
        l.pidfd.as_raw_fd(),
        l.out.as_raw_fd(),
        err_fd,
        in_fd,
        listen_fd,
    ] {
        if fd >= 0 {
            if let Err(e) = inheritable(fd) {
                return e;
            }
        }
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return e,
    };
    let ms = |d: Duration| d.as_millis().to_string();
    Command::new(bin)
        .arg(engine.log_path(&c.id))
        .arg(l.pid.to_string())
        .arg(l.pidfd.as_raw_fd().to_string())
        .arg(l.out.as_raw_fd().to_string())
        .arg(err_fd.to_string())
        .arg(probe.map_or("0".into(), |p| ms(p.interval)))
        .arg(probe.map_or("0".into(), |p| ms(p.kill_after)))
        .arg(probe.map_or("0".into(), |p| {
            format!("{}:{}", ms(p.start_interval), ms(p.start_period))
        }))
        .arg(exe)
        .arg(&engine.root)
        .arg(&c.id)
        .arg(ms(delay))
        .arg(in_fd.to_string())
        .arg(if c.config.interactive { "1" } else { "0" })
        .arg(attach_socket(engine, &c.id))
        .arg(listen_fd.to_string())
        .arg(if attach.is_some_and(|a| a.first_waits) {
            "1"
        } else {
            "0"
        })
        .arg(log_config(c).to_arg())
        .exec()
}

/// Gives back the program pages the kernel mapped ahead of need. A page fault on a file
/// maps up to 64 KiB around the page ("fault-around"), so after start-up most of the
/// binary's and libc's code and read-only data is resident though the loop uses a few
/// pages of it; dropping them lets the loop fault back only what it touches. Only
/// mappings that are private, file-backed, not writable and hold no anonymous (copied on
/// write, e.g. relocated) pages are dropped: their pages are clean copies of the file, so
/// MADV_DONTNEED loses nothing.
pub fn trim_text_pages() {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        if let Some(mapping) = smaps_header(line) {
            current = mapping;
            continue;
        }
        let Some(rest) = line.strip_prefix("Anonymous:") else {
            continue;
        };
        let clean = rest.trim().trim_end_matches("kB").trim() == "0";
        if let (true, Some((start, end))) = (clean, current.take()) {
            // SAFETY: one of this process's own private, read-only file mappings with no
            // anonymous pages: dropping them only means re-reading them from the file.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
            }
        }
    }
}

/// For an smaps mapping header (`start-end perms offset dev inode [path]`): the range,
/// when the mapping is private, not writable and of a file (not the vdso and friends).
/// `None` for any other line.
fn smaps_header(line: &str) -> Option<Option<(usize, usize)>> {
    let mut parts = line.split_whitespace();
    let (start, end) = parts.next()?.split_once('-')?;
    let (start, end) = (
        usize::from_str_radix(start, 16).ok()?,
        usize::from_str_radix(end, 16).ok()?,
    );
    let perms = parts.next()?.as_bytes();
    let path = parts.nth(3).unwrap_or("");
    let droppable =
        perms.len() == 4 && perms[1] != b'w' && perms[3] == b'p' && path.starts_with('/');
    Some(droppable.then_some((start, end)))
}

/// The loop binary's side: the arguments `exec_loop` passed, then back to `berth`.
pub fn loop_main(args: &[std::ffi::OsString]) -> i32 {
    use std::os::unix::process::CommandExt;
    let [_, log, pid, pidfd, out, err, interval, kill_after, start, exe, root, id, delay, stdin, interactive, sock, listen, hold, log_opts] =
        args
    else {
        eprintln!("berth-monitor: started by berth only");
        return 2;
    };
    let num =
        |s: &std::ffi::OsString| -> i64 { s.to_str().and_then(|s| s.parse().ok()).unwrap_or(-1) };
    let (pid, pidfd, out, err) = (
        num(pid) as i32,
        num(pidfd) as RawFd,
        num(out) as RawFd,
        num(err) as RawFd,
    );
    if pid <= 0 || pidfd < 0 || out < 0 {
        eprintln!("berth-monitor: bad arguments");
        return 2;
    }
    // SAFETY: berth passed these descriptors to this process for it to own.
    let owned = |fd: RawFd| unsafe { OwnedFd::from_raw_fd(fd) };
    let tty = err < 0;
    let l = Launched {
        pid,
        pidfd: owned(pidfd),
        out: owned(out),
        err: (!tty).then(|| owned(err)),
        stdin: (num(stdin) >= 0).then(|| owned(num(stdin) as RawFd)),
        tty,
    };
    let interval = num(interval).max(0) as u64;
    // `START_INTERVAL_MS:START_PERIOD_MS`.
    let start = start.to_string_lossy();
    let (start_interval, start_period) = start
        .split_once(':')
        .map(|(i, p)| (i.parse().unwrap_or(interval), p.parse().unwrap_or(0)))
        .unwrap_or((interval, 0));
    let probe = (interval > 0).then(|| ProbeSpec {
        exe: PathBuf::from(exe),
        root: PathBuf::from(root),
        id: id.to_string_lossy().into_owned(),
        interval: Duration::from_millis(interval),
        kill_after: Duration::from_millis(num(kill_after).max(0) as u64),
        start_interval: Duration::from_millis(start_interval),
        start_period: Duration::from_millis(start_period),
    });
    let opts = PumpOptions {
        attach: AttachServer::adopt(Path::new(sock), num(listen) as RawFd)
            .map(|a| a.waiting_for_first(hold == "1")),
        attach_stdin: interactive == "1",
        log: logs::LogConfig::from_arg(&log_opts.to_string_lossy()),
        ..Default::default()
    };
    trim_text_pages();
    let code = pump_loop(Path::new(log), l, probe, opts).unwrap_or(255);
    let e = Command::new(exe)
        .arg("--root")
        .arg(root)
        .arg("container-monitor")
        .arg(id)
        .arg("--exited")
        .arg(code.to_string())
        .arg(delay)
        .exec();
    eprintln!("berth-monitor: exec {}: {e}", PathBuf::from(exe).display());
    125
}

/// Starts `berth container-monitor <id>` detached (double fork, new session) and returns
/// the outcome it reports.
pub fn spawn_detached(
    exe: &Path,
    root: &Path,
    id: &str,
    attach_first: Option<(u16, u16)>,
) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::Io {
        context: "pipe".into(),
        source: e.into(),
    })?;
    let wfd = w.as_raw_fd();
    let mut cmd = Command::new(exe);
    cmd.arg("--root")
        .arg(root)
        .arg("container-monitor")
        .arg(id)
        .args(attach_first.map(|(r, c)| format!("--attach-first={r}:{c}")))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: only async-signal-safe calls (setsid, fork, _exit, dup2) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            match libc::fork() {
                -1 => return Err(std::io::Error::last_os_error()),
                0 => {}
                _ => libc::_exit(0),
            }
            if libc::dup2(wfd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| Error::Io {
        context: format!("start the monitor {}", exe.display()),
        source: e,
    })?;
    let _ = child.wait();
    drop(w);
    let mut text = String::new();
    let _ = File::from(r).read_to_string(&mut text);
    if text.starts_with("ok") {
        return Ok(());
    }
    match text.strip_prefix("err ").and_then(|t| t.split_once('\n')) {
        Some((code, msg)) => Err(Error::Start {
            code: code.trim().parse().unwrap_or(125),
            msg: msg.to_string(),
        }),
        None => Err(Error::Start {
            code: 125,
            msg: "the container monitor exited without reporting".into(),
        }),
    }
}

/// Takes fd 3 as the report pipe (set up by [`spawn_detached`]).
pub fn report_fd() -> Option<OwnedFd> {
    // SAFETY: spawn_detached dup2'd the report pipe onto fd 3 for this process.
    Some(unsafe { OwnedFd::from_raw_fd(3) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_private_read_only_file_mappings_are_dropped() {
        let h = |l: &str| smaps_header(l);
        assert_eq!(
            h("7f10a0000000-7f10a0028000 r-xp 00028000 fe:01 1234 /usr/lib/libc.so.6"),
            Some(Some((0x7f10a0000000, 0x7f10a0028000)))
        );
        assert_eq!(
            h("55d0-55e0 r--p 00000000 fe:01 99 /work/bin/berth-monitor"),
            Some(Some((0x55d0, 0x55e0)))
        );
        // Writable, shared, anonymous and special mappings stay.
        assert_eq!(
            h("7f10-7f20 rw-p 00000000 fe:01 1234 /usr/lib/libc.so.6"),
            Some(None)
        );
        assert_eq!(
            h("7f10-7f20 r--s 00000000 fe:01 1234 /dev/shm/x"),
            Some(None)
        );
        assert_eq!(h("7f10-7f20 rw-p 00000000 00:00 0"), Some(None));
        assert_eq!(h("7fff-8000 r-xp 00000000 00:00 0 [vdso]"), Some(None));
        // Field lines are not headers.
        assert_eq!(h("Anonymous:             0 kB"), None);
        assert_eq!(h("VmFlags: rd ex mr mw me sd"), None);
    }

    #[test]
    fn trimming_keeps_the_process_working() {
        trim_text_pages();
        // Code and read-only data come back from the file on the next touch.
        let v: Vec<String> = (0..1000).map(|i| format!("{i}")).collect();
        assert_eq!(v.join(",").len(), 3889);
    }
}

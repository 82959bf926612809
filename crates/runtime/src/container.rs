//! The lifecycle: create → created (init waits on exec.fifo) → start → running → stopped,
//! plus run, kill, delete, pause/resume, ps, update and state. Each operation is one short
//! process (runc's model): state lives in `<root>/<id>/state.json`, status is read back
//! from the kernel every time.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, LinuxResources, Spec};

use crate::cgroups::Cgroup;
use crate::channel::{self, Channel, Tag};
use crate::config::Bundle;
use crate::error::{Context, Error, Result};
use crate::init::{self, InitConfig};
use crate::spawn::{clone3, Forked};
use crate::state::{self, PublicState, Record, StateDir, Status};
use crate::{hooks, namespaces, seccomp};

#[derive(Debug, Default, Clone)]
pub struct CreateOptions {
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub preserve_fds: i32,
    /// The bundle's config.json as the caller wrote it, for an in-process caller: create
    /// uses it instead of reading the file back (the file stays the bundle's record).
    pub spec: Option<Spec>,
}

/// A runtime rooted at a state directory (runc's `--root`).
pub struct Runtime {
    pub root: PathBuf,
}

/// Undoes a half-made container when create fails at any step.
struct Cleanup<'a> {
    sd: &'a StateDir,
    cgroup: Option<Cgroup>,
    pid: Option<i32>,
    armed: bool,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(pid) = self.pid {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(Pid::from_raw(pid), None);
        }
        if let Some(cg) = &self.cgroup {
            let _ = cg.destroy();
        }
        let _ = self.sd.remove();
    }
}

enum Mode {
    Create,
    Run,
}

impl Runtime {
    pub fn new(root: impl Into<PathBuf>) -> Runtime {
        Runtime { root: root.into() }
    }

    fn dir(&self, id: &str) -> Result<StateDir> {
        StateDir::new(&self.root, id)
    }

    pub fn create(&self, id: &str, bundle: &Path, opts: &CreateOptions) -> Result<i32> {
        let (pid, _) = self.spawn(id, bundle, opts, Mode::Create)?;
        Ok(pid)
    }

    /// `create` for a caller that starts the container itself, in this process: the init
    /// waits on the setup channel instead of exec.fifo, so there is no fifo to make and
    /// open, and [`Held::start`] needs no state read back. Dropping the [`Held`] without
    /// starting closes the channel, and the init exits; the caller still `delete`s.
    pub fn create_held(&self, id: &str, bundle: &Path, opts: &CreateOptions) -> Result<Held> {
        let (pid, spawned) = self.spawn(id, bundle, opts, Mode::Run)?;
        Ok(Held {
            pid,
            chan: spawned.chan,
            record: spawned.record,
        })
    }

    /// `run`: create and start in one go. Detached, returns once the program runs;
    /// otherwise waits for it, deletes the container (unless `keep`, runc's `--keep`,
    /// which leaves it stopped for a later `delete`) and returns its exit code.
    pub fn run(
        &self,
        id: &str,
        bundle: &Path,
        opts: &CreateOptions,
        detach: bool,
        keep: bool,
    ) -> Result<i32> {
        let (pid, ctx) = self.spawn(id, bundle, opts, Mode::Run)?;
        let sd = self.dir(id)?;
        let rec = ctx.record;
        let started = ctx
            .chan
            .send(Tag::Start, &[])
            .and_then(|_| wait_exec(&ctx.chan));
        if let Err(e) = started {
            let _ = nix::sys::wait::waitpid(Pid::from_raw(pid), None);
            let _ = self.destroy(&sd, &rec);
            return Err(e);
        }
        tracing::debug!("program started");
        poststart(&rec);
        if detach {
            return Ok(0);
        }
        forward_signals(pid);
        let proxy = ctx.pty_master.map(crate::tty::Proxy::start);
        let code = wait_exit(pid);
        tracing::debug!("program exited");
        drop(proxy);
        if !keep {
            self.destroy_as_now(&sd, rec)?;
            tracing::debug!("deleted");
        }
        Ok(code)
    }

    fn spawn(
        &self,
        id: &str,
        bundle_dir: &Path,
        opts: &CreateOptions,
        mode: Mode,
    ) -> Result<(i32, Spawned)> {
        tracing::debug!("load bundle");
        let bundle = match &opts.spec {
            Some(spec) => Bundle::with_spec(bundle_dir, spec.clone())?,
            None => Bundle::load(bundle_dir)?,
        };
        let spec = &bundle.spec;
        let process = bundle.process()?;
        let sd = self.dir(id)?;
        std::fs::create_dir_all(&self.root)
            .ctx(|| format!("state root {}", self.root.display()))?;
        sd.create(id)?;
        let mut guard = Cleanup {
            sd: &sd,
            cgroup: None,
            pid: None,
            armed: true,
        };
        warn_lsm(process);
        if !namespaces::has(spec, LinuxNamespaceType::Mount) {
            return Err(Error::config(
                "linux.namespaces",
                "a mount namespace is required",
            ));
        }
        let linux = spec.linux().as_ref();
        let cgroup = Cgroup::resolve(linux.and_then(|l| l.cgroups_path().as_deref()), id);
        tracing::debug!("create cgroup");
        cgroup.create()?;
        guard.cgroup = Some(cgroup.clone());
        if let Some(res) = linux.and_then(|l| l.resources().as_ref()) {
            cgroup.apply(res)?;
        }
        let (filter, seccomp_listener) = match linux.and_then(|l| l.seccomp().as_ref()) {
            Some(s) => (
                Some(seccomp::compile(s, &self.root.join(".seccomp-cache"))?),
                seccomp::listener_socket(s)?,
            ),
            None => (None, None),
        };
        let fifo = match mode {
            Mode::Create => Some(make_fifo(&sd.fifo())?),
            Mode::Run => None,
        };
        let terminal = process.terminal().unwrap_or(false);
        let (console, pty_listener) = console_for(terminal, opts, &mode)?;
        let (parent_chan, child_chan) = channel::pair()?;
        namespaces::prepare_parent(spec)?;
        let new_ns = namespaces::new_flags(spec);
        let runtime_hooks = spec.hooks().as_ref().is_some_and(|h| {
            h.create_runtime().as_ref().is_some_and(|v| !v.is_empty())
                || h.prestart().as_ref().is_some_and(|v| !v.is_empty())
        });
        tracing::debug!("clone");
        let clone_fd = cgroup.clone_into_fd();
        // The init moves itself into the v1 hierarchies (the cheap way, see
        // `Cgroup::join_v1_self`), except in a new user namespace, whose root may not
        // write the host's cgroup files: there the runtime writes its pid.
        let init_joins_v1 = cgroup.has_v1() && new_ns & LinuxNamespaceType::User as u64 == 0;
        let cgroupns = LinuxNamespaceType::Cgroup as u64;
        let unshare_cgroupns = (clone_fd.is_none() || cgroup.has_v1()) && new_ns & cgroupns != 0;
        let clone_flags = if unshare_cgroupns {
            new_ns & !cgroupns
        } else {
            new_ns
        };
        let pid = match clone3(clone_flags, clone_fd.as_ref())? {
            Forked::Child => {
                drop(parent_chan);
                init::run(InitConfig {
                    id,
                    spec,
                    rootfs: &bundle.rootfs,
                    cgroup: &cgroup,
                    chan: child_chan,
                    fifo,
                    console,
                    no_pivot: opts.no_pivot,
                    no_new_keyring: opts.no_new_keyring,
                    preserve_fds: opts.preserve_fds,
                    new_ns,
                    runtime_hooks,
                    seccomp: filter,
                    seccomp_listener,
                    unshare_cgroupns,
                    join_v1: init_joins_v1,
                })
            }
            Forked::Parent(pid) => pid,
        };
        drop(child_chan);
        drop(console);
        guard.pid = Some(pid);
        if new_ns & LinuxNamespaceType::User as u64 != 0 {
            write_id_maps(pid, spec)?;
        }
        let start_time = state::proc_stat(pid).map(|s| s.0).unwrap_or(0);
        let mut rec = Record {
            public: PublicState {
                oci_version: spec.version().clone(),
                id: id.into(),
                pid,
                status: Status::Creating,
                bundle: bundle.dir.clone(),
                rootfs: bundle.rootfs.clone(),
                created: state::now_rfc3339(),
                annotations: spec.annotations().clone().unwrap_or_default(),
                owner: String::new(),
            },
            start_time,
            cgroup: cgroup.clone(),
            config: spec.clone(),
        };
        let state_json = serde_json::to_vec(&rec.public).unwrap_or_default();
        parent_chan.send(Tag::Go, &state_json)?;
        tracing::debug!("go sent; joining cgroups");
        cgroup.add_where(pid, clone_fd.is_none(), !init_joins_v1)?;
        parent_chan.send(Tag::Joined, &[])?;
        tracing::debug!("cgroups joined");
        let pty_master = self.wait_ready(&parent_chan, spec, &state_json, pty_listener)?;
        tracing::debug!("init ready");
        rec.public.status = Status::Created;
        sd.save(&rec)?;
        if let Some(p) = &opts.pid_file {
            write_pid_file(p, pid)?;
        }
        guard.armed = false;
        Ok((
            pid,
            Spawned {
                chan: parent_chan,
                pty_master,
                record: rec,
            },
        ))
    }

    /// Serves the init until it is ready: runs createRuntime/prestart hooks when asked,
    /// and picks up the pty master for a foreground `run -t`.
    fn wait_ready(
        &self,
        chan: &Channel,
        spec: &Spec,
        state_json: &[u8],
        pty: Option<OwnedFd>,
    ) -> Result<Option<OwnedFd>> {
        loop {
            match chan.recv()? {
                Some((Tag::RuntimeHooks, _)) => {
                    if let Some(h) = spec.hooks() {
                        for list in [h.create_runtime(), h.prestart()].into_iter().flatten() {
                            hooks::run_all(list, state_json)?;
                        }
                    }
                    chan.send(Tag::Continue, &[])?;
                }
                Some((Tag::Ready, _)) => break,
                Some((tag, msg)) => return Err(init_error(tag, msg)),
                None => return Err(Error::Init("container init exited during setup".into())),
            }
        }
        match pty {
            Some(listener) => Ok(Some(crate::console::recv_fd(listener.as_fd())?)),
            None => Ok(None),
        }
    }

    pub fn start(&self, id: &str) -> Result<()> {
        let sd = self.dir(id)?;
        let rec = sd.load(id)?;
        if rec.public.status != Status::Created {
            return Err(bad_state(
                &rec,
                "cannot start a container that is not created",
            ));
        }
        release_fifo(&sd.fifo())?;
        poststart(&rec);
        Ok(())
    }

    pub fn state(&self, id: &str) -> Result<PublicState> {
        Ok(self.dir(id)?.load(id)?.public)
    }

    pub fn list(&self) -> Result<Vec<PublicState>> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => {
                return Err(Error::Io {
                    context: self.root.display().to_string(),
                    err: e,
                })
            }
        };
        for entry in entries.flatten() {
            let Some(id) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if let Ok(rec) = self.dir(&id).and_then(|sd| sd.load(&id)) {
                out.push(rec.public);
            }
        }
        out.sort_by(|a, b| a.created.cmp(&b.created));
        Ok(out)
    }

    pub fn kill(&self, id: &str, sig: Signal, all: bool) -> Result<()> {
        let rec = self.dir(id)?.load(id)?;
        if rec.public.status == Status::Stopped && !all {
            return Err(bad_state(&rec, "container not running"));
        }
        if all {
            for pid in rec.cgroup.pids()? {
                let _ = kill(Pid::from_raw(pid), sig);
            }
            // A paused cgroup would hold the signals until thawed; SIGKILL must land now.
            if sig == Signal::SIGKILL && rec.public.status == Status::Paused {
                let _ = rec.cgroup.freeze(false);
            }
            return Ok(());
        }
        kill(Pid::from_raw(rec.public.pid), sig).ctx(|| format!("kill {} {sig}", rec.public.pid))
    }

    pub fn delete(&self, id: &str, force: bool) -> Result<()> {
        let sd = self.dir(id)?;
        let rec = match sd.load(id) {
            Err(Error::NotFound(_)) if force => return sd.remove(),
            r => r?,
        };
        match rec.public.status {
            Status::Stopped | Status::Created => {}
            _ if force => {}
            _ => {
                return Err(bad_state(
                    &rec,
                    "cannot delete a container that is not stopped; use --force",
                ))
            }
        }
        self.destroy(&sd, &rec)
    }

    /// `delete --force` of a container this process created and started.
    pub fn delete_started(&self, s: Started) -> Result<()> {
        let sd = self.dir(&s.record.public.id)?;
        self.destroy_as_now(&sd, s.record)
    }

    /// [`Runtime::delete_started`] that leaves the container's cgroup for the caller to
    /// remove later ([`Cgroup::destroy`]) and returns it — when the container is already
    /// stopped (its init reaped) and has no poststop hooks, which run after the cgroup
    /// goes; otherwise it deletes everything and returns `None`. Why: the cgroup's dozen
    /// rmdirs on a v1 host are ~0.2 ms of a foreground `run --rm`, after the container's
    /// exit and before the command's, and nothing in them is wanted any more.
    pub fn delete_started_but_cgroup(&self, s: Started) -> Result<Option<Cgroup>> {
        let sd = self.dir(&s.record.public.id)?;
        let mut rec = s.record;
        rec.public.status = sd.status_of(&rec);
        let poststop = poststop_hooks(&rec).is_some_and(|h| !h.is_empty());
        if rec.public.status != Status::Stopped || poststop {
            return self.destroy(&sd, &rec).map(|()| None);
        }
        sd.remove()?;
        Ok(Some(rec.cgroup))
    }

    /// [`Runtime::destroy`] of a record this process kept, with its status read from the
    /// kernel now, as `load` does, not as it was saved.
    fn destroy_as_now(&self, sd: &StateDir, mut rec: Record) -> Result<()> {
        rec.public.status = sd.status_of(&rec);
        self.destroy(sd, &rec)
    }

    /// Kills whatever is left, runs poststop hooks, removes the cgroup and the state.
    fn destroy(&self, sd: &StateDir, rec: &Record) -> Result<()> {
        if rec.public.status != Status::Stopped {
            if rec.public.status == Status::Paused {
                let _ = rec.cgroup.freeze(false);
            }
            // The init may be gone and reaped already (a foreground run's monitor reaps
            // it before deleting): a pid whose start time differs is someone else's.
            if rec.start_time == 0 || state::process_alive(rec.public.pid, rec.start_time) {
                let _ = kill(Pid::from_raw(rec.public.pid), Signal::SIGKILL);
            }
            for pid in rec.cgroup.pids().unwrap_or_default() {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            wait_gone(rec.public.pid, rec.start_time);
        }
        rec.cgroup.destroy()?;
        let mut public = rec.public.clone();
        public.status = Status::Stopped;
        let json = serde_json::to_vec(&public).unwrap_or_default();
        if let Some(h) = poststop_hooks(rec) {
            for hook in h {
                if let Err(e) = hooks::run(hook, &json) {
                    tracing::warn!("poststop {e}");
                }
            }
        }
        sd.remove()
    }

    pub fn pause(&self, id: &str) -> Result<()> {
        let rec = self.dir(id)?.load(id)?;
        if rec.public.status != Status::Running {
            return Err(bad_state(
                &rec,
                "cannot pause a container that is not running",
            ));
        }
        rec.cgroup.freeze(true)
    }

    pub fn resume(&self, id: &str) -> Result<()> {
        let rec = self.dir(id)?.load(id)?;
        if rec.public.status != Status::Paused {
            return Err(bad_state(
                &rec,
                "cannot resume a container that is not paused",
            ));
        }
        rec.cgroup.freeze(false)
    }

    pub fn pids(&self, id: &str) -> Result<Vec<i32>> {
        self.dir(id)?.load(id)?.cgroup.pids()
    }

    pub fn update(&self, id: &str, res: &LinuxResources) -> Result<()> {
        let rec = self.dir(id)?.load(id)?;
        if rec.public.status == Status::Stopped {
            return Err(bad_state(&rec, "cannot update a stopped container"));
        }
        rec.cgroup.apply(res)
    }

    /// The stored record, for `exec` and `berth` itself.
    pub fn record(&self, id: &str) -> Result<Record> {
        self.dir(id)?.load(id)
    }
}

pub(crate) struct Spawned {
    pub chan: Channel,
    pub pty_master: Option<OwnedFd>,
    /// What was saved as state.json.
    pub record: Record,
}

/// A container made by [`Runtime::create_held`], its init waiting for [`Held::start`].
pub struct Held {
    pid: i32,
    chan: Channel,
    record: Record,
}

/// The container's poststop hooks, which run once its cgroup is gone.
fn poststop_hooks(rec: &Record) -> Option<&Vec<oci_spec::runtime::Hook>> {
    rec.config.hooks().as_ref()?.poststop().as_ref()
}

/// A held container once started: [`Runtime::delete_started`] deletes it with the record
/// made at create instead of reading state.json back.
pub struct Started {
    record: Record,
}

impl Started {
    /// Whether the kernel's OOM killer struck in the container's cgroup.
    pub fn oom_killed(&self) -> bool {
        self.record.cgroup.oom_killed()
    }
}

impl Held {
    /// The container's init.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Lets the init go on to exec the program, then runs the poststart hooks. As with
    /// `start` through exec.fifo, what fails after this point (an exec format error) is
    /// the program's exit, told on its stderr, not an error of the start.
    pub fn start(self) -> Result<Started> {
        self.chan.send(Tag::Start, &[])?;
        poststart(&self.record);
        Ok(Started {
            record: self.record,
        })
    }
}

/// Runs the spec's poststart hooks, giving them the state as running.
fn poststart(rec: &Record) {
    let Some(hooks) = rec
        .config
        .hooks()
        .as_ref()
        .and_then(|h| h.poststart().as_ref())
    else {
        return;
    };
    let mut public = rec.public.clone();
    public.status = Status::Running;
    let json = serde_json::to_vec(&public).unwrap_or_default();
    for hook in hooks {
        if let Err(e) = hooks::run(hook, &json) {
            tracing::warn!("poststart {e}");
        }
    }
}

fn bad_state(rec: &Record, msg: &str) -> Error {
    Error::BadState {
        id: rec.public.id.clone(),
        status: rec.public.status.to_string(),
        msg: msg.into(),
    }
}

pub(crate) fn init_error(tag: Tag, msg: Vec<u8>) -> Error {
    let msg = String::from_utf8_lossy(&msg).into_owned();
    match tag {
        Tag::NotFound => Error::ExecNotFound(msg),
        Tag::NoPermission => Error::ExecPermission(msg),
        _ => Error::Init(msg),
    }
}

/// After Start: EOF on the channel means exec succeeded (init's end was close-on-exec).
pub(crate) fn wait_exec(chan: &Channel) -> Result<()> {
    match chan.recv()? {
        None => Ok(()),
        Some((tag, msg)) => Err(init_error(tag, msg)),
    }
}

fn warn_lsm(p: &oci_spec::runtime::Process) {
    if p.apparmor_profile().is_some() && !Path::new("/sys/kernel/security/apparmor").exists() {
        tracing::warn!("process.apparmorProfile ignored: AppArmor is not enabled on this host");
    }
    if p.selinux_label().is_some() && !Path::new("/sys/fs/selinux/enforce").exists() {
        tracing::warn!("process.selinuxLabel ignored: SELinux is not enabled on this host");
    }
}

fn make_fifo(path: &Path) -> Result<OwnedFd> {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o622))
        .ctx(|| format!("mkfifo {}", path.display()))?;
    let fd = nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ctx(|| format!("open {}", path.display()))?;
    // SAFETY: a fresh fd nobody else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// Opens the read end of exec.fifo, which lets the waiting init go on, and waits for its
/// byte. EOF instead means the init died before it could be started.
fn release_fifo(path: &Path) -> Result<()> {
    use nix::fcntl::OFlag;
    let fd = nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ctx(|| format!("open {}", path.display()))?;
    // SAFETY: a fresh fd nobody else owns.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 1];
    loop {
        match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
            Ok(1) => break,
            Ok(_) | Err(nix::errno::Errno::EAGAIN) if Instant::now() < deadline => {
                let mut pfd = [nix::poll::PollFd::new(
                    fd.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                let _ = nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(100u16));
            }
            Ok(_) => return Err(Error::Init("container init exited before start".into())),
            Err(e) => {
                return Err(Error::Sys {
                    context: "read exec fifo".into(),
                    err: e,
                })
            }
        }
    }
    std::fs::remove_file(path).ctx(|| format!("remove {}", path.display()))
}

/// The console socket to hand to the init: the caller's `--console-socket`, or for a
/// foreground `run` with a terminal, our own socketpair whose other end receives the pty.
fn console_for(
    terminal: bool,
    opts: &CreateOptions,
    mode: &Mode,
) -> Result<(Option<OwnedFd>, Option<OwnedFd>)> {
    if !terminal {
        return Ok((None, None));
    }
    if let Some(path) = &opts.console_socket {
        let s = std::os::unix::net::UnixStream::connect(path)
            .ctx(|| format!("console socket {}", path.display()))?;
        return Ok((Some(s.into()), None));
    }
    match mode {
        Mode::Run => {
            let (a, b) = std::os::unix::net::UnixStream::pair().ctx(|| "socketpair".into())?;
            Ok((Some(a.into()), Some(b.into())))
        }
        Mode::Create => Err(Error::config(
            "process.terminal",
            "a terminal needs --console-socket",
        )),
    }
}

fn write_id_maps(pid: i32, spec: &Spec) -> Result<()> {
    let linux = spec.linux().as_ref();
    let fmt = |maps: Option<&Vec<oci_spec::runtime::LinuxIdMapping>>| {
        maps.into_iter()
            .flatten()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect::<String>()
    };
    let uid = fmt(linux.and_then(|l| l.uid_mappings().as_ref()));
    let gid = fmt(linux.and_then(|l| l.gid_mappings().as_ref()));
    std::fs::write(format!("/proc/{pid}/uid_map"), &uid)
        .map_err(|e| Error::config("linux.uidMappings", e.to_string()))?;
    if !gid.is_empty() {
        std::fs::write(format!("/proc/{pid}/gid_map"), &gid)
            .map_err(|e| Error::config("linux.gidMappings", e.to_string()))?;
    }
    Ok(())
}

pub(crate) fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let tmp = path.with_extension("tmp-berth");
    let mut f = std::fs::File::create(&tmp).ctx(|| format!("pid file {}", tmp.display()))?;
    f.write_all(pid.to_string().as_bytes())
        .ctx(|| format!("pid file {}", tmp.display()))?;
    std::fs::rename(&tmp, path).ctx(|| format!("pid file {}", path.display()))
}

fn wait_gone(pid: i32, start_time: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while state::process_alive(pid, start_time) && Instant::now() < deadline {
        // Reap it if it is ours (a foreground run); otherwise its parent will.
        let _ = nix::sys::wait::waitpid(
            Pid::from_raw(pid),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits for our child and returns its exit code the shell way (128+signal).
pub(crate) fn wait_exit(pid: i32) -> i32 {
    use nix::sys::wait::{waitpid, WaitStatus};
    loop {
        match waitpid(Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return 255,
        }
    }
}

static FORWARD_TO: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = FORWARD_TO.load(std::sync::atomic::Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// A foreground `run` passes the signals a terminal or supervisor sends on to the container.
pub(crate) fn forward_signals(pid: i32) {
    FORWARD_TO.store(pid, std::sync::atomic::Ordering::Relaxed);
    for sig in [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
    ] {
        // SAFETY: installing a handler that only calls kill.
        unsafe {
            libc::signal(
                sig,
                forward as extern "C" fn(libc::c_int) as libc::sighandler_t,
            )
        };
    }
}

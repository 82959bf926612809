//! The container's init: the child of clone3, already inside its new namespaces. It builds
//! the root filesystem, waits to be started, then becomes the user's program. Errors go
//! back to the runtime over the sync channel as one line, and the process exits.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};

use crate::cgroups::Cgroup;
use crate::channel::{Channel, Tag};
use crate::error::{Context, Error, Result};
use crate::{caps, console, devices, hooks, mounts, namespaces, seccomp};

/// Everything the init needs, handed over in memory by the fork.
pub struct InitConfig<'a> {
    pub id: &'a str,
    pub spec: &'a Spec,
    pub rootfs: &'a Path,
    pub cgroup: &'a Cgroup,
    pub chan: Channel,
    /// O_PATH fd of exec.fifo for `create`; None for `run`, which starts over the channel.
    pub fifo: Option<OwnedFd>,
    pub console: Option<OwnedFd>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub preserve_fds: i32,
    pub new_ns: u64,
    pub runtime_hooks: bool,
    pub seccomp: Option<seccomp::Filter>,
    pub seccomp_listener: Option<OwnedFd>,
    /// The cgroup namespace is made after the runtime moved us into our cgroup (v1 has no
    /// CLONE_INTO_CGROUP), so that its root is the container's cgroup, not the caller's.
    pub unshare_cgroupns: bool,
    /// Move ourselves into the v1 hierarchies first thing (`Cgroup::join_v1_self`).
    pub join_v1: bool,
}

/// Runs the init and never returns.
pub fn run(cfg: InitConfig<'_>) -> ! {
    match setup(&cfg) {
        Ok(never) => match never {},
        Err(e) => fail(&cfg.chan, e),
    }
}

/// Reports why a child of the runtime (the init, or an exec'd process) could not become
/// its program, and exits with the shell's codes: 127 not found, 126 not executable.
pub fn fail(chan: &Channel, err: Error) -> ! {
    let (tag, msg, code) = match err {
        Error::ExecNotFound(name) => (Tag::NotFound, name, 127),
        Error::ExecPermission(name) => (Tag::NoPermission, name, 126),
        e @ Error::ExecFailed { .. } => {
            // After start nobody reads the channel: the message goes where the
            // container's output goes, and 255 is runc's code for it.
            let line = format!("{e}\n");
            // SAFETY: a write of a buffer we own to fd 2.
            unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
            (Tag::Error, e.to_string(), 255)
        }
        e => (Tag::Error, e.to_string(), 1),
    };
    let _ = chan.send(tag, msg.as_bytes());
    // SAFETY: _exit skips atexit handlers and destructors that belong to the parent's copy.
    unsafe { libc::_exit(code) }
}

pub enum Never {}

/// Next message of kind `want`, noting a `Joined` that arrives first.
fn recv_expect(cfg: &InitConfig<'_>, joined: &std::cell::Cell<bool>, want: Tag) -> Result<Vec<u8>> {
    loop {
        match cfg.chan.recv()? {
            Some((Tag::Joined, _)) if want != Tag::Joined => joined.set(true),
            Some((tag, payload)) if tag == want => return Ok(payload),
            Some((tag, _)) => {
                return Err(Error::Init(format!("sync: expected {want:?}, got {tag:?}")))
            }
            None => {
                return Err(Error::Init(format!(
                    "runtime went away while the init waited for {want:?}"
                )))
            }
        }
    }
}

fn wait_joined(cfg: &InitConfig<'_>, joined: &std::cell::Cell<bool>) -> Result<()> {
    if !joined.get() {
        recv_expect(cfg, joined, Tag::Joined)?;
        joined.set(true);
    }
    Ok(())
}

fn setup(cfg: &InitConfig<'_>) -> Result<Never> {
    if cfg.join_v1 {
        cfg.cgroup.join_v1_self()?;
    }
    let state_json = match cfg.chan.recv()? {
        Some((Tag::Go, payload)) => payload,
        _ => {
            return Err(Error::Init(
                "runtime went away before the container was set up".into(),
            ))
        }
    };
    let spec = cfg.spec;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::config("process", "missing"))?;
    if cfg.new_ns & LinuxNamespaceType::User as u64 != 0 {
        // Become root of the new user namespace so files we create belong to it.
        let _ = nix::unistd::setresgid(0.into(), 0.into(), 0.into());
        let _ = nix::unistd::setresuid(0.into(), 0.into(), 0.into());
    }
    let joined = std::cell::Cell::new(false);
    let cgroupns_done = std::cell::Cell::new(!cfg.unshare_cgroupns);
    // The namespace's root is the cgroup we are in when we unshare it, so this waits for
    // `Joined` — as late as possible (before the first cgroup mount), letting the mounts
    // before it overlap the runtime's cgroup.procs writes.
    let mut enter_cgroupns = || -> Result<()> {
        if !cgroupns_done.get() {
            wait_joined(cfg, &joined)?;
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
                .ctx(|| "unshare cgroup namespace".into())?;
            cgroupns_done.set(true);
        }
        Ok(())
    };
    namespaces::join_paths(spec)?;
    if !cfg.no_new_keyring {
        join_session_keyring(cfg.id);
    }
    let new_mnt = cfg.new_ns & LinuxNamespaceType::Mount as u64 != 0;
    if new_mnt {
        let cgroupns = cfg.new_ns & LinuxNamespaceType::Cgroup as u64 != 0;
        tracing::debug!("init: mounts");
        mounts::prepare_rootfs(spec, cfg.rootfs, cfg.cgroup, cgroupns, &mut enter_cgroupns)?;
        tracing::debug!("init: devices");
        if !dev_is_bind_mounted(spec) {
            let in_userns = namespaces::has(spec, LinuxNamespaceType::User);
            let devs = spec
                .linux()
                .as_ref()
                .and_then(|l| l.devices().clone())
                .unwrap_or_default();
            devices::setup_dev(cfg.rootfs, &devs, in_userns)?;
        }
        devices::link_ptmx(cfg.rootfs)?;
    }
    enter_cgroupns()?;
    if cfg.runtime_hooks {
        wait_joined(cfg, &joined)?;
        cfg.chan.send(Tag::RuntimeHooks, &[])?;
        recv_expect(cfg, &joined, Tag::Continue)?;
    }
    if let Some(h) = spec
        .hooks()
        .as_ref()
        .and_then(|h| h.create_container().as_ref())
    {
        hooks::run_all(h, &state_json)?;
    }
    if new_mnt {
        if cfg.no_pivot {
            mounts::move_root(cfg.rootfs)?;
        } else {
            mounts::pivot(cfg.rootfs)?;
        }
    }
    tracing::debug!("init: pivoted");
    set_names(spec, cfg.new_ns)?;
    write_sysctls(spec)?;
    if new_mnt {
        mounts::finish_rootfs(spec)?;
    }
    if process.terminal().unwrap_or(false) {
        let sock = cfg
            .console
            .as_ref()
            .ok_or_else(|| Error::config("process.terminal", "needs --console-socket"))?;
        let size = process
            .console_size()
            .map(|b| (b.height() as u16, b.width() as u16));
        console::setup(sock.as_fd(), size, new_mnt)?;
    }
    apply_process_limits(process)?;
    set_personality(spec)?;
    let program = resolve_program(process)?;
    tracing::debug!("init: set up");
    wait_joined(cfg, &joined)?;
    cfg.chan.send(Tag::Ready, &[])?;
    wait_for_start(cfg, &joined)?;
    if let Some(h) = spec
        .hooks()
        .as_ref()
        .and_then(|h| h.start_container().as_ref())
    {
        hooks::run_all(h, &state_json)?;
    }
    let filter = cfg.seccomp.as_ref().map(|f| Seccomp {
        filter: f,
        listener: cfg.seccomp_listener.as_ref(),
        state: &state_json,
    });
    let as_init = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(crate::reaper::INIT_ANNOTATION))
        .is_some_and(|v| v == "true");
    let r = become_process(process, &program, filter, cfg.preserve_fds, as_init);
    if let Err(e) = &r {
        // After start nobody reads the channel: say what failed where the container's
        // output goes (an exec failure already does, a missing program was caught before).
        if !matches!(
            e,
            Error::ExecNotFound(_) | Error::ExecPermission(_) | Error::ExecFailed { .. }
        ) {
            let line = format!("container init: {e}\n");
            // SAFETY: a write of a buffer we own to fd 2.
            unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
        }
    }
    r
}

fn dev_is_bind_mounted(spec: &Spec) -> bool {
    spec.mounts().iter().flatten().any(|m| {
        m.destination() == Path::new("/dev")
            && (m.typ().as_deref() == Some("bind")
                || m.options()
                    .iter()
                    .flatten()
                    .any(|o| o == "bind" || o == "rbind"))
    })
}

fn join_session_keyring(id: &str) {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    if let Ok(name) = CString::new(format!("_ses.{id}")) {
        // SAFETY: keyctl reads a NUL-terminated name. Failure (ENOSYS, EDQUOT) only means
        // the container shares the caller's keyring, which runc also tolerates.
        unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr()) };
    }
}

fn set_names(spec: &Spec, new_ns: u64) -> Result<()> {
    let uts = new_ns & LinuxNamespaceType::Uts as u64 != 0
        || namespaces::has(spec, LinuxNamespaceType::Uts);
    if let Some(h) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        if !uts {
            return Err(Error::config(
                "hostname",
                "setting the hostname needs a uts namespace",
            ));
        }
        nix::unistd::sethostname(h).ctx(|| "sethostname".into())?;
    }
    if let Some(d) = spec.domainname().as_deref().filter(|d| !d.is_empty()) {
        if !uts {
            return Err(Error::config(
                "domainname",
                "setting the domainname needs a uts namespace",
            ));
        }
        // SAFETY: setdomainname reads len bytes from the slice.
        if unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) } != 0 {
            return Err(Error::Io {
                context: "setdomainname".into(),
                err: std::io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}

fn write_sysctls(spec: &Spec) -> Result<()> {
    for (k, v) in spec
        .linux()
        .as_ref()
        .and_then(|l| l.sysctl().as_ref())
        .into_iter()
        .flatten()
    {
        if k.is_empty() || k.contains("..") || k.contains('/') {
            return Err(Error::config(format!("linux.sysctl[{k}]"), "invalid key"));
        }
        let path = PathBuf::from("/proc/sys").join(k.replace('.', "/"));
        std::fs::write(&path, v)
            .map_err(|e| Error::config(format!("linux.sysctl[{k}]"), e.to_string()))?;
    }
    Ok(())
}

pub fn apply_process_limits(p: &Process) -> Result<()> {
    if let Some(adj) = p.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| Error::config("process.oomScoreAdj", e.to_string()))?;
    }
    for rl in p.rlimits().iter().flatten() {
        let lim = libc::rlimit {
            rlim_cur: rl.soft(),
            rlim_max: rl.hard(),
        };
        let res = crate::config::rlimit_resource(rl.typ());
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(res as _, &lim) } != 0 {
            let field = format!("process.rlimits[{}]", crate::config::rlimit_name(rl.typ()));
            return Err(Error::config(
                field,
                std::io::Error::last_os_error().to_string(),
            ));
        }
    }
    if let Some(io) = p.io_priority() {
        let class = match serde_json::to_value(io.class())
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .as_deref()
        {
            Some("IOPRIO_CLASS_RT") => 1,
            Some("IOPRIO_CLASS_IDLE") => 3,
            _ => 2,
        };
        let prio = (class << 13) | (io.priority() & 0x1fff);
        // SAFETY: ioprio_set(IOPRIO_WHO_PROCESS, self, prio) takes integers.
        if unsafe { libc::syscall(libc::SYS_ioprio_set, 1, 0, prio) } != 0 {
            return Err(Error::config(
                "process.ioPriority",
                std::io::Error::last_os_error().to_string(),
            ));
        }
    }
    if let Some(s) = p.scheduler() {
        if let Some(nice) = s.nice() {
            // SAFETY: setpriority takes integers.
            if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, *nice) } != 0 {
                return Err(Error::config(
                    "process.scheduler.nice",
                    std::io::Error::last_os_error().to_string(),
                ));
            }
        }
        let policy = match serde_json::to_value(s.policy())
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .as_deref()
        {
            Some("SCHED_FIFO") => libc::SCHED_FIFO,
            Some("SCHED_RR") => libc::SCHED_RR,
            Some("SCHED_BATCH") => libc::SCHED_BATCH,
            Some("SCHED_IDLE") => libc::SCHED_IDLE,
            Some("SCHED_OTHER") | None => libc::SCHED_OTHER,
            Some(other) => {
                return Err(Error::Unsupported(format!(
                    "process.scheduler.policy: {other} is not supported"
                )))
            }
        };
        // SAFETY: sched_param is plain integers (musl's has more fields than glibc's).
        let mut param: libc::sched_param = unsafe { std::mem::zeroed() };
        param.sched_priority = s.priority().unwrap_or(0);
        // SAFETY: sched_setscheduler reads the param we own.
        if unsafe { libc::sched_setscheduler(0, policy, &param) } != 0 {
            return Err(Error::config(
                "process.scheduler",
                std::io::Error::last_os_error().to_string(),
            ));
        }
    }
    Ok(())
}

fn set_personality(spec: &Spec) -> Result<()> {
    let Some(p) = spec.linux().as_ref().and_then(|l| l.personality().as_ref()) else {
        return Ok(());
    };
    let domain = serde_json::to_value(p.domain())
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let persona = match domain.as_str() {
        "LINUX" => 0,
        "LINUX32" => 0x0008,
        other => {
            return Err(Error::config(
                "linux.personality.domain",
                format!("unknown domain {other}"),
            ))
        }
    };
    // SAFETY: personality takes an integer.
    unsafe { libc::personality(persona) };
    Ok(())
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn env_value<'a>(p: &'a Process, key: &str) -> Option<&'a str> {
    p.env()
        .iter()
        .flatten()
        .find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// Finds args[0] the way execvp would, so a missing program fails `create` (exit 127 for
/// `run`) instead of a container that dies at `start`.
pub fn resolve_program(p: &Process) -> Result<PathBuf> {
    let arg0 = p
        .args()
        .as_ref()
        .and_then(|a| a.first())
        .ok_or_else(|| Error::config("process.args", "must not be empty"))?;
    if arg0.contains('/') {
        let path = if Path::new(arg0).is_absolute() {
            PathBuf::from(arg0)
        } else {
            p.cwd().join(arg0)
        };
        return check_executable(&path, arg0);
    }
    let search = env_value(p, "PATH").unwrap_or(DEFAULT_PATH);
    let mut denied = false;
    for dir in search.split(':').filter(|d| !d.is_empty()) {
        let cand = Path::new(dir).join(arg0);
        match check_executable(&cand, arg0) {
            Ok(p) => return Ok(p),
            Err(Error::ExecPermission(_)) => denied = true,
            Err(_) => {}
        }
    }
    Err(if denied {
        Error::ExecPermission(arg0.clone())
    } else {
        Error::ExecNotFound(arg0.clone())
    })
}

fn check_executable(path: &Path, name: &str) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(md) if md.is_file() && md.permissions().mode() & 0o111 != 0 => Ok(path.to_path_buf()),
        Ok(_) => Err(Error::ExecPermission(name.into())),
        Err(_) => Err(Error::ExecNotFound(name.into())),
    }
}

fn wait_for_start(cfg: &InitConfig<'_>, joined: &std::cell::Cell<bool>) -> Result<()> {
    match &cfg.fifo {
        Some(fifo) => {
            // Opening for write blocks until `start` opens the other end.
            let path = format!("/proc/self/fd/{}", fifo.as_raw_fd());
            let fd = nix::fcntl::open(
                path.as_str(),
                nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .ctx(|| "open exec fifo".into())?;
            nix::unistd::write(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }, b"0")
                .ctx(|| "write exec fifo".into())?;
            let _ = nix::unistd::close(fd);
            Ok(())
        }
        None => recv_expect(cfg, joined, Tag::Start).map(|_| ()),
    }
}

/// What `become_process` needs to install a seccomp filter.
pub struct Seccomp<'a> {
    pub filter: &'a seccomp::Filter,
    pub listener: Option<&'a OwnedFd>,
    pub state: &'a [u8],
}

impl Seccomp<'_> {
    fn install(&self) -> Result<()> {
        seccomp::install(self.filter, self.listener, self.state)
    }
}

/// Drops to the process's user and capabilities, applies seccomp, and execs. Shared by
/// the container's init and by `exec`. With `as_init`, a reaping PID 1 stays behind
/// (see [`crate::reaper`]), holding the same user, capabilities and filter.
pub fn become_process(
    p: &Process,
    program: &Path,
    filter: Option<Seccomp<'_>>,
    preserve_fds: i32,
    as_init: bool,
) -> Result<Never> {
    mark_fds_cloexec(3 + preserve_fds);
    let nnp = p.no_new_privileges().unwrap_or(false);
    if let (Some(f), false) = (&filter, nnp) {
        // Without no_new_privs the filter needs CAP_SYS_ADMIN, which we still hold.
        f.install()?;
    }
    let sets = p.capabilities().as_ref().map(caps::Sets::from_spec);
    if let Some(s) = &sets {
        caps::drop_bounding(s.bounding)?;
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    }
    set_user(p)?;
    if let Some(s) = &sets {
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
        caps::set(s)?;
    }
    if let Some(mask) = p.user().umask() {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    if nnp {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(Error::Io {
                context: "no_new_privs".into(),
                err: std::io::Error::last_os_error(),
            });
        }
    }
    nix::unistd::chdir(p.cwd())
        .map_err(|e| Error::config("process.cwd", format!("{}: {e}", p.cwd().display())))?;
    if let (Some(f), true) = (&filter, nnp) {
        f.install()?;
    }
    if as_init {
        crate::reaper::fork_reaper()?;
    }
    exec(p, program)
}

fn set_user(p: &Process) -> Result<()> {
    let u = p.user();
    let groups: Vec<nix::unistd::Gid> = u
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| (*g).into())
        .collect();
    let setgroups_allowed = std::fs::read_to_string("/proc/self/setgroups")
        .map(|s| s.trim() != "deny")
        .unwrap_or(true);
    if setgroups_allowed {
        nix::unistd::setgroups(&groups).ctx(|| "setgroups".into())?;
    }
    let gid = u.gid().into();
    nix::unistd::setresgid(gid, gid, gid)
        .map_err(|e| Error::config("process.user.gid", format!("{}: {e}", u.gid())))?;
    let uid = u.uid().into();
    nix::unistd::setresuid(uid, uid, uid)
        .map_err(|e| Error::config("process.user.uid", format!("{}: {e}", u.uid())))?;
    Ok(())
}

fn mark_fds_cloexec(from: i32) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect();
    for fd in fds.into_iter().filter(|fd| *fd >= from) {
        // SAFETY: setting a flag on an fd number; a stale number (the dir fd) just fails.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

fn exec(p: &Process, program: &Path) -> Result<Never> {
    let to_c = |s: &str| {
        CString::new(s).map_err(|_| Error::config("process", format!("NUL byte in {s:?}")))
    };
    let args: Vec<CString> = p
        .args()
        .iter()
        .flatten()
        .map(|a| to_c(a))
        .collect::<Result<_>>()?;
    let mut env: Vec<CString> = p
        .env()
        .iter()
        .flatten()
        .map(|e| to_c(e))
        .collect::<Result<_>>()?;
    if env_value(p, "HOME").is_none() {
        env.push(to_c(&format!("HOME={}", home_of(p.user().uid())))?);
    }
    let path = to_c(&program.to_string_lossy())?;
    let err = nix::unistd::execve(&path, &args, &env).unwrap_err();
    let name = p
        .args()
        .as_ref()
        .and_then(|a| a.first())
        .cloned()
        .unwrap_or_default();
    Err(match err {
        nix::errno::Errno::ENOENT => Error::ExecNotFound(name),
        nix::errno::Errno::EACCES | nix::errno::Errno::EPERM => Error::ExecPermission(name),
        e => Error::ExecFailed {
            program: program.display().to_string(),
            reason: go_style(e.desc()),
        },
    })
}

/// An errno's text as Go (and so runc) prints it: "exec format error", not "Exec format
/// error".
fn go_style(desc: &str) -> String {
    let mut c = desc.chars();
    c.next()
        .map(|f| f.to_lowercase().chain(c).collect())
        .unwrap_or_default()
}

/// runc sets HOME from the container's /etc/passwd when the spec does not.
fn home_of(uid: u32) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 5 && f[2].parse::<u32>().ok() == Some(uid))
        .map(|f| f[5].to_string())
        .unwrap_or_else(|| "/".into())
}

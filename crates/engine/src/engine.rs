//! The engine's operations on container records: create, start (in-process or through a
//! detached monitor), stop, kill, remove, exec and the queries behind ps/inspect.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_runtime::state::{now_rfc3339, proc_stat, process_alive};
use berth_runtime::{CreateOptions, Held, Runtime};
use nix::sys::signal::Signal;
use serde_json::Value;

use crate::db::Db;
use crate::record::{Container, HealthConfig, ImageInfo, MountSpec, RunConfig, State, Status};
use crate::{net, spec, volumes, Error, IoContext, Result};

/// The engine: the state DB, the runtime and the on-disk layout under one root.
pub struct Engine {
    pub root: PathBuf,
    pub db: Db,
    runtime: Runtime,
    /// Built on first use: a start needs it three times (prepare, mount, teardown).
    snapshotter: std::cell::OnceCell<berth_image::Snapshotter>,
    /// The window size a new pty gets, when not our stdin's terminal's (a monitor
    /// starting `run -it` for a client on a terminal it does not have).
    pub tty_size: Option<(u16, u16)>,
    /// Containers this process started, by id: deleting one needs no state read back.
    started: HashMap<String, berth_runtime::Started>,
    /// The records this process wrote when it launched them, for their removal after
    /// they exit in the foreground (`discard_exited`) without reading them back.
    launched: HashMap<String, Container>,
    /// A purger forked ahead for a foreground `run --rm` (`crate::purge`): the
    /// container's directory is deleted by it.
    purger: Option<crate::purge::Purger>,
}

/// An `exec` into a running container: what differs from its own process.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    pub args: Vec<String>,
    /// `KEY=VALUE`, over the container's own.
    pub env: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub tty: bool,
    /// Every capability, as `docker exec --privileged`.
    pub privileged: bool,
}

/// What `create` is asked beyond the flags in `RunConfig`.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    pub name: Option<String>,
    /// `--entrypoint` (one string; empty clears the image's).
    pub entrypoint: Option<String>,
    /// Arguments after the image name.
    pub cmd: Vec<String>,
    pub no_healthcheck: bool,
    /// `--health-*` flags; zero fields take the image's values.
    pub health: HealthConfig,
    /// `--expose`.
    pub expose: Vec<String>,
    /// `--volumes-from NAME[:ro|:rw]`.
    pub volumes_from: Vec<String>,
}

/// A container process this process started and now monitors.
pub struct Launched {
    pub pid: i32,
    pub pidfd: OwnedFd,
    /// stdout, or the pty master with `-t`.
    pub out: OwnedFd,
    pub err: Option<OwnedFd>,
    /// The write end of the container's stdin (`-i` without `-t`).
    pub stdin: Option<OwnedFd>,
    pub tty: bool,
}

/// Maps an engine error to Docker's CLI exit codes.
pub fn exit_code_for(e: &Error) -> i32 {
    match e {
        Error::Runtime(berth_runtime::Error::ExecNotFound(_)) => 127,
        Error::Runtime(berth_runtime::Error::ExecPermission(_)) => 126,
        Error::Start { code, .. } => *code,
        _ => 125,
    }
}

/// The running kernel's boot id: pids from another boot mean nothing.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn env_key(e: &str) -> &str {
    e.split('=').next().unwrap_or(e)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Docker's signal names: `SIGTERM`, `TERM` or a number.
pub fn parse_signal(s: &str) -> Result<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| Error::Invalid(format!("invalid signal: {s}")));
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse()
        .map_err(|_| Error::Invalid(format!("invalid signal: {s}")))
}

/// When a removed container's directory is deleted.
#[derive(Debug, Clone, Copy)]
enum Purge {
    /// Before the removal returns.
    Now,
    /// By the purger forked ahead, if there is one (`crate::purge`), while the caller
    /// goes on.
    Detached,
}

/// Emptied container directories kept for the next create (`Snapshotter::with_spares`).
const SPARE_DIRS: usize = 16;

/// Unmounts container `c`'s rootfs and moves its directory `dir` (snapshot, bundle, logs)
/// to the snapshotter's trash, for the caller to purge; deletes it when it holds no
/// snapshot.
fn retire_container_files(
    dir: &Path,
    c: &Container,
    snapshotter: &berth_image::Snapshotter,
) -> Result<Option<berth_image::Retired>> {
    unmount_container(dir, c);
    tracing::debug!("teardown: unmounted");
    match snapshotter.retire(&c.id) {
        Ok(r) => return Ok(Some(r)),
        Err(berth_image::SnapshotError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).ctx(|| format!("remove {}", dir.display()))
        }
        _ => Ok(None),
    }
}

/// Renames the log a reused directory kept from its last container (emptied, see
/// berth-image's `spare.rs`) to `log`, so creating it writes that inode again instead of
/// making one.
fn take_kept_log(dir: &Path, log: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let kept = entries
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_str().is_some_and(|s| s.ends_with("-json.log")) && p != log);
    if let Some(kept) = kept {
        let _ = std::fs::rename(kept, log);
    }
}

fn umount(path: &Path) {
    let _ = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH);
}

/// Unmounts what the engine mounted for container `c` in its directory `dir`: the
/// rootfs and, for `--ipc shareable`, the /dev/shm other containers may join.
fn unmount_container(dir: &Path, c: &Container) {
    umount(&dir.join("rootfs"));
    if c.config.ipc_mode == "shareable" {
        umount(&dir.join(SHM));
    }
}

/// Mounts the host-side tmpfs that is a shareable container's /dev/shm, unless it is.
fn mount_shareable_shm(shm: &Path, size: i64) -> Result<()> {
    if is_mountpoint(shm) {
        return Ok(());
    }
    std::fs::create_dir_all(shm).ctx(|| format!("create {}", shm.display()))?;
    nix::mount::mount(
        Some("shm"),
        shm,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        Some(format!("mode=1777,size={size}").as_str()),
    )
    .map_err(|e| Error::Invalid(format!("mount {}: {e}", shm.display())))
}

/// The host-side /dev/shm of a container with `--ipc shareable`, in its directory.
const SHM: &str = "shm";

pub(crate) fn is_mountpoint(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    if let Some(root) = statx_mount_root(path) {
        return root;
    }
    let (Ok(a), Some(parent)) = (std::fs::metadata(path), path.parent()) else {
        return false;
    };
    std::fs::metadata(parent).is_ok_and(|b| a.dev() != b.dev())
        || std::fs::read_to_string("/proc/self/mountinfo")
            .is_ok_and(|m| m.lines().any(|l| l.split(' ').nth(4) == path.to_str()))
}

/// Whether `path` is the root of a mount, from statx's STATX_ATTR_MOUNT_ROOT (Linux
/// 5.8+): one call where the fallback reads the whole mount table. `None` when the
/// kernel does not say (or `path` cannot be looked up), so the caller falls back.
fn statx_mount_root(path: &Path) -> Option<bool> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: `c` is a NUL-terminated path and `st` a buffer the size statx writes.
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            0,
            st.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: statx succeeded and filled the struct.
    let st = unsafe { st.assume_init() };
    let bit = libc::STATX_ATTR_MOUNT_ROOT as u64;
    (st.stx_attributes_mask & bit != 0).then_some(st.stx_attributes & bit != 0)
}

fn pidfd_open(pid: i32) -> Result<OwnedFd> {
    rustix::process::Pid::from_raw(pid)
        .ok_or(rustix::io::Errno::SRCH)
        .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()))
        .map_err(std::io::Error::from)
        .ctx(|| format!("pidfd_open {pid}"))
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ctx(|| "pipe".into())
}

/// Puts `fds` on 0, 1, 2 for the duration of `f` (the runtime's init inherits them).
fn with_stdio<T>(fds: [RawFd; 3], f: impl FnOnce() -> T) -> Result<T> {
    let saved: Vec<OwnedFd> = (0..3)
        .map(|i| {
            nix::fcntl::fcntl(i, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10))
                // SAFETY: F_DUPFD_CLOEXEC returned a new fd that we own.
                .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
                .ctx(|| format!("save fd {i}"))
        })
        .collect::<Result<_>>()?;
    for (i, fd) in fds.iter().enumerate() {
        nix::unistd::dup2(*fd, i as RawFd).ctx(|| format!("dup2 onto fd {i}"))?;
    }
    let out = f();
    for (i, fd) in saved.iter().enumerate() {
        let _ = nix::unistd::dup2(fd.as_raw_fd(), i as RawFd);
    }
    Ok(out)
}

impl Engine {
    pub fn open(root: &Path) -> Result<Engine> {
        std::fs::create_dir_all(root).ctx(|| format!("create {}", root.display()))?;
        Ok(Engine::with_db(root, Db::open(&root.join("berth.db"))?))
    }

    /// [`Engine::open`] going on with the image store's database connection (one schema
    /// parse fewer on `run`'s path, which looks the image up first).
    pub fn open_sharing(root: &Path, meta: berth_image::meta::MetaStore) -> Result<Engine> {
        Ok(Engine::with_db(root, Db::on(meta.into_connection())?))
    }

    fn with_db(root: &Path, db: Db) -> Engine {
        Engine {
            root: root.to_path_buf(),
            db,
            runtime: Runtime::new(root.join("run").join("runtime")),
            snapshotter: std::cell::OnceCell::new(),
            tty_size: None,
            started: HashMap::new(),
            launched: HashMap::new(),
            purger: None,
        }
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }

    pub fn log_path(&self, id: &str) -> PathBuf {
        self.dir(id).join(format!("{id}-json.log"))
    }

    /// Container snapshots, with the image's mount-point layer (the hosts, hostname and
    /// resolv.conf stubs every container binds over). Layers are only read here, so the
    /// layer store's sweep of crashed pulls is left to the commands that write layers.
    pub(crate) fn snapshotter(&self) -> Result<berth_image::Snapshotter> {
        if let Some(s) = self.snapshotter.get() {
            return Ok(s.clone());
        }
        let layers = berth_image::layer::LayerStore::at(self.root.join("layers"));
        let s = berth_image::Snapshotter::new(
            self.root.join("containers"),
            layers,
            berth_image::SnapshotMode::Auto,
        )?
        .with_mount_points(true)
        .with_spares(SPARE_DIRS);
        Ok(self.snapshotter.get_or_init(|| s).clone())
    }

    /// The overlay upper directory holding what the container changed (for `commit`).
    pub fn upper_dir(&self, id: &str) -> Result<PathBuf> {
        Ok(self.snapshotter()?.upper_dir(id)?)
    }

    /// A container by id, name or id prefix; a stale "running" record is repaired first.
    pub fn find(&mut self, key: &str) -> Result<Container> {
        let c = self.db.find(key)?;
        self.refresh(c)
    }

    /// All containers, newest first, stale records repaired.
    pub fn list(&mut self) -> Result<Vec<Container>> {
        let all = self.db.list()?;
        all.into_iter().map(|c| self.refresh(c)).collect()
    }

    fn monitor_alive(s: &State) -> bool {
        s.monitor_pid > 0 && s.boot() == boot_id() && process_alive(s.monitor_pid, monitor_start(s))
    }

    fn refresh(&mut self, c: Container) -> Result<Container> {
        if !c.state.status.is_active() || Self::monitor_alive(&c.state) {
            return Ok(c);
        }
        tracing::debug!("{}: monitor gone; marking exited", c.id);
        self.delete_runtime(&c.id);
        unmount_container(&self.dir(&c.id), &c);
        let _ = net::release(&self.root, &c);
        self.db.update(&c.id, |c| {
            if c.state.status.is_active() && !Self::monitor_alive(&c.state) {
                c.state.status = Status::Exited;
                c.state.pid = 0;
                c.state.monitor_pid = 0;
                if c.state.finished_at.is_empty() {
                    c.state.finished_at = now_rfc3339();
                }
            }
        })
    }

    /// Creates the record, the rootfs snapshot and the container's files; starts nothing.
    pub fn create(
        &mut self,
        image: &ImageInfo,
        req: &CreateRequest,
        mut cfg: RunConfig,
    ) -> Result<Container> {
        let id = crate::names::new_id();
        self.add_volumes_from(&mut cfg, &req.volumes_from)?;
        merge_image(&mut cfg, image, req)?;
        if cfg.hostname.is_empty() {
            cfg.hostname = id[..12].to_string();
        }
        cfg.chain_ids = image.chain_ids.clone();
        if cfg.args.is_empty() {
            return Err(Error::Invalid("no command specified".into()));
        }
        // Refused at create as Docker does, not at start by the runtime's spec check.
        if !cfg.workdir.is_empty() && !cfg.workdir.starts_with('/') {
            return Err(Error::Invalid(format!(
                "the working directory '{}' is invalid, it needs to be an absolute path",
                cfg.workdir
            )));
        }
        for m in cfg
            .mounts
            .iter_mut()
            .filter(|m| m.kind == "volume" && m.source.is_empty())
        {
            m.source = crate::names::new_id();
            m.anonymous = true;
        }
        let mut c = Container {
            id: id.clone(),
            name: String::new(),
            image: image.name.clone(),
            image_id: image.id.clone(),
            created: now_rfc3339(),
            config: cfg,
            state: State::default(),
        };
        net::check(&c)?;
        match &req.name {
            Some(n) => {
                if !crate::names::valid_name(n) {
                    return Err(Error::Invalid(format!(
                        "Invalid container name ({n}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
                    )));
                }
                c.name = n.clone();
                self.db.insert(&c)?;
            }
            None => loop {
                c.name = crate::names::random_name();
                match self.db.insert(&c) {
                    Err(Error::NameInUse { .. }) => {
                        c.name = format!(
                            "{}{}",
                            crate::names::random_name(),
                            crate::names::random_bytes(1)[0] % 10
                        );
                        continue;
                    }
                    r => break r?,
                }
            },
        }
        tracing::debug!("create: recorded");
        if let Err(e) = self.prepare_files(&c) {
            let _ = self.teardown(&c, true);
            return Err(e);
        }
        self.event(&c, "create", &[]);
        Ok(c)
    }

    /// `--volumes-from`: the volumes and binds of other containers at the same places,
    /// read-only with `:ro`, as they are with `:rw` or nothing; a mount of the new
    /// container's own at the same destination wins. They stay the other container's:
    /// `rm -v` of this one leaves them.
    fn add_volumes_from(&mut self, cfg: &mut RunConfig, from: &[String]) -> Result<()> {
        for spec in from {
            let (key, mode) = match spec.rsplit_once(':') {
                Some((k, m)) if m == "ro" || m == "rw" => (k, Some(m == "ro")),
                Some((_, m)) => {
                    return Err(Error::Invalid(format!(
                        "invalid mode for volumes-from: {m}"
                    )))
                }
                None => (spec.as_str(), None),
            };
            let other = self.db.find(key)?;
            for m in other.config.mounts.iter().filter(|m| m.kind != "tmpfs") {
                if cfg.mounts.iter().any(|x| x.destination == m.destination) {
                    continue;
                }
                let mut copy = m.clone();
                copy.anonymous = false;
                if let Some(ro) = mode {
                    copy.read_only = ro;
                }
                cfg.mounts.push(copy);
            }
        }
        Ok(())
    }

    fn prepare_files(&mut self, c: &Container) -> Result<()> {
        let chain: Vec<berth_image::Digest> = c
            .config
            .chain_ids
            .iter()
            .map(|s| {
                s.parse()
                    .map_err(|e| Error::Invalid(format!("layer {s}: {e}")))
            })
            .collect::<Result<_>>()?;
        // A --rm container's snapshot is discarded when it exits, so it is worthless after
        // a crash: its record need not reach the disk before the container starts.
        self.snapshotter()?
            .durable(!c.config.auto_remove)
            .prepare(&c.id, &chain)?;
        let dir = self.dir(&c.id);
        std::fs::create_dir_all(dir.join("rootfs")).ctx(|| format!("create {}", dir.display()))?;
        let write = |name: &str, text: String| {
            berth_image::write_in_place(&dir.join(name), text.as_bytes())
                .ctx(|| format!("write {name}"))
        };
        write("hostname", format!("{}\n", c.config.hostname))?;
        write("hosts", net::hosts_text(c, &self.extra_hosts(c, &[])?))?;
        write("resolv.conf", net::resolv_conf(c))?;
        let log = self.log_path(&c.id);
        take_kept_log(&dir, &log);
        berth_image::write_in_place(&log, b"").ctx(|| "create log".into())?;
        for m in c.config.mounts.iter().filter(|m| m.kind == "volume") {
            volumes::create(&mut self.db, &self.root, Some(&m.source), &[])?;
        }
        Ok(())
    }

    /// Mounts the rootfs, writes the bundle, creates and starts the container with this
    /// process as its parent. `interactive`: keep a pipe to its stdin.
    pub fn launch(&mut self, key: &str, interactive: bool) -> Result<Launched> {
        let c = self.find(key)?;
        let me = std::process::id() as i32;
        if c.state.status.is_active() && c.state.monitor_pid != me {
            return Err(Error::Conflict(format!(
                "container {} is already running",
                c.id
            )));
        }
        match self.launch_inner(&c, interactive) {
            Ok(l) => {
                self.event(&c, "start", &[]);
                Ok(l)
            }
            Err(e) => {
                self.delete_runtime(&c.id);
                unmount_container(&self.dir(&c.id), &c);
                let _ = net::release(&self.root, &c);
                let code = exit_code_for(&e);
                let msg = e.to_string();
                self.db.update(&c.id, |c| {
                    c.state.status = if c.state.started_at.is_empty() && c.state.restart_count == 0
                    {
                        Status::Created
                    } else {
                        Status::Exited
                    };
                    c.state.exit_code = code;
                    c.state.error = msg;
                    c.state.pid = 0;
                    c.state.monitor_pid = 0;
                })?;
                Err(e)
            }
        }
    }

    /// The namespaces `c` shares with the host or with another running container
    /// (`--network`, `--pid`, `--ipc` as `host` or `container:NAME`).
    fn joins(&mut self, c: &Container) -> Result<spec::Joins> {
        let mut j = spec::Joins::default();
        let cfg = &c.config;
        for l in &cfg.links {
            j.links.push(self.link(c, l)?);
        }
        j.net = match net::mode(&cfg.network) {
            net::Mode::Host => Some("host".to_string()),
            net::Mode::Container(other) => Some(format!(
                "/proc/{}/ns/net",
                self.running(&other, "network")?.state.pid
            )),
            _ => None,
        };
        j.pid = match cfg.pid_mode.as_str() {
            "host" => Some("host".into()),
            m => match m.strip_prefix("container:") {
                Some(other) => Some(format!(
                    "/proc/{}/ns/pid",
                    self.running(other, "PID namespace")?.state.pid
                )),
                None => None,
            },
        };
        match cfg.ipc_mode.as_str() {
            "host" => {
                j.ipc = Some("host".into());
                j.shm = Some("/dev/shm".into());
            }
            "shareable" => {
                // /dev/shm is a tmpfs on the host side, so that a container joining this
                // one's IPC namespace can bind the same files.
                let shm = self.dir(&c.id).join(SHM);
                mount_shareable_shm(&shm, cfg.shm_size.unwrap_or(64 << 20))?;
                j.shm = Some(shm);
            }
            m => {
                if let Some(other) = m.strip_prefix("container:") {
                    let donor = self.running(other, "IPC namespace")?;
                    let pid = donor.state.pid;
                    if donor.config.ipc_mode != "shareable" {
                        return Err(Error::Conflict(format!(
                            "non-shareable IPC (hint: use --ipc shareable for the donor container {other})"
                        )));
                    }
                    j.ipc = Some(format!("/proc/{pid}/ns/ipc"));
                    // POSIX shared memory lives in /dev/shm: the donor's, not a new one.
                    j.shm = Some(self.dir(&donor.id).join(SHM));
                }
            }
        }
        Ok(j)
    }

    /// `--link NAME[:ALIAS]`, resolved at start as Docker does: the target must run, on
    /// this container's network.
    fn link(&mut self, c: &Container, link: &str) -> Result<spec::Link> {
        let (name, alias) = link.split_once(':').unwrap_or((link, link));
        let t = self.find(name.trim_start_matches('/'))?;
        if t.state.status != Status::Running {
            return Err(Error::Conflict(format!(
                "Cannot link to a non running container: /{} AS /{}/{alias}",
                t.name, c.name
            )));
        }
        let net::Mode::Network(mine) = net::mode(&c.config.network) else {
            return Err(Error::Invalid(
                "conflicting options: links need a network of the container's own".into(),
            ));
        };
        let ep = t
            .state
            .endpoint
            .as_ref()
            .filter(|e| e.network == mine)
            .ok_or_else(|| {
                Error::Conflict(format!(
                    "Cannot link to /{}, as it does not belong to the network {mine}",
                    t.name
                ))
            })?;
        Ok(spec::Link {
            alias: alias.to_string(),
            name: t.name.clone(),
            hostname: t.config.hostname.clone(),
            ip: ep.ip.clone(),
            env: t.config.env.clone(),
            exposed: t.config.exposed_ports.clone(),
        })
    }

    /// The lines `--add-host` and `--link` put in the hosts file.
    fn extra_hosts(&self, c: &Container, links: &[spec::Link]) -> Result<Vec<String>> {
        let gateway = if c
            .config
            .add_hosts
            .iter()
            .any(|h| net::parse_add_host(h).is_ok_and(|(_, ip)| ip == net::HOST_GATEWAY))
        {
            Some(net::host_gateway(&self.root)?)
        } else {
            None
        };
        let mut lines = net::add_host_lines(c, gateway.as_deref());
        lines.extend(links.iter().map(spec::Link::hosts_line));
        Ok(lines)
    }

    /// The running container `key`, whose `what` another one joins.
    fn running(&mut self, key: &str, what: &str) -> Result<Container> {
        let o = self.find(key)?;
        if o.state.status != Status::Running {
            return Err(Error::Conflict(format!(
                "cannot join {what} of a non running container: {key}"
            )));
        }
        Ok(o)
    }

    fn launch_inner(&mut self, c: &Container, interactive: bool) -> Result<Launched> {
        let dir = self.dir(&c.id);
        let rootfs = dir.join("rootfs");
        if !is_mountpoint(&rootfs) {
            let mounts = self.snapshotter()?.mounts(&c.id)?;
            let mut m = mounts
                .first()
                .cloned()
                .ok_or_else(|| Error::Invalid("snapshot has no mounts".into()))?;
            // A --rm container's changes are thrown away at exit: overlay's `volatile`
            // spares its unmount a sync of the whole host filesystem (tens of ms).
            if c.config.auto_remove && m.fs_type == "overlay" {
                m.options.push("volatile".into());
            }
            m.mount_at(&rootfs)
                .ctx(|| format!("mount rootfs at {}", rootfs.display()))?;
            tracing::debug!("launch: rootfs mounted");
        }
        let vols = self.volume_mounts(c, &rootfs)?;
        let joins = self.joins(c)?;
        let spec = spec::build(c, &dir, &joins, &vols)?;
        berth_image::write_in_place(&dir.join("config.json"), &serde_json::to_vec(&spec)?)
            .ctx(|| "write config.json".into())?;
        // The runtime takes the spec from here rather than parse the file back; a spec it
        // cannot take this way is read from the file, whose error names the field.
        let spec: Option<oci_spec::runtime::Spec> = serde_json::from_value(spec).ok();
        tracing::debug!("launch: bundle written");
        let (l, held) = if c.config.tty {
            self.create_tty(c, &dir, spec)?
        } else {
            self.create_piped(c, &dir, interactive, spec)?
        };
        let extra = self.extra_hosts(c, &joins.links)?;
        let endpoint = match net::attach(&self.root, c, l.pid, &dir, extra).and_then(|ep| {
            let started = held.start()?;
            tracing::debug!("launch: started");
            Ok((ep, started))
        }) {
            Ok((ep, started)) => {
                self.started.insert(c.id.clone(), started);
                ep
            }
            Err(e) => {
                self.delete_runtime(&c.id);
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(l.pid), None);
                // A further network may have failed after the first was wired up.
                let _ = net::release(&self.root, c);
                return Err(e);
            }
        };
        let pid_start = proc_stat(l.pid).map(|s| s.0).unwrap_or(0);
        let me = std::process::id() as i32;
        let me_start = proc_stat(me).map(|s| s.0).unwrap_or(0);
        let health = c
            .config
            .healthcheck
            .as_ref()
            .filter(|h| h.enabled())
            .map(|_| crate::record::Health {
                status: "starting".into(),
                ..Default::default()
            });
        let running = self.db.update(&c.id, |c| {
            c.state.status = Status::Running;
            c.state.pid = l.pid;
            c.state.pid_start = pid_start;
            c.state.monitor_pid = me;
            c.state.boot_id = format!("{}/{}", boot_id(), me_start);
            c.state.started_at = now_rfc3339();
            c.state.finished_at = String::new();
            c.state.exit_code = 0;
            c.state.error = String::new();
            c.state.oom_killed = false;
            c.state.manual_stop = false;
            c.state.endpoint = endpoint;
            if health.is_some() {
                c.state.health = health;
            }
        })?;
        if running.config.auto_remove {
            self.launched.insert(running.id.clone(), running);
        }
        Ok(l)
    }

    fn create_piped(
        &mut self,
        c: &Container,
        dir: &Path,
        interactive: bool,
        spec: Option<oci_spec::runtime::Spec>,
    ) -> Result<(Launched, Held)> {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (in_r, in_w) = if interactive {
            let (r, w) = pipe()?;
            (r, Some(w))
        } else {
            let f = std::fs::File::open("/dev/null").ctx(|| "open /dev/null".into())?;
            (OwnedFd::from(f), None)
        };
        let opts = CreateOptions {
            spec,
            ..Default::default()
        };
        let held = with_stdio(
            [in_r.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()],
            || self.runtime.create_held(&c.id, dir, &opts),
        )??;
        let pid = held.pid();
        let pidfd = pidfd_open(pid)?;
        let l = Launched {
            pid,
            pidfd,
            out: out_r,
            err: Some(err_r),
            stdin: in_w,
            tty: false,
        };
        Ok((l, held))
    }

    fn create_tty(
        &mut self,
        c: &Container,
        dir: &Path,
        spec: Option<oci_spec::runtime::Spec>,
    ) -> Result<(Launched, Held)> {
        let sock_dir = self.root.join("run");
        std::fs::create_dir_all(&sock_dir).ctx(|| format!("create {}", sock_dir.display()))?;
        let path = sock_dir.join(format!(
            "console-{}-{}.sock",
            &c.id[..12],
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path)
            .ctx(|| format!("bind {}", path.display()))?;
        let opts = CreateOptions {
            console_socket: Some(path.clone()),
            spec,
            ..Default::default()
        };
        let created = self.runtime.create_held(&c.id, dir, &opts);
        let _ = std::fs::remove_file(&path);
        let held = created?;
        let pid = held.pid();
        listener
            .set_nonblocking(true)
            .ctx(|| "console socket".into())?;
        let (stream, _) = listener.accept().ctx(|| "accept the console".into())?;
        stream
            .set_nonblocking(false)
            .ctx(|| "console socket".into())?;
        let master = berth_runtime::console::recv_fd(std::os::fd::AsFd::as_fd(&stream))?;
        // Before the process starts, so that it reads the right size from the first.
        match self.tty_size {
            Some((rows, cols)) => {
                berth_runtime::console::set_window_size(master.as_raw_fd(), rows, cols)
            }
            None => berth_runtime::console::copy_window_size(0, master.as_raw_fd()),
        }
        let pidfd = pidfd_open(pid)?;
        let l = Launched {
            pid,
            pidfd,
            out: master,
            err: None,
            stdin: None,
            tty: true,
        };
        Ok((l, held))
    }

    /// Host directories for the container's volume and bind mounts; new named volumes are
    /// seeded from the image's content at their mount point.
    fn volume_mounts(&mut self, c: &Container, rootfs: &Path) -> Result<Vec<(MountSpec, PathBuf)>> {
        let mut out = Vec::new();
        for m in &c.config.mounts {
            match m.kind.as_str() {
                "volume" => {
                    volumes::create(&mut self.db, &self.root, Some(&m.source), &[])?;
                    volumes::mount(&self.db, &self.root, &m.source)?;
                    let data = volumes::data_dir(&self.root, &m.source);
                    volumes::seed(rootfs, &m.destination, &data)?;
                    out.push((m.clone(), data));
                }
                "bind" => {
                    let src = PathBuf::from(&m.source);
                    if !src.exists() {
                        if m.options.iter().any(|o| o == "create") {
                            std::fs::create_dir_all(&src)
                                .ctx(|| format!("create {}", src.display()))?;
                        } else {
                            return Err(Error::Invalid(format!(
                                "invalid mount config for type \"bind\": bind source path does not exist: {}",
                                src.display()
                            )));
                        }
                    }
                    out.push((m.clone(), src));
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// After the container's init exited with `code`: record it and tear the runtime
    /// state, network and rootfs mount down.
    pub fn finish(&mut self, id: &str, code: i32) -> Result<Container> {
        let oom = match self.started.get(id) {
            Some(s) => s.oom_killed(),
            None => self.runtime.record(id).is_ok_and(|r| r.cgroup.oom_killed()),
        };
        self.delete_runtime(id);
        let c = self.db.find(id)?;
        if oom {
            self.event(&c, "oom", &[]);
        }
        self.event(&c, "die", &[("exitCode", code.to_string())]);
        let _ = net::release(&self.root, &c);
        unmount_container(&self.dir(id), &c);
        self.db.update(id, |c| {
            c.state.status = Status::Exited;
            c.state.exit_code = code;
            c.state.finished_at = now_rfc3339();
            c.state.oom_killed = oom;
            c.state.pid = 0;
            c.state.endpoint = None;
        })
    }

    /// Marks the end of monitoring (the monitor is about to exit).
    pub fn detach_monitor(&mut self, id: &str) -> Result<()> {
        self.db.update(id, |c| {
            if !c.state.status.is_active() {
                c.state.monitor_pid = 0;
            }
        })?;
        Ok(())
    }

    /// Polls until the container is no longer active; false on timeout.
    pub fn wait_inactive(&mut self, id: &str, timeout: Option<Duration>) -> Result<bool> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let c = match self.find(id) {
                Ok(c) => c,
                Err(Error::NoSuchContainer(_)) => return Ok(true),
                Err(e) => return Err(e),
            };
            if !c.state.status.is_active() {
                return Ok(true);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `stop`: the stop signal, `timeout` seconds (negative: forever), then SIGKILL.
    pub fn stop(
        &mut self,
        key: &str,
        timeout: Option<i64>,
        signal: Option<&str>,
    ) -> Result<Container> {
        let c = self.find(key)?;
        if !c.state.status.is_active() {
            return Ok(c);
        }
        self.db.update(&c.id, |c| c.state.manual_stop = true)?;
        let sig_name = signal.map(str::to_owned).unwrap_or_else(|| {
            if c.config.stop_signal.is_empty() {
                "SIGTERM".into()
            } else {
                c.config.stop_signal.clone()
            }
        });
        let sig = parse_signal(&sig_name)?;
        if c.state.status != Status::Restarting {
            let _ = self.runtime.kill(&c.id, sig, false);
            self.event(&c, "kill", &[("signal", (sig as i32).to_string())]);
            if c.state.status == Status::Paused {
                let _ = self.runtime.resume(&c.id);
            }
        }
        let secs = timeout.or(c.config.stop_timeout).unwrap_or(10);
        let wait = (secs >= 0).then(|| Duration::from_secs(secs as u64));
        if !self.wait_inactive(&c.id, wait)? {
            let _ = self.runtime.kill(&c.id, Signal::SIGKILL, true);
            self.event(
                &c,
                "kill",
                &[("signal", (Signal::SIGKILL as i32).to_string())],
            );
            self.wait_inactive(&c.id, Some(Duration::from_secs(30)))?;
        }
        self.event(&c, "stop", &[]);
        if c.config.auto_remove {
            // Its monitor removes it right after recording the exit: a `stop` that
            // returns before that would leave the name taken for the next command.
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(self.db.get(&c.id), Ok(Some(_))) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        match self.find(&c.id) {
            // `--rm`: its monitor removed it as it exited; the stop still succeeded.
            Err(Error::NoSuchContainer(_)) if c.config.auto_remove => {
                let mut gone = c;
                gone.state.status = Status::Exited;
                Ok(gone)
            }
            r => r,
        }
    }

    /// `kill`: a signal to the container's init.
    pub fn kill(&mut self, key: &str, signal: &str) -> Result<Container> {
        let c = self.find(key)?;
        if !matches!(c.state.status, Status::Running | Status::Paused) {
            return Err(Error::Conflict(format!(
                "cannot kill container: {}: container {} is not running",
                key, c.id
            )));
        }
        let sig = parse_signal(signal)?;
        self.runtime.kill(&c.id, sig, false)?;
        self.event(&c, "kill", &[("signal", (sig as i32).to_string())]);
        Ok(c)
    }

    /// `rm`: refuses an active container unless `force` (which kills it first).
    pub fn remove(&mut self, key: &str, force: bool, volumes: bool) -> Result<Container> {
        let c = self.find(key)?;
        if c.state.status.is_active() {
            if !force {
                return Err(Error::Conflict(format!(
                    "cannot remove container \"/{}\": container is {}: stop the container before removing or force remove",
                    c.name, c.state.status.as_str()
                )));
            }
            self.db.update(&c.id, |c| c.state.manual_stop = true)?;
            let _ = self.runtime.kill(&c.id, Signal::SIGKILL, true);
            self.wait_inactive(&c.id, Some(Duration::from_secs(30)))?;
        }
        self.teardown(&c, volumes)?;
        Ok(c)
    }

    /// Forks the purger a later [`Engine::discard_exited`] hands the container's
    /// directory to; for a foreground `run --rm`, while its container runs and this
    /// process only waits (`crate::purge`).
    pub fn prepare_purger(&mut self) {
        if self.purger.is_none() {
            if let Ok(s) = self.snapshotter() {
                self.purger = crate::purge::Purger::spawn(&s);
            }
        }
    }

    /// `run --rm` in the foreground: the container just exited under this process (with
    /// `code`; `None` when it never started), so its record goes at once, without first
    /// recording the exit. Its directory is left to the purger [`Engine::prepare_purger`]
    /// made, if any.
    pub fn discard_exited(&mut self, id: &str, code: Option<i32>) -> Result<()> {
        // What teardown reads of the record (config, endpoint) is what this process
        // wrote at launch; only the name may have changed since (`rename`), and a
        // record removed meanwhile (`rm -f`) is an error, as a lookup would make it.
        let mut c = match self.launched.remove(id) {
            Some(c) => c,
            None => self.db.find(id)?,
        };
        c.name = self
            .db
            .name_of(&c.id)?
            .ok_or_else(|| Error::NoSuchContainer(id.into()))?;
        if let Some(code) = code {
            self.event(&c, "die", &[("exitCode", code.to_string())]);
        }
        self.teardown_as(&c, true, Purge::Detached)
    }

    /// Records a container event with Docker's attributes: image, name, the labels and
    /// `extra`.
    pub(crate) fn event(&self, c: &Container, action: &str, extra: &[(&str, String)]) {
        let mut attrs = c.config.labels.clone();
        attrs.insert("image".into(), c.image.clone());
        attrs.insert("name".into(), c.name.clone());
        for (k, v) in extra {
            attrs.insert(k.to_string(), v.clone());
        }
        crate::events::record(&self.root, "container", action, &c.id, attrs);
    }

    /// Deletes the runtime's container (killing what is left of it), with the record from
    /// its start when this process started it.
    fn delete_runtime(&mut self, id: &str) {
        let _ = match self.started.remove(id) {
            Some(s) => self.runtime.delete_started(s),
            None => self.runtime.delete(id, true),
        };
    }

    /// Removes every trace of a stopped container; idempotent.
    fn teardown(&mut self, c: &Container, with_volumes: bool) -> Result<()> {
        self.teardown_as(c, with_volumes, Purge::Now)
    }

    fn teardown_as(&mut self, c: &Container, with_volumes: bool, purge: Purge) -> Result<()> {
        let purger = match purge {
            Purge::Now => None,
            Purge::Detached => self.purger.take(),
        };
        // With a purger, the cgroup is its to remove, after this process is done.
        let started = purger.as_ref().and_then(|_| self.started.remove(&c.id));
        let cgroup = match started {
            Some(s) => self.runtime.delete_started_but_cgroup(s).unwrap_or(None),
            None => {
                self.delete_runtime(&c.id);
                None
            }
        };
        tracing::debug!("teardown: runtime state deleted");
        let _ = net::release(&self.root, c);
        let snapshotter = self.snapshotter()?;
        let retired = retire_container_files(&self.dir(&c.id), c, &snapshotter);
        match (retired, purger) {
            // The lock let go first, then the purger's pipe: it sweeps the trash.
            (Ok(retired), Some(purger)) => {
                drop(retired);
                purger.finish(cgroup.as_ref());
            }
            (retired, purger) => {
                drop(purger);
                if let Some(cg) = cgroup {
                    let _ = cg.destroy();
                }
                if let Some(retired) = retired? {
                    retired.purge()?;
                }
            }
        }
        tracing::debug!("teardown: files removed");
        // Two removals may race (a foreground `run --rm` and an `rm -f`): the one that
        // deleted the record announces it.
        let deleted = self.db.delete(&c.id)?;
        tracing::debug!("teardown: record deleted");
        if deleted {
            self.event(c, "destroy", &[]);
        }
        if with_volumes {
            for m in c.config.mounts.iter().filter(|m| m.anonymous) {
                let users = self.volume_users(&m.source)?;
                let _ = volumes::remove(&mut self.db, &self.root, &m.source, &users);
            }
        }
        Ok(())
    }

    /// Ids of containers whose mounts use volume `name`.
    pub fn volume_users(&self, name: &str) -> Result<Vec<String>> {
        Ok(self
            .db
            .list()?
            .into_iter()
            .filter(|c| {
                c.config
                    .mounts
                    .iter()
                    .any(|m| m.kind == "volume" && m.source == name)
            })
            .map(|c| c.id)
            .collect())
    }

    /// Image ids (`sha256:…` config digests) containers use, each with one container id.
    pub fn in_use_images(&self) -> Result<HashMap<String, String>> {
        let mut out = HashMap::new();
        for c in self.db.list()? {
            out.entry(c.image_id).or_insert(c.id);
        }
        Ok(out)
    }

    pub fn pause(&mut self, key: &str) -> Result<Container> {
        let c = self.find(key)?;
        if c.state.status != Status::Running {
            return Err(Error::Conflict(format!(
                "container {} is not running",
                c.id
            )));
        }
        self.runtime.pause(&c.id)?;
        self.event(&c, "pause", &[]);
        self.db.update(&c.id, |c| c.state.status = Status::Paused)
    }

    pub fn unpause(&mut self, key: &str) -> Result<Container> {
        let c = self.find(key)?;
        if c.state.status != Status::Paused {
            return Err(Error::Conflict(format!("container {} is not paused", c.id)));
        }
        self.runtime.resume(&c.id)?;
        self.event(&c, "unpause", &[]);
        self.db.update(&c.id, |c| c.state.status = Status::Running)
    }

    pub fn rename(&mut self, key: &str, name: &str) -> Result<()> {
        let c = self.find(key)?;
        if !crate::names::valid_name(name) {
            return Err(Error::Invalid(format!("Invalid container name ({name})")));
        }
        self.db.rename(&c.id, name)?;
        let old = c.name.clone();
        let renamed = Container {
            name: name.to_string(),
            ..c
        };
        self.event(&renamed, "rename", &[("oldName", format!("/{old}"))]);
        Ok(())
    }

    /// The processes of a running container (host pids).
    pub fn pids(&mut self, key: &str) -> Result<Vec<i32>> {
        let c = self.find(key)?;
        if !matches!(c.state.status, Status::Running | Status::Paused) {
            return Err(Error::Conflict(format!(
                "container {} is not running",
                c.id
            )));
        }
        Ok(self.runtime.pids(&c.id)?)
    }

    /// `update`: new limits for the cgroup (when running) and the record.
    pub fn update(&mut self, key: &str, f: impl FnOnce(&mut RunConfig)) -> Result<Container> {
        let c = self.find(key)?;
        let c = self.db.update(&c.id, |c| f(&mut c.config))?;
        if matches!(c.state.status, Status::Running | Status::Paused) {
            let spec = spec::resources_json(&c)?;
            let res: oci_spec::runtime::LinuxResources = serde_json::from_value(spec)?;
            self.runtime.update(&c.id, &res)?;
        }
        Ok(c)
    }

    /// The `process` of `exec`: the container's own user, env and cwd, with overrides.
    pub fn exec_process(
        &mut self,
        key: &str,
        req: &ExecRequest,
    ) -> Result<(Container, oci_spec::runtime::Process)> {
        let c = self.find(key)?;
        if c.state.status != Status::Running {
            return Err(Error::Conflict(format!(
                "container {} is not running",
                c.id
            )));
        }
        let dir = self.dir(&c.id);
        let text = std::fs::read(dir.join("config.json")).ctx(|| "read config.json".into())?;
        let spec: Value = serde_json::from_slice(&text)?;
        let mut p = spec["process"].clone();
        p["args"] = serde_json::json!(req.args);
        p["terminal"] = serde_json::json!(req.tty);
        if let Some(u) = &req.user {
            let (uid, gid, extra) = spec::resolve_user(&dir.join("rootfs"), u, &[])?;
            p["user"] = serde_json::json!({"uid": uid, "gid": gid, "additionalGids": extra});
        }
        if let Some(w) = &req.workdir {
            p["cwd"] = serde_json::json!(w);
        }
        if req.privileged {
            let all = spec::all_caps();
            p["capabilities"] = serde_json::json!({
                "bounding": all, "effective": all, "permitted": all,
            });
        }
        let mut all_env: Vec<String> = strings(&p["env"]);
        for e in &req.env {
            all_env.retain(|x| env_key(x) != env_key(e));
            all_env.push(e.clone());
        }
        p["env"] = serde_json::json!(all_env);
        Ok((c, serde_json::from_value(p)?))
    }
}

fn monitor_start(s: &State) -> u64 {
    s.boot_id
        .rsplit_once('/')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(0)
}

impl State {
    /// The boot id part of `boot_id` (which also carries the monitor's start time).
    pub fn boot(&self) -> &str {
        self.boot_id.split('/').next().unwrap_or("")
    }
}

/// Applies the image's defaults the way Docker does.
fn merge_image(cfg: &mut RunConfig, image: &ImageInfo, req: &CreateRequest) -> Result<()> {
    let ic = &image.config;
    let mut env = strings(&ic["Env"]);
    for e in std::mem::take(&mut cfg.env) {
        env.retain(|x| env_key(x) != env_key(&e));
        env.push(e);
    }
    cfg.env = env;
    match &req.entrypoint {
        Some(ep) => {
            cfg.entrypoint = if ep.is_empty() {
                vec![]
            } else {
                vec![ep.clone()]
            };
            cfg.cmd = req.cmd.clone();
        }
        None => {
            cfg.entrypoint = strings(&ic["Entrypoint"]);
            cfg.cmd = if req.cmd.is_empty() {
                strings(&ic["Cmd"])
            } else {
                req.cmd.clone()
            };
        }
    }
    cfg.args = cfg
        .entrypoint
        .iter()
        .chain(cfg.cmd.iter())
        .cloned()
        .collect();
    if cfg.workdir.is_empty() {
        cfg.workdir = ic["WorkingDir"].as_str().unwrap_or("").to_string();
    }
    if cfg.user.is_empty() {
        cfg.user = ic["User"].as_str().unwrap_or("").to_string();
    }
    if cfg.stop_signal.is_empty() {
        cfg.stop_signal = ic["StopSignal"].as_str().unwrap_or("").to_string();
    }
    if let Some(ports) = ic["ExposedPorts"].as_object() {
        cfg.exposed_ports.extend(ports.keys().cloned());
    }
    for p in &req.expose {
        let p = if p.contains('/') {
            p.clone()
        } else {
            format!("{p}/tcp")
        };
        if !cfg.exposed_ports.contains(&p) {
            cfg.exposed_ports.push(p);
        }
    }
    if let Some(labels) = ic["Labels"].as_object() {
        for (k, v) in labels {
            cfg.labels
                .entry(k.clone())
                .or_insert_with(|| v.as_str().unwrap_or("").to_string());
        }
    }
    if let Some(vols) = ic["Volumes"].as_object() {
        for dest in vols.keys() {
            if !cfg.mounts.iter().any(|m| &m.destination == dest) {
                cfg.mounts.push(MountSpec {
                    kind: "volume".into(),
                    source: String::new(),
                    destination: dest.clone(),
                    read_only: false,
                    options: vec![],
                    anonymous: true,
                });
            }
        }
    }
    cfg.healthcheck = health_config(ic, req);
    Ok(())
}

fn health_config(ic: &Value, req: &CreateRequest) -> Option<HealthConfig> {
    if req.no_healthcheck {
        return Some(HealthConfig {
            test: vec!["NONE".into()],
            ..Default::default()
        });
    }
    let mut h: HealthConfig = serde_json::from_value(ic["Healthcheck"].clone()).unwrap_or_default();
    let f = &req.health;
    if !f.test.is_empty() {
        h.test = f.test.clone();
    }
    if f.interval != 0 {
        h.interval = f.interval;
    }
    if f.timeout != 0 {
        h.timeout = f.timeout;
    }
    if f.start_period != 0 {
        h.start_period = f.start_period;
    }
    if f.retries != 0 {
        h.retries = f.retries;
    }
    if f.start_interval != 0 {
        h.start_interval = f.start_interval;
    }
    (!h.test.is_empty()).then_some(h)
}

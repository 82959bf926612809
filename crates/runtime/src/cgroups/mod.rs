//! cgroups for one container on whatever layout the host has: pure v2, pure v1, or the
//! "hybrid" layout of our build machines (v1 controllers under /sys/fs/cgroup/<name>, and a
//! cgroup2 mount at /sys/fs/cgroup/unified with at most a few controllers). crun refuses
//! the hybrid layout; we treat it as v1 plus one more hierarchy, which is what it is.
//!
//! A [`Cgroup`] is the set of directories (one per hierarchy) the container lives in,
//! resolved once at create time and stored in the state, so later commands never
//! re-resolve relative paths against a different caller's cgroup.

mod resources;
mod v2devices;

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The hierarchies mounted on this host.
#[derive(Debug)]
pub struct Layout {
    /// v1 hierarchies: mount point → the controllers (or `name=`) it carries.
    pub v1: Vec<(PathBuf, Vec<String>)>,
    /// The cgroup2 mount, if any (the only one on a pure v2 host).
    pub v2: Option<PathBuf>,
}

impl Layout {
    pub fn get() -> &'static Layout {
        static LAYOUT: OnceLock<Layout> = OnceLock::new();
        LAYOUT.get_or_init(|| {
            Layout::probe().unwrap_or(Layout {
                v1: vec![],
                v2: None,
            })
        })
    }

    pub fn is_pure_v2(&self) -> bool {
        self.v1.is_empty() && self.v2.is_some()
    }

    fn probe() -> std::io::Result<Layout> {
        let info = std::fs::read_to_string("/proc/self/mountinfo")?;
        let mut layout = Layout {
            v1: vec![],
            v2: None,
        };
        for line in info.lines() {
            // Fields: ... mount-point(4) ... " - " fstype source super-options
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mount_point = left.split(' ').nth(4).unwrap_or_default();
            let mut r = right.split(' ');
            let fstype = r.next().unwrap_or_default();
            let opts = r.nth(1).unwrap_or_default();
            match fstype {
                "cgroup2" if layout.v2.is_none() => layout.v2 = Some(PathBuf::from(mount_point)),
                "cgroup" => {
                    let ctrls: Vec<String> = opts
                        .split(',')
                        .filter(|o| {
                            !matches!(*o, "rw" | "ro" | "relatime" | "noexec" | "nosuid" | "nodev")
                        })
                        .filter(|o| !o.starts_with("release_agent") && *o != "clone_children")
                        .map(str::to_owned)
                        .collect();
                    if !layout.v1.iter().any(|(p, _)| p == Path::new(mount_point)) {
                        layout.v1.push((PathBuf::from(mount_point), ctrls));
                    }
                }
                _ => {}
            }
        }
        Ok(layout)
    }

    /// The caller's own cgroup in the hierarchy that carries `key` ("" for cgroup2).
    fn own_path(key: &str) -> PathBuf {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        for line in own.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, ctrls, path) = (
                parts.next(),
                parts.next().unwrap_or(""),
                parts.next().unwrap_or("/"),
            );
            if (key.is_empty() && ctrls.is_empty())
                || (!key.is_empty() && ctrls.split(',').any(|c| c == key))
            {
                return PathBuf::from(path);
            }
        }
        PathBuf::from("/")
    }
}

/// Directories of one container's cgroup, keyed by hierarchy: the v1 mount's controller
/// list joined with ',' (e.g. "cpu", "name=systemd"), or "" for cgroup2.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Cgroup {
    pub dirs: BTreeMap<String, PathBuf>,
}

impl Cgroup {
    /// Resolves `linux.cgroupsPath`: absolute paths are taken from each hierarchy's root,
    /// relative ones from the caller's own cgroup there (as runc does); none → /berth/<id>.
    pub fn resolve(cgroups_path: Option<&Path>, id: &str) -> Cgroup {
        let default = PathBuf::from(format!("/berth/{id}"));
        let wanted = cgroups_path
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(&default);
        let layout = Layout::get();
        let mut dirs = BTreeMap::new();
        let place = |key: &str, mount: &Path| {
            let rel = if wanted.is_absolute() {
                wanted.to_path_buf()
            } else {
                Layout::own_path(key.split(',').next().unwrap_or(key)).join(wanted)
            };
            mount.join(rel.strip_prefix("/").unwrap_or(&rel))
        };
        for (mount, ctrls) in &layout.v1 {
            let key = ctrls.join(",");
            dirs.insert(key.clone(), place(&key, mount));
        }
        if let Some(v2) = &layout.v2 {
            dirs.insert(String::new(), place("", v2));
        }
        Cgroup { dirs }
    }

    fn v2_dir(&self) -> Option<&Path> {
        self.dirs.get("").map(PathBuf::as_path)
    }

    /// The v1 directory of the hierarchy carrying `controller`.
    fn v1_dir(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(k, _)| !k.is_empty() && k.split(',').any(|c| c == controller))
            .map(|(_, p)| p.as_path())
    }

    /// The directory carrying `controller`, v1 first (on hybrid hosts v1 owns most of them).
    fn dir_for(&self, controller: &str) -> Option<&Path> {
        if let Some(d) = self.v1_dir(controller) {
            return Some(d);
        }
        let v2 = self.v2_dir()?;
        let root = Layout::get().v2.as_ref()?;
        let ctrls = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
        ctrls
            .split_whitespace()
            .any(|c| c == controller)
            .then_some(v2)
    }

    pub fn create(&self) -> Result<()> {
        for (key, dir) in &self.dirs {
            if key.is_empty() {
                self.create_v2(dir)?;
            } else {
                mkdir_p(dir)?;
                if key.split(',').any(|c| c == "cpuset") {
                    init_cpuset(dir)?;
                }
            }
        }
        Ok(())
    }

    /// Makes the directory and, on pure v2 hosts, enables every available controller on
    /// the way down, which cgroup2 requires before a child can have limits. On hybrid
    /// hosts the directory only tracks the container: enabling a controller there would
    /// pin it to cgroup2 and stop anyone else (crun, a v1 mount) from using it.
    fn create_v2(&self, dir: &Path) -> Result<()> {
        let enable = Layout::get().is_pure_v2();
        let Some(root) = Layout::get().v2.clone() else {
            return Ok(());
        };
        let rel = dir.strip_prefix(&root).unwrap_or(dir).to_path_buf();
        let mut cur = root;
        for comp in rel.components() {
            if enable {
                enable_controllers(&cur, None);
            }
            cur.push(comp);
            match std::fs::create_dir(&cur) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(cg_err(&cur, format!("mkdir: {e}"))),
            }
        }
        Ok(())
    }

    /// Enables one controller on the path to our cgroup2 directory, for hybrid hosts where
    /// the spec asks for a limit only cgroup2 carries (hugetlb here).
    pub(crate) fn enable_v2_controller(&self, controller: &str) {
        let (Some(root), Some(dir)) = (Layout::get().v2.as_ref(), self.v2_dir()) else {
            return;
        };
        let mut cur = root.clone();
        for comp in dir.strip_prefix(root).unwrap_or(dir).components() {
            enable_controllers(&cur, Some(controller));
            cur.push(comp);
        }
    }

    /// An fd of the cgroup2 directory for clone3(CLONE_INTO_CGROUP): the child is born in
    /// it, so no cgroup.procs write (and none of its cost, below) is needed for cgroup2.
    /// On hybrid hosts this covers the cgroup2 part only; see [`Cgroup::join_v1_self`].
    pub fn clone_into_fd(&self) -> Option<OwnedFd> {
        let dir = self.v2_dir()?;
        nix::fcntl::open(
            dir,
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ok()
        .map(|fd| {
            // SAFETY: open returned a fresh fd that nothing else owns.
            unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }
        })
    }

    /// Whether any v1 hierarchy is part of this cgroup (pure v1 and hybrid hosts).
    pub fn has_v1(&self) -> bool {
        self.dirs.keys().any(|k| !k.is_empty())
    }

    /// Moves `pid` into the cgroup2 directory (`v2`) and/or the v1 ones (`v1`).
    pub fn add_where(&self, pid: i32, v2: bool, v1: bool) -> Result<()> {
        for (key, dir) in &self.dirs {
            if (key.is_empty() && v2) || (!key.is_empty() && v1) {
                write(dir, "cgroup.procs", &pid.to_string())?;
            }
        }
        Ok(())
    }

    /// Moves the calling thread, which must be its process's only one, into every v1
    /// hierarchy. Why not the runtime writing the child's pid to cgroup.procs: moving a
    /// whole thread group takes the kernel's global threadgroup rwsem for writing, and on
    /// a quiet host that first waits for an RCU grace period — 14–20 ms, most of a
    /// container's start here. A thread writing "0" (itself) to `tasks` skips that lock.
    pub fn join_v1_self(&self) -> Result<()> {
        for (key, dir) in &self.dirs {
            if !key.is_empty() {
                write(dir, "tasks", "0")?;
            }
        }
        Ok(())
    }

    pub fn pids(&self) -> Result<Vec<i32>> {
        let dir = self
            .v1_dir("pids")
            .or_else(|| self.v1_dir("freezer"))
            .or_else(|| self.v2_dir())
            .or_else(|| self.dirs.values().next().map(PathBuf::as_path));
        let Some(dir) = dir else { return Ok(vec![]) };
        let text = match std::fs::read_to_string(dir.join("cgroup.procs")) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(cg_err(dir, format!("cgroup.procs: {e}"))),
        };
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    pub fn is_frozen(&self) -> bool {
        if let Some(d) = self.v1_dir("freezer") {
            return read(d, "freezer.state").is_some_and(|s| s.trim() == "FROZEN");
        }
        self.v2_dir()
            .and_then(|d| read(d, "cgroup.freeze"))
            .is_some_and(|s| s.trim() == "1")
    }

    /// Freezes or thaws, waiting until the kernel reports the new state.
    pub fn freeze(&self, frozen: bool) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        if let Some(d) = self.v1_dir("freezer") {
            let want = if frozen { "FROZEN" } else { "THAWED" };
            write(d, "freezer.state", want)?;
            while read(d, "freezer.state").is_some_and(|s| s.trim() != want) {
                if Instant::now() > deadline {
                    return Err(cg_err(d, format!("timed out waiting for {want}")));
                }
                std::thread::sleep(Duration::from_millis(1));
                write(d, "freezer.state", want)?;
            }
            return Ok(());
        }
        let Some(d) = self.v2_dir() else {
            return Err(Error::Unsupported("no freezer on this host".into()));
        };
        write(d, "cgroup.freeze", if frozen { "1" } else { "0" })?;
        let want = if frozen { "frozen 1" } else { "frozen 0" };
        while !read(d, "cgroup.events").is_some_and(|s| s.lines().any(|l| l == want)) {
            if Instant::now() > deadline {
                return Err(cg_err(d, format!("timed out waiting for {want}")));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// Removes the directories. Tasks still inside (a racing fork) make rmdir fail with
    /// EBUSY, so kill what is left and retry for a short while.
    pub fn destroy(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        for dir in self.dirs.values() {
            loop {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if Instant::now() < deadline => {
                        tracing::debug!("rmdir {}: {e}; retrying", dir.display());
                        for pid in self.pids().unwrap_or_default() {
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(pid),
                                nix::sys::signal::Signal::SIGKILL,
                            );
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => return Err(cg_err(dir, format!("rmdir: {e}"))),
                }
            }
        }
        Ok(())
    }

    /// Whether the memory controller recorded an OOM kill for this cgroup.
    pub fn oom_killed(&self) -> bool {
        if let Some(d) = self.v1_dir("memory") {
            return read(d, "memory.oom_control").is_some_and(|s| {
                s.lines()
                    .any(|l| l.strip_prefix("oom_kill ").is_some_and(|n| n.trim() != "0"))
            });
        }
        self.v2_dir()
            .and_then(|d| read(d, "memory.events"))
            .is_some_and(|s| {
                s.lines()
                    .any(|l| l.strip_prefix("oom_kill ").is_some_and(|n| n.trim() != "0"))
            })
    }
}

/// Enables `only` (or every available controller) for the children of `dir`.
fn enable_controllers(dir: &Path, only: Option<&str>) {
    let Some(avail) = read(dir, "cgroup.controllers") else {
        return;
    };
    let enabled = read(dir, "cgroup.subtree_control").unwrap_or_default();
    let missing: Vec<String> = avail
        .split_whitespace()
        .filter(|c| only.is_none_or(|o| o == *c))
        .filter(|c| !enabled.split_whitespace().any(|e| e == *c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty()
        || std::fs::write(dir.join("cgroup.subtree_control"), missing.join(" ")).is_ok()
    {
        return;
    }
    // A non-root cgroup holding processes (the caller's own, for a relative cgroupsPath)
    // refuses domain controllers, but would take threaded ones (cpu, cpuset, pids) one by
    // one — and a populated domain with threaded controllers enabled becomes a thread
    // root, under which no domain child can hold a process: the container's clone3 would
    // fail with EOPNOTSUPP. Leave such a cgroup as it is.
    if has_processes(dir) {
        return;
    }
    // Best effort: a controller that cannot be enabled here (e.g. a threaded subtree)
    // only matters if the spec asks for it, and then the limit write reports it.
    for m in missing {
        let _ = std::fs::write(dir.join("cgroup.subtree_control"), m);
    }
}

/// Whether `dir` is a non-root cgroup2 directory with processes of its own (the root is
/// exempt from the no-internal-process rule).
fn has_processes(dir: &Path) -> bool {
    let is_root = dir
        .parent()
        .is_none_or(|p| !p.join("cgroup.controllers").exists());
    !is_root && read(dir, "cgroup.procs").is_some_and(|s| !s.trim().is_empty())
}

/// v1 cpuset children start with empty cpus/mems and reject tasks; inherit the parent's.
fn init_cpuset(dir: &Path) -> Result<()> {
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    for file in ["cpuset.cpus", "cpuset.mems"] {
        if read(dir, file).is_some_and(|s| s.trim().is_empty()) {
            if read(parent, file).is_some_and(|s| s.trim().is_empty()) {
                init_cpuset(parent)?;
            }
            let value = read(parent, file).unwrap_or_default();
            write(dir, file, value.trim())?;
        }
    }
    Ok(())
}

fn mkdir_p(dir: &Path) -> Result<()> {
    let created = !dir.exists();
    std::fs::create_dir_all(dir).map_err(|e| cg_err(dir, format!("mkdir: {e}")))?;
    if created {
        // New v1 cpuset parents also need their cpus/mems before the leaf can inherit them.
        if let Some(p) = dir.parent() {
            if p.join("cpuset.cpus").exists() {
                let _ = init_cpuset(p);
            }
        }
    }
    Ok(())
}

pub(crate) fn read(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file)).ok()
}

pub(crate) fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
    std::fs::write(dir.join(file), value)
        .map_err(|e| cg_err(dir, format!("write {value:?} to {file}: {e}")))
}

pub(crate) fn cg_err(dir: &Path, msg: String) -> Error {
    Error::Cgroup {
        path: dir.to_path_buf(),
        msg,
    }
}

//! RUN: a command in a real container made by berth's runtime.
//!
//! The bundle is written here: `config.json` with Docker's defaults (the
//! runtime-spec default mounts, Docker's 14 capabilities, berth's default
//! seccomp profile, masked and read-only paths), the step's environment,
//! user, working directory and arguments, and `rootfs` the overlay of the
//! stage's layers, mounted by the caller.
//!
//! The command's output goes to a log file (the build process must stay
//! single-threaded while the runtime clones, so there is no pipe reader);
//! the executor shows it when the step ends, and its tail when it fails.

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

/// Docker's default capability set.
pub use berth_runtime::caps::DOCKER_DEFAULT as DEFAULT_CAPS;

/// RUN's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    /// Docker's default: a new network namespace with a veth on berth's
    /// default bridge (`berth0`), NAT to the outside.
    #[default]
    Bridge,
    /// The host's network namespace.
    Host,
    /// A new network namespace with only loopback.
    None,
}

impl std::str::FromStr for Network {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "default" | "bridge" => Ok(Network::Bridge),
            "host" => Ok(Network::Host),
            "none" => Ok(Network::None),
            other => Err(format!(
                "network mode {other:?} is not supported for RUN (default, host or none)"
            )),
        }
    }
}

/// What every RUN of one build gets from the command line (`docker build`'s
/// `--add-host`, `--shm-size` and `--ulimit`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// `--add-host NAME:IP`, in order: extra /etc/hosts lines (`host-gateway` already
    /// replaced by the default bridge's address).
    pub extra_hosts: Vec<(String, String)>,
    /// `--shm-size` in bytes; Docker's 64 MiB when `None`.
    pub shm_size: Option<u64>,
    /// `--ulimit NAME=SOFT[:HARD]` as (`RLIMIT_NAME`, soft, hard).
    pub ulimits: Vec<(String, u64, u64)>,
}

impl RunOptions {
    /// What these settings add to a RUN's cache key: nothing when they are the
    /// defaults, so that keys of builds without them do not change. BuildKit keys them
    /// too (they are part of its exec op).
    pub fn key(&self) -> String {
        if *self == RunOptions::default() {
            return String::new();
        }
        format!("{:?}", self)
    }

    /// The /etc/hosts a RUN sees when extra hosts are given: `base` (the host's file, or
    /// localhost lines) and then one line per extra host.
    pub fn hosts_file(&self, base: Option<&str>) -> String {
        let mut out = base.map(str::to_string).unwrap_or_else(|| {
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n".into()
        });
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        for (name, ip) in &self.extra_hosts {
            out.push_str(&format!("{ip}\t{name}\n"));
        }
        out
    }
}

/// One RUN's process.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub network: Network,
    /// The network namespace to join (a [`BridgeNetns`]); `None` makes a
    /// new one (or uses the host's for [`Network::Host`]).
    pub netns: Option<PathBuf>,
    pub hostname: String,
    /// Files in the rootfs to bind from the host (`/etc/resolv.conf`...),
    /// only those the rootfs already has.
    pub binds: Vec<(PathBuf, String)>,
    /// `RUN --mount` mounts, as runtime-spec mount objects.
    pub mounts: Vec<Value>,
    /// `--shm-size` and `--ulimit` (extra hosts arrive as a bind in `mounts`).
    pub options: RunOptions,
}

/// RUN failures.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("runtime: {0}")]
    Runtime(#[from] berth_runtime::Error),
    #[error("bridge network: {0}")]
    Net(#[from] berth_net::NetError),
}

fn io_ctx(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RunError {
    let context = context.into();
    move |source| RunError::Io { context, source }
}

/// The runtime-spec config for a RUN.
pub fn spec(run: &RunSpec, rootfs: &Path) -> Value {
    let mut spec = serde_json::to_value(oci_spec::runtime::Spec::default()).unwrap_or(json!({}));
    let caps: Vec<String> = DEFAULT_CAPS.iter().map(|c| c.to_string()).collect();
    spec["process"] = json!({
        "terminal": false,
        "user": {"uid": run.uid, "gid": run.gid, "additionalGids": run.additional_gids},
        "args": run.args,
        "env": run.env,
        "cwd": run.cwd,
        "capabilities": {
            "bounding": caps, "effective": caps, "permitted": caps,
        },
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1048576u64.min(nofile_hard()), "soft": 1048576u64.min(nofile_hard())}],
        "noNewPrivileges": false,
    });
    for (name, soft, hard) in &run.options.ulimits {
        if let Some(list) = spec["process"]["rlimits"].as_array_mut() {
            list.retain(|r| r["type"] != json!(name));
            list.push(json!({"type": name, "soft": soft, "hard": hard}));
        }
    }
    spec["root"] = json!({"path": rootfs, "readonly": false});
    spec["hostname"] = json!(run.hostname);
    if let Some(mounts) = spec["mounts"].as_array_mut() {
        if let Some(size) = run.options.shm_size {
            for m in mounts.iter_mut().filter(|m| m["destination"] == "/dev/shm") {
                if let Some(opts) = m["options"].as_array_mut() {
                    opts.retain(|o| !o.as_str().is_some_and(|o| o.starts_with("size=")));
                    opts.push(json!(format!("size={size}")));
                }
            }
        }
        for (src, dst) in &run.binds {
            mounts.push(json!({
                "destination": dst, "type": "bind", "source": src,
                "options": ["rbind", "ro", "nosuid", "nodev"],
            }));
        }
        mounts.extend(run.mounts.iter().cloned());
    }
    let seccomp = berth_seccomp::docker_default(&caps);
    spec["linux"]["seccomp"] = serde_json::to_value(seccomp).unwrap_or(Value::Null);
    // Builds get no device cgroup rules beyond the runtime's defaults and
    // no resource limits.
    if let Some(obj) = spec["linux"].as_object_mut() {
        obj.remove("resources");
    }
    if run.network == Network::Host {
        if let Some(ns) = spec["linux"]["namespaces"].as_array_mut() {
            ns.retain(|n| n["type"] != "network");
        }
    } else if let Some(ns) = spec["linux"]["namespaces"].as_array_mut() {
        ns.retain(|n| n["type"] != "network");
        match &run.netns {
            Some(path) => ns.push(json!({"type": "network", "path": path})),
            None => ns.push(json!({"type": "network"})),
        }
    }
    spec
}

/// A network namespace wired to the default bridge for one RUN, as `berth
/// run` wires a container (berth-net: veth on `berth0`, an address leased
/// host-wide, NAT). The namespace is made before the container (a bind mount
/// of it keeps it alive), so the runtime only joins it and the build needs
/// no step between create and start. Dropping it unmounts the namespace
/// (the kernel removes the veth with it) and gives the address back.
pub struct BridgeNetns {
    root: PathBuf,
    id: String,
    path: PathBuf,
    attached: bool,
}

impl BridgeNetns {
    /// A namespace at `dir/netns` for the step `id`, attached to `bridge`
    /// in the networks of the store at `root`.
    pub fn new(root: &Path, id: &str, dir: &Path) -> Result<BridgeNetns, RunError> {
        let path = dir.join("netns");
        File::create(&path).map_err(io_ctx(format!("create {}", path.display())))?;
        new_netns_at(&path).map_err(io_ctx("make a network namespace"))?;
        let mut ns = BridgeNetns {
            root: root.to_path_buf(),
            id: id.to_string(),
            path,
            attached: false,
        };
        berth_net::Net::open(root)?.connect(&berth_net::Attach {
            container_id: id.to_string(),
            name: id.to_string(),
            network: "bridge".into(),
            netns: ns.path.clone(),
            aliases: Vec::new(),
            ports: Vec::new(),
            hosts_file: None,
            hostname: "berth-build".into(),
            ip: None,
            mac: None,
            extra_hosts: Vec::new(),
        })?;
        ns.attached = true;
        Ok(ns)
    }

    /// The namespace's path, for the spec.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BridgeNetns {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
        if self.attached {
            if let Err(e) = berth_net::Net::open(&self.root).and_then(|n| n.release(&self.id)) {
                eprintln!("WARNING: releasing the build network of {}: {e}", self.id);
            }
        }
    }
}

/// Waits for the child `pid` (again when a signal interrupts); its wait status.
pub fn wait_child(pid: libc::pid_t) -> std::io::Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: waiting for a child of this process; `status` outlives the call.
        if unsafe { libc::waitpid(pid, &mut status, 0) } >= 0 {
            return Ok(status);
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Makes a network namespace and bind-mounts it on `target` (an existing
/// file), as `ip netns add` does. A forked child unshares, so this process
/// keeps its own namespace; the build is single-threaded, and the child
/// only makes raw system calls on strings prepared before the fork.
fn new_netns_at(target: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let source = CString::new("/proc/self/ns/net")?;
    let target = CString::new(target.as_os_str().as_bytes())?;
    // SAFETY: the child calls only async-signal-safe functions and _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: raw calls on valid C strings, then _exit without unwinding.
        unsafe {
            let ok = libc::unshare(libc::CLONE_NEWNET) == 0
                && libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ) == 0;
            libc::_exit(if ok { 0 } else { 1 });
        }
    }
    let status = wait_child(pid)?;
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else {
        Err(std::io::Error::other(
            "unshare(CLONE_NEWNET) or its bind mount failed",
        ))
    }
}

fn nofile_hard() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, hard)| hard)
        .unwrap_or(1024)
}

/// Runs the command in `bundle` (whose `rootfs` the caller has mounted),
/// its stdout and stderr going to `log`; returns the exit code.
pub fn run(
    state_root: &Path,
    id: &str,
    bundle: &Path,
    run: &RunSpec,
    rootfs: &Path,
    log: &Path,
) -> Result<i32, RunError> {
    let config = spec(run, rootfs);
    let text = serde_json::to_vec_pretty(&config).unwrap_or_default();
    fs::write(bundle.join("config.json"), text).map_err(io_ctx("write config.json"))?;
    let out = File::create(log).map_err(io_ctx(format!("create {}", log.display())))?;
    let rt = berth_runtime::Runtime::new(state_root);
    let _redirect = Redirect::new(&out).map_err(io_ctx("redirect output"))?;
    let code = rt.run(
        id,
        bundle,
        &berth_runtime::CreateOptions::default(),
        false,
        false,
    )?;
    Ok(code)
}

/// Points fds 0, 1 and 2 at a log file (and /dev/null) for as long as it
/// lives; the container inherits them.
struct Redirect {
    saved: [i32; 3],
}

impl Redirect {
    fn new(out: &File) -> std::io::Result<Redirect> {
        let null = File::open("/dev/null")?;
        let mut saved = [-1; 3];
        for (i, fd) in [0, 1, 2].into_iter().enumerate() {
            // SAFETY: dup of a standard descriptor we own for the process.
            let s = unsafe { libc::dup(fd) };
            if s < 0 {
                let err = std::io::Error::last_os_error();
                restore(&saved);
                return Err(err);
            }
            saved[i] = s;
        }
        let sources = [null.as_raw_fd(), out.as_raw_fd(), out.as_raw_fd()];
        for (fd, src) in [0, 1, 2].into_iter().zip(sources) {
            // SAFETY: dup2 onto a standard descriptor; the originals are saved.
            if unsafe { libc::dup2(src, fd) } < 0 {
                let err = std::io::Error::last_os_error();
                restore(&saved);
                return Err(err);
            }
        }
        Ok(Redirect { saved })
    }
}

fn restore(saved: &[i32; 3]) {
    for (fd, s) in [0, 1, 2].into_iter().zip(saved) {
        if *s >= 0 {
            // SAFETY: putting back the descriptors saved in `new`.
            unsafe {
                libc::dup2(*s, fd);
                libc::close(*s);
            }
        }
    }
}

impl Drop for Redirect {
    fn drop(&mut self) {
        restore(&self.saved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_spec() -> RunSpec {
        RunSpec {
            args: vec!["/bin/sh".into(), "-c".into(), "true".into()],
            env: vec![],
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            additional_gids: vec![],
            network: Network::None,
            netns: None,
            hostname: "h".into(),
            binds: vec![],
            mounts: vec![],
            options: RunOptions::default(),
        }
    }

    #[test]
    fn build_options_reach_the_spec() {
        let options = RunOptions {
            extra_hosts: vec![("db".into(), "10.1.2.3".into())],
            shm_size: Some(128 << 20),
            ulimits: vec![("RLIMIT_NOFILE".into(), 100, 200)],
        };
        let run = RunSpec {
            options: options.clone(),
            ..test_spec()
        };
        let s = spec(&run, Path::new("/r"));
        let rl = s["process"]["rlimits"].as_array().unwrap();
        assert_eq!(rl.len(), 1, "the default NOFILE limit is replaced: {rl:?}");
        assert_eq!(rl[0]["soft"], 100);
        assert_eq!(rl[0]["hard"], 200);
        let shm = s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/dev/shm")
            .unwrap();
        let opts: Vec<&str> = shm["options"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o.as_str())
            .collect();
        assert!(opts.contains(&"size=134217728"), "{opts:?}");
        assert_eq!(opts.iter().filter(|o| o.starts_with("size=")).count(), 1);
        assert_eq!(
            options.hosts_file(Some("127.0.0.1 localhost")),
            "127.0.0.1 localhost\n10.1.2.3\tdb\n"
        );
        assert!(options.hosts_file(None).ends_with("\n10.1.2.3\tdb\n"));
        assert!(RunOptions::default().key().is_empty());
        assert!(!options.key().is_empty());
    }

    #[test]
    fn spec_has_docker_defaults() {
        let run = RunSpec {
            env: vec!["PATH=/bin".into()],
            uid: 5,
            gid: 6,
            ..test_spec()
        };
        let s = spec(&run, Path::new("/r"));
        assert_eq!(
            s["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len(),
            14
        );
        assert_eq!(s["process"]["user"]["uid"], 5);
        assert!(s["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["type"] == "network"));
        assert!(s["linux"]["seccomp"]["syscalls"].is_array());
        let host = spec(
            &RunSpec {
                network: Network::Host,
                ..run
            },
            Path::new("/r"),
        );
        assert!(!host["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["type"] == "network"));
    }
}

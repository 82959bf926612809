//! Loading and validating a bundle's config.json before anything is created, so a bad
//! bundle fails with one line naming the field and leaves nothing behind.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, PosixRlimitType, Process, Spec};

use crate::error::{Context, Error, Result};

/// A validated bundle: the spec plus the absolute rootfs path.
pub struct Bundle {
    pub dir: PathBuf,
    pub spec: Spec,
    pub rootfs: PathBuf,
}

impl Bundle {
    pub fn load(dir: &Path) -> Result<Bundle> {
        let dir = std::fs::canonicalize(dir).ctx(|| format!("bundle {}", dir.display()))?;
        let spec = load_spec(&dir.join("config.json"))?;
        Bundle::checked(dir, spec)
    }

    /// The bundle in `dir` with `spec`, the config.json its caller has just written:
    /// checked as [`Bundle::load`] checks it, without reading and parsing it back.
    pub fn with_spec(dir: &Path, spec: Spec) -> Result<Bundle> {
        let dir = std::fs::canonicalize(dir).ctx(|| format!("bundle {}", dir.display()))?;
        Bundle::checked(dir, spec)
    }

    fn checked(dir: PathBuf, spec: Spec) -> Result<Bundle> {
        let rootfs = rootfs_path(&dir, &spec)?;
        validate(&spec)?;
        Ok(Bundle { dir, spec, rootfs })
    }

    pub fn process(&self) -> Result<&Process> {
        self.spec
            .process()
            .as_ref()
            .ok_or_else(|| Error::config("process", "missing"))
    }
}

/// Parses config.json keeping the JSON path of the first error, e.g.
/// `linux.namespaces[2].type: unknown variant "foo"`.
pub fn load_spec(path: &Path) -> Result<Spec> {
    let text = std::fs::read(path).ctx(|| format!("{}", path.display()))?;
    let de = &mut serde_json::Deserializer::from_slice(&text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let field = if field == "." || field == "?" {
            String::from("config.json")
        } else {
            field
        };
        Error::config(field, inner.to_string())
    })
}

fn rootfs_path(bundle: &Path, spec: &Spec) -> Result<PathBuf> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| Error::config("root", "missing"))?;
    let path = bundle.join(root.path());
    match std::fs::metadata(&path) {
        Ok(m) if m.is_dir() => Ok(path),
        Ok(_) => Err(Error::config(
            "root.path",
            format!("{} is not a directory", path.display()),
        )),
        Err(e) => Err(Error::config(
            "root.path",
            format!("{}: {e}", path.display()),
        )),
    }
}

fn validate(spec: &Spec) -> Result<()> {
    if let Some(linux) = spec.linux() {
        let mut seen = HashSet::new();
        for (i, ns) in linux.namespaces().iter().flatten().enumerate() {
            if !seen.insert(ns.typ()) {
                return Err(Error::config(
                    format!("linux.namespaces[{i}]"),
                    format!("duplicate namespace type {}", ns.typ()),
                ));
            }
            if let Some(p) = ns.path() {
                if !p.exists() {
                    let f = format!("linux.namespaces[{i}].path");
                    return Err(Error::config(f, format!("{} does not exist", p.display())));
                }
            }
        }
        let new_user = linux
            .namespaces()
            .iter()
            .flatten()
            .any(|n| n.typ() == LinuxNamespaceType::User && n.path().is_none());
        if new_user && linux.uid_mappings().as_ref().is_none_or(|m| m.is_empty()) {
            return Err(Error::config(
                "linux.uidMappings",
                "a new user namespace needs uid mappings",
            ));
        }
        validate_sysctls(linux)?;
    }
    if let Some(process) = spec.process() {
        validate_rlimits(process)?;
        if process.args().as_ref().is_none_or(|a| a.is_empty()) {
            return Err(Error::config("process.args", "must not be empty"));
        }
        if !process.cwd().is_absolute() {
            return Err(Error::config("process.cwd", "must be an absolute path"));
        }
    }
    Ok(())
}

/// The sysctls of IPC namespaces (runc's list, Docker's client's too): System V IPC and
/// POSIX message queues.
const IPC_SYSCTLS: [&str; 8] = [
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// Whether sysctl `key` belongs to an IPC namespace.
pub fn is_ipc_sysctl(key: &str) -> bool {
    IPC_SYSCTLS.contains(&key) || key.starts_with("fs.mqueue.")
}

/// A sysctl is written from inside the container's namespaces, so one whose namespace the
/// container shares with the runtime (the host's, usually) would change the host: refuse
/// it, as runc does, instead of writing `net.ipv4.ip_forward` for the whole machine.
fn validate_sysctls(linux: &oci_spec::runtime::Linux) -> Result<()> {
    // `kind`: the namespace's name under /proc/<pid>/ns.
    let own_ns = |typ: LinuxNamespaceType, kind: &str| {
        linux
            .namespaces()
            .iter()
            .flatten()
            .find(|n| n.typ() == typ)
            .is_some_and(|n| n.path().as_ref().is_none_or(|p| !is_runtime_ns(p, kind)))
    };
    for key in linux.sysctl().iter().flat_map(|m| m.keys()) {
        let field = format!("linux.sysctl[{key}]");
        let ipc = is_ipc_sysctl(key);
        if ipc && !own_ns(LinuxNamespaceType::Ipc, "ipc") {
            let msg = format!("sysctl {key:?} is not allowed in the hosts ipc namespace");
            return Err(Error::config(field, msg));
        }
        if key.starts_with("net.") && !own_ns(LinuxNamespaceType::Network, "net") {
            let msg = format!("sysctl {key:?} not allowed in host network namespace");
            return Err(Error::config(field, msg));
        }
        let uts = key == "kernel.hostname" || key == "kernel.domainname";
        if uts && !own_ns(LinuxNamespaceType::Uts, "uts") {
            let msg = format!("sysctl {key:?} is not allowed in the hosts uts namespace");
            return Err(Error::config(field, msg));
        }
        if !ipc && !uts && !key.starts_with("net.") {
            let msg = format!("sysctl {key:?} is not in a separate kernel namespace");
            return Err(Error::config(field, msg));
        }
    }
    Ok(())
}

/// Whether the namespace file `path` is the runtime's own namespace of `kind` (a spec may
/// join the host's network namespace by path rather than by leaving it out).
fn is_runtime_ns(path: &Path, kind: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let own = std::fs::metadata(format!("/proc/self/ns/{kind}"));
    match (std::fs::metadata(path), own) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Without CAP_SYS_RESOURCE (as on our build machines) the hard limits can only go down,
/// so a spec asking for more would fail deep inside the container; say so up front.
fn validate_rlimits(process: &Process) -> Result<()> {
    let can_raise = has_effective_cap(24 /* CAP_SYS_RESOURCE */);
    for rl in process.rlimits().iter().flatten() {
        let field = format!("process.rlimits[{}]", rlimit_name(rl.typ()));
        if rl.soft() > rl.hard() {
            return Err(Error::config(
                field,
                format!("soft limit {} exceeds hard limit {}", rl.soft(), rl.hard()),
            ));
        }
        let (_, cur_hard) = current_rlimit(rlimit_resource(rl.typ()));
        if !can_raise && rl.hard() > cur_hard {
            return Err(Error::config(
                field,
                format!(
                    "hard limit {} exceeds this host's hard limit {} and CAP_SYS_RESOURCE is not held",
                    rl.hard(),
                    cur_hard
                ),
            ));
        }
        if rlimit_resource(rl.typ()) == libc::RLIMIT_NOFILE as i32 {
            let nr_open = read_u64("/proc/sys/fs/nr_open").unwrap_or(u64::MAX);
            if rl.hard() > nr_open {
                return Err(Error::config(
                    field,
                    format!("hard limit {} exceeds fs.nr_open {nr_open}", rl.hard()),
                ));
            }
        }
    }
    Ok(())
}

pub(crate) fn rlimit_name(t: PosixRlimitType) -> String {
    serde_json::to_value(t)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

pub(crate) fn rlimit_resource(t: PosixRlimitType) -> i32 {
    use PosixRlimitType::*;
    (match t {
        RlimitCpu => libc::RLIMIT_CPU,
        RlimitFsize => libc::RLIMIT_FSIZE,
        RlimitData => libc::RLIMIT_DATA,
        RlimitStack => libc::RLIMIT_STACK,
        RlimitCore => libc::RLIMIT_CORE,
        RlimitRss => libc::RLIMIT_RSS,
        RlimitNproc => libc::RLIMIT_NPROC,
        RlimitNofile => libc::RLIMIT_NOFILE,
        RlimitMemlock => libc::RLIMIT_MEMLOCK,
        RlimitAs => libc::RLIMIT_AS,
        RlimitLocks => libc::RLIMIT_LOCKS,
        RlimitSigpending => libc::RLIMIT_SIGPENDING,
        RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        RlimitNice => libc::RLIMIT_NICE,
        RlimitRtprio => libc::RLIMIT_RTPRIO,
        RlimitRttime => libc::RLIMIT_RTTIME,
    }) as i32
}

fn current_rlimit(resource: i32) -> (u64, u64) {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we own.
    if unsafe { libc::getrlimit(resource as _, &mut rl) } != 0 {
        return (u64::MAX, u64::MAX);
    }
    (rl.rlim_cur, rl.rlim_max)
}

pub(crate) fn has_effective_cap(cap: u32) -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return true;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|mask| mask & (1u64 << cap) != 0)
}

pub(crate) fn read_u64(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linux(namespaces: &[&str], key: &str) -> oci_spec::runtime::Linux {
        let ns: Vec<_> = namespaces
            .iter()
            .map(|t| serde_json::json!({"type": t}))
            .collect();
        serde_json::from_value(serde_json::json!({"namespaces": ns, "sysctl": {key: "1"}})).unwrap()
    }

    #[test]
    fn sysctls_of_the_hosts_namespaces_are_refused() {
        let e = validate_sysctls(&linux(&["mount"], "net.ipv4.ip_forward")).unwrap_err();
        assert!(
            e.to_string()
                .contains("not allowed in host network namespace"),
            "{e}"
        );
        let e = validate_sysctls(&linux(&["network"], "kernel.shmmax")).unwrap_err();
        assert!(e.to_string().contains("hosts ipc namespace"), "{e}");
        let e = validate_sysctls(&linux(&["network", "ipc"], "vm.swappiness")).unwrap_err();
        assert!(
            e.to_string().contains("not in a separate kernel namespace"),
            "{e}"
        );
        let own = linux(&["network", "ipc"], "net.ipv4.ip_forward");
        assert!(validate_sysctls(&own).is_ok());
        assert!(validate_sysctls(&linux(&["ipc"], "fs.mqueue.msg_max")).is_ok());
    }

    #[test]
    fn joining_the_runtimes_own_network_namespace_is_the_host_one() {
        let l: oci_spec::runtime::Linux = serde_json::from_value(serde_json::json!({
            "namespaces": [{"type": "network", "path": "/proc/self/ns/net"}],
            "sysctl": {"net.ipv4.ip_forward": "1"}
        }))
        .unwrap();
        assert!(validate_sysctls(&l).is_err());
    }
}

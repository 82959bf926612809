//! The OCI runtime spec (config.json) for a container, with Docker's defaults: the 14
//! default capabilities, masked and read-only /proc and /sys paths, a private /dev, the
//! engine's hosts/hostname/resolv.conf bind mounts, the cgroup under `/berth/<id>`.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::record::{Container, MountSpec};
use crate::{Error, Result};

/// Docker's default capability set.
pub use berth_runtime::caps::DOCKER_DEFAULT as DEFAULT_CAPS;

const MASKED: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const READONLY: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Every capability the kernel knows and berth may hand on, for `--privileged` and
/// `--cap-add ALL`. Inside a container or a restricted sandbox berth's own bounding set
/// lacks some, and asking for one it lacks makes the init's capset fail.
pub(crate) fn all_caps() -> Vec<String> {
    let bounding = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX);
    kernel_caps()
        .into_iter()
        .enumerate()
        .filter(|(i, _)| bounding & (1u64 << i) != 0)
        .map(|(_, s)| s)
        .collect()
}

/// Every capability the running kernel knows.
fn kernel_caps() -> Vec<String> {
    let last = berth_runtime::caps::last_cap();
    caps_names()
        .iter()
        .take(last as usize + 1)
        .map(|s| format!("CAP_{s}"))
        .collect()
}

fn caps_names() -> [&'static str; 41] {
    [
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
    ]
}

fn cap_name(s: &str) -> String {
    let up = s.to_ascii_uppercase();
    if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    }
}

/// The capability set after `--cap-add`/`--cap-drop` (Docker: drop first, then add;
/// `ALL` on either side).
pub fn capabilities(c: &Container) -> Result<Vec<String>> {
    let cfg = &c.config;
    if cfg.privileged {
        return Ok(all_caps());
    }
    let known = kernel_caps();
    // `field` names the list in the error, as Docker's "invalid CapAdd: …".
    let check = |field: &str, names: &[String]| match names
        .iter()
        .find(|n| *n != "CAP_ALL" && !known.contains(n))
    {
        Some(n) => Err(Error::Invalid(format!(
            "invalid {field}: unknown capability: {n:?}"
        ))),
        None => Ok(()),
    };
    let drop: Vec<String> = cfg.cap_drop.iter().map(|s| cap_name(s)).collect();
    let add: Vec<String> = cfg.cap_add.iter().map(|s| cap_name(s)).collect();
    check("CapAdd", &add)?;
    check("CapDrop", &drop)?;
    let mut caps: Vec<String> = if drop.iter().any(|d| d == "CAP_ALL") {
        Vec::new()
    } else {
        DEFAULT_CAPS
            .iter()
            .map(|s| s.to_string())
            .filter(|s| !drop.contains(s))
            .collect()
    };
    let held = all_caps();
    if add.iter().any(|a| a == "CAP_ALL") {
        return Ok(held);
    }
    for a in add {
        if !held.contains(&a) {
            return Err(Error::Invalid(format!(
                "cannot add {a}: berth does not hold it itself (its bounding set lacks it)"
            )));
        }
        if !caps.contains(&a) {
            caps.push(a);
        }
    }
    Ok(caps)
}

/// uid, gid and additional gids for `user` (`name`, `uid`, `name:group`, `uid:gid`),
/// resolved against the container's /etc/passwd and /etc/group.
pub fn resolve_user(
    rootfs: &Path,
    user: &str,
    group_add: &[String],
) -> Result<(u32, u32, Vec<u32>)> {
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default();
    let group = std::fs::read_to_string(rootfs.join("etc/group")).unwrap_or_default();
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let entry = |file: &str, key: &str| -> Option<Vec<String>> {
        file.lines()
            .map(|l| l.split(':').map(str::to_owned).collect::<Vec<_>>())
            .find(|f| f.len() >= 3 && (f[0] == key || f[2] == key))
    };
    let (uid, mut gid) = if u.is_empty() {
        (0, 0)
    } else if let Some(f) = entry(&passwd, u) {
        let uid = f[2].parse().unwrap_or(0);
        let gid = f.get(3).and_then(|g| g.parse().ok()).unwrap_or(0);
        (uid, gid)
    } else if let Ok(uid) = u.parse::<u32>() {
        (uid, 0)
    } else {
        return Err(Error::Invalid(format!(
            "unable to find user {u}: no matching entries in passwd file"
        )));
    };
    if let Some(g) = g {
        gid = lookup_group(&group, g)?;
    }
    // The primary group is always a supplementary group too (Docker and containerd since
    // CVE-2023-25173: otherwise a process could drop it and escape a group-deny rule),
    // then the groups listing the user by name, as Docker does.
    let mut extra = vec![gid];
    let name = entry(&passwd, u).map(|f| f[0].clone());
    if let Some(name) = &name {
        for l in group.lines() {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() >= 4 && f[3].split(',').any(|m| m == name) {
                if let Ok(id) = f[2].parse::<u32>() {
                    if !extra.contains(&id) {
                        extra.push(id);
                    }
                }
            }
        }
    }
    for g in group_add {
        // Docker's words for an unknown --group-add, capitalised unlike the user's group's.
        let id = lookup_group(&group, g).map_err(|_| {
            Error::Invalid(format!(
                "Unable to find group {g}: no matching entries in group file"
            ))
        })?;
        if !extra.contains(&id) {
            extra.push(id);
        }
    }
    Ok((uid, gid, extra))
}

/// Orders mounts parents first (fewer path components first, the order given otherwise),
/// as Docker does: a volume at `/etc` must not be mounted over the `/etc/hosts` bind.
fn sort_mounts(mounts: &mut [Value]) {
    mounts.sort_by_key(|m| {
        m["destination"]
            .as_str()
            .map_or(0, |d| Path::new(d).components().count())
    });
}

/// Makes the working directory in the container's rootfs if it is missing, as Docker
/// does at create (0755, root's), and refuses one that is not a directory.
fn ensure_workdir(rootfs: &Path, cwd: &str) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    // Symlinks in the image resolve inside the rootfs, never to the host.
    let dir = berth_runtime::mounts::secure_join(rootfs, Path::new(cwd));
    match std::fs::metadata(&dir) {
        Ok(md) if md.is_dir() => Ok(()),
        Ok(_) => Err(Error::Invalid(format!(
            "Cannot mkdir: {cwd} is not a directory"
        ))),
        Err(_) => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .map_err(|e| Error::Invalid(format!("Cannot mkdir: {cwd}: {e}"))),
    }
}

fn lookup_group(group: &str, g: &str) -> Result<u32> {
    for l in group.lines() {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() >= 3 && (f[0] == g || f[2] == g) {
            if let Ok(id) = f[2].parse() {
                return Ok(id);
            }
        }
    }
    g.parse().map_err(|_| {
        Error::Invalid(format!(
            "unable to find group {g}: no matching entries in group file"
        ))
    })
}

fn bytes_option(n: i64) -> String {
    format!("size={n}")
}

/// Namespaces a container shares instead of making its own: `Some("host")` for the host's
/// (no namespace of that kind in the spec), `Some(path)` for another process's.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Joins {
    pub net: Option<String>,
    pub pid: Option<String>,
    pub ipc: Option<String>,
    /// The /dev/shm to bind instead of a tmpfs of its own (the host's or the IPC peer's).
    pub shm: Option<PathBuf>,
    pub links: Vec<Link>,
}

/// A legacy link (`--link NAME:ALIAS`) to a running container on the same network.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Link {
    pub alias: String,
    /// The linked container's name, hostname, address, environment and exposed ports
    /// (`80/tcp`).
    pub name: String,
    pub hostname: String,
    pub ip: String,
    pub env: Vec<String>,
    pub exposed: Vec<String>,
}

impl Link {
    /// Its hosts line, as Docker writes it: alias, hostname, then the name if different.
    pub fn hosts_line(&self) -> String {
        let mut names = vec![self.alias.as_str(), self.hostname.as_str()];
        if self.name != self.alias {
            names.push(&self.name);
        }
        format!("{}\t{}", self.ip, names.join(" "))
    }

    /// The variables a link on the default bridge sets in the linking container
    /// (`<ALIAS>_NAME`, `<ALIAS>_PORT_<P>_<PROTO>…`, `<ALIAS>_ENV_<VAR>`); `me` is the
    /// linking container's name.
    pub fn env(&self, me: &str) -> Vec<String> {
        let prefix = self.alias.to_ascii_uppercase().replace('-', "_");
        let mut ports: Vec<(u16, &str)> = self
            .exposed
            .iter()
            .filter_map(|p| {
                let (n, proto) = p.split_once('/').unwrap_or((p, "tcp"));
                n.parse().ok().map(|n| (n, proto))
            })
            .collect();
        ports.sort();
        let mut out = vec![format!("{prefix}_NAME=/{me}/{}", self.alias)];
        if let Some((n, proto)) = ports.first() {
            out.push(format!("{prefix}_PORT={proto}://{}:{n}", self.ip));
        }
        for (n, proto) in &ports {
            let key = format!("{prefix}_PORT_{n}_{}", proto.to_ascii_uppercase());
            out.push(format!("{key}={proto}://{}:{n}", self.ip));
            out.push(format!("{key}_ADDR={}", self.ip));
            out.push(format!("{key}_PORT={n}"));
            out.push(format!("{key}_PROTO={proto}"));
        }
        for e in &self.env {
            let Some((k, v)) = e.split_once('=') else {
                continue;
            };
            // As Docker: the variables every image has say nothing about the peer.
            if k != "HOME" && k != "PATH" {
                out.push(format!("{prefix}_ENV_{k}={v}"));
            }
        }
        out
    }
}

/// The binds of the engine's `/etc/resolv.conf`, `/etc/hostname` and `/etc/hosts`. With
/// `--read-only` they are read-only too, as Docker makes them: a read-only container must
/// not rewrite its name or resolver for the engine (which rewrites the hosts file itself).
fn network_file_mounts(dir: &Path, read_only: bool) -> Vec<Value> {
    let mut options = vec!["rbind", "rprivate"];
    if read_only {
        options.push("ro");
    }
    ["resolv.conf", "hostname", "hosts"]
        .iter()
        .map(|f| {
            json!({"destination": format!("/etc/{f}"), "type": "bind",
                "source": dir.join(f), "options": options})
        })
        .collect()
}

/// The spec as JSON. `rootfs` must be mounted (the user is looked up in it); `volumes`
/// maps volume mounts to their host directories; `joins` the namespaces it shares.
pub fn build(
    c: &Container,
    dir: &Path,
    joins: &Joins,
    volumes: &[(MountSpec, PathBuf)],
) -> Result<Value> {
    let netns = joins.net.as_deref();
    let cfg = &c.config;
    let rootfs = dir.join("rootfs");
    let (uid, gid, extra) = resolve_user(&rootfs, &cfg.user, &cfg.group_add)?;
    let caps = capabilities(c)?;
    let shm = cfg.shm_size.unwrap_or(64 << 20);
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
    ];
    match (&joins.shm, cfg.ipc_mode.as_str()) {
        (Some(src), _) => mounts.push(json!({"destination": "/dev/shm", "type": "bind",
            "source": src, "options": ["rbind", "rprivate"]})),
        (None, "none") => {}
        (None, _) => mounts.push(
            json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", bytes_option(shm)]}),
        ),
    }
    mounts.extend(network_file_mounts(dir, cfg.read_only));
    for (m, host) in volumes {
        let mut opts = vec!["rbind".to_string(), "rprivate".to_string()];
        if m.read_only {
            opts.push("ro".into());
        }
        mounts.push(
            json!({"destination": m.destination, "type": "bind", "source": host, "options": opts}),
        );
    }
    for m in cfg.mounts.iter().filter(|m| m.kind == "tmpfs") {
        let mut opts = vec![
            "nosuid".to_string(),
            "nodev".to_string(),
            "noexec".to_string(),
        ];
        opts.extend(m.options.iter().cloned());
        if m.read_only {
            opts.push("ro".into());
        }
        mounts.push(json!({"destination": m.destination, "type": "tmpfs", "source": "tmpfs", "options": opts}));
    }
    let mut namespaces = Vec::new();
    let uts_host = cfg.uts_mode == "host";
    let cgroup_host = cfg.cgroupns_mode == "host";
    for (kind, join) in [
        ("pid", joins.pid.as_deref()),
        ("ipc", joins.ipc.as_deref()),
        ("uts", uts_host.then_some("host")),
        ("mount", None),
        ("cgroup", cgroup_host.then_some("host")),
        ("network", netns),
    ] {
        match join {
            Some("host") => {}
            Some(path) => namespaces.push(json!({"type": kind, "path": path})),
            None => namespaces.push(json!({"type": kind})),
        }
    }
    let mut env = vec![];
    let has = |k: &str| cfg.env.iter().any(|e| e.split('=').next() == Some(k));
    if !has("PATH") {
        env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string());
    }
    env.push(format!("HOSTNAME={}", cfg.hostname));
    if cfg.tty && !has("TERM") {
        env.push("TERM=xterm".into());
    }
    if matches!(crate::net::mode(&cfg.network), crate::net::Mode::Network(n) if n == "bridge") {
        for l in &joins.links {
            env.extend(l.env(&c.name));
        }
    }
    env.extend(cfg.env.iter().cloned());
    let cwd = if cfg.workdir.is_empty() {
        "/"
    } else {
        &cfg.workdir
    };
    ensure_workdir(&rootfs, cwd)?;
    let no_new_privs = cfg.security_opt.iter().any(|o| {
        o == "no-new-privileges" || o == "no-new-privileges:true" || o == "no-new-privileges=true"
    });
    let mut process = json!({
        "terminal": cfg.tty,
        "user": {"uid": uid, "gid": gid, "additionalGids": extra},
        "args": cfg.args,
        "env": env,
        "cwd": cwd,
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "noNewPrivileges": no_new_privs,
    });
    let rlimits = ulimits(&cfg.ulimits)?;
    if !rlimits.is_empty() {
        process["rlimits"] = json!(rlimits);
    }
    if let Some(adj) = cfg.oom_score_adj {
        process["oomScoreAdj"] = json!(adj);
    }
    let mut linux = json!({
        "namespaces": namespaces,
        "cgroupsPath": cgroups_path(c),
        "resources": resources_json(c)?,
    });
    if !cfg.privileged {
        linux["maskedPaths"] = json!(MASKED);
        linux["readonlyPaths"] = json!(READONLY);
    }
    let mut sysctls = cfg.sysctls.clone();
    if netns != Some("host") {
        // Docker's defaults for a container's own network namespace: any port and
        // ICMP echo sockets without privileges (the namespace is the container's, so
        // this opens nothing on the host). `--sysctl` wins.
        for (k, v) in [
            ("net.ipv4.ip_unprivileged_port_start", "0"),
            ("net.ipv4.ping_group_range", "0 2147483647"),
        ] {
            sysctls.entry(k.into()).or_insert_with(|| v.into());
        }
    }
    if !sysctls.is_empty() {
        linux["sysctl"] = json!(sysctls);
    }
    if !cfg.devices.is_empty() {
        linux["devices"] = devices(&cfg.devices)?;
    }
    if let Some(s) = seccomp(c, &caps)? {
        linux["seccomp"] = s;
    }
    sort_mounts(&mut mounts);
    let mut annotations: serde_json::Map<String, Value> = cfg
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    if cfg.init {
        annotations.insert("org.berth.init".into(), json!("true"));
    }
    let mut spec = json!({
        "ociVersion": "1.2.0",
        "process": process,
        "root": {"path": "rootfs", "readonly": cfg.read_only},
        "mounts": mounts,
        "linux": linux,
        "annotations": annotations,
    });
    // In the host's UTS namespace a hostname would rename the host.
    if !uts_host {
        spec["hostname"] = json!(cfg.hostname);
    }
    Ok(spec)
}

/// The container's cgroup: `/berth/<id>`, or under `--cgroup-parent`.
pub fn cgroups_path(c: &Container) -> String {
    let parent = match c.config.cgroup_parent.trim_end_matches('/') {
        "" => "/berth",
        p => p,
    };
    let sep = if parent.starts_with('/') { "" } else { "/" };
    format!("{sep}{parent}/{}", c.id)
}

/// A `--device-cgroup-rule` (`TYPE MAJOR:MINOR ACCESS`, `*` for any number) as a
/// runtime-spec device rule.
pub fn device_cgroup_rule(rule: &str) -> Result<Value> {
    let bad = || Error::Invalid(format!("invalid device cgroup rule format: {rule:?}"));
    let parts: Vec<&str> = rule.split_whitespace().collect();
    let [kind, numbers, access] = parts[..] else {
        return Err(bad());
    };
    if !matches!(kind, "a" | "b" | "c")
        || access.is_empty()
        || !access.chars().all(|c| "rwm".contains(c))
    {
        return Err(bad());
    }
    let (major, minor) = numbers.split_once(':').ok_or_else(bad)?;
    let mut out = json!({"allow": true, "type": kind, "access": access});
    for (key, n) in [("major", major), ("minor", minor)] {
        if n != "*" {
            out[key] = json!(n.parse::<i64>().map_err(|_| bad())?);
        }
    }
    Ok(out)
}

/// The seccomp profile: Docker's default unless `--privileged` or
/// `--security-opt seccomp=unconfined`; a profile file given as `seccomp=<path>`.
fn seccomp(c: &Container, caps: &[String]) -> Result<Option<Value>> {
    if c.config.privileged {
        return Ok(None);
    }
    for o in &c.config.security_opt {
        if let Some(p) = o
            .strip_prefix("seccomp=")
            .or_else(|| o.strip_prefix("seccomp:"))
        {
            if p == "unconfined" {
                return Ok(None);
            }
            let text = std::fs::read_to_string(p).map_err(|e| {
                Error::Invalid(format!("opening seccomp profile ({p}) failed: {e}"))
            })?;
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| Error::Invalid(format!("decoding seccomp profile {p}: {e}")))?;
            return Ok(Some(v));
        }
    }
    default_seccomp(caps).map(Some)
}

/// Docker's default seccomp profile for a container holding `caps` (berth-seccomp's).
pub fn default_seccomp(caps: &[String]) -> Result<Value> {
    Ok(berth_seccomp::docker_default_json(caps))
}

/// `linux.resources` for the container's limits.
pub fn resources_json(c: &Container) -> Result<Value> {
    let cfg = &c.config;
    let mut r = json!({});
    let mut mem = json!({});
    if let Some(m) = cfg.memory {
        mem["limit"] = json!(m);
        // Docker: swap defaults to twice the memory limit.
        let swap = match cfg.memory_swap {
            Some(s) => s,
            None => m * 2,
        };
        mem["swap"] = json!(swap);
    }
    if let Some(r) = cfg.memory_reservation {
        mem["reservation"] = json!(r);
    }
    if let Some(s) = cfg.memory_swappiness.filter(|s| *s >= 0) {
        mem["swappiness"] = json!(s);
    }
    if cfg.oom_kill_disable {
        mem["disableOOMKiller"] = json!(true);
    }
    if mem.as_object().is_some_and(|o| !o.is_empty()) {
        r["memory"] = mem;
    }
    let mut cpu = json!({});
    if let Some(n) = cfg.nano_cpus {
        cpu["period"] = json!(100_000u64);
        cpu["quota"] = json!(n / 10_000);
    }
    if let Some(s) = cfg.cpu_shares {
        cpu["shares"] = json!(s);
    }
    if let Some(s) = &cfg.cpuset_cpus {
        cpu["cpus"] = json!(s);
    }
    if let Some(p) = cfg.cpu_period {
        cpu["period"] = json!(p);
    }
    if let Some(q) = cfg.cpu_quota {
        cpu["quota"] = json!(q);
    }
    if let Some(p) = cfg.cpu_rt_period {
        cpu["realtimePeriod"] = json!(p);
    }
    if let Some(r) = cfg.cpu_rt_runtime {
        cpu["realtimeRuntime"] = json!(r);
    }
    if let Some(m) = &cfg.cpuset_mems {
        cpu["mems"] = json!(m);
    }
    if cpu.as_object().is_some_and(|o| !o.is_empty()) {
        r["cpu"] = cpu;
    }
    if let Some(p) = cfg.pids_limit {
        r["pids"] = json!({"limit": p});
    }
    let mut bio = json!({});
    if let Some(w) = cfg.blkio_weight.filter(|w| *w > 0) {
        bio["weight"] = json!(w);
    }
    let b = &cfg.blkio_devices;
    for (key, list, value) in [
        ("weightDevice", &b.weight, "weight"),
        ("throttleReadBpsDevice", &b.read_bps, "rate"),
        ("throttleWriteBpsDevice", &b.write_bps, "rate"),
        ("throttleReadIOPSDevice", &b.read_iops, "rate"),
        ("throttleWriteIOPSDevice", &b.write_iops, "rate"),
    ] {
        if list.is_empty() {
            continue;
        }
        let mut rules = Vec::new();
        for (path, v) in list {
            let Some((major, minor, "b")) = device_numbers(path) else {
                return Err(Error::Invalid(format!("{path}: not a block device")));
            };
            rules.push(json!({"major": major, "minor": minor, value: v}));
        }
        bio[key] = json!(rules);
    }
    if bio.as_object().is_some_and(|o| !o.is_empty()) {
        r["blockIO"] = bio;
    }
    let mut devs = vec![json!({"allow": false, "access": "rwm"})];
    // Docker's default rules: mknod anything, use the standard nodes, ptys and tun.
    for (kind, major, minor) in DEFAULT_DEVICE_RULES {
        let access = if major < 0 { "m" } else { "rwm" };
        let mut rule = json!({"allow": true, "type": kind, "access": access});
        if major >= 0 {
            rule["major"] = json!(major);
        }
        if minor >= 0 {
            rule["minor"] = json!(minor);
        }
        devs.push(rule);
    }
    if cfg.privileged {
        devs = vec![json!({"allow": true, "access": "rwm"})];
    }
    for d in &cfg.devices {
        if let Some((major, minor, kind)) = device_numbers(d.split(':').next().unwrap_or(d)) {
            devs.push(json!({"allow": true, "type": kind, "major": major, "minor": minor, "access": "rwm"}));
        }
    }
    for rule in &cfg.device_cgroup_rules {
        devs.push(device_cgroup_rule(rule)?);
    }
    r["devices"] = json!(devs);
    Ok(r)
}

/// (type, major, minor); -1 is a wildcard (and for major, an mknod-only rule).
const DEFAULT_DEVICE_RULES: [(&str, i64, i64); 12] = [
    ("c", -1, -1),
    ("b", -1, -1),
    ("c", 1, 3),
    ("c", 1, 8),
    ("c", 1, 7),
    ("c", 5, 0),
    ("c", 1, 5),
    ("c", 1, 9),
    ("c", 5, 1),
    ("c", 136, -1),
    ("c", 5, 2),
    ("c", 10, 200),
];

fn device_numbers(path: &str) -> Option<(u64, u64, &'static str)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let md = std::fs::metadata(path).ok()?;
    let kind = if md.file_type().is_char_device() {
        "c"
    } else if md.file_type().is_block_device() {
        "b"
    } else {
        return None;
    };
    let rdev = md.rdev();
    Some((libc::major(rdev) as u64, libc::minor(rdev) as u64, kind))
}

/// `--device /dev/x[:/dev/y[:rwm]]`.
fn devices(list: &[String]) -> Result<Value> {
    let mut out = Vec::new();
    for d in list {
        let mut parts = d.split(':');
        let host = parts.next().unwrap_or_default();
        let inner = parts.next().unwrap_or(host);
        let (major, minor, kind) = device_numbers(host)
            .ok_or_else(|| Error::Invalid(format!("error gathering device information while adding custom device {host:?}: not a device node")))?;
        out.push(json!({"path": inner, "type": kind, "major": major, "minor": minor, "fileMode": 0o666, "uid": 0, "gid": 0}));
    }
    Ok(json!(out))
}

/// `--ulimit nofile=1024:2048`.
fn ulimits(list: &[String]) -> Result<Vec<Value>> {
    list.iter()
        .map(|u| {
            let (name, soft, hard) = parse_ulimit(u)?;
            Ok(json!({"type": name, "soft": soft, "hard": hard}))
        })
        .collect()
}

/// Limits `--ulimit` may name (Docker's list, from setrlimit(2)).
const ULIMITS: [&str; 15] = [
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// One `--ulimit NAME=SOFT[:HARD]` as (`RLIMIT_NAME`, soft, hard); -1 is unlimited.
pub fn parse_ulimit(u: &str) -> Result<(String, i64, i64)> {
    let invalid = || Error::Invalid(format!("invalid ulimit argument: {u}"));
    let (name, vals) = u.split_once('=').ok_or_else(invalid)?;
    if !ULIMITS.contains(&name) {
        return Err(Error::Invalid(format!("invalid ulimit type: {name}")));
    }
    let (soft, hard) = vals.split_once(':').unwrap_or((vals, vals));
    let num = |v: &str| -> Result<i64> { v.parse().map_err(|_| invalid()) };
    let (soft, hard) = (num(soft)?, num(hard)?);
    if soft > hard && hard != -1 {
        return Err(Error::Invalid(format!(
            "ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}"
        )));
    }
    Ok((format!("RLIMIT_{}", name.to_ascii_uppercase()), soft, hard))
}

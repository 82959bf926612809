//! The container's root filesystem: spec mounts in order, pivot_root, masked and read-only
//! paths. Runs inside the container's new mount namespace, before the user program.

use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use oci_spec::runtime::{Mount, Spec};

use crate::cgroups::Cgroup;
use crate::error::{Context, Error, Result};

/// A mount's options split into mount flags, propagation and filesystem data.
#[derive(Debug)]
pub struct Options {
    pub flags: MsFlags,
    pub propagation: MsFlags,
    pub data: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            flags: MsFlags::empty(),
            propagation: MsFlags::empty(),
            data: Vec::new(),
        }
    }
}

pub fn parse_options(opts: &[String]) -> Options {
    let mut o = Options::default();
    for opt in opts {
        let (set, clear, prop) = match opt.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty(), MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY, MsFlags::empty()),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty(), MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID, MsFlags::empty()),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty(), MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV, MsFlags::empty()),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty(), MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC, MsFlags::empty()),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty(), MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty(), MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty(), MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty(), MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME, MsFlags::empty()),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty(), MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty(), MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty(), MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME, MsFlags::empty()),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty(), MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty(), MsFlags::empty()),
            "rbind" => (
                MsFlags::MS_BIND | MsFlags::MS_REC,
                MsFlags::empty(),
                MsFlags::empty(),
            ),
            "private" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_PRIVATE),
            "rprivate" => (
                MsFlags::empty(),
                MsFlags::empty(),
                MsFlags::MS_PRIVATE | MsFlags::MS_REC,
            ),
            "shared" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_SHARED),
            "rshared" => (
                MsFlags::empty(),
                MsFlags::empty(),
                MsFlags::MS_SHARED | MsFlags::MS_REC,
            ),
            "slave" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_SLAVE),
            "rslave" => (
                MsFlags::empty(),
                MsFlags::empty(),
                MsFlags::MS_SLAVE | MsFlags::MS_REC,
            ),
            "unbindable" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_UNBINDABLE),
            "runbindable" => (
                MsFlags::empty(),
                MsFlags::empty(),
                MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
            ),
            // Options for other runtimes' features we do not implement and that change
            // nothing the kernel would check.
            "tmpcopyup" | "idmap" | "ridmap" | "defaults" => continue,
            other => {
                o.data.push(other.to_owned());
                continue;
            }
        };
        o.flags |= set;
        o.flags &= !clear;
        o.propagation |= prop;
    }
    o
}

/// Joins `path` under `root` resolving symlinks as if `root` were `/`, so a symlink in the
/// image (e.g. /etc -> /host/etc, or ../../..) cannot send a mount outside the rootfs.
pub fn secure_join(root: &Path, path: &Path) -> PathBuf {
    let mut resolved = PathBuf::new();
    let mut pending: Vec<PathBuf> = path
        .components()
        .rev()
        .map(|c| PathBuf::from(c.as_os_str()))
        .collect();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        match part.components().next() {
            Some(Component::RootDir) | Some(Component::CurDir) | None => continue,
            Some(Component::ParentDir) => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        let candidate = resolved.join(&part);
        let full = root.join(&candidate);
        match std::fs::read_link(&full) {
            Ok(target) if hops < 255 => {
                hops += 1;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                for c in target.components().rev() {
                    pending.push(PathBuf::from(c.as_os_str()));
                }
            }
            _ => resolved = candidate,
        }
    }
    root.join(resolved)
}

/// Creates the mount point: a file for a file bind source, else a directory.
fn make_target(target: &Path, source_is_file: bool) -> Result<()> {
    if target.exists() {
        return Ok(());
    }
    if source_is_file {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).ctx(|| format!("mkdir {}", parent.display()))?;
        }
        std::fs::File::create(target).ctx(|| format!("create {}", target.display()))?;
    } else {
        std::fs::create_dir_all(target).ctx(|| format!("mkdir {}", target.display()))?;
    }
    Ok(())
}

fn mnt(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    mount(source, target, fstype, flags, data).ctx(|| {
        format!(
            "mount {} on {} (type {}, flags {:?}, data {:?})",
            source.map(|s| s.display().to_string()).unwrap_or_default(),
            target.display(),
            fstype.unwrap_or(""),
            flags,
            data.unwrap_or("")
        )
    })
}

/// Prepares the new root: mount propagation, the rootfs bind, and every spec mount.
/// `before_cgroup` runs before the first cgroup filesystem is mounted (the init enters its
/// cgroup namespace there).
pub fn prepare_rootfs(
    spec: &Spec,
    rootfs: &Path,
    cgroup: &Cgroup,
    cgroupns: bool,
    before_cgroup: &mut dyn FnMut() -> Result<()>,
) -> Result<()> {
    let linux = spec.linux().as_ref();
    let prop = linux
        .and_then(|l| l.rootfs_propagation().as_deref())
        .map(|p| parse_options(&[p.to_owned()]).propagation)
        .filter(|p| !p.is_empty())
        .unwrap_or(MsFlags::MS_SLAVE | MsFlags::MS_REC);
    mnt(None, Path::new("/"), None, prop, None)?;
    // pivot_root refuses a shared parent. A recursive slave, private or unbindable "/"
    // (the default rslave) left no mount shared; otherwise the rootfs' parent mount is
    // found in mountinfo and made private.
    if prop.contains(MsFlags::MS_SHARED) || !prop.contains(MsFlags::MS_REC) {
        make_parent_private(rootfs)?;
    }
    mnt(
        Some(rootfs),
        rootfs,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        if matches!(m.typ().as_deref(), Some("cgroup") | Some("cgroup2")) {
            before_cgroup()?;
        }
        mount_one(rootfs, m, cgroup, cgroupns).map_err(|e| match e {
            Error::Sys { context, err } => Error::Sys {
                context: format!("mounts[{i}] {}: {context}", m.destination().display()),
                err,
            },
            other => other,
        })?;
    }
    Ok(())
}

/// A tmpfs without `mode=` takes the mode of the directory it covers, as runc mounts it
/// (`--tmpfs /tmp` over a 0755 `/tmp` stays 0755); over a path that does not exist yet
/// it keeps tmpfs' own 1777.
fn tmpfs_keeps_dir_mode(target: &Path, data: String) -> String {
    use std::os::unix::fs::MetadataExt;
    if data.split(',').any(|o| o.starts_with("mode=")) {
        return data;
    }
    match std::fs::metadata(target) {
        Ok(md) if md.is_dir() => {
            let mode = format!("mode={:04o}", md.mode() & 0o7777);
            if data.is_empty() {
                mode
            } else {
                format!("{mode},{data}")
            }
        }
        _ => data,
    }
}

fn make_parent_private(rootfs: &Path) -> Result<()> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ctx(|| "mountinfo".into())?;
    let mut best: Option<PathBuf> = None;
    for line in info.lines() {
        let mp = PathBuf::from(unescape(line.split(' ').nth(4).unwrap_or("/")));
        if rootfs.starts_with(&mp)
            && best
                .as_ref()
                .is_none_or(|b| mp.as_os_str().len() > b.as_os_str().len())
        {
            best = Some(mp);
        }
    }
    let parent = best.unwrap_or_else(|| PathBuf::from("/"));
    mnt(None, &parent, None, MsFlags::MS_PRIVATE, None)
}

fn unescape(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("x"), 8)
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn mount_one(rootfs: &Path, m: &Mount, cgroup: &Cgroup, cgroupns: bool) -> Result<()> {
    let opts = parse_options(m.options().as_deref().unwrap_or(&[]));
    let fstype = m.typ().as_deref().unwrap_or("");
    let target = secure_join(rootfs, m.destination());
    let is_bind = opts.flags.contains(MsFlags::MS_BIND) || fstype == "bind";
    if fstype == "cgroup" || fstype == "cgroup2" {
        return mount_cgroup(&target, &opts, cgroup, cgroupns);
    }
    let source = m.source().as_deref();
    let mut data = opts.data.join(",");
    if fstype == "tmpfs" {
        data = tmpfs_keeps_dir_mode(&target, data);
    }
    let data = (!data.is_empty()).then_some(data.as_str());
    if is_bind {
        let src = source.ok_or_else(|| {
            Error::config(
                format!("mounts {}", m.destination().display()),
                "bind mount needs a source",
            )
        })?;
        let src_is_file = std::fs::metadata(src)
            .map(|md| !md.is_dir())
            .unwrap_or(false);
        make_target(&target, src_is_file)?;
        let flags = MsFlags::MS_BIND | (opts.flags & MsFlags::MS_REC);
        mnt(Some(src), &target, None, flags, None)?;
        // The bind ignores every other flag; a remount applies them, keeping the flags the
        // kernel locked on the source (nodev/nosuid/noexec in a user namespace).
        let extra = opts.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        if !extra.is_empty() {
            let locked = locked_flags(&target);
            mnt(
                None,
                &target,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra | locked,
                None,
            )?;
        }
    } else {
        make_target(&target, false)?;
        let flags = opts.flags & !MsFlags::MS_BIND;
        let mut result = mnt(
            source.or(Some(Path::new(fstype))),
            &target,
            Some(fstype),
            flags,
            data,
        );
        // mqueue/sysfs in a new user namespace without the matching ns cannot mount; runc
        // falls back to a bind of the host's, and so do we.
        if result.is_err() && (fstype == "sysfs" || fstype == "mqueue") {
            let host = if fstype == "sysfs" {
                "/sys"
            } else {
                "/dev/mqueue"
            };
            result = mnt(
                Some(Path::new(host)),
                &target,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )
            .and_then(|_| {
                mnt(
                    None,
                    &target,
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags | locked_flags(&target),
                    None,
                )
            });
        }
        result?;
    }
    if !opts.propagation.is_empty() {
        mnt(None, &target, None, opts.propagation, None)?;
    }
    Ok(())
}

fn locked_flags(path: &Path) -> MsFlags {
    let Ok(st) = nix::sys::statvfs::statvfs(path) else {
        return MsFlags::empty();
    };
    use nix::sys::statvfs::FsFlags;
    let mut f = MsFlags::empty();
    let fl = st.flags();
    if fl.contains(FsFlags::ST_NODEV) {
        f |= MsFlags::MS_NODEV;
    }
    if fl.contains(FsFlags::ST_NOSUID) {
        f |= MsFlags::MS_NOSUID;
    }
    if fl.contains(FsFlags::ST_NOEXEC) {
        f |= MsFlags::MS_NOEXEC;
    }
    if fl.contains(FsFlags::ST_RDONLY) {
        f |= MsFlags::MS_RDONLY;
    }
    f
}

/// With a cgroup namespace the kernel shows the container its own subtree, so mount the
/// filesystems directly; without one, bind the container's own cgroup directories (what
/// runc does), under a tmpfs on v1 hosts.
fn mount_cgroup(target: &Path, opts: &Options, cgroup: &Cgroup, cgroupns: bool) -> Result<()> {
    make_target(target, false)?;
    let flags = (opts.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC))
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC;
    let layout = crate::cgroups::Layout::get();
    if layout.is_pure_v2() {
        if cgroupns {
            return mnt(
                Some(Path::new("cgroup2")),
                target,
                Some("cgroup2"),
                flags,
                None,
            );
        }
        let dir = cgroup
            .dirs
            .get("")
            .ok_or_else(|| Error::Init("no cgroup2 directory".into()))?;
        mnt(
            Some(dir),
            target,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        return mnt(
            None,
            target,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags,
            None,
        );
    }
    let tmpfs_flags = flags & !MsFlags::MS_RDONLY;
    mnt(
        Some(Path::new("tmpfs")),
        target,
        Some("tmpfs"),
        tmpfs_flags,
        Some("mode=755"),
    )?;
    for (key, dir) in &cgroup.dirs {
        let name = if key.is_empty() {
            "unified".to_string()
        } else {
            key.strip_prefix("name=").unwrap_or(key).to_string()
        };
        let sub = target.join(&name);
        std::fs::create_dir_all(&sub).ctx(|| format!("mkdir {}", sub.display()))?;
        if cgroupns && !key.is_empty() {
            mnt(
                Some(Path::new("cgroup")),
                &sub,
                Some("cgroup"),
                flags,
                Some(key),
            )?;
        } else if cgroupns {
            mnt(
                Some(Path::new("cgroup2")),
                &sub,
                Some("cgroup2"),
                flags,
                None,
            )?;
        } else {
            mnt(
                Some(dir),
                &sub,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )?;
            mnt(
                None,
                &sub,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags,
                None,
            )?;
        }
        // Comounted controllers get the symlinks userspace expects (cpu -> cpu,cpuacct).
        if key.contains(',') {
            for part in key.split(',') {
                let _ = std::os::unix::fs::symlink(&name, target.join(part));
            }
        }
    }
    if flags.contains(MsFlags::MS_RDONLY) {
        mnt(
            None,
            target,
            None,
            MsFlags::MS_REMOUNT | tmpfs_flags | MsFlags::MS_RDONLY,
            Some("mode=755"),
        )?;
    }
    Ok(())
}

/// Switches the root to `rootfs`. pivot_root(".", ".") stacks the old root under the new
/// one, which we then detach: no temporary directory in the image is needed.
pub fn pivot(rootfs: &Path) -> Result<()> {
    let open_dir = |p: &Path| {
        nix::fcntl::open(
            p,
            nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ctx(|| format!("open {}", p.display()))
    };
    let old_root = open_dir(Path::new("/"))?;
    let new_root = open_dir(rootfs)?;
    nix::unistd::fchdir(new_root).ctx(|| format!("chdir {}", rootfs.display()))?;
    nix::unistd::pivot_root(".", ".").ctx(|| "pivot_root".into())?;
    // The old root now sits on top of the new one. Go to it by fd (not "."), make it a
    // slave so its unmount does not propagate to the host, and detach it. Marking "."
    // instead would also turn the container's own shared mounts into slaves.
    nix::unistd::fchdir(old_root).ctx(|| "chdir old root".into())?;
    mnt(
        None,
        Path::new("."),
        None,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None,
    )?;
    umount2(".", MntFlags::MNT_DETACH).ctx(|| "unmount old root".into())?;
    nix::unistd::fchdir(new_root).ctx(|| "chdir new root".into())?;
    let _ = nix::unistd::close(old_root);
    let _ = nix::unistd::close(new_root);
    nix::unistd::chdir("/").ctx(|| "chdir /".into())
}

/// `--no-pivot`: move the rootfs over / and chroot, for ramfs roots where pivot_root fails.
pub fn move_root(rootfs: &Path) -> Result<()> {
    nix::unistd::chdir(rootfs).ctx(|| format!("chdir {}", rootfs.display()))?;
    mnt(Some(rootfs), Path::new("/"), None, MsFlags::MS_MOVE, None)?;
    nix::unistd::chroot(".").ctx(|| "chroot".into())?;
    nix::unistd::chdir("/").ctx(|| "chdir /".into())
}

/// After pivot: masked paths, read-only paths, read-only root, rootfs propagation.
pub fn finish_rootfs(spec: &Spec) -> Result<()> {
    let linux = spec.linux().as_ref();
    for p in linux
        .and_then(|l| l.readonly_paths().as_ref())
        .into_iter()
        .flatten()
    {
        readonly_path(Path::new(p))?;
    }
    for p in linux
        .and_then(|l| l.masked_paths().as_ref())
        .into_iter()
        .flatten()
    {
        mask_path(Path::new(p))?;
    }
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        let locked = locked_flags(Path::new("/"));
        mnt(
            None,
            Path::new("/"),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | locked,
            None,
        )?;
    }
    if let Some(p) = linux.and_then(|l| l.rootfs_propagation().as_deref()) {
        let prop = parse_options(&[p.to_owned()]).propagation;
        if !prop.is_empty() {
            mnt(None, Path::new("/"), None, prop, None)?;
        }
    }
    Ok(())
}

fn readonly_path(p: &Path) -> Result<()> {
    match mount(
        Some(p),
        p,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    ) {
        Err(nix::errno::Errno::ENOENT) => return Ok(()),
        r => r.ctx(|| format!("readonlyPaths {}", p.display()))?,
    }
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | locked_flags(p);
    mnt(None, p, None, flags, None)
}

fn mask_path(p: &Path) -> Result<()> {
    let r = match std::fs::metadata(p) {
        Err(_) => return Ok(()),
        Ok(md) if md.is_dir() => mount(
            Some("tmpfs"),
            p,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        ),
        Ok(_) => mount(
            Some("/dev/null"),
            p,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        ),
    };
    match r {
        Err(nix::errno::Errno::ENOENT) => Ok(()),
        r => r.ctx(|| format!("maskedPaths {}", p.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let o = parse_options(
            &[
                "rbind", "ro", "nosuid", "rslave", "size=1m", "mode=755", "rw",
            ]
            .map(String::from),
        );
        assert!(o
            .flags
            .contains(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_NOSUID));
        assert!(
            !o.flags.contains(MsFlags::MS_RDONLY),
            "a later rw clears ro"
        );
        assert_eq!(o.propagation, MsFlags::MS_SLAVE | MsFlags::MS_REC);
        assert_eq!(o.data, ["size=1m", "mode=755"]);
    }

    #[test]
    fn secure_join_keeps_symlinks_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("real/dir")).unwrap();
        std::os::unix::fs::symlink("/etc", r.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../..", r.join("up")).unwrap();
        std::os::unix::fs::symlink("real/dir", r.join("rel")).unwrap();
        std::os::unix::fs::symlink("loop", r.join("loop")).unwrap();
        assert_eq!(
            secure_join(r, Path::new("/abs/passwd")),
            r.join("etc/passwd")
        );
        assert_eq!(secure_join(r, Path::new("/up/x")), r.join("x"));
        assert_eq!(secure_join(r, Path::new("/rel/f")), r.join("real/dir/f"));
        assert_eq!(secure_join(r, Path::new("/../../x")), r.join("x"));
        assert!(
            secure_join(r, Path::new("/loop/x")).starts_with(r),
            "symlink loops end inside"
        );
    }
}

//! /dev inside the container: the standard device nodes, `linux.devices`, and the
//! symlinks programs expect. In a user namespace mknod is forbidden, so nodes are bind
//! mounted from the host instead (as runc does).

use std::os::unix::fs::symlink;
use std::path::Path;

use nix::mount::MsFlags;
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};

use crate::error::{Context, Result};
use crate::mounts::secure_join;

struct Dev {
    path: &'static str,
    major: u64,
    minor: u64,
}

const DEFAULT_DEVICES: [Dev; 6] = [
    Dev {
        path: "/dev/null",
        major: 1,
        minor: 3,
    },
    Dev {
        path: "/dev/zero",
        major: 1,
        minor: 5,
    },
    Dev {
        path: "/dev/full",
        major: 1,
        minor: 7,
    },
    Dev {
        path: "/dev/random",
        major: 1,
        minor: 8,
    },
    Dev {
        path: "/dev/urandom",
        major: 1,
        minor: 9,
    },
    Dev {
        path: "/dev/tty",
        major: 5,
        minor: 0,
    },
];

pub fn setup_dev(rootfs: &Path, devices: &[LinuxDevice], bind: bool) -> Result<()> {
    let dev = rootfs.join("dev");
    std::fs::create_dir_all(&dev).ctx(|| format!("mkdir {}", dev.display()))?;
    for d in &DEFAULT_DEVICES {
        if devices.iter().any(|x| x.path() == Path::new(d.path)) {
            continue;
        }
        create_node(
            rootfs,
            Path::new(d.path),
            SFlag::S_IFCHR,
            d.major,
            d.minor,
            0o666,
            0,
            0,
            bind,
        )?;
    }
    for d in devices {
        let kind = match d.typ() {
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            _ => SFlag::S_IFCHR,
        };
        let mode = d.file_mode().unwrap_or(0o666);
        create_node(
            rootfs,
            d.path(),
            kind,
            d.major() as u64,
            d.minor() as u64,
            mode,
            d.uid().unwrap_or(0),
            d.gid().unwrap_or(0),
            bind,
        )?;
    }
    let links = [
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ];
    for (target, name) in links {
        let _ = symlink(target, dev.join(name));
    }
    if Path::new("/proc/kcore").exists() {
        let _ = symlink("/proc/kcore", dev.join("core"));
    }
    Ok(())
}

/// /dev/ptmx must be the container's devpts multiplexer, not the host's.
pub fn link_ptmx(rootfs: &Path) -> Result<()> {
    let ptmx = rootfs.join("dev/ptmx");
    if rootfs.join("dev/pts/ptmx").exists() {
        let _ = std::fs::remove_file(&ptmx);
        symlink("pts/ptmx", &ptmx).ctx(|| format!("symlink {}", ptmx.display()))?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn create_node(
    rootfs: &Path,
    path: &Path,
    kind: SFlag,
    major: u64,
    minor: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    bind: bool,
) -> Result<()> {
    let dest = secure_join(rootfs, path);
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).ctx(|| format!("mkdir {}", parent.display()))?;
    }
    let _ = std::fs::remove_file(&dest);
    if bind {
        std::fs::File::create(&dest).ctx(|| format!("create {}", dest.display()))?;
        return nix::mount::mount(
            Some(path),
            &dest,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .ctx(|| format!("bind device {}", path.display()));
    }
    let perm = Mode::from_bits_truncate(mode & 0o7777);
    match mknod(&dest, kind, perm, makedev(major, minor)) {
        // The device cgroup may already deny mknod ('m') for this node; a bind of the
        // host's node needs no such permission.
        Err(nix::errno::Errno::EPERM) if Path::new(path).exists() => {
            return create_node(rootfs, path, kind, major, minor, mode, uid, gid, true);
        }
        r => r.ctx(|| format!("mknod {}", dest.display()))?,
    }
    // mknod honours the umask; set the exact mode and owner the spec asked for.
    nix::sys::stat::fchmodat(
        None,
        &dest,
        perm,
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .ctx(|| format!("chmod {}", dest.display()))?;
    nix::unistd::chown(&dest, Some(uid.into()), Some(gid.into()))
        .ctx(|| format!("chown {}", dest.display()))
}

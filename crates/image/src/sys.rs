//! Thin, safe wrappers over the `*at` system calls the layer code needs.
//!
//! Everything here works relative to directory file descriptors. Callers
//! resolve a directory once with [`openat2`] (the kernel then guarantees the
//! walk stayed inside the root, even through symlinks and `..`), and pass
//! single path components to the other calls, so no call here ever walks a
//! multi-component path that an untrusted archive could have shaped.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// Converts a path or name to a C string, rejecting interior NULs.
pub(crate) fn cstr(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Resolve `path` as if `dir` were the filesystem root: `..` stops at it and
/// absolute symlinks restart from it. This is what makes extraction safe.
pub(crate) const IN_ROOT: u64 = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
/// Resolve a single name directly inside `dir`, following no symlink at all.
pub(crate) const BENEATH_NOFOLLOW: u64 =
    libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;

/// `openat2(2)`. Retries on EAGAIN, which the kernel returns when a
/// concurrent rename might have let a walk escape: a retry is then safe.
pub(crate) fn openat2(
    dir: BorrowedFd<'_>,
    path: &OsStr,
    flags: libc::c_int,
    mode: libc::mode_t,
    resolve: u64,
) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    // SAFETY: open_how is a plain C struct; zeroed is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = if flags & (libc::O_CREAT | libc::O_TMPFILE) != 0 {
        u64::from(mode)
    } else {
        0
    };
    how.resolve = resolve;
    for _ in 0..16 {
        // SAFETY: valid pointers for the duration of the call; the size
        // argument matches the struct passed.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                c.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if rc >= 0 {
            // SAFETY: the kernel returned a new descriptor that we now own.
            return Ok(unsafe { OwnedFd::from_raw_fd(rc as libc::c_int) });
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EAGAIN) {
            return Err(err);
        }
    }
    Err(io::Error::from_raw_os_error(libc::EAGAIN))
}

/// Opens a directory as a root for later [`IN_ROOT`] resolution.
pub(crate) fn open_dir_path(path: &std::path::Path) -> io::Result<OwnedFd> {
    let c = cstr(path.as_os_str())?;
    // SAFETY: valid C string; the returned descriptor is owned below.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(crate) fn mkdirat(dir: BorrowedFd<'_>, name: &OsStr, mode: libc::mode_t) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid descriptor and C string.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode) })
}

pub(crate) fn mknodat(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    mode: libc::mode_t,
    dev: libc::dev_t,
) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid descriptor and C string.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), c.as_ptr(), mode, dev) })
}

pub(crate) fn symlinkat(target: &OsStr, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let t = cstr(target)?;
    let c = cstr(name)?;
    // SAFETY: valid descriptor and C strings.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), c.as_ptr()) })
}

/// Hard-links the object behind `src` (an `O_PATH|O_NOFOLLOW` descriptor,
/// so a symlink is linked itself, never its target) as `dir/name`.
pub(crate) fn link_fd(src: BorrowedFd<'_>, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let c = cstr(name)?;
    let empty = c"";
    // SAFETY: valid descriptors and C strings.
    let rc = unsafe {
        libc::linkat(
            src.as_raw_fd(),
            empty.as_ptr(),
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; the /proc form does not.
    let proc_path = CString::new(format!("/proc/self/fd/{}", src.as_raw_fd()))
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: valid descriptors and C strings.
    check(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc_path.as_ptr(),
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    })
}

pub(crate) fn unlinkat(dir: BorrowedFd<'_>, name: &OsStr, remove_dir: bool) -> io::Result<()> {
    let c = cstr(name)?;
    let flags = if remove_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: valid descriptor and C string.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), flags) })
}

/// `lstat` of `dir/name`.
pub(crate) fn lstatat(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<libc::stat> {
    let c = cstr(name)?;
    // SAFETY: stat is plain data; the kernel fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor, C string and out pointer.
    check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH,
        )
    })?;
    Ok(st)
}

/// Changes owner of `dir/name` without following a symlink there.
pub(crate) fn lchownat(dir: BorrowedFd<'_>, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid descriptor and C string.
    check(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            c.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH,
        )
    })
}

/// chmod of `dir/name`; only called for names we just created as
/// non-symlinks in a directory nobody else writes to.
pub(crate) fn chmodat(dir: BorrowedFd<'_>, name: &OsStr, mode: libc::mode_t) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid descriptor and C string.
    check(unsafe { libc::fchmodat(dir.as_raw_fd(), c.as_ptr(), mode, 0) })
}

pub(crate) fn fchmod(fd: BorrowedFd<'_>, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: valid descriptor.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode) })
}

fn timespecs(atime: (i64, i64), mtime: (i64, i64)) -> [libc::timespec; 2] {
    let ts = |(s, ns): (i64, i64)| libc::timespec {
        tv_sec: s as _,
        tv_nsec: ns as _,
    };
    [ts(atime), ts(mtime)]
}

/// Sets times of `dir/name` (not following a symlink). Times are (sec, nsec).
pub(crate) fn lutimesat(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    atime: (i64, i64),
    mtime: (i64, i64),
) -> io::Result<()> {
    let c = cstr(name)?;
    let t = timespecs(atime, mtime);
    // SAFETY: valid descriptor, C string and two timespecs.
    check(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            c.as_ptr(),
            t.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

pub(crate) fn futimes(fd: BorrowedFd<'_>, atime: (i64, i64), mtime: (i64, i64)) -> io::Result<()> {
    let t = timespecs(atime, mtime);
    // SAFETY: valid descriptor and two timespecs.
    check(unsafe { libc::futimens(fd.as_raw_fd(), t.as_ptr()) })
}

pub(crate) fn fchown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: valid descriptor.
    check(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) })
}

pub(crate) fn fsetxattr(fd: BorrowedFd<'_>, name: &OsStr, value: &[u8]) -> io::Result<()> {
    let n = cstr(name)?;
    // SAFETY: valid descriptor, C string and buffer.
    check(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

/// Sets an xattr on `dir/name` itself (a symlink, device or fifo, which we
/// must not open). The directory is reached through its descriptor's
/// `/proc/self/fd` entry; the last component is not followed.
pub(crate) fn lsetxattrat(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    key: &OsStr,
    value: &[u8],
) -> io::Result<()> {
    let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    path.extend_from_slice(name.as_bytes());
    let p = cstr(OsStr::from_bytes(&path))?;
    let k = cstr(key)?;
    // SAFETY: valid C strings and buffer.
    check(unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            k.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

/// Lists xattr names of a path without following a final symlink.
pub(crate) fn llistxattr(path: &std::path::Path) -> io::Result<Vec<OsString>> {
    let p = cstr(path.as_os_str())?;
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: valid C string and buffer of the given length.
        let n = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            buf.truncate(n as usize);
            break;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ERANGE) => buf.resize(buf.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(err),
        }
    }
    Ok(buf
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| OsString::from_vec(s.to_vec()))
        .collect())
}

/// Whether an open file has any extended attribute.
pub(crate) fn has_xattrs(f: &std::fs::File) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: a size query: no buffer is written.
    let n = unsafe { libc::flistxattr(f.as_raw_fd(), std::ptr::null_mut(), 0) };
    if n < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENOTSUP) => Ok(false),
            _ => Err(err),
        };
    }
    Ok(n > 0)
}

/// Reads one xattr of a path without following a final symlink.
pub(crate) fn lgetxattr(path: &std::path::Path, key: &OsStr) -> io::Result<Option<Vec<u8>>> {
    let p = cstr(path.as_os_str())?;
    let k = cstr(key)?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: valid C strings and buffer of the given length.
        let n =
            unsafe { libc::lgetxattr(p.as_ptr(), k.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(Some(buf));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ERANGE) => buf.resize(buf.len() * 4, 0),
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => return Ok(None),
            _ => return Err(err),
        }
    }
}

/// Sets an xattr on a path without following a final symlink.
pub(crate) fn lsetxattr(path: &std::path::Path, key: &OsStr, value: &[u8]) -> io::Result<()> {
    let p = cstr(path.as_os_str())?;
    let k = cstr(key)?;
    // SAFETY: valid C strings and buffer.
    check(unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            k.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

/// Removes an xattr from a path without following a final symlink.
pub(crate) fn lremovexattr(path: &std::path::Path, key: &OsStr) -> io::Result<()> {
    let p = cstr(path.as_os_str())?;
    let k = cstr(key)?;
    // SAFETY: valid C strings.
    check(unsafe { libc::lremovexattr(p.as_ptr(), k.as_ptr()) })
}

/// Starts writeback of the given range without waiting for it.
fn start_writeback(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: valid descriptor; the call only schedules I/O.
    check(unsafe {
        libc::sync_file_range(
            fd.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    })
}

/// Keeps a file's dirty pages flowing to disk while it is being written.
///
/// Pulls and unpacks must be durable before they become visible, and left alone the
/// kernel holds hundreds of megabytes dirty until the final fsync, which then waits for
/// all of it at once. Kicking off writeback every few megabytes overlaps the disk with
/// the download and decompression, so the final fsync finds little left to do.
#[derive(Debug, Default)]
pub(crate) struct Writeback {
    started: u64,
}

impl Writeback {
    const STEP: u64 = 8 << 20;

    /// Call after writing up to `written` bytes from the file's start.
    pub(crate) fn advance(&mut self, fd: BorrowedFd<'_>, written: u64) {
        if written >= self.started + Self::STEP {
            // Only a hint: a failure here shows up again at the fsync that follows.
            let _ = start_writeback(fd, self.started, written - self.started);
            self.started = written;
        }
    }
}

/// Flushes the whole filesystem holding `fd`: one call instead of an fsync
/// per unpacked file before the layer directory is renamed into place.
pub(crate) fn syncfs(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: valid descriptor.
    check(unsafe { libc::syncfs(fd.as_raw_fd()) })
}

/// Names in the directory behind `fd` (not `.`/`..`), sorted bytewise.
pub(crate) fn read_dir_fd(fd: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    // Opening the /proc entry gives a fresh directory handle for the same
    // directory, so `fd` may be an O_PATH descriptor.
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let mut names = Vec::new();
    for e in std::fs::read_dir(path)? {
        names.push(e?.file_name());
    }
    names.sort();
    Ok(names)
}

pub(crate) fn makedev(major: u32, minor: u32) -> libc::dev_t {
    libc::makedev(major, minor)
}

/// Sets times of a trusted path without following a final symlink.
pub(crate) fn lutimes(path: &std::path::Path, mtime: (i64, i64)) -> io::Result<()> {
    let c = cstr(path.as_os_str())?;
    let t = timespecs(mtime, mtime);
    // SAFETY: valid C string and two timespecs.
    check(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            t.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// `mknod(2)` on a trusted path.
pub(crate) fn mknod(
    path: &std::path::Path,
    mode: libc::mode_t,
    dev: libc::dev_t,
) -> io::Result<()> {
    let c = cstr(path.as_os_str())?;
    // SAFETY: valid C string.
    check(unsafe { libc::mknod(c.as_ptr(), mode, dev) })
}

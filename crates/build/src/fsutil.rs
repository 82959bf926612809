//! File-system helpers for the builder: path resolution scoped to a root
//! filesystem, user and group lookup in an image's `/etc/passwd` and
//! `/etc/group`, and timestamp normalisation for reproducible layers.
//!
//! The rootfs being built is owned by the build (no container runs while
//! these helpers touch it), so symlinks are resolved by walking the path one
//! component at a time and clamping every `..` and absolute link target to
//! the root, the way a container would see them.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Symlinks followed at most while resolving one path (Linux's limit).
const MAX_LINKS: usize = 40;

/// Resolves `path` (as seen inside `root`) to a host path under `root`,
/// following symlinks in every component, the last one included when
/// `follow_last` is set. Missing components are kept as they are.
pub fn resolve_in_root(root: &Path, path: &str, follow_last: bool) -> io::Result<PathBuf> {
    let mut parts: Vec<Vec<u8>> = split(path.as_bytes());
    parts.reverse();
    let mut resolved: Vec<Vec<u8>> = Vec::new();
    let mut links = 0;
    while let Some(part) = parts.pop() {
        match part.as_slice() {
            b"." | b"" => continue,
            b".." => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        let is_last = parts.is_empty();
        let mut candidate = root.to_path_buf();
        for p in &resolved {
            candidate.push(OsStr::from_bytes(p));
        }
        candidate.push(OsStr::from_bytes(&part));
        let target = match std::fs::symlink_metadata(&candidate) {
            Ok(md) if md.file_type().is_symlink() && (follow_last || !is_last) => {
                std::fs::read_link(&candidate)?
            }
            _ => {
                resolved.push(part);
                continue;
            }
        };
        links += 1;
        if links > MAX_LINKS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("too many levels of symbolic links in {path}"),
            ));
        }
        let target = target.as_os_str().as_bytes();
        if target.starts_with(b"/") {
            resolved.clear();
        }
        let mut more = split(target);
        more.reverse();
        parts.extend(more);
    }
    let mut out = root.to_path_buf();
    for p in resolved {
        out.push(OsStr::from_bytes(&p));
    }
    Ok(out)
}

fn split(path: &[u8]) -> Vec<Vec<u8>> {
    path.split(|&b| b == b'/')
        .filter(|s| !s.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// Cleans an absolute in-container path like Go's `path.Clean`.
pub fn clean_abs(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(s) => out.push(s.to_str().unwrap_or("")),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    format!("/{}", out.join("/"))
}

/// A user as a process runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
}

/// Looks RUN's `user[:group]` up in the rootfs' `/etc/passwd` and `/etc/group`, as runc
/// and Docker do: numbers need no entry; a user given alone takes its primary group
/// (root's, 0, for a number without an entry). Returns the ids and the supplementary
/// groups: the primary group first (Docker and containerd always include it since
/// CVE-2023-25173), then the groups that list a named user.
pub fn lookup_user(root: &Path, spec: &str) -> Result<(Ids, Vec<u32>), String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read_db(root, "/etc/passwd");
    let entry = passwd.iter().find(|f| {
        f.first().map(String::as_str) == Some(user) || (f.get(2).map(String::as_str) == Some(user))
    });
    let (uid, primary, name) = match (user.parse::<u32>(), entry) {
        (Ok(n), Some(f)) => (n, f.get(3).and_then(|g| g.parse().ok()), f[0].clone()),
        (Ok(n), None) => (n, Some(0), String::new()),
        (Err(_), Some(f)) => {
            let uid = f.get(2).and_then(|u| u.parse().ok());
            let Some(uid) = uid else {
                return Err(format!("bad passwd entry for user {user}"));
            };
            (uid, f.get(3).and_then(|g| g.parse().ok()), f[0].clone())
        }
        (Err(_), None) => {
            return Err(format!(
                "unable to find user {user}: no matching entries in passwd file"
            ))
        }
    };
    let groups = read_db(root, "/etc/group");
    let gid = match group {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .iter()
                .find(|f| f.first().map(String::as_str) == Some(g))
                .and_then(|f| f.get(2).and_then(|n| n.parse().ok()))
                .ok_or_else(|| {
                    format!("unable to find group {g}: no matching entries in group file")
                })?,
        },
        None => primary.unwrap_or(uid),
    };
    let mut extra = vec![gid];
    if group.is_none() && !name.is_empty() {
        for f in &groups {
            let members = f.get(3).map(String::as_str).unwrap_or("");
            if members.split(',').any(|m| m == name) {
                if let Some(g) = f.get(2).and_then(|n| n.parse::<u32>().ok()) {
                    if !extra.contains(&g) {
                        extra.push(g);
                    }
                }
            }
        }
    }
    Ok((Ids { uid, gid }, extra))
}

/// The owner BuildKit gives what `COPY --chown` and `WORKDIR` create: a number is
/// that uid with the same gid (no passwd lookup), a name its passwd entry's uid and
/// primary group, or root when no entry has it; a group, when given, overrides the
/// gid if it is a number or a known name. Never fails: BuildKit's file operations
/// do not (unlike RUN's USER, see [`lookup_user`]).
pub fn file_owner(root: &Path, spec: &str) -> Ids {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g).filter(|g| !g.is_empty())),
        None => (spec, None),
    };
    let field = |f: &[String], i: usize| f.get(i).and_then(|v| v.parse::<u32>().ok());
    let mut ids = match user.parse::<u32>() {
        Ok(n) => Ids { uid: n, gid: n },
        Err(_) => read_db(root, "/etc/passwd")
            .iter()
            .find(|f| f.first().map(String::as_str) == Some(user))
            .and_then(|f| {
                Some(Ids {
                    uid: field(f, 2)?,
                    gid: field(f, 3)?,
                })
            })
            .unwrap_or_default(),
    };
    if let Some(g) = group {
        let gid = g.parse::<u32>().ok().or_else(|| {
            read_db(root, "/etc/group")
                .iter()
                .find(|f| f.first().map(String::as_str) == Some(g))
                .and_then(|f| field(f, 2))
        });
        if let Some(gid) = gid {
            ids.gid = gid;
        }
    }
    ids
}

fn read_db(root: &Path, path: &str) -> Vec<Vec<String>> {
    let Ok(p) = resolve_in_root(root, path, true) else {
        return Vec::new();
    };
    let text = std::fs::read_to_string(p).unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(':').map(str::to_string).collect())
        .collect()
}

/// Sets the modification (and access) time of everything under `dir`, `dir`
/// excluded, to `epoch`, without following symlinks; children first so a
/// directory's own time is set last.
pub fn normalize_mtimes(dir: &Path, epoch: i64) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            normalize_mtimes(&path, epoch)?;
        }
        // Files a COPY linked from an earlier layer already have the time, and their
        // inode is that layer's too: leave it (and its ctime) alone.
        let md = std::fs::symlink_metadata(&path)?;
        if (md.mtime(), md.mtime_nsec()) != (epoch, 0) {
            set_time(&path, epoch)?;
        }
    }
    Ok(())
}

fn set_time(path: &Path, epoch: i64) -> io::Result<()> {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    let t = TimeSpec::new(epoch, 0);
    utimensat(None, path, &t, &t, UtimensatFlags::NoFollowSymlink)
        .map_err(|e| io::Error::from_raw_os_error(e as i32))
}

/// Whether a directory has no entries.
pub fn is_empty_dir(dir: &Path) -> io::Result<bool> {
    Ok(std::fs::read_dir(dir)?.next().is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_stay_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("real/sub")).unwrap();
        std::os::unix::fs::symlink("/real", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../..", root.join("real/up")).unwrap();
        assert_eq!(
            resolve_in_root(root, "/abs/sub/x", true).unwrap(),
            root.join("real/sub/x")
        );
        assert_eq!(
            resolve_in_root(root, "/real/up/etc/passwd", true).unwrap(),
            root.join("etc/passwd")
        );
        assert_eq!(
            resolve_in_root(root, "/abs", false).unwrap(),
            root.join("abs")
        );
    }

    #[test]
    fn users_and_groups() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nbob:x:1000:1001::/home/bob:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("etc/group"),
            "root:x:0:\nbob:x:1001:\nwheel:x:10:bob\n",
        )
        .unwrap();
        let (ids, extra) = lookup_user(d.path(), "bob").unwrap();
        assert_eq!(
            ids,
            Ids {
                uid: 1000,
                gid: 1001
            }
        );
        assert_eq!(extra, vec![1001, 10]);
        assert_eq!(lookup_user(d.path(), "bob:wheel").unwrap().0.gid, 10);
        // As `docker run --user 55`: root's group, and it in the group list.
        assert_eq!(
            lookup_user(d.path(), "55").unwrap(),
            (Ids { uid: 55, gid: 0 }, vec![0])
        );
        assert!(lookup_user(d.path(), "nobody").is_err());
        // BuildKit's file operations: unknown names are root, numbers skip passwd.
        let ids = |uid, gid| Ids { uid, gid };
        assert_eq!(
            file_owner(d.path(), "bob"),
            lookup_user(d.path(), "bob").unwrap().0
        );
        assert_eq!(file_owner(d.path(), "nobody"), ids(0, 0));
        assert_eq!(file_owner(d.path(), "55"), ids(55, 55));
        assert_eq!(file_owner(d.path(), "1:wheel"), ids(1, 10));
        assert_eq!(file_owner(d.path(), "1:adm"), ids(1, 1));
        assert_eq!(
            file_owner(d.path(), "bob:7"),
            ids(lookup_user(d.path(), "bob").unwrap().0.uid, 7)
        );
        assert_eq!(clean_abs("/a/../b//c/."), "/b/c");
    }
}

//! Access to a container's filesystem from the host, for `cp`, `diff` and `export`: the
//! rootfs (mounted for the duration when the container is stopped) and the volume and
//! bind mounts over it, with paths resolved inside the container's root.

use std::collections::BTreeSet;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::path::{Component, Path, PathBuf};

use crate::record::{Container, Status};
use crate::{Engine, Error, IoContext, Result};

/// A change `docker diff` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Added(String),
    Changed(String),
    Deleted(String),
}

impl Change {
    pub fn line(&self) -> String {
        match self {
            Change::Added(p) => format!("A {p}"),
            Change::Changed(p) => format!("C {p}"),
            Change::Deleted(p) => format!("D {p}"),
        }
    }
}

/// The mounted view of a container's files; unmounts on drop what it mounted.
pub struct RootfsView {
    pub rootfs: PathBuf,
    /// (container path, host dir) of volume and bind mounts, longest first.
    pub mounts: Vec<(PathBuf, PathBuf)>,
    mounted_here: bool,
}

impl Drop for RootfsView {
    fn drop(&mut self) {
        if self.mounted_here {
            let _ = nix::mount::umount2(&self.rootfs, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

impl RootfsView {
    /// The host directory holding `path` (the rootfs or a volume/bind mount over it) and
    /// the rest of the path below it.
    fn split(&self, path: &str) -> (&Path, PathBuf) {
        let clean = normalize(path);
        for (inside, host) in &self.mounts {
            if let Ok(rest) = clean.strip_prefix(inside) {
                return (host, rest.to_path_buf());
            }
        }
        let rest = clean.strip_prefix("/").unwrap_or(&clean).to_path_buf();
        (&self.rootfs, rest)
    }

    /// Opens `path` inside the container as an `O_PATH` descriptor, the kernel resolving
    /// it as if the container's root (or the mount holding it) were `/`, so no symlink in
    /// the container can lead outside. `follow` says whether a final symlink is followed.
    pub fn open(&self, path: &str, follow: bool) -> std::io::Result<OwnedFd> {
        let (root, rest) = self.split(path);
        let flags = libc::O_PATH | if follow { 0 } else { libc::O_NOFOLLOW };
        open_in_root(root, &rest, flags)
    }
}

/// `openat2(RESOLVE_IN_ROOT)` of `rel` below `root` (berth-image's, which layer
/// extraction uses too).
pub use berth_image::open_in_root;

/// A path naming `fd` itself (its `/proc` magic link), usable by this process and by
/// child processes it spawns while `fd` is open. Walking through it never re-resolves
/// the path the descriptor was opened with.
pub fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        fd.as_raw_fd()
    ))
}

fn normalize(path: &str) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

impl Engine {
    /// Mounts (if needed) and returns the container's filesystem view.
    pub fn rootfs_view(&mut self, key: &str) -> Result<(Container, RootfsView)> {
        let c = self.find(key)?;
        let rootfs = self.dir(&c.id).join("rootfs");
        let running = matches!(c.state.status, Status::Running | Status::Paused);
        let mut mounted_here = false;
        if !running {
            let mounts = self.snapshotter()?.mounts(&c.id)?;
            let m = mounts
                .first()
                .ok_or_else(|| Error::Invalid("snapshot has no mounts".into()))?;
            std::fs::create_dir_all(&rootfs).ctx(|| format!("create {}", rootfs.display()))?;
            m.mount_at(&rootfs)
                .ctx(|| format!("mount rootfs at {}", rootfs.display()))?;
            mounted_here = true;
        }
        let mut mounts: Vec<(PathBuf, PathBuf)> = c
            .config
            .mounts
            .iter()
            .filter_map(|m| match m.kind.as_str() {
                "volume" => Some((
                    normalize(&m.destination),
                    crate::volumes::data_dir(&self.root, &m.source),
                )),
                "bind" => Some((normalize(&m.destination), PathBuf::from(&m.source))),
                _ => None,
            })
            .collect();
        mounts.sort_by_key(|(p, _)| std::cmp::Reverse(p.as_os_str().len()));
        Ok((
            c,
            RootfsView {
                rootfs,
                mounts,
                mounted_here,
            },
        ))
    }

    /// `docker diff`: what the container's writable layer added, changed and deleted.
    pub fn diff(&mut self, key: &str) -> Result<Vec<Change>> {
        let c = self.find(key)?;
        let snap = self.snapshotter()?;
        let upper = snap.upper_dir(&c.id)?;
        let layers = berth_image::layer::LayerStore::open(self.root.join("layers"))
            .map_err(|e| Error::Layer(e.to_string()))?;
        let lowers: Vec<PathBuf> = c
            .config
            .chain_ids
            .iter()
            .filter_map(|s| s.parse().ok())
            .map(|d| layers.path(&d))
            .collect();
        let mounts = self.mount_points(&c.id);
        let mut out = Vec::new();
        let tree = Tree {
            lowers: &lowers,
            mounts: &mounts,
        };
        tree.walk(&upper, Path::new("/"), &mut out, &mut Vec::new())?;
        out.sort_by(|a, b| key_of(a).cmp(key_of(b)));
        Ok(out)
    }

    /// The entries of the container's writable layer that are only mount points the
    /// runtime made (see [`Engine::mount_points`]), relative to the layer (`etc/hosts`):
    /// what `commit` leaves out, as `diff` does.
    pub fn mount_placeholders(&self, id: &str) -> Result<BTreeSet<PathBuf>> {
        let upper = self.upper_dir(id)?;
        let mounts = self.mount_points(id);
        let tree = Tree {
            lowers: &[],
            mounts: &mounts,
        };
        let mut skipped = Vec::new();
        tree.walk(&upper, Path::new("/"), &mut Vec::new(), &mut skipped)?;
        Ok(skipped
            .into_iter()
            .map(|p| p.strip_prefix("/").map(Path::to_path_buf).unwrap_or(p))
            .collect())
    }

    /// Where the container's last bundle mounted something (`/proc`, `/dev`, `/etc/hosts`,
    /// volumes, binds, tmpfs). The runtime creates missing ones, empty, in the writable
    /// layer; they are the engine's doing, not the container's changes, so `diff` and
    /// `commit` leave them out (Docker keeps them in a separate init layer).
    pub fn mount_points(&self, id: &str) -> BTreeSet<PathBuf> {
        let Ok(text) = std::fs::read(self.dir(id).join("config.json")) else {
            return BTreeSet::new();
        };
        let spec: serde_json::Value = serde_json::from_slice(&text).unwrap_or_default();
        spec["mounts"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|m| m["destination"].as_str())
                    .map(normalize)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Whether `rel` (an absolute path inside the container) is an empty placeholder the
/// runtime made for a mount: the mount point itself, empty, or a directory that holds
/// nothing but such placeholders on the way to one.
pub fn is_mount_placeholder(
    host: &Path,
    rel: &Path,
    mounts: &BTreeSet<PathBuf>,
    has_other_content: bool,
) -> bool {
    if has_other_content {
        return false;
    }
    if mounts.contains(rel) {
        return match std::fs::symlink_metadata(host) {
            Ok(m) if m.is_dir() => true,
            Ok(m) => m.is_file() && m.len() == 0,
            Err(_) => false,
        };
    }
    host.is_dir() && mounts.iter().any(|m| m.starts_with(rel))
}

fn key_of(c: &Change) -> &str {
    match c {
        Change::Added(p) | Change::Changed(p) | Change::Deleted(p) => p,
    }
}

/// The container's image layers and mount points, for telling its own changes apart.
struct Tree<'a> {
    lowers: &'a [PathBuf],
    mounts: &'a BTreeSet<PathBuf>,
}

impl Tree<'_> {
    fn in_lower(&self, inside: &Path) -> bool {
        let rel = inside.strip_prefix("/").unwrap_or(inside);
        self.lowers
            .iter()
            .any(|l| l.join(rel).symlink_metadata().is_ok())
    }

    /// Appends the changes below `dir` (shown as `rel`) and the mount placeholders left
    /// out to `skipped`; returns whether there were changes besides those placeholders.
    fn walk(
        &self,
        dir: &Path,
        rel: &Path,
        out: &mut Vec<Change>,
        skipped: &mut Vec<PathBuf>,
    ) -> Result<bool> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e).ctx(|| format!("read {}", dir.display())),
        };
        let mut kept = false;
        for e in entries.flatten() {
            let inside = rel.join(e.file_name());
            let shown = inside.display().to_string();
            let Ok(ft) = e.file_type() else { continue };
            // overlayfs marks a deletion with a 0/0 character device.
            if ft.is_char_device() {
                use std::os::unix::fs::MetadataExt;
                if e.metadata().map(|m| m.rdev() == 0).unwrap_or(false) {
                    out.push(Change::Deleted(shown));
                    kept = true;
                    continue;
                }
            }
            let mut below = Vec::new();
            let mut below_skipped = Vec::new();
            let below_kept =
                ft.is_dir() && self.walk(&e.path(), &inside, &mut below, &mut below_skipped)?;
            if is_mount_placeholder(&e.path(), &inside, self.mounts, below_kept) {
                skipped.push(inside);
                continue;
            }
            skipped.extend(below_skipped);
            out.push(if self.in_lower(&inside) {
                Change::Changed(shown)
            } else {
                Change::Added(shown)
            });
            out.extend(below);
            kept = true;
        }
        Ok(kept)
    }
}

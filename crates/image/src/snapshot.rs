//! Snapshots: writable (or read-only) root filesystems made of layers.
//!
//! Shaped like containerd's snapshotter: [`Snapshotter::prepare`] creates
//! the writable part and returns [`Mount`] descriptions; the caller mounts
//! them (typically inside the container's mount namespace), so overlay and
//! the plain-copy fallback are interchangeable to it.
//!
//! Layout under the snapshotter root, per key:
//!
//! ```text
//! <root>/<key>/snapshot.json   kind and parent chain ids (to rebuild mounts)
//! <root>/<key>/upper/          overlay upper dir: the container's changes
//! <root>/<key>/work/           overlay work dir
//! <root>/<key>/fs/             copy mode: a full private copy of the layers
//! ```
//!
//! With [`Snapshotter::with_mount_points`], a writable overlay snapshot also gets a
//! mount-point layer (`<layers>/<top chain id hex>-init`, shared by every snapshot of the
//! same layers) holding empty stubs of [`MOUNT_POINT_FILES`] the image lacks.
//!
//! With the engine's `containers/` as root and the container id as key this
//! gives `containers/<id>/upper` and `work` as in the berth design.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::layer::LayerStore;
use crate::spare::Spares;
use crate::sys;

/// Snapshot failures.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A filesystem operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// Keys are single path components.
    #[error("invalid snapshot key {0:?}")]
    InvalidKey(String),
    /// `prepare` on a key that exists.
    #[error("snapshot {0:?} already exists")]
    AlreadyExists(String),
    /// No snapshot with this key.
    #[error("snapshot {0:?} not found")]
    NotFound(String),
    /// A parent layer is not unpacked.
    #[error("layer {0} is not unpacked")]
    LayerNotFound(Digest),
    /// Overlay mode was asked for on a kernel without overlayfs.
    #[error("overlayfs is not available on this kernel")]
    OverlayUnavailable,
    /// The snapshot record does not parse.
    #[error("corrupt snapshot record {0:?}: {1}")]
    Corrupt(PathBuf, String),
}

type Result<T> = std::result::Result<T, SnapshotError>;

fn io_ctx(context: impl Into<String>) -> impl FnOnce(io::Error) -> SnapshotError {
    let context = context.into();
    move |source| SnapshotError::Io { context, source }
}

/// A mount for the caller to perform, in containerd's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Filesystem type: `overlay` or `bind`.
    pub fs_type: String,
    /// Source: `overlay` or the directory to bind.
    pub source: PathBuf,
    /// Options as for mount(8), e.g. `lowerdir=…`, `rbind`, `ro`.
    pub options: Vec<String>,
}

impl Mount {
    /// Performs the mount on `target` (a convenience for callers and tests).
    /// A read-only bind takes a second, remounting call, as in mount(8).
    pub fn mount_at(&self, target: &Path) -> io::Result<()> {
        use nix::mount::{mount, MsFlags};
        let ro = self.options.iter().any(|o| o == "ro");
        let to_io = |e: nix::errno::Errno| io::Error::from_raw_os_error(e as i32);
        if self.fs_type == "bind" {
            let mut flags = MsFlags::MS_BIND;
            if self.options.iter().any(|o| o == "rbind") {
                flags |= MsFlags::MS_REC;
            }
            mount(
                Some(&self.source),
                target,
                None::<&str>,
                flags,
                None::<&str>,
            )
            .map_err(to_io)?;
            if ro {
                let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
                mount(None::<&str>, target, None::<&str>, flags, None::<&str>).map_err(to_io)?;
            }
            return Ok(());
        }
        let mut flags = MsFlags::empty();
        if ro {
            flags |= MsFlags::MS_RDONLY;
        }
        let data: Vec<&str> = self
            .options
            .iter()
            .map(String::as_str)
            .filter(|o| *o != "ro" && *o != "rw")
            .collect();
        mount(
            Some(&self.source),
            target,
            Some(self.fs_type.as_str()),
            flags,
            Some(data.join(",").as_str()),
        )
        .map_err(to_io)
    }
}

/// How snapshots are built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotMode {
    /// Overlay if the kernel has it, else copy.
    Auto,
    /// overlayfs over the shared layer directories.
    Overlay,
    /// A private full copy of the layers (slow, works everywhere).
    Copy,
}

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    mode: SnapshotMode,
    readonly: bool,
    parents: Vec<Digest>,
    /// Whether the mount-point layer of the top parent sits above the parents.
    #[serde(default)]
    mount_points: bool,
}

/// The files a container engine bind-mounts over in every container. An image without
/// them would make the runtime create each one through the overlay, which copies `/etc`
/// up and allocates four inodes in the container's upper dir per start (plus their
/// deletion at removal): 2–3 ms of a 20 ms `run --rm` on a busy ext4. A read-only layer
/// with empty stubs, made once per image, leaves nothing to create.
pub const MOUNT_POINT_FILES: [&str; 3] = ["etc/hostname", "etc/hosts", "etc/resolv.conf"];

/// Creates and removes snapshots under one root directory.
#[derive(Debug, Clone)]
pub struct Snapshotter {
    root: PathBuf,
    layers: LayerStore,
    mode: SnapshotMode,
    durable: bool,
    mount_points: bool,
    spares: Option<Spares>,
}

/// A removed snapshot's directory in the trash (see [`Snapshotter::retire`]), held for
/// the one who purges it. Dropped unpurged, it is left to a later
/// [`Snapshotter::sweep_trash`].
#[derive(Debug)]
pub struct Retired {
    entry: crate::trash::Entry,
    spares: Option<Spares>,
}

impl Retired {
    /// Deletes the directory, or empties it and keeps it as a spare.
    pub fn purge(self) -> Result<()> {
        let path = &self.entry.path;
        if let Some(spares) = &self.spares {
            if clear_for_spare(path).is_ok() && spares.put(path, UPPER_MODE) {
                return Ok(());
            }
        }
        match fs::remove_dir_all(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(io_ctx(format!("remove {}", path.display()))(e))
            }
            _ => Ok(()),
        }
    }
}

/// The snapshot record's file while it is written (and after its snapshot is removed).
const RECORD_TMP: &str = "snapshot.json.tmp";

/// Where removed snapshots wait to be purged, under the snapshotter root.
const TRASH: &str = ".trash";

/// The mode of a new snapshot's upper dir (which overlay shows as the root's).
const UPPER_MODE: u32 = 0o755;

impl Snapshotter {
    /// A snapshotter keeping snapshots under `root` and reading layers from
    /// `layers`. `Auto` is resolved here, once.
    pub fn new(root: impl AsRef<Path>, layers: LayerStore, mode: SnapshotMode) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        fs::create_dir_all(&root).map_err(io_ctx(format!("create {}", root.display())))?;
        let mode = match mode {
            SnapshotMode::Auto if overlay_supported() => SnapshotMode::Overlay,
            SnapshotMode::Auto => SnapshotMode::Copy,
            SnapshotMode::Overlay if !overlay_supported() => {
                return Err(SnapshotError::OverlayUnavailable)
            }
            m => m,
        };
        Ok(Snapshotter {
            root,
            layers,
            mode,
            durable: true,
            mount_points: false,
            spares: None,
        })
    }

    /// Keeps up to `cap` emptied directories of removed writable overlay snapshots for
    /// the next `prepare` (see `spare.rs`: directories are costly to make and delete on
    /// some filesystems). What the owner keeps in the key dir goes with it at `remove`:
    /// its files are kept emptied (unless a container changed them) and its empty
    /// directories (mount points) removed — an rmdir also detaches copies of a mount
    /// other namespaces hold, which would keep an old overlay using the upper dir. A key
    /// dir holding anything else is not kept.
    pub fn with_spares(mut self, cap: usize) -> Self {
        self.spares = (cap > 0).then(|| Spares::new(self.root.join(".spares"), cap));
        self
    }

    /// Whether a new snapshot's record is fsynced before `prepare`/`view` return (the
    /// default). A caller whose snapshot is worthless after a crash anyway (a container
    /// removed when it exits) turns this off to keep two fsyncs off its start path; the
    /// record is still replaced atomically, so a crash leaves it whole or absent.
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    /// Whether writable overlay snapshots get the mount-point layer (see
    /// [`MOUNT_POINT_FILES`]). Off by default: a build step's snapshot must show the image
    /// exactly as it is.
    pub fn with_mount_points(mut self, on: bool) -> Self {
        self.mount_points = on;
        self
    }

    /// The mode in use (never `Auto`).
    pub fn mode(&self) -> SnapshotMode {
        self.mode
    }

    /// Where a snapshot's changes land (the overlay upper dir, or the copy).
    pub fn upper_dir(&self, key: &str) -> Result<PathBuf> {
        let dir = self.key_dir(key)?;
        Ok(match self.mode {
            SnapshotMode::Copy => dir.join("fs"),
            _ => dir.join("upper"),
        })
    }

    /// Creates a writable snapshot on top of `parents` (layer chain ids,
    /// bottom layer first) and returns the mounts that assemble it.
    pub fn prepare(&self, key: &str, parents: &[Digest]) -> Result<Vec<Mount>> {
        self.create(key, parents, false)
    }

    /// Creates a read-only view of `parents`. A single layer is a read-only
    /// bind of its directory; nothing is copied or written.
    pub fn view(&self, key: &str, parents: &[Digest]) -> Result<Vec<Mount>> {
        self.create(key, parents, true)
    }

    /// The mounts of an existing snapshot.
    pub fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let dir = self.key_dir(key)?;
        let record = read_record(&dir, key)?;
        Ok(self.mounts_for(&dir, &record))
    }

    /// Deletes a snapshot's directories (and whatever else its key dir holds). The caller
    /// unmounts first.
    pub fn remove(&self, key: &str) -> Result<()> {
        self.retire(key)?.purge()
    }

    /// Removes a snapshot from its key at once — the key is free when this returns — and
    /// hands back its directory, moved into the snapshotter's trash (`.trash/`), for
    /// [`Retired::purge`] to delete, now or later and from another process (see
    /// `trash.rs`). The caller unmounts first.
    pub fn retire(&self, key: &str) -> Result<Retired> {
        let dir = self.key_dir(key)?;
        if !dir.join("snapshot.json").exists() {
            return Err(SnapshotError::NotFound(key.to_string()));
        }
        // Drop the record first: a crash midway leaves no half snapshot that looks
        // usable. Renamed, not deleted: its inode is the next record's (see `spare.rs`).
        fs::rename(dir.join("snapshot.json"), dir.join(RECORD_TMP))
            .map_err(io_ctx("remove snapshot record"))?;
        let entry = crate::trash::retire(&dir, &self.root.join(TRASH))
            .map_err(io_ctx(format!("move {} to the trash", dir.display())))?;
        Ok(self.retired(entry))
    }

    /// Purges the trash's entries no one holds: those retired and let go for a purger
    /// (the engine's for `run --rm`), and those whose purger was killed.
    pub fn sweep_trash(&self) {
        for entry in crate::trash::unheld(&self.root.join(TRASH)) {
            let _ = self.retired(entry).purge();
        }
    }

    fn retired(&self, entry: crate::trash::Entry) -> Retired {
        let spares = self
            .spares
            .clone()
            .filter(|_| self.mode == SnapshotMode::Overlay);
        Retired { entry, spares }
    }

    fn key_dir(&self, key: &str) -> Result<PathBuf> {
        let bad = key.is_empty() || key == "." || key == ".." || key.contains(['/', '\0']);
        if bad {
            return Err(SnapshotError::InvalidKey(key.to_string()));
        }
        Ok(self.root.join(key))
    }

    fn create(&self, key: &str, parents: &[Digest], readonly: bool) -> Result<Vec<Mount>> {
        let dir = self.key_dir(key)?;
        if dir.join("snapshot.json").exists() {
            return Err(SnapshotError::AlreadyExists(key.to_string()));
        }
        for p in parents {
            if !self.layers.contains(p) {
                return Err(SnapshotError::LayerNotFound(p.clone()));
            }
        }
        let spare = !readonly
            && self.mode == SnapshotMode::Overlay
            && self.spares.as_ref().is_some_and(|s| s.take(&dir));
        if !spare {
            fs::create_dir_all(&dir).map_err(io_ctx(format!("create {}", dir.display())))?;
        }
        let mount_points = self.mount_points
            && self.mode == SnapshotMode::Overlay
            && !readonly
            && self.mount_point_layer(parents)?;
        let record = Record {
            mode: self.mode,
            readonly,
            parents: parents.to_vec(),
            mount_points,
        };
        match self.mode {
            SnapshotMode::Copy => self.build_copy(&dir, parents)?,
            _ => make_overlay_dirs(&dir, &record)?,
        }
        write_record(&dir, &record, self.durable)?;
        Ok(self.mounts_for(&dir, &record))
    }

    /// Makes (once per top layer) the layer of [`MOUNT_POINT_FILES`] stubs that the
    /// layers lack; false when they lack none.
    fn mount_point_layer(&self, parents: &[Digest]) -> Result<bool> {
        let Some(top) = parents.last() else {
            return Ok(false);
        };
        let path = self.layers.mount_points_path(top);
        if path.is_dir() {
            return Ok(true);
        }
        let lowers: Vec<PathBuf> = parents.iter().rev().map(|p| self.layers.path(p)).collect();
        // Only files whose directory the image has: a stub layer must not add an `/etc`
        // to an image without one (an export of a created container would show it).
        let missing: Vec<&str> = MOUNT_POINT_FILES
            .into_iter()
            .filter(|f| matches!(merged_entry(&lowers, f), Merged::Absent))
            .filter(|f| {
                let parent = f.rsplit_once('/').map_or("", |(p, _)| p);
                parent.is_empty() || matches!(merged_entry(&lowers, parent), Merged::Dir(_))
            })
            .collect();
        if missing.is_empty() {
            return Ok(false);
        }
        let tmp = self.layers.temp_dir().map_err(|e| SnapshotError::Io {
            context: "create mount-point layer".into(),
            source: io::Error::other(e.to_string()),
        })?;
        let built = write_stubs(&tmp, &lowers, &missing);
        // Not synced: after a power cut a lost stub is created through the overlay again,
        // as without this layer. A concurrent start may have renamed its copy first.
        let placed = built.and_then(|()| match fs::rename(&tmp, &path) {
            Err(_) if path.is_dir() => Ok(()),
            r => r,
        });
        let _ = fs::remove_dir_all(&tmp);
        placed.map_err(io_ctx(format!("create {}", path.display())))?;
        Ok(true)
    }

    fn build_copy(&self, dir: &Path, parents: &[Digest]) -> Result<()> {
        let fs_dir = dir.join("fs");
        let _ = fs::remove_dir_all(&fs_dir);
        mkdir_mode(&fs_dir, 0o755)?;
        for p in parents {
            let src = self.layers.path(p);
            merge_layer(&src, &fs_dir).map_err(io_ctx(format!("copy layer {p}")))?;
        }
        Ok(())
    }

    fn mounts_for(&self, dir: &Path, record: &Record) -> Vec<Mount> {
        let rw = if record.readonly { "ro" } else { "rw" };
        let bind = |source: PathBuf| Mount {
            fs_type: "bind".into(),
            source,
            options: vec!["rbind".into(), rw.into()],
        };
        if record.mode == SnapshotMode::Copy {
            return vec![bind(dir.join("fs"))];
        }
        // overlayfs lists lower dirs top first.
        let stubs = record
            .parents
            .last()
            .filter(|_| record.mount_points)
            .map(|top| self.layers.mount_points_path(top));
        let lowers: Vec<String> = stubs
            .into_iter()
            .chain(record.parents.iter().rev().map(|p| self.layers.path(p)))
            .map(|p| p.display().to_string())
            .collect();
        match (record.readonly, lowers.len()) {
            (_, 0) => vec![bind(dir.join("upper"))],
            (true, 1) => vec![bind(PathBuf::from(&lowers[0]))],
            // Two or more lowers without an upper make a read-only overlay.
            (true, _) => vec![overlay(
                vec![format!("lowerdir={}", lowers.join(":"))],
                true,
            )],
            (false, _) => vec![overlay(
                vec![
                    format!("lowerdir={}", lowers.join(":")),
                    format!("upperdir={}", dir.join("upper").display()),
                    format!("workdir={}", dir.join("work").display()),
                ],
                false,
            )],
        }
    }
}

fn overlay(mut options: Vec<String>, readonly: bool) -> Mount {
    if readonly {
        options.insert(0, "ro".into());
    }
    Mount {
        fs_type: "overlay".into(),
        source: PathBuf::from("overlay"),
        options,
    }
}

/// Whether the running kernel offers overlayfs (built in or loaded).
pub fn overlay_supported() -> bool {
    fs::read_to_string("/proc/filesystems")
        .map(|s| {
            s.lines()
                .any(|l| l.split_whitespace().last() == Some("overlay"))
        })
        .unwrap_or(false)
}

/// What the merged view of `lowers` (top first, overlay-format whiteouts) has at `rel`.
enum Merged {
    Absent,
    Dir(fs::Metadata),
    /// A file, a link, or a path under a non-directory: left to the runtime as it is.
    Other,
}

fn merged_entry(lowers: &[PathBuf], rel: &str) -> Merged {
    let parts: Vec<&str> = rel.split('/').collect();
    for layer in lowers {
        let mut cur = layer.clone();
        let mut opaque_above = false;
        for (i, part) in parts.iter().enumerate() {
            cur.push(part);
            let Ok(md) = fs::symlink_metadata(&cur) else {
                // Not in this layer: lower layers show through unless a directory of
                // this layer above it is opaque.
                if opaque_above {
                    return Merged::Absent;
                }
                break;
            };
            if md.file_type().is_char_device() && md.rdev() == 0 {
                return Merged::Absent;
            }
            if !md.is_dir() {
                return Merged::Other;
            }
            if i + 1 == parts.len() {
                return Merged::Dir(md);
            }
            opaque_above |= sys::lgetxattr(&cur, OsStr::new("trusted.overlay.opaque"))
                .ok()
                .flatten()
                .as_deref()
                == Some(b"y");
        }
    }
    Merged::Absent
}

/// Empty files at `missing` under `dir`, their directories (which the image has) made
/// with the owner, mode and mtime the merged view gives them: the topmost lower wins in
/// overlayfs, so a plain 0755 `/etc` here would change the container's.
fn write_stubs(dir: &Path, lowers: &[PathBuf], missing: &[&str]) -> io::Result<()> {
    let mut made = Vec::new();
    for rel in missing {
        if let Some((parent, _)) = rel.rsplit_once('/') {
            let at = dir.join(parent);
            if let (false, Merged::Dir(md)) = (at.is_dir(), merged_entry(lowers, parent)) {
                fs::create_dir_all(&at)?;
                std::os::unix::fs::lchown(&at, Some(md.uid()), Some(md.gid()))?;
                fs::set_permissions(&at, fs::Permissions::from_mode(md.mode() & 0o7777))?;
                made.push((at, md));
            }
        }
        let file = dir.join(rel);
        fs::File::create(&file)?;
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644))?;
    }
    // Last: creating the stubs changed their directories' mtimes.
    for (at, md) in made {
        sys::lutimes(&at, (md.mtime(), md.mtime_nsec()))?;
    }
    Ok(())
}

fn make_overlay_dirs(dir: &Path, record: &Record) -> Result<()> {
    if record.readonly && !record.parents.is_empty() {
        return Ok(());
    }
    mkdir_mode(&dir.join("upper"), UPPER_MODE)?;
    if !record.parents.is_empty() {
        mkdir_mode(&dir.join("work"), 0o711)?;
    }
    Ok(())
}

/// Empties a removed snapshot's key dir down to its empty `upper` and `work` and its
/// files, emptied (the record's and the owner's, kept for the next owner to write again:
/// `spare::keep_file`, which deletes one a container changed); its empty directories are
/// removed. Fails (and the caller deletes instead) on a directory of the owner's that is
/// not empty or still a mount point.
fn clear_for_spare(dir: &Path) -> io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let path = e.path();
        match e.file_name().to_str() {
            Some("upper" | "work") => empty_dir(&path)?,
            _ if e.file_type()?.is_dir() => fs::remove_dir(&path)?,
            _ => {
                if !crate::spare::keep_file(&path)? {
                    fs::remove_file(&path)?;
                }
            }
        }
    }
    Ok(())
}

/// Deletes what directory `path` holds, keeping it.
fn empty_dir(path: &Path) -> io::Result<()> {
    for e in fs::read_dir(path)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            fs::remove_dir_all(e.path())?;
        } else {
            fs::remove_file(e.path())?;
        }
    }
    Ok(())
}

fn mkdir_mode(path: &Path, mode: u32) -> Result<()> {
    match fs::DirBuilder::new().mode(mode).create(path) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            Err(io_ctx(format!("create {}", path.display()))(e))
        }
        _ => Ok(()),
    }
}

fn write_record(dir: &Path, record: &Record, durable: bool) -> Result<()> {
    let json = serde_json::to_vec_pretty(record)
        .map_err(|e| SnapshotError::Corrupt(dir.to_path_buf(), e.to_string()))?;
    let tmp = dir.join(RECORD_TMP);
    crate::spare::write_in_place(&tmp, &json).map_err(io_ctx("write snapshot record"))?;
    if durable {
        fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io_ctx("fsync snapshot record"))?;
    }
    fs::rename(&tmp, dir.join("snapshot.json")).map_err(io_ctx("commit snapshot record"))?;
    if durable {
        crate::content::fsync_dir(dir).map_err(io_ctx("fsync snapshot dir"))?;
    }
    Ok(())
}

fn read_record(dir: &Path, key: &str) -> Result<Record> {
    let path = dir.join("snapshot.json");
    let data = match fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(SnapshotError::NotFound(key.to_string()))
        }
        Err(e) => return Err(io_ctx("read snapshot record")(e)),
    };
    serde_json::from_slice(&data).map_err(|e| SnapshotError::Corrupt(path, e.to_string()))
}

/// Copies one unpacked layer onto `dst` with overlay semantics: 0:0 char
/// devices delete, opaque directories hide what was below them.
fn merge_layer(src: &Path, dst: &Path) -> io::Result<()> {
    let mut links = HashMap::new();
    merge_dir(src, dst, &mut links)
}

fn merge_dir(src: &Path, dst: &Path, links: &mut HashMap<(u64, u64), PathBuf>) -> io::Result<()> {
    if sys::lgetxattr(src, OsStr::new("trusted.overlay.opaque"))?.as_deref() == Some(b"y") {
        for e in fs::read_dir(dst)? {
            remove_any(&e?.path())?;
        }
    }
    let mut names: Vec<_> = fs::read_dir(src)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort();
    for name in names {
        let (s, d) = (src.join(&name), dst.join(&name));
        let md = fs::symlink_metadata(&s)?;
        let ft = md.file_type();
        if ft.is_char_device() && md.rdev() == 0 {
            remove_any(&d)?;
            continue;
        }
        let existing = fs::symlink_metadata(&d).ok();
        if ft.is_dir() {
            if !existing.as_ref().is_some_and(|m| m.is_dir()) {
                remove_any(&d)?;
                fs::create_dir(&d)?;
            }
            merge_dir(&s, &d, links)?;
        } else {
            remove_any(&d)?;
            copy_entry(&s, &d, &md, links)?;
        }
        copy_meta(&s, &d, &md)?;
    }
    Ok(())
}

fn copy_entry(
    s: &Path,
    d: &Path,
    md: &fs::Metadata,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> io::Result<()> {
    let ft = md.file_type();
    if md.nlink() > 1 {
        if let Some(first) = links.get(&(md.dev(), md.ino())) {
            return fs::hard_link(first, d);
        }
        links.insert((md.dev(), md.ino()), d.to_path_buf());
    }
    if ft.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(s)?, d)
    } else if ft.is_file() {
        fs::copy(s, d).map(|_| ())
    } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
        let fmt = md.mode() & libc::S_IFMT;
        sys::mknod(d, fmt | 0o600, md.rdev())
    } else {
        Ok(()) // sockets
    }
}

fn copy_meta(s: &Path, d: &Path, md: &fs::Metadata) -> io::Result<()> {
    std::os::unix::fs::lchown(d, Some(md.uid()), Some(md.gid()))?;
    if !md.file_type().is_symlink() {
        fs::set_permissions(d, fs::Permissions::from_mode(md.mode() & 0o7777))?;
    }
    for name in sys::llistxattr(s)? {
        if name
            .to_str()
            .is_some_and(|n| n.starts_with("trusted.overlay."))
        {
            continue;
        }
        if let Some(v) = sys::lgetxattr(s, &name)? {
            sys::lsetxattr(d, &name, &v)?;
        }
    }
    sys::lutimes(d, (md.mtime(), md.mtime_nsec()))
}

fn remove_any(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::{write_layer, AppliedLayer, ApplyOptions, Compression};
    use crate::testutil::{is_root, TarBuilder};

    struct Fixture {
        tmp: tempfile::TempDir,
        layers: LayerStore,
        l1: AppliedLayer,
        l2: AppliedLayer,
    }

    /// Two layers: the second deletes `a` and makes `d` opaque.
    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let layers = LayerStore::open(tmp.path().join("layers")).unwrap();
        let t1 = TarBuilder::new()
            .file("a", b"a")
            .file("b", b"b")
            .dir("d/", 0o755)
            .file("d/x", b"x")
            .finish();
        let t2 = TarBuilder::new()
            .file(".wh.a", b"")
            .dir("d/", 0o755)
            .file("d/.wh..wh..opq", b"")
            .file("d/y", b"y")
            .finish();
        let opts = ApplyOptions::default();
        let l1 = layers.apply(None, &t1[..], None, None, &opts).unwrap();
        let l2 = layers
            .apply(Some(&l1.chain_id), &t2[..], None, None, &opts)
            .unwrap();
        Fixture {
            tmp,
            layers,
            l1,
            l2,
        }
    }

    /// Lazily unmounts on drop so a failing test leaves no mount behind.
    struct Mounted(PathBuf);
    impl Drop for Mounted {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }

    fn mount(m: &Mount, target: &Path) -> Mounted {
        fs::create_dir_all(target).unwrap();
        m.mount_at(target).unwrap();
        Mounted(target.to_path_buf())
    }

    fn can_mount() -> bool {
        let ok = is_root() && overlay_supported();
        if !ok {
            eprintln!("skipped: needs root and overlayfs");
        }
        ok
    }

    #[test]
    fn overlay_whiteouts_hide_lower_files_and_diff_sees_changes() {
        if !can_mount() {
            return;
        }
        let f = fixture();
        let snaps = Snapshotter::new(
            f.tmp.path().join("containers"),
            f.layers.clone(),
            SnapshotMode::Overlay,
        )
        .unwrap();
        let parents = [f.l1.chain_id.clone(), f.l2.chain_id.clone()];
        let mounts = snaps.prepare("c1", &parents).unwrap();
        assert_eq!(mounts.len(), 1);
        let m = &mounts[0];
        assert_eq!(m.fs_type, "overlay");
        let lower = format!("lowerdir={}:{}", f.l2.path.display(), f.l1.path.display());
        assert_eq!(m.options[0], lower, "top layer first");
        assert_eq!(snaps.mounts("c1").unwrap(), mounts);

        let target = f.tmp.path().join("mnt");
        let guard = mount(m, &target);
        assert!(!target.join("a").exists(), "whiteout hides the lower file");
        assert_eq!(fs::read(target.join("b")).unwrap(), b"b");
        assert!(
            !target.join("d/x").exists(),
            "opaque dir hides lower content"
        );
        assert_eq!(fs::read(target.join("d/y")).unwrap(), b"y");
        fs::write(target.join("c"), b"new").unwrap();
        fs::remove_file(target.join("b")).unwrap();
        drop(guard);

        let upper = snaps.upper_dir("c1").unwrap();
        let mut out = Vec::new();
        write_layer(&upper, &mut out, Compression::None).unwrap();
        let names: Vec<String> = tar::Archive::new(&out[..])
            .entries()
            .unwrap()
            .map(|e| String::from_utf8(e.unwrap().path_bytes().into_owned()).unwrap())
            .collect();
        assert_eq!(names, [".wh.b", "c"]);

        snaps.remove("c1").unwrap();
        assert!(!f.tmp.path().join("containers/c1").exists());
        assert!(matches!(
            snaps.remove("c1"),
            Err(SnapshotError::NotFound(_))
        ));
    }

    #[test]
    fn removed_snapshots_leave_emptied_dirs_that_the_next_prepare_takes() {
        if !can_mount() {
            return;
        }
        let f = fixture();
        let root = f.tmp.path().join("containers");
        let spares = || fs::read_dir(root.join(".spares")).map_or(0, Iterator::count);
        let snaps = Snapshotter::new(&root, f.layers.clone(), SnapshotMode::Overlay)
            .unwrap()
            .with_spares(1);
        let parents = [f.l1.chain_id.clone(), f.l2.chain_id.clone()];
        let m = snaps.prepare("c1", &parents).unwrap().remove(0);
        let guard = mount(&m, &root.join("c1/rootfs"));
        fs::write(root.join("c1/rootfs/c"), b"changed").unwrap();
        fs::create_dir_all(root.join("c1/rootfs/new/deep")).unwrap();
        fs::remove_file(root.join("c1/rootfs/b")).unwrap();
        drop(guard);
        // The owner's files: one as made, one a container changed through a bind mount.
        fs::write(root.join("c1/hosts"), b"10.0.0.2 c1\n").unwrap();
        fs::set_permissions(root.join("c1/hosts"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(root.join("c1/resolv.conf"), b"nameserver 10.0.0.1\n").unwrap();
        fs::set_permissions(
            root.join("c1/resolv.conf"),
            fs::Permissions::from_mode(0o666),
        )
        .unwrap();
        let ino_of = |p: &str| fs::metadata(root.join(p)).unwrap().ino();
        let (ino, hosts_ino, record_ino) =
            (ino_of("c1"), ino_of("c1/hosts"), ino_of("c1/snapshot.json"));
        snaps.remove("c1").unwrap();
        assert!(!root.join("c1").exists());
        assert_eq!(spares(), 1);

        // The next snapshot gets that directory, emptied, and shows the image unchanged;
        // the files come back empty, in the same inodes, but for the changed one.
        let m = snaps.prepare("c2", &parents).unwrap().remove(0);
        assert_eq!(ino_of("c2"), ino);
        assert_eq!(spares(), 0);
        assert_eq!(fs::read_dir(root.join("c2/upper")).unwrap().count(), 0);
        assert_eq!(
            (ino_of("c2/hosts"), fs::read(root.join("c2/hosts")).unwrap()),
            (hosts_ino, vec![])
        );
        assert_eq!(ino_of("c2/snapshot.json"), record_ino);
        assert!(!root.join("c2/resolv.conf").exists());
        let merged = root.join("c2/rootfs");
        let guard = mount(&m, &merged);
        assert_eq!(fs::read(merged.join("b")).unwrap(), b"b");
        assert!(!merged.join("new").exists() && !merged.join("a").exists());
        // A root whose mode the container changed (it is the upper dir's) is not kept.
        fs::set_permissions(&merged, fs::Permissions::from_mode(0o700)).unwrap();
        drop(guard);
        snaps.remove("c2").unwrap();
        assert!(!root.join("c2/upper").exists(), "deleted as before");
        assert_eq!(spares(), 0);

        // Nor a directory holding something of the owner's that is not a file or an empty
        // dir (those go with it: c4's bundle and mount point), nor one past the cap: those
        // are deleted whole.
        for key in ["c3", "c4", "c5"] {
            snaps.prepare(key, &parents).unwrap();
        }
        fs::create_dir(root.join("c3/logs")).unwrap();
        fs::write(root.join("c3/logs/old.log"), b"x").unwrap();
        fs::write(root.join("c4/bundle.json"), b"{}").unwrap();
        fs::create_dir(root.join("c4/rootfs")).unwrap();
        for key in ["c3", "c4", "c5"] {
            snaps.remove(key).unwrap();
        }
        assert_eq!(spares(), 1);
        for key in ["c3", "c4", "c5"] {
            assert!(!root.join(key).exists());
        }
        assert_eq!(fs::read_dir(root.join(TRASH)).unwrap().count(), 0);
    }

    #[test]
    fn a_retired_snapshot_frees_its_key_at_once_and_is_purged_later_or_swept() {
        if !can_mount() {
            return;
        }
        let f = fixture();
        let root = f.tmp.path().join("containers");
        let count = |d: &str| fs::read_dir(root.join(d)).map_or(0, Iterator::count);
        let snaps = Snapshotter::new(&root, f.layers.clone(), SnapshotMode::Overlay)
            .unwrap()
            .with_spares(4);
        let parents = [f.l1.chain_id.clone()];
        for key in ["c1", "c2"] {
            snaps.prepare(key, &parents).unwrap();
            fs::write(root.join(key).join("upper/changed"), b"x").unwrap();
        }
        let first = snaps.retire("c1").unwrap();
        let second = snaps.retire("c2").unwrap();
        assert!(!root.join("c1").exists() && !root.join("c2").exists());
        assert!(matches!(
            snaps.mounts("c1"),
            Err(SnapshotError::NotFound(_))
        ));
        snaps
            .prepare("c1", &parents)
            .expect("the key is free again");
        assert_eq!(count(TRASH), 2);

        // A held entry is not swept; purging it empties it into a spare.
        snaps.sweep_trash();
        assert_eq!(count(TRASH), 2);
        first.purge().unwrap();
        assert_eq!((count(TRASH), count(".spares")), (1, 1));
        let spare = fs::read_dir(root.join(".spares"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(fs::read_dir(spare.path().join("upper")).unwrap().count(), 0);

        // One whose purger went away (its lock closed unpurged) is swept by the next.
        drop(second);
        snaps.sweep_trash();
        assert_eq!((count(TRASH), count(".spares")), (0, 2));
    }

    #[test]
    fn mount_point_layer_stubs_only_what_the_image_lacks() {
        if !can_mount() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let layers = LayerStore::open(tmp.path().join("layers")).unwrap();
        let opts = ApplyOptions::default();
        // The base has all three files; the top layer deletes hosts and makes /etc 0750.
        let t1 = TarBuilder::new()
            .dir("etc/", 0o755)
            .file("etc/hosts", b"base")
            .file("etc/hostname", b"base")
            .file("etc/resolv.conf", b"base")
            .finish();
        let t2 = TarBuilder::new()
            .dir("etc/", 0o750)
            .file("etc/.wh.hosts", b"")
            .finish();
        let l1 = layers.apply(None, &t1[..], None, None, &opts).unwrap();
        let l2 = layers
            .apply(Some(&l1.chain_id), &t2[..], None, None, &opts)
            .unwrap();
        let snaps = Snapshotter::new(
            tmp.path().join("containers"),
            layers.clone(),
            SnapshotMode::Overlay,
        )
        .unwrap()
        .with_mount_points(true);

        // An image without /etc gets none either: the layer adds no directory.
        let t0 = TarBuilder::new().file("bin", b"x").finish();
        let l0 = layers.apply(None, &t0[..], None, None, &opts).unwrap();
        let bare = snaps
            .prepare("bare", std::slice::from_ref(&l0.chain_id))
            .unwrap();
        assert_eq!(
            bare[0].options[0],
            format!("lowerdir={}", l0.path.display())
        );
        assert!(!layers.mount_points_path(&l0.chain_id).exists());

        // An image with every file gets no extra layer.
        let plain = snaps
            .prepare("full", std::slice::from_ref(&l1.chain_id))
            .unwrap();
        assert_eq!(
            plain[0].options[0],
            format!("lowerdir={}", l1.path.display())
        );
        assert!(!layers.mount_points_path(&l1.chain_id).exists());

        let mounts = snaps
            .prepare("c1", &[l1.chain_id.clone(), l2.chain_id.clone()])
            .unwrap();
        let init = layers.mount_points_path(&l2.chain_id);
        let lower = format!(
            "lowerdir={}:{}:{}",
            init.display(),
            l2.path.display(),
            l1.path.display()
        );
        assert_eq!(mounts[0].options[0], lower, "stubs above the image");
        assert_eq!(snaps.mounts("c1").unwrap(), mounts, "kept in the record");
        let stub_names: Vec<_> = fs::read_dir(init.join("etc"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(stub_names, ["hosts"], "only the deleted file is stubbed");
        let etc = fs::metadata(init.join("etc")).unwrap();
        assert_eq!(etc.mode() & 0o7777, 0o750, "/etc keeps the image's mode");
        let want = fs::metadata(l2.path.join("etc")).unwrap().mtime();
        assert_eq!(etc.mtime(), want, "and its mtime");

        // The runtime binds over the stub: nothing is created or copied up.
        let target = tmp.path().join("mnt");
        let guard = mount(&mounts[0], &target);
        assert_eq!(fs::read(target.join("etc/hosts")).unwrap(), b"");
        assert_eq!(fs::read(target.join("etc/hostname")).unwrap(), b"base");
        let merged = fs::metadata(target.join("etc")).unwrap();
        assert_eq!(merged.mode() & 0o7777, 0o750);
        drop(guard);
        let upper = snaps.upper_dir("c1").unwrap();
        assert_eq!(fs::read_dir(&upper).unwrap().count(), 0, "upper untouched");

        // A second snapshot shares the layer; removing the image's top layer removes it.
        snaps
            .prepare("c2", &[l1.chain_id.clone(), l2.chain_id.clone()])
            .unwrap();
        assert_eq!(snaps.mounts("c2").unwrap()[0].options[0], lower);
        assert!(layers.remove(&l2.chain_id).unwrap());
        assert!(!init.exists());
    }

    #[test]
    fn single_layer_view_is_a_readonly_bind() {
        if !can_mount() {
            return;
        }
        let f = fixture();
        let snaps = Snapshotter::new(
            f.tmp.path().join("c"),
            f.layers.clone(),
            SnapshotMode::Overlay,
        )
        .unwrap();
        let mounts = snaps
            .view("v", std::slice::from_ref(&f.l1.chain_id))
            .unwrap();
        assert_eq!(mounts[0].fs_type, "bind");
        assert_eq!(mounts[0].source, f.l1.path);
        assert!(mounts[0].options.contains(&"ro".to_string()));
        let target = f.tmp.path().join("mnt");
        let _guard = mount(&mounts[0], &target);
        assert_eq!(fs::read(target.join("a")).unwrap(), b"a");
        let err = fs::write(target.join("new"), b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS));

        // A multi-layer view is an overlay without upper dir.
        let v2 = snaps
            .view("v2", &[f.l1.chain_id.clone(), f.l2.chain_id.clone()])
            .unwrap();
        assert_eq!(v2[0].fs_type, "overlay");
        assert!(v2[0].options.iter().all(|o| !o.starts_with("upperdir")));
    }

    #[test]
    fn copy_mode_applies_whiteouts() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let f = fixture();
        let snaps =
            Snapshotter::new(f.tmp.path().join("c"), f.layers.clone(), SnapshotMode::Copy).unwrap();
        assert_eq!(snaps.mode(), SnapshotMode::Copy);
        let mounts = snaps
            .prepare("k", &[f.l1.chain_id.clone(), f.l2.chain_id.clone()])
            .unwrap();
        assert_eq!(mounts[0].fs_type, "bind");
        let root = &mounts[0].source;
        assert!(!root.join("a").exists());
        assert_eq!(fs::read(root.join("b")).unwrap(), b"b");
        assert!(!root.join("d/x").exists());
        assert_eq!(fs::read(root.join("d/y")).unwrap(), b"y");
        assert_eq!(
            sys::lgetxattr(&root.join("d"), OsStr::new("trusted.overlay.opaque")).unwrap(),
            None,
            "overlay markers are not copied"
        );
        snaps.remove("k").unwrap();
    }

    #[test]
    fn errors() {
        let f = fixture();
        let snaps =
            Snapshotter::new(f.tmp.path().join("c"), f.layers.clone(), SnapshotMode::Copy).unwrap();
        for bad in ["", ".", "..", "a/b"] {
            assert!(matches!(
                snaps.prepare(bad, &[]),
                Err(SnapshotError::InvalidKey(_))
            ));
        }
        let missing = crate::digest::Digest::sha256_of(b"missing");
        assert!(matches!(
            snaps.prepare("k", &[missing]),
            Err(SnapshotError::LayerNotFound(_))
        ));
        snaps.prepare("k", &[]).unwrap();
        assert!(matches!(
            snaps.prepare("k", &[]),
            Err(SnapshotError::AlreadyExists(_))
        ));
        assert!(matches!(
            snaps.mounts("nope"),
            Err(SnapshotError::NotFound(_))
        ));
    }

    #[test]
    fn empty_parent_list_is_a_bind_of_upper() {
        let f = fixture();
        let snaps =
            Snapshotter::new(f.tmp.path().join("c"), f.layers.clone(), SnapshotMode::Auto).unwrap();
        let m = snaps.prepare("scratch", &[]).unwrap();
        assert_eq!(m[0].fs_type, "bind");
        assert!(m[0].options.contains(&"rw".to_string()));
    }
}

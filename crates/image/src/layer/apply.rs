//! Safe unpacking of layer tars into layer directories.
//!
//! # Why openat2
//!
//! A layer is untrusted input. Checking names as strings is not enough: an
//! earlier entry can plant a symlink (`lib -> /etc`) so that a later,
//! innocent-looking name (`lib/passwd`) writes outside the layer when the
//! kernel follows it. Every path here is therefore resolved by the kernel
//! with `openat2(RESOLVE_IN_ROOT)` against a descriptor of the layer
//! directory: `..` stops at the layer root and absolute symlinks restart
//! from it, exactly as if the layer were chrooted, with no race between a
//! check and a use. Only the parent directory is resolved that way; the
//! final name is then a single component handled with the `*at` calls
//! (`mknodat`, `symlinkat`, `linkat`, ...) or `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)` with `O_EXCL|O_NOFOLLOW`, so nothing ever writes
//! through a symlink. Names with `..` that would leave the root lexically
//! are rejected outright (as Docker does), absolute names are taken as
//! relative to the layer root.
//!
//! # Whiteouts
//!
//! Layer directories are overlayfs lower directories, so OCI whiteouts are
//! converted while unpacking: `.wh.<name>` becomes a 0:0 character device
//! named `<name>` and `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its
//! directory. `trusted.overlay.*` xattrs coming from the tar itself are
//! dropped, since they would steer overlayfs (redirects, metacopy).
//!
//! # Crash safety
//!
//! A layer is unpacked into `layers/.tmp-<pid>-<n>/`, the diff id (sha256 of
//! the uncompressed stream) is computed in the same pass and checked, the
//! filesystem is synced and only then is the directory renamed to
//! `layers/<chainid-hex>/`.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tar::EntryType;

use super::{chain_id, decompress, io_ctx, LayerError};
use crate::digest::{Algorithm, Digest, HashingReader};
use crate::sys;

type Result<T> = std::result::Result<T, LayerError>;

const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// Other `.wh..wh.` names are aufs bookkeeping and carry no meaning here.
const WHITEOUT_META_PREFIX: &str = ".wh..wh.";

/// What to do with character and block device entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevicePolicy {
    /// Create them (needs CAP_MKNOD).
    Create,
    /// Leave them out silently (rootless unpacking).
    Skip,
    /// Fail the layer.
    Reject,
}

/// How to unpack.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Device node handling.
    pub devices: DevicePolicy,
    /// Apply the uid/gid from the tar (needs CAP_CHOWN).
    pub same_owner: bool,
    /// Apply xattrs from PAX `SCHILY.xattr.*` records.
    pub xattrs: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            devices: DevicePolicy::Create,
            same_owner: true,
            xattrs: true,
        }
    }
}

/// What [`unpack`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackStats {
    /// sha256 of the whole uncompressed stream.
    pub diff_id: Digest,
    /// Length of the uncompressed stream.
    pub tar_size: u64,
    /// Sum of the sizes of regular files (what `docker images` counts).
    pub content_size: u64,
}

/// A layer present in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedLayer {
    /// The layer's chain id.
    pub chain_id: Digest,
    /// The layer's diff id.
    pub diff_id: Digest,
    /// Sum of regular file sizes.
    pub content_size: u64,
    /// The layer directory.
    pub path: PathBuf,
    /// True when another apply had already unpacked it.
    pub already_present: bool,
}

/// The directory of unpacked layers, `layers/<chainid-hex>/`.
#[derive(Debug, Clone)]
pub struct LayerStore {
    root: PathBuf,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl LayerStore {
    /// Opens (creating if needed) the layer directory and removes temporary
    /// directories left by processes that no longer run.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        fs::create_dir_all(&root).map_err(io_ctx(format!("create {}", root.display())))?;
        let store = LayerStore { root };
        store.clean_stale_temps();
        Ok(store)
    }

    /// The directory of a layer. Only the hex is used: overlayfs separates
    /// lower directories with `:`, so `sha256:` cannot appear in the path.
    pub fn path(&self, chain_id: &Digest) -> PathBuf {
        self.root.join(chain_id.hex())
    }

    /// A store over an existing directory, without the stale-temp sweep of [`open`]: for
    /// callers on a container's start path, which only read layers.
    ///
    /// [`open`]: LayerStore::open
    pub fn at(root: impl AsRef<Path>) -> Self {
        LayerStore {
            root: root.as_ref().to_path_buf(),
        }
    }

    /// The mount-point layer made for containers of the image whose top layer is
    /// `chain_id` (see `snapshot::MOUNT_POINT_FILES`); removed with the layer.
    pub fn mount_points_path(&self, chain_id: &Digest) -> PathBuf {
        self.root.join(format!("{}-init", chain_id.hex()))
    }

    /// Whether a layer is unpacked.
    pub fn contains(&self, chain_id: &Digest) -> bool {
        self.path(chain_id).is_dir()
    }

    /// Unpacks a (possibly compressed) layer on top of `parent` unless it is
    /// already present. With `expected_diff_id` the stream is verified and a
    /// present layer is detected without reading it.
    pub fn apply(
        &self,
        parent: Option<&Digest>,
        reader: impl Read,
        media_type: Option<&str>,
        expected_diff_id: Option<&Digest>,
        opts: &ApplyOptions,
    ) -> Result<AppliedLayer> {
        if let Some(expected) = expected_diff_id {
            let chain = chain_id(parent, expected);
            if self.contains(&chain) {
                return self.present(chain, expected.clone());
            }
        }
        let tmp = self.temp_dir()?;
        let result = self.unpack_and_check(&tmp, reader, media_type, expected_diff_id, opts);
        let stats = match result {
            Ok(s) => s,
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        let chain = chain_id(parent, &stats.diff_id);
        let final_path = self.path(&chain);
        if let Err(e) = fs::rename(&tmp, &final_path) {
            let _ = fs::remove_dir_all(&tmp);
            // Another apply won the race (rename onto a non-empty dir fails).
            if final_path.is_dir() {
                return self.present(chain, stats.diff_id);
            }
            return Err(io_ctx(format!(
                "rename layer into {}",
                final_path.display()
            ))(e));
        }
        crate::content::fsync_dir(&self.root).map_err(io_ctx("fsync layers dir"))?;
        Ok(AppliedLayer {
            chain_id: chain,
            diff_id: stats.diff_id,
            content_size: stats.content_size,
            path: final_path,
            already_present: false,
        })
    }

    /// Moves `dir`, a directory already in layer form (an overlay upper
    /// directory that [`super::diff::write_layer_and_adopt`] has just written
    /// out as the tar with `diff_id`), into the store as that layer on top of
    /// `parent`, instead of unpacking the tar into a new directory. The
    /// filesystem is synced first, so the layer is complete on disk before
    /// its name appears (this one sync also covers anything else written on
    /// that filesystem, such as the layer's blob). `dir` must be on the
    /// store's filesystem; when the layer is already present `dir` is left
    /// where it is.
    pub fn adopt(
        &self,
        parent: Option<&Digest>,
        dir: &Path,
        diff_id: &Digest,
        content_size: u64,
    ) -> Result<AppliedLayer> {
        let chain = chain_id(parent, diff_id);
        if self.contains(&chain) {
            return self.present(chain, diff_id.clone());
        }
        let fd = File::open(dir).map_err(io_ctx(format!("open {}", dir.display())))?;
        sys::syncfs(fd.as_fd()).map_err(io_ctx("sync layer"))?;
        let final_path = self.path(&chain);
        if let Err(e) = fs::rename(dir, &final_path) {
            if final_path.is_dir() {
                return self.present(chain, diff_id.clone());
            }
            return Err(io_ctx(format!("move layer into {}", final_path.display()))(
                e,
            ));
        }
        crate::content::fsync_dir(&self.root).map_err(io_ctx("fsync layers dir"))?;
        Ok(AppliedLayer {
            chain_id: chain,
            diff_id: diff_id.clone(),
            content_size,
            path: final_path,
            already_present: false,
        })
    }

    /// Removes a layer directory: renamed aside first so that it disappears
    /// at once, then deleted. Returns whether it existed.
    pub fn remove(&self, chain_id: &Digest) -> Result<bool> {
        let path = self.path(chain_id);
        let aside = self.temp_path();
        match fs::rename(&path, &aside) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_ctx(format!("remove {}", path.display()))(e)),
        }
        fs::remove_dir_all(&aside).map_err(io_ctx(format!("delete {}", aside.display())))?;
        let _ = fs::remove_dir_all(self.mount_points_path(chain_id));
        Ok(true)
    }

    fn unpack_and_check(
        &self,
        tmp: &Path,
        reader: impl Read,
        media_type: Option<&str>,
        expected: Option<&Digest>,
        opts: &ApplyOptions,
    ) -> Result<UnpackStats> {
        let stats = unpack(tmp, reader, media_type, opts)?;
        if let Some(expected) = expected {
            if &stats.diff_id != expected {
                return Err(LayerError::DiffIdMismatch {
                    expected: expected.clone(),
                    actual: stats.diff_id,
                });
            }
        }
        // syncfs needs a real (not O_PATH) descriptor.
        let dir = File::open(tmp).map_err(io_ctx("open unpacked layer"))?;
        sys::syncfs(dir.as_fd()).map_err(io_ctx("sync unpacked layer"))?;
        Ok(stats)
    }

    fn present(&self, chain_id: Digest, diff_id: Digest) -> Result<AppliedLayer> {
        let path = self.path(&chain_id);
        let content_size = content_size(&path).map_err(io_ctx("measure layer"))?;
        Ok(AppliedLayer {
            chain_id,
            diff_id,
            content_size,
            path,
            already_present: true,
        })
    }

    fn temp_path(&self) -> PathBuf {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        self.root
            .join(format!(".tmp-{}-{n}-{nanos}", std::process::id()))
    }

    pub(crate) fn temp_dir(&self) -> Result<PathBuf> {
        let tmp = self.temp_path();
        fs::create_dir(&tmp).map_err(io_ctx(format!("create {}", tmp.display())))?;
        Ok(tmp)
    }

    /// Temp dirs are named with the creating pid; those whose process is
    /// gone are leftovers of a crash.
    fn clean_stale_temps(&self) {
        let Ok(rd) = fs::read_dir(&self.root) else {
            return;
        };
        for entry in rd.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix(".tmp-"))
                .and_then(|n| n.split('-').next())
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            // SAFETY: signal 0 only checks whether the process exists.
            let gone = unsafe { libc::kill(pid, 0) } != 0
                && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
            if gone {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// Bytes in the regular files under `dir` (symlinks not followed): a layer's, a
/// container's writable layer's or a volume's size as `docker images`/`system df` show it.
pub fn content_size(dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            total += content_size(&entry.path())?;
        } else if meta.is_file() {
            total += meta.len();
        }
    }
    Ok(total)
}

/// Unpacks a layer stream into an existing directory `dest` (which should
/// be empty), converting whiteouts, and returns its diff id and sizes.
pub fn unpack(
    dest: &Path,
    reader: impl Read,
    media_type: Option<&str>,
    opts: &ApplyOptions,
) -> Result<UnpackStats> {
    let decoded = decompress(BufReader::new(reader), media_type).map_err(io_ctx("open layer"))?;
    let mut hashed = HashingReader::new(decoded, Algorithm::Sha256);
    let root = sys::open_dir_path(dest).map_err(io_ctx(format!("open {}", dest.display())))?;
    let mut ex = Extractor {
        root,
        opts,
        dirs: Vec::new(),
        content_size: 0,
        buf: Vec::new(),
    };
    ex.probe_openat2()?;
    {
        let mut archive = tar::Archive::new(&mut hashed);
        for entry in archive.entries().map_err(io_ctx("read layer"))? {
            let entry = entry.map_err(io_ctx("read layer entry"))?;
            ex.entry(entry)?;
        }
    }
    // The diff id covers the whole stream, including the end-of-archive
    // blocks and any padding after them.
    hashed.drain().map_err(io_ctx("read layer trailer"))?;
    ex.finish_dirs()?;
    Ok(UnpackStats {
        diff_id: hashed.digest(),
        tar_size: hashed.count(),
        content_size: ex.content_size,
    })
}

/// Metadata from a tar header, applied after the object exists.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    xattrs: Vec<(OsString, Vec<u8>)>,
}

/// A directory whose mode and times are set at the end: creating children
/// would bump its mtime, and a read-only mode would block the children.
struct DirMeta {
    comps: Vec<OsString>,
    mode: u32,
    mtime: (i64, i64),
}

struct Extractor<'a> {
    root: OwnedFd,
    opts: &'a ApplyOptions,
    dirs: Vec<DirMeta>,
    content_size: u64,
    /// Reused copy buffer for file data.
    buf: Vec<u8>,
}

impl Extractor<'_> {
    /// Fails early with a clear message on kernels without openat2 (< 5.6)
    /// rather than falling back to racy string checks.
    fn probe_openat2(&self) -> Result<()> {
        match self.open_in_root(&[], libc::O_PATH | libc::O_DIRECTORY) {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => Err(LayerError::Kernel(
                "layer extraction needs openat2(2) (Linux 5.6 or newer)".into(),
            )),
            Err(e) => Err(io_ctx("open layer root")(e)),
        }
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<()> {
        let raw = entry.path_bytes().into_owned();
        let display = String::from_utf8_lossy(&raw).into_owned();
        let comps = clean_path(&raw).ok_or_else(|| LayerError::UnsafePath(display.clone()))?;
        if let Some(last) = comps.last() {
            if last.as_bytes().starts_with(WHITEOUT_PREFIX.as_bytes()) {
                return self.whiteout(&comps, &display);
            }
        }
        let kind = entry.header().entry_type();
        let meta = self.meta(&mut entry)?;
        if comps.is_empty() && kind != EntryType::Directory {
            return Err(LayerError::UnsafePath(display));
        }
        match kind {
            EntryType::Directory => self.dir(comps, meta, &display),
            EntryType::Regular | EntryType::Continuous => {
                self.file(&comps, meta, &mut entry, &display)
            }
            EntryType::Symlink => {
                let target = link_name(&entry, &display)?;
                self.symlink(&comps, &target, meta, &display)
            }
            EntryType::Link => {
                let target = link_name(&entry, &display)?;
                self.hardlink(&comps, &target, &display)
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                self.special(&comps, kind, &entry, meta, &display)
            }
            EntryType::XGlobalHeader | EntryType::XHeader => Ok(()),
            other => Err(LayerError::Unsupported {
                path: display,
                kind: format!("{other:?}"),
            }),
        }
    }

    fn meta<R: Read>(&self, entry: &mut tar::Entry<'_, R>) -> Result<Meta> {
        let h = entry.header();
        let old = h.as_old();
        let mode = numeric(h.mode().map(u64::from), &old.mode, "mode")? as u32 & 0o7777;
        let mut uid = numeric(h.uid(), &old.uid, "uid")?;
        let mut gid = numeric(h.gid(), &old.gid, "gid")?;
        let secs = numeric(h.mtime(), &old.mtime, "mtime")? as i64;
        let mut mtime = (secs, 0);
        let mut xattrs = Vec::new();
        if let Some(exts) = entry.pax_extensions().map_err(io_ctx("read pax header"))? {
            for ext in exts.flatten() {
                let Ok(key) = ext.key() else { continue };
                let value = ext.value_bytes();
                match key {
                    "mtime" => mtime = parse_pax_time(value).unwrap_or(mtime),
                    "uid" => uid = parse_pax_id(value).ok_or_else(|| bad_field("uid"))?,
                    "gid" => gid = parse_pax_id(value).ok_or_else(|| bad_field("gid"))?,
                    _ => {
                        if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                            if allowed_xattr(name) {
                                xattrs.push((OsString::from(name), value.to_vec()));
                            }
                        }
                    }
                }
            }
        }
        let uid = u32::try_from(uid).map_err(|_| bad_field("uid"))?;
        let gid = u32::try_from(gid).map_err(|_| bad_field("gid"))?;
        Ok(Meta {
            mode,
            uid,
            gid,
            mtime,
            xattrs,
        })
    }

    fn open_in_root(&self, comps: &[OsString], flags: libc::c_int) -> io::Result<OwnedFd> {
        sys::openat2(self.root.as_fd(), &join(comps), flags, 0, sys::IN_ROOT)
    }

    /// Resolves (creating missing components as 0755 directories) the
    /// directory `comps` inside the root, returning an `O_PATH` descriptor.
    fn mkdir_all(&self, comps: &[OsString], display: &str) -> Result<OwnedFd> {
        let flags = libc::O_PATH | libc::O_DIRECTORY;
        match self.open_in_root(comps, flags) {
            Ok(fd) => return Ok(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && !comps.is_empty() => {}
            Err(e) => return Err(io_ctx(format!("resolve parent of {display:?}"))(e)),
        }
        let Some((last, parent)) = comps.split_last() else {
            return Err(io_ctx("resolve layer root")(io::Error::from_raw_os_error(
                libc::ENOENT,
            )));
        };
        let pfd = self.mkdir_all(parent, display)?;
        match sys::mkdirat(pfd.as_fd(), last, 0o755) {
            Err(e) if e.raw_os_error() != Some(libc::EEXIST) => {
                return Err(io_ctx(format!("create parent of {display:?}"))(e))
            }
            _ => {}
        }
        self.open_in_root(comps, flags)
            .map_err(io_ctx(format!("resolve parent of {display:?}")))
    }

    /// Makes room for a new entry `comps` and returns its parent directory.
    /// An existing directory is kept when the new entry is a directory too;
    /// anything else there is removed (later tar entries replace earlier).
    /// Returns the parent, the final name and whether a directory was kept.
    fn slot<'c>(
        &self,
        comps: &'c [OsString],
        is_dir: bool,
        display: &str,
    ) -> Result<(OwnedFd, &'c OsStr, bool)> {
        let (name, parent) = comps
            .split_last()
            .ok_or_else(|| LayerError::UnsafePath(display.to_string()))?;
        let pfd = self.mkdir_all(parent, display)?;
        let existing = match sys::lstatat(pfd.as_fd(), name) {
            Ok(st) => st,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok((pfd, name, false)),
            Err(e) => return Err(io_ctx(format!("stat {display:?}"))(e)),
        };
        let existing_is_dir = existing.st_mode & libc::S_IFMT == libc::S_IFDIR;
        if existing_is_dir && is_dir {
            return Ok((pfd, name, true));
        }
        let removed = if existing_is_dir {
            remove_all_at(pfd.as_fd(), name)
        } else {
            sys::unlinkat(pfd.as_fd(), name, false)
        };
        removed.map_err(io_ctx(format!("replace {display:?}")))?;
        Ok((pfd, name, false))
    }

    fn dir(&mut self, comps: Vec<OsString>, meta: Meta, display: &str) -> Result<()> {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
        let fd = if comps.is_empty() {
            self.open_in_root(&[], flags)
                .map_err(io_ctx("open layer root"))?
        } else {
            let (pfd, name, kept) = self.slot(&comps, true, display)?;
            if !kept {
                sys::mkdirat(pfd.as_fd(), name, 0o700)
                    .map_err(io_ctx(format!("mkdir {display:?}")))?;
            }
            sys::openat2(pfd.as_fd(), name, flags, 0, sys::BENEATH_NOFOLLOW)
                .map_err(io_ctx(format!("open {display:?}")))?
        };
        self.chown_fd(fd.as_fd(), &meta, display)?;
        self.xattrs_fd(fd.as_fd(), &meta, display)?;
        self.dirs.push(DirMeta {
            comps,
            mode: meta.mode,
            mtime: meta.mtime,
        });
        Ok(())
    }

    fn file(
        &mut self,
        comps: &[OsString],
        meta: Meta,
        data: &mut impl Read,
        display: &str,
    ) -> Result<()> {
        let (pfd, name, _) = self.slot(comps, false, display)?;
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        let fd = sys::openat2(pfd.as_fd(), name, flags, 0o600, sys::BENEATH_NOFOLLOW)
            .map_err(io_ctx(format!("create {display:?}")))?;
        let mut file = File::from(fd);
        let n = self
            .copy_data(data, &mut file)
            .map_err(io_ctx(format!("write {display:?}")))?;
        self.content_size += n;
        // chown clears set-id bits and file capabilities, so it goes first.
        self.chown_fd(file.as_fd(), &meta, display)?;
        sys::fchmod(file.as_fd(), meta.mode).map_err(io_ctx(format!("chmod {display:?}")))?;
        self.xattrs_fd(file.as_fd(), &meta, display)?;
        sys::futimes(file.as_fd(), meta.mtime, meta.mtime)
            .map_err(io_ctx(format!("set times of {display:?}")))
    }

    /// Copies a file's data in large writes (std's copy uses 8 KiB ones) and keeps
    /// writeback going, so the layer's final sync has little left to flush.
    fn copy_data(&mut self, data: &mut impl Read, file: &mut File) -> io::Result<u64> {
        if self.buf.is_empty() {
            self.buf = vec![0; 256 << 10];
        }
        let mut writeback = sys::Writeback::default();
        let mut total = 0u64;
        loop {
            // Decompressors hand out a few KiB per read: fill the buffer first.
            let mut filled = 0;
            while filled < self.buf.len() {
                match data.read(&mut self.buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if filled == 0 {
                return Ok(total);
            }
            io::Write::write_all(file, &self.buf[..filled])?;
            total += filled as u64;
            writeback.advance(file.as_fd(), total);
        }
    }

    fn symlink(&self, comps: &[OsString], target: &OsStr, meta: Meta, display: &str) -> Result<()> {
        let (pfd, name, _) = self.slot(comps, false, display)?;
        // The target is stored verbatim: it is only ever resolved inside the
        // container's root, or by us with RESOLVE_IN_ROOT.
        sys::symlinkat(target, pfd.as_fd(), name)
            .map_err(io_ctx(format!("symlink {display:?}")))?;
        self.finish_special(pfd.as_fd(), name, &meta, false, display)
    }

    fn hardlink(&self, comps: &[OsString], target: &OsStr, display: &str) -> Result<()> {
        let tcomps = clean_path(target.as_bytes())
            .filter(|c| !c.is_empty())
            .ok_or_else(|| LayerError::UnsafePath(format!("{display} -> {target:?}")))?;
        // O_PATH|O_NOFOLLOW: a link to a symlink links the symlink itself;
        // intermediate symlinks resolve inside the root.
        let src = self
            .open_in_root(&tcomps, libc::O_PATH | libc::O_NOFOLLOW)
            .map_err(io_ctx(format!("hardlink target of {display:?}")))?;
        let (pfd, name, _) = self.slot(comps, false, display)?;
        sys::link_fd(src.as_fd(), pfd.as_fd(), name)
            .map_err(io_ctx(format!("hardlink {display:?}")))
    }

    fn special<R: Read>(
        &self,
        comps: &[OsString],
        kind: EntryType,
        entry: &tar::Entry<'_, R>,
        meta: Meta,
        display: &str,
    ) -> Result<()> {
        let (fmt, dev) = match kind {
            EntryType::Fifo => (libc::S_IFIFO, 0),
            _ => {
                match self.opts.devices {
                    DevicePolicy::Create => {}
                    DevicePolicy::Skip => return Ok(()),
                    DevicePolicy::Reject => {
                        return Err(LayerError::DeviceNotAllowed(display.to_string()))
                    }
                }
                let h = entry.header();
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                let fmt = if kind == EntryType::Char {
                    libc::S_IFCHR
                } else {
                    libc::S_IFBLK
                };
                (fmt, sys::makedev(major, minor))
            }
        };
        let (pfd, name, _) = self.slot(comps, false, display)?;
        sys::mknodat(pfd.as_fd(), name, fmt | (meta.mode & 0o777), dev)
            .map_err(io_ctx(format!("mknod {display:?}")))?;
        self.finish_special(pfd.as_fd(), name, &meta, true, display)
    }

    /// Owner, mode, xattrs and times of a non-regular, non-directory entry.
    fn finish_special(
        &self,
        pfd: BorrowedFd<'_>,
        name: &OsStr,
        meta: &Meta,
        chmod: bool,
        display: &str,
    ) -> Result<()> {
        if self.opts.same_owner {
            sys::lchownat(pfd, name, meta.uid, meta.gid)
                .map_err(io_ctx(format!("chown {display:?}")))?;
        }
        if chmod {
            // mknod applied the umask; set the exact mode.
            sys::chmodat(pfd, name, meta.mode).map_err(io_ctx(format!("chmod {display:?}")))?;
        }
        if self.opts.xattrs {
            for (k, v) in &meta.xattrs {
                tolerate_unsupported(sys::lsetxattrat(pfd, name, k, v))
                    .map_err(io_ctx(format!("set xattr {k:?} on {display:?}")))?;
            }
        }
        sys::lutimesat(pfd, name, meta.mtime, meta.mtime)
            .map_err(io_ctx(format!("set times of {display:?}")))
    }

    fn whiteout(&self, comps: &[OsString], display: &str) -> Result<()> {
        let Some((name, parent)) = comps.split_last() else {
            return Err(LayerError::InvalidWhiteout(display.to_string()));
        };
        let name = name.as_bytes();
        if name == OPAQUE_MARKER.as_bytes() {
            let pfd = self.mkdir_all(parent, display)?;
            let dir = sys::openat2(
                pfd.as_fd(),
                OsStr::new("."),
                libc::O_RDONLY | libc::O_DIRECTORY,
                0,
                sys::BENEATH_NOFOLLOW,
            )
            .map_err(io_ctx(format!("open {display:?}")))?;
            return sys::fsetxattr(dir.as_fd(), OsStr::new(OPAQUE_XATTR), b"y")
                .map_err(io_ctx(format!("mark opaque {display:?}")));
        }
        if name.starts_with(WHITEOUT_META_PREFIX.as_bytes()) {
            return Ok(());
        }
        let target = OsStr::from_bytes(&name[WHITEOUT_PREFIX.len()..]);
        if target.is_empty() || target == "." || target == ".." {
            return Err(LayerError::InvalidWhiteout(display.to_string()));
        }
        let pfd = self.mkdir_all(parent, display)?;
        // A whiteout only hides lower layers; an entry of this layer with the
        // same name already hides them, so it is left alone.
        match sys::lstatat(pfd.as_fd(), target) {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                sys::mknodat(pfd.as_fd(), target, libc::S_IFCHR, sys::makedev(0, 0))
                    .map_err(io_ctx(format!("create whiteout {display:?}")))
            }
            Err(e) => Err(io_ctx(format!("stat {display:?}"))(e)),
        }
    }

    fn chown_fd(&self, fd: BorrowedFd<'_>, meta: &Meta, display: &str) -> Result<()> {
        if !self.opts.same_owner {
            return Ok(());
        }
        sys::fchown(fd, meta.uid, meta.gid).map_err(io_ctx(format!("chown {display:?}")))
    }

    fn xattrs_fd(&self, fd: BorrowedFd<'_>, meta: &Meta, display: &str) -> Result<()> {
        if !self.opts.xattrs {
            return Ok(());
        }
        for (k, v) in &meta.xattrs {
            tolerate_unsupported(sys::fsetxattr(fd, k, v))
                .map_err(io_ctx(format!("set xattr {k:?} on {display:?}")))?;
        }
        Ok(())
    }

    fn finish_dirs(&mut self) -> Result<()> {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
        for d in std::mem::take(&mut self.dirs).iter().rev() {
            let fd = match self.open_in_root(&d.comps, flags) {
                Ok(fd) => fd,
                // Replaced by a later entry: nothing to finish.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOENT | libc::ELOOP | libc::ENOTDIR)
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(io_ctx("reopen directory")(e)),
            };
            let display = join(&d.comps);
            sys::fchmod(fd.as_fd(), d.mode).map_err(io_ctx(format!("chmod {display:?}")))?;
            sys::futimes(fd.as_fd(), d.mtime, d.mtime)
                .map_err(io_ctx(format!("set times of {display:?}")))?;
        }
        Ok(())
    }
}

/// Splits an entry name into components, dropping empty and `.` parts and
/// folding `..`. Returns `None` if `..` would climb above the root. A
/// leading `/` is ignored: absolute names are relative to the layer root.
pub(crate) fn clean_path(raw: &[u8]) -> Option<Vec<OsString>> {
    let mut out: Vec<OsString> = Vec::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                out.pop()?;
            }
            p => out.push(OsStr::from_bytes(p).to_os_string()),
        }
    }
    Some(out)
}

fn join(comps: &[OsString]) -> OsString {
    if comps.is_empty() {
        return OsString::from(".");
    }
    let mut s = OsString::new();
    for (i, c) in comps.iter().enumerate() {
        if i > 0 {
            s.push("/");
        }
        s.push(c);
    }
    s
}

fn link_name<R: Read>(entry: &tar::Entry<'_, R>, display: &str) -> Result<OsString> {
    entry
        .link_name_bytes()
        .map(|b| OsStr::from_bytes(&b).to_os_string())
        .ok_or_else(|| LayerError::UnsafePath(format!("{display}: link without target")))
}

/// xattrs that must never come from a layer: overlayfs reads
/// `trusted.overlay.*` (and `user.overlay.*` on userxattr mounts) as
/// instructions (opaque, redirect, metacopy, origin).
fn allowed_xattr(name: &str) -> bool {
    !(name.starts_with("trusted.overlay.") || name.starts_with("user.overlay."))
}

/// Filesystems without xattr support answer ENOTSUP; layers should still
/// unpack there, minus the attributes.
fn tolerate_unsupported(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => Ok(()),
        other => other,
    }
}

fn bad_field(what: &str) -> LayerError {
    LayerError::Io {
        context: format!("bad {what} in tar header"),
        source: io::Error::from(io::ErrorKind::InvalidData),
    }
}

/// A numeric header field; some writers leave unused fields blank, which
/// means zero.
fn numeric(parsed: io::Result<u64>, raw: &[u8], what: &str) -> Result<u64> {
    match parsed {
        Ok(v) => Ok(v),
        Err(_) if raw.iter().all(|&b| b == 0 || b == b' ') => Ok(0),
        Err(_) => Err(bad_field(what)),
    }
}

/// PAX uid/gid records carry ids too large for the octal header fields.
fn parse_pax_id(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// PAX times are decimal seconds with an optional fraction.
fn parse_pax_time(v: &[u8]) -> Option<(i64, i64)> {
    let s = std::str::from_utf8(v).ok()?;
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    let nanos = if digits.is_empty() {
        0
    } else {
        let scale = 10i64.pow(9 - digits.len() as u32);
        digits.parse::<i64>().ok()? * scale
    };
    Some((secs, nanos))
}

/// Removes `dir/name` recursively without following any symlink.
pub(crate) fn remove_all_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
    let fd = sys::openat2(dir, name, flags, 0, sys::BENEATH_NOFOLLOW)?;
    for child in sys::read_dir_fd(fd.as_fd())? {
        let st = sys::lstatat(fd.as_fd(), &child)?;
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            remove_all_at(fd.as_fd(), &child)?;
        } else {
            sys::unlinkat(fd.as_fd(), &child, false)?;
        }
    }
    sys::unlinkat(dir, name, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_path_table() {
        let ok = [
            ("a/b", vec!["a", "b"]),
            ("./a/./b/", vec!["a", "b"]),
            ("/abs/x", vec!["abs", "x"]),
            ("a/../b", vec!["b"]),
            ("a//b", vec!["a", "b"]),
            ("./", vec![]),
            ("/", vec![]),
        ];
        for (raw, want) in ok {
            let got = clean_path(raw.as_bytes()).unwrap();
            let want: Vec<OsString> = want.into_iter().map(OsString::from).collect();
            assert_eq!(got, want, "{raw}");
        }
        for raw in ["..", "../x", "a/../../x", "/../x", "./a/b/../../../x"] {
            assert_eq!(clean_path(raw.as_bytes()), None, "{raw}");
        }
    }

    #[test]
    fn pax_time() {
        assert_eq!(parse_pax_time(b"12.5"), Some((12, 500_000_000)));
        assert_eq!(parse_pax_time(b"7"), Some((7, 0)));
        assert_eq!(parse_pax_time(b"1.000000001999"), Some((1, 1)));
        assert_eq!(parse_pax_time(b"x"), None);
    }
}

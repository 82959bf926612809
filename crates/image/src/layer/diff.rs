//! Producing a layer tar from an overlay upper directory.
//!
//! The upper directory of an overlay mount holds exactly what changed, with
//! overlayfs' own deletion markers: a 0:0 character device for a deleted
//! name and `trusted.overlay.opaque=y` on a directory that replaced a lower
//! one. Those are turned back into OCI whiteouts (`.wh.<name>` and
//! `.wh..wh..opq`). Entries are written in bytewise name order with no user
//! or group names, and gzip without a timestamp, so the same upper directory
//! always yields the same bytes and therefore the same digests. An
//! uncompressed layer is hashed once: its digest is its diff id.
//!
//! The upper directory must be quiescent (its container stopped): paths are
//! read with `lstat`, never following symlinks, but not with the race-proof
//! `openat2` walk that [`super::apply`] uses on untrusted input.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::tarutil::{append_raw, PaxRecord};
use super::{io_ctx, Compression, LayerError};
use crate::digest::{Digest, HashingWriter, ThreadedHashingWriter};
use crate::sys;

type Result<T> = std::result::Result<T, LayerError>;

/// What [`write_layer`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffOutput {
    /// sha256 of the uncompressed tar (goes in the image config).
    pub diff_id: Digest,
    /// sha256 of the bytes written (goes in the manifest).
    pub digest: Digest,
    /// Number of bytes written.
    pub size: u64,
    /// Length of the uncompressed tar.
    pub tar_size: u64,
    /// Compression used.
    pub compression: Compression,
    /// Sum of the sizes of the regular files in the layer.
    pub content_size: u64,
}

/// Writes the changes in `upper` as a layer tar to `out`.
pub fn write_layer(upper: &Path, out: impl Write, compression: Compression) -> Result<DiffOutput> {
    write(upper, out, compression, false, &BTreeSet::new())
}

/// [`write_layer`], leaving out the entries (and what is below them) named in `exclude`,
/// relative to `upper` (`etc/hosts`): `commit` drops the mount points the runtime made.
pub fn write_layer_excluding(
    upper: &Path,
    out: impl Write,
    compression: Compression,
    exclude: &BTreeSet<PathBuf>,
) -> Result<DiffOutput> {
    write(upper, out, compression, false, exclude)
}

/// Writes the changes in `upper` as a layer tar to `out`, and in the same
/// walk makes `upper` exactly what unpacking that tar with
/// [`super::LayerStore::apply`] would make: overlayfs' bookkeeping xattrs
/// (origin, impure, redirect; the opaque marker stays) and sockets, which
/// the tar leaves out, are removed. The directory can then be moved into
/// the layer store with [`super::LayerStore::adopt`] instead of being
/// unpacked again. `upper` must not be mounted.
pub fn write_layer_and_adopt(
    upper: &Path,
    out: impl Write,
    compression: Compression,
) -> Result<DiffOutput> {
    strip_overlay_xattrs(upper).map_err(io_ctx(format!("clean {}", upper.display())))?;
    write(upper, out, compression, true, &BTreeSet::new())
}

fn write(
    upper: &Path,
    out: impl Write,
    compression: Compression,
    adopt: bool,
    exclude: &BTreeSet<PathBuf>,
) -> Result<DiffOutput> {
    // An uncompressed layer's blob is its tar: hashing it once gives both
    // digests, which matters at hundreds of megabytes.
    if compression == Compression::None {
        let (mut out, diff_id, tar_size, content_size) = write_tar(upper, out, adopt, exclude)?;
        out.flush().map_err(io_ctx("flush layer"))?;
        return Ok(DiffOutput {
            digest: diff_id.clone(),
            diff_id,
            size: tar_size,
            tar_size,
            compression,
            content_size,
        });
    }
    let counted = HashingWriter::new(out);
    let encoder = Encoder::new(counted, compression).map_err(io_ctx("start compressor"))?;
    let (encoder, diff_id, tar_size, content_size) = write_tar(upper, encoder, adopt, exclude)?;
    let counted = encoder.finish().map_err(io_ctx("finish compressor"))?;
    let (mut out, digest, size) = counted.finish();
    out.flush().map_err(io_ctx("flush layer"))?;
    Ok(DiffOutput {
        diff_id,
        digest,
        size,
        tar_size,
        compression,
        content_size,
    })
}

/// Writes the tar of `upper`; returns the writer, the tar's digest and
/// length, and the regular files' total size.
fn write_tar<W: Write>(
    upper: &Path,
    out: W,
    adopt: bool,
    exclude: &BTreeSet<PathBuf>,
) -> Result<(W, Digest, u64, u64)> {
    let mut builder = tar::Builder::new(ThreadedHashingWriter::new(out));
    let mut walker = Walker {
        builder: &mut builder,
        links: HashMap::new(),
        adopt,
        content_size: 0,
        exclude,
    };
    walker.dir_children(upper, b"")?;
    let content_size = walker.content_size;
    let tar_hasher = builder.into_inner().map_err(io_ctx("finish tar"))?;
    let (out, diff_id, tar_size) = tar_hasher.finish().map_err(io_ctx("hash tar"))?;
    Ok((out, diff_id, tar_size, content_size))
}

enum Encoder<W: Write> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    fn new(w: W, c: Compression) -> io::Result<Self> {
        Ok(match c {
            Compression::None => Encoder::Plain(w),
            // GzBuilder without mtime or file name keeps the output stable.
            Compression::Gzip => {
                Encoder::Gzip(flate2::GzBuilder::new().write(w, flate2::Compression::default()))
            }
            Compression::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(w, 3)?),
        })
    }

    fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Plain(w) => Ok(w),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Plain(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Plain(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

struct Walker<'a, W: Write> {
    builder: &'a mut tar::Builder<W>,
    /// First name seen for each multiply-linked inode.
    links: HashMap<(u64, u64), Vec<u8>>,
    /// Whether the directory is being made into a layer directory.
    adopt: bool,
    /// Bytes of regular files written.
    content_size: u64,
    /// Entries left out, relative to the top.
    exclude: &'a BTreeSet<PathBuf>,
}

impl<W: Write> Walker<'_, W> {
    /// Emits the children of `dir` (whose archive name is `prefix`, empty or
    /// ending in `/`) in bytewise order.
    fn dir_children(&mut self, dir: &Path, prefix: &[u8]) -> Result<()> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .map_err(io_ctx(format!("list {}", dir.display())))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .map_err(io_ctx(format!("list {}", dir.display())))?;
        names.sort();
        for name in names {
            let mut arc = prefix.to_vec();
            arc.extend_from_slice(name.as_bytes());
            if !self.exclude.is_empty() && self.exclude.contains(Path::new(OsStr::from_bytes(&arc)))
            {
                continue;
            }
            self.entry(&dir.join(&name), &arc, &name)?;
        }
        Ok(())
    }

    fn entry(&mut self, path: &Path, arc: &[u8], name: &OsStr) -> Result<()> {
        let md = fs::symlink_metadata(path).map_err(io_ctx(format!("stat {}", path.display())))?;
        let ft = md.file_type();
        let ctx = |what: &str| io_ctx(format!("{what} {}", path.display()));
        if ft.is_char_device() && md.rdev() == 0 {
            return self.whiteout(arc, name, &md);
        }
        let mut header = base_header(&md);
        let pax = xattr_records(path, self.adopt).map_err(ctx("read xattrs of"))?;
        if ft.is_dir() {
            let mut dir_name = arc.to_vec();
            dir_name.push(b'/');
            header.set_entry_type(tar::EntryType::Directory);
            append_raw(self.builder, &mut header, &dir_name, None, pax, io::empty())
                .map_err(ctx("archive"))?;
            if is_opaque(path).map_err(ctx("read xattrs of"))? {
                let mut marker = dir_name.clone();
                marker.extend_from_slice(b".wh..wh..opq");
                self.empty_file(&marker, &md)?;
            }
            return self.dir_children(path, &dir_name);
        }
        if ft.is_symlink() {
            let target = fs::read_link(path).map_err(ctx("readlink"))?;
            header.set_entry_type(tar::EntryType::Symlink);
            let link = target.as_os_str().as_bytes();
            return append_raw(self.builder, &mut header, arc, Some(link), pax, io::empty())
                .map_err(ctx("archive"));
        }
        if md.nlink() > 1 && !ft.is_dir() {
            if let Some(first) = self.links.get(&(md.dev(), md.ino())).cloned() {
                header.set_entry_type(tar::EntryType::Link);
                header.set_size(0);
                return append_raw(
                    self.builder,
                    &mut header,
                    arc,
                    Some(&first),
                    Vec::new(),
                    io::empty(),
                )
                .map_err(ctx("archive"));
            }
            self.links.insert((md.dev(), md.ino()), arc.to_vec());
        }
        if ft.is_file() {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(md.len());
            self.content_size += md.len();
            let f = File::open(path).map_err(ctx("open"))?;
            // Large reads: the tar copies through an 8 KiB buffer.
            let f = io::BufReader::with_capacity(256 << 10, f);
            return append_raw(self.builder, &mut header, arc, None, pax, f)
                .map_err(ctx("archive"));
        }
        let Some(kind) = special_entry_type(&ft) else {
            // Sockets are runtime objects; like Docker, leave them out (and
            // out of a layer directory too, so it matches the tar).
            if self.adopt {
                remove_keeping_parent_times(path).map_err(ctx("remove socket"))?;
            }
            return Ok(());
        };
        set_special(&mut header, kind, &md).map_err(ctx("archive"))?;
        append_raw(self.builder, &mut header, arc, None, pax, io::empty()).map_err(ctx("archive"))
    }

    fn whiteout(&mut self, arc: &[u8], name: &OsStr, md: &fs::Metadata) -> Result<()> {
        let parent_len = arc.len() - name.len();
        let mut wh = arc[..parent_len].to_vec();
        wh.extend_from_slice(b".wh.");
        wh.extend_from_slice(name.as_bytes());
        self.empty_file(&wh, md)
    }

    fn empty_file(&mut self, arc: &[u8], md: &fs::Metadata) -> Result<()> {
        let mut header = base_header(md);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(0);
        append_raw(
            self.builder,
            &mut header,
            arc,
            None,
            Vec::new(),
            io::empty(),
        )
        .map_err(io_ctx("archive whiteout"))
    }
}

fn base_header(md: &fs::Metadata) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_mode(md.mode() & 0o7777);
    h.set_uid(u64::from(md.uid()));
    h.set_gid(u64::from(md.gid()));
    h.set_mtime(md.mtime().max(0) as u64);
    h.set_size(0);
    h
}

fn is_overlay_xattr(name: &str) -> bool {
    name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.")
}

/// xattrs worth carrying in a layer: everything but overlayfs' own. With
/// `strip`, overlayfs' own are removed from the file, the opaque marker
/// excepted (a layer directory keeps it).
fn xattr_records(path: &Path, strip: bool) -> io::Result<Vec<PaxRecord>> {
    let mut names = sys::llistxattr(path)?;
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let Some(n) = name.to_str() else { continue };
        if is_overlay_xattr(n) {
            if strip && n != OPAQUE_XATTR {
                sys::lremovexattr(path, &name)?;
            }
            continue;
        }
        if let Some(v) = sys::lgetxattr(path, &name)? {
            out.push((format!("SCHILY.xattr.{n}"), v));
        }
    }
    Ok(out)
}

/// Removes a file and puts its directory's times back, so the directory
/// still matches its tar entry.
fn remove_keeping_parent_times(path: &Path) -> io::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    let md = fs::symlink_metadata(parent)?;
    fs::remove_file(path)?;
    let times = fs::FileTimes::new()
        .set_accessed(md.accessed()?)
        .set_modified(md.modified()?);
    File::open(parent)?.set_times(times)
}

/// Removes overlayfs' xattrs from the top directory itself (the walk only
/// visits what is inside it).
fn strip_overlay_xattrs(dir: &Path) -> io::Result<()> {
    xattr_records(dir, true).map(|_| ())
}

const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

fn is_opaque(path: &Path) -> io::Result<bool> {
    let v = sys::lgetxattr(path, OsStr::new(OPAQUE_XATTR))?;
    Ok(v.as_deref() == Some(b"y"))
}

/// The tar entry type of a FIFO or device node; `None` for anything else (a socket is
/// left out of archives, as Docker does).
pub fn special_entry_type(ft: &fs::FileType) -> Option<tar::EntryType> {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_char_device() {
        Some(tar::EntryType::Char)
    } else if ft.is_block_device() {
        Some(tar::EntryType::Block)
    } else if ft.is_fifo() {
        Some(tar::EntryType::Fifo)
    } else {
        None
    }
}

/// Makes `header` a `kind` entry (from [`special_entry_type`]) with `md`'s device numbers.
pub fn set_special(
    header: &mut tar::Header,
    kind: tar::EntryType,
    md: &fs::Metadata,
) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    header.set_entry_type(kind);
    header.set_size(0);
    if kind != tar::EntryType::Fifo {
        header.set_device_major(libc::major(md.rdev()))?;
        header.set_device_minor(libc::minor(md.rdev()))?;
    }
    Ok(())
}

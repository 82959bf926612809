//! COPY and ADD: picking the sources, hashing them for the cache, and
//! copying them into a root filesystem with Docker's semantics.
//!
//! * Sources are relative to a source root (the build context, another
//!   stage's filesystem or an image's); `..` cannot leave it. Wildcards
//!   (`*`, `?`, `[...]`) match one path component each, as Go's
//!   `filepath.Match`; the context's `.dockerignore` hides what it excludes.
//! * A directory source copies its *contents*; a file source lands at the
//!   destination, or inside it when the destination ends with `/`, is an
//!   existing directory, or several sources are given.
//! * Files from the context are owned by root unless `--chown`; files from
//!   a stage or image keep their owners. `--chmod` sets the mode of every
//!   copied entry. Parent directories that do not exist are made 0755.
//! * ADD extracts local tar archives (plain, gzip, bzip2, xz or zstd) into the destination.
//!
//! The cache key of a COPY hashes each source's relative path, type, mode,
//! owner, size and content (or link target), but never its mtime, so a
//! fresh checkout of the same files hits the cache.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::cache::KeyHasher;
use crate::dockerignore::PatternMatcher;
use crate::fsutil::{self, Ids};

/// Where COPY reads from.
pub struct SourceRoot<'a> {
    /// The directory.
    pub dir: &'a Path,
    /// `.dockerignore` of the build context; `None` for stages and images.
    pub ignore: Option<&'a PatternMatcher>,
    /// Whether files keep their owners (stages and images) or become root's.
    pub keep_owner: bool,
    /// Whether symlinks in source paths resolve inside `dir` (a rootfs).
    pub rootfs: bool,
    /// `--exclude` patterns, matched against paths relative to each source
    /// (a file source: its name).
    pub exclude: Option<&'a PatternMatcher>,
}

/// One matched source: its host path and its path relative to the root.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub rel: String,
    /// The leading directories of `rel` that `--parents` leaves out: those before a
    /// `/./` in the pattern (BuildKit's pivot, `COPY --parents ./src/./app /d/` makes
    /// `/d/app`), empty when the pattern has none.
    pub pivot: String,
}

/// What a COPY/ADD does with its sources.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// `--chown` resolved to ids.
    pub chown: Option<Ids>,
    /// `--chmod` as octal bits.
    pub chmod: Option<u32>,
    /// ADD: extract local archives.
    pub extract: bool,
    /// `--parents`: keep each source's parent directories under the destination.
    pub parents: bool,
}

/// COPY failures, worded for users.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("failed to compute cache key: failed to calculate checksum: \"/{0}\": not found")]
    NotFound(String),
    #[error("When using COPY with more than one source file, the destination must be a directory and end with a /")]
    MultipleToFile,
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
}

fn io_ctx(context: impl Into<String>) -> impl FnOnce(io::Error) -> CopyError {
    let context = context.into();
    move |source| CopyError::Io { context, source }
}

/// Whether a word has wildcard characters.
pub fn has_wildcards(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Expands source patterns into the sources they name.
pub fn expand_sources(root: &SourceRoot, patterns: &[String]) -> Result<Vec<Source>, CopyError> {
    let mut out = Vec::new();
    for pattern in patterns {
        let first = out.len();
        expand_pattern(root, pattern, &mut out)?;
        let pivot = pattern
            .split_once("/./")
            .map(|(base, _)| fsutil::clean_abs(base).trim_start_matches('/').to_string())
            .unwrap_or_default();
        for s in &mut out[first..] {
            s.pivot.clone_from(&pivot);
        }
    }
    Ok(out)
}

/// The sources one pattern names, appended to `out`.
fn expand_pattern(
    root: &SourceRoot,
    pattern: &str,
    out: &mut Vec<Source>,
) -> Result<(), CopyError> {
    let clean = fsutil::clean_abs(pattern);
    let rel = clean.trim_start_matches('/').to_string();
    if has_wildcards(&rel) {
        // As BuildKit (AllowEmptyWildcard): a wildcard that matches nothing copies
        // nothing (`COPY package.json yarn.lock* ./`), but the fixed directories
        // before the first wildcard must exist.
        let parts: Vec<&str> = rel.split('/').collect();
        let fixed = parts.iter().take_while(|p| !has_wildcards(p)).count();
        let prefix = parts[..fixed].join("/");
        if !prefix.is_empty() {
            let path = fsutil::resolve_in_root(root.dir, &prefix, true)
                .map_err(io_ctx(format!("resolve {pattern}")))?;
            if is_ignored(root, &prefix) || fs::symlink_metadata(&path).is_err() {
                return Err(CopyError::NotFound(prefix));
            }
        }
        return glob(root, "", &parts, out);
    }
    // Symlinks resolve inside the root, so a link in the context cannot
    // pull in a file of the host.
    let path = fsutil::resolve_in_root(root.dir, &rel, true)
        .map_err(io_ctx(format!("resolve {pattern}")))?;
    let excluded = !rel.is_empty() && is_ignored(root, &rel);
    if excluded || fs::symlink_metadata(&path).is_err() {
        return Err(CopyError::NotFound(rel));
    }
    out.push(Source {
        path,
        rel,
        pivot: String::new(),
    });
    Ok(())
}

/// Whether `rel` (root-relative) is excluded by `--exclude`, relative to
/// the source `top` it was found under.
fn is_excluded(root: &SourceRoot, top: &str, rel: &str) -> bool {
    let Some(ex) = root.exclude else {
        return false;
    };
    let inner = if top.is_empty() {
        rel
    } else {
        rel.strip_prefix(top)
            .map(|r| r.trim_start_matches('/'))
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| rel.rsplit('/').next().unwrap_or(rel))
    };
    ex.matches_or_parent_matches(inner)
}

/// Whether `.dockerignore` hides `rel`. As in BuildKit, a directory it excludes
/// still shows when an exception (`!pattern`) brings back something inside it:
/// the directory is then there with just the re-included entries.
fn is_ignored(root: &SourceRoot, rel: &str) -> bool {
    let Some(m) = root.ignore else {
        return false;
    };
    if !m.matches_or_parent_matches(rel) {
        return false;
    }
    !(m.may_reinclude_under(rel) && has_visible_entry(root, rel))
}

/// Whether the directory `rel` of the context holds an entry `.dockerignore`
/// does not hide (at any depth). Not a directory, or unreadable: false.
fn has_visible_entry(root: &SourceRoot, rel: &str) -> bool {
    let dir = root.dir.join(rel);
    if !fs::symlink_metadata(&dir).is_ok_and(|md| md.is_dir()) {
        return false;
    }
    let Ok(entries) = fs::read_dir(&dir) else {
        return false;
    };
    entries.filter_map(|e| e.ok()).any(|e| {
        let child = format!("{rel}/{}", e.file_name().to_string_lossy());
        !is_ignored(root, &child)
    })
}

fn glob(
    root: &SourceRoot,
    prefix: &str,
    parts: &[&str],
    out: &mut Vec<Source>,
) -> Result<(), CopyError> {
    let Some((first, rest)) = parts.split_first() else {
        return Ok(());
    };
    let dir = root.dir.join(prefix);
    let mut names: Vec<String> = match fs::read_dir(&dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect(),
        Err(_) => return Ok(()),
    };
    names.sort();
    for name in names {
        if !fnmatch(first.as_bytes(), name.as_bytes()) {
            continue;
        }
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        if is_ignored(root, &rel) {
            continue;
        }
        if rest.is_empty() {
            if is_excluded(root, &rel, &rel) {
                continue;
            }
            let path = fsutil::resolve_in_root(root.dir, &rel, true)
                .map_err(io_ctx(format!("resolve {rel}")))?;
            out.push(Source {
                path,
                rel,
                pivot: String::new(),
            });
        } else if root.dir.join(&rel).is_dir() {
            glob(root, &rel, rest, out)?;
        }
    }
    Ok(())
}

/// Go's `filepath.Match` for one path component.
pub fn fnmatch(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p, n));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    n += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, len)) = class(&pattern[p..], name[n]) {
                        if matched {
                            p += len;
                            n += 1;
                            continue;
                        }
                    }
                }
                b'\\' if p + 1 < pattern.len() && pattern[p + 1] == name[n] => {
                    p += 2;
                    n += 1;
                    continue;
                }
                b'\\' if p + 1 < pattern.len() => {}
                c if c == name[n] => {
                    p += 1;
                    n += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, sn)) => {
                p = sp + 1;
                n = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class at the start of `pat`; returns whether it
/// matched and the class's length.
fn class(pat: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(pat.get(i), Some(b'^' | b'!'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < pat.len() {
        if pat[i] == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        let lo = pat[i];
        if i + 2 < pat.len() && pat[i + 1] == b'-' && pat[i + 2] != b']' {
            matched |= lo <= c && c <= pat[i + 2];
            i += 3;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
    None
}

/// The sha256 of each file's content, in order; implementations may remember digests
/// by inode, size and times so unchanged files are not read again, and read the others
/// side by side.
pub type BatchDigest<'a> = dyn FnMut(&[(PathBuf, fs::Metadata)]) -> io::Result<Vec<[u8; 32]>> + 'a;

/// Reads and hashes a file.
pub fn digest_file(path: &Path) -> io::Result<[u8; 32]> {
    use sha2::Digest as _;
    let mut f = File::open(path)?;
    let mut h = sha2::Sha256::new();
    io::copy(&mut f, &mut h)?;
    Ok(h.finalize().into())
}

/// Hashes the sources (recursively, honouring the ignore file) into `key`:
/// names, types, modes, owners, sizes, link targets and content digests,
/// never times. One walk gathers everything; the files' digests are asked for in one
/// batch; then the key is built in order. Returns each file's digest by host path.
pub fn hash_sources(
    root: &SourceRoot,
    sources: &[Source],
    key: &mut KeyHasher,
    digests: &mut BatchDigest,
) -> Result<Vec<(PathBuf, [u8; 32])>, CopyError> {
    let mut walk = Walk::default();
    for s in sources {
        walk.parts.push(KeyPart::Text(s.rel.clone()));
        let md = fs::metadata(&s.path).map_err(io_ctx(format!("stat {}", s.rel)))?;
        walk.entry(root, &s.rel, &s.path, &s.rel, md)?;
    }
    let found = digests(&walk.files).map_err(io_ctx("hash the context"))?;
    for part in &walk.parts {
        match part {
            KeyPart::Text(t) => key.str(t),
            KeyPart::File(i) => key.part(&found[*i]),
        };
    }
    Ok(walk.files.into_iter().map(|(p, _)| p).zip(found).collect())
}

/// What [`hash_sources`] feeds the key, in order: text, or the digest of `files[i]`.
enum KeyPart {
    Text(String),
    File(usize),
}

#[derive(Default)]
struct Walk {
    parts: Vec<KeyPart>,
    files: Vec<(PathBuf, fs::Metadata)>,
}

impl Walk {
    fn entry(
        &mut self,
        root: &SourceRoot,
        top: &str,
        path: &Path,
        rel: &str,
        md: fs::Metadata,
    ) -> Result<(), CopyError> {
        let meta = format!(
            "{rel}\0{:o}\0{}\0{}\0{}",
            md.mode(),
            md.uid(),
            md.gid(),
            md.len()
        );
        self.parts.push(KeyPart::Text(meta));
        let ft = md.file_type();
        if ft.is_symlink() {
            let t = fs::read_link(path).map_err(io_ctx(format!("readlink {rel}")))?;
            self.parts
                .push(KeyPart::Text(t.to_string_lossy().into_owned()));
        } else if ft.is_file() {
            self.parts.push(KeyPart::File(self.files.len()));
            self.files.push((path.to_path_buf(), md));
        } else if ft.is_dir() {
            for (child, child_rel) in children(root, top, path, rel)? {
                let md =
                    fs::symlink_metadata(&child).map_err(io_ctx(format!("stat {child_rel}")))?;
                self.entry(root, top, &child, &child_rel, md)?;
            }
        }
        Ok(())
    }
}

/// The children of a source directory in name order, ignored ones left out.
fn children(
    root: &SourceRoot,
    top: &str,
    dir: &Path,
    rel: &str,
) -> Result<Vec<(PathBuf, String)>, CopyError> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .map_err(io_ctx(format!("list {rel}")))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        // Patterns match the name as text; the file is found by its bytes (a name
        // that is not UTF-8 must not turn into one that does not exist).
        let text = name.to_string_lossy();
        let child_rel = if rel.is_empty() {
            text.into_owned()
        } else {
            format!("{rel}/{text}")
        };
        if !is_ignored(root, &child_rel) && !is_excluded(root, top, &child_rel) {
            out.push((dir.join(&name), child_rel));
        }
    }
    Ok(out)
}

/// Lets a COPY take a regular file from elsewhere (an earlier layer, see
/// [`crate::relink`]) instead of copying it.
pub trait Reuse {
    /// Called for each regular file about to be created at `target` (in the rootfs
    /// being written, where nothing is there yet) with `mode` and `ids`. True means
    /// the caller will put the file in place itself, so it is not copied.
    fn take(&mut self, src: &Path, md: &fs::Metadata, target: &Path, mode: u32, ids: Ids) -> bool;

    /// Called when a later source replaces the file at `target`.
    fn replaced(&mut self, target: &Path);
}

/// Keeps the hard links inside one source directory, as BuildKit's copier does: the
/// second and later names of an inode become links to the first copy instead of
/// copies. A linked file is copied here, under the copying threads' lock, not offered to
/// `inner`: the link must find it in place whichever thread gets there first, or the
/// layer would differ from run to run.
struct KeepLinks<'r> {
    inner: &'r mut (dyn Reuse + Send),
    first: std::collections::HashMap<(u64, u64), PathBuf>,
}

impl<'r> KeepLinks<'r> {
    fn new(inner: &'r mut (dyn Reuse + Send)) -> Self {
        KeepLinks {
            inner,
            first: std::collections::HashMap::new(),
        }
    }
}

impl Reuse for KeepLinks<'_> {
    fn take(&mut self, src: &Path, md: &fs::Metadata, target: &Path, mode: u32, ids: Ids) -> bool {
        if md.nlink() < 2 {
            return self.inner.take(src, md, target, mode, ids);
        }
        match self.first.entry((md.dev(), md.ino())) {
            std::collections::hash_map::Entry::Occupied(e) => {
                fs::hard_link(e.get(), target).is_ok()
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                // A failed copy is undone and left to the caller, which tries again and
                // reports the error.
                let copied = copy_file(src, target, mode, ids).is_ok();
                if copied {
                    e.insert(target.to_path_buf());
                } else {
                    let _ = fs::remove_file(target);
                }
                copied
            }
        }
    }

    fn replaced(&mut self, target: &Path) {
        self.first.retain(|_, first| first != target);
        self.inner.replaced(target);
    }
}

/// Copies everything.
struct CopyAll;

impl Reuse for CopyAll {
    fn take(&mut self, _: &Path, _: &fs::Metadata, _: &Path, _: u32, _: Ids) -> bool {
        false
    }

    fn replaced(&mut self, _: &Path) {}
}

/// Copies the sources into `rootfs` at `dest` (absolute, in-container).
pub fn copy_into(
    root: &SourceRoot,
    sources: &[Source],
    rootfs: &Path,
    dest: &str,
    opts: &CopyOptions,
) -> Result<(), CopyError> {
    copy_into_reusing(root, sources, rootfs, dest, opts, &mut CopyAll)
}

/// [`copy_into`], offering every regular file to `reuse` first.
pub fn copy_into_reusing(
    root: &SourceRoot,
    sources: &[Source],
    rootfs: &Path,
    dest: &str,
    opts: &CopyOptions,
    reuse: &mut (dyn Reuse + Send),
) -> Result<(), CopyError> {
    let dest_dir_syntax =
        dest.ends_with('/') || dest.ends_with("/.") || dest.ends_with("/..") || dest == ".";
    let several = sources.len() > 1;
    // `..` is taken away before symlinks are followed, as BuildKit cleans the
    // destination path: `/link/..` is `/`, wherever `link` points.
    let target = fsutil::resolve_in_root(rootfs, &fsutil::clean_abs(dest), true)
        .map_err(io_ctx(format!("resolve destination {dest}")))?;
    let dest_is_dir = dest_dir_syntax || target.is_dir();
    if several && !dest_is_dir {
        return Err(CopyError::MultipleToFile);
    }
    let owner = |md: &fs::Metadata| match (opts.chown, root.keep_owner) {
        (Some(ids), _) => ids,
        (None, true) => Ids {
            uid: md.uid(),
            gid: md.gid(),
        },
        (None, false) => Ids::default(),
    };
    let parent_owner = opts.chown.unwrap_or_default();
    for s in sources {
        let md = fs::metadata(&s.path).map_err(io_ctx(format!("stat {}", s.rel)))?;
        // --parents: each source lands under its own parent directories.
        let (target, dest_is_dir) = if opts.parents {
            let kept = s
                .rel
                .strip_prefix(s.pivot.as_str())
                .map_or(s.rel.as_str(), |r| r.trim_start_matches('/'));
            let under = if md.is_dir() {
                Path::new(kept)
            } else {
                Path::new(kept).parent().unwrap_or(Path::new(""))
            };
            (target.join(under), true)
        } else {
            (target.clone(), dest_is_dir)
        };
        if md.is_dir() {
            make_dirs(rootfs, &target, parent_owner)?;
            let tree = Tree {
                root,
                top: &s.rel,
                opts,
                owner: &owner,
            };
            let mut links = KeepLinks::new(&mut *reuse);
            let dirs = copy_children(&tree, &s.path, &s.rel, &target, &mut links)?;
            copy_dirs_in_parallel(&tree, &dirs, &mut links)?;
        } else if opts.extract && is_archive(&s.path) {
            make_dirs(rootfs, &target, parent_owner)?;
            extract(&s.path, &target, opts)?;
        } else {
            let file_target = if dest_is_dir {
                make_dirs(rootfs, &target, parent_owner)?;
                let base = Path::new(&s.rel)
                    .file_name()
                    .map(|n| n.to_os_string())
                    .unwrap_or_default();
                target.join(base)
            } else {
                if let Some(parent) = target.parent() {
                    make_dirs(rootfs, parent, parent_owner)?;
                }
                target.clone()
            };
            copy_one(&s.path, &md, &file_target, opts, owner(&md), reuse)?;
        }
    }
    Ok(())
}

/// Creates `dir` and missing parents (under `rootfs`) as 0755 with `owner`.
fn make_dirs(rootfs: &Path, dir: &Path, owner: Ids) -> Result<(), CopyError> {
    if dir.is_dir() || dir == rootfs {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        make_dirs(rootfs, parent, owner)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(io_ctx(format!("mkdir {}", dir.display()))(e)),
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
        .map_err(io_ctx(format!("chmod {}", dir.display())))?;
    chown(dir, owner)
}

/// One directory source being copied: where it comes from and how entries are written.
struct Tree<'a> {
    root: &'a SourceRoot<'a>,
    /// The source's path relative to the root (for `--exclude`).
    top: &'a str,
    opts: &'a CopyOptions,
    /// Who owns a copied entry, given its source's metadata.
    owner: &'a (dyn Fn(&fs::Metadata) -> Ids + Sync),
}

/// A subdirectory still to copy: (source, its path relative to the root, target).
type PendingDir = (PathBuf, String, PathBuf);

/// Copies the entries of `src` into `dst`, making its subdirectories but not filling
/// them: returns those for [`copy_dirs_in_parallel`].
fn copy_children(
    tree: &Tree,
    src: &Path,
    rel: &str,
    dst: &Path,
    reuse: &mut dyn Reuse,
) -> Result<Vec<PendingDir>, CopyError> {
    let (opts, owner) = (tree.opts, tree.owner);
    let mut dirs = Vec::new();
    for (child, child_rel) in children(tree.root, tree.top, src, rel)? {
        let md = fs::symlink_metadata(&child).map_err(io_ctx(format!("stat {child_rel}")))?;
        let name = child
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        let target = dst.join(name);
        if md.is_dir() {
            let existing = fs::symlink_metadata(&target).ok();
            match existing {
                Some(e) if e.is_dir() => {}
                Some(_) => {
                    remove(&target)?;
                    new_dir(&target, &md, opts, owner(&md))?;
                }
                None => new_dir(&target, &md, opts, owner(&md))?,
            }
            dirs.push((child, child_rel, target));
        } else {
            copy_one(&child, &md, &target, opts, owner(&md), reuse)?;
        }
    }
    Ok(dirs)
}

/// Copies the whole trees below `dirs` (distinct targets, so they cannot interfere) on
/// a few threads ([`crate::par`]): a large context is mostly the kernel creating inodes,
/// which on a filesystem that has just deleted many (ext4 without a journal scans each
/// recently freed one) is CPU-bound and takes milliseconds per file.
fn copy_dirs_in_parallel(
    tree: &Tree,
    dirs: &[PendingDir],
    reuse: &mut (dyn Reuse + Send),
) -> Result<(), CopyError> {
    let shared = std::sync::Mutex::new(reuse);
    crate::par::map(dirs, |start| {
        let mut reuse = Shared(&shared);
        let mut stack = vec![start.clone()];
        while let Some((src, rel, dst)) = stack.pop() {
            stack.extend(copy_children(tree, &src, &rel, &dst, &mut reuse)?);
        }
        Ok(())
    })
    .map(|_| ())
}

/// A [`Reuse`] shared by the copying threads.
struct Shared<'a, 'r>(&'a std::sync::Mutex<&'r mut (dyn Reuse + Send)>);

impl Reuse for Shared<'_, '_> {
    fn take(&mut self, src: &Path, md: &fs::Metadata, target: &Path, mode: u32, ids: Ids) -> bool {
        self.0
            .lock()
            .is_ok_and(|mut r| r.take(src, md, target, mode, ids))
    }

    fn replaced(&mut self, target: &Path) {
        if let Ok(mut r) = self.0.lock() {
            r.replaced(target);
        }
    }
}

fn new_dir(
    target: &Path,
    md: &fs::Metadata,
    opts: &CopyOptions,
    ids: Ids,
) -> Result<(), CopyError> {
    fs::create_dir(target).map_err(io_ctx(format!("mkdir {}", target.display())))?;
    let mode = opts.chmod.unwrap_or(md.mode() & 0o7777);
    chown(target, ids)?;
    fs::set_permissions(target, fs::Permissions::from_mode(mode))
        .map_err(io_ctx(format!("chmod {}", target.display())))
}

fn remove(path: &Path) -> Result<(), CopyError> {
    let r = match fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => Ok(()),
    };
    r.map_err(io_ctx(format!("replace {}", path.display())))
}

/// Copies one non-directory entry (file, symlink, fifo, device).
fn copy_one(
    src: &Path,
    md: &fs::Metadata,
    target: &Path,
    opts: &CopyOptions,
    ids: Ids,
    reuse: &mut dyn Reuse,
) -> Result<(), CopyError> {
    let mut fresh = false;
    match fs::symlink_metadata(target) {
        Ok(t) if t.is_dir() => {
            return Err(CopyError::Io {
                context: format!("copy to {}", target.display()),
                source: io::Error::new(
                    io::ErrorKind::IsADirectory,
                    "cannot overwrite a directory with a file",
                ),
            })
        }
        Ok(_) => {
            reuse.replaced(target);
            fs::remove_file(target).map_err(io_ctx(format!("replace {}", target.display())))?
        }
        Err(_) => fresh = true,
    }
    let ft = md.file_type();
    let mode = opts.chmod.unwrap_or(md.mode() & 0o7777);
    if ft.is_file() {
        if fresh && reuse.take(src, md, target, mode, ids) {
            return Ok(());
        }
        return copy_file(src, target, mode, ids);
    }
    if ft.is_symlink() {
        let link = fs::read_link(src).map_err(io_ctx(format!("readlink {}", src.display())))?;
        std::os::unix::fs::symlink(&link, target)
            .map_err(io_ctx(format!("symlink {}", target.display())))?;
        return lchown(target, ids);
    }
    // Fifos and devices are recreated rather than read.
    let kind = nix::sys::stat::SFlag::from_bits_truncate(md.mode() & libc::S_IFMT);
    nix::sys::stat::mknod(
        target,
        kind,
        nix::sys::stat::Mode::from_bits_truncate(md.mode() & 0o7777),
        md.rdev(),
    )
    .map_err(|e| io_ctx(format!("mknod {}", target.display()))(io::Error::from(e)))?;
    chown(target, ids)?;
    fs::set_permissions(target, fs::Permissions::from_mode(mode))
        .map_err(io_ctx(format!("chmod {}", target.display())))
}

/// Copies a regular file to `target` (which does not exist), setting owner
/// and mode through the open descriptor: a large context is thousands of
/// files, and every path lookup goes through the overlay.
pub(crate) fn copy_file(src: &Path, target: &Path, mode: u32, ids: Ids) -> Result<(), CopyError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut from = File::open(src).map_err(io_ctx(format!("open {}", src.display())))?;
    let mut to = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(target)
        .map_err(io_ctx(format!("create {}", target.display())))?;
    io::copy(&mut from, &mut to).map_err(io_ctx(format!("copy to {}", target.display())))?;
    // Owner first: a chown clears the set-id bits that the mode may set.
    std::os::unix::fs::fchown(&to, Some(ids.uid), Some(ids.gid))
        .map_err(io_ctx(format!("chown {}", target.display())))?;
    to.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_ctx(format!("chmod {}", target.display())))
}

fn chown(path: &Path, ids: Ids) -> Result<(), CopyError> {
    std::os::unix::fs::chown(path, Some(ids.uid), Some(ids.gid))
        .map_err(io_ctx(format!("chown {}", path.display())))
}

fn lchown(path: &Path, ids: Ids) -> Result<(), CopyError> {
    std::os::unix::fs::lchown(path, Some(ids.uid), Some(ids.gid))
        .map_err(io_ctx(format!("chown {}", path.display())))
}

/// Whether a file is a tar archive, plain or compressed (see [`crate::decompress`]).
fn is_archive(path: &Path) -> bool {
    let Ok(f) = File::open(path) else {
        return false;
    };
    let Ok(mut reader) = crate::decompress::decompressed(f) else {
        return false;
    };
    let mut head = [0u8; 512];
    let Ok(n) = read_full(&mut reader, &mut head) else {
        return false;
    };
    n == 512 && (&head[257..262] == b"ustar" || tar_checksum_ok(&head))
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn tar_checksum_ok(h: &[u8; 512]) -> bool {
    let field = String::from_utf8_lossy(&h[148..156]);
    let Ok(want) = u32::from_str_radix(field.trim_matches(|c: char| c == '\0' || c == ' '), 8)
    else {
        return false;
    };
    let sum: u32 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum();
    sum == want && h[0] != 0
}

fn extract(path: &Path, target: &Path, opts: &CopyOptions) -> Result<(), CopyError> {
    let f = File::open(path).map_err(io_ctx(format!("open {}", path.display())))?;
    let reader = crate::decompress::decompressed(f)
        .map_err(io_ctx(format!("read archive {}", path.display())))?;
    let mut ar = tar::Archive::new(reader);
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(true);
    ar.set_unpack_xattrs(false);
    let entries = ar
        .entries()
        .map_err(io_ctx(format!("read archive {}", path.display())))?;
    for entry in entries {
        let mut entry = entry.map_err(io_ctx(format!("read archive {}", path.display())))?;
        let name = entry.path().map(|p| p.into_owned()).unwrap_or_default();
        let unpacked = entry.unpack_in(target).map_err(io_ctx(format!(
            "extract {} from {}",
            name.display(),
            path.display()
        )))?;
        if unpacked {
            if let Some(ids) = opts.chown {
                let _ = lchown(&target.join(&name), ids);
            }
        }
    }
    Ok(())
}

/// What `berth build -` read from stdin.
pub enum StdinContext {
    /// A tar archive (plain or gzip), unpacked into the directory given.
    Archive,
    /// Anything else: a Dockerfile, and no context.
    Dockerfile(String),
}

/// Reads a build context from `input` as `docker build -` does: a tar
/// archive is unpacked into `dir`; other text is the Dockerfile.
pub fn read_stdin_context(mut input: impl Read, dir: &Path) -> Result<StdinContext, CopyError> {
    let mut data = Vec::new();
    input
        .read_to_end(&mut data)
        .map_err(io_ctx("read the context from stdin"))?;
    // Compressed input is a context (gzip, bzip2, xz or zstd, as Docker's CLI takes it);
    // so is an uncompressed tar; anything else is a lone Dockerfile.
    let compressed =
        crate::decompress::Compression::detect(&data) != crate::decompress::Compression::None;
    let tar = data.len() >= 512
        && (&data[257..262] == b"ustar" || {
            let mut h = [0u8; 512];
            h.copy_from_slice(&data[..512]);
            tar_checksum_ok(&h)
        });
    if !compressed && !tar {
        return Ok(StdinContext::Dockerfile(
            String::from_utf8_lossy(&data).into_owned(),
        ));
    }
    let reader = crate::decompress::decompressed(std::io::Cursor::new(data))
        .map_err(io_ctx("decompress the context from stdin"))?;
    let mut ar = tar::Archive::new(reader);
    ar.set_preserve_permissions(true);
    ar.unpack(dir)
        .map_err(io_ctx("unpack the context from stdin"))?;
    Ok(StdinContext::Archive)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnmatch_is_go_filepath_match() {
        assert!(fnmatch(b"*.txt", b"a.txt"));
        assert!(!fnmatch(b"*.txt", b"a.txc"));
        assert!(fnmatch(b"?", b"a"));
        assert!(fnmatch(b"[a-c]x", b"bx"));
        assert!(!fnmatch(b"[^a-c]x", b"bx"));
        assert!(fnmatch(b"a*b*c", b"aXbYbc"));
        assert!(fnmatch(b"\\*", b"*"));
        assert!(!fnmatch(b"\\*", b"a"));
    }

    /// moby's walk: an excluded directory still holds what an exception brings back
    /// (buildah's dockerignore/allowlist and minimal_test conformance cases).
    #[test]
    fn an_exception_shows_entries_of_an_excluded_directory() {
        let ctx = tempfile::tempdir().unwrap();
        let rootfs = tempfile::tempdir().unwrap();
        for f in [
            "huge/usr/bin/f1",
            "huge/usr/lib/l",
            "huge/etc/e",
            "other/o",
            "top",
        ] {
            let p = ctx.path().join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, f).unwrap();
        }
        let ignore = PatternMatcher::new(&["**", "!huge/usr/bin/*"]).unwrap();
        let root = context_root(ctx.path(), &ignore);
        // The directories on the way to a re-included file are sources...
        let srcs = expand_sources(&root, &["huge".into(), "huge/usr".into()]).unwrap();
        assert_eq!(srcs.len(), 2);
        // ...the others, and plain excluded files, are not.
        for gone in ["other", "top", "huge/etc", "huge/usr/lib"] {
            assert!(
                matches!(
                    expand_sources(&root, &[gone.into()]),
                    Err(CopyError::NotFound(_))
                ),
                "{gone}"
            );
        }
        let srcs = expand_sources(&root, &[".".into()]).unwrap();
        copy_into(
            &root,
            &srcs,
            rootfs.path(),
            "/out/",
            &CopyOptions::default(),
        )
        .unwrap();
        let mut found: Vec<String> = walkdir(rootfs.path().join("out"));
        found.sort();
        assert_eq!(
            found,
            ["huge", "huge/usr", "huge/usr/bin", "huge/usr/bin/f1"]
        );
        let ignore = PatternMatcher::new(&["huge"]).unwrap();
        assert!(!ignore.may_reinclude_under("huge"));
        let ignore = PatternMatcher::new(&["huge", "!*/keep*", "!a/b"]).unwrap();
        assert!(ignore.may_reinclude_under("huge"));
        assert!(!ignore.may_reinclude_under("huge/x"));
        assert!(ignore.may_reinclude_under("a/b/c"));
        assert!(!ignore.may_reinclude_under("a/c"));
    }

    /// A build context at `dir` with a `.dockerignore`.
    fn context_root<'a>(dir: &'a Path, ignore: &'a PatternMatcher) -> SourceRoot<'a> {
        SourceRoot {
            dir,
            ignore: Some(ignore),
            keep_owner: false,
            rootfs: false,
            exclude: None,
        }
    }

    /// Paths under `dir`, relative to it.
    fn walkdir(dir: PathBuf) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.clone()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                out.push(p.strip_prefix(&dir).unwrap().to_string_lossy().into_owned());
                if p.is_dir() {
                    stack.push(p);
                }
            }
        }
        out
    }

    #[test]
    fn copy_semantics() {
        let ctx = tempfile::tempdir().unwrap();
        let rootfs = tempfile::tempdir().unwrap();
        fs::create_dir_all(ctx.path().join("dir/sub")).unwrap();
        fs::write(ctx.path().join("dir/sub/f"), "f").unwrap();
        fs::write(ctx.path().join("dir/skip.log"), "x").unwrap();
        fs::write(ctx.path().join("a.txt"), "a").unwrap();
        fs::write(ctx.path().join("b.txt"), "b").unwrap();
        let ignore = PatternMatcher::new(&["**/*.log"]).unwrap();
        let root = context_root(ctx.path(), &ignore);
        std::os::unix::fs::symlink("/etc/hostname", ctx.path().join("escape")).unwrap();
        assert!(matches!(
            expand_sources(&root, &["escape".into()]),
            Err(CopyError::NotFound(_))
        ));
        let srcs = expand_sources(&root, &["dir".into()]).unwrap();
        copy_into(&root, &srcs, rootfs.path(), "/out", &CopyOptions::default()).unwrap();
        assert!(rootfs.path().join("out/sub/f").is_file());
        assert!(!rootfs.path().join("out/skip.log").exists());
        let srcs = expand_sources(&root, &["*.txt".into()]).unwrap();
        assert_eq!(srcs.len(), 2);
        // BuildKit: a wildcard that matches nothing adds nothing (`yarn.lock*`), also
        // under a wildcard directory, but the directories before it must exist (an
        // ignored one does not).
        let some = [
            "a.txt".into(),
            "lock*".into(),
            "dir/*.none".into(),
            "no[t]/x".into(),
        ];
        assert_eq!(expand_sources(&root, &some).unwrap().len(), 1);
        for missing in ["nodir/*.txt", "dir/sub/deeper/*", "dir/skip.log/*"] {
            assert!(
                matches!(
                    expand_sources(&root, &[missing.into()]),
                    Err(CopyError::NotFound(_))
                ),
                "{missing}"
            );
        }
        assert!(matches!(
            copy_into(&root, &srcs, rootfs.path(), "/t", &CopyOptions::default()),
            Err(CopyError::MultipleToFile)
        ));
        let opts = CopyOptions {
            chmod: Some(0o600),
            ..Default::default()
        };
        copy_into(&root, &srcs, rootfs.path(), "/t/", &opts).unwrap();
        let md = fs::metadata(rootfs.path().join("t/b.txt")).unwrap();
        assert_eq!(md.mode() & 0o777, 0o600);
        // Owner and set-id bits together (a chown after the chmod would drop
        // the bits), over an existing file.
        let opts = CopyOptions {
            chmod: Some(0o4755),
            chown: Some(Ids {
                uid: 1234,
                gid: 4321,
            }),
            ..Default::default()
        };
        copy_into(&root, &srcs, rootfs.path(), "/t/", &opts).unwrap();
        let md = fs::metadata(rootfs.path().join("t/b.txt")).unwrap();
        assert_eq!(
            (md.mode() & 0o7777, md.uid(), md.gid()),
            (0o4755, 1234, 4321)
        );
        assert_eq!(fs::read(rootfs.path().join("t/b.txt")).unwrap(), b"b");
        assert!(matches!(
            expand_sources(&root, &["dir/skip.log".into()]),
            Err(CopyError::NotFound(_))
        ));
        let mut k1 = KeyHasher::new("");
        hash_sources(
            &root,
            &expand_sources(&root, &["dir".into()]).unwrap(),
            &mut k1,
            &mut |files| files.iter().map(|(p, _)| digest_file(p)).collect(),
        )
        .unwrap();
        fs::write(ctx.path().join("dir/skip.log"), "changed").unwrap();
        let mut k2 = KeyHasher::new("");
        hash_sources(
            &root,
            &expand_sources(&root, &["dir".into()]).unwrap(),
            &mut k2,
            &mut |files| files.iter().map(|(p, _)| digest_file(p)).collect(),
        )
        .unwrap();
        assert_eq!(k1.finish(), k2.finish());
    }

    #[test]
    fn add_unpacks_xz_and_bzip2_archives_too() {
        let ctx = tempfile::tempdir().unwrap();
        let rootfs = tempfile::tempdir().unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, "inside", &b"i\n"[..]).unwrap();
        let tar = tar.into_inner().unwrap();
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut io::BufReader::new(&tar[..]), &mut xz).unwrap();
        fs::write(ctx.path().join("a.tar.xz"), xz).unwrap();
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        io::Write::write_all(&mut bz, &tar).unwrap();
        fs::write(ctx.path().join("b.tbz"), bz.finish().unwrap()).unwrap();
        let ignore = PatternMatcher::new::<&str>(&[]).unwrap();
        let root = context_root(ctx.path(), &ignore);
        let opts = CopyOptions {
            extract: true,
            ..Default::default()
        };
        for (src, dest) in [("a.tar.xz", "/x/"), ("b.tbz", "/b/")] {
            let srcs = expand_sources(&root, &[src.into()]).unwrap();
            copy_into(&root, &srcs, rootfs.path(), dest, &opts).unwrap();
            let got = fs::read_to_string(rootfs.path().join(&dest[1..]).join("inside"));
            assert_eq!(got.unwrap(), "i\n", "{src}");
        }
    }

    #[test]
    fn a_name_that_is_not_utf8_is_copied_as_it_is() {
        use std::os::unix::ffi::OsStrExt;
        let ctx = tempfile::tempdir().unwrap();
        let rootfs = tempfile::tempdir().unwrap();
        let name = std::ffi::OsStr::from_bytes(b"caf\xe9");
        fs::create_dir(ctx.path().join("d")).unwrap();
        fs::write(ctx.path().join("d").join(name), "latin1").unwrap();
        let ignore = PatternMatcher::new::<&str>(&[]).unwrap();
        let root = context_root(ctx.path(), &ignore);
        let srcs = expand_sources(&root, &[".".into()]).unwrap();
        copy_into(&root, &srcs, rootfs.path(), "/c/", &CopyOptions::default()).unwrap();
        let copied = rootfs.path().join("c/d").join(name);
        assert_eq!(fs::read_to_string(copied).unwrap(), "latin1");
    }

    #[test]
    fn parents_keep_the_directories_after_a_pivot() {
        let ctx = tempfile::tempdir().unwrap();
        let rootfs = tempfile::tempdir().unwrap();
        fs::create_dir_all(ctx.path().join("src/app/lib")).unwrap();
        fs::write(ctx.path().join("src/app/lib/x.go"), "x").unwrap();
        fs::write(ctx.path().join("src/main.go"), "m").unwrap();
        let ignore = PatternMatcher::new::<&str>(&[]).unwrap();
        let root = context_root(ctx.path(), &ignore);
        let opts = CopyOptions {
            parents: true,
            ..Default::default()
        };
        // Without a pivot every directory of the source is kept; with `/./` only
        // those after it (BuildKit: `COPY --parents ./src/./app/lib /p/`).
        for (pattern, want) in [
            ("src/app/lib/x.go", "a/src/app/lib/x.go"),
            ("./src/./app/lib", "b/app/lib/x.go"),
            ("src/./*.go", "c/main.go"),
        ] {
            let dest = format!("/{}/", &want[..1]);
            let srcs = expand_sources(&root, &[pattern.into()]).unwrap();
            copy_into(&root, &srcs, rootfs.path(), &dest, &opts).unwrap();
            assert!(rootfs.path().join(want).is_file(), "{pattern} → {want}");
        }
        assert!(!rootfs.path().join("b/src").exists());
    }
}

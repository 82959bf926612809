//! `cp`, `diff`, `export` and `stats`: commands that read a container's files or cgroup.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use berth_engine::fsops::{self, RootfsView};
use berth_engine::{Engine, Status};

type CmdResult = Result<i32, Box<dyn std::error::Error>>;

/// `CONTAINER:PATH` (a colon before any slash) or a host path.
fn split_spec(s: &str) -> Option<(&str, &str)> {
    if s.starts_with('/') || s.starts_with('.') {
        return None;
    }
    s.split_once(':')
}

/// The last component of a container path (`.` for the root), as an archive name.
fn base_name(path: &str) -> PathBuf {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(PathBuf::from(n)),
            _ => None,
        })
        .next_back()
        .unwrap_or_else(|| PathBuf::from("."))
}

fn parent_of(path: &str) -> String {
    match Path::new(path).parent() {
        Some(p) if !p.as_os_str().is_empty() => p.display().to_string(),
        _ => "/".into(),
    }
}

fn not_found(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR))
}

/// Archives the container object `fd` (an `O_PATH` descriptor from
/// [`berth_engine::fsops::RootfsView::open`]) under `name`. Everything is read through the
/// descriptor's magic link, so nothing the container changes meanwhile redirects the read.
fn archive_fd<W: Write>(
    out: W,
    fd: &OwnedFd,
    name: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let st = nix::sys::stat::fstat(fd.as_raw_fd())?;
    let at = fsops::fd_path(fd);
    let mut ar = tar::Builder::new(out);
    ar.follow_symlinks(false);
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => ar.append_dir_all(name, at.join("."))?,
        libc::S_IFREG => {
            let mut f = std::fs::File::open(&at)?;
            ar.append_file(name, &mut f)?;
        }
        libc::S_IFLNK => {
            let target = nix::fcntl::readlinkat(Some(fd.as_raw_fd()), "")?;
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_mode(0o777);
            h.set_uid(u64::from(st.st_uid));
            h.set_gid(u64::from(st.st_gid));
            h.set_mtime(u64::try_from(st.st_mtime).unwrap_or(0));
            h.set_size(0);
            ar.append_link(&mut h, name, Path::new(&target))?;
        }
        _ => {
            return Err(
                format!("{}: copying special files is not supported", name.display()).into(),
            )
        }
    }
    ar.finish()?;
    Ok(())
}

/// Streams a tar archive made by `produce` into `consume` through a pipe, so neither
/// side holds the whole copy in memory.
fn piped(
    produce: impl FnOnce(std::io::PipeWriter) -> Result<(), Box<dyn std::error::Error>> + Send,
    consume: impl FnOnce(std::io::PipeReader) -> Result<(), Box<dyn std::error::Error>>,
) -> Result<(), Box<dyn std::error::Error>> {
    let (r, w) = std::io::pipe()?;
    std::thread::scope(|s| {
        let writer = s.spawn(move || produce(w).map_err(|e| e.to_string()));
        let consumed = consume(r);
        let produced = writer
            .join()
            .unwrap_or_else(|_| Err("archive writer panicked".into()));
        consumed?;
        produced.map_err(Into::into)
    })
}

/// Container → host (`-` for a tar stream on stdout), with Docker's naming: into `dst`
/// when it is a directory, else as `dst`.
fn cp_out(view: &RootfsView, c: &str, path: &str, dst: &str) -> CmdResult {
    let follow = path.ends_with('/') || path.ends_with("/.");
    let fd = view.open(path, follow).map_err(|e| {
        if not_found(&e) {
            format!("Could not find the file {path} in container {c}")
        } else {
            format!("open {path} in container {c}: {e}")
        }
    })?;
    let name = base_name(path);
    if dst == "-" {
        archive_fd(std::io::stdout().lock(), &fd, &name)?;
        return Ok(0);
    }
    let dst = Path::new(dst);
    let (dir, name) = if dst.is_dir() {
        (dst.to_path_buf(), name)
    } else {
        let parent = match dst.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        (parent, base_name(&dst.display().to_string()))
    };
    piped(
        |w| archive_fd(w, &fd, &name),
        |r| {
            let mut ar = tar::Archive::new(r);
            ar.set_preserve_permissions(true);
            ar.set_preserve_ownerships(true);
            ar.set_overwrite(true);
            ar.unpack(&dir)
                .map_err(|e| format!("copy to {}: {e}", dir.display()).into())
        },
    )?;
    Ok(0)
}

/// Unpacks `archive` into the container directory `dir` with berth-image's extractor,
/// which resolves every name with `openat2(RESOLVE_IN_ROOT)` below `dir` and never
/// writes through a symlink: a symlink planted in the container stays inside it.
fn unpack_into(
    dir: &OwnedFd,
    archive: impl std::io::Read,
    same_owner: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let opts = berth_image::layer::ApplyOptions {
        same_owner,
        ..Default::default()
    };
    berth_image::layer::apply::unpack(&fsops::fd_path(dir), archive, None, &opts)?;
    Ok(())
}

/// Host → container (`-` for a tar stream on stdin), with Docker's naming: into the
/// destination when it is a directory, else as it.
fn cp_in(view: &RootfsView, c: &str, path: &str, src: &str) -> CmdResult {
    let dir_of = |p: &str| -> Result<OwnedFd, String> {
        let fd = view.open(p, true).map_err(|e| {
            if not_found(&e) {
                format!("Could not find the file {p} in container {c}")
            } else {
                format!("open {p} in container {c}: {e}")
            }
        })?;
        match nix::sys::stat::fstat(fd.as_raw_fd()) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => Ok(fd),
            _ => Err(format!("destination \"{c}:{p}\" must be a directory")),
        }
    };
    if src == "-" {
        let dir = dir_of(path)?;
        unpack_into(&dir, std::io::stdin().lock(), true)?;
        return Ok(0);
    }
    let src_path = Path::new(src);
    let meta = std::fs::symlink_metadata(src_path)
        .map_err(|_| format!("lstat {src}: no such file or directory"))?;
    let (dir, name) = match view.open(path, true) {
        Ok(fd)
            if nix::sys::stat::fstat(fd.as_raw_fd())
                .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR) =>
        {
            (fd, base_name(src))
        }
        Ok(_) => (dir_of(&parent_of(path))?, base_name(path)),
        Err(e) if not_found(&e) && !path.ends_with('/') => {
            (dir_of(&parent_of(path))?, base_name(path))
        }
        Err(e) if not_found(&e) => {
            return Err(format!("no such directory {path} in container {c}").into())
        }
        Err(e) => return Err(format!("open {path} in container {c}: {e}").into()),
    };
    piped(
        |w| {
            let mut ar = tar::Builder::new(w);
            ar.follow_symlinks(false);
            if meta.is_dir() {
                ar.append_dir_all(&name, src_path)?;
            } else {
                ar.append_path_with_name(src_path, &name)?;
            }
            ar.finish()?;
            Ok(())
        },
        |r| unpack_into(&dir, r, false),
    )?;
    Ok(0)
}

/// `docker cp`: either side may be `CONTAINER:PATH`; `-` streams a tar archive.
pub fn cp(root: &Path, src: &str, dst: &str) -> CmdResult {
    let mut engine = Engine::open(root)?;
    match (split_spec(src), split_spec(dst)) {
        (Some((c, path)), None) => {
            let (_, view) = engine.rootfs_view(c)?;
            cp_out(&view, c, path, dst)
        }
        (None, Some((c, path))) => {
            let (_, view) = engine.rootfs_view(c)?;
            cp_in(&view, c, path, src)
        }
        _ => Err("copying between containers or between host paths is not supported; one side must be CONTAINER:PATH".into()),
    }
}

/// What `berth commit` was asked for.
pub struct CommitArgs {
    pub container: String,
    pub repository: Option<String>,
    pub changes: Vec<String>,
    pub message: Option<String>,
    pub author: Option<String>,
    pub pause: bool,
}

/// `docker commit`: the container's overlay upper directory becomes a layer on top of
/// its image's, with a config carrying the container's command, environment, working
/// directory and user, then the `-c` changes, and a history entry.
pub fn commit(root: &Path, a: &CommitArgs) -> CmdResult {
    // Validate the reference and the changes before touching the container.
    let tags = a
        .repository
        .as_deref()
        .map(berth_image::Reference::parse)
        .transpose()?;
    let mut engine = Engine::open(root)?;
    let c = engine.find(&a.container)?;
    let paused = a.pause && c.state.status == Status::Running;
    if paused {
        engine.pause(&c.id)?;
    }
    let made = commit_image(root, &engine, &c, a, tags.as_slice());
    if paused {
        engine.unpause(&c.id)?;
    }
    println!("{}", made?);
    Ok(0)
}

/// The layers of `rec`'s image, as the build exporter describes them.
fn image_layers(
    store: &berth_registry::client::LocalStore,
    rec: &berth_image::ImageRecord,
) -> Result<Vec<berth_build::export::Layer>, Box<dyn std::error::Error>> {
    let manifest: serde_json::Value =
        serde_json::from_slice(&store.manifest_bytes(&rec.manifest_digest)?)?;
    let blobs = manifest["layers"].as_array().cloned().unwrap_or_default();
    if blobs.len() != rec.layers.len() {
        return Err(format!(
            "image {}: the manifest lists {} layers, the store {}",
            rec.config_digest,
            blobs.len(),
            rec.layers.len()
        )
        .into());
    }
    blobs
        .iter()
        .zip(&rec.layers)
        .map(|(b, l)| {
            let digest = b["digest"].as_str().unwrap_or_default().parse()?;
            Ok(berth_build::export::Layer {
                diff_id: l.diff_id.clone(),
                chain_id: l.chain_id.clone(),
                digest,
                size: b["size"].as_u64().unwrap_or(0),
                media_type: b["mediaType"].as_str().unwrap_or_default().to_string(),
                content_size: l.size,
            })
        })
        .collect()
}

/// Writes the container's changes as a layer (keeping their timestamps, unlike a build)
/// into the content and layer stores. `None` when it changed nothing.
fn commit_upper(
    store: &berth_registry::client::LocalStore,
    upper: &Path,
    placeholders: &std::collections::BTreeSet<PathBuf>,
    parent: Option<&berth_image::Digest>,
    scratch: &Path,
) -> Result<Option<berth_build::export::Layer>, Box<dyn std::error::Error>> {
    use berth_image::layer::{ApplyOptions, Compression};
    if std::fs::read_dir(upper)?.next().is_none() {
        return Ok(None);
    }
    let tmp = scratch.join("layer.tar.gz");
    let compression = Compression::Gzip;
    let diff = {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        let d =
            berth_image::layer::write_layer_excluding(upper, &mut w, compression, placeholders)?;
        w.flush()?;
        d
    };
    let media_type = compression.oci_media_type().to_string();
    store
        .content
        .put(&mut std::fs::File::open(&tmp)?, diff.size, &diff.digest)?;
    let blob = store.content.open_blob(&diff.digest)?;
    let applied = store.layers.apply(
        parent,
        std::io::BufReader::with_capacity(256 * 1024, blob),
        Some(&media_type),
        Some(&diff.diff_id),
        &ApplyOptions::default(),
    )?;
    Ok(Some(berth_build::export::Layer {
        diff_id: diff.diff_id,
        chain_id: applied.chain_id,
        digest: diff.digest,
        size: diff.size,
        media_type,
        content_size: applied.content_size,
    }))
}

/// The new image's config: the old one, the container's run settings, the changes, and
/// the layer and history entries.
fn commit_config(
    base: &serde_json::Value,
    c: &berth_engine::Container,
    a: &CommitArgs,
    layer: Option<&berth_build::export::Layer>,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    use serde_json::{json, Value};
    let mut config = base.clone();
    let now = berth_runtime::state::now_rfc3339();
    let mut inner = config["config"].as_object().cloned().unwrap_or_default();
    let rc = &c.config;
    for (key, set, value) in [
        ("Cmd", !rc.cmd.is_empty(), json!(rc.cmd)),
        (
            "Entrypoint",
            !rc.entrypoint.is_empty(),
            json!(rc.entrypoint),
        ),
        ("Env", !rc.env.is_empty(), json!(rc.env)),
        ("WorkingDir", !rc.workdir.is_empty(), json!(rc.workdir)),
        ("User", !rc.user.is_empty(), json!(rc.user)),
    ] {
        if set {
            inner.insert(key.into(), value);
        }
    }
    for change in &a.changes {
        berth_registry::client::import::apply_change(&mut inner, change)?;
    }
    config["config"] = Value::Object(inner);
    config["created"] = json!(now);
    if let Some(author) = &a.author {
        config["author"] = json!(author);
    }
    if let Some(l) = layer {
        let ids = config["rootfs"]["diff_ids"]
            .as_array_mut()
            .ok_or("the image config has no rootfs.diff_ids")?;
        ids.push(json!(l.diff_id.to_string()));
    }
    let mut entry = json!({"created": now, "created_by": rc.args.join(" ")});
    if let Some(m) = &a.message {
        entry["comment"] = json!(m);
    }
    if let Some(author) = &a.author {
        entry["author"] = json!(author);
    }
    if layer.is_none() {
        entry["empty_layer"] = json!(true);
    }
    if !config["history"].is_array() {
        config["history"] = json!([]);
    }
    if let Some(h) = config["history"].as_array_mut() {
        h.push(entry);
    }
    Ok(config)
}

/// Builds and stores the committed image; returns its id.
fn commit_image(
    root: &Path,
    engine: &Engine,
    c: &berth_engine::Container,
    a: &CommitArgs,
    tags: &[berth_image::Reference],
) -> Result<String, Box<dyn std::error::Error>> {
    let mut store = berth_registry::client::LocalStore::open(root)?;
    let rec = store
        .find(&c.image_id)
        .map_err(|e| format!("the image of container {}: {e}", c.name))?;
    let base = store.config_json(&rec)?;
    let mut layers = image_layers(&store, &rec)?;
    let scratch = tempfile_dir(root)?;
    let upper = engine.upper_dir(&c.id)?;
    let placeholders = engine.mount_placeholders(&c.id)?;
    let parent = layers.last().map(|l| l.chain_id.clone());
    let layer = commit_upper(
        &store,
        &upper,
        &placeholders,
        parent.as_ref(),
        scratch.path(),
    );
    drop(scratch);
    let layer = layer?;
    let config = commit_config(&base, c, a, layer.as_ref())?;
    layers.extend(layer);
    let image = berth_build::export::assemble(&config, &layers)?;
    berth_build::export::to_store(&mut store, &image, &config, tags)?;
    Ok(image.config_digest.to_string())
}

/// A scratch directory under the root (same filesystem as the stores), removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir(root: &Path) -> std::io::Result<Scratch> {
    let dir = root
        .join("tmp")
        .join(format!("commit-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(Scratch(dir))
}

pub fn diff(root: &Path, name: &str) -> CmdResult {
    let mut engine = Engine::open(root)?;
    let mut out = std::io::stdout().lock();
    for c in engine.diff(name)? {
        writeln!(out, "{}", c.line())?;
    }
    Ok(0)
}

/// `docker export`: the container's filesystem as a tar archive.
pub fn export(root: &Path, name: &str, output: Option<&Path>) -> CmdResult {
    let mut engine = Engine::open(root)?;
    let (_, view) = engine.rootfs_view(name)?;
    let sink: Box<dyn Write> = match output {
        Some(p) => Box::new(std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()))?),
        None => {
            if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                return Err(
                    "cowardly refusing to save to a terminal. Use the -o flag or redirect".into(),
                );
            }
            Box::new(std::io::stdout().lock())
        }
    };
    let mut ar = tar::Builder::new(sink);
    ar.follow_symlinks(false);
    append_tree(&mut ar, &view.rootfs, Path::new("."), &mut HashMap::new())?;
    ar.finish()?;
    Ok(0)
}

/// Appends `dir`'s entries under `name`, in name order, the second and later names of a
/// file as hard links to the first (as `docker export` does; `tar`'s own
/// `append_dir_all` would copy the content again).
fn append_tree(
    ar: &mut tar::Builder<Box<dyn Write>>,
    dir: &Path,
    name: &Path,
    seen: &mut HashMap<(u64, u64), PathBuf>,
) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    ar.append_path_with_name(dir, name)?;
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let inner = name.join(e.file_name());
        let md = std::fs::symlink_metadata(&path)?;
        if md.is_dir() {
            append_tree(ar, &path, &inner, seen)?;
            continue;
        }
        if md.is_file() && md.nlink() > 1 {
            if let Some(first) = seen.get(&(md.dev(), md.ino())) {
                let mut h = tar::Header::new_gnu();
                h.set_metadata(&md);
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                ar.append_link(&mut h, &inner, first)?;
                continue;
            }
            seen.insert((md.dev(), md.ino()), inner.clone());
        }
        if is_special(&md) {
            append_special(ar, &md, &inner)?;
            continue;
        }
        ar.append_path_with_name(&path, &inner)?;
    }
    Ok(())
}

/// A FIFO, device node or socket: the `tar` crate names these by their host path
/// (which fails as an absolute path), so they are written by hand.
fn is_special(md: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let t = md.file_type();
    t.is_fifo() || t.is_char_device() || t.is_block_device() || t.is_socket()
}

/// Appends a FIFO or device node under `name`; a socket is left out, as Docker does.
fn append_special(
    ar: &mut tar::Builder<Box<dyn Write>>,
    md: &std::fs::Metadata,
    name: &Path,
) -> std::io::Result<()> {
    let Some(kind) = berth_image::layer::special_entry_type(&md.file_type()) else {
        return Ok(());
    };
    let mut h = tar::Header::new_gnu();
    h.set_metadata(md);
    berth_image::layer::set_special(&mut h, kind, md)?;
    ar.append_data(&mut h, name, std::io::empty())
}

fn read_num(dir: &Path, file: &str) -> Option<u64> {
    std::fs::read_to_string(dir.join(file))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

struct Sample {
    cpu_ns: u64,
    mem: u64,
    limit: u64,
    pids: u64,
}

fn sample(engine: &Engine, id: &str) -> Option<Sample> {
    let cg = engine.runtime().record(id).ok()?.cgroup;
    let v1 = |ctrl: &str| -> Option<PathBuf> {
        cg.dirs
            .iter()
            .find(|(k, _)| k.split(',').any(|c| c == ctrl))
            .map(|(_, p)| p.clone())
    };
    let v2 = cg.dirs.get("").cloned();
    let cpu_ns = v1("cpuacct")
        .and_then(|d| read_num(&d, "cpuacct.usage"))
        .or_else(|| {
            let s = std::fs::read_to_string(v2.as_ref()?.join("cpu.stat")).ok()?;
            let us: u64 = s
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))?
                .trim()
                .parse()
                .ok()?;
            Some(us * 1000)
        })
        .unwrap_or(0);
    let (mem, limit) = match v1("memory") {
        Some(d) => (
            read_num(&d, "memory.usage_in_bytes").unwrap_or(0),
            read_num(&d, "memory.limit_in_bytes").unwrap_or(u64::MAX),
        ),
        None => {
            let d = v2.clone().unwrap_or_default();
            (
                read_num(&d, "memory.current").unwrap_or(0),
                read_num(&d, "memory.max").unwrap_or(u64::MAX),
            )
        }
    };
    let pids = v1("pids")
        .or(v2)
        .and_then(|d| read_num(&d, "pids.current"))
        .unwrap_or(0);
    Some(Sample {
        cpu_ns,
        mem,
        limit,
        pids,
    })
}

fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(u64::MAX)
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.2}{}", UNITS[u]).replace(".00B", "B")
}

/// `docker stats --no-stream`: one sample of CPU, memory and pids per running container.
pub fn stats(root: &Path, names: &[String], format: Option<&str>) -> CmdResult {
    let mut engine = Engine::open(root)?;
    let list: Vec<berth_engine::Container> = if names.is_empty() {
        engine
            .list()?
            .into_iter()
            .filter(|c| c.state.status == Status::Running)
            .collect()
    } else {
        names
            .iter()
            .map(|n| engine.find(n))
            .collect::<Result<_, _>>()?
    };
    let first: Vec<Option<Sample>> = list.iter().map(|c| sample(&engine, &c.id)).collect();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(200));
    let wall = t0.elapsed().as_nanos() as f64;
    let host_mem = host_memory();
    let mut rows = Vec::new();
    for (c, a) in list.iter().zip(first) {
        let b = sample(&engine, &c.id);
        let (cpu, mem, limit, pids) = match (a, b) {
            (Some(a), Some(b)) => (
                (b.cpu_ns.saturating_sub(a.cpu_ns)) as f64 / wall * 100.0,
                b.mem,
                b.limit.min(host_mem),
                b.pids,
            ),
            _ => (0.0, 0, 0, 0),
        };
        let mem_pct = if limit > 0 {
            mem as f64 / limit as f64 * 100.0
        } else {
            0.0
        };
        rows.push(serde_json::json!({
            "Container": c.short_id(), "ID": c.short_id(), "Name": c.name,
            "CPUPerc": format!("{cpu:.2}%"),
            "MemUsage": format!("{} / {}", bytes(mem), bytes(limit)),
            "MemPerc": format!("{mem_pct:.2}%"),
            "NetIO": "0B / 0B", "BlockIO": "0B / 0B", "PIDs": pids.to_string(),
        }));
    }
    let mut out = std::io::stdout().lock();
    match format {
        Some("json") => {
            for r in &rows {
                writeln!(out, "{r}")?;
            }
        }
        Some(t) => crate::format::template_rows(&mut out, t, &rows)?,
        None => {
            let keys = [
                "Container",
                "Name",
                "CPUPerc",
                "MemUsage",
                "MemPerc",
                "NetIO",
                "BlockIO",
                "PIDs",
            ];
            let mut table = vec![[
                "CONTAINER ID",
                "NAME",
                "CPU %",
                "MEM USAGE / LIMIT",
                "MEM %",
                "NET I/O",
                "BLOCK I/O",
                "PIDS",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()];
            for r in &rows {
                table.push(
                    keys.iter()
                        .map(|k| r[k].as_str().unwrap_or("").to_string())
                        .collect(),
                );
            }
            crate::format::table(&mut out, &table)?;
        }
    }
    Ok(0)
}

/// Puts the host file `host` (a regular file or symlink) at `dest` in a container, making
/// missing parent directories on the way (with the modes of their host counterparts under
/// `host_base` ↔ `dest_base`, else 0755), through the same confined extractor as `cp`.
/// What `compose watch` syncs.
pub(crate) fn sync_into(
    view: &RootfsView,
    host: &Path,
    dest: &str,
    host_base: &Path,
    dest_base: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let dest = Path::new(dest);
    // The deepest directory of `dest`'s ancestors that already exists in the container.
    let mut existing = dest.parent().unwrap_or(Path::new("/")).to_path_buf();
    let mut missing: Vec<PathBuf> = Vec::new();
    let anchor = loop {
        match view.open(&existing.to_string_lossy(), true) {
            Ok(fd) => break fd,
            Err(e) if not_found(&e) => {
                missing.push(existing.clone());
                existing = existing.parent().unwrap_or(Path::new("/")).to_path_buf();
            }
            Err(e) => {
                return Err(format!("open {} in the container: {e}", existing.display()).into())
            }
        }
    };
    missing.reverse();
    let rel = |p: &Path| p.strip_prefix(&existing).map(Path::to_path_buf);
    let host_of = |p: &Path| -> Option<PathBuf> {
        let under = p.strip_prefix(dest_base).ok()?;
        Some(host_base.join(under))
    };
    piped(
        |w| {
            let mut ar = tar::Builder::new(w);
            ar.follow_symlinks(false);
            for dir in &missing {
                let name = rel(dir)?;
                match host_of(dir).filter(|h| h.is_dir()) {
                    Some(h) => ar.append_dir(&name, h)?,
                    None => {
                        let mut hd = tar::Header::new_gnu();
                        hd.set_entry_type(tar::EntryType::Directory);
                        hd.set_mode(0o755);
                        hd.set_size(0);
                        ar.append_data(&mut hd, &name, std::io::empty())?;
                    }
                }
            }
            ar.append_path_with_name(host, rel(dest)?)?;
            ar.finish()?;
            Ok(())
        },
        |r| unpack_into(&anchor, r, false),
    )
}

/// Removes `dest` (a file, link or whole directory) from a container, resolving its parent
/// confined to the container; absent already is fine.
pub(crate) fn remove_in(view: &RootfsView, dest: &str) -> Result<(), Box<dyn std::error::Error>> {
    let name = base_name(dest);
    let parent = match view.open(&parent_of(dest), true) {
        Ok(fd) => fd,
        Err(e) if not_found(&e) => return Ok(()),
        Err(e) => return Err(format!("open {} in the container: {e}", parent_of(dest)).into()),
    };
    let at = fsops::fd_path(&parent).join(&name);
    let gone = match std::fs::symlink_metadata(&at) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(&at),
        Ok(_) => std::fs::remove_file(&at),
    };
    gone.map_err(|e| format!("remove {dest} in the container: {e}").into())
}

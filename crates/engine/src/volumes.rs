//! Named volumes: `<root>/volumes/<name>/_data`, one row each in the `volumes` table.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::db::Db;
use crate::{Error, IoContext, Result};

pub fn data_dir(root: &Path, name: &str) -> PathBuf {
    root.join("volumes").join(name).join("_data")
}

fn valid(name: &str) -> bool {
    crate::names::valid_name(name) && name.len() >= 2
}

/// The local driver's options (`volume create -o`): `type`, `device` and `o`, as for
/// mount(8). A volume with them is that mount on its `_data`, made when a container
/// using it starts: `type=tmpfs,device=tmpfs,o=size=64m`, or `type=none,o=bind,
/// device=/srv/data` for a host directory.
pub type Options = std::collections::BTreeMap<String, String>;

fn check_options(opts: &Options) -> Result<()> {
    for k in opts.keys() {
        if !matches!(k.as_str(), "type" | "device" | "o") {
            return Err(Error::Invalid(format!("invalid option key: {k:?}")));
        }
    }
    if opts.contains_key("type") != opts.contains_key("device") {
        return Err(Error::Invalid(
            "missing required option: a volume mount needs both \"type\" and \"device\"".into(),
        ));
    }
    Ok(())
}

/// Creates a volume (idempotent, as Docker's). Returns its name.
pub fn create(
    db: &mut Db,
    root: &Path,
    name: Option<&str>,
    labels: &[(String, String)],
) -> Result<String> {
    create_with(db, root, name, labels, &Options::new())
}

/// [`create`] with the local driver's options.
pub fn create_with(
    db: &mut Db,
    root: &Path,
    name: Option<&str>,
    labels: &[(String, String)],
    opts: &Options,
) -> Result<String> {
    check_options(opts)?;
    let name = match name {
        Some(n) if !valid(n) => {
            return Err(Error::Invalid(format!(
                "create {n}: \"{n}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed"
            )))
        }
        Some(n) => n.to_string(),
        None => crate::names::new_id(),
    };
    let dir = data_dir(root, &name);
    std::fs::create_dir_all(&dir).ctx(|| format!("create {}", dir.display()))?;
    let labels: serde_json::Map<String, Value> =
        labels.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    let data = json!({"Driver": "local", "Labels": labels, "Options": opts, "Scope": "local"});
    if db.add_volume(&name, &berth_runtime::state::now_rfc3339(), &data)? {
        crate::events::record(root, "volume", "create", &name, driver_local());
    }
    Ok(name)
}

/// Mounts a volume's `type`/`device` on its `_data` unless done already (a volume with
/// no such options is its plain directory).
pub fn mount(db: &Db, root: &Path, name: &str) -> Result<()> {
    let Some((_, data)) = db.volume(name)? else {
        return Ok(());
    };
    let opt = |k: &str| data["Options"][k].as_str().map(str::to_string);
    let (Some(fstype), Some(device)) = (opt("type"), opt("device")) else {
        return Ok(());
    };
    let dir = data_dir(root, name);
    if crate::engine::is_mountpoint(&dir) {
        return Ok(());
    }
    let list: Vec<String> = opt("o")
        .map(|o| o.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let o = berth_runtime::mounts::parse_options(&list);
    let data = o.data.join(",");
    let fstype = (fstype != "none").then_some(fstype);
    nix::mount::mount(
        Some(device.as_str()),
        &dir,
        fstype.as_deref(),
        o.flags,
        (!data.is_empty()).then_some(data.as_str()),
    )
    .map_err(|e| {
        Error::Invalid(format!(
            "error while mounting volume {}: failed to mount local volume: mount {device}:{}: {e}",
            dir.display(),
            dir.display()
        ))
    })
}

/// Undoes [`mount`]; a plain volume is left alone.
fn unmount(root: &Path, name: &str) -> Result<()> {
    let dir = data_dir(root, name);
    while crate::engine::is_mountpoint(&dir) {
        nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH)
            .map_err(|e| Error::Invalid(format!("unmount volume {name}: {e}")))?;
    }
    Ok(())
}

/// The attributes of a volume's events.
fn driver_local() -> std::collections::BTreeMap<String, String> {
    [("driver".to_string(), "local".to_string())].into()
}

/// `docker volume inspect`'s object.
pub fn inspect(db: &Db, root: &Path, name: &str) -> Result<Value> {
    let (created, data) = db
        .volume(name)?
        .ok_or_else(|| Error::NoSuchVolume(name.into()))?;
    Ok(json!({
        "CreatedAt": created,
        "Driver": data["Driver"],
        "Labels": data["Labels"],
        "Mountpoint": data_dir(root, name),
        "Name": name,
        "Options": data["Options"],
        "Scope": "local",
    }))
}

pub fn list(db: &Db) -> Result<Vec<String>> {
    Ok(db.volumes()?.into_iter().map(|(n, _, _)| n).collect())
}

/// Removes a volume unless a container (in `users`) uses it.
pub fn remove(db: &mut Db, root: &Path, name: &str, users: &[String]) -> Result<()> {
    if db.volume(name)?.is_none() {
        return Err(Error::NoSuchVolume(name.into()));
    }
    if let Some(id) = users.first() {
        return Err(Error::Conflict(format!(
            "remove {name}: volume is in use - [{id}]"
        )));
    }
    // A bind or device mount must be gone before the directory is deleted, or the
    // deletion would reach into what it shows (a host directory's files).
    unmount(root, name)?;
    db.remove_volume(name)?;
    crate::events::record(root, "volume", "destroy", name, driver_local());
    let dir = root.join("volumes").join(name);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).ctx(|| format!("remove {}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// Copies the image's content at `destination` inside `rootfs` into a new, empty volume
/// (Docker's "copy-up"), keeping owners and modes. The mount point is resolved by the
/// kernel inside the rootfs, so an image symlink there (`/data -> /etc`) copies the
/// image's `/etc`, never the host's.
pub fn seed(rootfs: &Path, destination: &str, to: &Path) -> Result<()> {
    let rel = Path::new(destination.trim_start_matches('/'));
    let flags = libc::O_PATH | libc::O_DIRECTORY;
    let from = match crate::fsops::open_in_root(rootfs, rel, flags) {
        Ok(fd) => fd,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => return Ok(()),
        Err(e) => return Err(e).ctx(|| format!("open {destination} in the image")),
    };
    let empty = std::fs::read_dir(to)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false);
    if !empty {
        return Ok(());
    }
    // `cp -a` copies symlinks below the mount point as symlinks; the source is the
    // descriptor's magic link, so the walk starts from the directory opened above.
    let src = crate::fsops::fd_path(&from).join(".");
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(to)
        .status()
        .ctx(|| "run cp".into())?;
    if !st.success() {
        return Err(Error::Invalid(format!(
            "copying image content from {destination} into the volume failed"
        )));
    }
    Ok(())
}

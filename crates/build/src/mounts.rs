//! `RUN --mount`: cache, tmpfs, bind and secret mounts.
//!
//! * `type=cache`: a directory under `<root>/build/cache-mounts/`, named by
//!   the mount's `id` (its target when none), kept across builds and shared
//!   by every build on the machine (`sharing` is accepted, and all modes
//!   behave as `shared`).
//! * `type=tmpfs`: a fresh tmpfs (`size=` honoured).
//! * `type=bind`: a read-only view of the context or, with `from=`, of a
//!   stage or image; its content is part of the RUN's cache key.
//! * `type=secret`: a file given with `berth build --secret id=…`, bound
//!   read-only at `/run/secrets/<id>` (or `target=`), or with `env=NAME` in that
//!   variable of the RUN instead (both when `target=` is given too); it is never
//!   part of a layer, the config, the history or a cache key.
//! * `type=ssh`: the agent socket given with `berth build --ssh id[=SOCKET]`
//!   (id `default` when none), bound at `/run/buildkit/ssh_agent.0` (or
//!   `target=`) with `SSH_AUTH_SOCK` pointing at it, as BuildKit does. The
//!   host's socket is bound itself (no proxy), so `uid`/`gid`/`mode` do not
//!   apply to it.
//!
//! Mount points the image lacked are created by the runtime in the RUN's
//! upper directory; [`remove_stubs`] takes them out again so that none of
//! them lands in the layer.

use std::path::{Path, PathBuf};

/// One parsed `--mount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunMount {
    pub kind: MountKind,
    /// Absolute path in the container.
    pub target: String,
    /// `source=`: a path in the context, stage or image.
    pub source: String,
    /// `from=`: a stage or image for bind mounts.
    pub from: Option<String>,
    /// `id=`: cache and secret id.
    pub id: String,
    pub required: bool,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// tmpfs `size=`.
    pub size: Option<String>,
    /// Secret `env=`: the variable that holds the secret.
    pub env: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountKind {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

impl RunMount {
    /// Parses a `--mount` value (`type=cache,target=/root/.cache,...`).
    pub fn parse(spec: &str) -> Result<RunMount, String> {
        let mut m = RunMount {
            kind: MountKind::Bind,
            target: String::new(),
            source: String::new(),
            from: None,
            id: String::new(),
            required: false,
            mode: None,
            uid: None,
            gid: None,
            size: None,
            env: None,
        };
        let num = |k: &str, v: &str, radix: u32| {
            u32::from_str_radix(v, radix).map_err(|_| format!("invalid value for {k}: {v}"))
        };
        for field in spec.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            let (k, v) = field.split_once('=').unwrap_or((field, ""));
            match k.to_ascii_lowercase().as_str() {
                "type" => {
                    m.kind = match v {
                        "bind" => MountKind::Bind,
                        "cache" => MountKind::Cache,
                        "tmpfs" => MountKind::Tmpfs,
                        "secret" => MountKind::Secret,
                        "ssh" => MountKind::Ssh,
                        other => return Err(format!("unsupported mount type {other:?}")),
                    }
                }
                "target" | "dst" | "destination" => m.target = v.to_string(),
                "source" | "src" => m.source = v.to_string(),
                "from" => m.from = Some(v.to_string()),
                "id" => m.id = v.to_string(),
                "required" => m.required = v.is_empty() || v == "true",
                "mode" => m.mode = Some(num(k, v, 8)?),
                "uid" => m.uid = Some(num(k, v, 10)?),
                "gid" => m.gid = Some(num(k, v, 10)?),
                "size" => m.size = Some(v.to_string()),
                "env" => m.env = Some(v.to_string()),
                "ro" | "readonly" | "rw" | "readwrite" | "sharing" => {}
                other => return Err(format!("unexpected key {other:?} in --mount={spec}")),
            }
        }
        if m.kind == MountKind::Secret {
            if m.id.is_empty() {
                m.id = Path::new(&m.target)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
            }
            if m.target.is_empty() && m.env.is_none() {
                m.target = format!("/run/secrets/{}", m.id);
            }
            if m.id.is_empty() {
                return Err(format!("--mount={spec}: a secret needs an id"));
            }
            if m.target.is_empty() {
                // An environment variable only: nothing to mount.
                return Ok(m);
            }
        }
        if m.kind == MountKind::Ssh {
            if m.id.is_empty() {
                m.id = "default".into();
            }
            if m.target.is_empty() {
                m.target = "/run/buildkit/ssh_agent.0".into();
            }
        }
        if m.target.is_empty() {
            return Err(format!("--mount={spec}: target is required"));
        }
        if m.kind == MountKind::Cache && m.id.is_empty() {
            m.id = m.target.clone();
        }
        Ok(m)
    }

    /// The mount's description in the RUN's cache key: everything but
    /// secret content.
    pub fn key(&self) -> String {
        format!("{self:?}")
    }
}

/// The persistent directory of a cache mount.
pub fn cache_dir(root: &Path, m: &RunMount) -> PathBuf {
    let name = crate::cache::KeyHasher::new("cache-mount")
        .str(&m.id)
        .clone()
        .finish();
    root.join("build/cache-mounts")
        .join(name.trim_start_matches("sha256:"))
}

/// A runtime-spec mount object.
pub fn spec_mount(target: &str, kind: &str, source: &Path, options: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "destination": target, "type": kind, "source": source, "options": options,
    })
}

/// The first component of `target` missing from `rootfs`, as an in-container
/// path, or `None` when the mount point exists.
pub fn first_missing(rootfs: &Path, target: &str) -> Option<String> {
    let mut path = String::new();
    for part in target.split('/').filter(|p| !p.is_empty()) {
        path.push('/');
        path.push_str(part);
        let host = crate::fsutil::resolve_in_root(rootfs, &path, false).ok()?;
        if host.symlink_metadata().is_err() {
            return Some(path);
        }
    }
    None
}

/// Removes the mount-point stubs the runtime made for `target` below
/// `missing` (the first component that did not exist) from `upper`, as long
/// as they hold nothing else.
pub fn remove_stubs(upper: &Path, missing: &str, target: &str) {
    let mut chain: Vec<PathBuf> = Vec::new();
    let mut path = upper.join(missing.trim_start_matches('/'));
    chain.push(path.clone());
    if let Some(rest) = target.strip_prefix(missing) {
        for part in rest.split('/').filter(|p| !p.is_empty()) {
            path = path.join(part);
            chain.push(path.clone());
        }
    }
    for p in chain.iter().rev() {
        let Ok(md) = p.symlink_metadata() else {
            continue;
        };
        let removed = if md.is_dir() {
            std::fs::remove_dir(p).is_ok()
        } else {
            md.len() == 0 && std::fs::remove_file(p).is_ok()
        };
        if !removed {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mounts() {
        let m = RunMount::parse("type=cache,target=/root/.cache,sharing=locked").unwrap();
        assert_eq!(m.kind, MountKind::Cache);
        assert_eq!(m.id, "/root/.cache");
        let s = RunMount::parse("type=secret,id=tok").unwrap();
        assert_eq!(s.target, "/run/secrets/tok");
        let b = RunMount::parse("target=/src,from=build,source=/out").unwrap();
        assert_eq!(
            (b.kind, b.from.as_deref()),
            (MountKind::Bind, Some("build"))
        );
        assert!(RunMount::parse("type=cache").is_err());
        assert!(RunMount::parse("type=nfs,target=/x").is_err());
    }

    #[test]
    fn stubs_are_removed_but_not_content() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("run/secrets")).unwrap();
        std::fs::write(d.path().join("run/secrets/tok"), "").unwrap();
        std::fs::create_dir_all(d.path().join("keep/cache")).unwrap();
        std::fs::write(d.path().join("keep/file"), "x").unwrap();
        remove_stubs(d.path(), "/run", "/run/secrets/tok");
        assert!(!d.path().join("run").exists());
        remove_stubs(d.path(), "/keep", "/keep/cache");
        assert!(d.path().join("keep/file").exists());
        assert!(!d.path().join("keep/cache").exists());
    }
}

//! Namespace plumbing. New namespaces are created by clone3 itself; namespaces given by
//! path are joined with setns — pid and time by the runtime before the clone (they apply
//! to children only), the rest by the init right after it.

use std::path::Path;

use nix::sched::{setns, CloneFlags};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::error::{Context, Error, Result};

fn namespaces(spec: &Spec) -> impl Iterator<Item = &oci_spec::runtime::LinuxNamespace> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .into_iter()
        .flatten()
}

pub fn has(spec: &Spec, t: LinuxNamespaceType) -> bool {
    namespaces(spec).any(|n| n.typ() == t)
}

/// clone3 flags for the namespaces to create (those without a path). Time namespaces are
/// excluded: their offsets must be written before any process enters, see [`prepare_parent`].
pub fn new_flags(spec: &Spec) -> u64 {
    namespaces(spec)
        .filter(|n| n.path().is_none() && n.typ() != LinuxNamespaceType::Time)
        .fold(0, |acc, n| acc | n.typ() as u64)
}

fn open_ns(path: &Path) -> Result<std::fs::File> {
    std::fs::File::open(path).ctx(|| format!("open namespace {}", path.display()))
}

/// In the runtime, before clone3: join a pid/time namespace by path, or create a time
/// namespace and write its offsets. Both only affect the children we are about to make.
pub fn prepare_parent(spec: &Spec) -> Result<()> {
    for ns in namespaces(spec) {
        match (ns.typ(), ns.path()) {
            (LinuxNamespaceType::Pid, Some(p)) => setns(open_ns(p)?, CloneFlags::CLONE_NEWPID)
                .ctx(|| format!("join pid namespace {}", p.display()))?,
            (LinuxNamespaceType::Time, Some(p)) => setns(
                open_ns(p)?,
                CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
            )
            .ctx(|| format!("join time namespace {}", p.display()))?,
            (LinuxNamespaceType::Time, None) => new_time_ns(spec)?,
            _ => {}
        }
    }
    Ok(())
}

fn new_time_ns(spec: &Spec) -> Result<()> {
    nix::sched::unshare(CloneFlags::from_bits_retain(libc::CLONE_NEWTIME))
        .ctx(|| "unshare time namespace".into())?;
    let offsets = spec
        .linux()
        .as_ref()
        .and_then(|l| l.time_offsets().as_ref());
    let mut text = String::new();
    for (clock, off) in offsets.into_iter().flatten() {
        if clock != "monotonic" && clock != "boottime" {
            return Err(Error::config(
                format!("linux.timeOffsets.{clock}"),
                "only monotonic and boottime can be offset",
            ));
        }
        text.push_str(&format!(
            "{clock} {} {}\n",
            off.secs().unwrap_or(0),
            off.nanosecs().unwrap_or(0)
        ));
    }
    if !text.is_empty() {
        std::fs::write("/proc/self/timens_offsets", text)
            .map_err(|e| Error::config("linux.timeOffsets", e.to_string()))?;
    }
    Ok(())
}

/// In the init: join the namespaces given by path, the user namespace first so that the
/// others are joined with the capabilities it grants.
pub fn join_paths(spec: &Spec) -> Result<()> {
    let mut list: Vec<_> = namespaces(spec)
        .filter(|n| {
            n.path().is_some()
                && !matches!(n.typ(), LinuxNamespaceType::Pid | LinuxNamespaceType::Time)
        })
        .collect();
    list.sort_by_key(|n| n.typ() != LinuxNamespaceType::User);
    for ns in list {
        let path = ns
            .path()
            .as_ref()
            .map(|p| p.as_path())
            .unwrap_or(Path::new(""));
        let flag = CloneFlags::from_bits_retain(ns.typ() as i32);
        setns(open_ns(path)?, flag)
            .ctx(|| format!("join {} namespace {}", ns.typ(), path.display()))?;
    }
    Ok(())
}

/// Joins every namespace of a running process (for `exec`). Skips those we already share,
/// since setns into one's own user namespace fails.
pub fn join_process(pid: i32, kinds: &[(&str, i32)]) -> Result<()> {
    let mut order: Vec<&(&str, i32)> = kinds.iter().collect();
    order.sort_by_key(|(name, _)| *name != "user");
    for (name, flag) in order {
        let theirs = format!("/proc/{pid}/ns/{name}");
        let ours = format!("/proc/self/ns/{name}");
        let same = match (std::fs::read_link(&theirs), std::fs::read_link(&ours)) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if same || !Path::new(&theirs).exists() {
            continue;
        }
        setns(
            open_ns(Path::new(&theirs))?,
            CloneFlags::from_bits_retain(*flag),
        )
        .ctx(|| format!("join {theirs}"))?;
    }
    Ok(())
}

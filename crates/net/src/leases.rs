//! Host-wide address leases for the default bridge.
//!
//! `berth0` is one device per host, but every berth root (`--root`) keeps its own
//! database, so the database alone cannot stop two roots from handing out one address
//! on it. A lease is a file `/run/berth-net/leases/<bridge>/<ip>` created with O_EXCL:
//! whoever creates it owns the address. It names the container and its network
//! namespace; a lease whose namespace is gone (a process killed before its release) is
//! stale and taken over. /run is a tmpfs, so leases end with the boot, like the links.

use std::collections::HashSet;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::{NetError, Result};

const DIR: &str = "/run/berth-net/leases";

fn dir(bridge: &str) -> PathBuf {
    PathBuf::from(DIR).join(bridge)
}

/// Addresses on `bridge` leased by live containers of any root; stale leases are removed.
pub(crate) fn taken(bridge: &str, alive: impl Fn(&str) -> bool) -> Result<HashSet<Ipv4Addr>> {
    let d = dir(bridge);
    let entries = match std::fs::read_dir(&d) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(e) => return Err(NetError::io(format!("reading {}", d.display()), e)),
    };
    let mut ips = HashSet::new();
    for entry in entries.flatten() {
        let Some(ip) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let netns = text.lines().nth(1).unwrap_or_default();
        // An empty lease is one being written right now: it counts as taken.
        if text.is_empty() || alive(netns) {
            ips.insert(ip);
        } else {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(ips)
}

/// Takes `ip` for a container; false if another holder has it.
pub(crate) fn take(bridge: &str, ip: Ipv4Addr, container_id: &str, netns: &str) -> Result<bool> {
    let d = dir(bridge);
    std::fs::create_dir_all(&d)
        .map_err(|e| NetError::io(format!("creating {}", d.display()), e))?;
    let path = d.join(ip.to_string());
    let mut f = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(NetError::io(format!("creating {}", path.display()), e)),
    };
    f.write_all(format!("{container_id}\n{netns}\n").as_bytes())
        .map_err(|e| NetError::io(format!("writing {}", path.display()), e))?;
    Ok(true)
}

/// Gives `ip` back if `container_id` holds it (never someone else's lease).
pub(crate) fn give_back(bridge: &str, ip: Ipv4Addr, container_id: &str) {
    let path = dir(bridge).join(ip.to_string());
    let holder = std::fs::read_to_string(&path).unwrap_or_default();
    if holder.lines().next() == Some(container_id) {
        let _ = std::fs::remove_file(&path);
    }
}

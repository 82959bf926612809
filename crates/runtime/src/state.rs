//! The on-disk state of one container under the runtime root (`<root>/<id>/`), in runc's
//! state JSON shape plus what later commands need (start time, cgroup path, the spec).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        };
        f.pad(s)
    }
}

/// What `state` prints: runc's fields, in runc's names.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublicState {
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: Status,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
    pub owner: String,
}

/// The stored record. `status` in `public` is recomputed from the kernel on every read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    #[serde(flatten)]
    pub public: PublicState,
    /// Field 22 of /proc/<pid>/stat at creation: tells our init from a recycled pid.
    pub start_time: u64,
    /// The container's cgroup directories, resolved once at create time.
    pub cgroup: crate::cgroups::Cgroup,
    pub config: Spec,
}

pub struct StateDir {
    pub dir: PathBuf,
}

pub const FIFO: &str = "exec.fifo";
const FILE: &str = "state.json";

impl StateDir {
    pub fn new(root: &Path, id: &str) -> Result<StateDir> {
        validate_id(id)?;
        Ok(StateDir { dir: root.join(id) })
    }

    pub fn fifo(&self) -> PathBuf {
        self.dir.join(FIFO)
    }

    pub fn exists(&self) -> bool {
        self.dir.join(FILE).exists()
    }

    /// Writes aside and renames so a reader never sees half a state file.
    pub fn save(&self, rec: &Record) -> Result<()> {
        let tmp = self.dir.join(".state.json.tmp");
        let data =
            serde_json::to_vec(rec).map_err(|e| Error::Init(format!("encode state: {e}")))?;
        let mut f = std::fs::File::create(&tmp).ctx(|| format!("{}", tmp.display()))?;
        f.write_all(&data).ctx(|| format!("{}", tmp.display()))?;
        std::fs::rename(&tmp, self.dir.join(FILE)).ctx(|| format!("{}", self.dir.display()))
    }

    pub fn load(&self, id: &str) -> Result<Record> {
        let path = self.dir.join(FILE);
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(id.into()))
            }
            Err(e) => {
                return Err(Error::Io {
                    context: path.display().to_string(),
                    err: e,
                })
            }
        };
        let mut rec: Record = serde_json::from_slice(&data)
            .map_err(|e| Error::Init(format!("{}: corrupt state: {e}", path.display())))?;
        rec.public.status = self.status_of(&rec);
        Ok(rec)
    }

    pub(crate) fn status_of(&self, rec: &Record) -> Status {
        let pid = rec.public.pid;
        if pid <= 0 || !process_alive(pid, rec.start_time) {
            return Status::Stopped;
        }
        if self.fifo().exists() {
            return Status::Created;
        }
        if rec.cgroup.is_frozen() {
            return Status::Paused;
        }
        Status::Running
    }

    pub fn remove(&self) -> Result<()> {
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Io {
                context: self.dir.display().to_string(),
                err: e,
            }),
            _ => Ok(()),
        }
    }
}

/// runc accepts these characters; anything else could escape the state directory.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id.len() <= 1024
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+-.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidId(id.into()))
    }
}

/// Start time (clock ticks since boot) and state letter of a process, from /proc/<pid>/stat.
pub fn proc_stat(pid: i32) -> Option<(u64, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses; fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((start, state))
}

pub fn process_alive(pid: i32, start_time: u64) -> bool {
    match proc_stat(pid) {
        Some((start, state)) => start == start_time && state != 'Z' && state != 'X',
        None => false,
    }
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_could_escape_the_state_dir_are_refused() {
        for bad in ["", ".", "..", "a/b", "../x", "a b", "x\0"] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
        for good in ["abc", "A-1_b.c+d", "c2-1234"] {
            assert!(validate_id(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn proc_stat_reads_our_own_start_time() {
        let (start, state) = proc_stat(std::process::id() as i32).unwrap();
        assert!(start > 0);
        assert!(matches!(state, 'R' | 'S'));
        assert!(process_alive(std::process::id() as i32, start));
        assert!(
            !process_alive(std::process::id() as i32, start + 1),
            "a recycled pid has another start time"
        );
    }
}

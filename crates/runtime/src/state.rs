//! The on-disk state of one container under the runtime root (`<root>/<id>/`), in runc's
//! state JSON shape plus what later commands need (start time, cgroup path, the spec).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use rustix::fs::{RenameFlags, CWD};
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
const TMP: &str = ".state.json.tmp";

/// Emptied state directories of deleted containers, kept beside the others for the next
/// create. Where freeing a directory's block is a synchronous discard (ext4 mounted with
/// `discard` and no journal, the project's machines) a mkdir and an rmdir are ~0.3 ms of a
/// start; a rename is not. The name is no valid container id (`validate_id`). berth-image
/// keeps container snapshot directories the same way (`spare.rs`); the two crates are
/// siblings with no lower crate of ours to hold one copy, and each needs only the few
/// lines of its own case.
const SPARES: &str = "@spares";
const SPARES_CAP: usize = 16;

impl StateDir {
    pub fn new(root: &Path, id: &str) -> Result<StateDir> {
        validate_id(id)?;
        Ok(StateDir { dir: root.join(id) })
    }

    /// Makes the container's directory, from a spare when there is one; `Exists` when
    /// the id is taken.
    pub fn create(&self, id: &str) -> Result<()> {
        let spares = self.spares();
        if let Some(entries) = spares.as_deref().and_then(|s| std::fs::read_dir(s).ok()) {
            for e in entries.flatten() {
                match rename_noreplace(&e.path(), &self.dir) {
                    Ok(()) => return Ok(()),
                    Err(rustix::io::Errno::EXIST) => return Err(Error::Exists(id.into())),
                    // Taken by another create meanwhile.
                    Err(rustix::io::Errno::NOENT) => continue,
                    Err(_) => break,
                }
            }
        }
        match std::fs::create_dir(&self.dir) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(Error::Exists(id.into()))
            }
            r => r.ctx(|| format!("{}", self.dir.display())),
        }
    }

    fn spares(&self) -> Option<PathBuf> {
        self.dir.parent().map(|root| root.join(SPARES))
    }

    /// The spares directory, when it has room for this one.
    fn spare_room(&self) -> Option<PathBuf> {
        let spares = self.spares()?;
        match std::fs::read_dir(&spares).map(Iterator::count) {
            Ok(n) if n >= SPARES_CAP => return None,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if std::fs::create_dir(&spares).is_err() && !spares.is_dir() {
                    return None;
                }
            }
            Err(_) => return None,
        }
        Some(spares)
    }

    pub fn fifo(&self) -> PathBuf {
        self.dir.join(FIFO)
    }

    /// Writes aside and swaps the two files so a reader never sees half a state file. The
    /// swap (`RENAME_EXCHANGE`) keeps both inodes for the next save and the next container
    /// instead of deleting one on every save: on the journal-less ext4 the project runs on,
    /// each deleted inode slows every later file creation for minutes (see berth-image's
    /// `spare.rs`).
    pub fn save(&self, rec: &Record) -> Result<()> {
        let tmp = self.dir.join(TMP);
        let data =
            serde_json::to_vec(rec).map_err(|e| Error::Init(format!("encode state: {e}")))?;
        // Written over, not truncated first: ext4 flushes a file emptied by truncation and
        // written again when it is closed (berth-image's `write_in_place` says more), and
        // the swapped-out file here always holds an older state.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&tmp)
            .ctx(|| format!("{}", tmp.display()))?;
        f.write_all(&data).ctx(|| format!("{}", tmp.display()))?;
        if f.metadata().map(|m| m.len()).unwrap_or(0) > data.len() as u64 {
            f.set_len(data.len() as u64)
                .ctx(|| format!("{}", tmp.display()))?;
        }
        let file = self.dir.join(FILE);
        match rustix::fs::renameat_with(CWD, &tmp, CWD, &file, RenameFlags::EXCHANGE) {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::NOENT) => {
                std::fs::rename(&tmp, &file).ctx(|| format!("{}", self.dir.display()))
            }
            Err(e) => Err(Error::Io {
                context: file.display().to_string(),
                err: e.into(),
            }),
        }
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
        // A spare directory taken by a create that has not saved yet: its state file is
        // empty (a spare of an older berth) or still the state of the container it was.
        if data.is_empty() {
            return Err(Error::NotFound(id.into()));
        }
        let mut rec: Record = serde_json::from_slice(&data)
            .map_err(|e| Error::Init(format!("{}: corrupt state: {e}", path.display())))?;
        if rec.public.id != id {
            return Err(Error::NotFound(id.into()));
        }
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

    /// Deletes the state; the emptied directory may be kept as a spare.
    pub fn remove(&self) -> Result<()> {
        let io = |err| Error::Io {
            context: self.dir.display().to_string(),
            err,
        };
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(e)),
        };
        let spares = self.spare_room();
        // A kept state file is left as it is, not emptied: it names its container, so it
        // reads as no state under the next id (`load`), and truncating it would free its
        // blocks — a synchronous discard each on the project's ext4 (see `spare.rs` in
        // berth-image), on the path of every `run --rm`.
        let names: Vec<_> = entries.flatten().map(|e| e.file_name()).collect();
        for name in names {
            let path = self.dir.join(&name);
            let kept = spares.is_some() && (name == FILE || name == TMP) && plain_file(&path);
            let removed = match std::fs::symlink_metadata(&path) {
                _ if kept => Ok(()),
                Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
                _ => std::fs::remove_file(&path),
            };
            match removed {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(io(err)),
                _ => {}
            }
        }
        if let Some(spares) = spares {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let name = format!("{}-{nanos}", std::process::id());
            if rename_noreplace(&self.dir, &spares.join(name)).is_ok() {
                return Ok(());
            }
        }
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e)),
            _ => Ok(()),
        }
    }
}

/// Whether a state file may be kept with its spare directory: a regular file (the
/// runtime's directories are written by nothing else).
fn plain_file(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
}

fn rename_noreplace(from: &Path, to: &Path) -> rustix::io::Result<()> {
    rustix::fs::renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE)
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
    fn deleted_state_dirs_are_kept_and_taken_by_the_next_create() {
        use std::os::unix::fs::MetadataExt;
        let root = tempfile::tempdir().unwrap();
        let record = |id: &str| Record {
            public: PublicState {
                oci_version: "1.0.2".into(),
                id: id.into(),
                pid: 0,
                status: Status::Created,
                bundle: root.path().into(),
                rootfs: root.path().into(),
                created: now_rfc3339(),
                annotations: HashMap::new(),
                owner: String::new(),
            },
            start_time: 0,
            cgroup: crate::cgroups::Cgroup::resolve(None, id),
            config: Spec::default(),
        };
        let a = StateDir::new(root.path(), "a").unwrap();
        a.create("a").unwrap();
        a.save(&record("a")).unwrap();
        assert_eq!(a.load("a").unwrap().public.id, "a");
        assert!(matches!(a.create("a"), Err(Error::Exists(_))));
        let ino = std::fs::metadata(&a.dir).unwrap().ino();
        a.remove().unwrap();
        assert!(!a.dir.exists());
        assert!(matches!(a.load("a"), Err(Error::NotFound(_))));
        assert!(
            validate_id(SPARES).is_err(),
            "a spare never looks like a container"
        );
        let spares = || std::fs::read_dir(root.path().join(SPARES)).unwrap().count();
        assert_eq!(spares(), 1);

        let b = StateDir::new(root.path(), "b").unwrap();
        b.create("b").unwrap();
        assert_eq!(std::fs::metadata(&b.dir).unwrap().ino(), ino);
        // The state file came along, still a's (removal does not truncate it): no state
        // for b until it saves one, into the same inode (saves swap the two files,
        // deleting neither).
        let names = |d: &Path| {
            let mut v: Vec<_> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(&b.dir), [FILE]);
        assert!(matches!(b.load("b"), Err(Error::NotFound(_))));
        assert!(crate::container::Runtime::new(root.path())
            .list()
            .unwrap()
            .is_empty());
        let state_ino = std::fs::metadata(b.dir.join(FILE)).unwrap().ino();
        let mut rec = record("b");
        b.save(&rec).unwrap();
        rec.public.created = "again".into();
        b.save(&rec).unwrap();
        assert_eq!(b.load("b").unwrap().public.created, "again");
        // A save shorter than the older state it is written over is cut to its length.
        rec.public.created = "x".into();
        b.save(&rec).unwrap();
        assert_eq!(b.load("b").unwrap().public.created, "x");
        assert_eq!(names(&b.dir), [TMP, FILE]);
        let inos = [FILE, TMP].map(|n| std::fs::metadata(b.dir.join(n)).unwrap().ino());
        assert!(inos.contains(&state_ino), "{inos:?} {state_ino}");
        assert_eq!(spares(), 0);
        // A taken id stays taken while there are spares, and keeps them.
        b.remove().unwrap();
        let c = StateDir::new(root.path(), "b").unwrap();
        c.create("b").unwrap();
        let d = StateDir::new(root.path(), "d").unwrap();
        d.create("d").unwrap();
        d.remove().unwrap();
        assert_eq!(spares(), 1);
        assert!(matches!(c.create("b"), Err(Error::Exists(_))));
        assert_eq!(spares(), 1, "the failed create took no spare");
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

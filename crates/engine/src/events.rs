//! Docker's event stream without a daemon: every command that changes a container, image,
//! network or volume appends one JSON line to `<root>/events.jsonl` — one `O_APPEND`
//! write, so lines of concurrent berth processes never interleave — and `berth events`
//! reads and follows the file. Past [`MAX_SIZE`] the file moves to `events.jsonl.1` (one
//! older file is kept), so the history is bounded as Docker's in-memory one is.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// Size at which the event file is rotated.
pub const MAX_SIZE: u64 = 1 << 20;

/// One event, in Docker's JSON shape (`docker events --format '{{json .}}'`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "Action")]
    pub action: String,
    #[serde(rename = "Actor")]
    pub actor: Actor,
    pub scope: String,
    pub time: i64,
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
    /// Docker's older fields, kept for containers and images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// What an event is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Attributes")]
    pub attributes: BTreeMap<String, String>,
}

/// The event file of a store.
pub fn path(root: &Path) -> PathBuf {
    root.join("events.jsonl")
}

fn rotated(root: &Path) -> PathBuf {
    root.join("events.jsonl.1")
}

/// Appends an event; best effort (an event that cannot be written never fails the
/// command that caused it).
pub fn record(
    root: &Path,
    kind: &str,
    action: &str,
    id: &str,
    attributes: BTreeMap<String, String>,
) {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    let legacy = matches!(kind, "container" | "image");
    let from = (kind == "container")
        .then(|| attributes.get("image").cloned())
        .flatten();
    let e = Event {
        kind: kind.into(),
        action: action.into(),
        actor: Actor {
            id: id.into(),
            attributes,
        },
        scope: "local".into(),
        time: nanos / 1_000_000_000,
        time_nano: nanos,
        status: legacy.then(|| action.to_string()),
        id: legacy.then(|| id.to_string()),
        from,
    };
    let Ok(mut line) = serde_json::to_vec(&e) else {
        return;
    };
    line.push(b'\n');
    // One open file per process and store: a `run` records four events, and opening the
    // file each time was a measurable part of its teardown. A file grown past the limit
    // is opened again by path: either this process rotates it now, or another process
    // did (this one's file is then the rotated one, and events must go to the new one).
    static OPEN: Mutex<Option<(PathBuf, std::fs::File)>> = Mutex::new(None);
    let file = path(root);
    let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
    let stale = open
        .as_ref()
        .is_none_or(|(p, f)| *p != file || f.metadata().map_or(true, |m| m.len() > MAX_SIZE));
    if stale {
        if std::fs::metadata(&file).is_ok_and(|m| m.len() > MAX_SIZE) {
            let _ = std::fs::rename(&file, rotated(root));
        }
        *open = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&file)
            .ok()
            .map(|f| (file, f));
    }
    if let Some((_, f)) = open.as_mut() {
        let _ = f.write_all(&line);
    }
}

/// Events in the live file from byte `offset`, and the offset after the last whole line;
/// a file shorter than `offset` was rotated since and is read from its start.
pub fn read_from(root: &Path, offset: u64) -> (Vec<Event>, u64) {
    crate::logs::read_json_lines(&path(root), offset).unwrap_or_else(|_| (Vec::new(), offset))
}

/// Every kept event, oldest first, and the live file's offset after them.
pub fn read_all(root: &Path) -> (Vec<Event>, u64) {
    let (mut out, _) = crate::logs::read_json_lines::<Event>(&rotated(root), 0).unwrap_or_default();
    let (live, offset) = read_from(root, 0);
    out.extend(live);
    (out, offset)
}

/// Records a network event: `create`/`destroy` of network `id` (`name`), or
/// `connect`/`disconnect` of `container` to it.
pub fn network(root: &Path, action: &str, id: &str, name: &str, container: Option<&str>) {
    let mut attrs: BTreeMap<String, String> = [
        ("name".to_string(), name.to_string()),
        ("type".to_string(), "bridge".to_string()),
    ]
    .into();
    if let Some(c) = container {
        attrs.insert("container".into(), c.to_string());
    }
    record(root, "network", action, id, attrs);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_in_docker_shape() {
        let dir = tempfile::tempdir().unwrap();
        let attrs: BTreeMap<String, String> = [("image", "bb"), ("name", "x")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        record(dir.path(), "container", "start", "abc", attrs);
        record(dir.path(), "network", "create", "n1", BTreeMap::new());
        let (all, offset) = read_all(dir.path());
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].from.as_deref(), Some("bb"));
        assert_eq!(all[0].status.as_deref(), Some("start"));
        assert_eq!(all[1].id, None, "networks have no legacy fields");
        let v = serde_json::to_value(&all[0]).unwrap();
        assert_eq!(v["Actor"]["Attributes"]["name"], "x");
        assert_eq!(v["Type"], "container");
        // Following from the end sees only what comes after.
        record(dir.path(), "volume", "destroy", "v", BTreeMap::new());
        let (more, _) = read_from(dir.path(), offset);
        assert_eq!(more.len(), 1);
        assert_eq!(more[0].action, "destroy");
    }

    #[test]
    fn the_file_rotates_past_its_limit_keeping_one_older_file() {
        let dir = tempfile::tempdir().unwrap();
        let big: BTreeMap<String, String> = [("pad".to_string(), "x".repeat(1000))].into();
        let n = (MAX_SIZE / 1000) as usize + 50;
        for i in 0..n {
            record(dir.path(), "volume", "create", &i.to_string(), big.clone());
        }
        assert!(rotated(dir.path()).exists());
        assert!(std::fs::metadata(path(dir.path())).unwrap().len() < MAX_SIZE);
        let (all, _) = read_all(dir.path());
        assert_eq!(all.len(), n, "every event is in one of the two files");
        let ids: Vec<usize> = all.iter().map(|e| e.actor.id.parse().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "in order");
    }
}

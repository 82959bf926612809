//! Docker's json-file log format: one JSON object per line,
//! `{"log":"text\n","stream":"stdout","time":"<RFC 3339 with nanoseconds>"}`, rotated as
//! its `max-size`/`max-file` options do (`<log>.1` the newest rotated file), or no log at
//! all (`--log-driver none`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::{Error, IoContext, Result};

/// A line longer than this is written in pieces, as Docker's json-file driver does.
const MAX_LINE: usize = 16 * 1024;

/// One log entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    pub log: String,
    pub stream: String,
    pub time: String,
}

/// Where a container's output goes: `--log-driver` and its `--log-opt`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogConfig {
    /// json-file (also `local`, which berth keeps in the same format): rotated past
    /// `max_size` bytes (0: never), keeping `max_file` files in all, the live one included.
    JsonFile { max_size: u64, max_file: u32 },
    /// Nothing is kept; `logs` refuses, as Docker's does.
    None,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig::JsonFile {
            max_size: 0,
            max_file: 1,
        }
    }
}

impl LogConfig {
    /// Checks `--log-driver` and `--log-opt` as Docker does.
    pub fn parse(driver: &str, opts: &BTreeMap<String, String>) -> Result<LogConfig> {
        let invalid = |m: String| Error::Invalid(m);
        match driver {
            "" | "json-file" | "local" => {}
            "none" if opts.is_empty() => return Ok(LogConfig::None),
            "none" => return Err(invalid("the none log driver takes no options".into())),
            other => {
                return Err(invalid(format!(
                    "logging driver {other:?} is not supported (json-file, local, none)"
                )))
            }
        }
        let (mut max_size, mut max_file) = (0, 1);
        for (k, v) in opts {
            match k.as_str() {
                "max-size" => {
                    max_size =
                        parse_size(v).ok_or_else(|| invalid(format!("invalid max-size {v:?}")))?
                }
                "max-file" => {
                    max_file = v.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                        invalid(format!("max-file must be a number of at least 1: {v:?}"))
                    })?
                }
                "compress" if v == "false" => {}
                other => {
                    return Err(invalid(format!(
                        "unknown log opt '{other}' for json-file log driver"
                    )))
                }
            }
        }
        if max_file > 1 && max_size == 0 {
            return Err(invalid("max-file cannot be set without max-size".into()));
        }
        Ok(LogConfig::JsonFile { max_size, max_file })
    }

    /// The one-word form the monitor binary takes on its command line.
    pub fn to_arg(self) -> String {
        match self {
            LogConfig::JsonFile { max_size, max_file } => format!("{max_size}:{max_file}"),
            LogConfig::None => "none".into(),
        }
    }

    /// The inverse of [`LogConfig::to_arg`]; anything else is the default.
    pub fn from_arg(s: &str) -> LogConfig {
        if s == "none" {
            return LogConfig::None;
        }
        let parsed = s.split_once(':').and_then(|(size, files)| {
            Some(LogConfig::JsonFile {
                max_size: size.parse().ok()?,
                max_file: files.parse().ok().filter(|n| *n >= 1)?,
            })
        });
        parsed.unwrap_or_default()
    }
}

/// A positive size (`10m`, `1g`, `512k`, `100`), as Docker's units.
fn parse_size(s: &str) -> Option<u64> {
    crate::units::parse_bytes(s)
        .ok()
        .filter(|n| *n > 0)
        .map(|n| n as u64)
}

/// The n-th rotated file of a log (`<log>.n`, 1 the newest).
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Splits a stream into lines and appends them to the log file.
pub struct Writer {
    file: Option<File>,
    partial: [Vec<u8>; 2],
    path: PathBuf,
    /// Bytes in the live file.
    size: u64,
    config: LogConfig,
}

const STREAMS: [&str; 2] = ["stdout", "stderr"];

impl Writer {
    pub fn open(path: &Path, config: LogConfig) -> Result<Writer> {
        if config == LogConfig::None {
            return Ok(Writer::none());
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ctx(|| format!("open log {}", path.display()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Writer {
            file: Some(file),
            partial: [Vec::new(), Vec::new()],
            path: path.to_path_buf(),
            size,
            config,
        })
    }

    /// A writer that drops everything (a failed log open must not stop the container).
    pub fn none() -> Writer {
        Writer {
            file: None,
            partial: [Vec::new(), Vec::new()],
            path: PathBuf::new(),
            size: 0,
            config: LogConfig::None,
        }
    }

    /// Starts a new live file: the older ones move up a number, the oldest beyond
    /// `max_file` is dropped (with `max_file` 1 the live file is just emptied).
    fn rotate(&mut self, max_file: u32) {
        self.file = None;
        if max_file > 1 {
            for n in (1..max_file - 1).rev() {
                let _ = std::fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1));
            }
            let _ = std::fs::rename(&self.path, rotated(&self.path, 1));
        }
        self.file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&self.path)
            .ok();
        self.size = 0;
    }

    /// Takes `data` read from `stream` (0 = stdout, 1 = stderr).
    pub fn write(&mut self, stream: usize, data: &[u8]) {
        let buf = &mut self.partial[stream];
        buf.extend_from_slice(data);
        let mut out = Vec::new();
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            out.push(line);
        }
        while buf.len() >= MAX_LINE {
            out.push(buf.drain(..MAX_LINE).collect());
        }
        for line in out {
            self.emit(stream, &line);
        }
    }

    /// Writes what is left of a stream that ended without a newline.
    pub fn flush(&mut self, stream: usize) {
        let rest = std::mem::take(&mut self.partial[stream]);
        if !rest.is_empty() {
            self.emit(stream, &rest);
        }
    }

    fn emit(&mut self, stream: usize, line: &[u8]) {
        if self.file.is_none() {
            return;
        }
        let entry = Entry {
            log: String::from_utf8_lossy(line).into_owned(),
            stream: STREAMS[stream].into(),
            time: humantime::format_rfc3339_nanos(SystemTime::now()).to_string(),
        };
        let Ok(mut s) = serde_json::to_vec(&entry) else {
            return;
        };
        s.push(b'\n');
        if let LogConfig::JsonFile { max_size, max_file } = self.config {
            if max_size > 0 && self.size > 0 && self.size + s.len() as u64 > max_size {
                self.rotate(max_file);
            }
        }
        if let Some(f) = self.file.as_mut() {
            // A full disk loses log lines, never the container.
            if f.write_all(&s).is_ok() {
                self.size += s.len() as u64;
            }
        }
    }
}

/// Every entry of a log, the rotated files' (oldest first) and then the live file's;
/// returns them and the live file's offset after the last whole line.
pub fn read_all(path: &Path) -> Result<(Vec<Entry>, u64)> {
    let mut n = 0;
    while rotated(path, n + 1).exists() {
        n += 1;
    }
    let mut out = Vec::new();
    for i in (1..=n).rev() {
        out.extend(read_from(&rotated(path, i), 0)?.0);
    }
    let (live, offset) = read_from(path, 0)?;
    out.extend(live);
    Ok((out, offset))
}

/// Reads entries from `offset`; returns them and the offset after the last whole line.
/// A file shorter than `offset` was rotated since: it is read from its start.
pub fn read_from(path: &Path, offset: u64) -> Result<(Vec<Entry>, u64)> {
    read_json_lines(path, offset)
}

/// The JSON objects of a JSON-lines file from `offset` (lines that do not parse are
/// skipped), and the offset after the last whole line; a missing file has none, and a
/// file shorter than `offset` (rotated since) is read from its start. Logs and events
/// are both kept this way.
pub(crate) fn read_json_lines<T: serde::de::DeserializeOwned>(
    path: &Path,
    offset: u64,
) -> Result<(Vec<T>, u64)> {
    use std::io::{Seek, SeekFrom};
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), offset)),
        Err(e) => return Err(e).ctx(|| format!("open {}", path.display())),
    };
    let offset = match f.metadata() {
        Ok(m) if m.len() < offset => 0,
        _ => offset,
    };
    f.seek(SeekFrom::Start(offset))
        .ctx(|| format!("seek {}", path.display()))?;
    let mut r = BufReader::new(f);
    let mut out = Vec::new();
    let mut pos = offset;
    let mut line = String::new();
    loop {
        line.clear();
        let n = r
            .read_line(&mut line)
            .ctx(|| format!("read {}", path.display()))?;
        if n == 0 || !line.ends_with('\n') {
            break;
        }
        pos += n as u64;
        if let Ok(e) = serde_json::from_str::<T>(&line) {
            out.push(e);
        }
    }
    Ok((out, pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_and_partial_lines_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        let mut w = Writer::open(&p, LogConfig::default()).unwrap();
        w.write(0, b"one\ntw");
        w.write(1, b"err\n");
        w.write(0, b"o\nthree");
        w.flush(0);
        let (e, _) = read_from(&p, 0).unwrap();
        let got: Vec<(&str, &str)> = e
            .iter()
            .map(|e| (e.log.as_str(), e.stream.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("one\n", "stdout"),
                ("err\n", "stderr"),
                ("two\n", "stdout"),
                ("three", "stdout")
            ]
        );
        assert!(
            e[0].time.ends_with('Z') && e[0].time.len() > 25,
            "{}",
            e[0].time
        );
    }

    #[test]
    fn files_rotate_past_max_size_keeping_max_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        let cfg = LogConfig::parse(
            "json-file",
            &[("max-size", "300"), ("max-file", "3")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
        .unwrap();
        assert_eq!(LogConfig::from_arg(&cfg.to_arg()), cfg);
        let mut w = Writer::open(&p, cfg).unwrap();
        for i in 0..20 {
            w.write(0, format!("line {i:02}\n").as_bytes());
        }
        // Three files in all, none above the limit, the newest lines kept in order.
        assert!(p.exists() && rotated(&p, 1).exists() && rotated(&p, 2).exists());
        assert!(!rotated(&p, 3).exists());
        for f in [p.clone(), rotated(&p, 1), rotated(&p, 2)] {
            assert!(std::fs::metadata(&f).unwrap().len() <= 300);
        }
        let (all, _) = read_all(&p).unwrap();
        let lines: Vec<String> = all.iter().map(|e| e.log.clone()).collect();
        assert_eq!(lines.last().unwrap(), "line 19\n");
        let n: Vec<u32> = lines.iter().map(|l| l[5..7].parse().unwrap()).collect();
        assert!(n.windows(2).all(|w| w[1] == w[0] + 1), "{lines:?}");
        assert!(n.len() < 20, "the oldest lines were dropped");
        // A follower past the end of a rotated file starts again at its top.
        let (again, _) = read_from(&p, 1 << 20).unwrap();
        assert!(!again.is_empty());
    }

    #[test]
    fn drivers_and_options_are_checked() {
        let opts = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            LogConfig::parse("none", &opts(&[])).unwrap(),
            LogConfig::None
        );
        assert_eq!(
            LogConfig::parse("", &opts(&[])).unwrap(),
            LogConfig::default()
        );
        assert_eq!(
            LogConfig::parse("json-file", &opts(&[("max-size", "10m")])).unwrap(),
            LogConfig::JsonFile {
                max_size: 10 << 20,
                max_file: 1
            }
        );
        for (d, o) in [
            ("syslog", vec![]),
            ("json-file", vec![("max-size", "lots")]),
            ("json-file", vec![("max-file", "0")]),
            ("json-file", vec![("max-file", "3")]),
            ("json-file", vec![("colour", "red")]),
            ("none", vec![("max-size", "1m")]),
        ] {
            assert!(LogConfig::parse(d, &opts(&o)).is_err(), "{d} {o:?}");
        }
    }
}

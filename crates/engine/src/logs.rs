//! Docker's json-file log format: one JSON object per line,
//! `{"log":"text\n","stream":"stdout","time":"<RFC 3339 with nanoseconds>"}`.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::{IoContext, Result};

/// A line longer than this is written in pieces, as Docker's json-file driver does.
const MAX_LINE: usize = 16 * 1024;

/// One log entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    pub log: String,
    pub stream: String,
    pub time: String,
}

/// Splits a stream into lines and appends them to the log file.
pub struct Writer {
    file: Option<File>,
    partial: [Vec<u8>; 2],
}

const STREAMS: [&str; 2] = ["stdout", "stderr"];

impl Writer {
    pub fn open(path: &Path) -> Result<Writer> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ctx(|| format!("open log {}", path.display()))?;
        Ok(Writer {
            file: Some(file),
            partial: [Vec::new(), Vec::new()],
        })
    }

    /// A writer that drops everything (a failed log open must not stop the container).
    pub fn none() -> Writer {
        Writer {
            file: None,
            partial: [Vec::new(), Vec::new()],
        }
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
        let Some(f) = self.file.as_mut() else { return };
        let entry = Entry {
            log: String::from_utf8_lossy(line).into_owned(),
            stream: STREAMS[stream].into(),
            time: humantime::format_rfc3339_nanos(SystemTime::now()).to_string(),
        };
        if let Ok(mut s) = serde_json::to_vec(&entry) {
            s.push(b'\n');
            // A full disk loses log lines, never the container.
            let _ = f.write_all(&s);
        }
    }
}

/// Reads entries from `offset`; returns them and the offset after the last whole line.
pub fn read_from(path: &Path, offset: u64) -> Result<(Vec<Entry>, u64)> {
    use std::io::{Seek, SeekFrom};
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), offset)),
        Err(e) => return Err(e).ctx(|| format!("open {}", path.display())),
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
        if let Ok(e) = serde_json::from_str::<Entry>(&line) {
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
        let mut w = Writer::open(&p).unwrap();
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
}

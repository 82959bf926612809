//! Logging for both binaries: warnings (and debug with `--debug`) to stderr, and errors
//! also appended to runc's `--log` file as JSON lines, which containerd's shim reads to
//! report why a runtime call failed.

use std::io::Write;
use std::path::PathBuf;

pub struct Log {
    pub file: Option<PathBuf>,
    pub json: bool,
}

impl Log {
    pub fn init(&self, debug: bool) {
        let level = if debug {
            tracing::Level::DEBUG
        } else {
            tracing::Level::WARN
        };
        let fmt = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_max_level(level);
        // With --debug, stamp events with the time since start: that is how BENCHMARKS.md
        // attributes container start time to its steps.
        let _ = if debug {
            fmt.with_timer(tracing_subscriber::fmt::time::uptime())
                .try_init()
        } else {
            fmt.without_time().try_init()
        };
    }

    /// Reports a fatal error: one line on stderr, and a JSON/text line in the log file.
    pub fn error(&self, prog: &str, msg: &str) {
        eprintln!("{prog}: {msg}");
        let Some(path) = &self.file else { return };
        let time = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
        let line = if self.json {
            serde_json::json!({ "level": "error", "msg": msg, "time": time }).to_string()
        } else {
            format!("time=\"{time}\" level=error msg={msg:?}")
        };
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}

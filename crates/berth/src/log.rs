//! Logging for both binaries: warnings (and debug with `--debug`) to stderr, and also to
//! runc's `--log` file as text or JSON lines, which containerd's shim reads to report why a
//! runtime call failed.
//!
//! This is a dozen-line `tracing::Subscriber` rather than tracing-subscriber: berth-runc
//! runs once per container operation and its peak RSS is mostly its own code pages, and
//! tracing-subscriber's formatting machinery cost more resident memory than everything it
//! would print here.

use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata};

pub struct Log {
    pub file: Option<PathBuf>,
    pub json: bool,
}

struct Logger {
    max: Level,
    started: Instant,
    timed: bool,
    file: Option<PathBuf>,
    json: bool,
}

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl tracing::Subscriber for Logger {
    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        *meta.level() <= self.max
    }
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        // Lets disabled `debug!` calls cost one comparison with a global.
        Some(tracing::level_filters::LevelFilter::from_level(self.max))
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut msg = Message(String::new());
        event.record(&mut msg);
        let level = event.metadata().level();
        if self.timed {
            eprintln!(
                "{:>12.6}s {level:>5} {}",
                self.started.elapsed().as_secs_f64(),
                msg.0
            );
        } else {
            eprintln!("{level}: {}", msg.0);
        }
        if *level <= Level::WARN {
            append(
                self.file.as_ref(),
                self.json,
                &level.as_str().to_ascii_lowercase(),
                &msg.0,
            );
        }
    }
}

fn append(file: Option<&PathBuf>, json: bool, level: &str, msg: &str) {
    let Some(path) = file else { return };
    let time = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
    let line = if json {
        serde_json::json!({ "level": level, "msg": msg, "time": time }).to_string()
    } else {
        format!("time=\"{time}\" level={level} msg={msg:?}")
    };
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

impl Log {
    /// With `debug`, events carry the seconds since start: that is how BENCHMARKS.md
    /// attributes container start time to its steps.
    pub fn init(&self, debug: bool) {
        let logger = Logger {
            max: if debug { Level::DEBUG } else { Level::WARN },
            started: Instant::now(),
            timed: debug,
            file: self.file.clone(),
            json: self.json,
        };
        let _ = tracing::subscriber::set_global_default(logger);
    }

    /// Reports a fatal error: one line on stderr, and a line in the log file.
    pub fn error(&self, prog: &str, msg: &str) {
        eprintln!("{prog}: {msg}");
        append(self.file.as_ref(), self.json, "error", msg);
    }
}

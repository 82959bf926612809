//! Per-blob transfer progress, reported as it happens so that a CLI can draw bars (or
//! print lines) while a pull or push runs. The client only emits events; how they look
//! is the caller's business.

use std::sync::Arc;

use berth_image::Digest;

/// One step of one blob's transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// The transfer of a blob of `total` bytes begins.
    Started {
        /// The blob.
        digest: &'a Digest,
        /// Its size.
        total: u64,
    },
    /// `bytes` more bytes arrived (pull) or left (push).
    Advanced {
        /// The blob.
        digest: &'a Digest,
        /// Bytes since the last event.
        bytes: u64,
    },
    /// The blob is done; `status` is Docker's word for how (`Download complete`,
    /// `Already exists`, `Pushed`, `Layer already exists`, `Mounted`).
    Finished {
        /// The blob.
        digest: &'a Digest,
        /// What happened.
        status: &'static str,
    },
}

/// Receives [`Event`]s; called from the transfer tasks, so it must be cheap and
/// thread-safe.
pub trait Observer: Send + Sync {
    /// Handles one event.
    fn event(&self, event: Event<'_>);
}

/// Where events go: nowhere by default.
#[derive(Clone, Default)]
pub struct Progress(Option<Arc<dyn Observer>>);

impl Progress {
    /// Sends events to `observer`.
    pub fn new(observer: Arc<dyn Observer>) -> Progress {
        Progress(Some(observer))
    }

    /// Emits one event (no-op without an observer).
    pub fn emit(&self, event: Event<'_>) {
        if let Some(o) = &self.0 {
            o.event(event);
        }
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Progress(observer)"
        } else {
            "Progress(none)"
        })
    }
}

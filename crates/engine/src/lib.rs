//! berth-engine: containers, volumes, networks, the per-container monitor process and the
//! SQLite state DB (issue 4).
//!
//! Not written yet. It will turn an image plus `run` flags into an OCI bundle and hand it to
//! `berth-runtime`; networking comes from `berth-net`.

//! berth-runtime: an OCI runtime-spec 1.2 implementation for Linux, usable as a library and
//! through the runc-compatible `berth-runc` front end.
//!
//! # Design
//! Each lifecycle operation is one short-lived, single-threaded process, like runc: state
//! is a JSON file under the runtime root, and status is recomputed from the kernel
//! (process liveness, exec fifo, freezer) on every read, so a crash never leaves a stale
//! "running" behind.
//!
//! Starting a container is one `clone3` that creates every new namespace at once and, on
//! cgroup v2, places the child straight into its cgroup. The child ([`init`]) builds the
//! rootfs, pivots, and blocks on `exec.fifo` until `start` opens it (or, for `run`, on the
//! sync channel), then drops privileges, installs seccomp and execs. Errors cross the
//! [`channel`] back as one line naming the field at fault.
//!
//! Modules: [`config`] loads and validates bundles, [`namespaces`], [`mounts`],
//! [`devices`], [`caps`], [`console`], [`hooks`] and [`cgroups`] each own one concern;
//! [`container`] and [`exec`] sequence them.

pub mod caps;
pub mod cgroups;
pub mod channel;
pub mod config;
pub mod console;
pub mod container;
pub mod devices;
pub mod error;
pub mod exec;
pub mod features;
pub mod hooks;
pub mod init;
pub mod mounts;
pub mod namespaces;
pub mod reaper;
pub mod seccomp;
pub mod spawn;
pub mod state;
pub mod tty;

pub use container::{CreateOptions, Held, Runtime, Started};
pub use error::{Error, Result};
pub use exec::ExecOptions;
pub use state::{PublicState, Status};

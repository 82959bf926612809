//! berth-engine: containers, volumes, the per-container monitor process and the SQLite
//! state records (issue 4). Networking is reached through [`net`], whose two functions
//! are the only place bridge/user networks plug in.
//!
//! # Records
//! Each container is one row of the `containers` table in `<root>/berth.db` (the image
//! store's database; the engine keeps its own schema version in `engine_schema` and never
//! touches `PRAGMA user_version`). The row holds a [`Container`]: what `run`/`create`
//! asked for, resolved against the image once ([`RunConfig`]), and what happened since
//! ([`State`]). Writes are IMMEDIATE transactions, so concurrent berth commands
//! serialise on the database rather than racing on files.
//!
//! On disk, `<root>/containers/<id>/` holds the bundle (`config.json`), the overlay
//! `upper`/`work` dirs from berth-image's snapshotter, the `rootfs` mount point, the
//! `hosts`/`hostname`/`resolv.conf` files bind-mounted into the container and the
//! `<id>-json.log` log. The OCI runtime keeps its state under `<root>/run/runtime`.
//!
//! # Processes
//! There is no daemon. Whoever starts a container becomes its *monitor*: the process that
//! mounts the rootfs, writes the bundle, calls `Runtime::create` (so the container's init
//! is its child), attaches networking, `Runtime::start`s it, then sits in one `poll(2)`
//! loop over the container's stdout/stderr pipes (or its pty), a pidfd for the init and
//! the health-check timer, writing Docker json-file log lines. When the init exits it
//! records the exit code, finish time and OOM kill, tears the runtime state, network and
//! rootfs mount down, and applies the restart policy (Docker's back-off: 100 ms doubling,
//! reset after 10 s of running) or `--rm`. The rootfs is mounted only while the container
//! runs (or while `cp`/`export` read a stopped one).
//!
//! * `berth run` in the foreground is its own monitor, in-process: it also copies the
//!   output to its stdout/stderr, feeds `-i` stdin and forwards signals.
//! * `berth run -d` / `berth start` spawn `berth container-monitor <id>` detached
//!   (double fork + setsid); it reports "started" or the exact error back over a pipe,
//!   so the CLI's exit status is the one Docker would give (125/126/127). Once the
//!   container runs it execs `berth-monitor`, a small binary holding only the loop
//!   ([`monitor::loop_main`]); the container stays its child across the exec. When the
//!   container exits, `berth-monitor` execs `berth container-monitor <id> --exited <code>
//!   <back-off>` to record the exit and apply the restart policy, so the database and
//!   the runtime are only ever in memory while there is work for them.
//!
//! Health probes are `berth container-health <id>` children the loop starts on a timer;
//! each runs the check through `berth exec`, times it out and records the result and the
//! starting → healthy / unhealthy transition itself.
//!
//! A record that says "running" but whose monitor is gone (killed, or the machine
//! rebooted: the boot id differs) reads as exited; [`Engine::find`] repairs it.

pub mod db;
mod engine;
pub mod events;
pub mod fsops;
mod health;
pub mod logs;
pub mod monitor;
pub mod names;
pub mod net;
mod purge;
pub mod record;
pub mod spec;
pub mod units;
pub mod volumes;

pub use engine::{
    boot_id, exit_code_for, parse_signal, CreateRequest, Engine, ExecRequest, Launched,
};
pub use record::{
    Container, HealthConfig, ImageInfo, MountSpec, NetworkLink, RestartPolicy, RunConfig, State,
    Status,
};

/// Engine failures. `exit_code` maps them to Docker's CLI codes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("record: {0}")]
    Json(#[from] serde_json::Error),
    #[error("No such container: {0}")]
    NoSuchContainer(String),
    #[error("No such volume: {0}")]
    NoSuchVolume(String),
    #[error("multiple containers match {0:?}: use more of the id")]
    Ambiguous(String),
    #[error("Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name.")]
    NameInUse { name: String, id: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Runtime(#[from] berth_runtime::Error),
    #[error("{0}")]
    Snapshot(#[from] berth_image::SnapshotError),
    #[error("layer store: {0}")]
    Layer(String),
    #[error("networking: {0}")]
    Network(String),
    /// A detached start failed; `code` is the CLI exit code the monitor chose.
    #[error("{msg}")]
    Start { code: i32, msg: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) trait IoContext<T> {
    fn ctx(self, f: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, f: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: f(),
            source,
        })
    }
}

impl<T> IoContext<T> for nix::Result<T> {
    fn ctx(self, f: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::Io {
            context: f(),
            source: std::io::Error::from(e),
        })
    }
}

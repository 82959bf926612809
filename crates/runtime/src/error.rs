use std::path::PathBuf;

/// Everything the runtime can fail with. Messages are one line and name the offending
/// config field or path, because containerd's shim shows only the first line to users.
#[derive(thiserror::Error, Debug)]
pub enum Error {
    #[error("{path}: {msg}")]
    Config { path: String, msg: String },
    #[error("container \"{0}\" does not exist")]
    NotFound(String),
    #[error("container \"{0}\" already exists")]
    Exists(String),
    #[error("invalid container id \"{0}\": use letters, digits, '_', '+', '-' and '.'")]
    InvalidId(String),
    #[error("container \"{id}\" is {status}: {msg}")]
    BadState {
        id: String,
        status: String,
        msg: String,
    },
    // The cause is part of the message rather than a `source()`, so that `{:#}` printing
    // at the CLI does not repeat it.
    #[error("{context}: {err}")]
    Io {
        context: String,
        err: std::io::Error,
    },
    #[error("{context}: {err}")]
    Sys { context: String, err: nix::Error },
    #[error("cgroup {path}: {msg}")]
    Cgroup { path: PathBuf, msg: String },
    #[error("{0}")]
    Seccomp(String),
    #[error("hook {path}: {msg}")]
    Hook { path: PathBuf, msg: String },
    /// An error reported by the container's init process before it exec'd the user program.
    #[error("{0}")]
    Init(String),
    #[error("exec: \"{0}\": executable file not found in $PATH")]
    ExecNotFound(String),
    #[error("exec: \"{0}\": permission denied")]
    ExecPermission(String),
    /// execve itself failed after the process was started (a binary for another
    /// architecture without an emulator: ENOEXEC). runc's wording, on the container's
    /// own stderr, where `docker logs` users look for it.
    #[error("exec {program}: {reason}")]
    ExecFailed { program: String, reason: String },
    #[error("{0}")]
    Unsupported(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn config(path: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Config {
            path: path.into(),
            msg: msg.into(),
        }
    }
}

/// Attach context to io and nix errors without a closure at every call site.
pub(crate) trait Context<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for std::io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|err| Error::Io {
            context: context(),
            err,
        })
    }
}

impl<T> Context<T> for nix::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|err| Error::Sys {
            context: context(),
            err,
        })
    }
}

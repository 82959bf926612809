//! The seccomp filter: compiled (and cached) by the runtime before the clone, installed by
//! the init as its last step before exec. With SCMP_ACT_NOTIFY the kernel hands back a
//! listener fd, which goes to the spec's `listenerPath` socket (connected by the runtime
//! before the clone, since the path is not reachable after pivot_root).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::LinuxSeccomp;

use crate::error::{Error, Result};

pub use berth_seccomp::Filter;

pub fn compile(spec: &LinuxSeccomp, cache_dir: &Path) -> Result<Filter> {
    berth_seccomp::compile_cached(spec, cache_dir)
        .map_err(|e| Error::Seccomp(format!("linux.seccomp: {e}")))
}

/// Connects to `listenerPath`, if the spec names one.
pub fn listener_socket(spec: &LinuxSeccomp) -> Result<Option<OwnedFd>> {
    let Some(path) = spec.listener_path() else {
        return Ok(None);
    };
    let s = std::os::unix::net::UnixStream::connect(path).map_err(|e| {
        Error::config(
            "linux.seccomp.listenerPath",
            format!("{}: {e}", path.display()),
        )
    })?;
    Ok(Some(s.into()))
}

pub fn install(f: &Filter, listener_sock: Option<&OwnedFd>, state_json: &[u8]) -> Result<()> {
    let listener = f
        .install()
        .map_err(|e| Error::Seccomp(format!("install seccomp filter: {e}")))?;
    if let (Some(fd), Some(sock)) = (listener, listener_sock) {
        crate::console::send_fd(sock.as_fd(), fd.as_raw_fd(), state_json)?;
    }
    Ok(())
}

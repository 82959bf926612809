//! The distribution-spec client: pull images into berth's local store and push them out.
//!
//! Layout of the module:
//! - [`registry`]: one endpoint — scheme detection, auth on every request, retries.
//! - [`auth`]: `WWW-Authenticate` challenges, basic credentials, per-scope token cache.
//! - [`manifest`]: the four manifest kinds and platform selection.
//! - [`fetch`]: verified manifest and blob downloads (resumable with `Range`).
//! - [`pull`] / [`push`]: the two transfers, parallel per layer.
//! - [`recompress`]: compressing uncompressed layers for a push, remembered per layer.
//! - [`progress`]: per-blob transfer events for progress bars.
//! - [`store`]: the local store (blobs, layers, metadata) the image commands work on.
//! - [`import`]: a root filesystem tarball as a one-layer image (`berth import`).
//! - [`index`]: manifest lists made by hand from pushed images (`berth manifest`).
//! - [`credentials`]: Docker-compatible `config.json` for `login` / `logout`.
//!
//! berth's CLI is synchronous (container code paths must never run with extra threads),
//! so the public entry points ([`pull::pull`], [`push::push`], [`login`]) build a
//! current-thread tokio runtime for the duration of the call and drop it after. Layer
//! unpacking runs on tokio's blocking threads, which end with the runtime.

pub mod archive;
pub mod auth;
pub mod credentials;
pub mod error;
pub mod fetch;
pub mod import;
pub mod index;
pub mod manifest;
pub mod progress;
pub mod pull;
pub mod push;
pub mod recompress;
pub mod registries;
pub mod registry;
pub mod store;
#[cfg(test)]
mod tests;

pub use auth::Credentials;
pub use error::{Error, Result};
pub use manifest::Platform;
pub use pull::{pull, LayerStatus, PullOptions, PullReport};
pub use push::{push, push_with, BlobStatus, CompressOptions, PushReport};
pub use registry::{Options, Registry};
pub use store::{CheckReport, LocalStore, Problem, PruneReport, Removal};

/// Runs `fut` to completion on a fresh current-thread runtime.
pub(crate) fn block_on<F: std::future::Future<Output = Result<T>>, T>(fut: F) -> Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(error::io_ctx("start the async runtime"))?;
    rt.block_on(fut)
}

/// Checks credentials against the registry of `domain` (as `docker login` does).
pub fn login(domain: &str, opts: &Options) -> Result<()> {
    block_on(async {
        let reg = Registry::connect(domain, opts.clone()).await?;
        reg.login().await
    })
}

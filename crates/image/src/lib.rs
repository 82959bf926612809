//! berth-image: image references, the content store, image metadata, layer
//! unpacking and diffing, and snapshots.
//!
//! The pieces follow the on-disk layout of the berth design:
//!
//! ```text
//! <root>/berth.db                 SQLite metadata: images, tags, layers   (meta)
//! <root>/blobs/sha256/<hex>       immutable verified blobs                 (content)
//! <root>/ingest/<id>/             blobs being written, resumable           (content)
//! <root>/layers/<chainid-hex>/    each layer unpacked once, overlay lower  (layer::apply)
//! <containers>/<id>/upper,work    per-container writable layer             (snapshot)
//! ```
//!
//! Every writer follows the same crash rule: write aside, verify, fsync,
//! rename, fsync the directory, and only then record it in the database, so a
//! crash at any instant leaves nothing half-written visible.
//!
//! Layer extraction is the security-critical part: every path it touches is
//! resolved by the kernel with `openat2(RESOLVE_IN_ROOT)` relative to the layer
//! directory, so `..`, absolute paths and symlinks planted by earlier tar
//! entries cannot reach outside it (see [`layer::apply`]).
//!
//! Modules:
//! - [`reference`](mod@reference): Docker-compatible reference parsing and normalisation.
//! - [`digest`]: validated `algorithm:hex` digests and streaming hashers.
//! - [`compress`]: deterministic gzip/zstd compression of layer tars (push).
//! - [`content`]: the content store with resumable, verified ingests.
//! - [`meta`]: the SQLite metadata store.
//! - [`layer`]: chain ids, safe apply of layer tars, and diff of upper dirs.
//! - [`snapshot`]: overlay (or copy) snapshots described as mounts.

pub mod compress;
pub mod content;
pub mod digest;
pub mod layer;
pub mod meta;
pub mod reference;
pub mod snapshot;
mod spare;
mod sys;
#[cfg(test)]
mod testutil;
mod trash;

pub use content::{Claim, ContentError, ContentStore, Writer};
pub use digest::{Algorithm, Digest, DigestError};
pub use layer::{chain_id, chain_ids, Compression};
pub use meta::{ImageRecord, LayerRecord, MetaError, MetaStore, Platform};
pub use reference::{AnyReference, Reference, ReferenceError};
pub use snapshot::{Mount, Retired, SnapshotError, SnapshotMode, Snapshotter};
pub use spare::write_in_place;

/// Opens `rel` below the directory `root` with `openat2(RESOLVE_IN_ROOT)`: `..` stops at
/// `root` and absolute symlinks restart from it, so a tree someone else controls (a layer,
/// a container's root) can never lead outside. Fails with ENOSYS on kernels before 5.6
/// rather than falling back to a racy userspace walk.
pub fn open_in_root(
    root: &std::path::Path,
    rel: &std::path::Path,
    flags: libc::c_int,
) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::AsFd;
    let dir = std::fs::File::open(root)?;
    let rel = if rel.as_os_str().is_empty() {
        std::path::Path::new(".")
    } else {
        rel
    };
    sys::openat2(dir.as_fd(), rel.as_os_str(), flags, 0, sys::IN_ROOT)
}

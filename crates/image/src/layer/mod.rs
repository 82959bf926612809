//! Layers: chain ids, compression detection, safe apply and diff.
//!
//! A layer is a tar stream of filesystem changes (OCI image-spec "layer").
//! Each one is unpacked once into `layers/<chainid-hex>/` by [`apply`] and
//! then used read-only as an overlayfs lower directory; [`diff`] produces a
//! layer tar from an overlay upper directory, which a builder may then move
//! into the layer store as is ([`LayerStore::adopt`]) rather than unpack
//! the tar it just wrote.

pub mod apply;
pub mod diff;
pub(crate) mod tarutil;

#[cfg(test)]
mod apply_tests;
#[cfg(test)]
mod malicious_tests;

use std::io::{self, BufRead, Read};

use oci_spec::image::MediaType;

use crate::digest::Digest;

pub use apply::{content_size, AppliedLayer, ApplyOptions, DevicePolicy, LayerStore, UnpackStats};
pub use diff::{
    set_special, special_entry_type, write_layer, write_layer_and_adopt, write_layer_excluding,
    DiffOutput,
};

/// Layer failures.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// A filesystem or stream operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, and on which entry.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// An entry name or link target would leave the layer directory.
    #[error("unsafe path in layer: {0:?}")]
    UnsafePath(String),
    /// A whiteout names nothing valid (`.wh.`, `.wh..`, `.wh...`).
    #[error("invalid whiteout entry {0:?}")]
    InvalidWhiteout(String),
    /// A device node in a layer applied with [`DevicePolicy::Reject`].
    #[error("device node {0:?} not allowed in this layer")]
    DeviceNotAllowed(String),
    /// A tar entry type berth does not unpack (e.g. GNU sparse files).
    #[error("unsupported tar entry {path:?} of type {kind}")]
    Unsupported {
        /// Entry name.
        path: String,
        /// Tar type flag.
        kind: String,
    },
    /// The uncompressed stream does not hash to the expected diff id.
    #[error("layer diff id mismatch: expected {expected}, got {actual}")]
    DiffIdMismatch {
        /// Diff id from the image config.
        expected: Digest,
        /// Digest of the stream actually read.
        actual: Digest,
    },
    /// The kernel lacks a feature extraction depends on.
    #[error("{0}")]
    Kernel(String),
}

pub(crate) fn io_ctx(context: impl Into<String>) -> impl FnOnce(io::Error) -> LayerError {
    let context = context.into();
    move |source| LayerError::Io { context, source }
}

/// The chain id of a layer given its parent's chain id and its diff id
/// (OCI image-spec): the bottom layer's chain id is its diff id, and each
/// next one is `sha256(parent_chain_id + " " + diff_id)`.
pub fn chain_id(parent: Option<&Digest>, diff_id: &Digest) -> Digest {
    match parent {
        None => diff_id.clone(),
        Some(p) => Digest::sha256_of(format!("{p} {diff_id}").as_bytes()),
    }
}

/// Chain ids of every prefix of a layer stack given bottom first.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = chain_id(out.last(), d);
        out.push(next);
    }
    out
}

/// How a layer stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip (possibly multi-member).
    Gzip,
    /// zstd (possibly multi-frame).
    Zstd,
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

impl Compression {
    /// Detects compression from the first bytes of a stream, if conclusive.
    pub fn sniff(head: &[u8]) -> Option<Compression> {
        if head.starts_with(ZSTD_MAGIC) {
            Some(Compression::Zstd)
        } else if head.starts_with(GZIP_MAGIC) {
            Some(Compression::Gzip)
        } else if head.len() >= ZSTD_MAGIC.len() {
            Some(Compression::None)
        } else {
            None
        }
    }

    /// Compression named by an OCI or Docker layer media type.
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        match MediaType::from(media_type) {
            MediaType::ImageLayer | MediaType::ImageLayerNonDistributable => {
                return Some(Compression::None)
            }
            MediaType::ImageLayerGzip | MediaType::ImageLayerNonDistributableGzip => {
                return Some(Compression::Gzip)
            }
            MediaType::ImageLayerZstd | MediaType::ImageLayerNonDistributableZstd => {
                return Some(Compression::Zstd)
            }
            _ => {}
        }
        // Docker schema 2: application/vnd.docker.image.rootfs[.foreign].diff.tar[.gzip|.zstd]
        if media_type.ends_with(".tar.gzip") {
            Some(Compression::Gzip)
        } else if media_type.ends_with(".tar.zstd") {
            Some(Compression::Zstd)
        } else if media_type.ends_with(".diff.tar") {
            Some(Compression::None)
        } else {
            None
        }
    }

    /// Picks the compression of a stream. The magic bytes win when they are
    /// conclusive, because registries and tools do mislabel layers; the media
    /// type decides only for streams too short to sniff.
    pub fn detect(head: &[u8], media_type: Option<&str>) -> Compression {
        Compression::sniff(head)
            .or_else(|| media_type.and_then(Compression::from_media_type))
            .unwrap_or(Compression::None)
    }

    /// The OCI media type of a layer with this compression.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

/// Wraps `input` in the decoder its magic bytes (or media type) call for.
pub(crate) fn decompress<'a, R: BufRead + 'a>(
    mut input: R,
    media_type: Option<&str>,
) -> io::Result<Box<dyn Read + 'a>> {
    let head = input.fill_buf()?.to_vec();
    // fill_buf may return fewer bytes than a magic number on a slow stream;
    // that only matters for streams shorter than 4 bytes, which are not tars.
    Ok(match Compression::detect(&head, media_type) {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(input)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = Digest::sha256_of(b"a");
        let b = Digest::sha256_of(b"b");
        let c = Digest::sha256_of(b"c");
        let ids = chain_ids(&[a.clone(), b.clone(), c.clone()]);
        assert_eq!(ids[0], a);
        let ab = Digest::sha256_of(format!("{a} {b}").as_bytes());
        assert_eq!(ids[1], ab);
        assert_eq!(ids[2], Digest::sha256_of(format!("{ab} {c}").as_bytes()));
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn chain_id_known_value() {
        // Expected value computed independently with sha256sum(1) over
        // "<diffid1> <diffid2>".
        let l1: Digest = "sha256:a9d583973f65a19b1ce6a2c9c0a8a56c3c8c6bd6fa8c06f1bb8e7d16c2fd3cd3"
            .parse()
            .unwrap();
        let l2: Digest = "sha256:42e2e4e6d1dbb4d5e2c2d1e0f0d0b4a7c1f6e9c0b5d2a8f3e4c7b6a5d4e3f2a1"
            .parse()
            .unwrap();
        assert_eq!(
            chain_id(Some(&l1), &l2).to_string(),
            "sha256:afb7e8581660a5e9cea817a83da4885e83e5eaa1c799be453e515eb259bf1c09"
        );
        assert_eq!(chain_id(None, &l1), l1);
    }

    #[test]
    fn compression_detection() {
        assert_eq!(
            Compression::sniff(&[0x1f, 0x8b, 8, 0]),
            Some(Compression::Gzip)
        );
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd]),
            Some(Compression::Zstd)
        );
        assert_eq!(Compression::sniff(b"etc/passwd"), Some(Compression::None));
        assert_eq!(Compression::sniff(b""), None);
        let cases = [
            ("application/vnd.oci.image.layer.v1.tar", Compression::None),
            (
                "application/vnd.oci.image.layer.v1.tar+gzip",
                Compression::Gzip,
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+zstd",
                Compression::Zstd,
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                Compression::Gzip,
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Compression::Gzip,
            ),
            (
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                Compression::Gzip,
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar.zstd",
                Compression::Zstd,
            ),
        ];
        for (mt, want) in cases {
            assert_eq!(Compression::from_media_type(mt), Some(want), "{mt}");
            assert_eq!(
                Compression::from_media_type(want.oci_media_type()),
                Some(want)
            );
        }
        assert_eq!(Compression::from_media_type("application/json"), None);
        // Magic wins over a wrong label; the label decides only for short input.
        assert_eq!(
            Compression::detect(
                &[0x1f, 0x8b, 8, 0],
                Some("application/vnd.oci.image.layer.v1.tar")
            ),
            Compression::Gzip
        );
        assert_eq!(
            Compression::detect(b"", Some("application/vnd.oci.image.layer.v1.tar+zstd")),
            Compression::Zstd
        );
    }
}

//! Client errors. Every variant names the registry (and, where there is one, the
//! repository and digest), because a pull touches several hosts and many blobs and a bare
//! "404" or "digest mismatch" does not tell the user which.

use berth_image::{ContentError, Digest, MetaError};

/// What went wrong talking to a registry or writing what it sent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The HTTP exchange itself failed (connection, TLS, body read).
    #[error("{registry}: {context}: {}", causes(.source))]
    Http {
        /// Registry host.
        registry: String,
        /// What was being fetched or sent.
        context: String,
        /// The transport error.
        source: reqwest::Error,
    },
    /// The registry answered with an unexpected status.
    #[error("{registry}: {context}: {status}{}", fmt_message(.message))]
    Status {
        /// Registry host.
        registry: String,
        /// What was being fetched or sent.
        context: String,
        /// HTTP status code.
        status: u16,
        /// The registry's own error text, if it sent one.
        message: String,
    },
    /// A registries configuration file could not be read or parsed.
    #[error("registries configuration {0}")]
    Config(String),
    /// The manifest (tag or digest) does not exist in the repository.
    #[error("manifest unknown: {reference} not found in {registry}")]
    ManifestNotFound {
        /// Registry host.
        registry: String,
        /// The reference asked for.
        reference: String,
    },
    /// Credentials were refused or are missing.
    #[error("{registry}: unauthorized to access {repository}: {message}")]
    Unauthorized {
        /// Registry host.
        registry: String,
        /// Repository path.
        repository: String,
        /// The registry's explanation.
        message: String,
    },
    /// The token service could not be used.
    #[error("{registry}: authentication failed: {reason}")]
    Auth {
        /// Registry host.
        registry: String,
        /// Why.
        reason: String,
    },
    /// Content did not hash to the digest it was fetched or announced by.
    #[error("{location}: digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// `registry/repository`.
        location: String,
        /// Manifest, config or layer.
        what: String,
        /// Digest asked for.
        expected: Digest,
        /// Digest of what arrived.
        actual: Digest,
    },
    /// A blob is longer than its descriptor says.
    #[error("{registry}/{repository}: blob {digest} is longer than its {size} bytes")]
    BlobTooLong {
        /// Registry host.
        registry: String,
        /// Repository path.
        repository: String,
        /// The blob.
        digest: Digest,
        /// Size from its descriptor.
        size: u64,
    },
    /// The registry sent a manifest berth cannot use.
    #[error("{reference}: invalid manifest: {reason}")]
    InvalidManifest {
        /// Reference being resolved.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An index has no manifest for the wanted platform.
    #[error("{reference}: no image for platform {wanted} (available: {available})")]
    NoMatchingPlatform {
        /// Reference being resolved.
        reference: String,
        /// Requested platform.
        wanted: String,
        /// Platforms the index lists.
        available: String,
    },
    /// A `--platform` value that does not parse.
    #[error("invalid platform {0:?}: want os[/arch[/variant]]")]
    InvalidPlatform(String),
    /// The operation would break something that still uses the image.
    #[error("conflict: {0}")]
    Conflict(String),
    /// An `import --change` instruction berth cannot apply.
    #[error("invalid change {change:?}: {reason}")]
    InvalidChange {
        /// The instruction as given.
        change: String,
        /// Why it was refused.
        reason: String,
    },
    /// A local image reference that names nothing in the store.
    #[error("no such image: {0}")]
    ImageNotFound(String),
    /// The reference text does not parse.
    #[error(transparent)]
    Reference(#[from] berth_image::ReferenceError),
    /// The content store failed.
    #[error("{context}: {source}")]
    Content {
        /// What was being stored or read.
        context: String,
        /// The store error.
        source: ContentError,
    },
    /// Unpacking a layer failed.
    #[error("{context}: {source}")]
    Layer {
        /// Which layer.
        context: String,
        /// The layer error.
        source: berth_image::layer::LayerError,
    },
    /// The metadata database failed.
    #[error("image metadata: {0}")]
    Meta(#[from] MetaError),
    /// A local file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A background task panicked or was cancelled.
    #[error("internal: {0}")]
    Internal(String),
}

/// reqwest's own text says only "error sending request"; the cause ("connection
/// refused", a certificate problem) is further down the chain.
fn causes(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut next = std::error::Error::source(e);
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

fn fmt_message(m: &str) -> String {
    if m.is_empty() {
        String::new()
    } else {
        format!(" ({m})")
    }
}

/// Result with the client's error.
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn content_ctx(context: impl Into<String>) -> impl FnOnce(ContentError) -> Error {
    let context = context.into();
    move |source| Error::Content { context, source }
}

pub(crate) fn io_ctx(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

//! The distribution spec's error codes and the JSON body they travel in.

use hyper::StatusCode;

/// One of the spec's error codes (plus the status it is sent with).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    /// Not a spec code: a server-side failure (I/O), sent as 500.
    Internal,
}

impl Code {
    /// The code's spelling in the JSON body.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BlobUnknown => "BLOB_UNKNOWN",
            Code::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            Code::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Code::DigestInvalid => "DIGEST_INVALID",
            Code::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Code::ManifestInvalid => "MANIFEST_INVALID",
            Code::ManifestUnknown => "MANIFEST_UNKNOWN",
            Code::NameInvalid => "NAME_INVALID",
            Code::NameUnknown => "NAME_UNKNOWN",
            Code::SizeInvalid => "SIZE_INVALID",
            Code::Unauthorized => "UNAUTHORIZED",
            Code::Denied => "DENIED",
            Code::Unsupported => "UNSUPPORTED",
            Code::Internal => "UNKNOWN",
        }
    }

    /// The status code this error is normally sent with.
    pub fn status(self) -> StatusCode {
        match self {
            Code::BlobUnknown
            | Code::BlobUploadUnknown
            | Code::ManifestUnknown
            | Code::NameUnknown => StatusCode::NOT_FOUND,
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::Denied => StatusCode::FORBIDDEN,
            Code::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// An error answer: a spec code, a message, and the status when it differs from the
/// code's usual one (413 for oversize manifests, 416 for bad ranges).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    pub status: StatusCode,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            status: code.status(),
        }
    }

    /// The same error sent with another status.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// The JSON body: `{"errors":[{"code","message","detail"}]}`.
    pub fn body(&self) -> Vec<u8> {
        let v = serde_json::json!({"errors": [{
            "code": self.code.as_str(),
            "message": self.message,
            "detail": null,
        }]});
        v.to_string().into_bytes()
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        ApiError::new(Code::Internal, format!("storage: {e}"))
    }
}

impl From<crate::server::storage::StorageError> for ApiError {
    fn from(e: crate::server::storage::StorageError) -> Self {
        use crate::server::storage::StorageError as E;
        match e {
            E::DigestMismatch { .. } => ApiError::new(Code::DigestInvalid, e.to_string()),
            E::UploadUnknown => ApiError::new(Code::BlobUploadUnknown, e.to_string()),
            E::Io(_) => ApiError::new(Code::Internal, e.to_string()),
        }
    }
}

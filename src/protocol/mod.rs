//! Pure, I/O-free protocol logic: header grammars of tus 1.0 and of the IETF
//! resumable upload draft (`ietf`), and the values the
//! server advertises. Everything here is unit- and property-testable.

pub mod checksum;
pub mod concat;
pub mod headers;
pub mod id;
pub mod ietf;
pub mod metadata;
pub mod representation;

pub use checksum::{Checksum, ChecksumAlgorithm, Hasher};
pub use concat::UploadConcat;
pub use id::UploadId;
pub use metadata::Metadata;

/// The only tus protocol version this server speaks.
pub const TUS_VERSION: &str = "1.0.0";

/// Extensions advertised in `Tus-Extension`; comma separated without spaces
/// because TUSKit splits on "," without trimming.
pub const TUS_EXTENSIONS: &str = "creation,creation-with-upload,creation-defer-length,expiration,checksum,termination,concatenation,concatenation-unfinished";

/// Content type every PATCH body (and a POST carrying data) must declare.
pub const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";

/// Errors in client-supplied protocol headers. Every variant is a client error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("{header} must be a non-negative decimal integer, got {value:?}")]
    InvalidInteger { header: &'static str, value: String },
    #[error("Upload-Defer-Length must be 1")]
    InvalidDeferLength,
    #[error("invalid Upload-Metadata: {0}")]
    InvalidMetadata(String),
    #[error("Upload-Metadata too large: {0}")]
    MetadataTooLarge(String),
    #[error("invalid Upload-Checksum: {0}")]
    InvalidChecksum(String),
    #[error("unsupported checksum algorithm {0:?}")]
    UnsupportedChecksumAlgorithm(String),
    #[error("invalid Upload-Concat: {0}")]
    InvalidConcat(String),
    #[error("invalid upload id")]
    InvalidId,
}

//! Every stable error code tusker answers, each with the status it is
//! answered with. The mapping from errors to these codes is in
//! `http::error`; the codes are listed for users in docs/protocol.md
//! ("Error codes"), which a test below keeps in step with this file.

/// A stable error code and its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code {
    /// `ERR_...`, the first word of a plain-text error body.
    pub name: &'static str,
    /// The status answered with the code. Three answers choose another one:
    /// `/readyz` answers every code with 503, a hook's refusal takes the
    /// hook's status, and a malformed bearer token is a 400.
    pub status: u16,
}

/// Defines each code as `ERR_<NAME>` and lists them all in [`ALL`].
macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = $status:literal;)*) => {
        $(
            $(#[$doc])*
            pub const $name: Code = Code {
                name: concat!("ERR_", stringify!($name)),
                status: $status,
            };
        )*
        /// Every code, in the order of this file.
        pub const ALL: &[Code] = &[$($name),*];
    };
}

codes! {
    // Requests: headers and bodies.
    /// A header is not visible ASCII or does not parse.
    INVALID_HEADER = 400;
    /// A single-value header appears more than once.
    DUPLICATE_HEADER = 400;
    /// `Upload-Length` malformed, sent with `Upload-Defer-Length`, or below
    /// the offset.
    INVALID_UPLOAD_LENGTH = 400;
    /// `Upload-Offset` malformed.
    INVALID_UPLOAD_OFFSET = 400;
    /// `Upload-Defer-Length` other than `1`.
    INVALID_UPLOAD_DEFER_LENGTH = 400;
    /// POST without `Upload-Length` or `Upload-Defer-Length`.
    MISSING_UPLOAD_LENGTH = 400;
    /// PATCH without `Upload-Offset`.
    MISSING_UPLOAD_OFFSET = 400;
    /// A different `Upload-Length` than the one set.
    UPLOAD_LENGTH_IMMUTABLE = 400;
    /// `Upload-Metadata` malformed.
    INVALID_METADATA = 400;
    /// `Upload-Checksum` malformed.
    INVALID_CHECKSUM = 400;
    /// `Upload-Checksum` names an unsupported algorithm.
    UNSUPPORTED_CHECKSUM_ALGORITHM = 400;
    /// `Upload-Concat` malformed or naming no upload of this server.
    INVALID_CONCAT = 400;
    /// A part of a final upload does not exist.
    CONCAT_PART_NOT_FOUND = 400;
    /// A part of a final upload is not partial.
    CONCAT_PART_NOT_PARTIAL = 400;
    /// A final upload names a part twice.
    CONCAT_DUPLICATE_PART = 400;
    /// The chunked framing of a body is broken.
    MALFORMED_BODY = 400;
    /// A GET declares a body.
    UNEXPECTED_BODY = 400;
    /// A `post-receive` hook stopped the upload.
    UPLOAD_STOPPED = 400;
    /// No valid bearer token (400 for a malformed request).
    UNAUTHORIZED = 401;
    /// The token's subject does not own the upload.
    FORBIDDEN = 403;
    /// PATCH on a final upload, or a final-upload POST with a body.
    FINAL_UPLOAD_IMMUTABLE = 403;
    /// A blocking hook refused the request (the hook's status, default 403).
    REJECTED_BY_HOOK = 403;
    /// No such upload.
    UPLOAD_NOT_FOUND = 404;
    /// No such endpoint (or demo file).
    NOT_FOUND = 404;
    /// `Upload-Offset` differs from the current offset.
    MISMATCHED_OFFSET = 409;
    /// GET of an unfinished upload.
    UPLOAD_NOT_FINISHED = 409;
    /// A hook chose a destination that is taken.
    DESTINATION_TAKEN = 409;
    /// Another request took the upload over and recorded first.
    UPLOAD_TAKEN_OVER = 409;
    /// A hook chose an upload id that is taken.
    UPLOAD_ID_TAKEN = 409;
    /// The upload was terminated, stopped or expired.
    UPLOAD_GONE = 410;
    /// `Tus-Resumable` missing or unsupported.
    UNSUPPORTED_VERSION = 412;
    /// Above `--max-size`.
    MAX_SIZE_EXCEEDED = 413;
    /// The body would go past `Upload-Length`.
    UPLOAD_LENGTH_EXCEEDED = 413;
    /// One request's body is above `--max-body-size`.
    REQUEST_BODY_TOO_LARGE = 413;
    /// More than the backend can hold (10,000 parts).
    STORAGE_LIMIT_EXCEEDED = 413;
    /// Wrong `Content-Type` for upload bytes.
    INVALID_CONTENT_TYPE = 415;
    /// `Range` outside the upload.
    RANGE_NOT_SATISFIABLE = 416;
    /// The upload stayed busy for `--lock-timeout`.
    UPLOAD_LOCKED = 423;
    /// `--max-creations-per-client` reached this minute.
    TOO_MANY_CREATIONS = 429;
    /// `--max-uploads-per-client` requests are streaming.
    TOO_MANY_UPLOADS_FROM_CLIENT = 429;
    /// `Upload-Metadata` too long or with too many keys.
    METADATA_TOO_LARGE = 431;
    /// The body does not match `Upload-Checksum` (tus checksum extension).
    CHECKSUM_MISMATCH = 460;
    /// A blocking hook failed.
    HOOK_FAILED = 500;
    /// A hook chose an unsafe destination.
    HOOK_INVALID_DESTINATION = 500;
    /// A hook chose a bucket outside `--storage`'s and `--s3-allowed-buckets`.
    HOOK_BUCKET_NOT_ALLOWED = 500;
    /// A hook chose object headers that are not safe header text.
    HOOK_INVALID_STORAGE = 500;
    /// The meta store failed.
    META_STORE = 500;
    /// The record exists, its bytes do not.
    DATA_MISSING = 500;
    /// Any other data-store failure.
    STORAGE = 500;
    /// The body broke off, stalled or came too slowly.
    BODY_INCOMPLETE = 503;
    /// Out of file descriptors.
    OUT_OF_DESCRIPTORS = 503;
    /// The meta store cannot be reached (requests and `/readyz`).
    META_STORE_UNAVAILABLE = 503;
    /// Object storage keeps failing transiently.
    STORAGE_UNAVAILABLE = 503;
    /// `--max-concurrent-uploads` requests are streaming.
    TOO_MANY_UPLOADS = 503;
    /// Shutdown began.
    SHUTTING_DOWN = 503;
    /// The upload disk is full.
    INSUFFICIENT_STORAGE = 507;

    // IETF draft requests.
    /// `Upload-Draft-Interop-Version` unsupported.
    UNSUPPORTED_INTEROP_VERSION = 400;
    /// A required header is missing.
    MISSING_HEADER = 400;
    /// PATCH of a complete upload (`#completed-upload`).
    UPLOAD_COMPLETED = 400;
    /// Lengths and the complete flag disagree (`#inconsistent-upload-length`).
    INCONSISTENT_UPLOAD_LENGTH = 400;

    // `/readyz` only.
    /// The data store does not answer.
    DATA_STORE_UNAVAILABLE = 503;
    /// The stores did not answer in time.
    READINESS_TIMEOUT = 503;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    #[test]
    fn names_are_unique_and_statuses_valid() {
        let mut seen = HashSet::new();
        for code in ALL {
            assert!(seen.insert(code.name), "{} defined twice", code.name);
            assert!(
                actix_web::http::StatusCode::from_u16(code.status)
                    .is_ok_and(|s| s.is_client_error() || s.is_server_error()),
                "{} has no error status",
                code.name
            );
        }
    }

    /// The `| status | `ERR_X` | ...` rows of docs/protocol.md's "Error
    /// codes" tables: every code is documented with its status, and the
    /// docs list no code that does not exist.
    #[test]
    fn every_code_is_documented_with_its_status() {
        let doc = include_str!("../../docs/protocol.md");
        let mut documented: HashMap<&str, Vec<&str>> = HashMap::new();
        for line in doc.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            if let [_, status, name, ..] = cells[..] {
                if let Some(name) = name.strip_prefix('`').and_then(|n| n.strip_suffix('`')) {
                    if name.starts_with("ERR_") {
                        documented.entry(name).or_default().push(status);
                    }
                }
            }
        }
        for code in ALL {
            let statuses = documented
                .get(code.name)
                .unwrap_or_else(|| panic!("{} is not in docs/protocol.md", code.name));
            let status = code.status.to_string();
            assert!(
                statuses.iter().any(|s| s.split(' ').any(|w| w == status)),
                "docs/protocol.md gives {} as {statuses:?}, the code says {status}",
                code.name
            );
        }
        let known: HashSet<&str> = ALL.iter().map(|c| c.name).collect();
        for name in documented.keys() {
            assert!(
                known.contains(name),
                "docs/protocol.md lists unknown {name}"
            );
        }
    }
}

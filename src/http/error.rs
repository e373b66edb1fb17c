//! The one mapping from errors of every layer to an HTTP status, a stable
//! error code and a plain-text body (`ERR_CODE: message`), or an RFC 9457
//! problem-details body for the IETF draft's problem types.

use super::code::{self, Code};
use crate::data::DataError;
use crate::meta::MetaError;
use crate::protocol::ietf::{IetfError, InteropVersion, Problem};
use crate::protocol::{ProtocolError, TUS_VERSION};
use crate::upload::UploadError;
use actix_web::http::header::{HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use std::fmt;

/// A body replacing the plain-text one.
#[derive(Debug)]
pub enum ErrorBody {
    /// Sent as is (a hook's own answer).
    Raw(String),
    /// An RFC 9457 `application/problem+json` document; `code` and
    /// `detail` are added.
    Problem(serde_json::Value),
}

/// An error answered to a client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable, documented code (`ERR_MISMATCHED_OFFSET` style).
    pub code: &'static str,
    pub message: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// A body other than the plain `CODE: message` (boxed: errors travel
    /// in `Result`s and should stay small).
    pub body: Option<Box<ErrorBody>>,
}

impl ApiError {
    /// An error answered with `code` and its status.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::from_u16(code.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code: code.name,
            message: message.into(),
            headers: Vec::new(),
            body: None,
        }
    }

    /// Answers with `status` instead of the code's own (see [`Code::status`]).
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn with_header(mut self, name: &'static str, value: impl ToString) -> Self {
        if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
            self.headers.push((HeaderName::from_static(name), v));
        }
        self
    }

    /// Answers with an RFC 9457 problem document.
    pub fn with_problem(mut self, problem: serde_json::Value) -> Self {
        self.body = Some(Box::new(ErrorBody::Problem(problem)));
        self
    }

    /// 412: missing or unsupported `Tus-Resumable`.
    pub fn unsupported_version() -> Self {
        Self::new(
            code::UNSUPPORTED_VERSION,
            format!("Tus-Resumable must be {TUS_VERSION}"),
        )
        .with_header("tus-version", TUS_VERSION)
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(
            code::INVALID_CONTENT_TYPE,
            "Content-Type must be application/offset+octet-stream",
        )
    }

    pub fn not_found() -> Self {
        Self::new(code::UPLOAD_NOT_FOUND, "upload not found")
    }

    /// 401 for a request without a valid token: `WWW-Authenticate: Bearer`
    /// with the RFC 6750 error attributes, and an empty body.
    pub fn unauthorized(error: Option<(&'static str, &str)>) -> Self {
        let challenge = match error {
            None => "Bearer realm=\"tusker\"".to_owned(),
            Some((code, description)) => {
                format!("Bearer realm=\"tusker\", error=\"{code}\", error_description=\"{description}\"")
            }
        };
        let mut err = Self::new(code::UNAUTHORIZED, "a valid bearer token is required")
            .with_header("www-authenticate", challenge);
        if let Some(("invalid_request", _)) = error {
            err = err.with_status(StatusCode::BAD_REQUEST);
        }
        err.body = Some(Box::new(ErrorBody::Raw(String::new())));
        err
    }

    /// 403 for a valid token of a subject that does not own the upload:
    /// nothing about the upload, and an empty body.
    pub fn forbidden() -> Self {
        let mut err = Self::new(code::FORBIDDEN, "access denied").with_header(
            "www-authenticate",
            "Bearer realm=\"tusker\", error=\"insufficient_scope\"",
        );
        err.body = Some(Box::new(ErrorBody::Raw(String::new())));
        err
    }

    fn internal(code: Code, err: &dyn fmt::Display) -> Self {
        tracing::error!(error = %err, code = code.name, "internal error");
        Self::new(code, "internal server error; see the server log")
    }
}

impl ApiError {
    /// The response a hook asked for when it rejected a request (default
    /// 403 with a stable code when it gave none).
    fn from_hook(answer: &crate::hooks::HookHttpResponse) -> Self {
        let mut err = ApiError::new(code::REJECTED_BY_HOOK, "rejected by the application");
        if let Some(status) = answer
            .status_code
            .and_then(|s| StatusCode::from_u16(s).ok())
            .filter(|s| s.is_client_error() || s.is_server_error())
        {
            err = err.with_status(status);
        }
        err.body = answer.body.clone().map(|b| Box::new(ErrorBody::Raw(b)));
        for (name, value) in answer.header.iter().flatten() {
            if let (Ok(n), Ok(v)) = (
                HeaderName::try_from(name.as_str()),
                HeaderValue::from_str(value),
            ) {
                err.headers.push((n, v));
            }
        }
        err
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status);
        for (name, value) in &self.headers {
            res.insert_header((name.clone(), value.clone()));
        }
        match self.body.as_deref() {
            Some(ErrorBody::Problem(problem)) => {
                let mut body = problem.clone();
                body["code"] = self.code.into();
                body["detail"] = self.message.as_str().into();
                res.insert_header((CONTENT_TYPE, crate::protocol::ietf::PROBLEM_JSON));
                res.body(body.to_string())
            }
            Some(ErrorBody::Raw(body)) => {
                if !self.headers.iter().any(|(n, _)| n == CONTENT_TYPE) {
                    res.insert_header((CONTENT_TYPE, "text/plain; charset=utf-8"));
                }
                res.body(body.clone())
            }
            None => {
                res.insert_header((CONTENT_TYPE, "text/plain; charset=utf-8"));
                res.body(format!("{self}\n"))
            }
        }
    }
}

impl From<ProtocolError> for ApiError {
    /// tus request headers.
    fn from(e: ProtocolError) -> Self {
        let code = match &e {
            ProtocolError::InvalidInteger { header, .. }
                if header.eq_ignore_ascii_case("upload-length") =>
            {
                code::INVALID_UPLOAD_LENGTH
            }
            ProtocolError::InvalidInteger { header, .. }
                if header.eq_ignore_ascii_case("upload-offset") =>
            {
                code::INVALID_UPLOAD_OFFSET
            }
            ProtocolError::InvalidInteger { .. } => code::INVALID_HEADER,
            ProtocolError::InvalidDeferLength => code::INVALID_UPLOAD_DEFER_LENGTH,
            ProtocolError::InvalidMetadata(_) => code::INVALID_METADATA,
            ProtocolError::MetadataTooLarge(_) => code::METADATA_TOO_LARGE,
            ProtocolError::InvalidChecksum(_) => code::INVALID_CHECKSUM,
            ProtocolError::UnsupportedChecksumAlgorithm(_) => code::UNSUPPORTED_CHECKSUM_ALGORITHM,
            ProtocolError::InvalidConcat(_) => code::INVALID_CONCAT,
            ProtocolError::InvalidId => return ApiError::not_found(),
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<IetfError> for ApiError {
    /// IETF draft request headers.
    fn from(e: IetfError) -> Self {
        let code = match &e {
            IetfError::UnsupportedVersion(_) => code::UNSUPPORTED_INTEROP_VERSION,
            IetfError::Missing("Upload-Offset") => code::MISSING_UPLOAD_OFFSET,
            IetfError::Missing(_) => code::MISSING_HEADER,
            IetfError::Syntax { .. } | IetfError::Type { .. } => code::INVALID_HEADER,
        };
        ApiError::new(code, e.to_string())
    }
}

/// Logs running out of descriptors at most once a second: the condition
/// comes in bursts, one per request.
fn warn_rate_limited(e: &UploadError) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = crate::model::now_secs();
    if LAST.swap(now, Ordering::Relaxed) != now {
        tracing::warn!(error = %e, "out of file descriptors; answering 503");
    }
}

impl From<UploadError> for ApiError {
    /// Engine errors as tus answers them; [`ietf_engine_error`] maps the
    /// few the draft words differently.
    fn from(e: UploadError) -> Self {
        use UploadError as E;
        let code = match &e {
            E::NotFound => return ApiError::not_found(),
            E::Gone => code::UPLOAD_GONE,
            E::OffsetMismatch { current, .. } => {
                return ApiError::new(code::MISMATCHED_OFFSET, e.to_string())
                    .with_header("upload-offset", current)
            }
            E::Locked => {
                return ApiError::new(code::UPLOAD_LOCKED, e.to_string())
                    .with_header("retry-after", 1)
            }
            E::TooLarge { .. } => code::MAX_SIZE_EXCEEDED,
            E::ExceedsLength { .. } => code::UPLOAD_LENGTH_EXCEEDED,
            E::LengthImmutable(_) => code::UPLOAD_LENGTH_IMMUTABLE,
            E::LengthBelowOffset { .. } => code::INVALID_UPLOAD_LENGTH,
            E::InconsistentLength { .. } => code::INCONSISTENT_UPLOAD_LENGTH,
            E::ChecksumMismatch => code::CHECKSUM_MISMATCH,
            E::FinalNotPatchable => code::FINAL_UPLOAD_IMMUTABLE,
            E::NotFinished => code::UPLOAD_NOT_FINISHED,
            E::PartNotFound(_) => code::CONCAT_PART_NOT_FOUND,
            E::PartNotPartial(_) => code::CONCAT_PART_NOT_PARTIAL,
            E::Body(_) => {
                // Usually the client is gone; if not, a 5xx makes it resume.
                return ApiError::new(code::BODY_INCOMPLETE, e.to_string())
                    .with_header("retry-after", 1);
            }
            E::HookRejected(answer) => return ApiError::from_hook(answer),
            E::HookFailed(_) => {
                // The receiver's URL and error stay in the log.
                tracing::error!(error = %e, "hook failed");
                return ApiError::new(
                    code::HOOK_FAILED,
                    "the application's hook receiver failed; see the server log",
                );
            }
            E::Forbidden => return ApiError::forbidden(),
            E::DuplicatePart(_) => code::CONCAT_DUPLICATE_PART,
            E::StoppedByHook => code::UPLOAD_STOPPED,
            E::InvalidDestination(_) => code::HOOK_INVALID_DESTINATION,
            E::BucketNotAllowed(_) => code::HOOK_BUCKET_NOT_ALLOWED,
            E::InvalidStorageChoice(_) => code::HOOK_INVALID_STORAGE,
            E::DestinationTaken(_) | E::Data(DataError::AlreadyExists(_)) => {
                code::DESTINATION_TAKEN
            }
            E::Meta(MetaError::AlreadyExists(_)) => code::UPLOAD_ID_TAKEN,
            E::Meta(MetaError::Unavailable(_)) => {
                tracing::warn!(error = %e, "meta store unavailable");
                return ApiError::new(
                    code::META_STORE_UNAVAILABLE,
                    "upload state temporarily unavailable; retry later",
                )
                .with_header(RETRY_AFTER.as_str(), 5);
            }
            // Another request (here or on another instance) took the upload
            // over and wrote first: nothing of this one was recorded; the
            // client resumes from HEAD.
            E::Meta(MetaError::Stale(_)) => code::UPLOAD_TAKEN_OVER,
            E::Data(DataError::Unavailable(_)) => {
                tracing::warn!(error = %e, "storage unavailable");
                return ApiError::new(
                    code::STORAGE_UNAVAILABLE,
                    "storage temporarily unavailable; retry later",
                )
                .with_header(RETRY_AFTER.as_str(), 5);
            }
            E::Data(DataError::NoSpace(_))
            | E::Meta(MetaError::NoSpace(_))
            | E::InsufficientStorage { .. }
            | E::BelowReserve { .. } => {
                tracing::warn!(error = %e, "storage full");
                // tus clients retry 5xx: they resume once space is back.
                return ApiError::new(code::INSUFFICIENT_STORAGE, e.to_string())
                    .with_header(RETRY_AFTER.as_str(), 60);
            }
            E::Data(DataError::NoDescriptors(_)) => {
                metrics::counter!(crate::telemetry::DESCRIPTORS_EXHAUSTED).increment(1);
                warn_rate_limited(&e);
                return ApiError::new(
                    code::OUT_OF_DESCRIPTORS,
                    "the server is out of file descriptors; retry later",
                )
                .with_header(RETRY_AFTER.as_str(), 1);
            }
            E::Data(DataError::LimitExceeded(_)) => code::STORAGE_LIMIT_EXCEEDED,
            E::Data(DataError::Missing(_)) => return ApiError::internal(code::DATA_MISSING, &e),
            E::Meta(err) => return ApiError::internal(code::META_STORE, err),
            E::Data(err) => return ApiError::internal(code::STORAGE, err),
        };
        ApiError::new(code, e.to_string())
    }
}

/// The code of each IETF problem type.
fn problem_code(p: &Problem) -> Code {
    match p {
        Problem::MismatchingOffset { .. } => code::MISMATCHED_OFFSET,
        Problem::CompletedUpload => code::UPLOAD_COMPLETED,
        Problem::InconsistentLength => code::INCONSISTENT_UPLOAD_LENGTH,
    }
}

/// The IETF problem `p`, as problem details from interop version 6 and as
/// the plain error (same status) before.
pub fn ietf_problem(v: InteropVersion, p: Problem, message: String) -> ApiError {
    let err = ApiError::new(problem_code(&p), message);
    let err = match p {
        Problem::MismatchingOffset { expected, .. } => err.with_header("upload-offset", expected),
        _ => err,
    };
    if v.is_v6_or_later() {
        err.with_problem(p.body())
    } else {
        err
    }
}

/// Engine errors in the IETF draft's terms; everything else maps as for
/// tus ([`From<UploadError>`]).
pub fn ietf_engine_error(v: InteropVersion, e: UploadError) -> ApiError {
    match e {
        UploadError::OffsetMismatch { requested, current } => ietf_problem(
            v,
            Problem::MismatchingOffset {
                expected: current,
                provided: requested,
            },
            e.to_string(),
        ),
        UploadError::InconsistentLength { .. }
        | UploadError::LengthImmutable(_)
        | UploadError::LengthBelowOffset { .. }
        | UploadError::ExceedsLength { .. } => {
            ietf_problem(v, Problem::InconsistentLength, e.to_string())
        }
        e => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A problem's status in the draft is the status of its code.
    #[test]
    fn problem_statuses_match_their_codes() {
        for p in [
            Problem::MismatchingOffset {
                expected: 1,
                provided: 2,
            },
            Problem::CompletedUpload,
            Problem::InconsistentLength,
        ] {
            assert_eq!(p.status(), problem_code(&p).status, "{p:?}");
        }
    }
}

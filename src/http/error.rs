//! The one mapping from errors of every layer to an HTTP status, a stable
//! error code and a plain-text body (`ERR_CODE: message`), or an RFC 9457
//! problem-details body for the IETF draft's problem types.

use crate::data::DataError;
use crate::meta::MetaError;
use crate::protocol::{ProtocolError, TUS_VERSION};
use crate::upload::UploadError;
use actix_web::http::header::{HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use std::fmt;

/// tus checksum extension: the body did not match `Upload-Checksum`.
pub const CHECKSUM_MISMATCH: u16 = 460;

/// The meta store cannot be reached (requests and `/readyz`).
pub const META_UNAVAILABLE: &str = "ERR_META_STORE_UNAVAILABLE";

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
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
            body: None,
        }
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

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 412: missing or unsupported `Tus-Resumable`.
    pub fn unsupported_version() -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "ERR_UNSUPPORTED_VERSION",
            format!("Tus-Resumable must be {TUS_VERSION}"),
        )
        .with_header("tus-version", TUS_VERSION)
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "ERR_INVALID_CONTENT_TYPE",
            "Content-Type must be application/offset+octet-stream",
        )
    }

    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "ERR_UPLOAD_NOT_FOUND",
            "upload not found",
        )
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
        let status = match error {
            Some(("invalid_request", _)) => StatusCode::BAD_REQUEST,
            _ => StatusCode::UNAUTHORIZED,
        };
        let mut err = Self::new(
            status,
            "ERR_UNAUTHORIZED",
            "a valid bearer token is required",
        )
        .with_header("www-authenticate", challenge);
        err.body = Some(Box::new(ErrorBody::Raw(String::new())));
        err
    }

    /// 403 for a valid token of a subject that does not own the upload:
    /// nothing about the upload, and an empty body.
    pub fn forbidden() -> Self {
        let mut err = Self::new(StatusCode::FORBIDDEN, "ERR_FORBIDDEN", "access denied")
            .with_header(
                "www-authenticate",
                "Bearer realm=\"tusker\", error=\"insufficient_scope\"",
            );
        err.body = Some(Box::new(ErrorBody::Raw(String::new())));
        err
    }

    fn internal(code: &'static str, err: &dyn fmt::Display) -> Self {
        tracing::error!(error = %err, code, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            code,
            "internal server error; see the server log",
        )
    }
}

impl ApiError {
    /// The response a hook asked for when it rejected a request (default
    /// 403 with a stable code when it gave none).
    fn from_hook(answer: &crate::hooks::HookHttpResponse) -> Self {
        let status = answer
            .status_code
            .and_then(|s| StatusCode::from_u16(s).ok())
            .filter(|s| s.is_client_error() || s.is_server_error())
            .unwrap_or(StatusCode::FORBIDDEN);
        let mut err = ApiError::new(
            status,
            "ERR_REJECTED_BY_HOOK",
            "rejected by the application",
        );
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
    fn from(e: ProtocolError) -> Self {
        let code = match &e {
            ProtocolError::InvalidInteger { header, .. }
                if header.eq_ignore_ascii_case("upload-length") =>
            {
                "ERR_INVALID_UPLOAD_LENGTH"
            }
            ProtocolError::InvalidInteger { header, .. }
                if header.eq_ignore_ascii_case("upload-offset") =>
            {
                "ERR_INVALID_UPLOAD_OFFSET"
            }
            ProtocolError::InvalidInteger { .. } => "ERR_INVALID_HEADER",
            ProtocolError::InvalidDeferLength => "ERR_INVALID_UPLOAD_DEFER_LENGTH",
            ProtocolError::InvalidMetadata(_) => "ERR_INVALID_METADATA",
            ProtocolError::MetadataTooLarge(_) => {
                return ApiError::new(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "ERR_METADATA_TOO_LARGE",
                    e.to_string(),
                )
            }
            ProtocolError::InvalidChecksum(_) => "ERR_INVALID_CHECKSUM",
            ProtocolError::UnsupportedChecksumAlgorithm(_) => "ERR_UNSUPPORTED_CHECKSUM_ALGORITHM",
            ProtocolError::InvalidConcat(_) => "ERR_INVALID_CONCAT",
            ProtocolError::InvalidId => return ApiError::not_found(),
        };
        ApiError::bad_request(code, e.to_string())
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
    fn from(e: UploadError) -> Self {
        use UploadError as E;
        let (status, code) = match &e {
            E::NotFound => return ApiError::not_found(),
            E::Gone => (StatusCode::GONE, "ERR_UPLOAD_GONE"),
            E::OffsetMismatch { current, .. } => {
                return ApiError::new(StatusCode::CONFLICT, "ERR_MISMATCHED_OFFSET", e.to_string())
                    .with_header("upload-offset", current)
            }
            E::Locked => {
                return ApiError::new(StatusCode::LOCKED, "ERR_UPLOAD_LOCKED", e.to_string())
                    .with_header("retry-after", 1)
            }
            E::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "ERR_MAX_SIZE_EXCEEDED"),
            E::ExceedsLength { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "ERR_UPLOAD_LENGTH_EXCEEDED")
            }
            E::LengthImmutable(_) => (StatusCode::BAD_REQUEST, "ERR_UPLOAD_LENGTH_IMMUTABLE"),
            E::LengthBelowOffset { .. } => (StatusCode::BAD_REQUEST, "ERR_INVALID_UPLOAD_LENGTH"),
            E::InconsistentLength { .. } => {
                (StatusCode::BAD_REQUEST, "ERR_INCONSISTENT_UPLOAD_LENGTH")
            }
            E::ChecksumMismatch => (
                StatusCode::from_u16(CHECKSUM_MISMATCH).unwrap_or(StatusCode::BAD_REQUEST),
                "ERR_CHECKSUM_MISMATCH",
            ),
            E::FinalNotPatchable => (StatusCode::FORBIDDEN, "ERR_FINAL_UPLOAD_IMMUTABLE"),
            E::NotFinished => (StatusCode::CONFLICT, "ERR_UPLOAD_NOT_FINISHED"),
            E::PartNotFound(_) => (StatusCode::BAD_REQUEST, "ERR_CONCAT_PART_NOT_FOUND"),
            E::PartNotPartial(_) => (StatusCode::BAD_REQUEST, "ERR_CONCAT_PART_NOT_PARTIAL"),
            E::Body(_) => {
                // Usually the client is gone; if not, a 5xx makes it resume.
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ERR_BODY_INCOMPLETE",
                    e.to_string(),
                )
                .with_header("retry-after", 1);
            }
            E::HookRejected(answer) => return ApiError::from_hook(answer),
            E::HookFailed(_) => {
                // The receiver's URL and error stay in the log.
                tracing::error!(error = %e, "hook failed");
                return ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "ERR_HOOK_FAILED",
                    "the application's hook receiver failed; see the server log",
                );
            }
            E::Forbidden => return ApiError::forbidden(),
            E::DuplicatePart(_) => (StatusCode::BAD_REQUEST, "ERR_CONCAT_DUPLICATE_PART"),
            E::StoppedByHook => (StatusCode::BAD_REQUEST, "ERR_UPLOAD_STOPPED"),
            E::InvalidDestination(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "ERR_HOOK_INVALID_DESTINATION",
            ),
            E::DestinationTaken(_) | E::Data(DataError::AlreadyExists(_)) => {
                (StatusCode::CONFLICT, "ERR_DESTINATION_TAKEN")
            }
            E::Meta(MetaError::AlreadyExists(_)) => (StatusCode::CONFLICT, "ERR_UPLOAD_ID_TAKEN"),
            E::Meta(MetaError::Unavailable(_)) => {
                tracing::warn!(error = %e, "meta store unavailable");
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    META_UNAVAILABLE,
                    "upload state temporarily unavailable; retry later",
                )
                .with_header(RETRY_AFTER.as_str(), 5);
            }
            // Another request (here or on another instance) took the upload
            // over and wrote first: nothing of this one was recorded; the
            // client resumes from HEAD.
            E::Meta(MetaError::Stale(_)) => (StatusCode::CONFLICT, "ERR_UPLOAD_TAKEN_OVER"),
            E::Data(DataError::Unavailable(_)) => {
                tracing::warn!(error = %e, "storage unavailable");
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ERR_STORAGE_UNAVAILABLE",
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
                return ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "ERR_INSUFFICIENT_STORAGE",
                    e.to_string(),
                )
                .with_header(RETRY_AFTER.as_str(), 60);
            }
            E::Data(DataError::NoDescriptors(_)) => {
                metrics::counter!(crate::telemetry::DESCRIPTORS_EXHAUSTED).increment(1);
                warn_rate_limited(&e);
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ERR_OUT_OF_DESCRIPTORS",
                    "the server is out of file descriptors; retry later",
                )
                .with_header(RETRY_AFTER.as_str(), 1);
            }
            E::Meta(err) => return ApiError::internal("ERR_META_STORE", err),
            E::Data(DataError::LimitExceeded(_)) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "ERR_STORAGE_LIMIT_EXCEEDED")
            }
            E::Data(DataError::Missing(_)) => return ApiError::internal("ERR_DATA_MISSING", &e),
            E::Data(err) => return ApiError::internal("ERR_STORAGE", err),
        };
        ApiError::new(status, code, e.to_string())
    }
}

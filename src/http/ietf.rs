//! IETF "Resumable Uploads for HTTP" handlers (interop versions 3 to 9), on
//! the same engine, uploads and locks as tus 1.0. Requests reach them when
//! they carry `Upload-Draft-Interop-Version` (see `http::app`).

use super::error::{ietf_engine_error as engine_error, ietf_problem};
use super::interim::Interim;
use super::request::{content_length, has_body, header, request_info, upload_id, upload_url};
use super::{code, ApiError, AppState};
use crate::model::{now_secs, UploadInfo};
use crate::protocol::ietf::{self, IetfError, InteropVersion, Problem, UploadLimit};
use crate::protocol::UploadId;
use crate::upload::{AppendRequest, NewConcat, NewUpload, UploadError};
use actix_web::http::header::{
    ContentDisposition, HeaderMap, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE, LOCATION,
    TRANSFER_ENCODING,
};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};
use base64::Engine as _;

/// The interop version of the request (the routing guard saw the header).
fn version(req: &HttpRequest) -> Result<InteropVersion, ApiError> {
    let raw = header(req.headers(), "upload-draft-interop-version")?.unwrap_or_default();
    Ok(InteropVersion::parse(raw)?)
}

fn sf_u64(hdrs: &HeaderMap, name: &'static str) -> Result<Option<u64>, ApiError> {
    Ok(header(hdrs, name)?
        .map(|v| ietf::parse_u64(name, v))
        .transpose()?)
}

fn completes(v: InteropVersion, hdrs: &HeaderMap) -> Result<bool, ApiError> {
    Ok(v.request_completes(
        header(hdrs, "upload-complete")?,
        header(hdrs, "upload-incomplete")?,
    )?)
}

fn inconsistent(v: InteropVersion, message: String) -> ApiError {
    ietf_problem(v, Problem::InconsistentLength, message)
}

fn limit(state: &AppState, info: Option<&UploadInfo>) -> UploadLimit {
    let config = state.engine.config();
    let lifetime = match info {
        Some(info) if info.finished => None,
        Some(info) => info.expires_at.map(|at| at.saturating_sub(now_secs())),
        None => config.expire_after.map(|d| d.as_secs()),
    };
    UploadLimit {
        max_size: config.max_size,
        max_append_size: state.settings.max_body_size,
        lifetime,
    }
}

/// What an error of creation or append carries besides its own headers:
/// on a 413, `Upload-Limit` with the size limits (v6+; the draft requires
/// it when a limit is the cause, so the client can retry smaller), and from
/// v9 `Upload-Complete: ?0`, because the answer comes from the upload
/// resource, not from the processing of a complete upload.
fn resumable_error(v: InteropVersion, state: &AppState, e: ApiError) -> ApiError {
    let mut e = e;
    if e.status == StatusCode::PAYLOAD_TOO_LARGE {
        let sizes = UploadLimit {
            lifetime: None,
            ..limit(state, None)
        };
        if let Some(value) = sizes.header_value(v) {
            e = e.with_header("upload-limit", value);
        }
    }
    if v.errors_say_incomplete() {
        e = e.with_header("upload-complete", ietf::format_bool(false));
    }
    e
}

/// Headers every upload-state response carries.
fn upload_state(
    res: &mut HttpResponseBuilder,
    v: InteropVersion,
    state: &AppState,
    info: &UploadInfo,
) {
    let complete = info.finished || info.is_complete();
    res.insert_header(("upload-offset", info.offset.to_string()))
        .insert_header(v.complete_header(complete));
    if v.is_v6_or_later() {
        if let Some(length) = info.length {
            res.insert_header(("upload-length", length.to_string()));
        }
    }
    if let Some(value) = limit(state, Some(info)).header_value(v) {
        res.insert_header(("upload-limit", value));
    }
}

/// Upload metadata from the creation request's representation headers,
/// so that GET serves the upload as described: `filetype` from
/// `Content-Type`, `filename` from `Content-Disposition` (the draft
/// recommends `inline; filename=…`). Values are stored base64-encoded as
/// tus metadata; a header that does not parse, or a name that
/// [`ietf::recorded_filename`] refuses, is ignored.
fn metadata(hdrs: &HeaderMap) -> Option<String> {
    let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
    let mut pairs = Vec::new();
    if let Some(ct) = hdrs.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        let ct = ct.trim();
        if !ct.is_empty() && !ietf::is_partial_upload(ct) && ct.len() <= 255 {
            pairs.push(format!("filetype {}", b64(ct)));
        }
    }
    if let Some(name) = hdrs.get(CONTENT_DISPOSITION).and_then(filename) {
        pairs.push(format!("filename {}", b64(&name)));
    }
    (!pairs.is_empty()).then(|| pairs.join(","))
}

/// The filename of a `Content-Disposition`: `filename*` when it is UTF-8
/// (or ASCII), else `filename`.
fn filename(value: &actix_web::http::header::HeaderValue) -> Option<String> {
    let cd = ContentDisposition::from_raw(value).ok()?;
    let ext = cd.get_filename_ext().and_then(|ext| {
        let charset = ext.charset.to_string();
        (charset.eq_ignore_ascii_case("utf-8") || charset.eq_ignore_ascii_case("us-ascii"))
            .then(|| String::from_utf8(ext.value.clone()).ok())
            .flatten()
    });
    let name = ext.or_else(|| cd.get_filename().map(str::to_owned))?;
    ietf::recorded_filename(&name).map(str::to_owned)
}

/// Sends `104 Upload Resumption Supported` on the request's connection.
/// Failure only costs the early Location, so it is logged, not returned.
async fn send_104(req: &HttpRequest, v: InteropVersion, location: &str, limit: &UploadLimit) {
    let Some(interim) = req.conn_data::<Interim>() else {
        tracing::debug!("no interim channel on this connection; 104 not sent");
        return;
    };
    let Some(bytes) = ietf::interim_104(v, location, limit) else {
        return;
    };
    if let Err(e) = interim.send(&bytes).await {
        tracing::info!(error = %e, "could not send 104 Upload Resumption Supported");
    }
}

/// Upload creation (POST, PUT or PATCH on the upload collection).
pub async fn create(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let v = version(&req)?;
    creation(v, &req, body, &state)
        .await
        .map_err(|e| resumable_error(v, &state, e))
}

async fn creation(
    v: InteropVersion,
    req: &HttpRequest,
    body: web::Payload,
    state: &AppState,
) -> Result<HttpResponse, ApiError> {
    // Nothing may await before the 104 is handed over (see http::interim).
    let hdrs = req.headers();
    let complete = completes(v, hdrs)?;
    let upload_length = if v.is_v6_or_later() {
        sf_u64(hdrs, "upload-length")?
    } else {
        None
    };
    let chunked = hdrs.contains_key(TRANSFER_ENCODING);
    let body_length = content_length(hdrs)?.or(if chunked { None } else { Some(0) });
    if let (Some(total), Some(body)) = (upload_length, body_length) {
        if body > total || (complete && body != total) {
            return Err(inconsistent(
                v,
                format!("Upload-Length {total} disagrees with a body of {body} bytes"),
            ));
        }
    }
    let length = upload_length.or(if complete { body_length } else { None });
    // Limits (shutdown, concurrent uploads, body size) as for tus; checked
    // synchronously so the 104 still goes out before any await.
    let slot = super::slots::begin_upload(state, req)?;
    let (body, body_limit) = super::body_limit::limit_body(
        super::interim::continue_on_read(req, body),
        state.settings.max_body_size,
    );
    let id = UploadId::generate();
    let location = upload_url(req, &state.settings, &id);
    send_104(req, v, &location, &limit(state, None)).await;

    let new = NewUpload {
        id: Some(id),
        length,
        metadata: metadata(hdrs),
        concat: NewConcat::None,
    };
    let with_location = |e: ApiError| e.with_header("location", &location);
    let mut info = state
        .engine
        .create(new, &request_info(req))
        .await
        .map_err(|e| engine_error(v, e))?;
    if !info.finished && (body_length != Some(0) || complete) {
        let append = AppendRequest {
            offset: 0,
            length: None,
            checksum: None,
            content_length: body_length,
            complete,
        };
        match state
            .engine
            .append(&info.id, append, body, &request_info(req))
            .await
        {
            Ok(after) => info = after,
            Err(e) if body_limit.tripped() => {
                drop(slot);
                return Err(with_location(body_limit.error(e)));
            }
            Err(UploadError::Body(e)) => {
                // The client is probably gone; what arrived is kept and
                // resumable at the offset HEAD reports.
                tracing::info!(upload = %info.id, error = %e, "creation body broke off");
                if let Ok(after) = state.engine.head(&info.id, &request_info(req)).await {
                    info = after;
                }
            }
            Err(e) => return Err(with_location(engine_error(v, e))),
        }
    }
    let mut res = HttpResponse::Created();
    res.insert_header((LOCATION, location.as_str()));
    upload_state(&mut res, v, state, &info);
    Ok(res.finish())
}

/// Offset retrieval (HEAD).
pub async fn head(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let v = version(&req)?;
    retrieve(v, &req, &state).await
}

/// GET on an upload. From version 9 it is an offset retrieval: the HEAD
/// answer, without content. In earlier versions GET is outside the draft,
/// so the request is the download it is without the header (also when the
/// version is not one this server speaks).
pub async fn get(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    match version(&req) {
        Ok(v) if v.get_retrieves_offset() => {
            // As for downloads: a GET declaring a body is refused, or
            // actix would drain it behind the response.
            if has_body(req.headers()) {
                return Err(ApiError::new(
                    code::UNEXPECTED_BODY,
                    "a GET request carries no body",
                ));
            }
            retrieve(v, &req, &state).await
        }
        _ => super::download::get(req, state).await,
    }
}

/// The offset retrieval answer: `204` with `Upload-Offset`, the complete
/// flag, `Upload-Length` when known (v6+), `Upload-Limit` (v6+) and
/// `Cache-Control: no-store`.
async fn retrieve(
    v: InteropVersion,
    req: &HttpRequest,
    state: &AppState,
) -> Result<HttpResponse, ApiError> {
    let id = upload_id(req)?;
    let info = state
        .engine
        .head(&id, &request_info(req))
        .await
        .map_err(|e| engine_error(v, e))?;
    let mut res = HttpResponse::NoContent();
    res.insert_header((CACHE_CONTROL, "no-store"));
    upload_state(&mut res, v, state, &info);
    Ok(res.finish())
}

/// Upload append (PATCH on an upload).
pub async fn append(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let v = version(&req)?;
    appending(v, &req, body, &state)
        .await
        .map_err(|e| resumable_error(v, &state, e))
}

async fn appending(
    v: InteropVersion,
    req: &HttpRequest,
    body: web::Payload,
    state: &AppState,
) -> Result<HttpResponse, ApiError> {
    let id = upload_id(req)?;
    let hdrs = req.headers();
    if v.is_v6_or_later() && !header(hdrs, "content-type")?.is_some_and(ietf::is_partial_upload) {
        return Err(ApiError::new(
            code::INVALID_CONTENT_TYPE,
            "Content-Type must be application/partial-upload",
        ));
    }
    let offset = sf_u64(hdrs, "upload-offset")?.ok_or(IetfError::Missing("Upload-Offset"))?;
    let complete = completes(v, hdrs)?;
    let length = if v.is_v6_or_later() {
        sf_u64(hdrs, "upload-length")?
    } else {
        None
    };
    // Access first: the completed-upload answer reveals the offset.
    state
        .engine
        .check_access(&id, &request_info(req))
        .await
        .map_err(|e| engine_error(v, e))?;
    let current = state
        .engine
        .load(&id)
        .await
        .map_err(|e| engine_error(v, e))?;
    if current.finished {
        let body_length = content_length(hdrs)?;
        let err = if v.late_body_is_inconsistent_length() && body_length != Some(0) {
            inconsistent(
                v,
                "the upload is already complete; no more bytes can be appended".into(),
            )
        } else {
            ietf_problem(
                v,
                Problem::CompletedUpload,
                "the upload is already complete".into(),
            )
        };
        return Err(err.with_header("upload-offset", current.offset));
    }
    let append = AppendRequest {
        offset,
        length,
        checksum: None,
        content_length: content_length(hdrs)?,
        complete,
    };
    let slot = super::slots::begin_upload(state, req)?;
    let (body, body_limit) = super::body_limit::limit_body(
        super::interim::continue_on_read(req, body),
        state.settings.max_body_size,
    );
    let appended = state
        .engine
        .append(&id, append, body, &request_info(req))
        .await;
    drop(slot);
    let info = appended.map_err(|e| {
        if body_limit.tripped() {
            body_limit.error(e)
        } else {
            engine_error(v, e)
        }
    })?;
    let mut res = HttpResponse::NoContent();
    upload_state(&mut res, v, state, &info);
    Ok(res.finish())
}

/// Upload cancellation. Answers 204 in every version (version 8 no longer
/// requires it, and it stays valid).
pub async fn cancel(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let v = version(&req)?;
    let id = upload_id(&req)?;
    state
        .engine
        .terminate(&id, &request_info(&req))
        .await
        .map_err(|e| engine_error(v, e))?;
    Ok(HttpResponse::NoContent().finish())
}

/// OPTIONS: the server's limits (version 6 and later), and in versions 6
/// to 8 `Accept-Patch`.
pub async fn options(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let v = version(&req)?;
    let mut res = HttpResponse::Ok();
    if v.options_accept_patch() {
        res.insert_header(("accept-patch", ietf::PARTIAL_UPLOAD));
    }
    if let Some(value) = limit(&state, None).header_value(v) {
        res.insert_header(("upload-limit", value));
    }
    Ok(res.finish())
}

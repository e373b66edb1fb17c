//! tus 1.0 handlers: OPTIONS, POST (creation), HEAD, PATCH, DELETE.

use super::request::{
    concat_ids, content_length, has_body, has_offset_content_type, header, request_info,
    require_tus, u64_header, upload_id, upload_path, upload_url,
};
use super::{body_limit, code, slots, ApiError, AppState};
use crate::model::{Concat, UploadInfo};
use crate::protocol::{self, checksum, headers, Checksum, Metadata, UploadConcat};
use crate::upload::{AppendRequest, NewConcat, NewUpload};
use actix_web::http::header::{CACHE_CONTROL, LOCATION};
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};

/// OPTIONS: what this server supports. No `Tus-Resumable` needed.
pub async fn options(state: web::Data<AppState>) -> HttpResponse {
    let mut res = HttpResponse::Ok();
    res.insert_header(("tus-version", protocol::TUS_VERSION))
        .insert_header(("tus-extension", protocol::TUS_EXTENSIONS))
        .insert_header(("tus-checksum-algorithm", checksum::SUPPORTED_ALGORITHMS));
    if let Some(max) = state.engine.config().max_size {
        res.insert_header(("tus-max-size", max.to_string()));
    }
    res.finish()
}

/// Adds `Upload-Expires` when the upload expires.
fn expires(res: &mut HttpResponseBuilder, info: &UploadInfo) {
    if let Some(at) = info.expires_at {
        res.insert_header(("upload-expires", headers::http_date(at)));
    }
}

fn checksum(req: &HttpRequest) -> Result<Option<Checksum>, ApiError> {
    Ok(header(req.headers(), "upload-checksum")?
        .map(Checksum::parse)
        .transpose()?)
}

/// POST: creation, creation-with-upload, creation-defer-length and
/// concatenation.
pub async fn create(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    require_tus(&req)?;
    let hdrs = req.headers();
    let concat = header(hdrs, "upload-concat")?
        .map(UploadConcat::parse)
        .transpose()?;
    let metadata = match header(hdrs, "upload-metadata")? {
        Some(raw) => {
            Metadata::parse_within(raw, state.settings.max_metadata_size)?;
            Some(raw.trim().to_owned()).filter(|r| !r.is_empty())
        }
        None => None,
    };
    let with_body = has_body(hdrs);
    if with_body && !has_offset_content_type(hdrs) {
        return Err(ApiError::unsupported_media_type());
    }
    let checksum = checksum(&req)?;
    let new = new_upload(&req, &state, concat, metadata, with_body)?;
    let content_length = content_length(hdrs)?;
    let info = if with_body {
        let append = AppendRequest {
            offset: 0,
            length: None,
            checksum,
            content_length,
            complete: false,
        };
        create_with_body(&req, body, &state, new, append).await?
    } else {
        state.engine.create(new, &request_info(&req)).await?
    };
    let mut res = HttpResponse::Created();
    res.insert_header((LOCATION, upload_url(&req, &state.settings, &info.id)));
    if !info.is_final() || info.finished {
        res.insert_header(("upload-offset", info.offset.to_string()));
    }
    expires(&mut res, &info);
    Ok(res.finish())
}

/// The upload a POST asks for: a final upload made of its parts, or one
/// with a length (or a deferred one), partial or not.
fn new_upload(
    req: &HttpRequest,
    state: &AppState,
    concat: Option<UploadConcat>,
    metadata: Option<String>,
    with_body: bool,
) -> Result<NewUpload, ApiError> {
    let hdrs = req.headers();
    if let Some(UploadConcat::Final(urls)) = concat {
        if with_body {
            return Err(ApiError::new(
                code::FINAL_UPLOAD_IMMUTABLE,
                "a final upload cannot carry data",
            ));
        }
        // Its length is the sum of its parts; the client must not send one.
        if hdrs.contains_key("upload-length") {
            return Err(ApiError::new(
                code::INVALID_UPLOAD_LENGTH,
                "a final upload takes its length from its parts; send no Upload-Length",
            ));
        }
        return Ok(NewUpload {
            id: None,
            length: None,
            metadata,
            concat: NewConcat::Final(concat_ids(&state.settings, &urls)?),
        });
    }
    let length = u64_header(hdrs, "upload-length")?;
    let deferred = header(hdrs, "upload-defer-length")?
        .map(headers::parse_defer_length)
        .transpose()?
        .is_some();
    match (length, deferred) {
        (Some(_), true) => {
            return Err(ApiError::new(
                code::INVALID_UPLOAD_LENGTH,
                "send either Upload-Length or Upload-Defer-Length, not both",
            ))
        }
        (None, false) => {
            return Err(ApiError::new(
                code::MISSING_UPLOAD_LENGTH,
                "Upload-Length or Upload-Defer-Length: 1 is required",
            ))
        }
        _ => {}
    }
    Ok(NewUpload {
        id: None,
        length,
        metadata,
        concat: match concat {
            Some(UploadConcat::Partial) => NewConcat::Partial,
            _ => NewConcat::None,
        },
    })
}

/// Creation with data: the limits (body size, concurrent uploads) apply
/// before anything is created. When the upload was created but its data
/// not (fully) stored, the answer is its URL and what was kept, so the
/// client resumes with PATCH instead of starting over.
async fn create_with_body(
    req: &HttpRequest,
    body: web::Payload,
    state: &AppState,
    new: NewUpload,
    append: AppendRequest,
) -> Result<UploadInfo, ApiError> {
    let slot = slots::begin_upload(state, req)?;
    let ctx = request_info(req);
    let (body, _) = body_limit::limit_body(
        super::interim::continue_on_read(req, body),
        state.settings.max_body_size,
    );
    let (created, appended) = state
        .engine
        .create_with_body(new, append, body, &ctx)
        .await?;
    drop(slot);
    Ok(match appended {
        Ok(after) => after,
        Err(e) => {
            tracing::warn!(upload = %created.id, error = %e, "data sent with creation was not (fully) stored");
            state
                .engine
                .head(&created.id, &ctx)
                .await
                .unwrap_or(created)
        }
    })
}

/// HEAD: the offset to resume from, and everything the upload was created
/// with.
pub async fn head(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    require_tus(&req)?;
    let id = upload_id(&req)?;
    let info = state.engine.head(&id, &request_info(&req)).await?;
    let mut res = HttpResponse::Ok();
    res.insert_header((CACHE_CONTROL, "no-store"));
    // A final upload has no offset until it is assembled.
    if !info.is_final() || info.finished {
        res.insert_header(("upload-offset", info.offset.to_string()));
    }
    match info.length {
        Some(length) => {
            res.insert_header(("upload-length", length.to_string()));
        }
        None if !info.is_final() => {
            res.insert_header(("upload-defer-length", "1"));
        }
        None => {}
    }
    if let Some(raw) = &info.metadata {
        res.insert_header(("upload-metadata", raw.as_str()));
    }
    match &info.concat {
        Concat::None => {}
        Concat::Partial => {
            res.insert_header(("upload-concat", "partial"));
        }
        Concat::Final { parts } => {
            let urls: Vec<String> = parts
                .iter()
                .map(|p| upload_path(&state.settings, p))
                .collect();
            res.insert_header(("upload-concat", format!("final;{}", urls.join(" "))));
        }
    }
    expires(&mut res, &info);
    Ok(res.finish())
}

/// PATCH: append the body at `Upload-Offset`.
pub async fn patch(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    require_tus(&req)?;
    let id = upload_id(&req)?;
    let hdrs = req.headers();
    if !has_offset_content_type(hdrs) {
        return Err(ApiError::unsupported_media_type());
    }
    let offset = u64_header(hdrs, "upload-offset")?
        .ok_or_else(|| ApiError::new(code::MISSING_UPLOAD_OFFSET, "Upload-Offset is required"))?;
    let append = AppendRequest {
        offset,
        length: u64_header(hdrs, "upload-length")?,
        checksum: checksum(&req)?,
        content_length: content_length(hdrs)?,
        complete: false,
    };
    let slot = slots::begin_upload(&state, &req)?;
    let (body, limit) = body_limit::limit_body(
        super::interim::continue_on_read(&req, body),
        state.settings.max_body_size,
    );
    let appended = state
        .engine
        .append(&id, append, body, &request_info(&req))
        .await;
    drop(slot);
    let info = appended.map_err(|e| limit.error(e))?;
    let mut res = HttpResponse::NoContent();
    res.insert_header(("upload-offset", info.offset.to_string()));
    expires(&mut res, &info);
    Ok(res.finish())
}

/// DELETE: termination.
pub async fn terminate(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    require_tus(&req)?;
    let id = upload_id(&req)?;
    state.engine.terminate(&id, &request_info(&req)).await?;
    Ok(HttpResponse::NoContent().finish())
}

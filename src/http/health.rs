//! `/healthz` (the process serves) and `/readyz` (both stores answer).

use super::{code, ApiError, AppState};
use crate::meta::MetaError;
use crate::upload::UploadError;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use std::time::Duration;

/// Paths of the health endpoints (outside the upload base path and routed
/// before it, so a base path of `/` keeps working).
pub const HEALTHZ: &str = "/healthz";
pub const READYZ: &str = "/readyz";

/// How long `/readyz` waits for the stores.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// `GET /healthz`: the process is up and serving.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body("ok\n")
}

/// `GET /readyz`: both stores answer (503 with the failing store's error
/// code otherwise, and while shutting down).
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let unready =
        |c, message: String| ApiError::new(c, message).with_status(StatusCode::SERVICE_UNAVAILABLE);
    if state.engine.is_stopping() {
        return Err(unready(
            code::SHUTTING_DOWN,
            "server is shutting down".into(),
        ));
    }
    match tokio::time::timeout(READY_TIMEOUT, state.engine.ready()).await {
        Ok(Ok(())) => Ok(HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body("ready\n")),
        Ok(Err(
            e @ (UploadError::BelowReserve { .. } | UploadError::Meta(MetaError::NoSpace(_))),
        )) => Err(unready(code::INSUFFICIENT_STORAGE, e.to_string())),
        Ok(Err(UploadError::Meta(e))) => Err(unready(code::META_STORE_UNAVAILABLE, e.to_string())),
        Ok(Err(e)) => Err(unready(code::DATA_STORE_UNAVAILABLE, e.to_string())),
        Err(_) => Err(unready(
            code::READINESS_TIMEOUT,
            format!("stores did not answer within {}s", READY_TIMEOUT.as_secs()),
        )),
    }
}

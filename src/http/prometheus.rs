//! `/metrics`: the Prometheus text exposition.

use super::AppState;
use actix_web::{web, HttpResponse};

/// Path of the metrics endpoint (routed before the upload base path).
pub const METRICS: &str = "/metrics";

/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}

//! actix-web glue: routing, typed header parsing, CORS, method override and
//! the mapping of errors to responses. Protocol logic lives in `protocol`,
//! upload logic in `upload`.

pub mod download;
pub mod error;
pub mod ops;
pub mod range;
pub mod request;
pub mod tus;

use crate::upload::Engine;
use actix_cors::Cors;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::DefaultHeaders;
use actix_web::{web, App, HttpResponse};
use std::sync::Arc;

pub use error::ApiError;

/// Settings of the HTTP front end.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Path prefix of the upload endpoints, starting and ending with `/`.
    pub base_path: String,
    /// Honour `Forwarded` / `X-Forwarded-*` when building URLs.
    pub behind_proxy: bool,
    /// Allowed CORS origins; `*` allows any.
    pub cors_allow_origin: Vec<String>,
    /// Largest body of one request carrying upload bytes; `None` for none.
    pub max_body_size: Option<u64>,
}

/// Shared state of every worker.
pub struct AppState {
    pub engine: Arc<Engine>,
    pub settings: HttpSettings,
    /// This server's metrics, rendered on `/metrics`.
    pub metrics: crate::telemetry::Metrics,
    /// Slots for requests streaming into uploads (`--max-concurrent-uploads`).
    pub upload_slots: Option<Arc<tokio::sync::Semaphore>>,
}

/// Request headers a browser may send (CORS preflight).
const ALLOWED_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "origin",
    "x-requested-with",
    "x-request-id",
    "x-http-method-override",
    "tus-resumable",
    "upload-length",
    "upload-offset",
    "upload-metadata",
    "upload-defer-length",
    "upload-concat",
    "upload-checksum",
    "upload-complete",
    "upload-incomplete",
    "upload-draft-interop-version",
    "if-none-match",
    "range",
];

/// Response headers a browser may read.
const EXPOSED_HEADERS: &[&str] = &[
    "location",
    "upload-offset",
    "upload-length",
    "upload-metadata",
    "upload-expires",
    "upload-defer-length",
    "upload-concat",
    "upload-complete",
    "upload-limit",
    "upload-draft-interop-version",
    "tus-resumable",
    "tus-version",
    "tus-extension",
    "tus-max-size",
    "tus-checksum-algorithm",
    "content-range",
    "content-disposition",
    "etag",
    "x-request-id",
];

fn cors(settings: &HttpSettings) -> Cors {
    let mut cors = Cors::default()
        .allowed_methods(["POST", "GET", "HEAD", "PATCH", "DELETE", "OPTIONS"])
        .allowed_headers(ALLOWED_HEADERS.iter().copied())
        .expose_headers(EXPOSED_HEADERS.iter().copied())
        .max_age(86400);
    if settings.cors_allow_origin.iter().any(|o| o == "*") || settings.cors_allow_origin.is_empty()
    {
        cors = cors.allow_any_origin();
    } else {
        for origin in &settings.cors_allow_origin {
            cors = cors.allowed_origin(origin);
        }
    }
    cors
}

/// `X-HTTP-Method-Override` on a POST replaces the method (for clients and
/// proxies that cannot send PATCH or DELETE).
fn method_override(req: &mut ServiceRequest) {
    if req.method() != Method::POST {
        return;
    }
    let Some(method) = req
        .headers()
        .get("x-http-method-override")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Method::from_bytes(v.trim().to_ascii_uppercase().as_bytes()).ok())
    else {
        return;
    };
    req.head_mut().method = method;
}

/// Builds the application for one worker.
pub fn app(
    state: web::Data<AppState>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let trimmed = state.settings.base_path.trim_end_matches('/').to_owned();
    let collection: Vec<String> = if trimmed.is_empty() {
        vec!["/".into()]
    } else {
        vec![trimmed.clone(), format!("{trimmed}/")]
    };
    let cors = cors(&state.settings);
    App::new()
        .app_data(state)
        .wrap_fn(|mut req, srv| {
            use actix_web::dev::Service;
            method_override(&mut req);
            srv.call(req)
        })
        .wrap(cors)
        .wrap(
            DefaultHeaders::new()
                .add((
                    HeaderName::from_static("tus-resumable"),
                    HeaderValue::from_static(crate::protocol::TUS_VERSION),
                ))
                .add((
                    HeaderName::from_static("x-content-type-options"),
                    HeaderValue::from_static("nosniff"),
                )),
        )
        .wrap_fn(ops::observe)
        // Operations endpoints first: with base path `/` the upload routes
        // would take these paths as upload ids.
        .service(
            web::resource(ops::HEALTHZ)
                .route(web::get().to(ops::healthz))
                .route(web::head().to(ops::healthz)),
        )
        .service(
            web::resource(ops::READYZ)
                .route(web::get().to(ops::readyz))
                .route(web::head().to(ops::readyz)),
        )
        .route(ops::METRICS, web::get().to(ops::metrics))
        .service(
            web::resource(collection)
                .route(web::post().to(tus::create))
                .route(web::method(Method::OPTIONS).to(tus::options)),
        )
        .service(
            web::resource(format!("{trimmed}/{{id}}"))
                .route(web::head().to(tus::head))
                .route(web::patch().to(tus::patch))
                .route(web::delete().to(tus::terminate))
                .route(web::get().to(download::get))
                .route(web::method(Method::OPTIONS).to(tus::options)),
        )
        .default_service(web::to(not_found))
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        actix_web::http::StatusCode::NOT_FOUND,
        "ERR_NOT_FOUND",
        "no such endpoint",
    ))
}

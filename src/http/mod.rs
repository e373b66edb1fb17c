//! actix-web glue: routing, typed header parsing, CORS, method override and
//! the mapping of errors to responses. Protocol logic lives in `protocol`,
//! upload logic in `upload`.

pub mod access_log;
pub mod admission;
pub mod body_limit;
pub mod code;
pub mod demo;
pub mod download;
pub mod error;
pub mod forwarded;
pub mod health;
pub mod ietf;
pub mod interim;
pub mod prometheus;
pub mod range;
pub mod request;
pub mod slots;
pub mod tus;

use crate::upload::Engine;
use actix_cors::Cors;
use actix_web::body::MessageBody;
use actix_web::dev::{AppConfig, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::guard::{self, GuardContext};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::DefaultHeaders;
use actix_web::{web, App, HttpResponse};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use error::ApiError;

/// Settings of the HTTP front end.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Path prefix of the upload endpoints, starting and ending with `/`.
    pub base_path: String,
    /// Honour the forwarded headers of `forwarded` when building URLs and
    /// telling clients apart.
    pub behind_proxy: bool,
    /// The one forwarded-header scheme trusted behind a proxy.
    pub forwarded: crate::config::ForwardedHeaders,
    /// Allowed CORS origins; `*` allows any.
    pub cors_allow_origin: Vec<String>,
    /// Largest body of one request carrying upload bytes; `None` for none.
    pub max_body_size: Option<u64>,
    /// Longest `Upload-Metadata` header accepted, in bytes.
    pub max_metadata_size: usize,
    /// The demo page's directory when `--demo` is on.
    pub demo_dir: Option<std::path::PathBuf>,
    /// `--download-redirect`: GET answers 307 to a presigned URL valid
    /// this long, where the data store can make one.
    pub download_redirect: Option<Duration>,
}

/// Limits on a connection's idle and slow phases.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionTimeouts {
    /// Complete request headers must arrive within this; zero disables it.
    pub client_request: Duration,
    /// An idle keep-alive connection is closed after this; zero disables
    /// keep-alive (one request per connection).
    pub keep_alive: Duration,
}

/// Shared state of every worker.
pub struct AppState {
    pub engine: Arc<Engine>,
    pub settings: HttpSettings,
    /// This server's metrics, rendered on `/metrics`.
    pub metrics: crate::telemetry::Metrics,
    /// Slots for requests streaming into uploads (`--max-concurrent-uploads`).
    pub upload_slots: Option<Arc<tokio::sync::Semaphore>>,
    /// Per-client caps on requests streaming into uploads
    /// (`--max-uploads-per-client`).
    pub client_slots: Option<Arc<slots::ClientSlots>>,
    /// Creations per client and minute (`--max-creations-per-client`).
    pub creation_limit: Option<Arc<admission::CreationLimit>>,
    /// JWT verification (`--auth-jwt-*`).
    pub auth: Option<Arc<crate::auth::Verifier>>,
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
    "www-authenticate",
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
    let demo_dir = state.settings.demo_dir.clone();
    App::new()
        .app_data(state)
        .wrap_fn(|mut req, srv| {
            use actix_web::dev::Service;
            use futures_util::future::{ready, Either, FutureExt};
            match admission::admit(&mut req) {
                Ok(()) => Either::Left(
                    srv.call(req)
                        .map(|r| r.map(ServiceResponse::map_into_boxed_body)),
                ),
                Err(e) => Either::Right(ready(Ok(req.error_response(e)))),
            }
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
        .wrap_fn(access_log::observe)
        // Operations endpoints first: with base path `/` the upload routes
        // would take these paths as upload ids.
        .service(
            web::resource(health::HEALTHZ)
                .route(web::get().to(health::healthz))
                .route(web::head().to(health::healthz)),
        )
        .service(
            web::resource(health::READYZ)
                .route(web::get().to(health::readyz))
                .route(web::head().to(health::readyz)),
        )
        .route(prometheus::METRICS, web::get().to(prometheus::metrics))
        // The demo page, also outside the base path and before it.
        .configure(|cfg| demo::configure(cfg, demo_dir.as_deref()))
        .service(
            web::resource(collection)
                .route(web::post().guard(ietf_guard()).to(ietf::create))
                .route(web::put().guard(ietf_guard()).to(ietf::create))
                .route(web::patch().guard(ietf_guard()).to(ietf::create))
                .route(
                    web::method(Method::OPTIONS)
                        .guard(ietf_guard())
                        .to(ietf::options),
                )
                .route(web::post().to(tus::create))
                .route(web::method(Method::OPTIONS).to(tus::options)),
        )
        .service(
            web::resource(format!("{trimmed}/{{id}}"))
                .route(web::head().guard(ietf_guard()).to(ietf::head))
                .route(web::patch().guard(ietf_guard()).to(ietf::append))
                .route(web::delete().guard(ietf_guard()).to(ietf::cancel))
                .route(web::get().guard(ietf_guard()).to(ietf::get))
                .route(
                    web::method(Method::OPTIONS)
                        .guard(ietf_guard())
                        .to(ietf::options),
                )
                .route(web::head().to(tus::head))
                .route(web::patch().to(tus::patch))
                .route(web::delete().to(tus::terminate))
                .route(web::get().to(download::get))
                .route(web::method(Method::OPTIONS).to(tus::options)),
        )
        .default_service(web::to(not_found))
}

/// Requests of the IETF draft carry `Upload-Draft-Interop-Version`; all
/// others are tus 1.0.
fn ietf_guard() -> impl guard::Guard {
    guard::fn_guard(|ctx: &GuardContext<'_>| {
        ctx.head().headers().contains_key(interim::IETF_HEADER)
    })
}

/// The per-worker service for accepted TCP connections: HTTP/1.1 (as
/// `HttpServer` would serve it: its graceful-shutdown signal and half-close
/// handling) over an [`interim::InterimIo`], so handlers can send 1xx
/// responses. `timeouts` bound slow and idle clients.
pub fn service(
    state: web::Data<AppState>,
    local: SocketAddr,
    shutdown: actix_server::GracefulShutdownSignal,
    timeouts: ConnectionTimeouts,
) -> impl ServiceFactory<
    actix_rt::net::TcpStream,
    Config = (),
    Response = (),
    Error = actix_http::error::DispatchError,
    InitError = (),
> {
    use actix_service::{fn_service, map_config, ServiceFactoryExt};
    // What HttpServer passes to App: not behind TLS, host = local address.
    let app_config = move |_| AppConfig::__priv_test_new(false, local.to_string(), local);
    let http = actix_http::HttpService::build()
        .graceful_shutdown_signal(move || {
            let shutdown = shutdown.clone();
            async move { shutdown.notified().await }
        })
        .keep_alive(if timeouts.keep_alive.is_zero() {
            actix_http::KeepAlive::Disabled
        } else {
            actix_http::KeepAlive::Timeout(timeouts.keep_alive)
        })
        .client_request_timeout(timeouts.client_request)
        .client_disconnect_timeout(Duration::from_secs(1))
        .h1_allow_half_closed(true)
        .local_addr(local)
        .expect(fn_service(interim::expect))
        .on_connect_ext(|io: &interim::InterimIo, ext| {
            ext.insert(io.handle());
        })
        .finish(map_config(app(state), app_config));
    fn_service(|io: actix_rt::net::TcpStream| async move {
        // Interim responses are small writes that must not wait for the
        // peer's delayed ACK.
        let _ = io.set_nodelay(true);
        let peer = io.peer_addr().ok();
        Ok((
            interim::InterimIo::new(io),
            actix_http::Protocol::Http1,
            peer,
        ))
    })
    .and_then(http)
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(code::NOT_FOUND, "no such endpoint"))
}

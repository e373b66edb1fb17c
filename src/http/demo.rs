//! The browser demo (`--demo`): a static page under `/demo/` that uploads
//! with tus-js-client to this server's upload endpoint.
//!
//! Only a fixed list of files is served, read from the demo directory at
//! request time: the page itself (`index.html`, `app.js`, `style.css`) and
//! tus-js-client's browser bundle from `node_modules`, which npm installs
//! (`npm ci --prefix demo`); nothing third-party is vendored. The routes
//! live outside the upload base path and are registered before it.

use super::{code, AppState};
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use actix_web::{web, HttpResponse};
use std::path::{Path, PathBuf};

/// Where the demo is served.
pub const PREFIX: &str = "/demo";

/// tus-js-client's browser bundle, relative to the demo directory.
const TUS_BUNDLE: &str = "node_modules/tus-js-client/dist/tus.min.js";

/// URL path under [`PREFIX`] → (file relative to the demo directory,
/// media type). Nothing else is ever read from the directory.
const FILES: &[(&str, &str, &str)] = &[
    ("/", "index.html", "text/html; charset=utf-8"),
    ("/app.js", "app.js", "text/javascript; charset=utf-8"),
    ("/style.css", "style.css", "text/css; charset=utf-8"),
    (
        "/vendor/tus.min.js",
        TUS_BUNDLE,
        "text/javascript; charset=utf-8",
    ),
    (
        "/vendor/tus.min.js.map",
        "node_modules/tus-js-client/dist/tus.min.js.map",
        "application/json",
    ),
];

/// The page may load only its own files and talk only to this origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// Why the demo cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(
        "demo directory {} has no index.html (set --demo-dir to the repository's demo/ directory)",
        .0.display()
    )]
    NoPage(PathBuf),
    #[error(
        "demo dependencies are not installed: {} is missing; run `npm ci --prefix {}` first",
        .bundle.display(),
        .dir.display()
    )]
    NoDependencies { dir: PathBuf, bundle: PathBuf },
    #[error(
        "the demo path {PREFIX}/ is inside the upload base path {0}; choose another --base-path"
    )]
    PathClash(String),
}

/// Checks at start that everything the demo serves is there, so a missing
/// `npm ci` fails loudly instead of as a broken page.
pub fn check(dir: &Path, base_path: &str) -> Result<(), DemoError> {
    if base_path.starts_with(&format!("{PREFIX}/")) {
        return Err(DemoError::PathClash(base_path.to_owned()));
    }
    if !dir.join("index.html").is_file() {
        return Err(DemoError::NoPage(dir.to_owned()));
    }
    let bundle = dir.join(TUS_BUNDLE);
    if !bundle.is_file() {
        return Err(DemoError::NoDependencies {
            dir: dir.to_owned(),
            bundle,
        });
    }
    Ok(())
}

/// Registers the demo routes when `--demo` is on.
pub fn configure(cfg: &mut web::ServiceConfig, dir: Option<&Path>) {
    if dir.is_none() {
        return;
    }
    cfg.route(
        PREFIX,
        web::get().to(|| async {
            HttpResponse::PermanentRedirect()
                .insert_header((LOCATION, format!("{PREFIX}/")))
                .finish()
        }),
    )
    .route(&format!("{PREFIX}/config.json"), web::get().to(config))
    .route(&format!("{PREFIX}{{rest:/.*}}"), web::get().to(file));
}

/// What the page needs to know: where uploads go.
async fn config(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({ "endpoint": state.settings.base_path }))
}

async fn file(state: web::Data<AppState>, rest: web::Path<String>) -> HttpResponse {
    let Some(dir) = state.settings.demo_dir.as_deref() else {
        return HttpResponse::NotFound().finish();
    };
    let Some(&(_, relative, media_type)) = FILES.iter().find(|(path, _, _)| *path == *rest) else {
        return HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .body(format!("{}: no such demo file", code::NOT_FOUND.name));
    };
    let path = dir.join(relative);
    match tokio::fs::read(&path).await {
        Ok(body) => HttpResponse::Ok()
            .insert_header((CONTENT_TYPE, media_type))
            .insert_header((CACHE_CONTROL, "no-cache"))
            .insert_header(("content-security-policy", CSP))
            .body(body),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "demo file unreadable");
            HttpResponse::NotFound()
                .content_type("text/plain; charset=utf-8")
                .body(format!(
                    "{}: demo file missing on the server",
                    code::NOT_FOUND.name
                ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_reports_missing_pieces() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            check(dir.path(), "/files/"),
            Err(DemoError::NoPage(_))
        ));
        std::fs::write(dir.path().join("index.html"), "<!doctype html>").unwrap();
        let err = check(dir.path(), "/files/").unwrap_err();
        assert!(err.to_string().contains("npm ci --prefix"), "{err}");
        let dist = dir.path().join("node_modules/tus-js-client/dist");
        std::fs::create_dir_all(&dist).unwrap();
        std::fs::write(dist.join("tus.min.js"), "").unwrap();
        check(dir.path(), "/files/").unwrap();
        check(dir.path(), "/").unwrap();
        assert!(matches!(
            check(dir.path(), "/demo/"),
            Err(DemoError::PathClash(_))
        ));
    }
}

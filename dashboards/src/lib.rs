//! # shoplake-dashboards: the marketing team's web app, served by shoplake itself
//!
//! The pages (`app/`: plain ES modules, no framework, no build step) are built into the binary by
//! `build.rs`, with Apache ECharts installed from npm at the version `app/package-lock.json` pins.
//! [`router`] serves them at `/dashboards/` (and `/` redirects there) on the query address of
//! `shoplake up` and `shoplake query`. The pages read the named reports (`GET /v1/reports/NAME`),
//! the stream's last hour (`GET /v1/live/pulse`, served by the live engines) and the pipeline's
//! state ([`pipeline`]: `GET /v1/pipeline`), signed in with a browser session
//! (`shoplake_server::auth::session`).
//!
//! The files are public (they hold no data); every API call they make goes through the guard.
//! Each answer carries a content security policy that lets the page load only its own scripts
//! and talk only to its own origin, and no other site may frame it.
//!
//! Set `SHOPLAKE_DASHBOARDS_DIR` to a checkout's `dashboards/app` to serve the files from disk
//! instead (editing the pages without rebuilding).
//!
//! Why these dependencies: `shoplake-query` for the tables' files and versions, and
//! `shoplake-transform` for the stage's counters (the pipeline page); `axum` and
//! `shoplake-server` serve the routes with their access rules; `flate2` (build only) gzips the
//! files once at build time, and `serde_json` (at build time too) reads the pinned ECharts
//! version; `chrono`, `serde_json`, `parking_lot` and `tokio` for the pipeline page's rate of
//! events.

pub mod pipeline;

use std::path::PathBuf;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use shoplake_server::auth::{Access, Routes};

pub use pipeline::Pipeline;

/// A file of the app, built in.
#[derive(Debug)]
pub struct Asset {
    /// Below `/dashboards/`.
    pub path: &'static str,
    pub content_type: &'static str,
    pub etag: &'static str,
    pub body: &'static [u8],
    pub gzip: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// The built-in file at `path` (`""` is `index.html`).
pub fn asset(path: &str) -> Option<&'static Asset> {
    let path = if path.is_empty() { "index.html" } else { path };
    ASSETS.iter().find(|a| a.path == path)
}

/// What the page may load and talk to: its own files and API only (ECharts writes inline styles,
/// hence `'unsafe-inline'` for styles, never for scripts).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn with_page_headers(mut response: Response, content_type: &'static str) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    // Revalidated on every load (a new binary may carry new files), answered 304 when unchanged.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn not_found(path: &str) -> Response {
    shoplake_server::ApiError::not_found("not_found", format!("no file /dashboards/{path}"))
        .into_response()
}

fn serve_built_in(path: &str, headers: &HeaderMap) -> Response {
    let Some(asset) = asset(path) else {
        return not_found(path);
    };
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == asset.etag));
    let mut response = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let gzip = headers
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
        if gzip {
            let mut r = asset.gzip.into_response();
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            r
        } else {
            asset.body.into_response()
        }
    };
    response
        .headers_mut()
        .insert(header::ETAG, HeaderValue::from_static(asset.etag));
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    with_page_headers(response, asset.content_type)
}

/// A file from a checkout's `app/` (`SHOPLAKE_DASHBOARDS_DIR`), for editing the pages.
fn serve_from_disk(dir: &std::path::Path, path: &str) -> Response {
    let path = if path.is_empty() { "index.html" } else { path };
    if path
        .split('/')
        .any(|part| part == ".." || part.starts_with('.'))
    {
        return not_found(path);
    }
    let file = if path == "vendor/echarts.min.js" {
        dir.join("node_modules/echarts/dist/echarts.min.js")
    } else {
        dir.join(path)
    };
    let content_type = match path.rsplit('.').next().unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        _ => return not_found(path),
    };
    match std::fs::read(&file) {
        Ok(bytes) => with_page_headers(bytes.into_response(), content_type),
        Err(_) => not_found(path),
    }
}

fn dev_dir() -> Option<PathBuf> {
    std::env::var_os("SHOPLAKE_DASHBOARDS_DIR").map(PathBuf::from)
}

async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    match dev_dir() {
        Some(dir) => serve_from_disk(&dir, &path),
        None => serve_built_in(&path, &headers),
    }
}

async fn index(headers: HeaderMap) -> Response {
    file(Path(String::new()), headers).await
}

async fn to_index() -> Redirect {
    Redirect::to("/dashboards/")
}

/// The app's files at `/dashboards/`, and `/` redirecting there. Open routes: the files hold no
/// data.
pub fn router() -> Routes {
    Routes::new()
        .get("/", to_index, Access::Open)
        .get("/dashboards", to_index, Access::Open)
        .get("/dashboards/", index, Access::Open)
        .get("/dashboards/{*path}", file, Access::Open)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_and_echarts_are_built_in() {
        let index = asset("").expect("index.html");
        assert!(index.content_type.starts_with("text/html"));
        let page = std::str::from_utf8(index.body).expect("UTF-8");
        assert!(
            page.contains("vendor/echarts.min.js"),
            "the page loads ECharts"
        );
        let echarts = asset("vendor/echarts.min.js").expect("ECharts from npm");
        assert!(echarts.body.len() > 500_000, "the whole minified library");
        assert!(echarts.gzip.len() < echarts.body.len() / 2);
        assert!(asset("../Cargo.toml").is_none());
    }
}

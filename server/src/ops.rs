//! The operations routes of every long-running command: `/metrics` (the process's
//! [`Telemetry`]), `/health` (the process answers) and `/ready` (it can do its work now).

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::json;

use crate::Telemetry;
use crate::telemetry::CONTENT_TYPE;

/// Whether the process can do its work now (`/ready`).
pub type Readiness = Arc<dyn Fn() -> bool + Send + Sync>;

/// `/metrics`, `/health` and `/ready`, the latter answering 503 while `ready` says no (a load
/// balancer then sends traffic elsewhere).
pub fn router(telemetry: Arc<Telemetry>, ready: Readiness) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let text = telemetry.render();
                async move { ([("content-type", CONTENT_TYPE)], text) }
            }),
        )
        .route(
            "/health",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route(
            "/ready",
            get(move || {
                let answer = if ready() {
                    (StatusCode::OK, axum::Json(json!({"status": "ready"})))
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        axum::Json(json!({"status": "unavailable"})),
                    )
                };
                async move { answer }
            }),
        )
}

/// Always ready.
pub fn always_ready() -> Readiness {
    Arc::new(|| true)
}

//! The operations routes of every long-running command: `/metrics` (the process's
//! [`Telemetry`]), `/health` (the process answers) and `/ready` (it can do its work now).

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::json;

use crate::Telemetry;
use crate::auth::{Access, Routes};
use crate::telemetry::CONTENT_TYPE;

/// Whether the process can do its work now (`/ready`).
pub type Readiness = Arc<dyn Fn() -> bool + Send + Sync>;

/// `/metrics` (a token of an admin or analyst, unless `[auth] metrics_open`), `/health` and
/// `/ready` (open), the latter answering 503 while `ready` says no (a load balancer then sends
/// traffic elsewhere).
pub fn router(telemetry: Arc<Telemetry>, ready: Readiness) -> Routes {
    Routes::new()
        .get(
            "/metrics",
            move || {
                let text = telemetry.render();
                async move { ([("content-type", CONTENT_TYPE)], text) }
            },
            Access::Metrics,
        )
        .get(
            "/health",
            || async { axum::Json(json!({"status": "ok"})) },
            Access::Open,
        )
        .get(
            "/ready",
            move || {
                let answer = if ready() {
                    (StatusCode::OK, axum::Json(json!({"status": "ready"})))
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        axum::Json(json!({"status": "unavailable"})),
                    )
                };
                async move { answer }
            },
            Access::Open,
        )
}

/// Always ready.
pub fn always_ready() -> Readiness {
    Arc::new(|| true)
}

/// `GET /v1/routes` (admins): every route of the process with the access it needs, next to the
/// routes already declared in `routes`.
pub fn with_listing(routes: Routes) -> Routes {
    let mut rules = routes.rules().to_vec();
    rules.push(crate::auth::RouteRule {
        method: "GET".into(),
        path: "/v1/routes".into(),
        access: Access::Admin,
    });
    rules.sort_by(|a, b| a.path.cmp(&b.path).then(a.method.cmp(&b.method)));
    let listing = Routes::new().get(
        "/v1/routes",
        move || {
            let body = axum::Json(json!({ "routes": rules }));
            async move { body }
        },
        Access::Admin,
    );
    routes.merge(listing)
}

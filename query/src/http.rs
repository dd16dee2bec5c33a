//! The HTTP API: `POST /v1/sql` and `GET /v1/tables`.
//!
//! `POST /v1/sql` takes `{"sql": "…"}` (or the SQL as a plain-text body) and answers
//! `{"columns": [{"name", "type"}], "rows": [{…}], "row_count", "truncated", "elapsed_ms",
//! "bytes_scanned"}` (bytes the Parquet scans read).
//! Bad SQL is a 400 with `{"error": "bad_sql", "detail": "<what DataFusion said>"}`; a failure of
//! the service is a 500 with an opaque message, logged once.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use shoplake_server::ApiError;
use tracing::error;

use crate::{Error, QueryService, to_json_rows};

/// Most rows one HTTP answer carries; more are cut and `truncated` is set.
const MAX_ROWS: usize = 100_000;

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match &e {
            Error::BadSql { .. } => ApiError::bad_request("bad_sql", e.to_string()),
            other => {
                error!(error = %other, "query failed");
                ApiError::internal()
            }
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

fn bad_request(detail: String) -> Response {
    ApiError::bad_request("bad_request", detail).into_response()
}

async fn sql(
    State(service): State<Arc<QueryService>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
        || body.trim_start().starts_with('{');
    let statement = if is_json {
        match serde_json::from_str::<serde_json::Value>(&body) {
            Ok(v) => match v.get("sql").and_then(|s| s.as_str()) {
                Some(s) => s.to_owned(),
                None => return bad_request("the body must be {\"sql\": \"<statement>\"}".into()),
            },
            Err(e) => return bad_request(format!("the body is not JSON: {e}")),
        }
    } else {
        body
    };
    if statement.trim().is_empty() {
        return bad_request("no SQL statement given".into());
    }
    let result = match service.sql(&statement).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let mut rows = match to_json_rows(&result) {
        Ok(rows) => rows,
        Err(e) => return e.into_response(),
    };
    let truncated = rows.len() > MAX_ROWS;
    rows.truncate(MAX_ROWS);
    let columns: Vec<_> = result
        .schema
        .fields()
        .iter()
        .map(|f| json!({"name": f.name(), "type": f.data_type().to_string()}))
        .collect();
    axum::Json(json!({
        "columns": columns,
        "row_count": rows.len(),
        "truncated": truncated,
        "elapsed_ms": result.elapsed.as_secs_f64() * 1000.0,
        "bytes_scanned": result.bytes_scanned,
        "rows": rows,
    }))
    .into_response()
}

async fn tables(State(service): State<Arc<QueryService>>) -> Response {
    match service.tables().await {
        Ok(tables) => axum::Json(json!({
            "tables": tables.iter().map(|(name, version, schema)| json!({
                "name": name,
                "delta_version": version,
                "columns": schema.fields().iter().map(|f| json!({"name": f.name(), "type": f.data_type().to_string()})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>()
        }))
        .into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /v1/sql` and `GET /v1/tables`. The binary merges it with the process's `/health`,
/// `/ready` and `/metrics` routes.
pub fn router(service: Arc<QueryService>) -> Router {
    Router::new()
        .route("/v1/sql", post(sql))
        .route("/v1/tables", get(tables))
        .with_state(service)
}

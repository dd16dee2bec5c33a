//! The HTTP API: `POST /v1/sql`, `GET /v1/tables`, `GET /v1/reports` and
//! `GET /v1/reports/NAME` (the named reports of [`crate::reports`]).
//!
//! `POST /v1/sql` takes `{"sql": "…", "params": [..] | {..}, "limit": N}` (or the SQL as a
//! plain-text body) and answers in the format the `Accept` header or `?format=` asks for:
//! - `application/json` (the default): `{"columns": [{"name", "type"}], "rows": [{…}],
//!   "row_count", "truncated", "elapsed_ms", "bytes_scanned", "cached"}`;
//! - `application/x-ndjson`, `text/csv`, `application/vnd.apache.arrow.stream` (Arrow IPC
//!   stream), `application/vnd.apache.parquet`.
//!
//! Answers stream batch by batch as the statement produces them. Parameters (`$1`, `$name`) are
//! bound by the engine. `?limit=N` (or `"limit"`) asks for the first N rows: the answer is cut
//! there and says so (`truncated`); without it an answer over `query.max_rows` or
//! `query.max_bytes` is refused. Each answer carries an `ETag` made from the statement, its
//! parameters and the Delta versions of the tables it reads; `If-None-Match` with it is answered
//! 304 without running anything until a table changes.
//!
//! A report's answer also says how complete its period is (headers, in every format):
//! `X-Shoplake-Complete-Until` (the latest commit of `events`) and `X-Shoplake-Late-Days` (the
//! period's days that received events after they ended, `DAY=EVENTS,…`).
//!
//! Errors are `{"error", "detail"}`: 400 `bad_sql` / `bad_params` / `bad_request`, 403
//! `not_allowed` (not a query), 406 `not_acceptable`, 408 `timed_out`, 413 `too_large` /
//! `out_of_memory`, 429 `busy` (with `Retry-After`), 500 for the service's own failures (logged
//! once). An error after the first bytes were sent (a cap or the time limit reached mid-answer)
//! ends the response without its last chunk, so that no client takes a cut answer for a whole
//! one; the log says why. The first MiB of an answer is encoded before the status is sent, so
//! errors within it (most statements' errors, and small caps) get their status.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::json;
use shoplake_server::ApiError;
use shoplake_server::auth::{Access, Principal, Routes};
use tracing::{error, warn};

use crate::{Catalog, Encoder, Error, Params, QueryRequest, QueryService, QueryStream, WireFormat};

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let (status, code) = match &e {
            Error::BadSql { .. } => (StatusCode::BAD_REQUEST, "bad_sql"),
            Error::BadParams { .. } => (StatusCode::BAD_REQUEST, "bad_params"),
            Error::NotAllowed { .. } => (StatusCode::FORBIDDEN, "not_allowed"),
            Error::Timeout { .. } => (StatusCode::REQUEST_TIMEOUT, "timed_out"),
            Error::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            Error::OutOfMemory { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "out_of_memory"),
            Error::NoReport { .. } => (StatusCode::NOT_FOUND, "no_report"),
            Error::Busy { retry_after } => {
                return ApiError::new(StatusCode::TOO_MANY_REQUESTS, "busy", e.to_string())
                    .with_retry_after(*retry_after);
            }
            other => {
                error!(error = %other, "query failed");
                return ApiError::internal();
            }
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

fn boxed_bad_request(detail: impl Into<String>) -> Box<Response> {
    Box::new(ApiError::bad_request("bad_request", detail).into_response())
}

/// `?format=` and `?limit=`.
#[derive(Debug, Default, serde::Deserialize)]
struct SqlQuery {
    format: Option<String>,
    limit: Option<u64>,
}

/// The JSON body.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlBody {
    sql: String,
    #[serde(default)]
    params: serde_json::Value,
    limit: Option<u64>,
    format: Option<String>,
}

/// The statement, its format and the request's `If-None-Match`, or the answer to a malformed
/// request.
fn read_request(
    headers: &HeaderMap,
    query: SqlQuery,
    body: String,
) -> Result<(QueryRequest, WireFormat), Box<Response>> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
        || body.trim_start().starts_with('{');
    let (mut request, body_format) = if is_json {
        let body: SqlBody = serde_json::from_str(&body).map_err(|e| {
            boxed_bad_request(format!(
                "the body is not JSON of the form {{\"sql\": \"<statement>\", \"params\": [..] or {{..}}, \"limit\": N}}: {e}"
            ))
        })?;
        let params = Params::from_json(&body.params).map_err(|e| Box::new(e.into_response()))?;
        (
            QueryRequest {
                sql: body.sql,
                params,
                limit: body.limit,
                ..QueryRequest::default()
            },
            body.format,
        )
    } else {
        (QueryRequest::new(body), None)
    };
    if request.sql.trim().is_empty() {
        return Err(boxed_bad_request("no SQL statement given"));
    }
    request.limit = query.limit.or(request.limit);
    let format = format_of(headers, query.format.or(body_format).as_deref())?;
    Ok((request, format))
}

/// What the caller's role may read; a router without a guard (tests) reads everything.
fn catalog_of(principal: Option<&Principal>) -> Catalog {
    match principal {
        Some(p) if !p.role.sees_personal_data() => Catalog::NoPersonalData,
        _ => Catalog::Full,
    }
}

async fn sql(
    State(service): State<Arc<QueryService>>,
    principal: Option<Extension<Principal>>,
    Query(query): Query<SqlQuery>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    // The body is read here rather than by a `String` extractor, whose refusals (a body that is
    // not UTF-8, one over the size limit) are plain text instead of `{"error", "detail"}`.
    let body = match body {
        Ok(body) => body,
        Err(e) => return ApiError::new(e.status(), "bad_request", e.body_text()).into_response(),
    };
    let body = match String::from_utf8(Vec::from(body)) {
        Ok(body) => body,
        Err(e) => {
            return ApiError::bad_request(
                "bad_request",
                format!(
                    "the body is not UTF-8 text: byte {} is not valid UTF-8",
                    e.utf8_error().valid_up_to()
                ),
            )
            .into_response();
        }
    };
    let (mut request, format) = match read_request(&headers, query, body) {
        Ok(r) => r,
        Err(response) => return *response,
    };
    request.catalog = catalog_of(principal.as_deref());
    answer(&service, &request, format, &headers).await
}

/// Runs `request` and sends its answer in `format`, or 304 when the client's `If-None-Match`
/// holds the answer's tag.
async fn answer(
    service: &QueryService,
    request: &QueryRequest,
    format: WireFormat,
    headers: &HeaderMap,
) -> Response {
    let prepared = match service.prepare(request).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let etag = format!("\"{}-{}\"", prepared.etag(), format.name());
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if matches {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    let stream = prepared.execute();
    let max_bytes = service.limits().max_bytes.as_u64();
    match Answer::start(stream, format, max_bytes).await {
        Ok(answer) => {
            let mut response = Response::new(Body::from_stream(answer.into_stream()));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            );
            if let Ok(tag) = HeaderValue::from_str(&etag) {
                headers.insert(header::ETAG, tag);
            }
            response
        }
        Err(e) => e.into_response(),
    }
}

/// Bytes of an answer encoded before its status is sent.
const HEAD_BYTES: usize = 1 << 20;

/// An answer being sent: the encoder, the statement's stream, and the bytes sent so far.
struct Answer {
    encoder: Option<Encoder>,
    stream: QueryStream,
    /// Bytes encoded before the response started (the head and the first batch).
    ready: Option<Bytes>,
    sent: u64,
    max_bytes: u64,
}

impl Answer {
    /// Encodes the answer's first [`HEAD_BYTES`] (or all of it, when shorter) before anything
    /// is sent, so that the errors most statements meet, and the caps a small cap reaches, get
    /// their status and body.
    async fn start(
        mut stream: QueryStream,
        format: WireFormat,
        max_bytes: u64,
    ) -> Result<Self, Error> {
        let too_large = |sent: usize| {
            (sent as u64 > max_bytes).then_some(Error::TooLarge {
                what: "bytes",
                limit: max_bytes,
            })
        };
        let (encoder, head) = Encoder::begin(format, &stream.schema())?;
        let mut encoder = Some(encoder);
        let mut ready = head.to_vec();
        while ready.len() < HEAD_BYTES {
            let Some(open) = encoder.as_mut() else {
                break;
            };
            match stream.next().await.transpose()? {
                Some(batch) => ready.extend_from_slice(&open.batch(&batch)?),
                None => {
                    if let Some(open) = encoder.take() {
                        ready.extend_from_slice(&open.finish(stream.trailer())?);
                    }
                }
            }
            if let Some(e) = too_large(ready.len()) {
                return Err(e);
            }
        }
        if let Some(e) = too_large(ready.len()) {
            return Err(e);
        }
        Ok(Answer {
            encoder,
            sent: ready.len() as u64,
            stream,
            ready: Some(Bytes::from(ready)),
            max_bytes,
        })
    }

    fn into_stream(self) -> impl futures::Stream<Item = Result<Bytes, Error>> + Send {
        futures::stream::unfold(self, |mut answer| async move {
            if let Some(ready) = answer.ready.take() {
                return Some((Ok(ready), answer));
            }
            let encoder = answer.encoder.as_mut()?;
            let chunk = match answer.stream.next().await {
                Some(Ok(batch)) => encoder.batch(&batch),
                Some(Err(e)) => Err(e),
                None => {
                    let trailer = answer.stream.trailer();
                    let chunk = answer.encoder.take()?.finish(trailer);
                    return Some((chunk, answer));
                }
            };
            let chunk = chunk.and_then(|bytes| {
                answer.sent += bytes.len() as u64;
                if answer.sent > answer.max_bytes {
                    return Err(Error::TooLarge {
                        what: "bytes",
                        limit: answer.max_bytes,
                    });
                }
                Ok(bytes)
            });
            if let Err(e) = &chunk {
                // The status is sent already: the response ends without its last chunk.
                warn!(error = %e, "answer stopped after its first bytes");
                answer.encoder = None;
            }
            Some((chunk, answer))
        })
    }
}

/// The format of a GET: `?format=` or else the `Accept` header.
fn format_of(headers: &HeaderMap, format: Option<&str>) -> Result<WireFormat, Box<Response>> {
    match format {
        Some(name) => WireFormat::from_name(name).ok_or_else(|| {
            boxed_bad_request(format!(
                "format {name:?} is not served; the formats are {}",
                WireFormat::ALL.map(WireFormat::name).join(", ")
            ))
        }),
        None => {
            let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
            WireFormat::from_accept(accept).ok_or_else(|| {
                let refusal = ApiError::new(
                    StatusCode::NOT_ACCEPTABLE,
                    "not_acceptable",
                    format!(
                        "Accept {:?} names no format served here: {}",
                        accept.unwrap_or_default(),
                        WireFormat::ALL.map(WireFormat::content_type).join(", ")
                    ),
                );
                Box::new(refusal.into_response())
            })
        }
    }
}

/// Whether the caller may see personal data; a router without a guard (tests) may.
fn sees_personal(principal: Option<&Principal>) -> bool {
    catalog_of(principal) == Catalog::Full
}

/// `GET /v1/reports`: the reports the caller may run, with their parameters and columns.
async fn reports(
    State(service): State<Arc<QueryService>>,
    principal: Option<Extension<Principal>>,
) -> Response {
    let personal = sees_personal(principal.as_deref());
    let catalogue = service.reports();
    let list: Vec<_> = catalogue
        .all()
        .iter()
        .filter(|r| r.allowed(personal))
        .map(|r| {
            json!({
                "name": r.name,
                "title": r.title,
                "description": r.description,
                "role": r.role,
                "params": r.params.iter().map(|p| json!({
                    "name": p.name,
                    "type": p.ty,
                    "default": p.default_text,
                    "required": p.default_text.is_none(),
                    "allowed": (!p.allowed.is_empty()).then_some(&p.allowed),
                    "description": p.description,
                })).collect::<Vec<_>>(),
                "columns": catalogue.schema(&r.name).map(|s| s.fields().iter().map(|f| json!({
                    "name": f.name(), "type": f.data_type().to_string()
                })).collect::<Vec<_>>()),
                "url": format!("/v1/reports/{}", r.name),
                "function": format!("report_{}", r.name),
            })
        })
        .collect();
    axum::Json(json!({ "reports": list })).into_response()
}

/// `GET /v1/reports/NAME?from=…&to=…&format=…&limit=…`: one report, in any format `/v1/sql`
/// speaks; every other query parameter is one of the report's.
async fn report(
    State(service): State<Arc<QueryService>>,
    principal: Option<Extension<Principal>>,
    axum::extract::Path(name): axum::extract::Path<String>,
    Query(mut given): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let format = given.remove("format");
    let format = match format_of(&headers, format.as_deref()) {
        Ok(f) => f,
        Err(response) => return *response,
    };
    let limit = match given.remove("limit").map(|l| l.parse::<u64>()) {
        None => None,
        Some(Ok(l)) => Some(l),
        Some(Err(_)) => return *boxed_bad_request("limit is a whole number of rows"),
    };
    let personal = sees_personal(principal.as_deref());
    let mut request = match service.report_request(&name, &given, personal) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    request.limit = limit;
    let freshness = service.freshness(&request).await;
    let mut response = answer(&service, &request, format, &headers).await;
    match freshness {
        Ok(Some(f)) => freshness_headers(response.headers_mut(), &f),
        Ok(None) => {}
        Err(e) => warn!(error = %e, report = name, "the report's freshness could not be read"),
    }
    response
}

/// `X-Shoplake-Complete-Until`: when `events` was last committed (RFC 3339; events after it are
/// not in the answer yet). `X-Shoplake-Late-Days`: the period's days that received events after
/// they ended, `DAY=EVENTS` comma-separated (a report of those days changed after the fact).
fn freshness_headers(headers: &mut HeaderMap, f: &crate::Freshness) {
    let until = f
        .complete_until_ms
        .and_then(arrow::temporal_conversions::timestamp_ms_to_datetime)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string());
    if let Some(value) = until.and_then(|u| HeaderValue::from_str(&u).ok()) {
        headers.insert("x-shoplake-complete-until", value);
    }
    let late: Vec<String> = f
        .late_days
        .iter()
        .map(|(d, n)| format!("{d}={n}"))
        .collect();
    if let Ok(value) = HeaderValue::from_str(&late.join(",")) {
        headers.insert("x-shoplake-late-days", value);
    }
}

async fn tables(
    State(service): State<Arc<QueryService>>,
    principal: Option<Extension<Principal>>,
) -> Response {
    match service.tables(catalog_of(principal.as_deref())).await {
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

/// `POST /v1/admin/erasures`'s body: who is to be erased.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ErasureRequest {
    user_id: Option<String>,
    anonymous_id: Option<String>,
    /// Several browsers or devices of the person.
    #[serde(default)]
    anonymous_ids: Vec<String>,
}

/// `POST /v1/admin/erasures` (admins): a person's request to be forgotten. Their rows leave every
/// table before the answer; the answer says what was removed where (counts only) and the
/// request's id; their bytes leave storage at the request's VACUUM (`[retention]
/// erasure_grace` later). A running stage drops their events still in flight.
async fn erasure(
    State(service): State<Arc<QueryService>>,
    body: Result<axum::Json<ErasureRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let request = match body {
        Ok(axum::Json(r)) => r,
        Err(e) => return ApiError::new(e.status(), "bad_request", e.body_text()).into_response(),
    };
    let subject = shoplake_batch::erase::Subject {
        user_id: request.user_id.filter(|s| !s.is_empty()),
        anonymous_ids: request
            .anonymous_id
            .into_iter()
            .chain(request.anonymous_ids)
            .filter(|s| !s.is_empty())
            .collect(),
    };
    if subject.check().is_err() {
        return ApiError::bad_request(
            "bad_request",
            "name the person: \"user_id\", \"anonymous_id\" (or \"anonymous_ids\"), or both",
        )
        .into_response();
    }
    match service.erase(&subject).await {
        Ok(Some(report)) => axum::Json(report).into_response(),
        Ok(None) => ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "not_available",
            "this server takes no erasure requests: run `shoplake erase`",
        )
        .into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /v1/sql` and `GET /v1/tables`. The binary merges it with the process's `/health`,
/// `/ready` and `/metrics` routes.
pub fn router(service: Arc<QueryService>) -> Routes {
    Routes::new()
        .post("/v1/admin/erasures", erasure, Access::Admin)
        .post("/v1/sql", sql, Access::Sql)
        .get("/v1/tables", tables, Access::Sql)
        .get("/v1/reports", reports, Access::Reports)
        .get("/v1/reports/{name}", report, Access::Reports)
        .with_state(service)
}

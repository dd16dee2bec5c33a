//! # shoplake-collector: the HTTP collector, the Segment tracking API onto the events stream
//!
//! Owns the HTTP server that web shops and mobile apps send events to with the analytics SDKs
//! they already have (Segment's, RudderStack's, storefront plugins): pointed at this collector,
//! they change nothing else. It owns the write keys that authenticate them ([`keys`]), the
//! mapping of each Segment message onto the event contract ([`segment`]), enrichment at the edge
//! ([`enrich`]), rate limits ([`limit`]) and its own metrics ([`metrics`]).
//!
//! Data enters as HTTP requests (`POST /v1/track`, `/v1/batch`, … from [`router`]) and leaves as
//! records on the events stream, through the [`StreamProducer`] trait of `shoplake-ingest`:
//! the collector does not know which backend (the embedded log, Kinesis) it writes to. Each
//! record is an event in the wire format of `shoplake-events`.
//!
//! ```text
//! POST /v1/track|page|screen|identify|alias|group   one message      (≤ 32 KB)
//! POST /v1/batch, /v1/import                         {"batch": [...]} (≤ 500 KB)
//!   ─► write key (HTTP basic auth username, or `writeKey` in the body) ─► 401
//!   ─► gzip undone (Content-Encoding: gzip), sizes checked           ─► 400 / 413
//!   ─► token bucket of the key                                         ─► 429 + Retry-After
//!   ─► each message mapped onto the contract (segment), enriched at the edge (enrich)
//!   ─► StreamProducer::put_records, ≤ 500 records per put              ─► 503 + Retry-After
//!   ─► 200 {"success": true}  only once every record is durable in the stream
//! ```
//!
//! Delivery: a 200 means every event of the request is durable in the stream. When the stream
//! fails, the answer is 503 and the client retries; the records that were durable before the
//! failure are written again, with the same event ids (taken or derived from `messageId`), and
//! the streaming stage keeps one of each. Nothing answered 200 is lost, nothing is kept twice.
//!
//! Bad input: a request that cannot be read (no key, not JSON, too large) is refused whole with a
//! 4xx and a JSON body `{"success": false, "error": code, "detail": sentence}`. A bad *event* in
//! a readable request does not refuse the others: it goes onto the stream like the rest, and the
//! stage turns it into a bad row with the contract's reason. The collector checks each mapped
//! event against the contract too; one that fails carries the client's message as sent
//! (`original`), so that its bad row holds both, and is counted in
//! `shoplake_collector_events_invalid_total{reason}`. A batch element that is not a JSON object,
//! or larger than the event limit, goes onto the stream exactly as sent (`wrong_type`,
//! `too_large`).
//!
//! Endpoints also answer under Segment's short names (`/v1/t`, `/v1/p`, `/v1/s`, `/v1/i`,
//! `/v1/a`, `/v1/g`, `/v1/b`), which analytics.js uses. Browsers get CORS headers and preflight
//! answers for the origins of [`CollectorConfig::cors_allowed_origins`].
//!
//! Modules: [`config`] (the `[collector]` settings), [`keys`] (write keys), [`segment`] (the
//! mapping), [`enrich`] (user agent, GeoIP, privacy), [`limit`] (rate limits), [`metrics`].
//!
//! Why these dependencies: `shoplake-ingest` for the stream it writes to (the [`StreamProducer`]
//! trait and the stream's limits); `shoplake-events` for the contract each message is mapped onto
//! and checked against; `shoplake-server` for the error body every API answers with and the metrics
//! exporter; `axum` (the HTTP server of the workspace); `serde_json` with raw values (messages are
//! re-keyed without being re-typed or copied into maps); `flate2` (gzip bodies; already in the tree
//! for Parquet); `base64` (basic auth); `sha2` (hashed write keys and e-mails); `redb` (the write
//! keys, stored hashed: the embedded storage engine the local log uses too); `woothee` (user
//! agents: see [`enrich`] for why this parser); `maxminddb` (IP → country); `url` (query strings);
//! `humantime-serde` (the config's durations with units, `"2s"`); `uuid` (v5 event ids); `rand`
//! (key secrets); `chrono` (timestamps).

pub mod config;
pub mod enrich;
pub mod keys;
pub mod limit;
pub mod metrics;
pub mod segment;

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use shoplake_events::{Limits, decode, format_timestamp};
use shoplake_ingest::{Error as StreamError, MAX_RECORDS_PER_PUT, Record, StreamProducer};
use shoplake_server::ApiError;
use shoplake_server::auth::{Access, Routes};
use tracing::{error, warn};

pub use config::CollectorConfig;
pub use keys::{KeyCache, KeyInfo, KeyStore};
pub use metrics::{CollectorMetrics, RejectReason};

use enrich::{GeoIp, Scrub};
use limit::RateLimiter;
use segment::{Call, Edge, Mapped, RequestContext};

/// Errors building a collector.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid collector config: {0}")]
    Config(String),
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
    #[error(transparent)]
    GeoIp(#[from] enrich::GeoIpError),
}

/// The collector: everything its handlers share.
pub struct Collector {
    producer: Arc<dyn StreamProducer>,
    keys: KeyCache,
    limiter: RateLimiter,
    edge: Edge,
    config: CollectorConfig,
    limits: Limits,
    metrics: Arc<CollectorMetrics>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("keys", &self.keys)
            .field("config", &self.config)
            .finish()
    }
}

impl Collector {
    /// A collector writing to `producer`, authenticating with the keys of `keys`.
    pub fn new(
        producer: Arc<dyn StreamProducer>,
        keys: KeyStore,
        config: CollectorConfig,
    ) -> Result<Self, Error> {
        config.validate().map_err(Error::Config)?;
        let geo = match &config.geoip_database {
            Some(path) => Some(GeoIp::open(path)?),
            None => None,
        };
        Ok(Collector {
            producer,
            keys: KeyCache::new(keys, config.key_refresh)?,
            limiter: RateLimiter::new(config.rate_limit_events_per_sec, config.rate_limit_burst),
            edge: Edge {
                geo,
                scrub: Scrub {
                    hash_emails: config.hash_emails,
                    truncate_ips: config.truncate_ips,
                },
            },
            limits: Limits::default(),
            config,
            metrics: Arc::new(CollectorMetrics::default()),
        })
    }

    /// Validates with `limits` (the streaming stage's: `[stage] max_lateness` and
    /// `max_event_bytes`, so that the collector never refuses what the stage would take) instead
    /// of the contract's defaults.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The collector's counters (for `/metrics`).
    pub fn metrics(&self) -> Arc<CollectorMetrics> {
        self.metrics.clone()
    }

    /// Whether the stream takes writes: false for `unready` after a failed write, then true
    /// again so that traffic tests the stream.
    pub fn ready(&self) -> bool {
        let failed = self.metrics.stream_failed_at.load(Ordering::Relaxed);
        failed == 0 || now_micros() - failed > self.config.unready.as_micros() as i64
    }
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// The endpoints: the tracking API's calls and batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    One(Call),
    Batch,
}

impl Endpoint {
    /// Index into [`metrics::ENDPOINTS`].
    fn index(self) -> usize {
        match self {
            Endpoint::One(Call::Track) => 0,
            Endpoint::One(Call::Page) => 1,
            Endpoint::One(Call::Screen) => 2,
            Endpoint::One(Call::Identify) => 3,
            Endpoint::One(Call::Alias) => 4,
            Endpoint::One(Call::Group) => 5,
            Endpoint::Batch => 6,
        }
    }
}

/// The collector's routes: `POST /v1/{track,page,screen,identify,alias,group,batch,import}`
/// (and Segment's short names), with CORS. Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()` so that events get the client's address.
pub fn router(collector: Arc<Collector>) -> Routes {
    let one = |call: Call| {
        post(
            move |State(c): State<Arc<Collector>>, req: Request| async move {
                handle(c, Endpoint::One(call), req).await
            },
        )
    };
    let batch = || {
        post(|State(c): State<Arc<Collector>>, req: Request| async move {
            handle(c, Endpoint::Batch, req).await
        })
    };
    let mut routes = Routes::new();
    for (long, short, call) in [
        ("/v1/track", "/v1/t", Call::Track),
        ("/v1/page", "/v1/p", Call::Page),
        ("/v1/screen", "/v1/s", Call::Screen),
        ("/v1/identify", "/v1/i", Call::Identify),
        ("/v1/alias", "/v1/a", Call::Alias),
        ("/v1/group", "/v1/g", Call::Group),
    ] {
        for path in [long, short] {
            routes = routes.route(Method::POST, path, one(call), Access::WriteKey);
        }
    }
    for path in ["/v1/batch", "/v1/b", "/v1/import"] {
        routes = routes.route(Method::POST, path, batch(), Access::WriteKey);
    }
    let cors_state = collector.clone();
    routes
        .map_router(|router| router.layer(middleware::from_fn_with_state(cors_state, cors)))
        .with_state(collector)
}

/// `/ready` of a process serving the collector: 200 while the stream takes writes, else 503.
pub async fn ready(State(c): State<Arc<Collector>>) -> Response {
    if c.ready() {
        (StatusCode::OK, axum::Json(json!({"status": "ready"}))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "unavailable", "detail": "the events stream failed a write; events are refused with 503 until it takes writes again"})),
        )
            .into_response()
    }
}

/// CORS: preflight answers and `Access-Control-Allow-Origin` for the allowed origins.
async fn cors(State(c): State<Arc<Collector>>, req: Request, next: Next) -> Response {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let allowed = origin.as_ref().and_then(|o| {
        let any = c.config.cors_allowed_origins.iter().any(|a| a == "*");
        let listed = o
            .to_str()
            .is_ok_and(|o| c.config.cors_allowed_origins.iter().any(|a| a == o));
        (any || listed).then(|| o.clone())
    });
    if req.method() == Method::OPTIONS {
        let mut resp = StatusCode::NO_CONTENT.into_response();
        if let Some(o) = allowed {
            let h = resp.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("POST, OPTIONS"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("authorization, content-type, content-encoding"),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("86400"),
            );
            h.insert(header::VARY, HeaderValue::from_static("Origin"));
        }
        return resp;
    }
    let mut resp = next.run(req).await;
    if let Some(o) = allowed {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("retry-after"),
        );
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    resp
}

/// A refused request, answered in one place.
#[derive(Debug)]
struct Refusal {
    reason: RejectReason,
    detail: String,
    retry_after: Option<Duration>,
    events: usize,
}

impl Refusal {
    fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Refusal {
            reason,
            detail: detail.into(),
            retry_after: None,
            events: 0,
        }
    }

    fn status(&self) -> StatusCode {
        match self.reason {
            RejectReason::Unauthorized => StatusCode::UNAUTHORIZED,
            RejectReason::Malformed | RejectReason::EventTooLarge => StatusCode::BAD_REQUEST,
            RejectReason::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            RejectReason::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            RejectReason::StreamUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            RejectReason::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut e = ApiError::new(self.status(), self.reason.as_str(), self.detail)
            // Segment's tracking API answers `{"success": …}`; its SDKs' users look for it.
            .with_field("success", false);
        if let Some(wait) = self.retry_after {
            e = e.with_retry_after(wait);
        }
        if self.reason == RejectReason::Unauthorized {
            e = e.with_challenge("Basic realm=\"shoplake collector\"");
        }
        e.into_response()
    }
}

async fn handle(c: Arc<Collector>, endpoint: Endpoint, req: Request) -> Response {
    let started = Instant::now();
    let resp = match ingest(&c, endpoint, req).await {
        Ok(events) => {
            c.metrics.ok(endpoint.index(), events);
            (StatusCode::OK, axum::Json(json!({"success": true}))).into_response()
        }
        Err(refusal) => {
            c.metrics.rejected(refusal.reason, refusal.events);
            refusal.into_response()
        }
    };
    c.metrics.latency(started.elapsed());
    resp
}

/// The write key of the `Authorization: Basic` header (the username; the password is empty).
fn basic_auth_key(headers: &HeaderMap) -> Result<Option<String>, Refusal> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let bad = || {
        Refusal::new(
            RejectReason::Unauthorized,
            "the Authorization header must be `Basic base64(WRITE_KEY:)`",
        )
    };
    let text = value.to_str().map_err(|_| bad())?;
    let Some(encoded) = text
        .strip_prefix("Basic ")
        .or_else(|| text.strip_prefix("basic "))
    else {
        return Err(bad());
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let key = decoded.split_once(':').map_or(&*decoded, |(k, _)| k);
    Ok(Some(key.to_owned()))
}

fn client_ip(c: &Collector, req: &Request) -> Option<IpAddr> {
    if c.config.trust_x_forwarded_for
        && let Some(ip) = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok())
    {
        return Some(ip);
    }
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ci| ci.0.ip())
}

/// The body, gzip undone, at most `limit` bytes.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    too_large: impl Fn(String) -> Refusal,
) -> Result<Bytes, Refusal> {
    // gzip can make a body slightly larger than its content: allow some slack on the wire.
    let wire_limit = limit + limit / 8 + 1024;
    let bytes = axum::body::to_bytes(body, wire_limit)
        .await
        .map_err(|_| too_large(format!("more than {wire_limit} bytes")))?;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    let bytes = match encoding.as_deref() {
        None | Some("") | Some("identity") => bytes,
        Some("gzip") | Some("x-gzip") => {
            let mut out = Vec::with_capacity(bytes.len() * 4);
            let mut decoder = flate2::read::GzDecoder::new(&bytes[..]).take(limit as u64 + 1);
            decoder.read_to_end(&mut out).map_err(|e| {
                Refusal::new(
                    RejectReason::Malformed,
                    format!("the body is not valid gzip: {e}"),
                )
            })?;
            Bytes::from(out)
        }
        Some(other) => {
            return Err(Refusal::new(
                RejectReason::Malformed,
                format!("Content-Encoding {other:?} is not supported; send gzip or nothing"),
            ));
        }
    };
    if bytes.len() > limit {
        // A gzip body is only inflated to one byte past the limit.
        let size = if encoding.as_deref().is_some_and(|e| e.contains("gzip")) {
            format!("more than {limit} bytes")
        } else {
            format!("{} bytes", bytes.len())
        };
        return Err(too_large(size));
    }
    Ok(bytes)
}

#[derive(Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow, default)]
    batch: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "sentAt")]
    sent_at: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "writeKey")]
    write_key: Option<&'a RawValue>,
    /// Context shared by every message of the batch (a message's own context wins, key by key).
    #[serde(borrow, default)]
    context: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct WriteKeyOnly<'a> {
    #[serde(borrow, default, rename = "writeKey")]
    write_key: Option<&'a RawValue>,
}

fn malformed(e: impl std::fmt::Display) -> Refusal {
    Refusal::new(
        RejectReason::Malformed,
        format!("the body is not valid JSON: {e}"),
    )
}

/// Reads, authenticates, limits, maps and writes one request; the number of events on success.
async fn ingest(c: &Collector, endpoint: Endpoint, req: Request) -> Result<usize, Refusal> {
    let header_key = basic_auth_key(req.headers())?;
    // An unknown key in the header is refused before the body is read.
    let mut key = match &header_key {
        Some(k) => Some(c.keys.authenticate(k).ok_or_else(|| {
            Refusal::new(
                RejectReason::Unauthorized,
                "unknown or revoked write key (see `shoplake keys list`)",
            )
        })?),
        None => None,
    };
    let ip = client_ip(c, &req);
    let (parts, body) = req.into_parts();
    let max_event = c.config.max_event_bytes;
    let max_batch = c.config.max_batch_bytes;
    let body = match endpoint {
        Endpoint::Batch => {
            read_body(&parts.headers, body, max_batch, |n| {
                Refusal::new(
                    RejectReason::TooLarge,
                    format!(
                        "the batch is {n}, the limit is {max_batch} bytes: send smaller batches"
                    ),
                )
            })
            .await?
        }
        Endpoint::One(_) => {
            read_body(&parts.headers, body, max_event, |n| {
                Refusal::new(
                    RejectReason::EventTooLarge,
                    format!("the event is {n}, the limit is {max_event} bytes"),
                )
            })
            .await?
        }
    };
    let text = std::str::from_utf8(&body).map_err(|e| {
        Refusal::new(
            RejectReason::Malformed,
            format!("the body is not UTF-8: {e}"),
        )
    })?;
    if !text.trim_start().starts_with('{') {
        return Err(Refusal::new(
            RejectReason::Malformed,
            "the body must be a JSON object",
        ));
    }

    // The messages, and the key from the body when there was none in the header.
    let (messages, body_key, batch_sent_at, batch_context): (
        Vec<&RawValue>,
        Option<&RawValue>,
        Option<&RawValue>,
        Option<&RawValue>,
    ) = match endpoint {
        Endpoint::Batch => {
            let b: BatchBody<'_> = serde_json::from_str(text).map_err(malformed)?;
            let Some(batch) = b.batch else {
                return Err(Refusal::new(
                    RejectReason::Malformed,
                    "a batch body is {\"batch\": [messages…]}: `batch` is missing",
                ));
            };
            let items: Vec<&RawValue> = serde_json::from_str(batch.get()).map_err(|_| {
                Refusal::new(
                    RejectReason::Malformed,
                    "`batch` must be an array of messages",
                )
            })?;
            (items, b.write_key, b.sent_at, b.context)
        }
        Endpoint::One(_) => {
            let raw: &RawValue = serde_json::from_str(text).map_err(malformed)?;
            let k: WriteKeyOnly<'_> = serde_json::from_str(text).map_err(malformed)?;
            (vec![raw], k.write_key, None, None)
        }
    };
    let events = messages.len();
    if key.is_none() {
        let Some(raw) = body_key else {
            return Err(Refusal {
                events,
                ..Refusal::new(
                    RejectReason::Unauthorized,
                    "no write key: send it as the username of HTTP basic auth, or as `writeKey` in the body",
                )
            });
        };
        let found = serde_json::from_str::<&str>(raw.get())
            .ok()
            .and_then(|k| c.keys.authenticate(k));
        match found {
            Some(k) => key = Some(k),
            None => {
                return Err(Refusal {
                    events,
                    ..Refusal::new(
                        RejectReason::Unauthorized,
                        "unknown or revoked write key (see `shoplake keys list`)",
                    )
                });
            }
        }
    }
    let Some(key) = key else {
        return Err(Refusal::new(RejectReason::Internal, "no key"));
    };
    if events == 0 {
        return Ok(0);
    }
    if let Err(wait) = c.limiter.take(&key.key_id, events, Instant::now()) {
        return Err(Refusal {
            retry_after: Some(wait),
            events,
            ..Refusal::new(
                RejectReason::RateLimited,
                format!(
                    "write key {} is over its rate limit of {} events/s; retry after the Retry-After seconds",
                    key.key_id, c.config.rate_limit_events_per_sec
                ),
            )
        });
    }

    // Map.
    let received_micros = now_micros();
    let received_at = format_timestamp(received_micros);
    let request = RequestContext {
        received_at: &received_at,
        received_micros,
        batch_sent_at,
        batch_context: batch_context.and_then(segment::SharedContext::parse),
        source: &key.source,
        key_id: &key.key_id,
        client_ip: ip,
    };
    let call = match endpoint {
        Endpoint::One(call) => Some(call),
        Endpoint::Batch => None,
    };
    let records: Vec<Record> = messages
        .iter()
        .map(|raw| {
            let mapped = map_checked(c, raw, call, &request);
            Record {
                partition_key: mapped.partition_key,
                data: Bytes::from(mapped.data),
            }
        })
        .collect();

    // Write; answer 200 only once every record is durable.
    for chunk in records.chunks(MAX_RECORDS_PER_PUT) {
        if let Err(e) = c.producer.put_records(chunk.to_vec()).await {
            return Err(stream_failed(c, e, events));
        }
    }
    c.metrics.stream_failed_at.store(0, Ordering::Relaxed);
    Ok(events)
}

/// Maps one message and checks the result against the contract, as the stage will.
fn map_checked(
    c: &Collector,
    raw: &RawValue,
    call: Option<Call>,
    request: &RequestContext<'_>,
) -> Mapped {
    if raw.get().len() > c.config.max_event_bytes {
        c.metrics.invalid(shoplake_events::Reason::TooLarge);
        return segment::as_is(raw.get(), request, &c.edge);
    }
    let mut mapped = segment::map(raw, call, request, &c.edge);
    if let Err(rejection) = decode(&mapped.data, request.received_micros, &c.limits) {
        c.metrics.invalid(rejection.reason);
        if raw.get().trim_start().starts_with('{') {
            segment::with_original(&mut mapped, raw.get(), c.edge.scrub);
        }
    }
    mapped
}

fn stream_failed(c: &Collector, e: StreamError, events: usize) -> Refusal {
    if matches!(e, StreamError::Limit { .. }) {
        error!(error = %e, "the stream refused records the collector made; this is a bug");
        return Refusal {
            events,
            ..Refusal::new(RejectReason::Internal, "the collector failed; see its log")
        };
    }
    c.metrics
        .stream_failed_at
        .store(now_micros(), Ordering::Relaxed);
    warn!(error = %e, events, "the events stream failed a write; answering 503");
    Refusal {
        retry_after: Some(c.config.retry_after.max(Duration::from_secs(1))),
        events,
        ..Refusal::new(
            RejectReason::StreamUnavailable,
            "the events stream is unavailable; nothing of this request is acknowledged: retry it",
        )
    }
}

//! The stage's live state, served to the storefront: fraud scoring ([`crate::fraud`]) and
//! recommendations ([`crate::recs`]) behind one handle that the stage writes and HTTP reads.
//!
//! ```text
//! stage ──observe(event)──► Live ─┬─ FraudEngine  ─► decisions ─► _staging/fraud_decisions
//!   │                             └─ RecsEngine
//!   └─ flush: expire + take_dirty ─► redb, with the checkpoint (same transaction)
//!
//! HTTP (router): POST /v1/fraud/score               ─► FraudEngine::score (read lock)
//!                GET  /v1/recommendations/{shopper} ─► RecsEngine::recommend (read lock)
//!                GET  /v1/products/{id}/related     ─► RecsEngine::related (read lock)
//! ```
//!
//! Each engine sits behind its own `parking_lot::RwLock`, taken per event by the stage and per
//! request by the endpoints, so a request never waits for more than one event's update.
//!
//! Why `axum` here: the endpoints belong to the state they read, and every long-running command
//! that runs a stage (`stream`, `up`) serves them by merging [`router`] into its own.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use shoplake_events::{EventName, Limits, ValidEvent, decode, format_timestamp};
use tracing::{info, warn};

use crate::enrich::fx::FxRates;
use crate::fraud::{Decision, FraudEngine, RuleSet, RulesFile, Verdict};
use crate::recs::{Recommendation, RecsConfig, RecsEngine, RecsQuery};
use crate::state::LiveEntries;
use crate::{Error, Result};

/// `[stage.fraud]`: real-time fraud scoring.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FraudConfig {
    /// Score orders in the stream and serve `POST /v1/fraud/score`.
    pub enabled: bool,
    /// The rules file (TOML); the built-in rules when absent. Re-read when it changes: a file
    /// that does not parse is refused with its line and reason, and the running rules stay.
    pub rules_file: Option<PathBuf>,
    /// How often the rules file is checked for changes, in milliseconds.
    pub reload_interval_ms: u64,
}

impl Default for FraudConfig {
    fn default() -> Self {
        FraudConfig {
            enabled: true,
            rules_file: None,
            reload_interval_ms: 2_000,
        }
    }
}

/// `[stage.recommendations]`: live recommendations.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecommendationsConfig {
    /// Keep recommendation state and serve the recommendation endpoints (on unless false).
    pub enabled: Option<bool>,
    /// The model: decay, normalisation, windows and caps.
    pub model: RecsConfig,
}

impl RecommendationsConfig {
    pub fn is_enabled(&self) -> bool {
        self.enabled.unwrap_or(true)
    }
}

/// Counters of the live engines and their endpoints.
#[derive(Debug, Default)]
pub struct LiveMetrics {
    /// Decisions on orders in the stream, by verdict (allow, review, block).
    pub decisions: [AtomicU64; 3],
    pub score_requests: AtomicU64,
    pub recommendation_requests: AtomicU64,
    pub related_requests: AtomicU64,
    /// Requests answered 400.
    pub bad_requests: AtomicU64,
    pub rules_reloaded: AtomicU64,
    pub rules_refused: AtomicU64,
}

/// The live engines of one stage.
pub struct Live {
    fx: FxRates,
    recs_config: RecsConfig,
    fraud: Option<RwLock<FraudEngine>>,
    recs: Option<RwLock<RecsEngine>>,
    rules_file: Mutex<Option<RulesFile>>,
    reload_interval: Duration,
    /// Latest event time fed (UTC micros): "now" for the recommendation windows.
    now: AtomicI64,
    /// `now` as last saved.
    saved_now: AtomicI64,
    metrics: LiveMetrics,
}

const FRAUD_PREFIX: &str = "fraud/";
const RECS_PREFIX: &str = "recs/";
/// The latest event time fed, saved so that a restarted stage answers as of the same moment.
const NOW_KEY: &str = "live/now";

impl Live {
    /// The engines the config switches on; the rules from the configured file (refused with its
    /// line and reason when it does not parse) or the built-in ones.
    pub fn new(
        fraud: &FraudConfig,
        recommendations: &RecommendationsConfig,
        fx: FxRates,
    ) -> Result<Self> {
        let (rules_file, rules) = match (&fraud.enabled, &fraud.rules_file) {
            (true, Some(path)) => {
                let (file, rules) = RulesFile::open(path).map_err(|e| Error::Config {
                    message: format!("fraud rules {}: {e}", path.display()),
                })?;
                (Some(file), rules)
            }
            _ => (None, RuleSet::default_rules()),
        };
        Ok(Live {
            fraud: fraud
                .enabled
                .then(|| RwLock::new(FraudEngine::new(rules, fx.clone()))),
            fx,
            recs_config: recommendations.model.clone(),
            recs: recommendations
                .is_enabled()
                .then(|| RwLock::new(RecsEngine::new(recommendations.model.clone()))),
            rules_file: Mutex::new(rules_file),
            reload_interval: Duration::from_millis(fraud.reload_interval_ms.max(100)),
            now: AtomicI64::new(i64::MIN),
            saved_now: AtomicI64::new(i64::MIN),
            metrics: LiveMetrics::default(),
        })
    }

    /// Empties both engines (the running rules stay): a stage that restarts after a failure
    /// reloads its saved state into them, rather than counting the records it re-reads twice.
    pub fn reset(&self) {
        if let Some(f) = &self.fraud {
            let rules = f.read().rules().clone();
            *f.write() = FraudEngine::new(rules, self.fx.clone());
        }
        if let Some(r) = &self.recs {
            *r.write() = RecsEngine::new(self.recs_config.clone());
        }
        self.now.store(i64::MIN, Ordering::Relaxed);
        self.saved_now.store(i64::MIN, Ordering::Relaxed);
    }

    /// Loads the lake's item-to-item history into the recommendation engine (see
    /// [`RecsEngine::seed`]); returns the pairs loaded (0 when recommendations are off).
    pub fn seed_affinity(&self, affinity: &crate::recs::Affinity) -> usize {
        match &self.recs {
            Some(r) => r.write().seed(affinity),
            None => 0,
        }
    }

    /// The recommendation engine's settings (the batch job that seeds it counts alike).
    pub fn recs_config(&self) -> Option<&RecsConfig> {
        self.recs.as_ref().map(|_| &self.recs_config)
    }

    /// Feeds events read back from the `events` table (rebuilding the state when its saved copy
    /// is missing); their fraud decisions are already in the lake and are dropped. Returns how
    /// many events were fed, and how many rows no longer pass the contract (left out; the
    /// caller reports them).
    pub fn replay(&self, batch: &arrow::array::RecordBatch) -> Result<(usize, usize)> {
        let limits = Limits {
            // History is as late as it is: only the shape is checked again.
            max_lateness_micros: i64::MAX / 2,
            ..Limits::default()
        };
        let (mut fed, mut refused) = (0, 0);
        for event in shoplake_events::events_from_batch(batch)? {
            let Ok(bytes) = serde_json::to_vec(&event) else {
                refused += 1;
                continue;
            };
            let received = event
                .received_at
                .as_deref()
                .and_then(shoplake_events::parse_timestamp)
                .unwrap_or_else(|| self.now());
            let Ok(valid) = decode(&bytes, received, &limits) else {
                refused += 1;
                continue;
            };
            let session = event.session_id.as_deref().unwrap_or_default();
            self.feed(&valid, session, false);
            fed += 1;
        }
        Ok((fed, refused))
    }

    /// Whether either engine is on.
    pub fn is_enabled(&self) -> bool {
        self.fraud.is_some() || self.recs.is_some()
    }

    pub fn metrics(&self) -> &LiveMetrics {
        &self.metrics
    }

    /// Feeds one valid, de-duplicated, non-bot event; returns the fraud decision of an order.
    pub fn observe(&self, event: &ValidEvent<'_>, session_id: &str) -> Option<Decision> {
        self.feed(event, session_id, true)
    }

    fn feed(&self, event: &ValidEvent<'_>, session_id: &str, count: bool) -> Option<Decision> {
        self.now.fetch_max(event.event_time, Ordering::Relaxed);
        if let Some(recs) = &self.recs {
            recs.write().observe(event, session_id);
        }
        let decision = self.fraud.as_ref()?.write().observe(event)?;
        if !count {
            return Some(decision);
        }
        let i = match decision.verdict {
            Verdict::Allow => 0,
            Verdict::Review => 1,
            Verdict::Block => 2,
        };
        self.metrics.decisions[i].fetch_add(1, Ordering::Relaxed);
        Some(decision)
    }

    /// Latest event time fed, or the wall clock before any event.
    pub fn now(&self) -> i64 {
        match self.now.load(Ordering::Relaxed) {
            i64::MIN => chrono::Utc::now().timestamp_micros(),
            t => t,
        }
    }

    /// Forgets what no window counts any more, as of event time `now_micros`.
    pub fn expire(&self, now_micros: i64) {
        if let Some(f) = &self.fraud {
            f.write().expire(now_micros);
        }
        if let Some(r) = &self.recs {
            r.write().expire(now_micros);
        }
    }

    /// Entities changed since the last call, keyed `fraud/…` and `recs/…`.
    pub fn take_dirty(&self) -> Vec<(String, Option<Vec<u8>>)> {
        let mut out = Vec::new();
        let now = self.now.load(Ordering::Relaxed);
        if self.saved_now.swap(now, Ordering::Relaxed) != now {
            out.push((NOW_KEY.to_owned(), Some(now.to_le_bytes().to_vec())));
        }
        if let Some(f) = &self.fraud {
            out.extend(
                f.write()
                    .take_dirty()
                    .into_iter()
                    .map(|(k, v)| (format!("{FRAUD_PREFIX}{k}"), v)),
            );
        }
        if let Some(r) = &self.recs {
            out.extend(
                r.write()
                    .take_dirty()
                    .into_iter()
                    .map(|(k, v)| (format!("{RECS_PREFIX}{k}"), v)),
            );
        }
        out
    }

    /// Loads saved entities; those of a switched-off engine are skipped. Returns how many loaded.
    pub fn restore(&self, entries: LiveEntries) -> Result<usize> {
        let mut loaded = 0;
        let bad = |key: &str, e: &dyn std::fmt::Display| Error::Config {
            message: format!("saved live state {key} does not load: {e}"),
        };
        let mut fraud = self.fraud.as_ref().map(|f| f.write());
        let mut recs = self.recs.as_ref().map(|r| r.write());
        for (key, value) in entries {
            if key == NOW_KEY {
                let bytes: [u8; 8] = value
                    .as_slice()
                    .try_into()
                    .map_err(|_| bad(&key, &"not 8 bytes"))?;
                let now = i64::from_le_bytes(bytes);
                self.now.store(now, Ordering::Relaxed);
                self.saved_now.store(now, Ordering::Relaxed);
            } else if let Some(k) = key.strip_prefix(FRAUD_PREFIX) {
                if let Some(f) = fraud.as_mut() {
                    f.restore(k, &value).map_err(|e| bad(&key, &e))?;
                    loaded += 1;
                }
            } else if let Some(k) = key.strip_prefix(RECS_PREFIX) {
                if let Some(r) = recs.as_mut() {
                    r.restore(k, &value).map_err(|e| bad(&key, &e))?;
                    loaded += 1;
                }
            } else {
                return Err(bad(&key, &"not a key of the live engines"));
            }
        }
        // The recommendation engine builds its serving lists once everything is in.
        if loaded > 0
            && let Some(r) = recs.as_mut()
        {
            r.expire(self.now());
            r.refresh();
        }
        Ok(loaded)
    }

    /// Entities held by both engines.
    pub fn entities(&self) -> usize {
        self.fraud.as_ref().map_or(0, |f| f.read().entities())
            + self.recs.as_ref().map_or(0, |r| r.read().entities())
    }

    /// Re-reads the rules file if it changed. A file that does not parse is refused (logged once
    /// with its line and reason) and the running rules stay.
    pub fn check_rules(&self) {
        let mut file = self.rules_file.lock();
        let (Some(file), Some(fraud)) = (file.as_mut(), &self.fraud) else {
            return;
        };
        match file.check() {
            Ok(None) => {}
            Ok(Some(rules)) => {
                info!(file = %file.path().display(), version = rules.version(), "fraud rules reloaded");
                fraud.write().set_rules(rules);
                self.metrics.rules_reloaded.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                let running = fraud.read().rules().version().to_owned();
                warn!(file = %file.path().display(), error = %e, running, "fraud rules refused; the running rules stay");
                self.metrics.rules_refused.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Checks the rules file every `reload_interval_ms` until the task is dropped.
    pub async fn watch_rules(self: Arc<Self>) {
        if self.rules_file.lock().is_none() {
            return;
        }
        let mut tick = tokio::time::interval(self.reload_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.check_rules();
        }
    }

    /// The version of the running fraud rules.
    pub fn rules_version(&self) -> Option<String> {
        self.fraud
            .as_ref()
            .map(|f| f.read().rules().version().to_owned())
    }

    /// Scores an order not placed yet (state unchanged).
    pub fn score(&self, order: &ValidEvent<'_>) -> Option<Decision> {
        Some(self.fraud.as_ref()?.read().score(order))
    }

    /// Recommendations for a shopper (None: recommendations are off).
    pub fn recommend(
        &self,
        shopper: &str,
        query: &RecsQuery<'_>,
    ) -> Option<(bool, Vec<Recommendation>)> {
        let recs = self.recs.as_ref()?.read();
        Some((
            recs.knows_shopper(shopper),
            recs.recommend(shopper, query, self.now()),
        ))
    }

    /// Products related to a product (None: recommendations are off).
    pub fn related(&self, product_id: &str, k: usize) -> Option<(bool, Vec<Recommendation>)> {
        let recs = self.recs.as_ref()?.read();
        Some((
            recs.knows_product(product_id),
            recs.related(product_id, k, self.now()),
        ))
    }

    /// The counters and gauges in the Prometheus text format.
    pub fn render_prometheus(&self) -> String {
        let m = &self.metrics;
        let mut out = String::from(
            "# HELP shoplake_fraud_decisions_total Orders in the stream scored, by decision.\n# TYPE shoplake_fraud_decisions_total counter\n",
        );
        for (i, v) in ["allow", "review", "block"].iter().enumerate() {
            out.push_str(&format!(
                "shoplake_fraud_decisions_total{{decision=\"{v}\"}} {}\n",
                m.decisions[i].load(Ordering::Relaxed)
            ));
        }
        let mut counter = |name: &str, help: &str, v: &AtomicU64| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                v.load(Ordering::Relaxed)
            ));
        };
        counter(
            "shoplake_fraud_score_requests_total",
            "POST /v1/fraud/score requests answered.",
            &m.score_requests,
        );
        counter(
            "shoplake_recommendation_requests_total",
            "GET /v1/recommendations requests answered.",
            &m.recommendation_requests,
        );
        counter(
            "shoplake_related_requests_total",
            "GET /v1/products/{id}/related requests answered.",
            &m.related_requests,
        );
        counter(
            "shoplake_live_bad_requests_total",
            "Requests to the live endpoints answered 400.",
            &m.bad_requests,
        );
        counter(
            "shoplake_fraud_rules_reloaded_total",
            "Fraud rules files loaded after a change.",
            &m.rules_reloaded,
        );
        counter(
            "shoplake_fraud_rules_refused_total",
            "Changed fraud rules files refused (the running rules stayed).",
            &m.rules_refused,
        );
        out.push_str(&format!(
            "# HELP shoplake_live_entities Entities held by the fraud and recommendation state.\n# TYPE shoplake_live_entities gauge\nshoplake_live_entities {}\n",
            self.entities()
        ));
        out
    }
}

/// An answer of the live endpoints that is not a success.
struct ApiError {
    status: StatusCode,
    error: &'static str,
    detail: String,
}

impl ApiError {
    fn bad(error: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            error,
            detail: detail.into(),
        }
    }

    fn off(what: &str) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            error: "switched off",
            detail: format!("{what} is switched off in this stage's config"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.error, "detail": self.detail })),
        )
            .into_response()
    }
}

/// The live endpoints over `live`.
pub fn router(live: Arc<Live>) -> Router {
    Router::new()
        .route("/v1/fraud/score", post(score))
        .route("/v1/recommendations/{shopper}", get(recommendations))
        .route("/v1/products/{id}/related", get(related))
        .with_state(live)
}

/// Most items one request may ask for.
pub const MAX_K: usize = 100;
const DEFAULT_K: usize = 10;

fn parse_k(k: Option<&str>) -> std::result::Result<usize, ApiError> {
    match k {
        None | Some("") => Ok(DEFAULT_K),
        Some(s) => match s.parse::<usize>() {
            Ok(k) if (1..=MAX_K).contains(&k) => Ok(k),
            _ => Err(ApiError::bad(
                "invalid k",
                format!("k must be a whole number from 1 to {MAX_K}, not {s:?}"),
            )),
        },
    }
}

#[derive(Deserialize)]
struct RecsParams {
    k: Option<String>,
    context_product: Option<String>,
    category: Option<String>,
}

#[derive(Serialize)]
struct RecsAnswer<'a> {
    shopper: &'a str,
    /// Whether the shopper has history here (false: the items are trending / popular ones).
    known: bool,
    items: Vec<Recommendation>,
}

async fn recommendations(
    State(live): State<Arc<Live>>,
    Path(shopper): Path<String>,
    params: std::result::Result<Query<RecsParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let answer = (|| {
        let Query(p) = params.map_err(|e| ApiError::bad("invalid query", e.body_text()))?;
        let k = parse_k(p.k.as_deref())?;
        let shopper = shopper.trim();
        if shopper.is_empty() || shopper.len() > 256 {
            return Err(ApiError::bad(
                "invalid shopper",
                "the shopper is a user id or an anonymous id of 1 to 256 characters",
            ));
        }
        let query = RecsQuery {
            k,
            context_product: p.context_product.as_deref().filter(|s| !s.is_empty()),
            category: p.category.as_deref().filter(|s| !s.is_empty()),
        };
        let (known, items) = live
            .recommend(shopper, &query)
            .ok_or_else(|| ApiError::off("recommendations"))?;
        live.metrics
            .recommendation_requests
            .fetch_add(1, Ordering::Relaxed);
        Ok(Json(RecsAnswer {
            shopper,
            known,
            items,
        })
        .into_response())
    })();
    respond(&live, answer)
}

#[derive(Deserialize)]
struct RelatedParams {
    k: Option<String>,
}

#[derive(Serialize)]
struct RelatedAnswer<'a> {
    product_id: &'a str,
    /// Whether the product has been seen (false: the items are trending / popular ones).
    known: bool,
    items: Vec<Recommendation>,
}

async fn related(
    State(live): State<Arc<Live>>,
    Path(id): Path<String>,
    params: std::result::Result<Query<RelatedParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let answer = (|| {
        let Query(p) = params.map_err(|e| ApiError::bad("invalid query", e.body_text()))?;
        let k = parse_k(p.k.as_deref())?;
        let id = id.trim();
        if id.is_empty() || id.len() > 256 {
            return Err(ApiError::bad(
                "invalid product id",
                "a product id has 1 to 256 characters",
            ));
        }
        let (known, items) = live
            .related(id, k)
            .ok_or_else(|| ApiError::off("recommendations"))?;
        live.metrics
            .related_requests
            .fetch_add(1, Ordering::Relaxed);
        Ok(Json(RelatedAnswer {
            product_id: id,
            known,
            items,
        })
        .into_response())
    })();
    respond(&live, answer)
}

fn respond(live: &Live, answer: std::result::Result<Response, ApiError>) -> Response {
    answer.unwrap_or_else(|e| {
        if e.status == StatusCode::BAD_REQUEST {
            live.metrics.bad_requests.fetch_add(1, Ordering::Relaxed);
        }
        e.into_response()
    })
}

/// `POST /v1/fraud/score`: an order about to be placed, as an `order_completed` event of the
/// contract (the same JSON an emitter sends). `event_name`, `event_id`, `occurred_at` and
/// `properties.order_id` may be left out: an order not placed yet has none of them.
async fn score(State(live): State<Arc<Live>>, body: axum::body::Bytes) -> Response {
    let answer = (|| {
        let mut order: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad("invalid JSON", format!("the body is not JSON: {e}")))?;
        let obj = order.as_object_mut().ok_or_else(|| {
            ApiError::bad(
                "invalid order",
                "the body is an order_completed event: a JSON object",
            )
        })?;
        let now = chrono::Utc::now().timestamp_micros();
        match obj.get("event_name").and_then(|v| v.as_str()) {
            None => {
                obj.insert(
                    "event_name".into(),
                    EventName::OrderCompleted.as_str().into(),
                );
            }
            Some(n) if n == EventName::OrderCompleted.as_str() => {}
            Some(n) => {
                return Err(ApiError::bad(
                    "invalid order",
                    format!("event_name must be order_completed (or left out), not {n:?}"),
                ));
            }
        }
        obj.entry("event_id")
            .or_insert_with(|| uuid::Uuid::new_v4().to_string().into());
        obj.entry("occurred_at")
            .or_insert_with(|| format_timestamp(now).into());
        let mut invented_order_id = false;
        if let Some(props) = obj.get_mut("properties").and_then(|p| p.as_object_mut())
            && !props.contains_key("order_id")
        {
            props.insert("order_id".into(), "(not placed)".into());
            invented_order_id = true;
        }
        let bytes = serde_json::to_vec(&order)
            .map_err(|e| ApiError::bad("invalid order", e.to_string()))?;
        let valid = decode(&bytes, now, &Limits::default())
            .map_err(|r| ApiError::bad("invalid order", r.to_string()))?;
        let mut decision = live
            .score(&valid)
            .ok_or_else(|| ApiError::off("fraud scoring"))?;
        if invented_order_id {
            decision.order_id.clear();
        }
        live.metrics.score_requests.fetch_add(1, Ordering::Relaxed);
        Ok(Json(decision).into_response())
    })();
    respond(&live, answer)
}

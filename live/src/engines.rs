//! The live engines behind one handle that the stage writes and HTTP reads: fraud scoring
//! ([`crate::fraud`]) and recommendations ([`crate::recs`]). [`Live`] is the stage's
//! [`Observer`]: it sees every admitted event, stages a decision per order and saves its state
//! with the stage's checkpoints.
//!
//! ```text
//! stage ──observe(event)──► Live ─┬─ FraudEngine  ─► decisions ─► _staging/fraud_decisions
//!   │                             └─ RecsEngine
//!   └─ flush: expire + take_dirty ─► redb, with the checkpoint (same transaction)
//!
//! HTTP (crate::http::router): POST /v1/fraud/score               ─► FraudEngine::score (read lock)
//!                GET  /v1/recommendations/{shopper} ─► RecsEngine::recommend (read lock)
//!                GET  /v1/products/{id}/related     ─► RecsEngine::related (read lock)
//! ```
//!
//! Each engine sits behind its own `parking_lot::RwLock`, taken per event by the stage and per
//! request by the endpoints, so a request never waits for more than one event's update.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use shoplake_events::lake::STAGING_FRAUD_DECISIONS;
use shoplake_events::{Limits, ValidEvent, decode};
use shoplake_server::telemetry::{self, Collector, DescriptorEncoder};
use shoplake_transform::enrich::fx::FxRates;
use shoplake_transform::observe::{Observer, ObserverError, SavedEntries, StagedRows};
use tracing::{info, warn};

use crate::config::{FraudConfig, RecommendationsConfig};
use crate::fraud::decisions::DecisionRows;
use crate::fraud::{Decision, FraudEngine, RuleSet, RulesFile, Verdict};
use crate::recs::{Recommendation, RecsConfig, RecsEngine, RecsQuery};
use crate::{Error, Result};

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
    /// Latest event time observed from the stream (not replayed): expiry's clock.
    observed_until: AtomicI64,
    /// Decisions on the orders observed since the stage's last flush.
    decisions: Mutex<DecisionRows>,
    /// The last hour, minute by minute (the dashboards' Live page).
    pulse: crate::pulse::Pulse,
    metrics: LiveMetrics,
}

const FRAUD_PREFIX: &str = "fraud/";
const RECS_PREFIX: &str = "recs/";
/// The latest event time fed, saved so that a restarted stage answers as of the same moment.
const NOW_KEY: &str = "live/now";

impl Live {
    /// The engines `config` switches on (see [`Live::new`]).
    pub fn from_config(config: &crate::LiveConfig, fx: FxRates) -> Result<Self> {
        Live::new(&config.fraud, &config.recommendations, fx)
    }

    /// The engines the config switches on; the rules from the configured file (refused with its
    /// line and reason when it does not parse) or the built-in ones.
    pub fn new(
        fraud: &FraudConfig,
        recommendations: &RecommendationsConfig,
        fx: FxRates,
    ) -> Result<Self> {
        let (rules_file, rules) = match (&fraud.enabled, &fraud.rules_file) {
            (true, Some(path)) => {
                let (file, rules) = RulesFile::open(path).map_err(|source| Error::Rules {
                    path: path.clone(),
                    source,
                })?;
                (Some(file), rules)
            }
            _ => (None, RuleSet::default_rules()),
        };
        Ok(Live {
            fraud: fraud
                .enabled
                .then(|| RwLock::new(FraudEngine::new(rules, fx.clone()))),
            fx: fx.clone(),
            recs_config: recommendations.model.clone(),
            recs: recommendations
                .is_enabled()
                .then(|| RwLock::new(RecsEngine::new(recommendations.model.clone()))),
            rules_file: Mutex::new(rules_file),
            reload_interval: fraud.reload_interval.max(Duration::from_millis(100)),
            now: AtomicI64::new(i64::MIN),
            saved_now: AtomicI64::new(i64::MIN),
            observed_until: AtomicI64::new(i64::MIN),
            decisions: Mutex::new(DecisionRows::default()),
            pulse: crate::pulse::Pulse::new(fx.clone()),
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
        self.observed_until.store(i64::MIN, Ordering::Relaxed);
        *self.decisions.lock() = DecisionRows::default();
        self.pulse.reset();
    }

    /// The last hour of the stream, minute by minute, as of now.
    pub fn pulse(&self) -> crate::pulse::PulseView {
        self.pulse.view(chrono::Utc::now().timestamp_micros())
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

    /// Feeds one valid, de-duplicated, non-bot event; returns the fraud decision of an order
    /// (which the stage's [`Observer::observe`] also keeps for its next flush).
    pub fn observe_event(&self, event: &ValidEvent<'_>, session_id: &str) -> Option<Decision> {
        self.feed(event, session_id, true)
    }

    fn feed(&self, event: &ValidEvent<'_>, session_id: &str, count: bool) -> Option<Decision> {
        self.now.fetch_max(event.event_time, Ordering::Relaxed);
        self.pulse
            .observe(event, session_id, chrono::Utc::now().timestamp_micros());
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
    pub fn restore(&self, entries: SavedEntries) -> Result<usize> {
        let mut loaded = 0;
        let bad = |key: &str, e: &dyn std::fmt::Display| Error::SavedState {
            key: key.to_owned(),
            reason: e.to_string(),
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

    /// Checks the rules file every `reload_interval` until the task is dropped.
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
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("fraud", &self.fraud.is_some())
            .field("recommendations", &self.recs.is_some())
            .finish_non_exhaustive()
    }
}

/// Metric names of the live engines (counters without `_total`, which the encoder adds).
pub mod names {
    pub const FRAUD_DECISIONS: &str = "shoplake_fraud_decisions";
    pub const FRAUD_SCORE_REQUESTS: &str = "shoplake_fraud_score_requests";
    pub const RECOMMENDATION_REQUESTS: &str = "shoplake_recommendation_requests";
    pub const RELATED_REQUESTS: &str = "shoplake_related_requests";
    pub const BAD_REQUESTS: &str = "shoplake_live_bad_requests";
    pub const RULES_RELOADED: &str = "shoplake_fraud_rules_reloaded";
    pub const RULES_REFUSED: &str = "shoplake_fraud_rules_refused";
    pub const ENTITIES: &str = "shoplake_live_entities";
}

/// The engines' counters and the size of their state.
impl Collector for Live {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        let m = &self.metrics;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        telemetry::counter_by(
            &mut enc,
            names::FRAUD_DECISIONS,
            "Orders in the stream scored, by decision.",
            "decision",
            ["allow", "review", "block"]
                .into_iter()
                .zip(m.decisions.iter().map(load)),
        )?;
        let counters: [(&str, &str, &AtomicU64); 6] = [
            (
                names::FRAUD_SCORE_REQUESTS,
                "POST /v1/fraud/score requests answered.",
                &m.score_requests,
            ),
            (
                names::RECOMMENDATION_REQUESTS,
                "GET /v1/recommendations requests answered.",
                &m.recommendation_requests,
            ),
            (
                names::RELATED_REQUESTS,
                "GET /v1/products/{id}/related requests answered.",
                &m.related_requests,
            ),
            (
                names::BAD_REQUESTS,
                "Requests to the live endpoints answered 400.",
                &m.bad_requests,
            ),
            (
                names::RULES_RELOADED,
                "Fraud rules files loaded after a change.",
                &m.rules_reloaded,
            ),
            (
                names::RULES_REFUSED,
                "Changed fraud rules files refused (the running rules stayed).",
                &m.rules_refused,
            ),
        ];
        for (name, help, v) in counters {
            telemetry::counter(&mut enc, name, help, load(v))?;
        }
        telemetry::gauge(
            &mut enc,
            names::ENTITIES,
            "Entities held by the fraud and recommendation state.",
            self.entities() as u64,
        )
    }
}

/// The stage feeds the engines through this: decisions are staged with each flush (for the
/// `fraud_decisions` table) and changed entities saved with each checkpoint.
impl Observer for Live {
    fn reset(&self) {
        Live::reset(self);
    }

    fn restore(&self, saved: SavedEntries) -> std::result::Result<usize, ObserverError> {
        Ok(Live::restore(self, saved)?)
    }

    fn observe(&self, event: &ValidEvent<'_>, session_id: &str) {
        self.observed_until
            .fetch_max(event.event_time, Ordering::Relaxed);
        if let Some(decision) = self.observe_event(event, session_id) {
            self.decisions.lock().push(decision, event.received_at);
        }
    }

    fn replay(
        &self,
        batch: &arrow::array::RecordBatch,
    ) -> std::result::Result<(usize, usize), ObserverError> {
        Ok(Live::replay(self, batch)?)
    }

    fn take_rows(&self, now_micros: i64) -> std::result::Result<Vec<StagedRows>, ObserverError> {
        let mut decisions = self.decisions.lock();
        if decisions.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![StagedRows {
            folder: STAGING_FRAUD_DECISIONS,
            batch: decisions.finish(now_micros)?,
        }])
    }

    fn take_dirty(&self, flushes: u64) -> Vec<(String, Option<Vec<u8>>)> {
        // Expiry walks the whole state: every 20 flushes (a minute or two) is enough for windows
        // of ten minutes and more.
        let until = self.observed_until.load(Ordering::Relaxed);
        if until > i64::MIN && flushes % 20 == 19 {
            self.expire(until);
        } else if let Some(r) = &self.recs {
            // What the storefront is served catches up with every event read so far (see
            // `RecsEngine::refresh_if_changed`), and is what the checkpoint saves.
            r.write().refresh_if_changed();
        }
        Live::take_dirty(self)
    }
}

//! Real-time fraud scoring of orders.
//!
//! The streaming stage feeds every valid, de-duplicated, non-bot event to a [`FraudEngine`]
//! ([`FraudEngine::observe`]); the engine keeps small per-entity state (accounts, cards, devices,
//! IPs, shipping addresses, recent orders) over event-time windows and, for each
//! `order_completed`, computes [features], runs the [rules] and returns a [`Decision`]: a score,
//! a verdict (allow / review / block) and the reason codes that fired. The checkout endpoint asks
//! the same engine about an order not placed yet ([`FraudEngine::score`], state unchanged).
//!
//! ```text
//! event ─► observe ─┬─ order_completed ─► features ─► rules ─► Decision ─► fraud_decisions
//!                   │                         └─ then recorded: order windows, accounts, cards
//!                   ├─ payment_info_entered ─► attempt windows (account, device, IP)
//!                   ├─ payment_failed ───────► failure windows of the order's entities
//!                   ├─ signed_up / logged_in ► account age, devices of the account, accounts per
//!                   │                          device and IP
//!                   ├─ product_viewed ───────► views per device
//!                   └─ anything else ────────► nothing (no lookup, no allocation)
//! ```
//!
//! State is bounded: window entries are forgotten once no window can count them
//! ([`FraudEngine::expire`]: the longest window, a day, plus the allowed lateness); devices,
//! cards, IPs, addresses and orders are forgotten a day after their last activity, account
//! profiles (order count and amounts, devices, shipping countries) after
//! [`EngineConfig::profile_ttl_micros`] idle. Events later than the allowed lateness are scored
//! but not recorded. The stage persists changed entities with each checkpoint
//! ([`FraudEngine::take_dirty`], in the same redb transaction) and reloads them on start
//! ([`FraudEngine::restore`]).
//!
//! Amounts are compared in the stage's reporting currency ([`FxRates`]).
//! [`decisions`] turns decisions into rows of the `fraud_decisions` table; [`eval`] measures
//! decisions against ground-truth labels (the simulator's, or a fraud team's).

pub mod decisions;
pub mod eval;
pub mod features;
pub mod logistic;
pub mod model;
pub mod rules;
mod state;
pub mod windows;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use shoplake_events::{EventName, ValidEvent};

use features::{Keys, OrderFacts};
pub use rules::{RuleError, RuleSet, RulesFile, Verdict};
use shoplake_transform::enrich::fx::FxRates;
use state::{Entity, Key, Kind, Profile, Store};
use windows::{HOUR, LONGEST};

/// Errors of the fraud engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FraudError {
    /// A persisted key that is not `kind:hash` (not written by this engine).
    #[error("fraud state key {key:?} is not an entity key")]
    BadKey { key: String },
    /// A persisted entity that does not decode (written by an incompatible version).
    #[error("fraud state of {key} does not decode: {source}")]
    BadState {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

/// How the engine keeps state.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// How late an event may be (behind the latest event time seen) and still be recorded in the
    /// windows. Window entries are kept this long past the longest window.
    pub allowed_lateness_micros: i64,
    /// How long an idle account's profile (order history, devices, shipping countries) is kept.
    pub profile_ttl_micros: i64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            allowed_lateness_micros: HOUR,
            profile_ttl_micros: 90 * windows::DAY,
        }
    }
}

/// The engine's answer about one order.
#[derive(Clone, Debug, Serialize)]
pub struct Decision {
    /// "" when the scored order has none yet.
    pub order_id: String,
    pub event_id: String,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    /// UTC micros.
    pub event_time: i64,
    pub total: Option<f64>,
    pub currency: Option<String>,
    pub score: f64,
    pub verdict: Verdict,
    /// Reason codes of the rules that fired (not shadow).
    pub reasons: Vec<String>,
    pub shadow_reasons: Vec<String>,
    /// Every feature's value, in [`features::Feature::ALL`] order.
    pub features: Vec<(&'static str, f64)>,
    pub rules_version: String,
}

/// The `fraud_decisions` columns [`Decision::from_lake_row`] reads, as SQL over the lake.
pub const DECISIONS_SQL: &str = "select order_id, event_id, user_id, anonymous_id, event_time, \
     cast(total as double) as total, currency, decision, score, reasons, shadow_reasons, \
     features, rules_version from fraud_decisions";

impl Decision {
    /// A decision read back from the lake: a row of [`DECISIONS_SQL`] as a JSON object (the
    /// query service's JSON rows, where the `features` map is an object). Features this version
    /// does not know are left out.
    pub fn from_lake_row(row: &serde_json::Value) -> Decision {
        let text = |k: &str| row[k].as_str().unwrap_or_default().to_owned();
        let optional = |k: &str| row[k].as_str().map(str::to_owned);
        let list = |k: &str| {
            row[k]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        Decision {
            order_id: text("order_id"),
            event_id: text("event_id"),
            user_id: optional("user_id"),
            anonymous_id: optional("anonymous_id"),
            event_time: row["event_time"]
                .as_str()
                .and_then(shoplake_events::parse_timestamp)
                .unwrap_or_default(),
            total: row["total"].as_f64(),
            currency: optional("currency"),
            score: row["score"].as_f64().unwrap_or_default(),
            verdict: match row["decision"].as_str() {
                Some("block") => Verdict::Block,
                Some("review") => Verdict::Review,
                _ => Verdict::Allow,
            },
            reasons: list("reasons"),
            shadow_reasons: list("shadow_reasons"),
            features: features::Feature::ALL
                .iter()
                .filter_map(|f| Some((f.name(), row["features"][f.name()].as_f64()?)))
                .collect(),
            rules_version: text("rules_version"),
        }
    }

    /// A feature's value by name.
    pub fn feature(&self, name: &str) -> Option<f64> {
        self.features
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, v)| v)
    }
}

/// The fraud engine: state, rules and FX rates.
pub struct FraudEngine {
    rules: Arc<RuleSet>,
    fx: FxRates,
    config: EngineConfig,
    store: Store,
    /// Latest event time recorded.
    watermark: i64,
    /// Conditions that failed to evaluate (counted as not fired).
    rule_errors: AtomicU64,
}

impl FraudEngine {
    /// An engine with the default [`EngineConfig`]; amounts are converted with `fx`.
    pub fn new(rules: Arc<RuleSet>, fx: FxRates) -> Self {
        Self::with_config(rules, fx, EngineConfig::default())
    }

    pub fn with_config(rules: Arc<RuleSet>, fx: FxRates, config: EngineConfig) -> Self {
        let horizon = LONGEST + config.allowed_lateness_micros.max(0);
        FraudEngine {
            rules,
            fx,
            store: Store::new(horizon, config.profile_ttl_micros),
            config,
            watermark: i64::MIN,
            rule_errors: AtomicU64::new(0),
        }
    }

    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

    pub fn set_rules(&mut self, rules: Arc<RuleSet>) {
        self.rules = rules;
    }

    /// Feeds one valid, de-duplicated, non-bot event; returns the decision for an
    /// `order_completed`.
    pub fn observe(&mut self, event: &ValidEvent<'_>) -> Option<Decision> {
        let t = event.event_time;
        match event.name {
            EventName::OrderCompleted => {
                let facts = OrderFacts::of(event, &self.fx);
                let decision = self.decide(event, &facts);
                if self.recordable(t) {
                    self.record_order(&facts);
                }
                Some(decision)
            }
            EventName::PaymentInfoEntered if self.recordable(t) => {
                let keys = Keys::of(event);
                for key in [keys.user, keys.device, keys.ip].into_iter().flatten() {
                    self.store.touch(key, t).activity_mut().attempts.add(t, 1);
                }
                None
            }
            EventName::PaymentFailed if self.recordable(t) => {
                self.record_failure(event);
                None
            }
            EventName::SignedUp | EventName::LoggedIn if self.recordable(t) => {
                self.record_account(event);
                None
            }
            EventName::ProductViewed if self.recordable(t) => {
                if let Some(device) = Keys::device_of(event) {
                    self.store.touch(device, t).views.add(t, 1);
                }
                None
            }
            _ => None,
        }
    }

    /// Scores an order that is not placed yet (an order_completed-shaped event), leaving state
    /// unchanged.
    pub fn score(&self, order: &ValidEvent<'_>) -> Decision {
        let facts = OrderFacts::of(order, &self.fx);
        self.decide(order, &facts)
    }

    /// Forgets window entries that no window can count any more, as of event time `now_micros`.
    pub fn expire(&mut self, now_micros: i64) {
        self.store.expire(now_micros);
    }

    /// Entities changed since the last call: (key, Some(serialized state)) or (key, None) when
    /// deleted.
    pub fn take_dirty(&mut self) -> Vec<(String, Option<Vec<u8>>)> {
        let mut out = Vec::with_capacity(self.store.dirty.len());
        for key in std::mem::take(&mut self.store.dirty) {
            let value = match self.store.map.get(&key) {
                None => None,
                Some(entity) => match serde_json::to_vec(entity) {
                    Ok(bytes) => Some(bytes),
                    Err(e) => {
                        // Plain structs of numbers and strings: not expected; keep the old copy.
                        tracing::error!(key = %key, error = %e, "fraud state did not serialize");
                        continue;
                    }
                },
            };
            out.push((key.to_string(), value));
        }
        out
    }

    /// Loads one entity saved by [`FraudEngine::take_dirty`].
    pub fn restore(&mut self, key: &str, value: &[u8]) -> Result<(), FraudError> {
        let parsed = Key::parse(key).ok_or_else(|| FraudError::BadKey {
            key: key.to_owned(),
        })?;
        let entity: Entity =
            serde_json::from_slice(value).map_err(|source| FraudError::BadState {
                key: key.to_owned(),
                source,
            })?;
        self.watermark = self.watermark.max(entity.last_seen);
        self.store.restore(parsed, entity);
        Ok(())
    }

    /// Entities held (for a gauge).
    pub fn entities(&self) -> usize {
        self.store.map.len()
    }

    /// Conditions that failed to evaluate since the engine started (counted as not fired).
    pub fn rule_errors(&self) -> u64 {
        self.rule_errors.load(Ordering::Relaxed)
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Whether an event at `t` is recent enough to be recorded; moves the watermark.
    fn recordable(&mut self, t: i64) -> bool {
        if t <= self
            .watermark
            .saturating_sub(self.config.allowed_lateness_micros)
        {
            return false;
        }
        self.watermark = self.watermark.max(t);
        true
    }

    fn decide(&self, event: &ValidEvent<'_>, facts: &OrderFacts<'_>) -> Decision {
        let mut values = features::compute(&self.store, facts);
        self.rules.apply_model(&mut values);
        let outcome = self.rules.evaluate(&values);
        if outcome.errors > 0 {
            self.rule_errors
                .fetch_add(u64::from(outcome.errors), Ordering::Relaxed);
        }
        let e = &event.event;
        let props = e.properties.as_ref();
        Decision {
            order_id: props
                .and_then(|p| p.order_id.as_deref())
                .unwrap_or_default()
                .to_owned(),
            event_id: event.event_id().to_owned(),
            user_id: e.user_id.as_deref().map(str::to_owned),
            anonymous_id: e.anonymous_id.as_deref().map(str::to_owned),
            event_time: event.event_time,
            total: props.and_then(|p| p.total),
            currency: props.and_then(|p| p.currency.as_deref()).map(str::to_owned),
            score: outcome.score,
            verdict: outcome.verdict,
            reasons: outcome.reasons,
            shadow_reasons: outcome.shadow_reasons,
            features: values.to_vec(),
            rules_version: self.rules.version().to_owned(),
        }
    }

    fn record_order(&mut self, facts: &OrderFacts<'_>) {
        let t = facts.time;
        let k = facts.keys;
        if let Some(order) = k.order {
            if self.store.map.contains_key(&order) {
                // The same order sent again: counted already.
                return;
            }
            let links = [k.user, k.card, k.device, k.ip, k.address]
                .into_iter()
                .flatten()
                .collect();
            self.store.touch(order, t).order = Some(Box::new(state::OrderLinks {
                placed: t,
                keys: links,
                failed: false,
            }));
        }
        let card_id = k.card.map(|c| c.id);
        let amount = facts.amount.unwrap_or(0.0);
        for key in [k.user, k.card, k.device, k.ip, k.address]
            .into_iter()
            .flatten()
        {
            let entity = self.store.touch(key, t).activity_mut();
            entity.orders.add_amount(t, 1, amount);
            if let (Some(account), true) = (k.account, key.kind != Kind::User) {
                entity.accounts.add(account, t);
            }
            if let (Some(card), Kind::Device | Kind::Ip) = (card_id, key.kind) {
                entity.cards.add(card, t);
            }
        }
        if let Some(user) = k.user {
            let profile = self
                .store
                .touch(user, t)
                .profile
                .get_or_insert_with(Box::default);
            profile.orders = profile.orders.saturating_add(1);
            profile.amount_sum += amount;
            profile.amount_max = profile.amount_max.max(amount);
            if let Some(device) = k.device {
                profile.use_device(device.id, t);
            }
            if let Some(country) = facts.shipping_country {
                profile.ship_to(country);
            }
        }
    }

    fn record_failure(&mut self, event: &ValidEvent<'_>) {
        let t = event.event_time;
        let keys = Keys::of(event);
        let mut targets: Vec<Key> = Vec::new();
        if let Some(order) = keys.order
            && let Some(links) = self
                .store
                .map
                .get_mut(&order)
                .and_then(|e| e.order.as_mut())
        {
            if links.failed {
                return;
            }
            links.failed = true;
            self.store.dirty.insert(order);
            targets.extend(links.keys.iter().copied());
        } else if let Some(user) = keys.user {
            // An order the engine did not see (placed before it started): the account alone.
            targets.push(user);
        }
        for key in targets {
            self.store.touch(key, t).activity_mut().failed.add(t, 1);
        }
    }

    fn record_account(&mut self, event: &ValidEvent<'_>) {
        let t = event.event_time;
        let keys = Keys::of(event);
        let Some(user) = keys.user else { return };
        let entity = self.store.touch(user, t);
        let profile = entity.profile.get_or_insert_with(Box::<Profile>::default);
        if event.name == EventName::SignedUp {
            profile.signed_up = Some(profile.signed_up.map_or(t, |s| s.min(t)));
        }
        if let Some(device) = keys.device {
            profile.use_device(device.id, t);
        }
        if let Some(account) = keys.account {
            for key in [keys.device, keys.ip].into_iter().flatten() {
                self.store
                    .touch(key, t)
                    .activity_mut()
                    .accounts
                    .add(account, t);
            }
        }
    }
}

#[cfg(test)]
mod tests;

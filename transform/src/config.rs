//! What the streaming stage does: the `[stage]` table of the pipeline config file.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shoplake_events::Limits;

/// Settings of the streaming stage. Every field has a default; a config file sets only what it
/// changes.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StageConfig {
    /// Currency of `total_reporting` / `revenue_reporting` (ISO 4217).
    pub reporting_currency: String,
    /// Conversion rates: units of `fx_base` per unit of each currency, as decimal strings. Empty:
    /// the built-in table (`transform::enrich::fx::DEFAULT_USD_RATES`).
    pub fx: BTreeMap<String, String>,
    /// Currency the `fx` rates are expressed in.
    pub fx_base: String,
    /// Inactivity that ends an inferred session, in seconds.
    pub session_timeout_secs: u64,
    /// A flush happens when this many records are buffered …
    pub max_batch_records: usize,
    /// … or when the oldest buffered record is this old (milliseconds).
    pub max_batch_age_ms: u64,
    /// Records requested from a shard per read.
    pub read_batch: usize,
    /// How long an event id is remembered for de-duplication, in hours of received time.
    pub dedup_ttl_hours: u64,
    /// Most event ids remembered; the oldest go first beyond it.
    pub dedup_max_entries: usize,
    /// Largest accepted event in bytes.
    pub max_event_bytes: usize,
    /// How late an event may arrive, in days.
    pub max_lateness_days: u64,
}

impl Default for StageConfig {
    fn default() -> Self {
        StageConfig {
            reporting_currency: "USD".into(),
            fx: BTreeMap::new(),
            fx_base: "USD".into(),
            session_timeout_secs: 30 * 60,
            max_batch_records: 100_000,
            max_batch_age_ms: 5_000,
            read_batch: 2_000,
            dedup_ttl_hours: 72,
            dedup_max_entries: 5_000_000,
            max_event_bytes: Limits::default().max_event_bytes,
            max_lateness_days: 30,
        }
    }
}

impl StageConfig {
    /// The reporting currency's conversion rates this config sets (or the built-in table).
    pub fn fx_rates(&self) -> crate::Result<crate::enrich::fx::FxRates> {
        if self.fx.is_empty() {
            crate::enrich::fx::FxRates::defaults(&self.reporting_currency)
        } else {
            crate::enrich::fx::FxRates::new(&self.reporting_currency, &self.fx_base, &self.fx)
        }
    }

    /// The validation limits this config implies.
    pub fn limits(&self) -> Limits {
        Limits {
            max_event_bytes: self.max_event_bytes,
            max_lateness_micros: self.max_lateness_days as i64 * 86_400_000_000,
            ..Limits::default()
        }
    }
}

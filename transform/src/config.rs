//! What the streaming stage does: the `[stage]` table of the pipeline config file.

use std::collections::BTreeMap;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoplake_events::{Currency, Limits};

/// Settings of the streaming stage. Every field has a default; a config file sets only what it
/// changes.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StageConfig {
    /// Currency of `total_reporting` / `revenue_reporting` (ISO 4217).
    pub reporting_currency: Currency,
    /// Conversion rates: units of `fx_base` per unit of each currency, as decimal strings. Empty:
    /// the built-in table (`transform::enrich::fx::DEFAULT_USD_RATES`).
    pub fx: BTreeMap<String, String>,
    /// Currency the `fx` rates are expressed in.
    pub fx_base: Currency,
    /// Inactivity that ends an inferred session (`"30m"`).
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// A flush happens when this many records are buffered …
    pub max_batch_records: usize,
    /// … or when the oldest buffered record is this old (`"5s"`).
    #[serde(with = "humantime_serde")]
    pub max_batch_age: Duration,
    /// Records requested from a shard per read.
    pub read_batch: usize,
    /// How long an event id is remembered for de-duplication, in received time (`"72h"`).
    #[serde(with = "humantime_serde")]
    pub dedup_ttl: Duration,
    /// Most event ids remembered; the oldest go first beyond it.
    pub dedup_max_entries: usize,
    /// Largest accepted event in bytes.
    pub max_event_bytes: usize,
    /// How late an event may arrive (`"30days"`).
    #[serde(with = "humantime_serde")]
    pub max_lateness: Duration,
}

impl Default for StageConfig {
    fn default() -> Self {
        StageConfig {
            reporting_currency: Currency::USD,
            fx: BTreeMap::new(),
            fx_base: Currency::USD,
            session_timeout: Duration::from_secs(30 * 60),
            max_batch_records: 100_000,
            max_batch_age: Duration::from_secs(5),
            read_batch: 2_000,
            dedup_ttl: Duration::from_secs(72 * 3600),
            dedup_max_entries: 5_000_000,
            max_event_bytes: Limits::default().max_event_bytes,
            max_lateness: Duration::from_secs(30 * 86_400),
        }
    }
}

impl StageConfig {
    /// The reporting currency's conversion rates this config sets (or the built-in table).
    pub fn fx_rates(&self) -> crate::Result<crate::enrich::fx::FxRates> {
        if self.fx.is_empty() {
            crate::enrich::fx::FxRates::defaults(self.reporting_currency.as_str())
        } else {
            crate::enrich::fx::FxRates::new(
                self.reporting_currency.as_str(),
                self.fx_base.as_str(),
                &self.fx,
            )
        }
    }

    /// The validation limits this config implies.
    pub fn limits(&self) -> Limits {
        Limits {
            max_event_bytes: self.max_event_bytes,
            max_lateness_micros: micros(self.max_lateness),
            ..Limits::default()
        }
    }
}

/// A config duration in microseconds (the unit of event times).
pub fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

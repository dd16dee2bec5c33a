//! The collector's settings: the `[collector]` table of the pipeline config file.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What the collector accepts and what it does to events before they reach the stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// Largest event, in bytes of JSON after gzip is undone (Segment's limit: 32 KB). A larger
    /// single call is a 400; a larger event inside a batch becomes a `too_large` bad row.
    pub max_event_bytes: usize,
    /// Largest batch request, in bytes after gzip is undone (Segment's limit: 500 KB); a larger
    /// one is a 413.
    pub max_batch_bytes: usize,
    /// Events per second each write key may send: the refill rate of its token bucket.
    pub rate_limit_events_per_sec: f64,
    /// Events a write key may send at once: the size of its token bucket.
    pub rate_limit_burst: f64,
    /// Origins browsers may send events from (`Access-Control-Allow-Origin`); `["*"]` allows any.
    pub cors_allowed_origins: Vec<String>,
    /// A MaxMind DB file (GeoIP2 / GeoLite2 Country or City) to set `country` from the client's
    /// IP address; none: `country` is left empty.
    pub geoip_database: Option<PathBuf>,
    /// Store IP addresses truncated to their /24 (IPv4) or /48 (IPv6) network. The country is
    /// looked up before truncation.
    pub truncate_ips: bool,
    /// Replace every e-mail address in `user_id`, traits and properties by the hex SHA-256 of its
    /// trimmed, lower-cased form (the form ad platforms match on), before the event is stored.
    pub hash_emails: bool,
    /// Take the client's IP from the first address of `X-Forwarded-For` (only behind a proxy
    /// that sets it); otherwise the peer address of the connection is used.
    pub trust_x_forwarded_for: bool,
    /// How long a client is told to wait (`Retry-After`, whole seconds) when the stream is
    /// unavailable (`"2s"`).
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
    /// How long `/ready` answers 503 after the stream failed a write, before traffic is let
    /// through again to test it (`"5s"`).
    #[serde(with = "humantime_serde")]
    pub unready: Duration,
    /// How soon a key created or revoked by `shoplake keys` (another process) is seen by a
    /// running collector (`"2s"`).
    #[serde(with = "humantime_serde")]
    pub key_refresh: Duration,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            max_event_bytes: 32 * 1024,
            max_batch_bytes: 500 * 1024,
            rate_limit_events_per_sec: 20_000.0,
            rate_limit_burst: 40_000.0,
            cors_allowed_origins: vec!["*".to_owned()],
            geoip_database: None,
            truncate_ips: false,
            hash_emails: false,
            trust_x_forwarded_for: false,
            retry_after: Duration::from_secs(2),
            unready: Duration::from_secs(5),
            key_refresh: Duration::from_secs(2),
        }
    }
}

impl CollectorConfig {
    /// Checks the values that cannot work; the message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_event_bytes == 0 || self.max_event_bytes > self.max_batch_bytes {
            return Err(format!(
                "collector.max_event_bytes must be between 1 and max_batch_bytes ({}), got {}",
                self.max_batch_bytes, self.max_event_bytes
            ));
        }
        // A stream record is at most 1 MiB (Kinesis), and a batch element can be as large as the
        // batch.
        if self.max_batch_bytes > 1 << 20 {
            return Err(format!(
                "collector.max_batch_bytes must be at most 1 MiB (the stream's record limit), got {}",
                self.max_batch_bytes
            ));
        }
        let positive = |x: f64| x.is_finite() && x > 0.0;
        if !positive(self.rate_limit_events_per_sec)
            || !positive(self.rate_limit_burst)
            || self.rate_limit_burst < 1.0
        {
            return Err(format!(
                "collector.rate_limit_events_per_sec must be > 0 and rate_limit_burst >= 1, got {} and {}",
                self.rate_limit_events_per_sec, self.rate_limit_burst
            ));
        }
        if self.cors_allowed_origins.is_empty() {
            return Err(
                "collector.cors_allowed_origins must name at least one origin, or \"*\"".to_owned(),
            );
        }
        Ok(())
    }
}

//! `[stream.kinesis]`: how the Kinesis backend puts and reads. The stream's name comes from
//! `--stream kinesis://NAME`; credentials and region from the standard AWS chain.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Settings of the Kinesis backend. Every field has a default that suits a stream of small events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KinesisConfig {
    /// AWS region; default: the standard chain (`AWS_REGION`, profile, instance metadata).
    pub region: Option<String>,
    /// Endpoint URL of Kinesis (a local emulator); default: `AWS_ENDPOINT_URL_KINESIS`,
    /// `AWS_ENDPOINT_URL`, else the region's AWS endpoint.
    pub endpoint_url: Option<String>,
    /// Pack small records into KPL aggregates (readable by the KCL and by this backend): one
    /// Kinesis record carries many events, so a shard takes far more than 1,000 events/s.
    pub aggregate: bool,
    /// Largest aggregate, bytes of Kinesis record data (the KPL's default: 51,200).
    pub aggregate_max_bytes: usize,
    /// PutRecords requests in flight at once, over all callers; callers wait for a slot.
    pub max_in_flight: usize,
    /// Strict per-key order: a request carries at most one record (or aggregate) of a partition
    /// key, so a failed record can never be overtaken by a later one of its key that succeeded in
    /// the same request. Off: records of a key share requests (in order) and only a partial
    /// failure inside one request can reorder them.
    pub strict_order: bool,
    /// Attempts of one record (or one call) before the error is returned (throttling, partial
    /// failures, service errors that a retry can fix).
    pub max_attempts: u32,
    /// First backoff after a throttled or failed attempt (`"100ms"`); doubles each attempt,
    /// with full jitter.
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    /// Longest backoff (`"5s"`).
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Least time between two GetRecords calls on one shard (`"200ms"`; Kinesis allows 5
    /// calls/s per shard, shared by every reader of the shard).
    #[serde(with = "humantime_serde")]
    pub get_records_interval: Duration,
    /// Most records one GetRecords call asks for (Kinesis' limit: 10,000).
    pub get_records_limit: usize,
}

impl Default for KinesisConfig {
    fn default() -> Self {
        KinesisConfig {
            region: None,
            endpoint_url: None,
            aggregate: false,
            aggregate_max_bytes: 51_200,
            max_in_flight: 8,
            strict_order: true,
            max_attempts: 10,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            get_records_interval: Duration::from_millis(200),
            get_records_limit: 10_000,
        }
    }
}

impl KinesisConfig {
    /// Checks the values; the message names the field and the value.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_in_flight == 0 {
            return Err("stream.kinesis.max_in_flight must be at least 1".into());
        }
        if self.max_attempts == 0 {
            return Err("stream.kinesis.max_attempts must be at least 1".into());
        }
        if !(1..=10_000).contains(&self.get_records_limit) {
            return Err(format!(
                "stream.kinesis.get_records_limit must be 1 to 10000, got {}",
                self.get_records_limit
            ));
        }
        // Room for the outer partition key (at most 256 characters of up to 4 bytes).
        let most = super::MAX_RECORD_BYTES - 4 * super::MAX_PARTITION_KEY_CHARS;
        if !(1024..=most).contains(&self.aggregate_max_bytes) {
            return Err(format!(
                "stream.kinesis.aggregate_max_bytes must be 1024 to {most}, got {}",
                self.aggregate_max_bytes
            ));
        }
        if self.backoff_base.is_zero() || self.backoff_max < self.backoff_base {
            return Err(format!(
                "stream.kinesis.backoff_base must be above zero and at most backoff_max ({:?}), got {:?}",
                self.backoff_max, self.backoff_base
            ));
        }
        Ok(())
    }
}

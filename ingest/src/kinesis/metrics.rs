//! Counters of the Kinesis backend and the lag of each shard read, exported through
//! `shoplake_server::telemetry`.
//! Labels are the stream and the shard id (bounded: a stream has a handful of shards).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use shoplake_server::telemetry::{self, Collector, DescriptorEncoder};

/// What the backend did, since the process started.
#[derive(Debug, Default)]
pub struct KinesisMetrics {
    /// User records put (each record of an aggregate counts).
    pub records_put: AtomicU64,
    /// Kinesis records put that were KPL aggregates.
    pub aggregates_put: AtomicU64,
    /// PutRecords requests sent (retries included).
    pub put_requests: AtomicU64,
    /// Entries of a PutRecords request that failed inside a partly failed request, and were sent
    /// again.
    pub put_entries_retried: AtomicU64,
    /// Calls or entries refused for throughput (ProvisionedThroughputExceeded and the like).
    pub put_throttled: AtomicU64,
    pub get_records_calls: AtomicU64,
    pub get_throttled: AtomicU64,
    /// User records read (de-aggregated).
    pub records_read: AtomicU64,
    /// Shard iterators that expired and were re-opened after the last record read.
    pub iterators_expired: AtomicU64,
    pub other_throttled: AtomicU64,
    /// Milliseconds behind the newest record, per shard, at its last GetRecords.
    lag_millis: Mutex<BTreeMap<String, i64>>,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl KinesisMetrics {
    pub(crate) fn throttled(&self, operation: &str) {
        let counter = match operation {
            "PutRecords" => &self.put_throttled,
            "GetRecords" => &self.get_throttled,
            _ => &self.other_throttled,
        };
        add(counter, 1);
    }

    pub(crate) fn set_lag(&self, shard: &str, millis: Option<i64>) {
        let mut lag = self.lag_millis.lock().unwrap_or_else(|e| e.into_inner());
        match millis {
            Some(m) => {
                lag.insert(shard.to_owned(), m);
            }
            None => {
                lag.remove(shard);
            }
        }
    }

    /// Milliseconds behind the tip of each shard read so far (a finished shard is dropped).
    pub fn lag_millis(&self) -> BTreeMap<String, i64> {
        self.lag_millis
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Metric names (counters without `_total`, which the encoder adds). Every sample carries the
/// `stream` label ([`crate::Stream::register_metrics`]).
pub mod names {
    pub const RECORDS_PUT: &str = "shoplake_kinesis_records_put";
    pub const AGGREGATES_PUT: &str = "shoplake_kinesis_aggregates_put";
    pub const PUT_REQUESTS: &str = "shoplake_kinesis_put_requests";
    pub const PUT_ENTRIES_RETRIED: &str = "shoplake_kinesis_put_entries_retried";
    pub const PUT_THROTTLED: &str = "shoplake_kinesis_put_throttled";
    pub const GET_RECORDS_CALLS: &str = "shoplake_kinesis_get_records_calls";
    pub const GET_THROTTLED: &str = "shoplake_kinesis_get_throttled";
    pub const RECORDS_READ: &str = "shoplake_kinesis_records_read";
    pub const ITERATORS_EXPIRED: &str = "shoplake_kinesis_iterators_expired";
    pub const OTHER_THROTTLED: &str = "shoplake_kinesis_other_throttled";
    pub const MILLIS_BEHIND_LATEST: &str = "shoplake_kinesis_millis_behind_latest";
}

impl Collector for KinesisMetrics {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        let counters: [(&str, &str, &AtomicU64); 10] = [
            (names::RECORDS_PUT, "User records put.", &self.records_put),
            (
                names::AGGREGATES_PUT,
                "KPL aggregates put.",
                &self.aggregates_put,
            ),
            (
                names::PUT_REQUESTS,
                "PutRecords requests sent.",
                &self.put_requests,
            ),
            (
                names::PUT_ENTRIES_RETRIED,
                "Entries of partly failed PutRecords requests sent again.",
                &self.put_entries_retried,
            ),
            (
                names::PUT_THROTTLED,
                "PutRecords calls or entries throttled.",
                &self.put_throttled,
            ),
            (
                names::GET_RECORDS_CALLS,
                "GetRecords calls.",
                &self.get_records_calls,
            ),
            (
                names::GET_THROTTLED,
                "GetRecords calls throttled.",
                &self.get_throttled,
            ),
            (
                names::RECORDS_READ,
                "User records read.",
                &self.records_read,
            ),
            (
                names::ITERATORS_EXPIRED,
                "Shard iterators re-opened after expiring.",
                &self.iterators_expired,
            ),
            (
                names::OTHER_THROTTLED,
                "Other calls throttled.",
                &self.other_throttled,
            ),
        ];
        for (name, help, value) in counters {
            telemetry::counter(&mut enc, name, help, value.load(Ordering::Relaxed))?;
        }
        let lag = self.lag_millis();
        telemetry::gauge_by(
            &mut enc,
            names::MILLIS_BEHIND_LATEST,
            "Milliseconds behind the newest record of the shard.",
            "shard",
            lag.iter().map(|(shard, millis)| (shard.as_str(), *millis)),
        )
    }
}

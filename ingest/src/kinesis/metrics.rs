//! Counters of the Kinesis backend and the lag of each shard read, in Prometheus text format.
//! Labels are the stream and the shard id (bounded: a stream has a handful of shards).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

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

    pub fn render_prometheus(&self, stream: &str) -> String {
        let mut out = String::new();
        let counters: [(&str, &str, &AtomicU64); 10] = [
            ("records_put_total", "User records put.", &self.records_put),
            (
                "aggregates_put_total",
                "KPL aggregates put.",
                &self.aggregates_put,
            ),
            (
                "put_requests_total",
                "PutRecords requests sent.",
                &self.put_requests,
            ),
            (
                "put_entries_retried_total",
                "Entries of partly failed PutRecords requests sent again.",
                &self.put_entries_retried,
            ),
            (
                "put_throttled_total",
                "PutRecords calls or entries throttled.",
                &self.put_throttled,
            ),
            (
                "get_records_calls_total",
                "GetRecords calls.",
                &self.get_records_calls,
            ),
            (
                "get_throttled_total",
                "GetRecords calls throttled.",
                &self.get_throttled,
            ),
            (
                "records_read_total",
                "User records read.",
                &self.records_read,
            ),
            (
                "iterators_expired_total",
                "Shard iterators re-opened after expiring.",
                &self.iterators_expired,
            ),
            (
                "other_throttled_total",
                "Other calls throttled.",
                &self.other_throttled,
            ),
        ];
        for (name, help, value) in counters {
            let _ = write!(
                out,
                "# HELP shoplake_kinesis_{name} {help}\n# TYPE shoplake_kinesis_{name} counter\nshoplake_kinesis_{name}{{stream=\"{stream}\"}} {}\n",
                value.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP shoplake_kinesis_millis_behind_latest Milliseconds behind the newest record of the shard.\n# TYPE shoplake_kinesis_millis_behind_latest gauge\n");
        for (shard, millis) in self.lag_millis() {
            let _ = writeln!(
                out,
                "shoplake_kinesis_millis_behind_latest{{stream=\"{stream}\",shard=\"{shard}\"}} {millis}"
            );
        }
        out
    }
}

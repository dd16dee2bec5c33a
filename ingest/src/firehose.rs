//! # Amazon Data Firehose: newline-delimited records delivered to S3
//!
//! Two things of the platform go through Firehose (`[firehose]` in the pipeline config), each a
//! delivery stream with an S3 destination:
//!
//! - **the raw archive**: every record the streaming stage reads, as it was on the stream, one
//!   [`ArchivedRecord`] per line, delivered under `s3://…/raw/`. `shoplake replay` puts them back
//!   on the stream.
//! - **the events sink**: the stage's enriched events as NDJSON (one event per line, the lake's
//!   columns), delivered into the lake's `_staging/events/`, where compaction reads them (plain or
//!   gzip) as it reads the Parquet files the stage writes itself.
//!
//! [`Firehose::put_ndjson`] takes whole lines and returns once Firehose has accepted every one of
//! them: lines are packed into records of at most 1,000 KiB (a record only ever ends at a line
//! end, so the objects Firehose concatenates them into stay valid NDJSON), records into
//! PutRecordBatch requests of at most 500 records and 4 MiB, up to `max_in_flight` requests at
//! once. Records that fail inside a partly failed request are sent again, alone, with exponential
//! backoff and full jitter, as are whole requests refused for throughput or by a transient error.
//! The stage moves its checkpoint only after that, so a crash re-sends rather than loses; a
//! record sent twice (a retry after a timeout, a re-read after a crash) is a duplicate that
//! compaction (events, by event_id) and the stage's de-duplication (replayed records) drop.
//!
//! Firehose keeps no order between records, and needs none here: compaction sorts, and replay
//! puts each archived record back under its own partition key.
//!
//! `aws-sdk-firehose` speaks the service's API (JSON 1.1, through the same rustls HTTPS client
//! and credential chain as the Kinesis backend); the retry policy is the Kinesis backend's
//! [`Backoff`], with the SDK's own retries off.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_firehose::Client;
use aws_sdk_firehose::error::ProvideErrorMetadata;
use aws_sdk_firehose::primitives::Blob;
use aws_sdk_firehose::types::Record as FirehoseRecord;
use base64::Engine;
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use shoplake_server::telemetry::{self, Collector, DescriptorEncoder};
use tokio::sync::OnceCell;

use crate::kinesis::{Backoff, Failure, classify, describe, is_throttling_code, sdk_config};
use crate::stream::StreamRecord;
use crate::{Error, Result};

/// Largest record Firehose takes (before base64), bytes.
pub const MAX_RECORD_BYTES: usize = 1_000 * 1024;
/// Most records in one PutRecordBatch.
pub const MAX_RECORDS_PER_REQUEST: usize = 500;
/// Most bytes of record data in one PutRecordBatch.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// `[firehose]`: the raw archive and the events sink, and how their requests are sent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FirehoseConfig {
    /// Delivery stream that archives every record the stage reads, for `shoplake replay`; empty:
    /// no archive.
    pub archive_stream: String,
    /// Where that delivery stream's S3 destination writes (`s3://BUCKET/PREFIX/raw`): what
    /// `shoplake replay` reads. Empty: the lake's `raw` folder.
    pub archive_location: String,
    /// Delivery stream that carries the enriched events into staging, instead of the stage
    /// writing Parquet itself; its S3 destination must be the lake's `_staging/events/` folder.
    /// Empty: Parquet staging.
    pub events_stream: String,
    /// AWS region; default: the standard chain.
    pub region: Option<String>,
    /// Endpoint URL of Firehose (a local emulator); default: `AWS_ENDPOINT_URL_FIREHOSE`,
    /// `AWS_ENDPOINT_URL`, else the region's AWS endpoint.
    pub endpoint_url: Option<String>,
    /// PutRecordBatch requests in flight at once, per delivery stream.
    pub max_in_flight: usize,
    /// Attempts of one record (or one call) before the error is returned.
    pub max_attempts: u32,
    /// First backoff after a throttled or failed attempt (`"100ms"`); doubles each attempt,
    /// with full jitter.
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    /// Longest backoff (`"5s"`).
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
}

impl Default for FirehoseConfig {
    fn default() -> Self {
        FirehoseConfig {
            archive_stream: String::new(),
            archive_location: String::new(),
            events_stream: String::new(),
            region: None,
            endpoint_url: None,
            max_in_flight: 4,
            max_attempts: 10,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }
}

impl FirehoseConfig {
    /// Checks the values; the message names the field and the value.
    pub fn validate(&self) -> Result<(), String> {
        for (field, name) in [
            ("archive_stream", &self.archive_stream),
            ("events_stream", &self.events_stream),
        ] {
            let ok = name.is_empty()
                || ((1..=64).contains(&name.len())
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')));
            if !ok {
                return Err(format!(
                    "firehose.{field} {name:?}: a delivery stream name has 1 to 64 characters of a-z, A-Z, 0-9, _ . -"
                ));
            }
        }
        if self.max_in_flight == 0 {
            return Err("firehose.max_in_flight must be at least 1".into());
        }
        if self.max_attempts == 0 {
            return Err("firehose.max_attempts must be at least 1".into());
        }
        if self.backoff_base.is_zero() || self.backoff_max < self.backoff_base {
            return Err(format!(
                "firehose.backoff_base must be above zero and at most backoff_max ({:?}), got {:?}",
                self.backoff_max, self.backoff_base
            ));
        }
        Ok(())
    }

    fn backoff(&self) -> Backoff {
        Backoff {
            base: self.backoff_base,
            max: self.backoff_max,
        }
    }
}

/// What one delivery stream's client did since the process started.
#[derive(Debug, Default)]
pub struct FirehoseMetrics {
    /// Lines accepted by Firehose.
    pub lines_put: AtomicU64,
    /// Firehose records accepted (each carries one or more lines).
    pub records_put: AtomicU64,
    /// Bytes of record data accepted.
    pub bytes_put: AtomicU64,
    /// PutRecordBatch requests sent (retries included).
    pub requests: AtomicU64,
    /// Records that failed inside a partly failed request and were sent again.
    pub records_retried: AtomicU64,
    /// Requests refused for throughput or by a transient error, and sent again.
    pub requests_retried: AtomicU64,
}

/// Metric names of a delivery stream's client (counters without `_total`, which the encoder
/// adds). Every sample carries the `delivery_stream` label.
pub mod names {
    pub const LINES_PUT: &str = "shoplake_firehose_lines_put";
    pub const RECORDS_PUT: &str = "shoplake_firehose_records_put";
    pub const BYTES_PUT: &str = "shoplake_firehose_bytes_put";
    pub const REQUESTS: &str = "shoplake_firehose_requests";
    pub const RECORDS_RETRIED: &str = "shoplake_firehose_records_retried";
    pub const REQUESTS_RETRIED: &str = "shoplake_firehose_requests_retried";
}

impl Collector for FirehoseMetrics {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        let counters: [(&str, &str, &AtomicU64); 6] = [
            (
                names::LINES_PUT,
                "Lines accepted by Firehose.",
                &self.lines_put,
            ),
            (
                names::RECORDS_PUT,
                "Firehose records accepted.",
                &self.records_put,
            ),
            (
                names::BYTES_PUT,
                "Bytes of record data accepted.",
                &self.bytes_put,
            ),
            (
                names::REQUESTS,
                "PutRecordBatch requests sent.",
                &self.requests,
            ),
            (
                names::RECORDS_RETRIED,
                "Records sent again after failing inside a request.",
                &self.records_retried,
            ),
            (
                names::REQUESTS_RETRIED,
                "Requests sent again after throttling or a transient error.",
                &self.requests_retried,
            ),
        ];
        for (name, help, v) in counters {
            telemetry::counter(&mut enc, name, help, v.load(Ordering::Relaxed))?;
        }
        Ok(())
    }
}

/// One Firehose delivery stream, written to with [`Firehose::put_ndjson`]. Cheap to clone.
#[derive(Clone)]
pub struct Firehose {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    config: FirehoseConfig,
    client: OnceCell<Client>,
    metrics: Arc<FirehoseMetrics>,
}

impl std::fmt::Debug for Firehose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Firehose")
            .field("delivery_stream", &self.inner.name)
            .finish_non_exhaustive()
    }
}

impl Firehose {
    /// The delivery stream `name`; the client is made from the AWS environment on first use
    /// (credential chain, region, `AWS_ENDPOINT_URL_FIREHOSE`), with `config.region` and
    /// `config.endpoint_url` taking precedence.
    pub fn new(name: impl Into<String>, config: FirehoseConfig) -> Result<Self> {
        let name = name.into();
        config.validate().map_err(|message| Error::Limit {
            stream: name.clone(),
            message,
        })?;
        Ok(Firehose {
            inner: Arc::new(Inner {
                name,
                config,
                client: OnceCell::new(),
                metrics: Arc::new(FirehoseMetrics::default()),
            }),
        })
    }

    /// The delivery stream `name` through a client made by the caller (its retries are turned
    /// off: this client retries itself).
    pub fn with_client(
        client: &Client,
        name: impl Into<String>,
        config: FirehoseConfig,
    ) -> Result<Self> {
        let firehose = Self::new(name, config)?;
        let conf = client
            .config()
            .to_builder()
            .retry_config(aws_sdk_firehose::config::retry::RetryConfig::disabled())
            .build();
        let _ = firehose.inner.client.set(Client::from_conf(conf));
        Ok(firehose)
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn metrics(&self) -> Arc<FirehoseMetrics> {
        self.inner.metrics.clone()
    }

    async fn client(&self) -> &Client {
        self.inner
            .client
            .get_or_init(|| async {
                let config = &self.inner.config;
                let sdk = sdk_config(config.region.as_deref()).await;
                let mut conf = aws_sdk_firehose::config::Builder::from(&sdk)
                    .retry_config(aws_sdk_firehose::config::retry::RetryConfig::disabled());
                if let Some(url) = &config.endpoint_url {
                    conf = conf.endpoint_url(url);
                }
                Client::from_conf(conf.build())
            })
            .await
    }

    /// Puts `ndjson` (whole lines, each ending in `\n`; a missing last newline is added) and
    /// returns once Firehose has accepted all of it. A line longer than a Firehose record is
    /// refused before anything is sent.
    pub async fn put_ndjson(&self, ndjson: &[u8]) -> Result<()> {
        let records = pack(ndjson).map_err(|message| Error::Limit {
            stream: self.inner.name.clone(),
            message,
        })?;
        let lines = ndjson.iter().filter(|b| **b == b'\n').count()
            + usize::from(!ndjson.is_empty() && !ndjson.ends_with(b"\n"));
        let requests = requests(records);
        let mut sent = futures::stream::iter(requests.into_iter().map(|r| self.put_request(r)))
            .buffer_unordered(self.inner.config.max_in_flight);
        while let Some(done) = sent.next().await {
            done?;
        }
        self.inner
            .metrics
            .lines_put
            .fetch_add(lines as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Sends one request's records until every one is accepted; records that fail inside the
    /// request are sent again alone, after a backoff.
    async fn put_request(&self, mut pending: Vec<Bytes>) -> Result<()> {
        let config = &self.inner.config;
        let metrics = &self.inner.metrics;
        let backoff = config.backoff();
        let client = self.client().await;
        let mut attempt = 0;
        loop {
            let records = pending
                .iter()
                .map(|data| {
                    FirehoseRecord::builder()
                        .data(Blob::new(data.to_vec()))
                        .build()
                        .map_err(|e| Error::Limit {
                            stream: self.inner.name.clone(),
                            message: e.to_string(),
                        })
                })
                .collect::<Result<Vec<_>>>()?;
            metrics.requests.fetch_add(1, Ordering::Relaxed);
            attempt += 1;
            let failure = match client
                .put_record_batch()
                .delivery_stream_name(&self.inner.name)
                .set_records(Some(records))
                .send()
                .await
            {
                Ok(out) => {
                    let answers = out.request_responses();
                    if answers.len() != pending.len() {
                        return Err(Error::Unavailable {
                            stream: self.inner.name.clone(),
                            message: format!(
                                "PutRecordBatch answered {} entries for {} records",
                                answers.len(),
                                pending.len()
                            ),
                        });
                    }
                    let mut failed = Vec::new();
                    let mut last_error = None;
                    for (data, answer) in std::mem::take(&mut pending).into_iter().zip(answers) {
                        match answer.error_code() {
                            None => {
                                metrics.records_put.fetch_add(1, Ordering::Relaxed);
                                metrics
                                    .bytes_put
                                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                            }
                            Some(code) => {
                                last_error = Some(format!(
                                    "{code}: {}",
                                    answer.error_message().unwrap_or_default()
                                ));
                                failed.push(data);
                            }
                        }
                    }
                    if failed.is_empty() {
                        return Ok(());
                    }
                    metrics
                        .records_retried
                        .fetch_add(failed.len() as u64, Ordering::Relaxed);
                    let n = failed.len();
                    pending = failed;
                    if attempt >= config.max_attempts {
                        return Err(Error::Firehose {
                            delivery_stream: self.inner.name.clone(),
                            operation: "PutRecordBatch",
                            code: None,
                            retryable: true,
                            message: format!(
                                "{n} records still failing after {attempt} attempts (last: {})",
                                last_error.unwrap_or_default()
                            ),
                        });
                    }
                    Failure::Throttled
                }
                Err(err) => {
                    let failure = classify(&err);
                    let throttled = err.code().is_some_and(|c| {
                        is_throttling_code(c) || c == "ServiceUnavailableException"
                    });
                    if failure == Failure::Permanent || attempt >= config.max_attempts {
                        let (code, message) = describe(&err);
                        return Err(Error::Firehose {
                            delivery_stream: self.inner.name.clone(),
                            operation: "PutRecordBatch",
                            code,
                            retryable: failure != Failure::Permanent,
                            message,
                        });
                    }
                    metrics.requests_retried.fetch_add(1, Ordering::Relaxed);
                    if throttled {
                        Failure::Throttled
                    } else {
                        failure
                    }
                }
            };
            let wait = backoff.delay(attempt);
            tracing::debug!(delivery_stream = %self.inner.name, attempt, ?failure, records = pending.len(), wait_ms = wait.as_millis() as u64, "Firehose put failed in part; retrying");
            tokio::time::sleep(wait).await;
        }
    }
}

/// Splits NDJSON into Firehose records of at most [`MAX_RECORD_BYTES`], each ending at a line end.
pub fn pack(ndjson: &[u8]) -> Result<Vec<Bytes>, String> {
    let mut records = Vec::new();
    let mut start = 0;
    let mut end = 0;
    while end < ndjson.len() {
        let line_end = match ndjson[end..].iter().position(|b| *b == b'\n') {
            Some(i) => end + i + 1,
            None => ndjson.len(),
        };
        let line_len = line_end - end + usize::from(!ndjson[..line_end].ends_with(b"\n"));
        if line_len > MAX_RECORD_BYTES {
            return Err(format!(
                "a line of {line_len} bytes is longer than a Firehose record ({MAX_RECORD_BYTES} bytes)"
            ));
        }
        if line_end - start + 1 > MAX_RECORD_BYTES && end > start {
            records.push(record(&ndjson[start..end]));
            start = end;
        }
        end = line_end;
    }
    if end > start {
        records.push(record(&ndjson[start..end]));
    }
    Ok(records)
}

fn record(lines: &[u8]) -> Bytes {
    if lines.ends_with(b"\n") {
        Bytes::copy_from_slice(lines)
    } else {
        let mut v = Vec::with_capacity(lines.len() + 1);
        v.extend_from_slice(lines);
        v.push(b'\n');
        Bytes::from(v)
    }
}

/// Groups records into PutRecordBatch requests within the service's limits.
fn requests(records: Vec<Bytes>) -> Vec<Vec<Bytes>> {
    let mut out: Vec<Vec<Bytes>> = Vec::new();
    let mut bytes = 0;
    for r in records {
        match out.last_mut() {
            Some(last)
                if last.len() < MAX_RECORDS_PER_REQUEST && bytes + r.len() <= MAX_REQUEST_BYTES =>
            {
                bytes += r.len();
                last.push(r);
            }
            _ => {
                bytes = r.len();
                out.push(vec![r]);
            }
        }
    }
    out
}

/// One line of the raw archive: a stream record as the stage read it, with what replay needs to
/// put it back as it was (its partition key, and its arrival time, which is the event's
/// `received_at` when the payload has none).
///
/// `data` is the payload as a JSON string when it is UTF-8 (so the archive stays greppable and
/// queryable with Athena's JSON functions), else `data_base64`. Newlines inside a payload are
/// escaped by the JSON string, so one record is always one line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedRecord {
    pub stream: String,
    pub shard_id: String,
    pub sequence_number: String,
    pub partition_key: String,
    /// When the stream received it, UTC epoch microseconds.
    pub arrival_micros: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_base64: Option<String>,
}

impl ArchivedRecord {
    /// Appends `record`'s archive line (with its newline) to `out`; false, with `out` unchanged,
    /// when the line would not fit in a Firehose record (a payload near Kinesis' 1 MiB limit).
    pub fn append_line(stream: &str, record: &StreamRecord, out: &mut Vec<u8>) -> bool {
        #[derive(Serialize)]
        struct Line<'a> {
            stream: &'a str,
            shard_id: &'a str,
            sequence_number: &'a str,
            partition_key: &'a str,
            arrival_micros: i64,
            #[serde(skip_serializing_if = "Option::is_none")]
            data: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            data_base64: Option<String>,
        }
        let text = std::str::from_utf8(&record.data).ok();
        let line = Line {
            stream,
            shard_id: &record.shard_id.0,
            sequence_number: &record.sequence_number.0,
            partition_key: &record.partition_key,
            arrival_micros: record.arrival_micros,
            data: text,
            data_base64: text
                .is_none()
                .then(|| base64::engine::general_purpose::STANDARD.encode(&record.data)),
        };
        let start = out.len();
        if serde_json::to_writer(&mut *out, &line).is_err() {
            out.truncate(start);
            return false;
        }
        out.push(b'\n');
        if out.len() - start > MAX_RECORD_BYTES {
            out.truncate(start);
            return false;
        }
        true
    }

    /// Reads one archive line.
    pub fn parse(line: &[u8]) -> Result<Self, String> {
        let r: ArchivedRecord = serde_json::from_slice(line).map_err(|e| e.to_string())?;
        if r.data.is_none() && r.data_base64.is_none() {
            return Err("neither data nor data_base64".into());
        }
        Ok(r)
    }

    /// The payload's bytes.
    pub fn payload(&self) -> Result<Bytes, String> {
        match (&self.data, &self.data_base64) {
            (Some(text), _) => Ok(Bytes::copy_from_slice(text.as_bytes())),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map(Bytes::from)
                .map_err(|e| format!("data_base64: {e}")),
            (None, None) => Err("neither data nor data_base64".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{SequenceNumber, ShardId};

    #[test]
    fn records_end_at_line_ends_and_respect_the_limits() {
        let line = format!("{{\"x\":\"{}\"}}\n", "a".repeat(300 * 1024));
        let ndjson = line.repeat(10);
        let records = pack(ndjson.as_bytes()).unwrap();
        // Three lines of ~300 KiB fit in 1,000 KiB, four do not.
        assert_eq!(
            records
                .iter()
                .map(|r| r.len() / line.len())
                .collect::<Vec<_>>(),
            [3, 3, 3, 1]
        );
        assert!(records.iter().all(|r| r.len() <= MAX_RECORD_BYTES));
        assert_eq!(records.concat(), ndjson.as_bytes());
        // A missing last newline is added; an over-long line is refused, naming its size.
        assert_eq!(pack(b"{}\n{}").unwrap().concat(), b"{}\n{}\n");
        let err = pack(format!("{}\n", "b".repeat(MAX_RECORD_BYTES)).as_bytes()).unwrap_err();
        assert!(err.contains("1024001 bytes"), "{err}");
        // 500 records per request, 4 MiB per request.
        let small = vec![Bytes::from_static(b"{}\n"); 1_201];
        assert_eq!(
            requests(small).iter().map(Vec::len).collect::<Vec<_>>(),
            [500, 500, 201]
        );
        let big = vec![Bytes::from(vec![b'x'; 900 * 1024]); 9];
        assert_eq!(
            requests(big).iter().map(Vec::len).collect::<Vec<_>>(),
            [4, 4, 1]
        );
    }

    #[test]
    fn archive_lines_read_back_to_the_same_record() {
        let record = |data: &[u8]| StreamRecord {
            shard_id: ShardId("shardId-000000000001".into()),
            sequence_number: SequenceNumber("4960".into()),
            partition_key: "anon-1".into(),
            data: Bytes::copy_from_slice(data),
            arrival_micros: 1_700_000_000_123_456,
        };
        let mut out = Vec::new();
        let payloads: [&[u8]; 3] = [
            b"{\"event_id\":\"x\",\n \"name\":\"page_viewed\"}",
            b"\xff\xfe not UTF-8",
            b"",
        ];
        for p in payloads {
            assert!(ArchivedRecord::append_line("events", &record(p), &mut out));
        }
        let lines: Vec<&[u8]> = out
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), 3, "one line per record, newlines escaped");
        for (line, p) in lines.iter().zip(payloads) {
            let back = ArchivedRecord::parse(line).unwrap();
            assert_eq!(back.payload().unwrap(), p);
            assert_eq!(back.partition_key, "anon-1");
            assert_eq!(back.arrival_micros, 1_700_000_000_123_456);
            assert_eq!(back.stream, "events");
        }
        let huge = vec![b'a'; MAX_RECORD_BYTES];
        let before = out.len();
        assert!(!ArchivedRecord::append_line(
            "events",
            &record(&huge),
            &mut out
        ));
        assert_eq!(out.len(), before);
        assert!(
            ArchivedRecord::parse(b"{\"stream\":1}")
                .unwrap_err()
                .contains("invalid type")
        );
    }
}

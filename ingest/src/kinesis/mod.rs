//! # The Kinesis backend of the events stream
//!
//! [`KinesisStream`] implements [`StreamProducer`](crate::StreamProducer) and
//! [`StreamConsumer`](crate::StreamConsumer) on one Amazon Kinesis Data Stream through the AWS
//! SDK (`aws-sdk-kinesis`), with the same semantics as the embedded log: the
//! [`conformance`](crate::conformance) suite runs against it (over the wire, on kinesalite and kinesis-local, in `ingest/tests/it`).
//!
//! ```text
//!  put_records(Vec<Record>)                                   list_shards ─► ListShards (paged)
//!   │ refuse what Kinesis would refuse (key ≤ 256 chars,      open_shard  ─► GetShardIterator
//!   │ record ≤ 1 MiB incl. key), before sending anything                    (AFTER_/AT_SEQUENCE_NUMBER,
//!   │ optional KPL aggregation per predicted shard                          TRIM_HORIZON, LATEST,
//!   ▼                                                                       AT_TIMESTAMP)
//!  units (record | aggregate), in input order                 next_batch  ─► GetRecords, ≤ 5 calls/s
//!   │ requests of ≤ 500 units / ≤ 5 MiB; a key with a unit in               per shard; backoff on
//!   │ flight or waiting for a retry blocks its later units                  throttling; expired
//!   ▼ ≤ max_in_flight requests at once (callers wait)                       iterator re-opened after
//!  PutRecords ─► failed entries of a partly failed batch                    the last returned record;
//!                retried alone, first, with backoff + jitter                de-aggregation; end of a
//!                                                                           closed shard; lag metric
//! ```
//!
//! ## Sequence numbers of aggregated records
//!
//! A record put inside a KPL aggregate has the aggregate's Kinesis sequence number `S`; the
//! backend numbers the user records inside it `S.0`, `S.1`, … ([`SequenceNumber`](crate::SequenceNumber)
//! orders them after `S`'s predecessors and before `S`'s successors). A checkpoint `S.k` re-opens the shard
//! `AT_SEQUENCE_NUMBER S` and skips the user records `0..=k` of that aggregate, so a checkpoint in
//! the middle of an aggregate neither loses nor repeats a record (the KCL's "extended sequence
//! numbers", written as one string so that the stage stores it like any other). Ordinary records
//! keep their plain sequence number, and a checkpoint `S` re-opens `AFTER_SEQUENCE_NUMBER S`.
//!
//! ## Ordering
//!
//! Records of one partition key keep their order: a key with a record in flight, or waiting to be
//! retried, holds its later records back. With `strict_order` (the default) a request carries one
//! record (or aggregate) per key, so a partial failure can never let a later record of the key
//! overtake a failed one; without it, records of a key share requests in order and Kinesis
//! sequences them in request order, except when a partial failure hits an earlier record of the
//! key but not a later one (AWS documents that PutRecords does not promise order in that case).
//! Aggregation groups records by the shard their key maps to (from ListShards), so every key
//! stays on the shard its hash selects; after a reshard the map is refreshed.
//!
//! ## Leases
//!
//! Several workers share a stream's shards through leases kept beside the lake
//! (`shoplake_transform::leases`), above `list_shards` / `open_shard`: readers hold no state
//! beyond their shard, position and iterator, and every position they return is a checkpoint that
//! another worker can open after a lease changes hands.
//!
//! ## Dependencies
//!
//! `aws-config` resolves the standard credential chain, region and `AWS_ENDPOINT_URL[_KINESIS]`;
//! `aws-sdk-kinesis` speaks the Kinesis API (JSON 1.1 over its rustls HTTPS client, already in
//! the tree through deltalake's S3 support). SDK retries are off: [`Backoff`] is the one retry
//! policy, so that partial failures, throttling and service errors are counted and bounded in one
//! place. `prost` (already in the tree through DataFusion) encodes the KPL's protobuf; `md-5`
//! its checksum and the shard a partition key hashes to.

pub mod aggregation;
pub mod config;
mod consumer;
mod metrics;
mod producer;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use rand::Rng;
use tokio::sync::{OnceCell, Semaphore};

pub use config::KinesisConfig;
pub use consumer::KinesisShardReader;
pub use metrics::KinesisMetrics;

use crate::stream::ShardId;
use crate::{Error, Result};

/// Kinesis' limits on PutRecords (one definition for every backend, in [`crate::stream`]).
pub use crate::stream::{
    MAX_PARTITION_KEY_CHARS, MAX_PUT_BYTES as MAX_REQUEST_BYTES, MAX_RECORD_BYTES,
    MAX_RECORDS_PER_PUT as MAX_RECORDS_PER_REQUEST,
};

/// One Kinesis data stream, as producer and consumer. Cheap to clone (shared state).
#[derive(Clone)]
pub struct KinesisStream {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for KinesisStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KinesisStream")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

struct Inner {
    name: String,
    config: KinesisConfig,
    client: OnceCell<Client>,
    /// PutRecords requests in flight, over every caller.
    in_flight: Arc<Semaphore>,
    /// Open shards' hash-key ranges, for aggregation; refreshed when stale.
    shard_map: Mutex<Option<ShardMap>>,
    metrics: Arc<KinesisMetrics>,
}

/// The open shards of the stream and the hash-key range each takes.
#[derive(Clone, Debug)]
struct ShardMap {
    /// (first hash key, last hash key, shard), sorted.
    ranges: Vec<(u128, u128, ShardId)>,
    fetched: Instant,
    stale: bool,
}

impl ShardMap {
    fn shard_of(&self, hash: u128) -> Option<usize> {
        let i = self.ranges.partition_point(|(start, _, _)| *start <= hash);
        let (start, end, _) = self.ranges.get(i.checked_sub(1)?)?;
        (*start <= hash && hash <= *end).then_some(i - 1)
    }
}

/// The 128-bit hash key Kinesis gives a partition key: MD5, big-endian.
pub fn hash_key(partition_key: &str) -> u128 {
    use md5::{Digest, Md5};
    u128::from_be_bytes(Md5::digest(partition_key.as_bytes()).into())
}

impl KinesisStream {
    /// The stream `name`; the client is made from the environment on first use (credential chain,
    /// region, endpoint overrides), with `config.region` / `config.endpoint_url` taking precedence.
    pub fn new(name: impl Into<String>, config: KinesisConfig) -> Result<Self> {
        let name = name.into();
        config.validate().map_err(|message| Error::Limit {
            stream: name.clone(),
            message,
        })?;
        Ok(KinesisStream {
            inner: Arc::new(Inner {
                in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
                name,
                config,
                client: OnceCell::new(),
                shard_map: Mutex::new(None),
                metrics: Arc::new(KinesisMetrics::default()),
            }),
        })
    }

    /// The stream `name` through a client made by the caller (its retry settings are replaced:
    /// this backend retries itself).
    pub fn with_client(
        client: &Client,
        name: impl Into<String>,
        config: KinesisConfig,
    ) -> Result<Self> {
        let stream = Self::new(name, config)?;
        let conf = client
            .config()
            .to_builder()
            .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
            .build();
        let _ = stream.inner.client.set(Client::from_conf(conf));
        Ok(stream)
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn config(&self) -> &KinesisConfig {
        &self.inner.config
    }

    /// Counters and per-shard lag of this stream (exported by [`crate::Stream::register_metrics`]).
    pub fn metrics(&self) -> Arc<KinesisMetrics> {
        self.inner.metrics.clone()
    }

    /// Creates the stream with `shards` shards and waits until it is active (first runs, tests;
    /// production streams are usually made by infrastructure code).
    pub async fn create(&self, shards: u32) -> Result<()> {
        let client = self.client().await;
        self.inner
            .call("CreateStream", || {
                client
                    .create_stream()
                    .stream_name(&self.inner.name)
                    .shard_count(shards as i32)
                    .send()
            })
            .await?;
        self.wait_until_active(Duration::from_secs(60)).await
    }

    /// Waits until the stream is ACTIVE (after a create, split, merge or shard-count update).
    pub async fn wait_until_active(&self, timeout: Duration) -> Result<()> {
        let client = self.client().await;
        let deadline = Instant::now() + timeout;
        loop {
            let out = self
                .inner
                .call("DescribeStreamSummary", || {
                    client
                        .describe_stream_summary()
                        .stream_name(&self.inner.name)
                        .send()
                })
                .await?;
            let status = out
                .stream_description_summary()
                .map(|s| s.stream_status().clone());
            if status == Some(aws_sdk_kinesis::types::StreamStatus::Active) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Unavailable {
                    stream: self.inner.name.clone(),
                    message: format!("not ACTIVE after {timeout:?} (status {status:?})"),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The SDK client (made on first use).
    pub async fn client(&self) -> &Client {
        self.inner
            .client
            .get_or_init(|| load_client(&self.inner.config))
            .await
    }
}

/// The AWS settings of the standard environment (credential chain, region, endpoint variables),
/// with `region` taking precedence: what every AWS client of this crate is made from.
pub(crate) async fn sdk_config(region: Option<&str>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region.to_owned()));
    }
    loader.load().await
}

async fn load_client(config: &KinesisConfig) -> Client {
    let sdk = sdk_config(config.region.as_deref()).await;
    let mut conf = aws_sdk_kinesis::config::Builder::from(&sdk)
        .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled());
    if let Some(url) = &config.endpoint_url {
        conf = conf.endpoint_url(url);
    }
    Client::from_conf(conf.build())
}

/// What a failed call means for the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Over a throughput limit: back off and retry.
    Throttled,
    /// A transient failure (network, 5xx): retry.
    Transient,
    /// Retrying the same call cannot help.
    Permanent,
}

/// Error codes of Kinesis that mean "too fast".
pub(crate) fn is_throttling_code(code: &str) -> bool {
    matches!(
        code,
        "ProvisionedThroughputExceededException"
            | "LimitExceededException"
            | "ThrottlingException"
            | "KMSThrottlingException"
            | "RequestLimitExceeded"
    )
}

/// Error codes of Kinesis that a retry can fix.
pub(crate) fn is_transient_code(code: &str) -> bool {
    matches!(
        code,
        "InternalFailure"
            | "InternalFailureException"
            | "ServiceUnavailable"
            | "ServiceUnavailableException"
            | "InternalError"
    )
}

pub(crate) fn classify<E: ProvideErrorMetadata>(err: &SdkError<E>) -> Failure {
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Failure::Transient
        }
        SdkError::ServiceError(e) => match e.err().code() {
            Some(c) if is_throttling_code(c) => Failure::Throttled,
            Some(c) if is_transient_code(c) => Failure::Transient,
            _ if e.raw().status().is_server_error() => Failure::Transient,
            _ => Failure::Permanent,
        },
        _ => Failure::Permanent,
    }
}

/// Exponential backoff with full jitter (a random wait between 0 and base·2^attempt, capped).
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    pub fn from_config(config: &KinesisConfig) -> Self {
        Backoff {
            base: config.backoff_base,
            max: config.backoff_max,
        }
    }

    /// The wait before attempt `attempt + 1` (attempt ≥ 1 failed so far).
    pub fn delay(&self, attempt: u32) -> Duration {
        let cap = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.max);
        let millis = cap.as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(0..=millis))
    }
}

/// The service's error code, and its own words when it answered; otherwise the chain of causes
/// (connection refused, timeout, …), which the SDK's Display alone leaves out, without its Debug
/// dump.
pub(crate) fn describe<E>(err: &SdkError<E>) -> (Option<String>, String)
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let code = err.code().map(str::to_owned);
    let message = match (&code, err.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.clone(),
        _ => {
            let mut chain = err.to_string();
            let mut cause = std::error::Error::source(err);
            while let Some(c) = cause {
                chain.push_str(": ");
                chain.push_str(&c.to_string());
                cause = c.source();
            }
            chain
        }
    };
    (code, message)
}

impl Inner {
    fn error<E>(&self, operation: &'static str, err: SdkError<E>, failure: Failure) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let (code, message) = describe(&err);
        Error::Kinesis {
            stream: self.name.clone(),
            operation,
            message,
            code,
            retryable: failure != Failure::Permanent,
            source: Box::new(err),
        }
    }

    /// Runs `call` until it succeeds, fails for good, or has been tried `max_attempts` times;
    /// backs off between attempts.
    async fn call<T, E, F, Fut>(&self, operation: &'static str, mut call: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, SdkError<E>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let backoff = Backoff::from_config(&self.config);
        let mut attempt = 0;
        loop {
            match call().await {
                Ok(v) => return Ok(v),
                Err(err) => {
                    attempt += 1;
                    let failure = classify(&err);
                    if failure == Failure::Permanent || attempt >= self.config.max_attempts {
                        return Err(self.error(operation, err, failure));
                    }
                    if failure == Failure::Throttled {
                        self.metrics.throttled(operation);
                    }
                    let wait = backoff.delay(attempt);
                    tracing::debug!(stream = %self.name, operation, attempt, ?failure, wait_ms = wait.as_millis() as u64, "Kinesis call failed; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

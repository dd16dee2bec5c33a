//! # shoplake-ingest: the events stream
//!
//! Owns the stream that sits between the storefront and the streaming stage: the
//! [`StreamProducer`] / [`StreamConsumer`] traits, shaped after Kinesis (shards chosen by
//! partition-key hash, sequence numbers, readers that resume after a checkpoint, at-least-once),
//! and their backends. Records enter through `put_records` and leave through
//! [`ShardReader::next_batch`]; nothing here looks inside a record.
//!
//! Backends: [`LocalLog`], an embedded durable log for the single-process default, and
//! [`KinesisStream`], an Amazon Kinesis data stream (see [`kinesis`]). Every backend passes the
//! same [`conformance`] suite. [`backend`] picks one from a URI (`local`, `kinesis://NAME`) and
//! puts either behind the stream traits as [`backend::Stream`].
//!
//! Ingestion paths onto the stream, each in its own crate: the storefront emitter library
//! (`shoplake-storefront-emitter`) and the HTTP collector (`shoplake-collector`), which speaks
//! the Segment tracking API and writes through [`StreamProducer`].
//!
//! Why these dependencies: `redb` stores the local log (an embedded, ACID, crash-safe B-tree
//! engine in pure Rust: one table per shard keyed by sequence number, one transaction per put);
//! `md-5` maps partition keys onto shards exactly as Kinesis does (MD5 of the key as a 128-bit
//! hash key); `tokio` runs the blocking storage calls off the async threads. The Kinesis backend
//! adds `aws-config`, `aws-sdk-kinesis`, `prost` (see [`kinesis`] for why each) and `rand`
//! (retry jitter); the raw archive and the events sink add `aws-sdk-firehose`, `serde_json` and
//! `base64` (archived records as JSON lines; see [`firehose`]). `serde` reads the backends'
//! configs; `shoplake-server` exports their counters (one metrics registry per process);
//! `humantime-serde` reads the configs' durations with units (`"100ms"`).

pub mod backend;
pub mod conformance;
pub mod firehose;
pub mod kinesis;
pub mod local;
pub mod stream;

pub use firehose::{Firehose, FirehoseConfig};
pub use kinesis::{KinesisConfig, KinesisStream};
pub use local::LocalLog;
pub use stream::*;

/// Result of stream operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the stream backends.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A request outside the stream's limits (the caller must change it; retrying cannot help).
    #[error("stream {stream}: {message}")]
    Limit { stream: String, message: String },
    /// The storage under the stream failed.
    #[error("stream {stream}: storage failed: {source}")]
    Storage {
        stream: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A stored record could not be decoded.
    #[error("stream {stream}, shard {shard_id}: record {sequence} is corrupt: {message}")]
    Corrupt {
        stream: String,
        shard_id: String,
        sequence: u64,
        message: String,
    },
    /// A stream URI that names no backend (a user's mistake in `--stream` or `stream.uri`).
    #[error("stream {uri:?}: {reason}")]
    BadUri { uri: String, reason: String },
    /// No such shard.
    #[error("stream {stream}: no shard {shard_id}")]
    UnknownShard { stream: String, shard_id: String },
    /// The service throttled or was unreachable: retrying later can succeed.
    #[error("stream {stream}: {message} (retryable)")]
    Unavailable { stream: String, message: String },
    /// A Kinesis call failed (after the retries that could help, when `retryable`).
    #[error("stream {stream}: Kinesis {operation} failed: {message}")]
    Kinesis {
        stream: String,
        operation: &'static str,
        /// The service's error code (`ResourceNotFoundException`, …), when it answered one.
        code: Option<String>,
        /// Whether the failure was transient (throttling, network, 5xx): retrying later can help.
        retryable: bool,
        message: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A Firehose call failed (after the retries that could help, when `retryable`).
    #[error("delivery stream {delivery_stream}: Firehose {operation} failed: {message}")]
    Firehose {
        delivery_stream: String,
        operation: &'static str,
        code: Option<String>,
        retryable: bool,
        message: String,
    },
}

impl Error {
    /// Whether retrying the same call later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Unavailable { .. }
                | Error::Storage { .. }
                | Error::Kinesis {
                    retryable: true,
                    ..
                }
                | Error::Firehose {
                    retryable: true,
                    ..
                }
        )
    }
}

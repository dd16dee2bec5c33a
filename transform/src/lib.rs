//! # shoplake-transform: the streaming stage
//!
//! Reads the events stream (any [`shoplake_ingest::StreamConsumer`]: the embedded local log or
//! Kinesis) and turns records into staged Parquet files in the lake's object store:
//!
//! ```text
//! stream ─► decode + validate ─► bad rows ──────────────────────────► _staging/bad_rows/*.parquet
//!               │
//!               └─► dedup (event_id) ─► enrich (event time, session, channel, fx, bots)
//!                                        ─► Arrow batch ──────────────► _staging/events/*.parquet
//!                                                               then: checkpoint + state commit
//! ```
//!
//! Delivery: at-least-once from the stream. The checkpoint (with the dedup window and the inferred
//! sessions) is committed in one redb transaction *after* the staged files are written, so a crash
//! re-reads records rather than losing them; duplicate copies that reach staging are dropped by the
//! compactor, which de-duplicates by event_id against the lake.
//!
//! Workers sharing a stream ([`leases`], on Kinesis): the shards are leased to `shoplake stream`
//! workers through conditional puts in the lake's object store, and each lease carries its
//! shard's checkpoint, written after the staged files it covers. A worker that dies, or loses its
//! disk, is replaced from those checkpoints; the redb state then only speeds de-duplication up.
//!
//! Beside staging, every valid, unique, non-bot event feeds the live engines ([`live`]): fraud
//! scoring ([`fraud`], a decision per order staged for the `fraud_decisions` table) and
//! recommendations ([`recs`]), served over HTTP by [`live::router`] and saved with the checkpoint.
//!
//! Why these dependencies: `redb` holds the durable state (embedded, ACID, pure Rust; the same
//! engine as the local stream); `object_store` + `parquet` write staging; `uuid` parses event ids
//! into 128-bit dedup keys and derives inferred session ids (v5); `evalexpr` parses and evaluates
//! the fraud rules' conditions (a small, well-kept expression language, so rules are data, not
//! code) and `toml` reads the rules files; `parking_lot` gives the live engines read-write locks
//! that the stage and the HTTP handlers share without poisoning; `axum` serves the live endpoints.

pub mod config;
pub mod decisions;
pub mod enrich;
pub mod fraud;
pub mod leases;
pub mod live;
pub mod recs;
pub mod stage;
pub mod staging;
pub mod state;

pub use config::StageConfig;
pub use live::Live;
pub use stage::{FlushReport, Probe, Stage, StageMetrics};

/// Result of the stage.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the streaming stage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("reading the stream failed: {0}")]
    Stream(#[from] shoplake_ingest::Error),
    #[error("stage state at {path} failed: {source}")]
    State {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("writing staging file {path} failed: {source}")]
    Staging {
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error("delivering to Firehose failed: {0}")]
    Delivery(#[source] shoplake_ingest::Error),
    #[error("encoding a staged batch failed: {0}")]
    Encode(String),
    #[error("invalid stage config: {message}")]
    Config { message: String },
}

impl Error {
    /// Whether retrying the same operation can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Stream(e) | Error::Delivery(e) => e.is_retryable(),
            Error::Staging { .. } => true,
            _ => false,
        }
    }
}

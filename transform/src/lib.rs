//! # shoplake-transform: the streaming stage
//!
//! Reads the events stream (any [`shoplake_ingest::StreamConsumer`]: the embedded local log or
//! Kinesis) and turns records into staged Parquet files in the lake's object store:
//!
//! ```text
//! source (shards, leases, raw archive tee)
//!   ─► admit: decode + validate ─► bad rows ─────────────────────────► _staging/bad_rows/*.parquet
//!               └─► dedup (event_id), bots ─► enrich (event time, session, channel, fx)
//!                        ├─► Arrow batch ─► sink ──────────────────────► _staging/events/*.parquet
//!                        └─► Observer (live engines) ─► their rows ───► _staging/fraud_decisions/
//!                                                      then: checkpoint + state commit
//! ```
//!
//! The parts: [`source`] (shard readers, discovery, [`leases`], the raw archive tee, typed
//! [`source::Checkpoint`]s), [`admit`], [`enrich`], the sink (Parquet staging or the Firehose
//! events sink, bad rows, the observer's rows; encoders in [`staging`]), [`state`] (the redb
//! database of checkpoints, the de-duplication window, sessions and the observer's state), and
//! [`stage`], the loop that joins them.
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
//! Admission ([`admit`]) decides which records become events: decoded and validated, the first of
//! their id, bots told apart. Beside staging, every admitted non-bot event goes to an
//! [`Observer`] ([`observe`]): in `shoplake stream` and `up`, the live engines of `shoplake-live`
//! (fraud scoring and recommendations), whose rows (fraud decisions) the stage stages with each
//! flush and whose state it saves with each checkpoint.
//!
//! Why these dependencies: `redb` holds the durable state (embedded, ACID, pure Rust; the same
//! engine as the local stream); `object_store` + `parquet` write staging; `uuid` parses event ids
//! into 128-bit dedup keys and derives inferred session ids (v5); `shoplake-server` exports the
//! stage's and the leases' counters; `humantime-serde` reads the config's durations with units
//! (`"30m"`).

pub mod admit;
pub mod clock;
pub mod config;
pub mod enrich;
pub mod leases;
pub mod observe;
mod sink;
pub mod source;
pub mod stage;
pub mod staging;
pub mod state;

pub use config::StageConfig;
pub use observe::Observer;
pub use stage::{FlushReport, Stage, StageMetrics};

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
    #[error("the stage's observer (the live engines) failed: {source}")]
    Observer {
        #[source]
        source: observe::ObserverError,
    },
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

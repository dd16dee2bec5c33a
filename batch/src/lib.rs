//! # shoplake-batch: the lake's batch jobs
//!
//! Owns the Delta tables and everything that writes them in bulk:
//!
//! - [`Lake`]: where the lake lives (a local folder by default, `s3://bucket/prefix` in
//!   production) and the object store that reaches it;
//! - [`compact`]: staged Parquet files (written by the streaming stage) → the `events` and
//!   `bad_rows` Delta tables, de-duplicated by id across staging files *and* against what the lake
//!   already holds, then the tables [`derived`] from events by SQL — `orders` from the order
//!   lifecycle events (`sql/batch/orders.sql`) and `visits`, one row per session
//!   (`sql/batch/visits.sql`) — merged for the keys the round touched, then the `identities` table ([`identities`]: which user each
//!   anonymous id is linked to) merged from the round's identity events; consumed staging files
//!   are deleted only after every commit;
//! - [`optimize`]: small files → large ones (Delta `OPTIMIZE`, bin-packing) and vacuum;
//! - [`affinity`]: the `product_affinity` table (item to item over the whole history, in
//!   polars), which seeds the live recommendations on a cold start.
//!
//! ## Exactly once
//! Each compaction step is idempotent by construction: rows whose id is already in the table
//! are dropped before the append, so re-running after a crash at any point (before a commit, between
//! commits, before staging cleanup) neither loses nor duplicates a row. Delta's atomic commits mean
//! readers never see half a compaction.
//!
//! ## Layout
//! Chosen by measuring (`bench/run.sh`; the figures are in BENCHMARKS.md, 9.47 million events
//! over 25 days, 2 cores):
//!
//! - **Partitioned by `event_date`** (`events`, `bad_rows`, `fraud_decisions`): dashboards ask
//!   about days and hours, and a day is the unit OPTIMIZE rewrites. Finer (hours) would cut
//!   ~55 MB days into ~2 MB files; coarser (months) would make every optimize rewrite a month.
//! - **Sorted by `event_time` within each file.** Compaction sorts each round; [`optimize`]
//!   rewrites a day of several files sorted again (a ZORDER on that one column). Delta's file
//!   statistics and the row groups' min/max then skip what a time filter rules out. Before the
//!   sorted rewrite, bin-packing concatenated rounds that each spanned the day, and a one-hour
//!   filter matched 8 of a day's 12 row groups and read 8.25% of the bytes of an unpruned scan;
//!   sorted, it reads 1.50%, 15× faster. The sort costs optimize ~5 more CPU-seconds per million
//!   events rewritten, paid only by days whose files overlap in time.
//! - **Row groups of 128 Ki rows** (parquet's default is 1 Mi): the unit of statistics and bloom
//!   filter pruning. The lake written with 1 Mi rows had 31 row groups for 25 days, each
//!   holding most of a day, so neither an hour's filter nor a shopper's bloom filter could skip
//!   much of it.
//! - **Bloom filters on `anonymous_id`, `user_id`, `order_id`** (1% false positives, sized for a
//!   row group's rows): ids are random, so min/max statistics cannot skip anything. One shopper's
//!   events, measured on the same 9.47M events: without filters all 31 row groups were read
//!   (47.6 MB); with them 4 of 92 (12.9 MB). In the benchmark that lookup reads 1.25% of an
//!   unpruned scan's bytes and answers 57× faster. They take 0.3% of the table.
//! - **zstd level 3**, statistics and the page index written by default (the page index narrows a
//!   matched row group to the pages a filter needs).
//! - **`visits`**, one row per session, kept by compaction ([`derived`]): the dashboards read
//!   530,000 visits instead of grouping 9.5 million events. The funnel went from 5.6 s to 0.6 s.
//!
//! Why these dependencies: `deltalake` writes and reads the Delta log (atomic commits, the format
//! other engines read); `datafusion` runs the anti-join and the orders SQL; `object_store` and
//! `parquet` read the staging files; `polars` runs the product-affinity job's self-joins and
//! group-bys (lazy API only, no polars I/O: see [`affinity`] for why data crosses column by column).

use deltalake::kernel::transaction::TransactionError;

pub mod affinity;
pub mod compact;
pub mod derived;
pub mod identities;
mod lake;
pub mod optimize;
pub mod orders;
pub mod replay;
pub mod staged;
pub mod visits;

pub use compact::{CompactOptions, CompactReport, compact, compact_all};
pub use lake::Lake;

/// Result of the batch jobs.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the batch jobs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("delta table {table}: {source}")]
    Delta {
        table: String,
        /// Boxed, as DataFusion's below: both are large, and every `Result` here would carry them.
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },
    #[error("object store at {path}: {source}")]
    Store {
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error("reading staging file {path}: {source}")]
    Staging {
        path: String,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("query while compacting {table}: {source}")]
    Query {
        table: String,
        #[source]
        source: Box<datafusion::error::DataFusionError>,
    },
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("lake: {message}")]
    Lake { message: String },
}

impl Error {
    /// Whether a concurrent writer committed first (re-running the job resolves it).
    pub fn is_conflict(&self) -> bool {
        match self {
            Error::Delta { source, .. } => matches!(
                &**source,
                deltalake::DeltaTableError::VersionAlreadyExists(_)
                    | deltalake::DeltaTableError::Transaction {
                        source: TransactionError::CommitConflict(_)
                            | TransactionError::VersionAlreadyExists(_)
                            | TransactionError::MaxCommitAttempts(_),
                    }
            ),
            _ => false,
        }
    }

    /// A Delta error on `table`.
    pub fn delta(table: &str, source: deltalake::DeltaTableError) -> Self {
        Error::Delta {
            table: table.to_owned(),
            source: Box::new(source),
        }
    }

    /// A query error while working on `table`.
    pub fn query(table: &str, source: datafusion::error::DataFusionError) -> Self {
        Error::Query {
            table: table.to_owned(),
            source: Box::new(source),
        }
    }

    /// Whether re-running the job can succeed (it is idempotent, so re-running is always safe).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Store { .. } | Error::Delta { .. })
    }
}

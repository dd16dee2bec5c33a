//! # shoplake-batch: the lake's tables and the jobs that write them
//!
//! Owns the Delta tables and everything that writes them in bulk. Data enters as the objects the
//! streaming stage (Parquet) or a Firehose delivery stream (NDJSON, plain or gzip) leaves under
//! `_staging/`; it leaves as Delta tables that the query service, the live engines' warm start and
//! other engines (DuckDB, Spark, Trino, Athena) read.
//!
//! The lake and its tables:
//! - [`Lake`]: where the lake lives (a local folder by default, `s3://bucket/prefix` in
//!   production) and the object store that reaches it;
//! - [`tables`]: the registry, one [`TableDescriptor`] per table — name, schema, partitioning,
//!   key, who keeps it, its personal-data columns and its bloom-filter columns. Everything that
//!   needs a table's facts reads them here (compaction, optimize, the writer, the query service);
//! - [`write`]: the one lake writer's settings — [`WriteOptions`] (file size, zstd level), the
//!   Parquet writer properties each table gets from its descriptor (the *Layout* below), and
//!   [`write::conform`], which casts rows to a table's schema before a write.
//!
//! The jobs:
//! - [`compact`]: staged objects → the `events`, `bad_rows` and `fraud_decisions` tables,
//!   de-duplicated by key across staging files *and* against what the lake already holds
//!   ([`staged`] decodes the objects); then the tables [`derived`] from events by SQL — `orders`
//!   (`sql/batch/orders.sql`) and `visits`, one row per session (`sql/batch/visits.sql`) — merged
//!   for the keys the round touched, then the `identities` table ([`identities`]: which user each
//!   anonymous id is linked to) merged from the round's identity events, and the
//!   days its events fall on written down for the daily [`rollup`]s (`rollup_products`,
//!   `rollup_search`, `rollup_promotions`: per day, what a report sums), which a refresh computes
//!   again after [`compact_all`] drains staging (in `up`, on an interval of its own). Consumed
//!   staging files are deleted only after every commit;
//! - [`optimize`]: small files → large ones (Delta `OPTIMIZE`: bin-packing, or a sort by event
//!   time for a day whose files overlap in time);
//! - [`lifecycle`]: retention (days older than a table's period leave it; old quarantine and
//!   raw archive objects are deleted) and VACUUM (files no table version within a grace period
//!   needs leave storage, with their key-index objects);
//! - [`affinity`]: the `product_affinity` table (item to item over the whole history, in
//!   DataFusion SQL), which seeds the live recommendations on a cold start;
//! - [`bucket`]: the lake bucket's own settings on S3 (encryption, public access, lifecycle
//!   rules), checked and set by `shoplake lake init`;
//! - [`schedule`]: those jobs on intervals, as `shoplake up` runs them ([`Schedule`]).
//!
//! Reading back: [`archive`] puts the Firehose raw archive back on the events stream (`shoplake
//! replay`); [`history`] streams the lake's recent events in event-time order, from which
//! the live engines rebuild their state when their saved copy is missing.
//!
//! Modules depend one way: `schedule` → `compact`, `optimize`, `affinity`; `compact` →
//! `derived`, `rollup`, `identities`, `staged`, `keys`; every job → `write` → `tables`; and all → [`Lake`].
//! Adding a table: its name in `shoplake_events::lake`, a descriptor in [`tables`] (the registry's
//! tests check the two agree), and the job that writes it through [`write`].
//!
//! ## Exactly once
//! Each compaction step is idempotent by construction: rows whose id is already in the table
//! are dropped before the append, so re-running after a crash at any point (before a commit, between
//! commits, before staging cleanup) neither loses nor duplicates a row. Delta's atomic commits mean
//! readers never see half a compaction. Which ids the table holds is answered by the [`keys`]
//! index, not by a scan, so the same holds for a client's retry that reaches staging long after
//! the first copy, through any worker: see [`keys`] for the design, its cost and the one window
//! it leaves.
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
//! - **Bloom filters on `anonymous_id`, `user_id`, `order_id`** in every table that has them
//!   ([`TableDescriptor::bloom_filter_columns`]; 1% false positives, sized for a row group's
//!   rows): ids are random, so min/max statistics cannot skip anything. One shopper's
//!   events, measured on the same 9.47M events: without filters all 31 row groups were read
//!   (47.6 MB); with them 4 of 92 (12.9 MB). In the benchmark that lookup reads 1.25% of an
//!   unpruned scan's bytes and answers 57× faster. They take 0.3% of the table.
//! - **zstd level 3**, statistics and the page index written by default (the page index narrows a
//!   matched row group to the pages a filter needs).
//! - **`visits`**, one row per session, kept by compaction ([`derived`]): the dashboards read
//!   530,000 visits instead of grouping 9.5 million events. The funnel went from 5.6 s to 0.6 s.
//! - **Compaction rounds of at most 16 MiB of staging** ([`CompactOptions::max_bytes`]): decoded
//!   to Arrow, staged events take ~20× their zstd Parquet size, and a round peaks at ~40× (the
//!   staged rows plus the sorted rows being written). Heaptrack, 361k events = 27 MiB staged:
//!   1.04 GiB peak heap in one 64 MiB round, 620 MiB in 16 MiB rounds, whatever the backlog.
//!
//! Why these dependencies: `deltalake` writes and reads the Delta log (atomic commits, the format
//! other engines read); `datafusion` sorts each round and runs the derived tables' SQL; `object_store` and
//! `parquet` read the staging files (and a lake file's key column alone, for [`keys`]);
//! `twox-hash` is the 64-bit hash the key index keeps (parquet's own, already in the tree);
//! `shoplake-server` holds the `/metrics` helpers and the fault points; `shoplake-ingest` is the stream a replay puts the archive back on and the archive's line format;
//! `aws-config` and `aws-sdk-s3` read and put the lake bucket's settings ([`bucket`]), which
//! object_store has no calls for; `csv` reads the campaign spend files the ad platforms export ([`spend`]).

use deltalake::kernel::transaction::TransactionError;

pub mod affinity;
pub mod archive;
pub mod bucket;
pub mod compact;
pub mod derived;
pub mod erase;
pub mod history;
pub mod identities;
pub mod keys;
mod lake;
pub mod lifecycle;
pub mod optimize;
pub mod rollup;
pub mod schedule;
pub mod spend;
pub mod staged;
pub mod tables;
pub mod write;

pub use compact::{CompactOptions, CompactReport, compact, compact_all, compact_staged};
pub use lake::{AsOf, Lake};
pub use schedule::Schedule;
pub use tables::TableDescriptor;
pub use write::WriteOptions;

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
    /// A data file of the lake could not be read (the key index reads their key column).
    #[error("reading the lake file {path}: {source}")]
    LakeFile {
        path: String,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("reading staging file {path}: {source}")]
    Staging {
        path: String,
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// A staged NDJSON object (a Firehose delivery) could not be read as a whole: not gzip
    /// though it starts like gzip, or not readable line by line. Lines that do not decode are bad
    /// rows, not this error.
    #[error("reading the staged object {path}: {source}")]
    StagedObject {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The NDJSON decoder could not be set up for a staged object's table schema.
    #[error("decoding the staged NDJSON object {path}: {source}")]
    StagedJson {
        path: String,
        #[source]
        source: arrow::error::ArrowError,
    },
    #[error("query while compacting {table}: {source}")]
    Query {
        table: String,
        #[source]
        source: Box<datafusion::error::DataFusionError>,
    },
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Rows on their way into `table` lack one of its columns (or hold it with another type).
    #[error("the rows for table {table} have no usable column {column}")]
    MissingColumn { table: String, column: String },
    /// A table that was just created is not in the lake.
    #[error(
        "table {table} is not in the lake right after its creation; is something else deleting it?"
    )]
    MissingTable { table: String },
    /// A table of the lake holds a column with another type than the contract's: such a change
    /// cannot be merged into the files already written.
    #[error(
        "table {table}: column {column} is {found} in the lake but {wanted} in this version of \
         shoplake; a type change cannot be merged into the files already written. Keep the old \
         type in the contract and add the new one as a column of another name, or rewrite the \
         table into a new lake (`shoplake replay` from the raw archive)"
    )]
    SchemaChange {
        table: String,
        column: String,
        found: String,
        wanted: String,
    },
    /// A name that is not one of the lake's tables ([`tables::ALL`]).
    #[error(
        "the lake has no table named {table:?} (its tables: {})",
        tables::ALL.map(|t| t.name).join(", ")
    )]
    UnknownTable { table: String },
    /// The lake's location cannot be used.
    #[error("the lake location {location} cannot be used: {reason}")]
    BadLocation { location: String, reason: String },
    /// A setting (of the `[compaction]` config) has a value that cannot be used.
    #[error("{name} = {value} cannot be used: {reason}")]
    BadOption {
        name: &'static str,
        value: String,
        reason: String,
    },
    #[error("creating the folder {path}: {source}")]
    CreateDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A call to S3 about the lake bucket's settings failed (`shoplake lake init`).
    #[error("the bucket {bucket}: {call}: {detail}")]
    Bucket {
        bucket: String,
        call: &'static str,
        detail: String,
    },
    /// A batch job's query returned what the job does not expect: a bug, not bad data.
    #[error("the {table} job's query returned {problem}")]
    UnexpectedResult {
        table: &'static str,
        problem: &'static str,
    },
    /// The stream refused records put back on it (`shoplake replay`).
    #[error("putting records back on the stream: {source}")]
    Stream {
        #[source]
        source: shoplake_ingest::Error,
    },
    /// A batch job's blocking task panicked.
    #[error("the {table} job panicked: {source}")]
    Panicked {
        table: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
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

    /// `table`'s rows lack `column`.
    pub fn missing_column(table: &str, column: &str) -> Self {
        Error::MissingColumn {
            table: table.to_owned(),
            column: column.to_owned(),
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

/// [`Error::query`] on `table`, for `map_err`.
pub(crate) fn query_err(table: &str) -> impl Fn(datafusion::error::DataFusionError) -> Error + '_ {
    move |source| Error::query(table, source)
}

/// [`Error::delta`] on `table`, for `map_err`.
pub(crate) fn delta_err(table: &str) -> impl Fn(deltalake::DeltaTableError) -> Error + '_ {
    move |source| Error::delta(table, source)
}

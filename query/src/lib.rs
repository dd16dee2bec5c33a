//! # shoplake-query: SQL over the lake
//!
//! Owns the query side: a DataFusion session over every Delta table of the lake (the registry
//! [`shoplake_batch::tables`]: `events`, `orders`, `visits`, `identities`, `bad_rows`,
//! `fraud_decisions`, `product_affinity`) with the views of `sql/views/*.sql` on top, and the
//! ways to ask it —
//! [`QueryService::sql`] (the `shoplake sql` command), [`render`] (table, CSV, JSON, NDJSON) and
//! an HTTP API ([`router`]: `POST /v1/sql`, `GET /v1/tables`), the Postgres wire protocol
//! ([`pg::PgServer`]: psql, BI tools, psycopg, pgjdbc) and Arrow Flight SQL
//! ([`flight::FlightServer`]: ADBC, notebooks). Every way in runs the same [`QueryService::prepare`].
//!
//! SQL enters as text and leaves as Arrow `RecordBatch`es, streamed as they are produced
//! ([`QueryService::prepare`] → [`Prepared::execute`] → [`QueryStream`]). Only queries run:
//! DDL, DML, `COPY` and session statements are refused before planning and again on the plan,
//! so no caller can change the lake, the session or a file.
//!
//! ## Bounds
//! Every statement, whoever asks, runs under the `[query]` limits ([`QueryConfig`]): a turn (at
//! most `max_concurrent` at once, a short queue, then "busy"), a time limit, a memory pool of its
//! own inside the service's (sorts and aggregations spill, others fail with "out of memory"), and
//! caps on the rows and bytes of its answer — an answer over a cap is refused, never silently
//! cut, unless the client asked for a limit. Statements run on a runtime of their own whose
//! threads have a lower CPU priority (nice 10): in `shoplake up`, heavy queries take the CPU
//! ingestion leaves. Answers are cached until a table they read gets a new Delta version.
//!
//! Named reports ([`reports`]): the files of `sql/reports` (and a store's own, `query.reports_dir`),
//! each a query with a header that declares its title, description, least role and typed
//! parameters. They are served as `GET /v1/reports` and `GET /v1/reports/NAME`, as `shoplake
//! report`, and to SQL clients as table functions `report_NAME(from, to, …)`. Their numbers are
//! checked against DuckDB with SQL written from their descriptions only (`tests/reports_oracle.py`),
//! so a description is the report's contract: where it is silent, the oracle and the report may
//! disagree, and the description is what gets fixed. A ratio over zero is null in every report.
//!
//! The lake grows while it is queried: before a query, each table's Delta version is checked (at
//! most once per `refresh_interval`) and a new version is registered in its place, together with
//! the views over it. A table that was never written is registered empty, with the schema its
//! descriptor gives, so queries and views work from the first second of a new lake.
//!
//! Why these dependencies: `datafusion` plans and runs the SQL; `deltalake` (through
//! `shoplake-batch`'s [`shoplake_batch::Lake`]) turns a Delta table into a DataFusion table provider
//! that prunes files by partition and statistics; `arrow` renders results (JSON, CSV, the IPC
//! stream) and `parquet` writes Parquet answers; `axum` serves HTTP; `shoplake-server` gives it
//! the error body of every API and exports its counters; `humantime-serde` and `bytesize` read
//! the `[query]` limits with units; `lru` orders the result cache; `sha2` names answers for
//! `ETag`s; `thread-priority` lowers the query threads' niceness without unsafe code;
//! `datafusion-postgres` brings pgwire (the Postgres protocol), arrow-pg (Arrow ↔ Postgres
//! values) and datafusion-pg-catalog (what clients probe) — [`pg`] says which parts are ours and
//! why; `tokio-rustls` is the listeners' TLS and `tokio-util` the cancel tokens; `arrow-flight`,
//! `tonic` and `prost` serve Flight SQL, `base64` reads its Basic handshake and `rand` makes its
//! session tokens.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let service = shoplake_query::QueryService::open("./shoplake-data/lake", Default::default()).await?;
//! let result = service.sql("select event_name, count(*) from events group by 1").await?;
//! println!("{}", shoplake_query::render(&result, shoplake_query::Format::Table)?);
//! # Ok(()) }
//! ```

mod bounds;
mod cache;
mod config;
pub mod encode;
pub mod flight;
mod http;
mod params;
pub mod pg;
mod render;
pub mod reports;
mod service;
mod tls;
mod travel;

pub use bounds::current_thread_nice;
pub use config::{QueryConfig, TlsMode};
pub use encode::{Encoder, Trailer, WireFormat};
pub use http::router;
pub use params::Params;
pub use render::{Format, render, to_json_rows};
pub use service::{
    Catalog, Freshness, Prepared, QueryMetrics, QueryOptions, QueryRequest, QueryResult,
    QueryService, QueryStream, TableFiles, VIEWS, names,
};

/// Result of the query service.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the query service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The SQL is wrong (syntax, unknown table or column, type error) or not a query. The message
    /// is what DataFusion said about the statement (its root error).
    #[error("{}", error.find_root())]
    BadSql {
        /// Boxed, as below. Not a `#[source]`: the root message is the whole story for the user,
        /// and DataFusion's context around it would only repeat it in a chain.
        error: Box<datafusion::error::DataFusionError>,
    },
    /// A view of `sql/views` does not plan over the lake's tables: the views and the tables
    /// disagree, which is a fault of the release, not of the query that found it.
    #[error("view {view} in sql/views does not plan: {source}")]
    BadView {
        view: &'static str,
        #[source]
        source: Box<datafusion::error::DataFusionError>,
    },
    /// The query ran and failed (reading the lake, out of memory).
    #[error("query failed: {source}")]
    Execution {
        /// Boxed: DataFusion's error is large, and every `Result` of this crate would carry its size.
        #[source]
        source: Box<datafusion::error::DataFusionError>,
    },
    /// The statement's parameters do not fit it (missing, extra, of the wrong type).
    #[error("{detail}")]
    BadParams { detail: String },
    /// Not a query: DDL, DML, `COPY`, `SET` and the like never run here.
    #[error("{detail}")]
    NotAllowed { detail: String },
    /// The statement ran past `query.timeout` and was stopped.
    #[error(
        "the statement ran longer than {} (query.timeout) and was stopped",
        humantime_serde::re::humantime::format_duration(*limit)
    )]
    Timeout { limit: std::time::Duration },
    /// The answer is larger than `query.max_rows` / `query.max_bytes` allow.
    #[error(
        "the answer has more than {limit} {what} (query.max_{what}); add a LIMIT, filter or \
         aggregate, or ask for a limit (the `limit` of the request) to get the first rows"
    )]
    TooLarge { what: &'static str, limit: u64 },
    /// The statement needed more memory than `query.query_memory_limit` (or the service's
    /// whole pool) and could not spill.
    #[error("{detail}")]
    OutOfMemory { detail: String },
    /// Every turn is taken and the queue is full, or the wait was too long.
    #[error(
        "the query service is busy: every turn is taken (query.max_concurrent) and the queue is \
         full or moved too slowly; retry in {}",
        humantime_serde::re::humantime::format_duration(*retry_after)
    )]
    Busy { retry_after: std::time::Duration },
    /// No report of that name (`sql/reports`).
    #[error("no report {name:?}; the reports are {known}")]
    NoReport { name: String, known: String },
    /// The `[query]` config cannot work.
    #[error("{detail}")]
    BadConfig { detail: String },
    /// The late events of a report's period could not be counted.
    #[error("counting the late events of the period: {detail}")]
    Freshness { detail: String },
    /// The runtime that runs statements could not start.
    #[error("starting the query runtime: {source}")]
    Runtime {
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Lake(#[from] shoplake_batch::Error),
    #[error("rendering the result: {0}")]
    Render(#[from] arrow::error::ArrowError),
    #[error("writing Parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
}

impl Error {
    pub(crate) fn execution(source: datafusion::error::DataFusionError) -> Self {
        Error::Execution {
            source: Box::new(source),
        }
    }

    /// Whether the caller's statement is at fault (a 4xx) rather than the service (a 500).
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Error::BadSql { .. }
                | Error::BadParams { .. }
                | Error::NotAllowed { .. }
                | Error::Timeout { .. }
                | Error::TooLarge { .. }
                | Error::OutOfMemory { .. }
        )
    }
}

//! # shoplake-query: SQL over the lake
//!
//! Owns the query side: a DataFusion session over every Delta table of the lake (the registry
//! [`shoplake_batch::tables`]: `events`, `orders`, `visits`, `identities`, `bad_rows`,
//! `fraud_decisions`, `product_affinity`) with the views of `sql/views/*.sql` on top, and the
//! ways to ask it —
//! [`QueryService::sql`] (the `shoplake sql` command), [`render`] (table, CSV, JSON, NDJSON) and
//! an HTTP API ([`router`]: `POST /v1/sql`, `GET /v1/tables`).
//!
//! SQL enters as text and leaves as Arrow `RecordBatch`es. Only queries run: DDL, DML and
//! session statements are refused, so the HTTP endpoint cannot change the lake or the session.
//!
//! The lake grows while it is queried: before a query, each table's Delta version is checked (at
//! most once per `refresh_interval`) and a new version is registered in its place, together with
//! the views over it. A table that was never written is registered empty, with the schema its
//! descriptor gives, so queries and views work from the first second of a new lake.
//!
//! Why these dependencies: `datafusion` plans and runs the SQL; `deltalake` (through
//! `shoplake-batch`'s [`shoplake_batch::Lake`]) turns a Delta table into a DataFusion table provider
//! that prunes files by partition and statistics; `arrow` renders results; `axum` serves HTTP;
//! `shoplake-server` gives it the error body of every API and exports its counters.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let service = shoplake_query::QueryService::open("./shoplake-data/lake", Default::default()).await?;
//! let result = service.sql("select event_name, count(*) from events group by 1").await?;
//! println!("{}", shoplake_query::render(&result, shoplake_query::Format::Table)?);
//! # Ok(()) }
//! ```

mod http;
mod render;
mod service;

pub use http::router;
pub use render::{Format, render, to_json_rows};
pub use service::{QueryOptions, QueryResult, QueryService, VIEWS};

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
    #[error(transparent)]
    Lake(#[from] shoplake_batch::Error),
    #[error("rendering the result: {0}")]
    Render(#[from] arrow::error::ArrowError),
}

impl Error {
    pub(crate) fn execution(source: datafusion::error::DataFusionError) -> Self {
        Error::Execution {
            source: Box::new(source),
        }
    }

    /// Whether the caller's SQL is at fault (HTTP 400) rather than the service (HTTP 500).
    pub fn is_user_error(&self) -> bool {
        matches!(self, Error::BadSql { .. })
    }
}

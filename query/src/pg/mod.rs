//! The Postgres wire protocol of the query service: psql, DBeaver, Metabase, Grafana, Superset,
//! psycopg and pgjdbc connect to `--pg-addr` (default 127.0.0.1:5433) as to a Postgres 16 server.
//!
//! Built on kept libraries: pgwire speaks the protocol (startup, SCRAM, simple and extended
//! query, cancel), arrow-pg encodes Arrow columns as Postgres text and binary values and decodes
//! bound parameters, datafusion-pg-catalog answers the `pg_catalog` tables and functions clients
//! probe and rewrites their probing SQL for DataFusion, and datafusion-postgres's hooks answer
//! `SET`, `SHOW` and transaction statements. Its server and handlers are not used, because:
//! - they authenticate nobody (any user, any password); here a user logs in with SCRAM-SHA-256
//!   against the platform's own users (`shoplake users create … --password-stdin`), and a role
//!   without SQL (storefront) cannot log in;
//! - their TLS falls back to plain text when the certificate does not load; here a bad
//!   certificate stops the command, and with `[query] tls = "required"` a client without TLS is
//!   refused;
//! - they run statements on the shared session directly; here every statement goes through
//!   [`QueryService::prepare`](crate::QueryService::prepare), with the same turns, time limit,
//!   memory pool, row and byte caps, read-only rule, catalog per role and result cache as HTTP;
//! - pgwire collects a whole extended-protocol answer in memory before sending it (psycopg,
//!   SQLAlchemy and pgjdbc use that protocol); here rows are sent as the engine produces them;
//! - a cancel request stopped only the planning; here it stops the running statement;
//! - any `SET` ran on the session every client shares; here only session settings
//!   (`statement_timeout`, DateStyle, TimeZone, …) are kept, per connection, and other `SET`s
//!   are answered and ignored.
//!
//! `DECLARE … CURSOR` / `FETCH` / `CLOSE` are server-side cursors over a running statement (a
//! client reads a large answer a slice at a time); `version()` says `PostgreSQL 16.6` first, as
//! SQLAlchemy and others read it.

mod handler;
mod hooks;
mod session;

use std::future::Future;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog;
use datafusion_postgres::pgwire;
use pgwire::api::PgWireServerHandlers;
use pgwire::api::auth::DefaultServerParameterProvider;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::ScramAuth;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use shoplake_server::auth::Guard;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::tls::Tls;
use crate::{Error, QueryService};

use handler::Handler;
use session::{Cancels, Startup, Users};

/// What `version()` and `server_version` say: a Postgres version first (clients parse it), then
/// what answers.
pub const SERVER_VERSION: &str = "16.6";

/// The Postgres wire listener of a query service.
pub struct PgServer {
    handler: Arc<Handler>,
    users: Arc<Users>,
    cancels: Arc<Cancels>,
    params: Arc<DefaultServerParameterProvider>,
    tls: Option<Tls>,
    connections: Arc<Semaphore>,
    runtime: Option<tokio::runtime::Handle>,
}

impl std::fmt::Debug for PgServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgServer")
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl PgServer {
    /// A listener for `service`, whose users log in as `guard` knows them, with the TLS and
    /// connection limit of the service's `[query]` config.
    pub fn new(service: Arc<QueryService>, guard: Arc<Guard>) -> Result<Self, Error> {
        let tls = Tls::from_config(service.limits())?;
        let cancels = Arc::new(Cancels::default());
        let mut params = DefaultServerParameterProvider::default();
        params.server_version =
            format!("{SERVER_VERSION} (shoplake {})", env!("CARGO_PKG_VERSION"));
        params.is_superuser = false;
        params.default_transaction_read_only = true;
        params.scram_iterations = shoplake_server::auth::SCRAM_ITERATIONS as usize;
        Ok(PgServer {
            connections: Arc::new(Semaphore::new(service.limits().max_connections)),
            runtime: service.runtime_handle().cloned(),
            handler: Arc::new(Handler::new(service, guard.clone(), cancels.clone())),
            users: Arc::new(Users::new(guard)),
            cancels,
            params: Arc::new(params),
            tls,
        })
    }

    /// Serves `listener` until `shutdown` resolves. Connections run on the query runtime (its
    /// threads at a lower priority than ingestion's).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> std::io::Result<()> {
        let addr = listener.local_addr()?;
        info!(%addr, tls = ?self.tls.as_ref().map(|t| t.mode), "serving SQL over the Postgres wire protocol");
        let acceptor = self.tls.as_ref().map(Tls::acceptor);
        let this = Arc::new(self);
        tokio::pin!(shutdown);
        loop {
            let (socket, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        warn!(error = %e, "accepting a Postgres connection");
                        continue;
                    }
                },
                () = &mut shutdown => return Ok(()),
            };
            let Ok(permit) = this.connections.clone().try_acquire_owned() else {
                warn!(%peer, "refusing a Postgres connection: query.max_connections are open");
                tokio::spawn(session::refuse_busy(socket));
                continue;
            };
            let _ = socket.set_nodelay(true);
            let (handlers, acceptor) = (this.clone(), acceptor.clone());
            let connection = async move {
                let _permit = permit;
                if let Err(e) = pgwire::tokio::process_socket(socket, acceptor, handlers).await {
                    debug!(%peer, error = %e, "Postgres connection ended");
                }
            };
            match &this.runtime {
                Some(runtime) => drop(runtime.spawn(connection)),
                None => drop(tokio::spawn(connection)),
            }
        }
    }
}

impl PgWireServerHandlers for PgServer {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.handler.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.handler.clone()
    }

    /// A new one per connection: SCRAM keeps the exchange's state in it.
    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        let mut scram = ScramAuth::new(self.users.clone());
        scram.set_iterations(shoplake_server::auth::SCRAM_ITERATIONS as usize);
        Arc::new(Startup {
            inner: SASLAuthStartupHandler::new(self.params.clone()).with_scram(scram),
            require_tls: self.tls.as_ref().is_some_and(Tls::required),
            cancels: self.cancels.clone(),
        })
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        self.cancels.clone()
    }

    fn error_handler(&self) -> Arc<impl pgwire::api::ErrorHandler> {
        Arc::new(session::LogErrors)
    }
}

/// Makes a session answer what Postgres clients ask of the catalog: the `pg_catalog` schema and
/// functions (`current_database()`, `format_type`, `has_table_privilege`, …) over the session's
/// own tables, and a `version()` that names a Postgres version.
pub(crate) fn install_catalog(ctx: &SessionContext) -> Result<(), Error> {
    let catalog = ctx
        .state()
        .config()
        .options()
        .catalog
        .default_catalog
        .clone();
    setup_pg_catalog(ctx, &catalog, EmptyContextProvider).map_err(|e| Error::execution(*e))?;
    ctx.register_udf(ScalarUDF::new_from_impl(Version::new()));
    ctx.register_udf(ScalarUDF::new_from_impl(ToRegtype::new()));
    // No table here has a serial column (SQLAlchemy asks while reflecting columns).
    ctx.register_udf(ScalarUDF::new_from_impl(NoText::new(
        "pg_get_serial_sequence",
    )));
    Ok(())
}

/// `version()`: `PostgreSQL 16.6 (shoplake …, Apache DataFusion …)`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Version {
    signature: Signature,
    text: String,
}

impl Version {
    fn new() -> Self {
        Version {
            signature: Signature::exact(vec![], Volatility::Immutable),
            text: format!(
                "PostgreSQL {SERVER_VERSION} (shoplake {}, Apache DataFusion {}) on {}",
                env!("CARGO_PKG_VERSION"),
                datafusion::DATAFUSION_VERSION,
                std::env::consts::ARCH
            ),
        }
    }
}

impl ScalarUDFImpl for Version {
    fn name(&self) -> &str {
        "version"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, _: ScalarFunctionArgs) -> datafusion::error::Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(
            datafusion::scalar::ScalarValue::Utf8(Some(self.text.clone())),
        ))
    }
}

/// `to_regtype(name)`: the oid of a built-in type by name, or NULL (psycopg and SQLAlchemy look
/// types such as `hstore` up this way when they connect).
#[derive(Debug, PartialEq, Eq, Hash)]
struct ToRegtype {
    signature: Signature,
    /// (name, oid) of every type Postgres has built in, sorted by name.
    types: Vec<(String, i32)>,
}

impl ToRegtype {
    fn new() -> Self {
        let mut types: Vec<(String, i32)> = (0u32..10_000)
            .filter_map(|oid| {
                let t = pgwire::api::Type::from_oid(oid)?;
                Some((t.name().to_owned(), i32::try_from(oid).ok()?))
            })
            .collect();
        types.sort();
        ToRegtype {
            signature: Signature::exact(vec![DataType::Utf8], Volatility::Immutable),
            types,
        }
    }

    fn oid(&self, name: &str) -> Option<i32> {
        let name = name.trim().trim_matches('"').to_lowercase();
        let name = name.strip_prefix("pg_catalog.").unwrap_or(&name);
        let i = self
            .types
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .ok()?;
        Some(self.types[i].1)
    }
}

impl ScalarUDFImpl for ToRegtype {
    fn name(&self) -> &str {
        "to_regtype"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Int32)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        use datafusion::arrow::array::{Array, Int32Array, StringArray};
        use datafusion::scalar::ScalarValue;
        match args.args.first() {
            Some(ColumnarValue::Scalar(ScalarValue::Utf8(name))) => Ok(ColumnarValue::Scalar(
                ScalarValue::Int32(name.as_deref().and_then(|n| self.oid(n))),
            )),
            Some(ColumnarValue::Array(array)) => {
                let names = array
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| {
                        datafusion::error::DataFusionError::Plan("to_regtype takes text".into())
                    })?;
                let oids: Int32Array = (0..names.len())
                    .map(|i| {
                        (!names.is_null(i))
                            .then(|| self.oid(names.value(i)))
                            .flatten()
                    })
                    .collect();
                Ok(ColumnarValue::Array(std::sync::Arc::new(oids)))
            }
            _ => Ok(ColumnarValue::Scalar(ScalarValue::Int32(None))),
        }
    }
}

/// A catalog function whose answer is always NULL text here (`pg_get_serial_sequence`: no
/// column has a sequence).
#[derive(Debug, PartialEq, Eq, Hash)]
struct NoText {
    name: &'static str,
    signature: Signature,
}

impl NoText {
    fn new(name: &'static str) -> Self {
        NoText {
            name,
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for NoText {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, _: ScalarFunctionArgs) -> datafusion::error::Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(
            datafusion::scalar::ScalarValue::Utf8(None),
        ))
    }
}

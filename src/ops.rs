//! How the process runs: logging, shutdown signals, binding and serving HTTP. The operations
//! endpoints (`/metrics`, `/health`, `/ready`) are `shoplake_server::ops`.

use anyhow::Context;
use axum::Router;
use tracing_subscriber::EnvFilter;

/// Libraries whose INFO lines are per-operation detail (every Delta snapshot and scan), and the
/// delta writer's WARN for every binary column it keeps no statistics for (`bad_rows.raw`), and
/// MERGE's WARN about a file-pruning metric it derives on every upsert of `orders`. A
/// filter given with `--log` comes after this one, so naming a library there overrides it.
const QUIET_LIBRARIES: &str = "info,buoyant_kernel=warn,deltalake_core=warn,deltalake_core::writer::stats=error,deltalake_core::kernel::transaction=off,deltalake_core::operations::merge=error,datafusion=warn";

/// Logging flags.
#[derive(Clone, Debug, clap::Args)]
pub struct LogArgs {
    /// Log filter (tracing EnvFilter syntax), e.g. `info,shoplake_transform=debug`. `info` is
    /// shoplake's own progress; the libraries under it (Delta, DataFusion) log at `warn` and above
    /// unless named.
    #[arg(long, env = "SHOPLAKE_LOG", default_value = "info", global = true)]
    pub log: String,
    /// Log format.
    #[arg(long, env = "SHOPLAKE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line per event for a person.
    Text,
    /// One JSON object per event for a log pipeline.
    Json,
}

impl LogArgs {
    pub fn init(&self) {
        let filter = EnvFilter::try_new(format!("{QUIET_LIBRARIES},{}", self.log))
            .unwrap_or_else(|_| EnvFilter::new(QUIET_LIBRARIES));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        if self.log_format == LogFormat::Json {
            builder.json().init();
        } else {
            builder.init();
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Binds an HTTP address, so that a taken port fails the command before it announces itself.
pub async fn bind(addr: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("binding {addr} (another shoplake running? change the address flag)")
    })
}

/// Starts the Postgres wire listener of `service` on `addr` (bound before this returns, so a
/// taken port fails the command at once); it serves until `shutdown` resolves.
pub async fn serve_pg(
    addr: std::net::SocketAddr,
    service: std::sync::Arc<shoplake_query::QueryService>,
    guard: std::sync::Arc<shoplake_server::auth::Guard>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let server = shoplake_query::pg::PgServer::new(service, guard)?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("binding the Postgres wire address {addr} (another shoplake or a Postgres running? change --pg-addr)")
    })?;
    Ok(tokio::spawn(async move {
        if let Err(e) = server.serve(listener, shutdown).await {
            tracing::error!(error = %e, "the Postgres wire listener stopped");
        }
    }))
}

/// Starts the Arrow Flight SQL listener of `service` on `addr` (bound before this returns); it
/// serves until `shutdown` resolves.
pub async fn serve_flight(
    addr: std::net::SocketAddr,
    service: std::sync::Arc<shoplake_query::QueryService>,
    guard: std::sync::Arc<shoplake_server::auth::Guard>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let server = shoplake_query::flight::FlightServer::new(service, guard)?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!(
            "binding the Flight SQL address {addr} (another shoplake running? change --flight-addr)"
        )
    })?;
    Ok(tokio::spawn(async move {
        if let Err(e) = server.serve(listener, shutdown).await {
            tracing::error!(error = %e, "the Flight SQL listener stopped");
        }
    }))
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP")
}

/// [`serve_http`] that gives handlers the peer address (`ConnectInfo<SocketAddr>`), which the
/// collector records as the client's IP.
pub async fn serve_http_with_peers(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .context("serving HTTP")
}

//! `shoplake query`: SQL over HTTP, the Postgres wire and Flight SQL, the reports and the
//! dashboards.

use std::sync::Arc;

use shoplake_query::{QueryOptions, QueryService};
use tracing::info;

use crate::config::DataArgs;
use crate::ops;
use shoplake_server::Telemetry;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to serve on.
    #[arg(long, env = "SHOPLAKE_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    http_addr: std::net::SocketAddr,
    /// Address of the Postgres wire protocol (psql, BI tools, psycopg, pgjdbc).
    #[arg(long, env = "SHOPLAKE_PG_ADDR", default_value = "127.0.0.1:5433")]
    pg_addr: std::net::SocketAddr,
    /// Address of Arrow Flight SQL (ADBC, notebooks).
    #[arg(long, env = "SHOPLAKE_FLIGHT_ADDR", default_value = "127.0.0.1:50051")]
    flight_addr: std::net::SocketAddr,
    /// Read every row of the scanned tables: no file, row-group or page skipping. Only for
    /// measuring what pruning saves (`bench/run.sh`).
    #[arg(long)]
    no_pruning: bool,
}

pub async fn run(args: Args, data: DataArgs) -> anyhow::Result<()> {
    let config = data.pipeline_config()?;
    let service = Arc::new(
        QueryService::open_with(
            &data.lake_root(),
            QueryOptions {
                pruning: !args.no_pruning,
                limits: config.query.clone(),
                erasure: Some(config.erasure_options(&data)?),
                ..QueryOptions::default()
            },
        )
        .await?,
    );
    let guard = data.guard(&config)?;
    let pg = ops::serve_pg(
        args.pg_addr,
        service.clone(),
        guard.clone(),
        ops::shutdown_signal(),
    )
    .await?;
    let flight = ops::serve_flight(
        args.flight_addr,
        service.clone(),
        guard.clone(),
        ops::shutdown_signal(),
    )
    .await?;
    let currency = config.stage.stage.fx_rates()?.reporting().to_owned();
    let listener = ops::bind(args.http_addr).await?;
    info!(addr = %args.http_addr, "serving SQL on POST /v1/sql and the dashboards at /dashboards/");
    let mut telemetry = Telemetry::new();
    telemetry.register(service.metrics().clone());
    let router = shoplake_query::router(service.clone())
        .merge(shoplake_dashboards::router())
        .merge(shoplake_dashboards::Pipeline::new(service, &currency).router())
        .merge(shoplake_server::auth::session::router(guard.clone()))
        .merge(shoplake_server::ops::router(
            telemetry.shared(),
            shoplake_server::ops::always_ready(),
        ))
        .guarded_with_listing(guard);
    ops::serve_http(listener, router, ops::shutdown_signal()).await?;
    pg.abort();
    flight.abort();
    Ok(())
}

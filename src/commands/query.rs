//! `shoplake query`: SQL over HTTP.

use std::sync::Arc;

use shoplake_query::QueryService;
use tracing::info;

use crate::config::DataArgs;
use crate::ops;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to serve on.
    #[arg(long, env = "SHOPLAKE_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    http_addr: std::net::SocketAddr,
}

pub async fn run(args: Args, data: DataArgs) -> anyhow::Result<()> {
    let service = Arc::new(QueryService::open(&data.lake_root(), Default::default()).await?);
    info!(addr = %args.http_addr, "serving SQL on POST /v1/sql");
    shoplake_query::serve(service, args.http_addr, ops::shutdown_signal()).await?;
    Ok(())
}

//! `shoplake collect`: the HTTP collector (Segment tracking API) on the configured stream, with
//! `/metrics`, `/health` and `/ready` on the same address.

use std::sync::Arc;

use anyhow::Context;
use shoplake_collector::{Collector, KeyStore};
use tracing::info;

use crate::config::DataArgs;
use crate::ops;
use shoplake_server::Telemetry;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Address of the collector (and of /metrics, /health, /ready).
    #[arg(long, env = "SHOPLAKE_COLLECT_ADDR", default_value = "127.0.0.1:8088")]
    pub http_addr: std::net::SocketAddr,
}

pub async fn run(args: Args, data: DataArgs) -> anyhow::Result<()> {
    let config = data.pipeline_config()?;
    let stream = Arc::new(data.open_stream(&config)?);
    let keys_path = data.keys_path();
    let keys = KeyStore::open(&keys_path)
        .with_context(|| format!("opening the write keys at {}", keys_path.display()))?;
    let active = keys.active()?.len();
    if active == 0 {
        eprintln!(
            "shoplake collect: no write key yet; every request will be refused with 401. Create one with `shoplake keys create --source web`."
        );
    }
    let backend = stream.clone();
    let collector = Arc::new(
        Collector::new(stream, keys, config.collector.clone())?
            .with_limits(config.stage.stage.limits()),
    );
    let mut telemetry = Telemetry::new();
    telemetry.register(collector.metrics());
    backend.register_metrics(&mut telemetry);
    let ready = collector.clone();
    let router = shoplake_collector::router(collector)
        .merge(shoplake_server::ops::router(
            telemetry.shared(),
            Arc::new(move || ready.ready()),
        ))
        .guarded_with_listing(data.guard(&config)?);
    let listener = ops::bind(args.http_addr).await?;
    info!(addr = %args.http_addr, keys = active, "collecting events on POST /v1/track, /v1/page, /v1/identify, /v1/batch, …");
    ops::serve_http_with_peers(listener, router, ops::shutdown_signal()).await
}

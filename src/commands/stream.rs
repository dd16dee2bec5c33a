//! `shoplake stream`: the streaming stage on its own.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use shoplake_transform::Stage;
use tracing::info;

use crate::config::DataArgs;
use crate::ops;
use shoplake_server::Telemetry;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Process until the stream is caught up, then exit (instead of running until Ctrl-C).
    #[arg(long)]
    pub drain: bool,
    /// Address of /metrics, /health and /ready, and of the live endpoints: POST /v1/fraud/score,
    /// GET /v1/recommendations/{shopper}, GET /v1/products/{id}/related.
    #[arg(long, env = "SHOPLAKE_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: std::net::SocketAddr,
}

pub async fn run(args: Args, data: DataArgs) -> anyhow::Result<()> {
    let config = data.pipeline_config()?;
    let stream = Arc::new(data.open_stream(&config)?);
    let stream_handle = stream.clone();
    let lake = data.open_lake()?;
    let live = Arc::new(config.stage.live_engines()?);
    let mut stage = Stage::open(
        stream,
        lake.store(),
        &data.stage_state_path(),
        config.stage.stage.clone(),
    )?;
    if let Some(leases) = data.leases(&config, &lake)? {
        stage = stage.with_leases(leases);
    }
    let firehose = Arc::new(crate::config::FirehoseStreams::new(&config.firehose)?);
    let stage = firehose.attach(stage);
    let lease_metrics = stage.lease_metrics();
    let mut stage = shoplake_live::warm::attach(
        stage,
        &live,
        &lake,
        config.stage.live.live_rebuild,
        &config.compaction.options(),
    )
    .await?;
    let backend = stream_handle;
    if args.drain {
        let metrics = stage.metrics();
        let report = stage.drain().await?;
        info!(
            records = report.records,
            events = report.events,
            bad_rows = report.bad_rows,
            "stream drained"
        );
        println!(
            "{}",
            serde_json::json!({"records": report.records, "events": report.events, "bad_rows": report.bad_rows, "fraud_decisions": report.decisions,
                "process_cpu_seconds": metrics.process_cpu_nanos.load(Ordering::Relaxed) as f64 / 1e9})
        );
        return Ok(());
    }
    let mut telemetry = Telemetry::new();
    telemetry.register(stage.metrics());
    if let Some(leases) = lease_metrics {
        telemetry.register(leases);
    }
    telemetry.register(live.clone());
    backend.register_metrics(&mut telemetry);
    firehose.register_metrics(&mut telemetry);
    let listener = ops::bind(args.metrics_addr).await?;
    info!(addr = %args.metrics_addr, "metrics on /metrics");
    let router = shoplake_live::http::router(live.clone())
        .merge(shoplake_server::ops::router(
            telemetry.shared(),
            shoplake_server::ops::always_ready(),
        ))
        .guarded_with_listing(data.guard(&config)?);
    let rules = tokio::spawn(live.watch_rules());
    let server = tokio::spawn(ops::serve_http(listener, router, ops::shutdown_signal()));
    stage.run(ops::shutdown_signal()).await?;
    rules.abort();
    server.await??;
    Ok(())
}

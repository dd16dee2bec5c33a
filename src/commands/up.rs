//! `shoplake up`: the whole platform in one process on local disk — simulator → embedded stream →
//! streaming stage → periodic compaction → SQL over HTTP — continuing where it stopped when started
//! again.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use shoplake_query::{QueryOptions, QueryService};
use shoplake_simulator::{SimConfig, Simulator};
use shoplake_storefront_emitter::emitter::{Emitter, EmitterConfig};
use shoplake_transform::Stage;
use tokio::sync::watch;
use tracing::{error, info};

use crate::config::DataArgs;
use crate::ops;
use crate::sink::StreamSink;
use shoplake_server::Telemetry;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Events per second the simulated storefront emits (0: no simulator, ingest only).
    #[arg(long, env = "SHOPLAKE_RATE", default_value_t = 200.0)]
    pub rate: f64,
    /// Seed of the simulation.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Address of the SQL API, /metrics, /health and /ready.
    #[arg(long, env = "SHOPLAKE_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: std::net::SocketAddr,
    /// Address of the Postgres wire protocol (psql, BI tools, psycopg, pgjdbc).
    #[arg(long, env = "SHOPLAKE_PG_ADDR", default_value = "127.0.0.1:5433")]
    pub pg_addr: std::net::SocketAddr,
    /// Address of Arrow Flight SQL (ADBC, notebooks).
    #[arg(long, env = "SHOPLAKE_FLIGHT_ADDR", default_value = "127.0.0.1:50051")]
    pub flight_addr: std::net::SocketAddr,
    /// On a new data folder, the simulator first plays this much of the past (`30d`, `12h`; `0`
    /// for none), as fast as the stream takes it, so that the reports and dashboards have weeks
    /// to show from the first minute. Only with the simulator (`--rate` above 0).
    #[arg(long, env = "SHOPLAKE_HISTORY", default_value = "30d", value_parser = parse_duration)]
    pub history: Duration,
    /// Shopping sessions per simulated day of that history.
    #[arg(long, default_value_t = 1500)]
    pub history_sessions_per_day: u64,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    humantime_serde::re::humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration such as 30d or 12h: {e}"))
}

/// The simulator's run counter, so that a restart does not replay the same events.
#[derive(Debug, Default, Serialize, Deserialize)]
struct SimulatorState {
    runs: u64,
}

/// The seed of this run of the simulator, and whether it is the data folder's first.
fn next_simulator_seed(data: &DataArgs, seed: u64) -> anyhow::Result<(u64, bool)> {
    let path = data.simulator_state_path();
    let mut state: SimulatorState = match std::fs::read_to_string(&path) {
        Ok(text) => {
            serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?
        }
        Err(_) => SimulatorState::default(),
    };
    state.runs += 1;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, serde_json::to_string(&state)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok((
        seed.wrapping_add((state.runs - 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        state.runs == 1,
    ))
}

/// Loads what the simulated campaigns cost into `campaign_spend`, as a store loads its ad
/// platforms' exports (the same days loaded again replace themselves); logged, not fatal.
async fn load_simulated_spend(
    data: &DataArgs,
    config: &crate::config::PipelineConfig,
    rows: &[shoplake_simulator::spend::SpendRow],
) {
    if rows.is_empty() {
        return;
    }
    let csv = shoplake_simulator::spend::to_csv(rows);
    match super::load::load_spend(data, config, &csv).await {
        Ok(report) => info!(%report, "the simulated campaigns' spend loaded into campaign_spend"),
        Err(e) => error!(error = %e, "the simulated campaigns' spend could not be loaded"),
    }
}

/// Plays the simulated past from `config.start_micros` up to `until` as fast as the stream
/// takes it (sessions still open at `until` are cut there: the live simulator goes on from now);
/// returns what its campaigns cost.
async fn play_history(
    config: SimConfig,
    until: i64,
    spill: &std::path::Path,
    emitter: &Emitter,
    labels: &std::path::Path,
    stop: impl Fn() -> bool,
) -> anyhow::Result<Vec<shoplake_simulator::spend::SpendRow>> {
    let from = shoplake_events::format_timestamp(config.start_micros);
    info!(
        from,
        "a new data folder: simulating the past first (--history)"
    );
    let started = std::time::Instant::now();
    let mut sim = Simulator::new(config)
        .with_spill(spill)
        .with_context(|| format!("creating {}", spill.display()))?;
    let stats =
        super::emit::drive(&mut sim, emitter, false, None, Some(until), labels, stop).await?;
    let spend = sim.spend();
    drop(sim);
    let _ = std::fs::remove_dir_all(spill);
    info!(
        records = stats.records,
        seconds = started.elapsed().as_secs(),
        "history simulated; the storefront goes on live"
    );
    Ok(spend)
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

pub async fn run(args: Args, data: DataArgs) -> anyhow::Result<()> {
    let mut config = data.pipeline_config()?;
    // On Kinesis, the stage shares the stream through leases under one worker id for every
    // restart, so that a restarted stage takes its own leases back at once.
    config.stream.leases.worker_id = config.stream.leases.worker_id();
    std::fs::create_dir_all(&data.data_dir)
        .with_context(|| format!("creating {}", data.data_dir.display()))?;
    let stream = Arc::new(data.open_stream(&config)?);
    let lake = Arc::new(data.open_lake()?);

    // HTTP collector (Segment tracking API) onto the same stream.
    let keys_path = data.keys_path();
    let keys = shoplake_collector::KeyStore::open(&keys_path)
        .with_context(|| format!("opening the write keys at {}", keys_path.display()))?;
    let collector = Arc::new(
        shoplake_collector::Collector::new(stream.clone(), keys, config.collector.clone())?
            .with_limits(config.stage.stage.limits()),
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        ops::shutdown_signal().await;
        info!("stopping: flushing the simulator, the stage and a last compaction");
        let _ = stop_tx.send(true);
    });

    // Simulated storefront.
    let simulator = if args.rate > 0.0 {
        let (seed, first_run) = next_simulator_seed(&data, args.seed)?;
        let now = chrono::Utc::now().timestamp_micros();
        let history = (first_run && !args.history.is_zero()).then(|| {
            let micros = i64::try_from(args.history.as_micros()).unwrap_or(i64::MAX);
            SimConfig {
                seed: seed ^ 0x005E_ED0F_0A57,
                start_micros: now.saturating_sub(micros),
                sessions_per_hour: args.history_sessions_per_day as f64 / 24.0,
                ..SimConfig::default()
            }
        });
        let mut sim_config = SimConfig {
            seed,
            start_micros: now,
            ..SimConfig::default()
        };
        sim_config.sessions_per_hour = super::emit::sessions_per_hour_for(args.rate, &sim_config);
        let emitter = Emitter::new(
            Arc::new(StreamSink(stream.clone())),
            EmitterConfig::default(),
        );
        let labels = data.data_dir.join("simulator").join("labels.ndjson");
        // Records the simulator schedules ahead (the rest of each session, deliveries days later)
        // wait on disk, so memory stays flat however long `up` runs.
        let spill = data.data_dir.join("simulator").join("pending");
        let mut sim = Simulator::new(sim_config)
            .with_spill(&spill)
            .with_context(|| format!("creating {}", spill.display()))?;
        let rx = stop_rx.clone();
        let history_spill = data.data_dir.join("simulator").join("history-pending");
        let (data, pipeline) = (data.clone(), config.clone());
        Some(tokio::spawn(async move {
            if let Some(config) = history {
                let stop = || *rx.borrow();
                let spend =
                    play_history(config, now, &history_spill, &emitter, &labels, stop).await?;
                load_simulated_spend(&data, &pipeline, &spend).await;
            }
            let stats = super::emit::drive(&mut sim, &emitter, true, None, None, &labels, || {
                *rx.borrow()
            })
            .await;
            emitter.close().await?;
            load_simulated_spend(&data, &pipeline, &sim.spend()).await;
            stats
        }))
    } else {
        None
    };

    // Streaming stage: re-opened from its checkpoint after a failure (nothing is lost: the
    // checkpoint only moves after staging is durable).
    let stage_metrics = Arc::new(shoplake_transform::StageMetrics::default());
    // Fraud scoring and recommendations: fed by the stage, served on the HTTP address.
    let live = Arc::new(config.stage.live_engines()?);
    let rules_watch = tokio::spawn(live.clone().watch_rules());
    let firehose = Arc::new(crate::config::FirehoseStreams::new(&config.firehose)?);
    let stage_task = {
        let (data, pipeline, firehose) = (data.clone(), config.clone(), firehose.clone());
        let (rx, stream, lake, state_path, stage_config, metrics, live, write) = (
            stop_rx.clone(),
            stream.clone(),
            lake.clone(),
            data.stage_state_path(),
            config.stage.stage.clone(),
            stage_metrics.clone(),
            live.clone(),
            config.compaction.options(),
        );
        tokio::spawn(async move {
            loop {
                let attempt = async {
                    let mut stage = Stage::open(
                        stream.clone(),
                        lake.store(),
                        &state_path,
                        stage_config.clone(),
                    )?
                    .with_metrics(metrics.clone());
                    if let Some(leases) = data.leases(&pipeline, &lake)? {
                        stage = stage.with_leases(leases);
                    }
                    let mut stage = shoplake_live::warm::attach(
                        firehose.attach(stage),
                        &live,
                        &lake,
                        pipeline.stage.live.live_rebuild,
                        &write,
                    )
                    .await?;
                    stage.run(stopped(rx.clone())).await?;
                    anyhow::Ok(())
                };
                match attempt.await {
                    Ok(()) => return Ok::<(), anyhow::Error>(()),
                    Err(e) => {
                        error!(error = %e, "the streaming stage failed; restarting it from its checkpoint in 5 s");
                        if *rx.borrow() {
                            return Err(e);
                        }
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                }
            }
        })
    };

    // Compaction, optimize and the product_affinity rebuild on a schedule.
    let mut schedule = shoplake_batch::Schedule::new(
        lake.clone(),
        config.compaction.options(),
        config.compaction.interval,
    )
    .with_rollups(config.compaction.rollup_interval)
    .with_optimize(config.compaction.optimize_interval)
    .with_lifecycle(
        config.retention.interval,
        config.retention.retention(&data, &config.firehose)?,
        config.retention.deleted_files,
    );
    if let Some(recs) = live.recs_config() {
        schedule = schedule.with_affinity(
            config.compaction.affinity_interval,
            shoplake_live::warm::affinity_options(recs),
        );
    }
    let lake_events = schedule.events_compacted();
    let compaction_metrics = schedule.metrics();
    let compaction = tokio::spawn(schedule.run(stopped(stop_rx.clone())));

    // SQL API, collector and operations endpoints on one address.
    let service = Arc::new(
        QueryService::open_with(
            &data.lake_root(),
            QueryOptions {
                limits: config.query.clone(),
                erasure: Some(config.erasure_options(&data)?),
                ..QueryOptions::default()
            },
        )
        .await?,
    );
    let mut telemetry = Telemetry::new();
    telemetry.register(stage_metrics.clone());
    telemetry.register(compaction_metrics);
    telemetry.register(service.metrics().clone());
    telemetry.register(collector.metrics());
    telemetry.register(live.clone());
    stream.register_metrics(&mut telemetry);
    firehose.register_metrics(&mut telemetry);
    let ready = collector.clone();
    let guard = data.guard(&config)?;
    let pg = ops::serve_pg(
        args.pg_addr,
        service.clone(),
        guard.clone(),
        stopped(stop_rx.clone()),
    )
    .await?;
    let flight = ops::serve_flight(
        args.flight_addr,
        service.clone(),
        guard.clone(),
        stopped(stop_rx.clone()),
    )
    .await?;
    let currency = config.stage.stage.fx_rates()?.reporting().to_owned();
    let pipeline = shoplake_dashboards::Pipeline::new(service.clone(), &currency)
        .with_stage(stage_metrics.clone(), lake_events.clone());
    let router = shoplake_query::router(service)
        .merge(shoplake_dashboards::router())
        .merge(pipeline.router())
        .merge(shoplake_server::auth::session::router(guard.clone()))
        .merge(shoplake_collector::router(collector))
        .merge(shoplake_live::http::router(live.clone()))
        .merge(shoplake_server::ops::router(
            telemetry.shared(),
            Arc::new(move || ready.ready()),
        ))
        .guarded_with_listing(guard);
    let listener = ops::bind(args.http_addr).await?;
    let server = tokio::spawn(ops::serve_http_with_peers(
        listener,
        router,
        stopped(stop_rx.clone()),
    ));

    let addr = args.http_addr;
    eprintln!(
        "\nshoplake is up (data in {dir}).\n  Every route but /health and /ready needs a token. The first admin and a token:\n    shoplake users create admin --role admin && TOKEN=$(shoplake tokens create --user admin)\n  Dashboards:     http://{addr}/ (sign in with a password: shoplake users password admin)\n  SQL over HTTP:  curl -s -H \"Authorization: Bearer $TOKEN\" http://{addr}/v1/sql -d 'select event_name, count(*) from events group by 1'\n  Postgres wire:  psql \"host={pg} port={pg_port} user=admin dbname=shoplake\" (a password: shoplake users password admin)\n  Flight SQL:     grpc://{flight} (ADBC: user and password, or a token as Bearer)\n  SQL here:       shoplake sql \"select event_name, count(*) from events group by 1\"\n  Collector:      POST http://{addr}/v1/batch (Segment tracking API; a write key: shoplake keys create --source web)\n  Storefront:     GET http://{addr}/v1/recommendations/SHOPPER_ID   GET http://{addr}/v1/products/PRODUCT_ID/related   POST http://{addr}/v1/fraud/score (a token of a storefront user)\n  Metrics:        http://{addr}/metrics   Health: http://{addr}/health   Routes: http://{addr}/v1/routes\n  Stop with Ctrl-C; start again to continue.\n",
        dir = data.data_dir.display(),
        pg = args.pg_addr.ip(),
        pg_port = args.pg_addr.port(),
        flight = args.flight_addr,
    );

    // Progress.
    let mut rx = stop_rx.clone();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            _ = rx.changed() => break,
        }
        let m = &stage_metrics;
        info!(
            read = m.records_read.load(Ordering::Relaxed),
            staged = m.events_staged.load(Ordering::Relaxed),
            bad_rows = m.bad_rows.load(Ordering::Relaxed),
            duplicates = m.duplicates.load(Ordering::Relaxed),
            compacted = lake_events.load(Ordering::Relaxed),
            lag_ms = m.lag_millis.load(Ordering::Relaxed),
            "progress"
        );
    }

    if let Some(sim) = simulator {
        match sim.await? {
            Ok(stats) => info!(
                records = stats.records,
                valid_unique = stats.valid_unique,
                "simulator stopped"
            ),
            Err(e) => error!(error = %e, "simulator failed"),
        }
    }
    stage_task.await??;
    rules_watch.abort();
    compaction.await?;
    let r = shoplake_batch::compact_all(&lake, &config.compaction.options()).await?;
    info!(events = r.events_written, "final compaction done");
    server.await??;
    let _ = pg.await;
    let _ = flight.await;
    Ok(())
}

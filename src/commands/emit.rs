//! `shoplake emit`: the storefront simulator, putting its events on the stream.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use shoplake_simulator::{SimConfig, SimStats, Simulator};
use shoplake_storefront_emitter::emitter::{Emitter, EmitterConfig};
use tracing::info;

use crate::config::DataArgs;
use crate::sink::StreamSink;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Seed of the simulation: the same seed gives the same events.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Shopping sessions to simulate.
    #[arg(long)]
    pub sessions: Option<u64>,
    /// Stop after this many seconds of wall time.
    #[arg(long)]
    pub duration: Option<u64>,
    /// Events per second (wall time). Without it, events are emitted as fast as the stream takes them.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Simulated start time (RFC 3339). Default: now with --rate; otherwise six hours before
    /// the sessions would end now (what the back office would send later is left out).
    #[arg(long)]
    pub start: Option<String>,
    /// Share of bad input (0..1).
    #[arg(long, default_value_t = 0.01)]
    pub bad_share: f64,
    /// Share of events resent as duplicates (0..1).
    #[arg(long, default_value_t = 0.01)]
    pub duplicate_share: f64,
    /// Share of orders that are fraudulent (0..1): 1% by default, as at a real store.
    #[arg(long, default_value_t = 0.01)]
    pub fraud_share: f64,
    /// Where to append the fraud ground-truth labels (NDJSON). Default: DATA_DIR/simulator/labels.ndjson.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Print the simulator's counts as JSON when done.
    #[arg(long)]
    pub stats_json: bool,
    /// Write what the simulated paid campaigns cost per day to this CSV file, in the format
    /// `shoplake load spend` reads (an ad platform's daily export).
    #[arg(long)]
    pub spend_csv: Option<PathBuf>,
}

/// Sessions per simulated hour that give about `rate` events per second.
pub fn sessions_per_hour_for(rate: f64, base: &SimConfig) -> f64 {
    // Measure events per session on a throwaway sample of the same simulation.
    // (Stock levels left out: the warehouse's events are not shoppers', and counting them would
    // move every session's start.)
    let mut sample = Simulator::new(SimConfig {
        max_sessions: Some(500),
        stock: false,
        ..base.clone()
    });
    let mut events = 0u64;
    while sample.next().is_some() {
        events += 1;
    }
    let per_session = (events as f64 / 500.0).max(1.0);
    rate * 3600.0 / per_session
}

pub async fn run(args: Args, data: DataArgs) -> anyhow::Result<()> {
    let config = data.pipeline_config()?;
    let stream = Arc::new(data.open_stream(&config)?);
    let paced = args.rate.is_some();
    let now = chrono::Utc::now().timestamp_micros();
    let (start, until) = match &args.start {
        Some(s) => (
            shoplake_events::parse_timestamp(s)
                .with_context(|| format!("--start {s:?} is not RFC 3339"))?,
            None,
        ),
        None if paced => (now, None),
        // As fast as the stream takes them: the sessions start so that the last has had six
        // hours to end (a day of sessions without --sessions), and what the back office would
        // send after now is not sent — it has not happened yet, and the stage refuses events
        // stamped in the future.
        None => {
            let hours = args
                .sessions
                .map_or(24.0, |n| n as f64 / SimConfig::default().sessions_per_hour);
            (now - ((hours + 6.0) * 3_600e6) as i64, Some(now))
        }
    };
    let mut sim_config = SimConfig {
        seed: args.seed,
        start_micros: start,
        max_sessions: args.sessions,
        bad_share: args.bad_share,
        duplicate_share: args.duplicate_share,
        fraud_share: args.fraud_share,
        ..SimConfig::default()
    };
    if let Some(rate) = args.rate {
        sim_config.sessions_per_hour = sessions_per_hour_for(rate, &sim_config);
    }
    let labels_path = args
        .labels
        .clone()
        .unwrap_or_else(|| data.data_dir.join("simulator").join("labels.ndjson"));
    let emitter = Emitter::new(Arc::new(StreamSink(stream)), EmitterConfig::default());
    let deadline = args
        .duration
        .map(|d| Instant::now() + Duration::from_secs(d));
    // Records scheduled ahead wait on disk; the folder is scratch, removed when the run ends.
    let spill = std::env::temp_dir().join(format!("shoplake-simulator-{}", std::process::id()));
    let mut sim = Simulator::new(sim_config)
        .with_spill(&spill)
        .with_context(|| format!("creating {}", spill.display()))?;
    let stats = drive(
        &mut sim,
        &emitter,
        paced,
        deadline,
        until,
        &labels_path,
        || false,
    )
    .await?;
    emitter.close().await?;
    if let Some(path) = &args.spend_csv {
        let csv = shoplake_simulator::spend::to_csv(&sim.spend());
        std::fs::write(path, csv).with_context(|| format!("writing {}", path.display()))?;
    }
    info!(
        records = stats.records,
        valid_unique = stats.valid_unique,
        bad = stats.bad,
        duplicates = stats.duplicates,
        "emitted"
    );
    if args.stats_json {
        println!("{}", serde_json::to_string(&stats)?);
    }
    Ok(())
}

/// Pulls records from the simulator into the emitter until the simulation ends, the deadline
/// passes, a record's server time passes `until_micros`, or `stop()` says so; paced to simulated
/// server time when `paced`. Appends fraud labels.
pub async fn drive(
    sim: &mut Simulator,
    emitter: &Emitter,
    paced: bool,
    deadline: Option<Instant>,
    until_micros: Option<i64>,
    labels_path: &std::path::Path,
    stop: impl Fn() -> bool,
) -> anyhow::Result<SimStats> {
    if let Some(dir) = labels_path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut labels = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(labels_path)
        .with_context(|| format!("opening {}", labels_path.display()))?;
    let wall_start = Instant::now();
    let mut sim_start = None;
    let mut n: u64 = 0;
    while let Some(record) = sim.next() {
        if until_micros.is_some_and(|u| record.server_time_micros > u) {
            break;
        }
        if paced {
            let first = *sim_start.get_or_insert(record.server_time_micros);
            let due = Duration::from_micros((record.server_time_micros - first).max(0) as u64);
            let elapsed = wall_start.elapsed();
            if due > elapsed {
                tokio::time::sleep(due - elapsed).await;
            }
        }
        emitter
            .emit(record.partition_key, record.payload.into())
            .await?;
        n += 1;
        if n.is_multiple_of(1024) {
            for label in sim.labels() {
                writeln!(labels, "{}", serde_json::to_string(&label)?)?;
            }
        }
        // After every record: at a low rate, 1,024 records are minutes, and a stop must not wait.
        if stop() || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
    for label in sim.labels() {
        writeln!(labels, "{}", serde_json::to_string(&label)?)?;
    }
    if let Some(e) = sim.take_error() {
        return Err(anyhow::Error::new(e).context("the simulator stopped early"));
    }
    emitter.flush().await?;
    Ok(sim.stats().clone())
}

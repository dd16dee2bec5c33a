//! `shoplake eval`: how good are the fraud decisions and the recommendations, measured on the
//! simulator's ground truth.
//!
//! A seeded simulation goes onto an embedded stream in a temporary folder and through the real
//! streaming stage (validation, de-duplication, bot filtering, sessions, the live engines), whose
//! fraud decisions are staged, compacted into the `fraud_decisions` Delta table and read back with
//! SQL. Then:
//! - fraud: precision, recall and F1 of review + block against the simulator's labels, recall per
//!   pattern, each rule's hits, and the best single amount threshold as a baseline;
//! - recommendations: for every order, just before the stage feeds it to the engines, the
//!   recommendations the storefront would have got for that shopper (`GET /v1/recommendations`,
//!   the same function) are scored against the order's products: hit rate@k and MRR, next to a
//!   popularity baseline and the item-to-item normalisations side by side.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use parking_lot::Mutex;
use serde_json::{Value, json};
use shoplake_ingest::{LocalLog, Record, StreamProducer};
use shoplake_live::Live;
use shoplake_live::fraud::eval::{FraudReport, evaluate};
use shoplake_live::fraud::{DECISIONS_SQL, Decision, RulesFile};
use shoplake_live::probe::Probed;
use shoplake_live::recs::Normalization;
use shoplake_live::recs::eval::{BASELINE, Metrics, OrderProbe, Protocol};
use shoplake_simulator::{FraudMix, SimConfig, SimStats, Simulator};
use shoplake_transform::Stage;
use tracing::info;

use crate::config::DataArgs;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Seed of the simulation.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Shopping sessions to simulate.
    #[arg(long, default_value_t = 20_000)]
    pub sessions: u64,
    /// Share of sessions that are fraud scenarios (0..1).
    #[arg(long, default_value_t = 0.02)]
    pub fraud_share: f64,
    /// Weights of the fraud patterns: CARD_TESTING,ACCOUNT_TAKEOVER,MULTI_ACCOUNT.
    #[arg(long, default_value = "1,1,1")]
    pub fraud_mix: FraudMix,
    /// Fraud rules to evaluate (TOML); the stage's configured or built-in rules otherwise.
    #[arg(long)]
    pub rules: Option<std::path::PathBuf>,
    /// Recommendations asked per order.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// Print the figures as one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: Args, data: DataArgs) -> anyhow::Result<()> {
    let config = data.pipeline_config()?;
    let mut stage_config = config.stage.clone();
    if let Some(rules) = &args.rules {
        // Refused here, with the line and reason, rather than by the stage.
        RulesFile::open(rules).map_err(|e| anyhow::anyhow!("{}: {e}", rules.display()))?;
        stage_config.live.fraud.rules_file = Some(rules.clone());
        stage_config.live.fraud.enabled = true;
    }
    stage_config.live.recommendations.enabled = Some(true);
    stage_config.live.live_rebuild = std::time::Duration::ZERO;
    let work = tempfile::tempdir().context("creating a temporary folder")?;

    let started = std::time::Instant::now();
    let stream = Arc::new(LocalLog::open(&work.path().join("stream.redb"), 4)?);
    let (labels, stats) = simulate(&args, &stream).await?;
    info!(
        records = stats.records,
        secs = started.elapsed().as_secs_f64(),
        "simulated"
    );

    // Through the stage, asking for recommendations before each order reaches the engines.
    let lake = shoplake_batch::Lake::open(
        &work.path().join("lake").display().to_string(),
        HashMap::new(),
    )?;
    let live = Arc::new(stage_config.live_engines()?);
    let variants = Normalization::ALL
        .iter()
        .map(|n| {
            let mut c = stage_config.live.recommendations.model.clone();
            c.normalization = *n;
            (format!("item-to-item {}", n.as_str()), c)
        })
        .collect();
    let probe = Arc::new(Mutex::new(OrderProbe::new(variants, args.k)));
    let tap = probe.clone();
    let probed = Probed::new(
        live.clone(),
        Box::new(move |event, session, live: &Live| tap.lock().observe(event, session, live)),
    );
    let (mut stage, _) = Stage::open(
        stream,
        lake.store(),
        &work.path().join("state.redb"),
        stage_config.stage,
    )?
    .with_observer(Arc::new(probed))?;
    let drained = stage.drain().await?;
    info!(
        events = drained.events,
        decisions = drained.decisions,
        secs = started.elapsed().as_secs_f64(),
        "staged"
    );

    // Decisions as the lake holds them.
    shoplake_batch::compact_all(&lake, &config.compaction.options()).await?;
    let service = shoplake_query::QueryService::open(lake.root().as_str(), HashMap::new()).await?;
    let rows = service.sql(DECISIONS_SQL).await?;
    let rows: Vec<Value> = serde_json::from_str(&shoplake_query::render(
        &rows,
        shoplake_query::Format::Json,
    )?)?;
    let decisions: Vec<Decision> = rows.iter().map(Decision::from_lake_row).collect();
    let fraud = evaluate(&decisions, &labels);

    let p = probe.lock();
    let recs = p.side_by_side.report();
    let baseline = recs
        .get(Protocol::BeforeOrder, BASELINE)
        .copied()
        .unwrap_or_default();
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::INFINITY };
    let report = json!({
        "seed": args.seed,
        "sessions": args.sessions,
        "fraud_share": args.fraud_share,
        "fraud_mix": args.fraud_mix,
        "records": stats.records,
        "events": drained.events,
        "rules_version": live.rules_version(),
        "fraud": fraud,
        "recommendations": {
            "k": args.k,
            "served": metrics_json(&p.served),
            "baseline": metrics_json(&baseline),
            "hit_rate_vs_baseline": ratio(p.served.hit_rate(), baseline.hit_rate()),
            "mrr_vs_baseline": ratio(p.served.mrr(), baseline.mrr()),
            "side_by_side": recs.rows.iter().map(|r| json!({
                "protocol": r.protocol.as_str(),
                "variant": r.variant,
                "cases": r.metrics.cases,
                "hit_rate": r.metrics.hit_rate(),
                "mrr": r.metrics.mrr(),
            })).collect::<Vec<_>>(),
        },
        "secs": started.elapsed().as_secs_f64(),
    });
    if args.json {
        println!("{report}");
    } else {
        print_report(&args, &fraud, &p.served, &baseline, &recs.to_string());
    }
    Ok(())
}

/// The seeded simulation onto `stream`; the fraud labels by order id, and what was emitted.
async fn simulate(
    args: &Args,
    stream: &LocalLog,
) -> anyhow::Result<(HashMap<String, String>, SimStats)> {
    let mut sim = Simulator::new(SimConfig {
        seed: args.seed,
        max_sessions: Some(args.sessions),
        fraud_share: args.fraud_share,
        fraud_mix: args.fraud_mix.clone(),
        ..SimConfig::default()
    });
    let mut labels: HashMap<String, String> = HashMap::new();
    let mut batch = Vec::with_capacity(500);
    while let Some(r) = sim.next() {
        batch.push(Record {
            partition_key: r.partition_key,
            data: r.payload.into(),
        });
        if batch.len() == 500 {
            stream.put_records(std::mem::take(&mut batch)).await?;
        }
        labels.extend(sim.labels().into_iter().map(|l| (l.order_id, l.pattern)));
    }
    stream.put_records(batch).await?;
    labels.extend(sim.labels().into_iter().map(|l| (l.order_id, l.pattern)));
    Ok((labels, sim.stats().clone()))
}

fn metrics_json(m: &Metrics) -> Value {
    json!({"cases": m.cases, "hits": m.hits, "hit_rate": m.hit_rate(), "mrr": m.mrr()})
}

fn print_report(
    args: &Args,
    fraud: &FraudReport,
    served: &Metrics,
    baseline: &Metrics,
    recs: &str,
) {
    println!(
        "seed {}, {} sessions, fraud share {}, mix {:?}\n",
        args.seed, args.sessions, args.fraud_share, args.fraud_mix
    );
    println!("Fraud (review + block counted as flagged)\n{fraud}");
    println!(
        "Recommendations before each order, k = {}: served hit rate {:.4}, MRR {:.4}; popularity baseline hit rate {:.4}, MRR {:.4}\n",
        args.k,
        served.hit_rate(),
        served.mrr(),
        baseline.hit_rate(),
        baseline.mrr()
    );
    println!("Side by side (same cases)\n{recs}");
}

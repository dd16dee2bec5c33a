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
use shoplake_events::EventName;
use shoplake_ingest::{LocalLog, Record, StreamProducer};
use shoplake_live::Live;
use shoplake_live::fraud::eval::{FraudReport, evaluate};
use shoplake_live::fraud::{Decision, RulesFile, Verdict};
use shoplake_live::probe::Probed;
use shoplake_live::recs::eval::{BASELINE, Evaluation, Metrics, Protocol};
use shoplake_live::recs::{Normalization, RecsQuery};
use shoplake_simulator::{FraudMix, SimConfig, Simulator};
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
    #[arg(long, default_value = "1,1,1", value_parser = parse_mix)]
    pub fraud_mix: FraudMixArg,
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

/// `--fraud-mix`, parsed.
#[derive(Debug, Clone)]
pub struct FraudMixArg(pub FraudMix);

fn parse_mix(s: &str) -> Result<FraudMixArg, String> {
    let w: Vec<f64> = s
        .split(',')
        .map(|x| x.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{s:?}: {e}"))?;
    match w[..] {
        [card_testing, account_takeover, multi_account]
            if w.iter().all(|x| *x >= 0.0) && w.iter().any(|x| *x > 0.0) =>
        {
            Ok(FraudMixArg(FraudMix {
                card_testing,
                account_takeover,
                multi_account,
            }))
        }
        _ => Err(format!(
            "{s:?}: three weights ≥ 0, not all 0: CARD_TESTING,ACCOUNT_TAKEOVER,MULTI_ACCOUNT"
        )),
    }
}

/// What the probe collects while the stage runs.
struct Probe {
    k: usize,
    /// The served engine, asked the way the endpoint asks.
    served: Metrics,
    /// The same cases through every normalisation, and the popularity baseline.
    side_by_side: Evaluation,
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
    stage_config.live.live_rebuild_hours = 0;
    let work = tempfile::tempdir().context("creating a temporary folder")?;

    // The simulation, onto an embedded stream.
    let started = std::time::Instant::now();
    let stream = Arc::new(LocalLog::open(&work.path().join("stream.redb"), 4)?);
    let mut sim = Simulator::new(SimConfig {
        seed: args.seed,
        max_sessions: Some(args.sessions),
        fraud_share: args.fraud_share,
        fraud_mix: args.fraud_mix.0.clone(),
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
    let stats = sim.stats().clone();
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
    let probe = Arc::new(Mutex::new(Probe {
        k: args.k,
        served: Metrics::default(),
        side_by_side: Evaluation::new(variants, args.k),
    }));
    let tap = probe.clone();
    let probed = Probed::new(
        live.clone(),
        Box::new(move |event, session, live: &Live| {
            let mut p = tap.lock();
            if event.name == EventName::OrderCompleted {
                let e = &event.event;
                let bought: Vec<&str> = e
                    .properties
                    .as_ref()
                    .and_then(|p| p.products.as_ref())
                    .map(|ps| ps.iter().filter_map(|p| p.product_id.as_deref()).collect())
                    .unwrap_or_default();
                let shopper = e.user_id.as_deref().or(e.anonymous_id.as_deref());
                if let Some(shopper) = shopper
                    && !bought.is_empty()
                {
                    let query = RecsQuery {
                        k: p.k,
                        context_product: None,
                        category: None,
                    };
                    if let Some((_, items)) = live.recommend(shopper, &query) {
                        p.served
                            .record(items.iter().map(|i| i.product_id.as_str()), &bought);
                    }
                }
            }
            p.side_by_side.feed(event, session);
        }),
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
    let rows = service
        .sql(
            "select order_id, event_id, user_id, anonymous_id, event_time, \
             cast(total as double) as total, currency, decision, score, reasons, \
             shadow_reasons, features['amount'] as amount, rules_version from fraud_decisions",
        )
        .await?;
    let rows: Vec<Value> = serde_json::from_str(&shoplake_query::render(
        &rows,
        shoplake_query::Format::Json,
    )?)?;
    let decisions: Vec<Decision> = rows.iter().map(decision_of).collect();
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
        "fraud_mix": args.fraud_mix.0,
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

fn metrics_json(m: &Metrics) -> Value {
    json!({"cases": m.cases, "hits": m.hits, "hit_rate": m.hit_rate(), "mrr": m.mrr()})
}

/// A decision read back from the `fraud_decisions` table; of the features, the `amount` the
/// baseline ranks by.
fn decision_of(row: &Value) -> Decision {
    let text = |k: &str| row[k].as_str().unwrap_or_default().to_owned();
    let optional = |k: &str| row[k].as_str().map(str::to_owned);
    let list = |k: &str| {
        row[k]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    Decision {
        order_id: text("order_id"),
        event_id: text("event_id"),
        user_id: optional("user_id"),
        anonymous_id: optional("anonymous_id"),
        event_time: row["event_time"]
            .as_str()
            .and_then(shoplake_events::parse_timestamp)
            .unwrap_or_default(),
        total: row["total"].as_f64(),
        currency: optional("currency"),
        score: row["score"].as_f64().unwrap_or_default(),
        verdict: match row["decision"].as_str() {
            Some("block") => Verdict::Block,
            Some("review") => Verdict::Review,
            _ => Verdict::Allow,
        },
        reasons: list("reasons"),
        shadow_reasons: list("shadow_reasons"),
        features: row["amount"]
            .as_f64()
            .map(|a| vec![("amount", a)])
            .unwrap_or_default(),
        rules_version: text("rules_version"),
    }
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
        args.seed, args.sessions, args.fraud_share, args.fraud_mix.0
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

//! `shoplake fraud train`: a fraud model ([`shoplake_live::fraud::model`]) trained on the store's
//! own orders and chargebacks, read from the lake.
//!
//! The examples are the `fraud_decisions` rows (every feature of each order as the engine saw it
//! when the order was placed), labelled fraud when the order was later refunded for one of the
//! `--reason`s (`order_refunded` events, by default reason `fraud_chargeback`: the label a store
//! gets from its payment provider, weeks late). Only orders old enough for their chargeback to
//! have arrived (`--label-delay`, 60 days by default, before the lake's latest event or now,
//! whichever is earlier) are used: a recent order without a chargeback is not yet known to be
//! honest. And only paid orders (with a `payment_authorized` event): an order whose payment never went through
//! cannot be charged back, so its label is unknown (a card tester's declined orders are fraud,
//! but no chargeback will ever say so).
//!
//! Decisions written before a feature existed lack it; they are left out (a model must not learn
//! that a feature is always 0 in the past). When an order was decided more than once (sent
//! again), its earliest decision counts.
//!
//! Before writing the model, the command shows what switching would change: a model trained on
//! the earlier orders only (`--holdout`, 30% by default) is judged on the later ones beside the
//! scores the engine served (whatever rules and model were live when each order was decided) and
//! the other baselines of `shoplake eval`, at the same review budget and prevalences. The model
//! written is then trained on every mature order; it replaces `--out` atomically (written beside,
//! then renamed), so a stage watching the file never reads half of it. Use it from a rules file
//! (`[model] file = "…"`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use shoplake_live::fraud::eval::{self, Options};
use shoplake_live::fraud::model;
use shoplake_live::fraud::{DECISIONS_SQL, Decision};
use shoplake_query::Format;

use crate::config::DataArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Train a model on the lake's decided orders and their chargebacks; show how it compares
    /// with the scores served, then write it.
    Train(TrainArgs),
}

#[derive(Debug, clap::Args)]
struct TrainArgs {
    /// Where to write the model (JSON).
    #[arg(long, default_value = "fraud_model.json")]
    out: PathBuf,
    /// Refund reasons that mark an order as fraud (comma-separated).
    #[arg(long, default_value = "fraud_chargeback", value_delimiter = ',')]
    reason: Vec<String>,
    /// How long a chargeback may take to arrive: younger orders are left out.
    #[arg(long, default_value = "60days", value_parser = humantime_serde::re::humantime::parse_duration)]
    label_delay: Duration,
    /// Share of the mature orders (the latest) kept out of training to judge the model.
    #[arg(long, default_value_t = 0.3)]
    holdout: f64,
    /// Share of all orders the fraud team can review (the budget the figures are given at).
    #[arg(long, default_value_t = 0.01)]
    budget: f64,
    /// The model's version, recorded on every decision it takes part in. Default: trained-DATE.
    #[arg(long)]
    version: Option<String>,
}

/// Fewest fraud orders worth training on.
const MIN_FRAUD: usize = 20;

pub async fn run(args: Args, data: DataArgs) -> anyhow::Result<()> {
    let Action::Train(args) = args.action;
    if !(0.0..1.0).contains(&args.holdout) {
        anyhow::bail!("--holdout: {} is not a share in [0, 1)", args.holdout);
    }
    if !(0.0 < args.budget && args.budget <= 1.0) {
        anyhow::bail!("--budget: {} is not a share between 0 and 1", args.budget);
    }
    let service = data.query_service(true).await?;
    let rows = |sql: String| {
        let service = &service;
        async move {
            let batches = service.sql(&sql).await?;
            let rows: Vec<Value> =
                serde_json::from_str(&shoplake_query::render(&batches, Format::Json)?)?;
            anyhow::Ok(rows)
        }
    };
    let mut decisions: Vec<Decision> = rows(DECISIONS_SQL.to_owned())
        .await
        .context("reading fraud_decisions")?
        .iter()
        .map(Decision::from_lake_row)
        .collect();
    // The earliest decision of each order first (`eval::cases` keeps the first).
    decisions.sort_by(|a, b| (a.event_time, &a.event_id).cmp(&(b.event_time, &b.event_id)));
    let inputs = model::inputs();
    let before = decisions.len();
    decisions.retain(|d| inputs.iter().all(|f| d.feature(f.name()).is_some()));
    let incomplete = before - decisions.len();
    let reasons = args
        .reason
        .iter()
        .map(|r| format!("'{}'", r.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(", ");
    let labels: HashMap<String, String> = rows(format!(
        "select order_id, min(reason) as reason from events where event_name = 'order_refunded' \
         and reason in ({reasons}) and order_id is not null group by order_id"
    ))
    .await
    .context("reading chargebacks")?
    .into_iter()
    .filter_map(|r| {
        Some((
            r["order_id"].as_str()?.to_owned(),
            r["reason"].as_str()?.to_owned(),
        ))
    })
    .collect();
    let latest = rows("select max(event_time) as latest from events".to_owned())
        .await?
        .first()
        .and_then(|r| r["latest"].as_str().map(str::to_owned));
    // None on an empty lake; a time that does not read is an error, not "now".
    let latest = latest
        .map(|t| {
            chrono::DateTime::parse_from_rfc3339(&t)
                .map(|t| t.timestamp_micros())
                .with_context(|| format!("the lake's latest event time {t:?}"))
        })
        .transpose()?;
    let now = chrono::Utc::now().timestamp_micros();
    let cutoff = latest.unwrap_or(now).min(now)
        - i64::try_from(args.label_delay.as_micros()).unwrap_or(i64::MAX);
    let paid: std::collections::HashSet<String> = rows(
        "select distinct order_id from events where event_name = 'payment_authorized' \
             and order_id is not null"
            .to_owned(),
    )
    .await
    .context("reading paid orders")?
    .iter()
    .filter_map(|r| r["order_id"].as_str().map(str::to_owned))
    .collect();
    let (mature, young): (Vec<Decision>, Vec<Decision>) =
        decisions.into_iter().partition(|d| d.event_time <= cutoff);
    let placed = orders(&mature);
    let mature: Vec<Decision> = mature
        .into_iter()
        .filter(|d| paid.contains(&d.order_id))
        .collect();
    let cases = eval::cases(&mature, &labels);
    let fraud = cases.iter().filter(|c| c.pattern.is_some()).count();
    let cutoff_text = chrono::DateTime::from_timestamp_micros(cutoff)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default();
    println!(
        "{placed} decided orders placed before {cutoff_text} (--label-delay {} days before the \
         latest event; {} younger ones left out, and {incomplete} decisions made before every \
         feature existed), {} of them paid (the others cannot be charged back: left out), {fraud} \
         of those refunded as {}",
        args.label_delay.as_secs() / 86_400,
        orders(&young),
        cases.len(),
        args.reason.join(" or ")
    );
    if fraud < MIN_FRAUD {
        anyhow::bail!(
            "{fraud} fraud orders old enough to train on; at least {MIN_FRAUD} are needed (a \
             shorter --label-delay counts younger orders, whose chargebacks may still come)"
        );
    }
    if args.holdout > 0.0 {
        let options = Options {
            train_share: 1.0 - args.holdout,
            budget: args.budget,
            ..Options::default()
        };
        let report = eval::evaluate(&mature, &labels, &options);
        println!(
            "\nTrained on the earlier {} orders ({} fraud), judged on the later {} ({} fraud). \
             `rules` is the score the engine served (the rules and model live when each order was \
             decided); `boosted \
             trees` is the new model:\n\n{report}",
            report.train_orders, report.train_fraud, report.test_orders, report.test_fraud
        );
    }
    let version = args
        .version
        .unwrap_or_else(|| format!("trained-{}", chrono::Utc::now().format("%Y-%m-%dT%H%M%SZ")));
    let model = eval::train_model(&cases, &version);
    let partial = args.out.with_extension("json.partial");
    std::fs::write(&partial, model.to_json())
        .and_then(|()| std::fs::rename(&partial, &args.out))
        .with_context(|| format!("writing {}", args.out.display()))?;
    let absolute = std::path::absolute(&args.out).unwrap_or_else(|_| args.out.clone());
    println!(
        "wrote {} ({version}: {} trees on {} orders, {fraud} fraud); use it from a rules file:\n\n\
         [model]\nweight = 100\nfile = {}",
        args.out.display(),
        model.trees(),
        cases.len(),
        // A JSON string is a TOML basic string (the same escapes).
        serde_json::to_string(&absolute.display().to_string())?
    );
    Ok(())
}

/// Distinct orders among decisions (an order sent again is decided again).
fn orders(decisions: &[Decision]) -> usize {
    decisions
        .iter()
        .filter(|d| !d.order_id.is_empty())
        .map(|d| d.order_id.as_str())
        .collect::<std::collections::HashSet<_>>()
        .len()
}

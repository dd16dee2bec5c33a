//! `shoplake load …`: files the store exports elsewhere, loaded into the lake.

use anyhow::Context;

use crate::config::DataArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// Campaign spend per day, as the ad platforms export it (CSV with a header: date, source,
    /// campaign, spend, currency, and optionally medium, impressions, clicks), into
    /// `campaign_spend`. Loading a day, source and campaign again replaces it. A file with any
    /// bad line loads nothing and names every bad line.
    Spend {
        /// The CSV file.
        file: std::path::PathBuf,
    },
}

pub async fn run(args: Args, data: DataArgs) -> anyhow::Result<()> {
    let What::Spend { file } = args.what;
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let config = data.pipeline_config()?;
    let report = load_spend(&data, &config, &text)
        .await
        .with_context(|| format!("loading {}", file.display()))?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Loads a spend file's text into `data`'s lake; what `shoplake up` also calls with the
/// simulator's spend.
pub async fn load_spend(
    data: &DataArgs,
    config: &crate::config::PipelineConfig,
    text: &str,
) -> anyhow::Result<serde_json::Value> {
    let fx = config.stage.stage.fx_rates()?;
    let rows =
        shoplake_batch::spend::parse_csv(text, |c| fx.rate(c).is_some()).map_err(|errors| {
            let lines: Vec<String> = errors.iter().take(20).map(ToString::to_string).collect();
            let more = errors.len().saturating_sub(lines.len());
            anyhow::anyhow!(
                "nothing loaded: {} bad line(s)\n  {}{}",
                errors.len(),
                lines.join("\n  "),
                if more > 0 {
                    format!("\n  … and {more} more")
                } else {
                    String::new()
                }
            )
        })?;
    let lake = data.open_lake()?;
    let r = shoplake_batch::spend::load(
        &lake,
        &rows,
        &|c| fx.rate(c),
        &config.compaction.options().write_options(),
    )
    .await?;
    Ok(serde_json::json!({
        "rows": r.rows, "inserted": r.inserted, "replaced": r.replaced,
        "days": r.days, "campaigns": r.campaigns, "reporting_currency": fx.reporting(),
    }))
}

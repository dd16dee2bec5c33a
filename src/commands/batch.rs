//! `shoplake batch …`: compaction and table maintenance.

use shoplake_events::lake::TABLES;

use crate::config::DataArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    job: Job,
}

#[derive(Debug, clap::Subcommand)]
enum Job {
    /// Staging → Delta tables (events, bad_rows, fraud_decisions, orders, visits, identities, the daily rollups). Safe to re-run at any time.
    Compact,
    /// Rewrite small files into large ones.
    Optimize {
        /// Target file size in bytes (default: `[compaction] target_file_size`).
        #[arg(long)]
        target_size: Option<u64>,
    },
    /// Rewrite `product_affinity`: per product, its strongest neighbours viewed in the same
    /// session and bought in the same order over the whole history, counted as the live
    /// recommendations count (the `[stage.recommendations.model]` settings).
    Affinity,
    /// Apply the `[retention]` periods: the days of `events`, `bad_rows` and `fraud_decisions`
    /// older than their period leave the tables; quarantined and raw archive objects older than
    /// theirs are deleted. The tables' files stay on storage until `batch vacuum`.
    Retain,
    /// Delete from storage the files no table version still needs (removed by optimize or
    /// retention, or left by a compactor that died before its commit) once they have been out of
    /// their table for the grace period, with their key-index objects; and the files erasure
    /// requests removed, `[retention] erasure_grace` after each request.
    Vacuum {
        /// The grace period (`"7d"`; at least `"1h"`). Default: `[retention] deleted_files`.
        #[arg(long, value_parser = humantime_serde::re::humantime::parse_duration)]
        older_than: Option<std::time::Duration>,
        /// Only this table (default: every table).
        #[arg(long)]
        table: Option<String>,
    },
}

pub async fn run(args: Args, data: DataArgs) -> anyhow::Result<()> {
    let config = data.pipeline_config()?;
    let lake = data.open_lake()?;
    match args.job {
        Job::Compact => {
            let r = shoplake_batch::compact_all(&lake, &config.compaction.options()).await?;
            println!(
                "{}",
                serde_json::json!({
                    "staged_files": r.staged_files, "events_read": r.events_read, "events_written": r.events_written,
                    "duplicates_in_staging": r.duplicates_in_staging, "already_in_lake": r.already_in_lake, "lake_files_read": r.lake_files_read, "key_index_seconds": r.key_index_micros as f64 / 1e6, "beyond_dedup_window": r.beyond_dedup_window,
                    "bad_rows_written": r.bad_rows_written, "quarantined_files": r.quarantined_files, "conflicts": r.conflicts, "fraud_decisions_written": r.fraud_decisions_written, "orders": r.orders, "visits": r.visits, "rollups": r.rollups, "identities": r.identities,
                })
            );
        }
        Job::Affinity => {
            let model = &config.stage.live.recommendations.model;
            let r = shoplake_batch::affinity::rebuild(
                &lake,
                &shoplake_live::warm::affinity_options(model),
                &config.compaction.options().write_options(),
            )
            .await?;
            println!("{}", serde_json::to_string(&r)?);
        }
        Job::Retain => {
            let retention = config.retention.retention(&data, &config.firehose)?;
            let r =
                shoplake_batch::lifecycle::retain(&lake, &retention, chrono::Utc::now()).await?;
            println!("{}", serde_json::to_string(&r)?);
        }
        Job::Vacuum { older_than, table } => {
            let grace = older_than.unwrap_or(config.retention.deleted_files);
            let tables: Vec<&str> = match &table {
                Some(t) => vec![t.as_str()],
                None => TABLES.to_vec(),
            };
            for table in tables {
                let r = shoplake_batch::lifecycle::vacuum(&lake, table, grace, chrono::Utc::now())
                    .await?;
                println!("{}", serde_json::to_string(&r)?);
            }
            // The files erasure requests took out of the tables, `erasure_grace` after each.
            if table.is_none() {
                let done = shoplake_batch::erase::vacuum_erasures(
                    &lake,
                    config.retention.erasure_grace,
                    chrono::Utc::now(),
                    &config.compaction.options().write_options(),
                )
                .await?;
                if !done.requests.is_empty() {
                    println!("{}", serde_json::to_string(&done)?);
                }
            }
        }
        Job::Optimize { target_size } => {
            let mut opts = config.compaction.options().write_options();
            if let Some(size) = target_size {
                opts.target_file_size = size;
            }
            for table in TABLES {
                let r = shoplake_batch::optimize::optimize(&lake, table, &opts).await?;
                println!(
                    "{table}: {} files rewritten into {}",
                    r.files_removed, r.files_added
                );
            }
        }
    }
    Ok(())
}

//! `shoplake sql "<SQL>"`: one statement over the lake, printed as a table, CSV or JSON.

use shoplake_query::{Format, QueryOptions, QueryService};

use crate::config::DataArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The SQL statement.
    sql: String,
    /// Output format.
    #[arg(long, default_value = "table", value_parser = ["table", "csv", "json", "ndjson"])]
    format: String,
    /// Read every row of the scanned tables: no file, row-group or page skipping. Only for
    /// measuring what pruning saves (`bench/run.sh`).
    #[arg(long)]
    no_pruning: bool,
}

pub async fn run(args: Args, data: DataArgs) -> anyhow::Result<()> {
    let service = QueryService::open_with(
        &data.lake_root(),
        QueryOptions {
            pruning: !args.no_pruning,
            ..QueryOptions::default()
        },
    )
    .await?;
    let result = service.sql(&args.sql).await?;
    let format = match args.format.as_str() {
        "csv" => Format::Csv,
        "json" => Format::Json,
        "ndjson" => Format::NdJson,
        _ => Format::Table,
    };
    println!("{}", shoplake_query::render(&result, format)?);
    Ok(())
}

//! `shoplake sql "<SQL>"`: one statement over the lake, printed as a table, CSV or JSON.

use shoplake_query::Format;

use crate::config::DataArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The SQL statement.
    sql: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,
    /// Read every row of the scanned tables: no file, row-group or page skipping. Only for
    /// measuring what pruning saves (`bench/run.sh`).
    #[arg(long)]
    no_pruning: bool,
}

/// `--format`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum OutputFormat {
    /// Aligned columns for a terminal.
    Table,
    Csv,
    /// A JSON array of objects, one per row.
    Json,
    /// One JSON object per line.
    Ndjson,
}

pub async fn run(args: Args, data: DataArgs) -> anyhow::Result<()> {
    let service = data.query_service(!args.no_pruning).await?;
    let result = service.sql(&args.sql).await?;
    println!("{}", shoplake_query::render(&result, args.format.into())?);
    Ok(())
}

impl From<OutputFormat> for Format {
    fn from(format: OutputFormat) -> Self {
        match format {
            OutputFormat::Table => Format::Table,
            OutputFormat::Csv => Format::Csv,
            OutputFormat::Json => Format::Json,
            OutputFormat::Ndjson => Format::NdJson,
        }
    }
}

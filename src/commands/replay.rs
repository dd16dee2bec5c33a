//! `shoplake replay`: puts the raw archive's records back on the events stream, so that the
//! pipeline processes them again (after a fix to enrichment, into a new lake, after a loss). The
//! reading and the rules that keep the lake exact are `shoplake_batch::archive`'s; this is the
//! command line.

use std::collections::HashMap;

use anyhow::Context;
use shoplake_batch::archive::{ReplayOptions, replay};
use shoplake_events::parse_timestamp;
use tracing::info;

use crate::config::DataArgs;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Where the archive is: its delivery stream's S3 destination (`s3://BUCKET/PREFIX/raw`) or a
    /// folder. Default: the config's firehose.archive_location, else LAKE/raw.
    #[arg(long)]
    pub from: Option<String>,
    /// Only records that reached the stream at or after this time (RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// Only records that reached the stream before this time (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
    /// Count what would be put back, without putting anything.
    #[arg(long)]
    pub dry_run: bool,
}

fn time_arg(value: &Option<String>, flag: &str) -> anyhow::Result<Option<i64>> {
    value
        .as_deref()
        .map(|v| {
            parse_timestamp(v).with_context(|| {
                format!("--{flag} {v:?}: expected an RFC 3339 time, e.g. 2026-11-24T10:00:00Z")
            })
        })
        .transpose()
}

pub async fn run(args: Args, data: DataArgs) -> anyhow::Result<()> {
    let config = data.pipeline_config()?;
    let options = ReplayOptions {
        since: time_arg(&args.since, "since")?,
        until: time_arg(&args.until, "until")?,
        dry_run: args.dry_run,
    };
    let location = match (&args.from, config.firehose.archive_location.as_str()) {
        (Some(from), _) => from.clone(),
        (None, "") => format!("{}/raw", data.lake_root().trim_end_matches('/')),
        (None, configured) => configured.to_owned(),
    };
    let archive = shoplake_batch::Lake::open(&location, HashMap::new())
        .with_context(|| format!("opening the archive at {location}"))?;
    let stream = data.open_stream(&config)?;
    let report = replay(
        archive.store().as_ref(),
        &stream,
        &config.stage.stage.limits(),
        &options,
    )
    .await
    .with_context(|| format!("replaying the archive at {location}"))?;
    info!(
        archive = %location,
        objects = report.objects,
        replayed = report.replayed,
        still_invalid = report.still_invalid,
        malformed_lines = report.malformed_lines,
        dry_run = args.dry_run,
        "replay done"
    );
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

//! `shoplake replay`: puts the raw archive's records back on the events stream, so that the
//! pipeline processes them again (after a fix to enrichment, into a new lake, after a loss).
//!
//! The archive is what the stage's Firehose archive delivered (`[firehose] archive_stream`): one
//! JSON line per stream record ([`ArchivedRecord`]), in objects under Firehose's `YYYY/MM/DD/HH/`
//! folders, plain or gzip. Each record goes back under its own partition key, in the archive's
//! order, so that every key's events keep their order.
//!
//! The lake stays exact:
//! - a record whose payload has no `received_at` gets its original arrival time as
//!   `received_at`, so the event validates as it did and has the same received_at: the stage's
//!   de-duplication window or, past it, compaction (event_id, within the same received_at range)
//!   keeps each event once, and the lateness rules judge it as when it first came;
//! - records that today's rules still reject are left out (their bad rows are in the lake already);
//!   the ones they would now accept (a rule fixed since) are put back.

use std::collections::HashMap;

use anyhow::Context;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use shoplake_events::{decode, format_timestamp, parse_timestamp};
use shoplake_ingest::firehose::ArchivedRecord;
use shoplake_ingest::{Record, StreamProducer};
use tracing::{info, warn};

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

/// What a replay did.
#[derive(Debug, Default, serde::Serialize)]
struct Report {
    objects: u64,
    /// Archive lines read (in the time window or not).
    lines: u64,
    /// Records put back on the stream.
    replayed: u64,
    /// Records that today's rules still reject, left out.
    still_invalid: u64,
    /// Records outside --since / --until.
    outside_window: u64,
    /// Lines that are not archive records (named in the log).
    malformed_lines: u64,
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

/// The delivery hour of a Firehose object, from its `YYYY/MM/DD/HH/` folders, in µs; None when
/// the key has no such folders.
fn delivery_hour(key: &str) -> Option<i64> {
    let parts: Vec<&str> = key.split('/').collect();
    parts.windows(4).rev().find_map(|w| {
        let text = format!("{}-{}-{}T{}:00:00Z", w[0], w[1], w[2], w[3]);
        (w.iter().all(|p| p.chars().all(|c| c.is_ascii_digit())) && w[0].len() == 4)
            .then(|| parse_timestamp(&text))
            .flatten()
    })
}

/// `payload` with `received_at` set to `arrival` when it is a JSON object without one.
fn with_received_at(payload: &[u8], arrival: i64, has_received_at: bool) -> bytes::Bytes {
    let start = payload.iter().position(|b| !b.is_ascii_whitespace());
    match start {
        Some(i) if payload[i] == b'{' && !has_received_at => {
            let rest = &payload[i + 1..];
            let empty = rest
                .iter()
                .find(|b| !b.is_ascii_whitespace())
                .is_some_and(|b| *b == b'}');
            let field = format!(
                "\"received_at\":\"{}\"{}",
                format_timestamp(arrival),
                if empty { "" } else { "," }
            );
            let mut out = Vec::with_capacity(payload.len() + field.len());
            out.extend_from_slice(&payload[..=i]);
            out.extend_from_slice(field.as_bytes());
            out.extend_from_slice(rest);
            bytes::Bytes::from(out)
        }
        _ => bytes::Bytes::copy_from_slice(payload),
    }
}

pub async fn run(args: Args, data: DataArgs) -> anyhow::Result<()> {
    let config = data.pipeline_config()?;
    let since = time_arg(&args.since, "since")?;
    let until = time_arg(&args.until, "until")?;
    let location = match (&args.from, config.firehose.archive_location.as_str()) {
        (Some(from), _) => from.clone(),
        (None, "") => format!("{}/raw", data.lake_root().trim_end_matches('/')),
        (None, configured) => configured.to_owned(),
    };
    let archive = shoplake_batch::Lake::open(&location, HashMap::new())
        .with_context(|| format!("opening the archive at {location}"))?;
    let store = archive.store();
    let mut objects: Vec<_> = store
        .list(None)
        .try_collect()
        .await
        .with_context(|| format!("listing the archive at {location}"))?;
    objects.sort_by(|a, b| a.location.cmp(&b.location));
    // An object delivered in hour H holds records that arrived before its end (Firehose buffers
    // for at most 15 minutes): objects of hours wholly before --since are skipped unread.
    let hour = 3_600_000_000;
    objects.retain(|o| {
        let Some(h) = delivery_hour(o.location.as_ref()) else {
            return true;
        };
        since.is_none_or(|s| h + hour > s) && until.is_none_or(|u| h < u + hour)
    });
    let limits = config.stage.stage.limits();
    let stream = data.open_stream(&config)?;
    let mut report = Report::default();
    let mut pending: Vec<Record> = Vec::with_capacity(500);
    for object in &objects {
        let path = object.location.to_string();
        let bytes = store
            .get(&object.location)
            .await
            .with_context(|| format!("reading {path}"))?
            .bytes()
            .await
            .with_context(|| format!("reading {path}"))?;
        let text = shoplake_batch::staged::gunzip_if_gzip(bytes)
            .with_context(|| format!("gunzipping {path}"))?;
        report.objects += 1;
        for (i, line) in text.split(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            report.lines += 1;
            let record = match ArchivedRecord::parse(line).and_then(|r| {
                let payload = r.payload()?;
                Ok((r, payload))
            }) {
                Ok(r) => r,
                Err(e) => {
                    report.malformed_lines += 1;
                    warn!(object = %path, line = i + 1, error = %e, "not an archived record; skipped");
                    continue;
                }
            };
            let (archived, payload) = record;
            let arrival = archived.arrival_micros;
            if since.is_some_and(|s| arrival < s) || until.is_some_and(|u| arrival >= u) {
                report.outside_window += 1;
                continue;
            }
            let has_received_at = match decode(&payload, arrival, &limits) {
                Ok(valid) => valid.event.received_at.is_some(),
                Err(_) => {
                    report.still_invalid += 1;
                    continue;
                }
            };
            report.replayed += 1;
            if args.dry_run {
                continue;
            }
            pending.push(Record {
                partition_key: archived.partition_key,
                data: with_received_at(&payload, arrival, has_received_at),
            });
            if pending.len() == 500 {
                stream.put_records(std::mem::take(&mut pending)).await?;
            }
        }
    }
    if !pending.is_empty() {
        stream.put_records(pending).await?;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_at_goes_into_objects_that_lack_it() {
        let at = parse_timestamp("2026-03-01T10:00:00.000001Z").unwrap();
        assert_eq!(
            &with_received_at(b" {\"a\":1}", at, false)[..],
            b" {\"received_at\":\"2026-03-01T10:00:00.000001Z\",\"a\":1}"
        );
        assert_eq!(
            &with_received_at(b"{ }", at, false)[..],
            b"{\"received_at\":\"2026-03-01T10:00:00.000001Z\" }"
        );
        assert_eq!(&with_received_at(b"{\"a\":1}", at, true)[..], b"{\"a\":1}");
        assert_eq!(&with_received_at(b"[1]", at, false)[..], b"[1]");
    }

    #[test]
    fn delivery_hours_come_from_firehose_folders() {
        assert_eq!(
            delivery_hour("2026/11/24/10/raw-1-2026-11-24-10-00-00-x"),
            parse_timestamp("2026-11-24T10:00:00Z")
        );
        assert_eq!(
            delivery_hour("shop/raw/2026/11/24/23/x.gz"),
            parse_timestamp("2026-11-24T23:00:00Z")
        );
        assert_eq!(delivery_hour("manual/file.ndjson"), None);
    }
}

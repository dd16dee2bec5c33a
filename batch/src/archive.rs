//! Reading the raw archive back onto the events stream (`shoplake replay`): after a fix to
//! enrichment, into a new lake, after a loss.
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

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use shoplake_events::{Limits, decode, format_timestamp, parse_timestamp};
use shoplake_ingest::firehose::ArchivedRecord;
use shoplake_ingest::{Record, StreamProducer};
use tracing::warn;

use crate::{Error, Result};

/// Records put on the stream per call.
const PUT_BATCH: usize = 500;
const HOUR_MICROS: i64 = 3_600_000_000;

/// Which records to put back and how.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// Only records that reached the stream at or after this time (µs).
    pub since: Option<i64>,
    /// Only records that reached the stream before this time (µs).
    pub until: Option<i64>,
    /// Count what would be put back, without putting anything.
    pub dry_run: bool,
}

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReplayReport {
    pub objects: u64,
    /// Archive lines read (in the time window or not).
    pub lines: u64,
    /// Records put back on the stream.
    pub replayed: u64,
    /// Records that today's rules still reject, left out.
    pub still_invalid: u64,
    /// Records outside `since` / `until`.
    pub outside_window: u64,
    /// Lines that are not archive records (named in the log).
    pub malformed_lines: u64,
}

/// Puts the archive in `store` back on `stream`, object by object in key order (Firehose's keys
/// sort by delivery time), judging each record by `limits` (the stage's validation rules).
pub async fn replay(
    store: &dyn ObjectStore,
    stream: &dyn StreamProducer,
    limits: &Limits,
    options: &ReplayOptions,
) -> Result<ReplayReport> {
    let store_error = |path: String| move |source| Error::Store { path, source };
    let mut objects: Vec<_> = store
        .list(None)
        .try_collect()
        .await
        .map_err(store_error("the archive".into()))?;
    objects.sort_by(|a, b| a.location.cmp(&b.location));
    // An object delivered in hour H holds records that arrived before its end (Firehose buffers
    // for at most 15 minutes): objects of hours wholly before `since` are skipped unread.
    objects.retain(|o| {
        let Some(h) = delivery_hour(o.location.as_ref()) else {
            return true;
        };
        options.since.is_none_or(|s| h + HOUR_MICROS > s)
            && options.until.is_none_or(|u| h < u + HOUR_MICROS)
    });
    let mut report = ReplayReport::default();
    let mut pending: Vec<Record> = Vec::with_capacity(PUT_BATCH);
    for object in &objects {
        let path = object.location.to_string();
        let bytes = store
            .get(&object.location)
            .await
            .map_err(store_error(path.clone()))?
            .bytes()
            .await
            .map_err(store_error(path.clone()))?;
        let text = crate::staged::gunzip_if_gzip(bytes).map_err(|source| Error::StagedObject {
            path: path.clone(),
            source,
        })?;
        report.objects += 1;
        for (i, line) in text.split(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            report.lines += 1;
            let record = match judge(line, limits, options) {
                Judged::Put(record) => record,
                Judged::Malformed(error) => {
                    report.malformed_lines += 1;
                    warn!(object = %path, line = i + 1, %error, "not an archived record; skipped");
                    continue;
                }
                Judged::OutsideWindow => {
                    report.outside_window += 1;
                    continue;
                }
                Judged::StillInvalid => {
                    report.still_invalid += 1;
                    continue;
                }
            };
            report.replayed += 1;
            if options.dry_run {
                continue;
            }
            pending.push(record);
            if pending.len() == PUT_BATCH {
                put(stream, std::mem::take(&mut pending)).await?;
            }
        }
    }
    if !pending.is_empty() {
        put(stream, pending).await?;
    }
    Ok(report)
}

/// What becomes of one archive line.
enum Judged {
    Put(Record),
    Malformed(String),
    OutsideWindow,
    StillInvalid,
}

/// One archive line: the record to put back, or why not.
fn judge(line: &[u8], limits: &Limits, options: &ReplayOptions) -> Judged {
    let parsed = ArchivedRecord::parse(line).and_then(|r| {
        let payload = r.payload()?;
        Ok((r, payload))
    });
    let (archived, payload) = match parsed {
        Ok(r) => r,
        Err(e) => return Judged::Malformed(e),
    };
    let arrival = archived.arrival_micros;
    if options.since.is_some_and(|s| arrival < s) || options.until.is_some_and(|u| arrival >= u) {
        return Judged::OutsideWindow;
    }
    let Ok(valid) = decode(&payload, arrival, limits) else {
        return Judged::StillInvalid;
    };
    let has_received_at = valid.event.received_at.is_some();
    Judged::Put(Record {
        partition_key: archived.partition_key,
        data: with_received_at(&payload, arrival, has_received_at),
    })
}

async fn put(stream: &dyn StreamProducer, records: Vec<Record>) -> Result<()> {
    stream
        .put_records(records)
        .await
        .map(drop)
        .map_err(|source| Error::Stream { source })
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
fn with_received_at(payload: &[u8], arrival: i64, has_received_at: bool) -> Bytes {
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
            Bytes::from(out)
        }
        _ => Bytes::copy_from_slice(payload),
    }
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

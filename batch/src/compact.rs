//! Compaction: staging → Delta tables, idempotently.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Date32Type, SchemaRef, TimestampMicrosecondType};
use datafusion::common::{JoinType, ScalarValue};
use datafusion::prelude::{SessionContext, col, lit};
use deltalake::protocol::SaveMode;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt};
use shoplake_events::fields::{EVENT_DATE, EVENT_TIME, RECEIVED_AT};
use shoplake_events::lake::{
    QUARANTINE, STAGING_BAD_ROWS, STAGING_EVENTS, STAGING_FRAUD_DECISIONS,
};
use shoplake_events::{BadRow, BadRowBatchBuilder, Reason, Rejection};
use tracing::{debug, info, warn};

use crate::derived::{self, Touched};
use crate::staged::{self, Encoding};
use crate::tables::{self, TableDescriptor};
use crate::write::{WriteOptions, conform, table_or_empty, writer_commit};
use crate::{Error, Lake, Result, delta_err, query_err};

/// How much one compaction round takes and how it writes (the `[compaction]` config).
#[derive(Clone, Debug)]
pub struct CompactOptions {
    /// Most staging files read in one round.
    pub max_files: usize,
    /// Most bytes of staging files read in one round. This bounds the round's memory, at about
    /// 40× these bytes (the crate docs' *Layout* has the measure behind the default).
    pub max_bytes: u64,
    /// Target size of the Parquet files written ([`WriteOptions::target_file_size`]).
    pub target_file_size: u64,
    /// zstd level of the lake's Parquet files ([`WriteOptions::zstd_level`]).
    pub zstd_level: i32,
}

impl Default for CompactOptions {
    fn default() -> Self {
        let write = WriteOptions::default();
        CompactOptions {
            max_files: 1_000,
            max_bytes: 16 << 20,
            target_file_size: write.target_file_size,
            zstd_level: write.zstd_level,
        }
    }
}

impl CompactOptions {
    /// How the round's tables are written.
    pub fn write_options(&self) -> WriteOptions {
        WriteOptions {
            target_file_size: self.target_file_size,
            zstd_level: self.zstd_level,
        }
    }
}

/// What a compaction did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactReport {
    pub staged_files: usize,
    pub events_read: u64,
    pub events_written: u64,
    /// Copies of one event in several staging files.
    pub duplicates_in_staging: u64,
    /// Events the lake already held (a re-run after a crash, or a re-read of the stream).
    pub already_in_lake: u64,
    pub bad_rows_written: u64,
    /// Staged files that could not be read, moved under `_quarantine/` (each has a bad row).
    pub quarantined_files: u64,
    /// Commits that lost to another writer's (the step ran again against its result).
    pub conflicts: u64,
    /// Rows appended to `fraud_decisions`.
    pub fraud_decisions_written: u64,
    /// Orders re-derived from their events (merged into the table, or all of it when filled).
    pub orders: Option<u64>,
    /// Visits (sessions) re-derived from their events (merged into the table, or all of it when
    /// filled).
    pub visits: Option<u64>,
    /// Identity links re-derived from their events and merged into `identities` (all of them
    /// when the table was created).
    pub identities: Option<u64>,
}

impl CompactReport {
    fn add(&mut self, o: CompactReport) {
        self.staged_files += o.staged_files;
        self.events_read += o.events_read;
        self.events_written += o.events_written;
        self.duplicates_in_staging += o.duplicates_in_staging;
        self.already_in_lake += o.already_in_lake;
        self.bad_rows_written += o.bad_rows_written;
        self.quarantined_files += o.quarantined_files;
        self.conflicts += o.conflicts;
        self.fraud_decisions_written += o.fraud_decisions_written;
        let sum = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.orders = sum(self.orders, o.orders);
        self.visits = sum(self.visits, o.visits);
        self.identities = sum(self.identities, o.identities);
    }
}

/// The staged objects under `prefix` of the encodings `accepted`, in name order.
async fn list_staging(lake: &Lake, prefix: &str, accepted: &[Encoding]) -> Result<Vec<ObjectMeta>> {
    let store = lake.store();
    let listed: Vec<ObjectMeta> = match store.list(Some(&Path::from(prefix))).try_collect().await {
        Ok(v) => v,
        Err(object_store::Error::NotFound { .. }) => Vec::new(),
        Err(source) => {
            return Err(Error::Store {
                path: prefix.to_owned(),
                source,
            });
        }
    };
    let mut files: Vec<ObjectMeta> = listed
        .into_iter()
        .filter(|m| staged::accepts(m, accepted))
        .collect();
    files.sort_by(|a, b| a.location.cmp(&b.location));
    Ok(files)
}

/// Takes files from the front while within the round's limits (at least one).
fn take_round(
    files: &mut Vec<ObjectMeta>,
    opts: &CompactOptions,
    budget: &mut u64,
) -> Vec<ObjectMeta> {
    let mut n = 0;
    while n < files.len() && n < opts.max_files && (n == 0 || files[n].size <= *budget) {
        *budget = budget.saturating_sub(files[n].size);
        n += 1;
    }
    files.drain(..n).collect()
}

/// What a round read from staging.
#[derive(Default)]
struct Read {
    /// The rows of the readable files, in the table's schema.
    rows: Vec<RecordBatch>,
    /// Bad rows: NDJSON lines that did not decode, and one per unreadable file.
    bad_rows: Vec<RecordBatch>,
    /// Files that could not be read, copied under [`QUARANTINE`].
    quarantined: u64,
}

/// The rows of the staged `files` in `schema`. A file that cannot be read (truncated or corrupt
/// Parquet or gzip) does not stop the round: it is copied under [`QUARANTINE`] with the same
/// path, a bad row `unreadable_file` says which file and why, and the round goes on without it
/// (the file is deleted from staging with the others after the round's commits). A re-run after
/// a crash copies it again and finds the same bad row (its id is the file's path, its
/// `received_at` the file's write time).
async fn read_staging(lake: &Lake, files: &[ObjectMeta], schema: &SchemaRef) -> Result<Read> {
    let store = lake.store();
    let mut read = Read::default();
    for f in files {
        let store_err = |source| Error::Store {
            path: f.location.to_string(),
            source,
        };
        let got = match store.get(&f.location).await {
            Ok(got) => got,
            // Consumed by another compactor since the listing: files are deleted only after
            // their rows are committed, so there is nothing left to do for it.
            Err(object_store::Error::NotFound { .. }) => {
                debug!(path = %f.location, "staging file already compacted by another run");
                continue;
            }
            Err(source) => return Err(store_err(source)),
        };
        let bytes = got.bytes().await.map_err(store_err)?;
        match tokio::task::block_in_place(|| staged::decode(f, bytes, schema)) {
            Ok(decoded) => {
                read.rows.extend(decoded.rows);
                read.bad_rows.extend(decoded.bad_rows);
            }
            Err(e) => {
                let to = Path::from(format!("{QUARANTINE}/{}", f.location));
                match store.copy(&f.location, &to).await {
                    Ok(()) => {}
                    Err(object_store::Error::NotFound { .. }) => continue,
                    Err(source) => return Err(store_err(source)),
                }
                warn!(path = %f.location, quarantine = %to, error = %e,
                      "a staged file cannot be read: quarantined, compaction goes on");
                read.bad_rows.push(unreadable_file(f, &to, &e)?);
                read.quarantined += 1;
            }
        }
    }
    Ok(read)
}

/// The bad row of a staged file that cannot be read, quarantined at `to`.
fn unreadable_file(f: &ObjectMeta, to: &Path, e: &Error) -> Result<RecordBatch> {
    let mut bad = BadRowBatchBuilder::default();
    bad.append(&BadRow {
        bad_row_id: f.location.to_string(),
        received_at: f.last_modified.timestamp_micros(),
        stage: "compact",
        rejection: Rejection {
            reason: Reason::UnreadableFile,
            field: None,
            message: format!(
                "staged file {} ({} bytes) cannot be read, moved to {to}: {e}",
                f.location, f.size
            ),
            event_id: None,
            event_name: None,
        },
        raw: &[],
        stream_shard: "",
        stream_sequence: "",
    });
    Ok(bad.finish()?)
}

/// Keeps the first row of every key of `table`; returns the batches and how many rows were
/// dropped.
fn dedup_first(
    batches: Vec<RecordBatch>,
    table: &TableDescriptor,
) -> Result<(Vec<RecordBatch>, u64)> {
    let key = table.key_column();
    let mut seen = std::collections::HashSet::new();
    let mut dropped = 0;
    let mut out = Vec::with_capacity(batches.len());
    for batch in batches {
        let keys = batch
            .column_by_name(key)
            .and_then(|c| c.as_string_opt::<i32>())
            .ok_or_else(|| Error::missing_column(table.name, key))?;
        let keep: BooleanArray = (0..batch.num_rows())
            .map(|i| Some(seen.insert(keys.value(i).to_owned())))
            .collect();
        dropped += keep.false_count() as u64;
        out.push(if keep.false_count() == 0 {
            batch
        } else {
            filter_record_batch(&batch, &keep)?
        });
    }
    Ok((out, dropped))
}

fn distinct_dates(batches: &[RecordBatch]) -> Vec<i32> {
    let mut dates = BTreeSet::new();
    for b in batches {
        if let Some(c) = b
            .column_by_name(EVENT_DATE)
            .and_then(|c| c.as_primitive_opt::<Date32Type>())
        {
            dates.extend(c.iter().flatten());
        }
    }
    dates.into_iter().collect()
}

/// The first and last received_at of the staged rows.
fn received_range(batches: &[RecordBatch]) -> Option<(i64, i64)> {
    let mut range: Option<(i64, i64)> = None;
    for b in batches {
        let Some(c) = b
            .column_by_name(RECEIVED_AT)
            .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
        else {
            continue;
        };
        if let (Some(lo), Some(hi)) = (arrow::compute::min(c), arrow::compute::max(c)) {
            range = Some(range.map_or((lo, hi), |(a, z)| (a.min(lo), z.max(hi))));
        }
    }
    range
}

/// Appends the rows of `batches` whose key `target` does not hold yet; returns (written, skipped).
async fn append_new(
    lake: &Lake,
    target: &TableDescriptor,
    batches: Vec<RecordBatch>,
    opts: &WriteOptions,
    operation: &str,
) -> Result<(u64, u64)> {
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    if rows == 0 {
        return Ok((0, 0));
    }
    let (table_name, key, schema) = (target.name, target.key_column(), target.schema());
    let qe = query_err(table_name);
    let ctx = SessionContext::new();
    let dates = distinct_dates(&batches);
    let batches_for_range = received_range(&batches);
    let staged = ctx
        .read_batches(batches)
        .map_err(&qe)?
        .alias("s")
        .map_err(&qe)?;
    // The table is loaded once: the anti-join and the commit use the same snapshot, so a
    // compactor that committed in between is a conflict (see below), never a silent duplicate.
    let table = table_or_empty(lake, target, opts).await?;
    table
        .update_datafusion_session(&ctx.state())
        .map_err(delta_err(table_name))?;
    let provider = table.table_provider().await.map_err(&qe)?;
    let dates = dates
        .iter()
        .map(|d| lit(ScalarValue::Date32(Some(*d))))
        .collect();
    // A row the lake may already hold is one a crash left behind: a compaction that committed
    // and died before deleting its staging files, or a stage that staged, died before its
    // checkpoint and staged the same stream records again. Either way the copy in the lake has
    // the same received_at (from the payload, or else the stream's arrival time), so only lake
    // files whose received_at range overlaps the staged rows' are read: the anti-join costs the
    // size of the round, not of the day's partition. (A client's retry has a new received_at;
    // the stage's de-duplication window catches those.)
    let mut existing_filter = col(EVENT_DATE).in_list(dates, false);
    if let Some((first, last)) = batches_for_range {
        let ts = |v| {
            lit(ScalarValue::TimestampMicrosecond(
                Some(v),
                Some("UTC".into()),
            ))
        };
        existing_filter = existing_filter.and(col(RECEIVED_AT).between(ts(first), ts(last)));
    }
    let existing = ctx
        .read_table(provider)
        .and_then(|t| t.filter(existing_filter))
        .and_then(|t| t.select_columns(&[key]))
        .and_then(|t| t.alias("l"))
        .map_err(&qe)?;
    let df = staged
        .join_on(
            existing,
            JoinType::LeftAnti,
            [col(format!("s.{key}")).eq(col(format!("l.{key}")))],
        )
        .map_err(&qe)?;
    let df = if schema.column_with_name(EVENT_TIME).is_some() {
        df.sort(vec![
            col(EVENT_DATE).sort(true, false),
            col(EVENT_TIME).sort(true, false),
        ])
        .map_err(&qe)?
    } else {
        df
    };
    let out = conform(df.collect().await.map_err(&qe)?, target)?;
    let written: usize = out.iter().map(|b| b.num_rows()).sum();
    if written > 0 {
        // Against the snapshot the anti-join read, with the writer transaction: a compactor that
        // committed in between makes this commit a conflict (`write`'s *Concurrent writers*),
        // and the round runs again against its result.
        let commit = writer_commit(&table, table_name, operation, Some(written)).await?;
        table
            .write(out)
            .with_save_mode(SaveMode::Append)
            .with_partition_columns(target.partition_columns.iter().copied())
            .with_writer_properties(opts.writer_properties(target)?)
            .with_target_file_size(opts.target_file_size())
            .with_commit_properties(commit)
            .await
            .map_err(delta_err(table_name))?;
    }
    Ok((written as u64, (rows - written) as u64))
}

/// One compaction round: reads up to the limits from staging, commits, then deletes what it read.
pub async fn compact(lake: &Lake, opts: &CompactOptions) -> Result<CompactReport> {
    let mut budget = opts.max_bytes;
    let events_files = take_round(
        // The stage's Parquet files, and what a Firehose events sink delivered.
        &mut list_staging(lake, STAGING_EVENTS, &[Encoding::Parquet, Encoding::Ndjson]).await?,
        opts,
        &mut budget,
    );
    let bad_files = take_round(
        &mut list_staging(lake, STAGING_BAD_ROWS, &[Encoding::Parquet]).await?,
        opts,
        &mut budget,
    );
    let decision_files = take_round(
        &mut list_staging(lake, STAGING_FRAUD_DECISIONS, &[Encoding::Parquet]).await?,
        opts,
        &mut budget,
    );
    let mut report = CompactReport {
        staged_files: events_files.len() + bad_files.len() + decision_files.len(),
        ..Default::default()
    };
    if report.staged_files == 0 {
        return Ok(report);
    }

    let write = opts.write_options();
    let events = read_staging(lake, &events_files, &tables::EVENTS.schema()).await?;
    let bad_staged = read_staging(lake, &bad_files, &tables::BAD_ROWS.schema()).await?;
    let decisions = read_staging(lake, &decision_files, &tables::FRAUD_DECISIONS.schema()).await?;
    report.quarantined_files = events.quarantined + bad_staged.quarantined + decisions.quarantined;
    report.events_read = events.rows.iter().map(|b| b.num_rows() as u64).sum();
    let (events_rows, dups) = dedup_first(events.rows, &tables::EVENTS)?;
    report.duplicates_in_staging = dups;
    let touched_orders = Touched::of(&events_rows, derived::ORDERS.key());
    let touched_visits = Touched::of(&events_rows, derived::VISITS.key());
    let touched_identities = crate::identities::linked_anonymous_ids(&events_rows)?;
    let (written, skipped) =
        append_new(lake, &tables::EVENTS, events_rows, &write, "compact").await?;
    report.events_written = written;
    report.already_in_lake = skipped;

    // Bad rows: the stage's, and those of staged lines and files this round could not read.
    let mut bad = bad_staged.rows;
    bad.extend(bad_staged.bad_rows);
    bad.extend(events.bad_rows);
    bad.extend(decisions.bad_rows);
    let (bad, _) = dedup_first(bad, &tables::BAD_ROWS)?;
    let (bad_written, _) = append_new(lake, &tables::BAD_ROWS, bad, &write, "compact").await?;
    report.bad_rows_written = bad_written;

    // Fraud decisions: one per scored order_completed event, de-duplicated like the events (a
    // stage that re-reads records after a crash decides on them again).
    let (decisions, _) = dedup_first(decisions.rows, &tables::FRAUD_DECISIONS)?;
    let (decisions_written, _) =
        append_new(lake, &tables::FRAUD_DECISIONS, decisions, &write, "compact").await?;
    report.fraud_decisions_written = decisions_written;

    // Orders and visits this round's events belong to are derived again from the lake and
    // merged; a table is filled from all events when it is missing or was never filled (a new
    // lake, or a crash between its creation and its fill).
    report.orders = derived::ORDERS
        .update(lake, &touched_orders, written, &write)
        .await?;
    report.visits = derived::VISITS
        .update(lake, &touched_visits, written, &write)
        .await?;

    // Anonymous ids this round's identity events link to users (the table made when missing).
    report.identities =
        crate::identities::update_identities(lake, touched_identities, &write).await?;

    let store = lake.store();
    for f in events_files.iter().chain(&bad_files).chain(&decision_files) {
        match store.delete(&f.location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(source) => {
                return Err(Error::Store {
                    path: f.location.to_string(),
                    source,
                });
            }
        }
    }
    debug!(?report, "compaction round");
    Ok(report)
}

/// Conflicts with concurrent compactors tolerated in a row before giving up.
const MAX_CONFLICTS_IN_A_ROW: u64 = 50;

/// Runs `step` until it does not end in a conflict with another writer (it is idempotent, and
/// re-runs against the other's result); gives up after [`MAX_CONFLICTS_IN_A_ROW`]. Adds the
/// conflicts it met to `conflicts_met`.
async fn again_on_conflict<T, F, Fut>(conflicts_met: &mut u64, mut step: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut conflicts = 0;
    loop {
        match step().await {
            // Each conflict means the other compactor made progress, so this cannot go on for
            // ever; the bound is on conflicts in a row, with jitter so two runs fall out of step.
            Err(e) if e.is_conflict() && conflicts < MAX_CONFLICTS_IN_A_ROW => {
                conflicts += 1;
                *conflicts_met += 1;
                debug!(error = %e, conflicts, "another writer committed first; running again");
                let jitter = u64::from(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default()
                        .subsec_nanos()
                        % 50,
                );
                tokio::time::sleep(std::time::Duration::from_millis(
                    20 * conflicts.min(10) + jitter,
                ))
                .await;
            }
            result => return result,
        }
    }
}

/// Compacts until staging is empty.
pub async fn compact_all(lake: &Lake, opts: &CompactOptions) -> Result<CompactReport> {
    let write = opts.write_options();
    let mut conflicts = 0;
    let mut total = CompactReport {
        // A lake written before a derived table existed gets it now, not at its next event.
        orders: again_on_conflict(&mut conflicts, || derived::ORDERS.ensure(lake, &write)).await?,
        visits: again_on_conflict(&mut conflicts, || derived::VISITS.ensure(lake, &write)).await?,
        ..Default::default()
    };
    loop {
        let round = again_on_conflict(&mut conflicts, || compact(lake, opts)).await?;
        if round.staged_files == 0 {
            break;
        }
        total.add(round);
    }
    total.conflicts = conflicts;
    if total.staged_files > 0 {
        info!(
            files = total.staged_files,
            events = total.events_written,
            duplicates = total.duplicates_in_staging + total.already_in_lake,
            bad_rows = total.bad_rows_written,
            "compacted staging into the lake"
        );
    }
    Ok(total)
}

/// Shared handle type for callers that hold the lake across tasks.
pub type SharedLake = Arc<Lake>;

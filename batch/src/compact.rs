//! Compaction: staging → Delta tables, idempotently.

use std::sync::Arc;

use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Int64Type, SchemaRef};
use datafusion::prelude::{SessionContext, col};
use deltalake::protocol::SaveMode;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt};
use shoplake_events::fields::{CLOCK_SKEW_MS, EVENT_DATE, EVENT_TIME};
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
    /// Events the lake already held (a re-run after a crash, a re-read of the stream, a
    /// client's retry past the stage's window): found by the key index ([`crate::keys`]).
    pub already_in_lake: u64,
    /// Data files of the lake whose key column was read: to index a file the key index did not
    /// cover yet (written by optimize or by a compactor that died), or to confirm a key.
    pub lake_files_read: u64,
    /// Time the key index lookups took (wall clock, microseconds): what exactly once across
    /// workers costs a round.
    pub key_index_micros: u64,
    /// Events written with a clock correction of over 12 hours: a retry of one of them, sent
    /// after the device's clock moved by more than a day, is the one duplicate the key index
    /// can miss (`keys`' *The window*).
    pub beyond_dedup_window: u64,
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
    /// Rows of the daily rollups ([`crate::rollup`]) computed again for the days the rounds'
    /// events fell on (or all of them when a rollup was filled).
    pub rollups: Option<u64>,
    /// Identity links re-derived from their events and merged into `identities` (all of them
    /// when the table was created).
    pub identities: Option<u64>,
    /// Staged rows of people erased since they were staged (tombstoned: [`crate::erase`]),
    /// dropped.
    pub erased_in_staging: u64,
}

impl CompactReport {
    fn add(&mut self, o: CompactReport) {
        self.staged_files += o.staged_files;
        self.events_read += o.events_read;
        self.events_written += o.events_written;
        self.duplicates_in_staging += o.duplicates_in_staging;
        self.already_in_lake += o.already_in_lake;
        self.lake_files_read += o.lake_files_read;
        self.key_index_micros += o.key_index_micros;
        self.beyond_dedup_window += o.beyond_dedup_window;
        self.bad_rows_written += o.bad_rows_written;
        self.quarantined_files += o.quarantined_files;
        self.conflicts += o.conflicts;
        self.fraud_decisions_written += o.fraud_decisions_written;
        self.erased_in_staging += o.erased_in_staging;
        self.orders = sum(self.orders, o.orders);
        self.visits = sum(self.visits, o.visits);
        self.rollups = sum(self.rollups, o.rollups);
        self.identities = sum(self.identities, o.identities);
    }
}

/// Two optional counts added (None only when both are).
pub(crate) fn sum(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        (a, b) => a.or(b),
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

/// A clock correction beyond which a retry's day may differ from the first copy's by more than
/// the key index looks at (`keys`' *The window*): 12 hours, in milliseconds.
const DEDUP_WINDOW_SKEW_MS: i64 = 12 * 3_600_000;

/// Events of `batches` whose clock correction is beyond [`DEDUP_WINDOW_SKEW_MS`].
fn beyond_dedup_window(batches: &[RecordBatch]) -> u64 {
    batches
        .iter()
        .filter_map(|b| {
            b.column_by_name(CLOCK_SKEW_MS)
                .and_then(|c| c.as_primitive_opt::<Int64Type>())
        })
        .map(|c| {
            c.iter()
                .flatten()
                .filter(|s| s.unsigned_abs() > DEDUP_WINDOW_SKEW_MS.unsigned_abs())
                .count() as u64
        })
        .sum()
}

/// What [`append_new`] did.
#[derive(Debug, Default)]
struct Appended {
    written: u64,
    /// Staged rows whose key the table already held.
    skipped: u64,
    /// Data files whose key column was read (to index them, or to confirm a key).
    files_read: u64,
    /// Time spent in the key index lookup, microseconds.
    lookup_micros: u64,
}

/// Appends the rows of `batches` whose key `target` does not hold yet.
async fn append_new(
    lake: &Lake,
    target: &TableDescriptor,
    batches: Vec<RecordBatch>,
    opts: &WriteOptions,
    operation: &str,
) -> Result<Appended> {
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    if rows == 0 {
        return Ok(Appended::default());
    }
    let table_name = target.name;
    let qe = query_err(table_name);
    // The table is loaded once: the key lookup and the commit use the same snapshot, so a
    // compactor that committed in between is a conflict (see below), never a silent duplicate.
    let table = table_or_empty(lake, target, opts).await?;
    // Whatever happened to the copy the lake holds — a compaction that committed and died before
    // deleting its staging files, a stage that staged the same records again, a client's retry
    // past the stage's window, a shard that moved to another worker — the key is in the key
    // index (`keys`), which reads only the files that may hold it.
    let started = std::time::Instant::now();
    let lookup = lake.keys().existing(lake, target, &table, &batches).await?;
    let lookup_micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let key = target.key_column();
    let mut kept = Vec::with_capacity(batches.len());
    for batch in batches {
        if lookup.existing.is_empty() {
            kept.push(batch);
            continue;
        }
        let keys = batch
            .column_by_name(key)
            .and_then(|c| c.as_string_opt::<i32>())
            .ok_or_else(|| Error::missing_column(table_name, key))?;
        let keep: BooleanArray = keys
            .iter()
            .map(|k| Some(!k.is_some_and(|k| lookup.existing.contains(k))))
            .collect();
        kept.push(filter_record_batch(&batch, &keep)?);
    }
    let ctx = SessionContext::new();
    let df = ctx.read_batches(kept).map_err(&qe)?;
    let df = if target.schema().column_with_name(EVENT_TIME).is_some() {
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
        // Against the snapshot the lookup read, with the writer transaction: a compactor that
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
        shoplake_server::faults::point("compact.committed");
    }
    Ok(Appended {
        written: written as u64,
        skipped: (rows - written) as u64,
        files_read: lookup.files_indexed + lookup.files_checked,
        lookup_micros,
    })
}

/// One compaction round: reads up to the limits from staging, commits, then deletes what it read.
pub async fn compact(lake: &Lake, opts: &CompactOptions) -> Result<CompactReport> {
    let tombstones = crate::erase::load_tombstones(lake).await?;
    compact_round(lake, opts, &tombstones).await
}

/// [`compact`] with the erasure tombstones read already (once for all of [`compact_all`]'s
/// rounds: reading them is a listing and a read per erasure request).
async fn compact_round(
    lake: &Lake,
    opts: &CompactOptions,
    tombstones: &shoplake_events::erasure::Tombstones,
) -> Result<CompactReport> {
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
    let mut events = read_staging(lake, &events_files, &tables::EVENTS.schema()).await?;
    let mut bad_staged = read_staging(lake, &bad_files, &tables::BAD_ROWS.schema()).await?;
    let mut decisions =
        read_staging(lake, &decision_files, &tables::FRAUD_DECISIONS.schema()).await?;
    // People erased since their rows were staged: their rows go no further.
    for read in [&mut events, &mut bad_staged, &mut decisions] {
        for rows in [&mut read.rows, &mut read.bad_rows] {
            let (kept, dropped) = crate::erase::drop_erased(std::mem::take(rows), tombstones)?;
            *rows = kept;
            report.erased_in_staging += dropped;
        }
    }
    report.quarantined_files = events.quarantined + bad_staged.quarantined + decisions.quarantined;
    report.events_read = events.rows.iter().map(|b| b.num_rows() as u64).sum();
    let (events_rows, dups) = dedup_first(events.rows, &tables::EVENTS)?;
    report.duplicates_in_staging = dups;
    let touched_orders = Touched::of(&events_rows, derived::ORDERS.key());
    let touched_visits = Touched::of(&events_rows, derived::VISITS.key());
    let touched_identities = crate::identities::linked_anonymous_ids(&events_rows)?;
    let touched_days = crate::rollup::days_of(&events_rows);
    report.beyond_dedup_window = beyond_dedup_window(&events_rows);
    let appended = append_new(lake, &tables::EVENTS, events_rows, &write, "compact").await?;
    let written = appended.written;
    report.events_written = written;
    report.already_in_lake = appended.skipped;
    report.lake_files_read = appended.files_read;
    report.key_index_micros = appended.lookup_micros;

    // Bad rows: the stage's, and those of staged lines and files this round could not read.
    let mut bad = bad_staged.rows;
    bad.extend(bad_staged.bad_rows);
    bad.extend(events.bad_rows);
    bad.extend(decisions.bad_rows);
    let (bad, _) = dedup_first(bad, &tables::BAD_ROWS)?;
    let appended = append_new(lake, &tables::BAD_ROWS, bad, &write, "compact").await?;
    report.bad_rows_written = appended.written;
    report.lake_files_read += appended.files_read;
    report.key_index_micros += appended.lookup_micros;

    // Fraud decisions: one per scored order_completed event, de-duplicated like the events (a
    // stage that re-reads records after a crash decides on them again).
    let (decisions, _) = dedup_first(decisions.rows, &tables::FRAUD_DECISIONS)?;
    let appended = append_new(lake, &tables::FRAUD_DECISIONS, decisions, &write, "compact").await?;
    report.fraud_decisions_written = appended.written;
    report.lake_files_read += appended.files_read;
    report.key_index_micros += appended.lookup_micros;

    // Orders and visits this round's events belong to are derived again from the lake and
    // merged; a table is filled from all events when it is missing or was never filled (a new
    // lake, or a crash between its creation and its fill).
    report.orders = derived::ORDERS
        .update(lake, &touched_orders, written, &write)
        .await?;
    report.visits = derived::VISITS
        .update(lake, &touched_visits, written, &write)
        .await?;

    // The days this round's events fall on, for the daily rollups' next refresh (written down
    // before the staging files go: a crash in between runs the round again).
    crate::rollup::mark_dirty(lake, &touched_days).await?;

    // Anonymous ids this round's identity events link to users (the table made when missing).
    report.identities =
        crate::identities::update_identities(lake, touched_identities, &write).await?;

    let store = lake.store();
    for (i, f) in events_files
        .iter()
        .chain(&bad_files)
        .chain(&decision_files)
        .enumerate()
    {
        if i == 1 {
            shoplake_server::faults::point("compact.staging.delete");
        }
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
pub(crate) async fn again_on_conflict<T, F, Fut>(conflicts_met: &mut u64, mut step: F) -> Result<T>
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

/// Compacts until staging is empty, then computes the daily rollups of the days it touched
/// again ([`crate::rollup::refresh`]).
pub async fn compact_all(lake: &Lake, opts: &CompactOptions) -> Result<CompactReport> {
    let mut total = compact_staged(lake, opts).await?;
    total.rollups = sum(
        total.rollups,
        crate::rollup::refresh(lake, &opts.write_options()).await?,
    );
    Ok(total)
}

/// Compacts until staging is empty; the days it touched wait for the next
/// [`crate::rollup::refresh`] (`shoplake up` refreshes on an interval of its own).
pub async fn compact_staged(lake: &Lake, opts: &CompactOptions) -> Result<CompactReport> {
    let write = opts.write_options();
    let tombstones = crate::erase::load_tombstones(lake).await?;
    let mut conflicts = 0;
    let mut total = CompactReport {
        // A lake written before a derived table existed gets it now, not at its next event.
        orders: again_on_conflict(&mut conflicts, || derived::ORDERS.ensure(lake, &write)).await?,
        visits: again_on_conflict(&mut conflicts, || derived::VISITS.ensure(lake, &write)).await?,
        rollups: {
            let mut rows = None;
            for rollup in crate::rollup::ALL {
                rows = sum(
                    rows,
                    again_on_conflict(&mut conflicts, || rollup.ensure(lake, &write)).await?,
                );
            }
            rows
        },
        ..Default::default()
    };
    loop {
        let round =
            again_on_conflict(&mut conflicts, || compact_round(lake, opts, &tombstones)).await?;
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

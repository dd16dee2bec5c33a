//! The lake over time: retention (rows and objects older than their period leave the lake) and
//! VACUUM (files no version of a table still needs leave storage, once a grace period has passed).
//!
//! - [`retain`]: for each table with a retention period, the days (`event_date` partitions)
//!   older than it are deleted from the table (Delta DELETE on the partition column: whole files
//!   leave the table's current version, nothing is rewritten); objects of the quarantine and of
//!   the raw archive older than theirs are deleted from storage.
//! - [`vacuum`]: the files a table no longer references (removed by optimize, by retention, or
//!   written by a compactor that died before its commit) are deleted once they have been out of
//!   the table for the grace period, with their key-index objects (`_index/`, [`crate::keys`]).
//!   Delta VACUUM in its full mode, as delta-rs implements it: it lists the table's folder, so an
//!   orphan file is found too.
//!
//! ## Never a file a running query reads
//! A query reads the files of the table version it started on. A file leaves that version's
//! successors when it is removed, and VACUUM deletes it only `grace` after the removal (a file
//! never committed: `grace` after it was written). So any query that started before the removal
//! has had `grace` to finish; the grace is at least [`MIN_GRACE`] (an hour), far beyond the query
//! service's statement time limit, and 7 days by default (Delta's own default, which also keeps
//! a week of time travel).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::Serialize;
use shoplake_events::fields::EVENT_DATE;
use shoplake_events::lake::QUARANTINE;

use crate::{Error, Lake, Result, keys, tables};

/// The shortest grace period VACUUM accepts: longer than any query may run.
pub const MIN_GRACE: Duration = Duration::from_secs(3_600);

/// What [`retain`] keeps: per table, how long its rows stay (by `event_date`); how long the
/// quarantine's and the raw archive's objects stay. Absent: for ever.
#[derive(Clone, Debug, Default)]
pub struct Retention {
    pub tables: Vec<(&'static str, Duration)>,
    pub quarantine: Option<Duration>,
    /// The raw archive's store (its own location: `[firehose] archive_location`, or the lake's
    /// `raw/` folder) and its period.
    pub raw_archive: Option<(Arc<dyn ObjectStore>, Duration)>,
    /// How long after an erasure its removed files are deleted ([`crate::erase::vacuum_erasures`]).
    pub erasure_grace: Duration,
}

/// What [`retain`] did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RetainReport {
    /// Per table: the days that left it, and their files and rows (from the files' statistics).
    pub tables: BTreeMap<String, TableRetained>,
    pub quarantine_objects_deleted: u64,
    pub raw_archive_objects_deleted: u64,
    /// Bytes of the quarantine and raw archive objects deleted (a table's files stay on storage
    /// until [`vacuum`]).
    pub bytes_deleted: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct TableRetained {
    pub days: u64,
    pub files: u64,
    pub rows: u64,
}

/// What [`vacuum`] did to one table.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VacuumReport {
    pub table: String,
    pub files_deleted: u64,
    pub bytes_reclaimed: u64,
    pub index_objects_deleted: u64,
}

/// The UTC date `period` before `now`, as `event_date` partitions spell it: days before it leave.
fn cutoff_day(now: DateTime<Utc>, period: Duration) -> String {
    let period = chrono::Duration::from_std(period).unwrap_or(chrono::Duration::MAX);
    now.checked_sub_signed(period)
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
        .format("%Y-%m-%d")
        .to_string()
}

/// Applies `retention` as of `now`. Each table's days before its cutoff leave it in one commit;
/// a commit that loses to another writer fails this run (a conflict, [`Error::is_conflict`]),
/// and the next run deletes what is still due. Late events that compaction appends to a day
/// already past its cutoff leave at the next run.
pub async fn retain(
    lake: &Lake,
    retention: &Retention,
    now: DateTime<Utc>,
) -> Result<RetainReport> {
    let mut report = RetainReport::default();
    for (table, period) in &retention.tables {
        let descriptor = tables::get(table)?;
        if descriptor.partition_columns != [EVENT_DATE] {
            return Err(Error::BadOption {
                name: "retention",
                value: (*table).to_owned(),
                reason: "only tables partitioned by event_date have a retention period".into(),
            });
        }
        let Some(t) = lake.table(table).await? else {
            continue;
        };
        let cutoff = cutoff_day(now, *period);
        let delta = |source| Error::delta(table, source);
        let mut retained = TableRetained::default();
        let mut days = std::collections::BTreeSet::new();
        for file in t.snapshot().map_err(delta)?.log_data() {
            let Some(Some(day)) = file.partition_values_map().remove(EVENT_DATE) else {
                continue;
            };
            if day < cutoff {
                retained.files += 1;
                retained.rows += file.num_records().unwrap_or(0) as u64;
                days.insert(day);
            }
        }
        retained.days = days.len() as u64;
        if retained.files > 0 {
            // A predicate on the partition column alone: delta-rs removes whole files from the
            // log without reading or rewriting them.
            t.delete()
                .with_predicate(format!("{EVENT_DATE} < '{cutoff}'"))
                .await
                .map_err(delta)?;
        }
        report.tables.insert((*table).to_owned(), retained);
    }
    if let Some(period) = retention.quarantine {
        let (n, bytes) = delete_older(
            lake.store().as_ref(),
            Some(&Path::from(QUARANTINE)),
            now,
            period,
        )
        .await?;
        report.quarantine_objects_deleted = n;
        report.bytes_deleted += bytes;
    }
    if let Some((store, period)) = &retention.raw_archive {
        let (n, bytes) = delete_older(store.as_ref(), None, now, *period).await?;
        report.raw_archive_objects_deleted = n;
        report.bytes_deleted += bytes;
    }
    Ok(report)
}

/// Deletes the objects under `prefix` last modified more than `period` before `now`; returns
/// how many, and their bytes.
async fn delete_older(
    store: &dyn ObjectStore,
    prefix: Option<&Path>,
    now: DateTime<Utc>,
    period: Duration,
) -> Result<(u64, u64)> {
    let err = |source| Error::Store {
        path: prefix.map(ToString::to_string).unwrap_or_default(),
        source,
    };
    let period = chrono::Duration::from_std(period).unwrap_or(chrono::Duration::MAX);
    let before = now
        .checked_sub_signed(period)
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let old: Vec<_> = store
        .list(prefix)
        .try_filter(|o| std::future::ready(o.last_modified < before))
        .try_collect()
        .await
        .map_err(err)?;
    let (mut n, mut bytes) = (0, 0);
    for o in old {
        match store.delete(&o.location).await {
            Ok(()) => {
                n += 1;
                bytes += o.size;
            }
            // Deleted meanwhile (another maintenance run): gone all the same.
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(err(e)),
        }
    }
    Ok((n, bytes))
}

/// A clock for delta-rs' VACUUM: the time it judges files' ages by.
#[derive(Debug)]
struct At(i64);

impl deltalake::operations::vacuum::Clock for At {
    fn current_timestamp_millis(&self) -> i64 {
        self.0
    }
}

/// Deletes from storage the files of `table` that no version within `grace` of `now` needs
/// (see the module docs), and their key-index objects. A grace under [`MIN_GRACE`] is refused.
pub async fn vacuum(
    lake: &Lake,
    table: &str,
    grace: Duration,
    now: DateTime<Utc>,
) -> Result<VacuumReport> {
    if grace < MIN_GRACE {
        return Err(Error::BadOption {
            name: "vacuum grace (--older-than)",
            value: humantime::format_duration(grace).to_string(),
            reason: format!(
                "a file is deleted only once no query may still read it: at least {}",
                humantime::format_duration(MIN_GRACE)
            ),
        });
    }
    vacuum_within(lake, table, grace, now).await
}

/// [`vacuum`] with any grace: an erasure's (`crate::erase`), which the operator bounds by their
/// queries' time limit (`[retention] erasure_grace`).
pub(crate) async fn vacuum_within(
    lake: &Lake,
    table: &str,
    grace: Duration,
    now: DateTime<Utc>,
) -> Result<VacuumReport> {
    tables::get(table)?;
    let mut report = VacuumReport {
        table: table.to_owned(),
        ..Default::default()
    };
    let Some(t) = lake.table(table).await? else {
        return Ok(report);
    };
    let delta = |source| Error::delta(table, source);
    // The files' sizes, listed before they go (delta-rs reports only their paths).
    let store = t.object_store();
    let sizes: HashMap<Path, u64> = store
        .list(None)
        .map_ok(|o| (o.location, o.size))
        .try_collect()
        .await
        .map_err(|source| Error::Store {
            path: table.to_owned(),
            source,
        })?;
    let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    let (_, metrics) = t
        .vacuum()
        .with_mode(deltalake::operations::vacuum::VacuumMode::Full)
        .with_retention_period(grace)
        // The grace is checked above (MIN_GRACE), against this lake's queries rather than the
        // table's Delta default of 7 days, which the config's default equals.
        .with_enforce_retention_duration(false)
        .with_clock(Arc::new(At(now.timestamp_millis())))
        .await
        .map_err(delta)?;
    for file in &metrics.files_deleted {
        // delta-rs lists every expired tombstone, also those an earlier VACUUM deleted (they stay
        // in the log until its own retention): only files that were there count.
        let Some(size) = sizes.get(&Path::from(file.as_str())) else {
            continue;
        };
        report.files_deleted += 1;
        report.bytes_reclaimed += size;
        match lake.store().delete(&keys::index_path(table, file)).await {
            Ok(()) => report.index_objects_deleted += 1,
            Err(object_store::Error::NotFound { .. }) => {}
            Err(source) => {
                return Err(Error::Store {
                    path: keys::index_path(table, file).to_string(),
                    source,
                });
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cutoff_is_the_day_the_period_ends_on() {
        let now = DateTime::parse_from_rfc3339("2026-12-07T01:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            cutoff_day(now, Duration::from_secs(30 * 86_400)),
            "2026-11-07"
        );
        assert_eq!(cutoff_day(now, Duration::from_secs(3_600)), "2026-12-07");
        // A period longer than the calendar keeps everything.
        assert_eq!(cutoff_day(now, Duration::MAX), "-262143-01-01");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_grace_under_an_hour_is_refused_and_an_unknown_table_named() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap(), Default::default()).unwrap();
        let e = vacuum(&lake, "events", Duration::from_secs(60), Utc::now())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("at least 1h"), "{e}");
        let e = vacuum(&lake, "customers", MIN_GRACE, Utc::now())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::UnknownTable { .. }), "{e}");
        // A table never written has nothing to vacuum.
        let r = vacuum(&lake, "events", MIN_GRACE, Utc::now())
            .await
            .unwrap();
        assert_eq!(r.files_deleted, 0);
    }
}

//! Small files → large ones (Delta OPTIMIZE), written with the lake's layout ([`crate::write`]).
//!
//! A day of the events table (partitioned by `event_date`, with an `event_time` column) whose
//! files overlap in time is rewritten sorted by `event_time` (OPTIMIZE ZORDER BY that one column,
//! which is a plain sort). That happens when compaction rounds each span the day: a backfill, a
//! replay, late events. Bin-packing alone concatenates such files, every row group of the result
//! spans the day, and a time filter prunes nothing (the crate docs' *Layout* gives the measure).
//! Days whose files follow one another in time, as live ingestion writes them, and the other
//! tables are bin-packed, which is cheaper and keeps such a day in order. The files merged stay on
//! storage, out of the table, until [`crate::lifecycle::vacuum`] deletes them after its grace.

use std::collections::BTreeMap;

use deltalake::delta_datafusion::create_session_state_with_spill_config;
use deltalake::operations::optimize::OptimizeType;
use deltalake::{FilterOp, FilterValue};
use shoplake_events::fields::{EVENT_DATE, EVENT_TIME};

use crate::write::WriteOptions;
use crate::{Error, Lake, Result, tables};

/// Memory the sort of a day may hold before it spills to disk (one day is sorted at a time).
const SORT_MEMORY: usize = 1 << 30;

/// What an optimize run did.
#[derive(Clone, Debug, Default)]
pub struct OptimizeReport {
    pub table: String,
    pub files_removed: u64,
    pub files_added: u64,
}

/// One active file of a day: its size and its event_time range (from the Delta statistics).
struct DayFile {
    bytes: u64,
    range: Option<(String, String)>,
}

/// The event_time range a file's Delta statistics record (ISO 8601 strings, which sort as times).
fn time_range(stats: Option<String>) -> Option<(String, String)> {
    let stats: serde_json::Value = serde_json::from_str(&stats?).ok()?;
    let bound = |k: &str| stats[k][EVENT_TIME].as_str().map(str::to_owned);
    Some((bound("minValues")?, bound("maxValues")?))
}

/// Whether some of the files' time ranges overlap (or one is unknown): concatenated, they would
/// not be sorted.
fn overlap(files: &[DayFile]) -> bool {
    let mut ranges = Vec::with_capacity(files.len());
    for f in files {
        match &f.range {
            Some(r) => ranges.push(r),
            None => return true,
        }
    }
    ranges.sort();
    ranges.windows(2).any(|w| w[1].0 < w[0].1)
}

/// Whether a day's files are more than its bytes need at `target` bytes a file, and overlap.
fn needs_sort(files: &[DayFile], target: u64) -> bool {
    let bytes: u64 = files.iter().map(|f| f.bytes).sum();
    files.len() as u64 > bytes.div_ceil(target).max(1) && overlap(files)
}

/// The `event_date` partitions to rewrite sorted: those holding more files than their bytes need
/// at `target` bytes a file, whose files overlap in time. Days whose files follow one another
/// (live ingestion, where each round holds the latest minutes) are left to bin-packing, which
/// keeps each file's rows together and so the day in order, at a fraction of a sort's cost.
fn days_to_sort(name: &str, table: &deltalake::DeltaTable, target: u64) -> Result<Vec<String>> {
    let state = table
        .snapshot()
        .map_err(|source| Error::delta(name, source))?;
    let mut days: BTreeMap<String, Vec<DayFile>> = BTreeMap::new();
    for file in state.log_data() {
        let Some(Some(day)) = file.partition_values_map().remove(EVENT_DATE) else {
            continue;
        };
        days.entry(day).or_default().push(DayFile {
            bytes: file.size().max(0) as u64,
            range: time_range(file.stats()),
        });
    }
    Ok(days
        .into_iter()
        .filter(|(_, files)| needs_sort(files, target))
        .map(|(day, _)| day)
        .collect())
}

/// Rewrites the small files of `table` into files of about `opts.target_file_size` bytes (Delta
/// OPTIMIZE), written with the table's layout (zstd level, row-group size, bloom filters) and,
/// for a table partitioned by day with event times, sorted by event time within each day;
/// readers keep seeing a consistent version throughout, and appends that commit meanwhile are
/// kept. A name that is not one of the lake's tables is an error.
pub async fn optimize(lake: &Lake, table: &str, opts: &WriteOptions) -> Result<OptimizeReport> {
    let descriptor = tables::get(table)?;
    let mut report = OptimizeReport {
        table: table.to_owned(),
        ..Default::default()
    };
    let delta = |source| Error::delta(table, source);
    let target = opts.target_file_size.max(1);
    let size = std::num::NonZeroU64::new(target).unwrap_or(std::num::NonZeroU64::MIN);
    let Some(t) = lake.table(table).await? else {
        return Ok(report);
    };
    let properties = opts.writer_properties(descriptor)?;
    let sorted_by_time = {
        let snapshot = t.snapshot().map_err(delta)?;
        snapshot.metadata().partition_columns() == [EVENT_DATE.to_owned()]
            && snapshot.schema().field(EVENT_TIME).is_some()
    };
    let days = if sorted_by_time {
        days_to_sort(table, &t, target)?
    } else {
        Vec::new()
    };
    let t = if days.is_empty() {
        t
    } else {
        let filters = [(
            EVENT_DATE,
            FilterOp::In,
            FilterValue::Set(days.iter().map(String::as_str).collect()),
        )];
        // The sort holds at most SORT_MEMORY and spills the rest to temporary files.
        let session = create_session_state_with_spill_config(Some(SORT_MEMORY), None);
        let (t, metrics) = t
            .optimize()
            .with_type(OptimizeType::ZOrder(vec![EVENT_TIME.to_owned()]))
            .with_filters(&filters)
            .with_target_size(size)
            .with_writer_properties(properties.clone())
            .with_max_concurrent_tasks(1)
            .with_session_state(std::sync::Arc::new(session))
            .await
            .map_err(delta)?;
        report.files_removed += metrics.num_files_removed;
        report.files_added += metrics.num_files_added;
        shoplake_server::faults::point("optimize.committed");
        t
    };
    let (_, metrics) = t
        .optimize()
        .with_type(OptimizeType::Compact)
        .with_target_size(size)
        .with_writer_properties(properties)
        .await
        .map_err(delta)?;
    report.files_removed += metrics.num_files_removed;
    report.files_added += metrics.num_files_added;
    shoplake_server::faults::point("optimize.committed");
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_table_the_lake_does_not_have_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap(), Default::default()).unwrap();
        let e = optimize(&lake, "customers", &WriteOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::UnknownTable { table } if table == "customers"),
            "{e}"
        );
        // A table of the registry that was never written has nothing to optimize.
        let r = optimize(&lake, "orders", &WriteOptions::default())
            .await
            .unwrap();
        assert_eq!((r.files_removed, r.files_added), (0, 0));
    }

    fn file(bytes: u64, first: &str, last: &str) -> DayFile {
        DayFile {
            bytes,
            range: Some((
                format!("2026-03-01T{first}:00.000Z"),
                format!("2026-03-01T{last}:00.000Z"),
            )),
        }
    }

    #[test]
    fn only_small_files_that_overlap_in_time_are_sorted() {
        let mb = 1 << 20;
        // Rounds of a backfill: each spans the day.
        let backfill = [file(mb, "00:01", "23:59"), file(mb, "00:03", "23:58")];
        assert!(needs_sort(&backfill, 256 * mb));
        // Live ingestion: each round holds the minutes after the last (touching ends allowed).
        let live = [
            file(mb, "10:00", "10:05"),
            file(mb, "10:05", "10:10"),
            file(mb, "10:10", "10:15"),
        ];
        assert!(!needs_sort(&live, 256 * mb));
        // Files whose order is unknown (no statistics) are sorted to be safe.
        let unknown = [
            DayFile {
                bytes: mb,
                range: None,
            },
            file(mb, "10:00", "10:05"),
        ];
        assert!(needs_sort(&unknown, 256 * mb));
        // A day already in as few files as its size needs is left alone, overlapping or not.
        assert!(!needs_sort(&[file(300 * mb, "00:00", "23:59")], 256 * mb));
        assert!(!needs_sort(&backfill, mb));
    }

    #[test]
    fn time_ranges_come_from_the_delta_statistics() {
        let stats = r#"{"numRecords":2,"minValues":{"event_time":"2026-03-01T00:01:23.099Z"},
                        "maxValues":{"event_time":"2026-03-01T23:59:59.999Z"}}"#;
        assert_eq!(
            time_range(Some(stats.to_owned())),
            Some((
                "2026-03-01T00:01:23.099Z".to_owned(),
                "2026-03-01T23:59:59.999Z".to_owned()
            ))
        );
        assert_eq!(time_range(Some(r#"{"numRecords":2}"#.to_owned())), None);
        assert_eq!(time_range(None), None);
    }
}

//! Small files → large ones, and removal of files no version references any more.
//!
//! Tables partitioned by `event_date` with an `event_time` column (`events`) are rewritten sorted
//! by `event_time` (a Delta OPTIMIZE ZORDER BY on that one column, which is a plain sort), and
//! only in the days that hold more files than their size needs. Bin-packing alone concatenates
//! the files of a day newest first; when compaction rounds each span the day (a backfill, a
//! replay, late events), every row group of the result then spans the day too and a time filter
//! prunes nothing: 8 of 12 row groups matched a one-hour filter on the 10-million-event lake of
//! BENCHMARKS.md. Other tables are bin-packed.

use std::collections::BTreeMap;

use deltalake::delta_datafusion::create_session_state_with_spill_config;
use deltalake::operations::optimize::OptimizeType;
use deltalake::{FilterOp, FilterValue};
use shoplake_events::fields::{EVENT_DATE, EVENT_TIME};

use crate::compact::{CompactOptions, writer_properties};
use crate::{Error, Lake, Result};

/// Memory the sort of a day may hold before it spills to disk.
const SORT_MEMORY: usize = 512 << 20;

/// What an optimize run did.
#[derive(Clone, Debug, Default)]
pub struct OptimizeReport {
    pub table: String,
    pub files_removed: u64,
    pub files_added: u64,
}

/// The `event_date` partitions holding more files than their bytes need at `target` bytes a file.
fn days_to_rewrite(table: &deltalake::DeltaTable, target: u64) -> Result<Vec<String>> {
    let state = table
        .snapshot()
        .map_err(|source| Error::delta(EVENT_DATE, source))?;
    // day → (files, bytes)
    let mut days: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for file in state.log_data() {
        let Some(Some(day)) = file.partition_values_map().remove(EVENT_DATE) else {
            continue;
        };
        let entry = days.entry(day).or_default();
        entry.0 += 1;
        entry.1 += file.size().max(0) as u64;
    }
    Ok(days
        .into_iter()
        .filter(|(_, (files, bytes))| *files > bytes.div_ceil(target.max(1)).max(1))
        .map(|(day, _)| day)
        .collect())
}

/// Rewrites the small files of `table` into files of about `opts.target_file_size` bytes (Delta
/// OPTIMIZE), written with compaction's layout (zstd level, row-group size, bloom filters) and,
/// for the events table, sorted by event time within each day; readers keep seeing a consistent
/// version throughout, and appends that commit meanwhile are kept.
pub async fn optimize(lake: &Lake, table: &str, opts: &CompactOptions) -> Result<OptimizeReport> {
    let mut report = OptimizeReport {
        table: table.to_owned(),
        ..Default::default()
    };
    let Some(t) = lake.table(table).await? else {
        return Ok(report);
    };
    let delta = |source| Error::delta(table, source);
    let target = opts.target_file_size.max(1);
    let sorted_by_time = {
        let snapshot = t.snapshot().map_err(delta)?;
        snapshot.metadata().partition_columns() == &[EVENT_DATE.to_owned()]
            && snapshot.schema().field(EVENT_TIME).is_some()
    };
    let days = if sorted_by_time {
        days_to_rewrite(&t, target)?
    } else {
        Vec::new()
    };
    if sorted_by_time && days.is_empty() {
        return Ok(report);
    }
    let filters = [(
        EVENT_DATE,
        FilterOp::In,
        FilterValue::Set(days.iter().map(String::as_str).collect()),
    )];
    let builder = t
        .optimize()
        .with_target_size(std::num::NonZeroU64::new(target).unwrap_or(std::num::NonZeroU64::MIN))
        .with_writer_properties(writer_properties(opts)?);
    let builder = if sorted_by_time {
        // The sort holds at most SORT_MEMORY and spills the rest to temporary files.
        let session = create_session_state_with_spill_config(Some(SORT_MEMORY), None);
        builder
            .with_type(OptimizeType::ZOrder(vec![EVENT_TIME.to_owned()]))
            .with_filters(&filters)
            .with_session_state(std::sync::Arc::new(session))
    } else {
        builder.with_type(OptimizeType::Compact)
    };
    let (_, metrics) = builder.await.map_err(delta)?;
    report.files_removed = metrics.num_files_removed;
    report.files_added = metrics.num_files_added;
    Ok(report)
}

//! `optimize` rewrites a day of many small files into one, sorted by event time, so that a time
//! filter prunes row groups; it keeps every row, leaves a day that needs nothing alone, and
//! bin-packs the tables without event times.

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray};
use arrow::datatypes::TimestampMicrosecondType;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use shoplake_batch::optimize::optimize;
use shoplake_batch::{CompactOptions, Lake, compact_all};
use shoplake_transform::StageConfig;

use crate::lake::staged;

/// The event times of each active file of `events`, by day.
async fn days(lake: &Lake) -> BTreeMap<String, Vec<Vec<i64>>> {
    let table = lake.table("events").await.unwrap().unwrap();
    let ctx = SessionContext::new();
    let mut out: BTreeMap<String, Vec<Vec<i64>>> = BTreeMap::new();
    for uri in table.get_file_uris().unwrap() {
        let path = uri.trim_start_matches("file://").to_owned();
        let day = path
            .split('/')
            .find_map(|p| p.strip_prefix("event_date="))
            .unwrap()
            .to_owned();
        let batches = ctx
            .read_parquet(path, ParquetReadOptions::default())
            .await
            .unwrap()
            .select_columns(&["event_time"])
            .unwrap()
            .collect()
            .await
            .unwrap();
        let mut times = Vec::new();
        for b in &batches {
            let c = b.column(0).as_primitive::<TimestampMicrosecondType>();
            assert_eq!(c.null_count(), 0);
            times.extend(c.values().iter().copied());
        }
        out.entry(day).or_default().push(times);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimize_sorts_each_day_by_event_time_and_keeps_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let small = StageConfig {
        max_batch_records: 400,
        read_batch: 100,
        ..StageConfig::default()
    };
    let (stats, _, lake) = staged(dir.path(), 11, 200, small).await;
    // One staged file per round: many small files in each day.
    let opts = CompactOptions {
        max_files: 1,
        ..CompactOptions::default()
    };
    let report = compact_all(&lake, &opts).await.unwrap();
    assert_eq!(report.events_written, stats.valid_unique);

    let before = days(&lake).await;
    let (day, files) = before.iter().max_by_key(|(_, f)| f.len()).unwrap();
    assert!(files.len() >= 3, "{day} has {} files", files.len());
    // The rounds' files overlap in time: concatenated, the day would not be sorted.
    let concatenated: Vec<i64> = files.iter().flatten().copied().collect();
    assert!(
        concatenated.windows(2).any(|w| w[0] > w[1]),
        "the simulation staged {day} in time order; nothing to check"
    );
    let rows_before: usize = before.values().flatten().map(Vec::len).sum();

    let r = optimize(&lake, "events", &opts.write_options())
        .await
        .unwrap();
    assert!(r.files_removed >= files.len() as u64, "{r:?}");
    let after = days(&lake).await;
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    for (day, files) in &after {
        assert_eq!(files.len(), 1, "{day}: one file after optimize");
        // A day whose files overlapped in time is rewritten sorted. Files that follow one
        // another are bin-packed, not sorted (a file is in the order the stage wrote it, late
        // events included). A day already in one file is left as it was.
        let mut ranges: Vec<(i64, i64)> = before[day]
            .iter()
            .filter(|f| !f.is_empty())
            .map(|f| (*f.iter().min().unwrap(), *f.iter().max().unwrap()))
            .collect();
        ranges.sort();
        let overlapped = ranges.windows(2).any(|w| w[1].0 < w[0].1);
        if overlapped {
            assert!(
                files[0].windows(2).all(|w| w[0] <= w[1]),
                "{day} is sorted by event_time"
            );
        } else {
            let (mut got, mut had) = (files[0].clone(), before[day].concat());
            got.sort_unstable();
            had.sort_unstable();
            assert_eq!(got, had, "{day}: its rows, bin-packed");
        }
    }
    let rows_after: usize = after.values().flatten().map(Vec::len).sum();
    assert_eq!(rows_after, rows_before);
    assert_eq!(rows_after as u64, stats.valid_unique);

    // Nothing left to do: a second run rewrites nothing.
    let again = optimize(&lake, "events", &opts.write_options())
        .await
        .unwrap();
    assert_eq!((again.files_removed, again.files_added), (0, 0));
    // A table without event times is bin-packed.
    let bad = optimize(&lake, "bad_rows", &opts.write_options())
        .await
        .unwrap();
    assert!(bad.files_removed >= bad.files_added, "{bad:?}");
}

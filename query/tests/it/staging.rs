//! Staged NDJSON, as a Firehose events sink delivers it into `_staging/events/` (Firehose's hourly
//! folders, objects without an extension, some gzip), compacts into the same lake as the stage's
//! own Parquet staging; lines that do not decode become bad rows with a reason.

use std::io::Write;

use arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use shoplake_batch::{CompactOptions, Lake, compact_all};
use shoplake_query::QueryService;
use shoplake_transform::StageConfig;
use shoplake_transform::staging::encode_ndjson;

use crate::lake::staged;

/// A query's result, rendered: equal renderings mean equal results.
async fn text(lake_root: &str, sql: &str) -> String {
    let service = QueryService::open(lake_root, Default::default())
        .await
        .unwrap();
    let result = service.sql(sql).await.unwrap();
    pretty_format_batches(&result.batches).unwrap().to_string()
}

/// Every file under `dir`, recursively, as paths relative to it.
fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_staging_plain_or_gzip_compacts_to_the_same_lake_as_parquet() {
    let dir = tempfile::tempdir().unwrap();
    // Several staged files.
    let small = StageConfig {
        max_batch_records: 300,
        read_batch: 100,
        ..StageConfig::default()
    };
    let (stats, _, lake_a) = staged(dir.path(), 7, 80, small).await;
    let (root_a, root_b) = (dir.path().join("lake"), dir.path().join("b"));

    // Lake b gets the same staging, its events as Firehose would deliver them: NDJSON objects
    // under YYYY/MM/DD/HH/, every other one gzip (with Firehose's .gz), the rest unchanged.
    let ctx = SessionContext::new();
    let staged = files(&root_a.join("_staging"));
    let events: Vec<_> = staged.iter().filter(|p| p.starts_with("events")).collect();
    assert!(events.len() >= 3, "staged event files: {events:?}");
    let mut first_line = String::new();
    for (i, rel) in staged.iter().enumerate() {
        let from = root_a.join("_staging").join(rel);
        if !rel.starts_with("events") {
            let to = root_b.join("_staging").join(rel);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&from, &to).unwrap();
            continue;
        }
        let batches = ctx
            .read_parquet(from.display().to_string(), ParquetReadOptions::default())
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let mut ndjson = Vec::new();
        for b in &batches {
            ndjson.extend(encode_ndjson(b).unwrap());
        }
        if first_line.is_empty() {
            first_line =
                String::from_utf8(ndjson.split(|b| *b == b'\n').next().unwrap().to_vec()).unwrap();
        }
        let folder = root_b.join("_staging/events/2026/03/01/00");
        std::fs::create_dir_all(&folder).unwrap();
        let name = format!("shop-events-1-2026-03-01-00-00-{i:02}-{}", uuid_like(i));
        if i % 2 == 0 {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&ndjson).unwrap();
            std::fs::write(folder.join(format!("{name}.gz")), gz.finish().unwrap()).unwrap();
        } else {
            std::fs::write(folder.join(name), ndjson).unwrap();
        }
    }
    // An object with a copy of a good line (a duplicate, kept once), a line that is not JSON and
    // one that lacks required fields.
    std::fs::write(
        root_b.join("_staging/events/2026/03/01/00/shop-events-1-2026-03-01-00-59-59-bad"),
        format!("{first_line}\n{{not json\n{{\"event_id\":\"e-1\"}}\n"),
    )
    .unwrap();

    let lake_b = Lake::open(&root_b.display().to_string(), Default::default()).unwrap();
    let opts = CompactOptions::default();
    let report_a = compact_all(&lake_a, &opts).await.unwrap();
    let report_b = compact_all(&lake_b, &opts).await.unwrap();
    assert_eq!(report_a.events_written, stats.valid_unique);
    assert_eq!(report_b.events_written, report_a.events_written);
    assert_eq!(
        report_b.duplicates_in_staging,
        report_a.duplicates_in_staging + 1
    );
    assert_eq!(report_b.bad_rows_written, report_a.bad_rows_written + 2);
    assert!(
        files(&root_b.join("_staging")).is_empty(),
        "staging consumed"
    );

    let (a, b) = (root_a.display().to_string(), root_b.display().to_string());
    for sql in [
        "select * from events order by event_id",
        "select * from orders order by order_id",
        "select * from identities order by anonymous_id, user_id",
        "select * from fraud_decisions order by event_id",
    ] {
        assert_eq!(text(&a, sql).await, text(&b, sql).await, "{sql}");
    }
    let bad = text(
        &b,
        "select reason, event_id, message like '%line 2 of staged object%' as names_line \
         from bad_rows where stage = 'compact' order by reason",
    )
    .await;
    assert!(bad.contains("| malformed_json |"), "{bad}");
    assert!(bad.contains("| wrong_type     | e-1"), "{bad}");
    assert!(bad.contains("true"), "{bad}");
}

fn uuid_like(i: usize) -> String {
    format!("{i:08x}-0000-4000-8000-000000000000")
}

/// A staged file that cannot be read — a Parquet file cut short, a gzip object whose stream is
/// corrupt, a bad-rows file of garbage — is moved under `_quarantine/` with a bad row
/// `unreadable_file` naming it, and the rest of the round lands. Before, compaction failed on
/// such a file at every round from then on, and nothing behind it reached the lake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_staged_file_is_quarantined_and_compaction_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (stats, _, lake) = staged(dir.path(), 11, 40, StageConfig::default()).await;
    let root = dir.path().join("lake");
    let events = files(&root.join("_staging/events"));
    assert!(!events.is_empty());
    // A copy of a good Parquet file cut in half: its footer is gone.
    let good = std::fs::read(root.join("_staging/events").join(&events[0])).unwrap();
    let cut = "_staging/events/zz-cut-short.parquet";
    std::fs::write(root.join(cut), &good[..good.len() / 2]).unwrap();
    let staged_at = std::fs::metadata(root.join(cut))
        .unwrap()
        .modified()
        .unwrap();
    // A gzip object (Firehose's NDJSON) whose compressed stream is corrupt after its header.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&b"{\"event_id\":\"x\"}\n".repeat(100))
        .unwrap();
    let mut gz = gz.finish().unwrap();
    for b in gz.iter_mut().skip(12).take(16) {
        *b = !*b;
    }
    let corrupt = "_staging/events/2026/03/01/00/shop-events-corrupt.gz";
    std::fs::create_dir_all(root.join("_staging/events/2026/03/01/00")).unwrap();
    std::fs::write(root.join(corrupt), &gz).unwrap();
    let garbage = "_staging/bad_rows/zz-garbage.parquet";
    std::fs::create_dir_all(root.join("_staging/bad_rows")).unwrap();
    std::fs::write(root.join(garbage), b"PAR1 not really").unwrap();

    let report = compact_all(&lake, &CompactOptions::default())
        .await
        .unwrap();
    assert_eq!(report.events_written, stats.valid_unique, "{report:?}");
    assert_eq!(report.quarantined_files, 3, "{report:?}");
    assert!(files(&root.join("_staging")).is_empty(), "staging consumed");
    for path in [cut, corrupt, garbage] {
        let kept = root.join("_quarantine").join(path);
        assert!(kept.exists(), "{} not quarantined", kept.display());
    }
    assert_eq!(
        std::fs::read(root.join("_quarantine").join(corrupt)).unwrap(),
        gz,
        "the quarantined copy is the file as it was staged"
    );
    let root_s = root.display().to_string();
    let bad = text(
        &root_s,
        "select bad_row_id, message like '%cannot be read, moved to _quarantine/%' as says_where \
         from bad_rows where reason = 'unreadable_file' order by bad_row_id",
    )
    .await;
    for path in [cut, corrupt, garbage] {
        assert!(bad.contains(&format!("| {path} ")), "{path} in {bad}");
    }
    assert_eq!(bad.matches("true").count(), 3, "{bad}");

    // A re-run (as after a crash between the commits and the deletes: the file is back in
    // staging as it was) adds nothing.
    std::fs::write(root.join(cut), &good[..good.len() / 2]).unwrap();
    std::fs::File::options()
        .write(true)
        .open(root.join(cut))
        .unwrap()
        .set_modified(staged_at)
        .unwrap();
    let again = compact_all(&lake, &CompactOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (again.events_written, again.bad_rows_written),
        (0, 0),
        "{again:?}"
    );
    let count = text(
        &root_s,
        "select count(*) from bad_rows where reason = 'unreadable_file'",
    )
    .await;
    assert!(count.contains("| 3 "), "{count}");
}

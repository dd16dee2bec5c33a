//! The lake over time (issue 21): a lake written before the contract gained columns takes
//! today's events (schema evolution); retention takes the days past a table's period out of it,
//! VACUUM deletes from storage what no version within the grace period needs (and the key
//! index's objects of those files), and every answer about what is kept stays the same.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use shoplake_batch::lifecycle::{Retention, retain, vacuum};
use shoplake_batch::optimize::optimize;
use shoplake_batch::{CompactOptions, Lake, compact_all};
use shoplake_ingest::{LocalLog, Record, StreamProducer};
use shoplake_simulator::{SimConfig, Simulator};
use shoplake_transform::{Stage, StageConfig};

use crate::lake::count;

const DAY: Duration = Duration::from_secs(86_400);

/// Bytes of the files under `dir`, and how many (the Delta log left out: VACUUM adds to it).
fn usage(dir: &Path) -> (u64, u64) {
    let mut out = (0, 0);
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.ends_with("_delta_log") {
            continue;
        }
        if path.is_dir() {
            let (b, n) = usage(&path);
            out = (out.0 + b, out.1 + n);
        } else {
            out = (out.0 + entry.metadata().unwrap().len(), out.1 + 1);
        }
    }
    out
}

/// Answers over what the lake keeps: they must not move when storage is cleaned.
async fn answers(root: &Path) -> Vec<i64> {
    let mut out = Vec::new();
    for sql in [
        "SELECT count(*) FROM events",
        "SELECT count(DISTINCT event_id) FROM events",
        "SELECT CAST(sum(coalesce(revenue, 0)) * 100 AS BIGINT) FROM events",
        "SELECT count(*) FROM fraud_decisions",
        "SELECT count(*) FROM orders",
    ] {
        out.push(count(root, sql).await);
    }
    out
}

/// A seeded storefront of 200 sessions at 8 an hour from 2026-03-01 (a day and its morning
/// after), put through a stage into the staging of a lake in `dir/lake`, in many small files.
async fn two_days_staged(dir: &Path) -> Lake {
    std::fs::create_dir_all(dir).unwrap();
    let stream = Arc::new(LocalLog::open(&dir.join("stream.redb"), 2).unwrap());
    let mut sim = Simulator::new(SimConfig {
        seed: 21,
        start_micros: shoplake_events::parse_timestamp("2026-03-01T00:00:00Z").unwrap(),
        max_sessions: Some(200),
        sessions_per_hour: 8.0,
        ..SimConfig::default()
    });
    let mut records = Vec::new();
    while let Some(r) = sim.next() {
        records.push(Record {
            partition_key: r.partition_key,
            data: r.payload.into(),
        });
    }
    for chunk in records.chunks(500) {
        stream.put_records(chunk.to_vec()).await.unwrap();
    }
    let lake = Lake::open(&dir.join("lake").display().to_string(), Default::default()).unwrap();
    let small = StageConfig {
        max_batch_records: 300,
        read_batch: 100,
        ..StageConfig::default()
    };
    let mut stage = Stage::open(stream, lake.store(), &dir.join("stage.redb"), small).unwrap();
    stage.drain().await.unwrap();
    lake
}

/// [`two_days_staged`], compacted round by round.
async fn two_days_of_lake(dir: &Path) -> Lake {
    let lake = two_days_staged(dir).await;
    let rounds = CompactOptions {
        max_files: 2,
        ..CompactOptions::default()
    };
    compact_all(&lake, &rounds).await.unwrap();
    lake
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_and_vacuum_free_storage_and_every_kept_answer_stays() {
    let dir = tempfile::tempdir().unwrap();
    let lake = two_days_of_lake(dir.path()).await;
    let root = dir.path().join("lake");
    let before = answers(&root).await;
    // Sessions of two days; their orders ship, arrive and come back over the days after.
    let second_day = "SELECT count(*) FROM events WHERE event_date >= DATE '2026-03-02'";
    let first_days = count(
        &root,
        "SELECT count(DISTINCT event_date) FROM events WHERE event_date < DATE '2026-03-02'",
    )
    .await;
    let (first_day_events, second_day_events) = {
        let second = count(&root, second_day).await;
        (before[0] - second, second)
    };
    assert!(first_day_events > 0 && second_day_events > 0);

    // Optimize leaves the small files it merged on storage, out of the table.
    let (events_bytes, events_files) = usage(&root.join("events"));
    let merged = optimize(&lake, "events", &Default::default())
        .await
        .unwrap();
    assert!(merged.files_removed > 2, "{merged:?}");
    let (with_both, _) = usage(&root.join("events"));
    assert!(with_both > events_bytes);

    // Within the grace period nothing goes: a query that started on the old version may read it.
    let now = Utc::now();
    let r = vacuum(&lake, "events", 7 * DAY, now).await.unwrap();
    assert_eq!(r.files_deleted, 0, "{r:?}");
    assert_eq!(usage(&root.join("events")).0, with_both);

    // Past it, the merged files leave storage with their key-index objects.
    let later = now + chrono::Duration::days(8);
    let index_before = usage(&root.join("_index/events")).1;
    let r = vacuum(&lake, "events", 7 * DAY, later).await.unwrap();
    assert_eq!(r.files_deleted, merged.files_removed, "{r:?}");
    let (after_bytes, after_files) = usage(&root.join("events"));
    assert_eq!(with_both - after_bytes, r.bytes_reclaimed, "{r:?}");
    assert!(
        after_files < events_files,
        "{after_files} files of {events_files}"
    );
    assert_eq!(
        usage(&root.join("_index/events")).1,
        index_before - r.index_objects_deleted
    );
    assert!(r.index_objects_deleted > 0, "{r:?}");
    assert_eq!(answers(&root).await, before, "VACUUM changed an answer");
    // A second run finds nothing more.
    let again = vacuum(&lake, "events", 7 * DAY, later).await.unwrap();
    assert_eq!(again.files_deleted, 0);

    // Retention of events, 30 days, as of 30 days after the second day: the days before it leave
    // the table (their files stay on storage until VACUUM); the second and later stay, whole.
    std::fs::create_dir_all(root.join("_quarantine/_staging/events")).unwrap();
    std::fs::write(
        root.join("_quarantine/_staging/events/x.parquet"),
        b"not parquet",
    )
    .unwrap();
    let as_of: DateTime<Utc> = "2026-04-01T12:00:00Z".parse().unwrap();
    let r = retain(
        &lake,
        &Retention {
            tables: vec![("events", 30 * DAY)],
            quarantine: Some(DAY),
            raw_archive: None,
            erasure_grace: DAY,
        },
        as_of,
    )
    .await
    .unwrap();
    let retained = &r.tables["events"];
    assert_eq!(
        (retained.days, retained.rows),
        (first_days as u64, first_day_events as u64),
        "{r:?}"
    );
    // The quarantined file was written today: a day has not passed.
    assert_eq!(r.quarantine_objects_deleted, 0);
    assert_eq!(
        count(&root, "SELECT count(*) FROM events").await,
        second_day_events
    );
    assert_eq!(count(&root, second_day).await, second_day_events);
    let first_day = root.join("events/event_date=2026-03-01");
    assert!(usage(&first_day).1 > 0, "the files stay until VACUUM");
    let r = vacuum(&lake, "events", 7 * DAY, later).await.unwrap();
    assert!(r.files_deleted > 0 && r.bytes_reclaimed > 0, "{r:?}");
    assert_eq!(usage(&first_day).1, 0, "the first day is gone from storage");
    assert_eq!(
        count(&root, "SELECT count(*) FROM events").await,
        second_day_events
    );
    // A quarantined object past its period goes.
    let r = retain(
        &lake,
        &Retention {
            quarantine: Some(DAY),
            ..Default::default()
        },
        Utc::now() + chrono::Duration::days(2),
    )
    .await
    .unwrap();
    assert_eq!(r.quarantine_objects_deleted, 1, "{r:?}");
    assert_eq!(r.bytes_deleted, 11);
}

/// The columns the contract gained after the older lake below was written.
const GAINED: [&str; 3] = ["promotion_name", "creative", "rating"];

/// Today's events of `day` in `from`, as a shoplake that did not know [`GAINED`] wrote them:
/// a new lake at `to` whose events table lacks those columns.
async fn older_lake(
    from: &Path,
    day: &str,
    to: &Path,
    types: &[(&str, arrow::datatypes::DataType)],
) -> Lake {
    use arrow::datatypes::{Field, Schema};
    let service =
        shoplake_query::QueryService::open(&from.display().to_string(), Default::default())
            .await
            .unwrap();
    let rows = service
        .sql(&format!(
            "SELECT * FROM events WHERE event_date = DATE '{day}'"
        ))
        .await
        .unwrap();
    let today = shoplake_events::events_schema();
    let fields: Vec<Field> = today
        .fields()
        .iter()
        .filter(|f| !GAINED.contains(&f.name().as_str()))
        .map(|f| match types.iter().find(|(n, _)| n == f.name()) {
            Some((_, t)) => Field::new(f.name(), t.clone(), true),
            None => f.as_ref().clone(),
        })
        .collect();
    let old = Arc::new(Schema::new(fields));
    let batches: Vec<_> = rows
        .batches
        .iter()
        .map(|b| {
            let columns = old
                .fields()
                .iter()
                .map(|f| {
                    arrow::compute::cast(b.column_by_name(f.name()).unwrap(), f.data_type())
                        .unwrap()
                })
                .collect();
            arrow::array::RecordBatch::try_new(old.clone(), columns).unwrap()
        })
        .collect();
    let lake = Lake::open(&to.display().to_string(), Default::default()).unwrap();
    lake.new_table("events")
        .unwrap()
        .write(batches)
        .with_partition_columns(["event_date"])
        .await
        .unwrap();
    lake
}

/// A lake written before the contract gained three columns used to stop compaction for good (the
/// append's schema did not match the table's; the only way out was a new lake). Today's
/// compaction adds the columns: the old rows read them as null, the new ones carry them, and
/// every query and report answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lake_written_before_the_contract_gained_columns_takes_todays_events() {
    let dir = tempfile::tempdir().unwrap();
    let today = dir.path().join("today");
    two_days_of_lake(&today).await;
    let today_root = today.join("lake");

    // The older lake holds the first day; the stage then stages both days into it.
    let older = dir.path().join("older");
    older_lake(&today_root, "2026-03-01", &older.join("lake"), &[]).await;
    let lake = two_days_staged(&older).await;
    compact_all(&lake, &CompactOptions::default())
        .await
        .unwrap();
    let root = older.join("lake");

    let history: Vec<serde_json::Value> = {
        let t = lake.table("events").await.unwrap().unwrap();
        futures::TryStreamExt::try_collect::<Vec<_>>(t.history(None))
            .await
            .unwrap()
            .into_iter()
            .map(|c| serde_json::to_value(c).unwrap())
            .collect()
    };
    assert!(
        history
            .iter()
            .any(|c| c.to_string().contains("evolve_schema") && c.to_string().contains("creative")),
        "the evolution is in the table's history: {history:?}"
    );
    for sql in [
        "SELECT count(*) FROM events",
        "SELECT count(DISTINCT event_id) FROM events",
        "SELECT count(*) FROM events WHERE promotion_name IS NOT NULL",
        "SELECT count(*) FROM orders",
        "SELECT count(*) FROM visits",
    ] {
        let (got, want) = (count(&root, sql).await, count(&today_root, sql).await);
        // The first day's rows were written without the gained columns: they read as null.
        if sql.contains("promotion_name") {
            let second_day = count(
                &today_root,
                "SELECT count(*) FROM events WHERE promotion_name IS NOT NULL \
                 AND event_date <> DATE '2026-03-01'",
            )
            .await;
            assert_eq!(got, second_day, "{sql}");
            assert!(want > got, "{sql}: the first day had promotions");
        } else {
            assert_eq!(got, want, "{sql}");
        }
    }

    // Another engine reads the merged table: DuckDB through the deltalake package (PyPI, which
    // ./scripts/test installs), the old rows with nulls in the gained columns.
    let python = std::env::var("SHOPLAKE_TEST_PYTHON").expect(
        "SHOPLAKE_TEST_PYTHON is not set: run the tests through ./scripts/test, which installs \
         deltalake and DuckDB",
    );
    let script = r#"
import sys, duckdb, deltalake
events = deltalake.DeltaTable(sys.argv[1] + "/events").to_pyarrow_dataset()
print(duckdb.sql("select count(*), count(promotion_name), count(creative) from events").fetchall()[0])
"#;
    let out = std::process::Command::new(python)
        .args(["-c", script])
        .arg(&root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let promoted = count(&root, "SELECT count(promotion_name) FROM events").await;
    let creative = count(&root, "SELECT count(creative) FROM events").await;
    let all = count(&root, "SELECT count(*) FROM events").await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("({all}, {promoted}, {creative})")
    );

    // Every report answers over the evolved lake.
    let service = Arc::new(
        shoplake_query::QueryService::open(&root.display().to_string(), Default::default())
            .await
            .unwrap(),
    );
    let app = shoplake_query::router(service).unguarded();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let catalogue: serde_json::Value = reqwest::get(format!("http://{addr}/v1/reports"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for report in catalogue["reports"].as_array().unwrap() {
        let name = report["name"].as_str().unwrap();
        let period = if report["params"][0]["name"] == "from" {
            "from=2026-02-20&to=2026-03-31"
        } else {
            ""
        };
        let resp = reqwest::get(format!("http://{addr}/v1/reports/{name}?{period}"))
            .await
            .unwrap();
        let status = resp.status().as_u16();
        assert_eq!(status, 200, "{name}: {}", resp.text().await.unwrap());
    }
}

/// A column whose type changed cannot be merged into the files already written: compaction
/// refuses, names the column and says what to do, and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_whose_type_changed_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let today = dir.path().join("today");
    two_days_of_lake(&today).await;
    let older = dir.path().join("older");
    older_lake(
        &today.join("lake"),
        "2026-03-01",
        &older.join("lake"),
        &[("checkout_step", arrow::datatypes::DataType::Utf8)],
    )
    .await;
    let lake = two_days_staged(&older).await;
    let before = count(&older.join("lake"), "SELECT count(*) FROM events").await;
    let e = compact_all(&lake, &CompactOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("column checkout_step is string in the lake but integer")
            && e.contains("cannot be merged"),
        "{e}"
    );
    assert_eq!(
        count(&older.join("lake"), "SELECT count(*) FROM events").await,
        before
    );
}

/// Time travel: `table_at(table, version)` and `table_at(table, TIMESTAMP …)` read a table as it
/// stood then, through the same SQL as everything else; what cannot be read says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_is_read_as_it_stood_at_a_version_or_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let lake = two_days_of_lake(dir.path()).await;
    let root = dir.path().join("lake");
    let versions = lake
        .table("events")
        .await
        .unwrap()
        .unwrap()
        .version()
        .unwrap();
    assert!(
        versions >= 3,
        "several rounds, several versions: {versions}"
    );
    let now = count(&root, "SELECT count(*) FROM events").await;
    let at = |v: u64| format!("SELECT count(*) FROM table_at('events', {v})");
    // Version 0 created the table empty; each round after it appended.
    assert_eq!(count(&root, &at(0)).await, 0);
    let first = count(&root, &at(1)).await;
    assert!(first > 0 && first < now, "{first} of {now}");
    assert_eq!(count(&root, &at(versions)).await, now);
    let mut last = 0;
    for v in 0..=versions {
        let n = count(&root, &at(v)).await;
        assert!(
            n >= last,
            "version {v} holds fewer rows than the one before"
        );
        last = n;
    }
    // By time: now is the latest version, and the columns are the contract's.
    let stamp = Utc::now().format("%Y-%m-%d %H:%M:%S");
    assert_eq!(
        count(
            &root,
            &format!(
                "SELECT count(DISTINCT event_id) FROM table_at('events', TIMESTAMP '{stamp}') \
                 WHERE event_date >= DATE '2026-03-01'"
            )
        )
        .await,
        now
    );
    let service =
        shoplake_query::QueryService::open(&root.display().to_string(), Default::default())
            .await
            .unwrap();
    for (sql, says) in [
        (
            "SELECT count(*) FROM table_at('events', TIMESTAMP '2000-01-01 00:00:00')".to_owned(),
            "table events has no version from then",
        ),
        (at(versions + 5), "events"),
        (
            "SELECT * FROM table_at('customers', 1)".to_owned(),
            "no table named \"customers\"",
        ),
        (
            "SELECT * FROM table_at('events')".to_owned(),
            "table_at(table, version)",
        ),
    ] {
        let e = service.sql(&sql).await.unwrap_err().to_string();
        assert!(e.contains(says), "{sql}: {e}");
    }
}

//! Exactly once across workers and time (issue 20, item 1): a client's retry that reaches the
//! lake through a worker that never saw the first copy — a shard that moved to another worker, a
//! worker that lost its disk, an id past the stage's window — lands once. The stage's window
//! cannot see it; compaction's key index does (`shoplake_batch::keys`).

use std::sync::Arc;

use shoplake_batch::{CompactOptions, Lake, WriteOptions, compact_all, optimize::optimize};
use shoplake_ingest::{LocalLog, Record, StreamProducer};
use shoplake_transform::{Stage, StageConfig};

use crate::lake::count;
use crate::orders::{ago, event, one_item_order, with};

/// A worker: its own stream (the shard it holds) and its own state, staging into `lake`.
async fn worker(dir: &std::path::Path, name: &str, lake: &Lake, records: Vec<Record>) -> u64 {
    let stream = Arc::new(LocalLog::open(&dir.join(format!("{name}.redb")), 1).unwrap());
    stream.put_records(records).await.unwrap();
    let mut stage = Stage::open(
        stream,
        lake.store(),
        &dir.join(format!("{name}-state.redb")),
        StageConfig::default(),
    )
    .unwrap();
    stage.drain().await.unwrap().events
}

/// How many rows of `events` have `id`.
async fn copies(lake_root: &std::path::Path, id: &str) -> i64 {
    count(
        lake_root,
        &format!("SELECT count(*) AS n FROM events WHERE event_id = '{id}'"),
    )
    .await
}

/// An order_completed event `id`, as its client sends it: `occurred_at`, `sent_at`, and the
/// collector's `received_at`.
fn sent(id: &str, occurred_at: &str, sent_at: &str, received_at: &str) -> Record {
    let record = event(
        "order_completed",
        id,
        occurred_at,
        one_item_order(&format!("o-{id}")),
    );
    with(with(record, "sent_at", sent_at), "received_at", received_at)
}

/// Before the key index, compaction compared a staged row only with lake rows of the same
/// `received_at` range, and the retry (a new `received_at`) became a second row: this test
/// counted 2 copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_through_another_worker_lands_once_even_after_optimize_and_a_lost_index() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("lake");
    let lake = Lake::open(&root.display().to_string(), Default::default()).unwrap();
    let id = "00000000-0000-4000-8000-00000000e001";
    let occurred = ago(chrono::Duration::minutes(30));
    let first = sent(
        id,
        &occurred,
        &ago(chrono::Duration::minutes(29)),
        &ago(chrono::Duration::minutes(29)),
    );
    // Other events of the same day.
    let at = ago(chrono::Duration::minutes(28));
    let others: Vec<Record> = (0..50)
        .map(|i| {
            sent(
                &format!("00000000-0000-4000-8000-0000000{i:05}"),
                &at,
                &at,
                &at,
            )
        })
        .collect();
    let mut records = vec![first];
    records.extend(others);
    assert_eq!(worker(dir.path(), "a", &lake, records).await, 51);
    let r = compact_all(&lake, &CompactOptions::default())
        .await
        .unwrap();
    assert_eq!(r.events_written, 51, "{r:?}");
    assert_eq!(copies(&root, id).await, 1);

    // The client did not get the answer and retries ten minutes later: same event, a new send,
    // a new arrival. The shard moved: worker b, which never saw the first copy, reads it.
    let retry = sent(
        id,
        &occurred,
        &ago(chrono::Duration::minutes(19)),
        &ago(chrono::Duration::minutes(19)),
    );
    assert_eq!(worker(dir.path(), "b", &lake, vec![retry.clone()]).await, 1);
    let r = compact_all(&lake, &CompactOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (r.events_written, r.already_in_lake),
        (0, 1),
        "the retry is in the lake already: {r:?}"
    );
    assert_eq!(copies(&root, id).await, 1);

    // Optimize rewrites the day into new files, and the index folder is lost: the next retry,
    // through a third worker and a fresh process's lake handle, is still found.
    optimize(&lake, "events", &WriteOptions::default())
        .await
        .unwrap();
    std::fs::remove_dir_all(root.join("_index")).unwrap();
    let lake = Lake::open(&root.display().to_string(), Default::default()).unwrap();
    assert_eq!(worker(dir.path(), "c", &lake, vec![retry]).await, 1);
    let r = compact_all(&lake, &CompactOptions::default())
        .await
        .unwrap();
    assert_eq!((r.events_written, r.already_in_lake), (0, 1), "{r:?}");
    assert!(
        r.lake_files_read >= 1,
        "the optimized file was indexed from its key column: {r:?}"
    );
    assert_eq!(copies(&root, id).await, 1);
    assert_eq!(
        copies(&root, "00000000-0000-4000-8000-000000000007").await,
        1,
        "the other events are all there"
    );
}

/// A retry whose device clock moved by two seconds between the sends: the first copy's
/// corrected time is 0.5 s before midnight, the retry's 1.5 s after, so the two copies fall in
/// different `event_date` partitions. The lookup of the day either side finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_whose_corrected_time_crosses_midnight_lands_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("lake");
    let lake = Lake::open(&root.display().to_string(), Default::default()).unwrap();
    let midnight = (chrono::Utc::now() - chrono::Duration::days(3))
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let at = |ms: i64| {
        (midnight + chrono::Duration::milliseconds(ms))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let id = "00000000-0000-4000-8000-00000000e002";
    // Occurred 2 s before midnight on the device's clock; the first send 1 s later, received
    // 0.5 s after midnight: corrected time = received − (sent − occurred) = midnight − 0.5 s.
    let first = sent(id, &at(-2_000), &at(-1_000), &at(500));
    assert_eq!(worker(dir.path(), "a", &lake, vec![first]).await, 1);
    compact_all(&lake, &CompactOptions::default())
        .await
        .unwrap();
    // The retry: sent 59 s after occurred_at on the device's clock, received 60 s after the
    // first: corrected time = midnight + 60.5 s − 59 s = midnight + 1.5 s, the next day.
    let retry = sent(id, &at(-2_000), &at(57_000), &at(60_500));
    assert_eq!(worker(dir.path(), "b", &lake, vec![retry]).await, 1);
    let r = compact_all(&lake, &CompactOptions::default())
        .await
        .unwrap();
    assert_eq!((r.events_written, r.already_in_lake), (0, 1), "{r:?}");
    assert_eq!(copies(&root, id).await, 1);
}

//! The stage's time: a payload's `received_at` is trusted only up to a few minutes after the
//! stream got the record (issue 20).

use std::sync::Arc;

use serde_json::Value;
use shoplake_ingest::{LocalLog, Record, StreamProducer};

use crate::lake::lake_and_stage;
use crate::orders::{ago, event, one_item_order};

fn order(id: &str, at: &str, received_at: Option<&str>) -> Record {
    let mut record = event(
        "order_completed",
        id,
        at,
        one_item_order(&format!("o-{id}")),
    );
    if let Some(r) = received_at {
        let mut body: Value = serde_json::from_slice(&record.data).unwrap();
        body["received_at"] = Value::from(r);
        record.data = serde_json::to_vec(&body).unwrap().into();
    }
    record
}

/// One record stamped in 2099 used to move the stage's clock to 2099: the flush after it
/// expired the whole de-duplication window, and a client's retry of an event staged a moment
/// before came through as a second copy. Now that record is a bad row, and the retry is
/// recognised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_stamped_in_2099_neither_lands_nor_empties_the_dedup_window() {
    let dir = tempfile::tempdir().unwrap();
    let stream = Arc::new(LocalLog::open(&dir.path().join("stream.redb"), 1).unwrap());
    let now = ago(chrono::Duration::seconds(5));
    let first = "00000000-0000-4000-8000-000000000001";
    let future = "00000000-0000-4000-8000-000000000002";
    stream
        .put_records(vec![
            order(first, &now, None),
            order(future, "2099-01-01T00:00:00Z", Some("2099-01-01T00:00:01Z")),
        ])
        .await
        .unwrap();
    let (_lake, mut stage) = lake_and_stage(dir.path(), stream.clone());
    let drained = stage.drain().await.unwrap();
    assert_eq!((drained.events, drained.bad_rows), (1, 1), "{drained:?}");

    // The client retries the first event (same id, same payload).
    stream
        .put_records(vec![order(first, &now, None)])
        .await
        .unwrap();
    let drained = stage.drain().await.unwrap();
    assert_eq!(
        (drained.events, drained.duplicates),
        (0, 1),
        "the retry is a duplicate: {drained:?}"
    );
}

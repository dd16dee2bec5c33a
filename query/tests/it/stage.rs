//! The stage's time: a payload's `received_at` is trusted only up to a few minutes after the
//! stream got the record (issue 20).

use std::sync::Arc;

use serde_json::{Value, json};
use shoplake_batch::Lake;
use shoplake_ingest::{LocalLog, Record, StreamProducer};
use shoplake_transform::{Stage, StageConfig};

fn order(id: &str, at: &str, received_at: Option<&str>) -> Record {
    let mut body = json!({
        "event_id": id,
        "event_name": "order_completed",
        "occurred_at": at,
        "anonymous_id": "a-1",
        "properties": {"order_id": format!("o-{id}"), "total": 10.0, "revenue": 10.0,
                       "currency": "EUR",
                       "products": [{"product_id": "p-1", "price": 10.0, "quantity": 1}]},
    });
    if let Some(r) = received_at {
        body["received_at"] = Value::from(r);
    }
    Record {
        partition_key: "a-1".into(),
        data: serde_json::to_vec(&body).unwrap().into(),
    }
}

/// One record stamped in 2099 used to move the stage's clock to 2099: the flush after it
/// expired the whole de-duplication window, and a client's retry of an event staged a moment
/// before came through as a second copy. Now that record is a bad row, and the retry is
/// recognised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_stamped_in_2099_neither_lands_nor_empties_the_dedup_window() {
    let dir = tempfile::tempdir().unwrap();
    let stream = Arc::new(LocalLog::open(&dir.path().join("stream.redb"), 1).unwrap());
    let lake = Lake::open(
        &dir.path().join("lake").display().to_string(),
        Default::default(),
    )
    .unwrap();
    let now = (chrono::Utc::now() - chrono::Duration::seconds(5))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let first = "00000000-0000-4000-8000-000000000001";
    let future = "00000000-0000-4000-8000-000000000002";
    stream
        .put_records(vec![
            order(first, &now, None),
            order(future, "2099-01-01T00:00:00Z", Some("2099-01-01T00:00:01Z")),
        ])
        .await
        .unwrap();
    let mut stage = Stage::open(
        stream.clone(),
        lake.store(),
        &dir.path().join("stage.redb"),
        StageConfig::default(),
    )
    .unwrap();
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

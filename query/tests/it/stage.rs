//! The stage's time: a payload's `received_at` is trusted only up to a few minutes after the
//! stream got the record (issue 20).

use std::sync::Arc;

use shoplake_ingest::{
    LocalLog, ReadBatch, Record, ShardId, ShardInfo, ShardReader, StartPosition, StreamConsumer,
    StreamProducer,
};

use crate::lake::{count, lake_and_stage};
use crate::orders::{ago, event, one_item_order, with};

fn order(id: &str, at: &str, received_at: Option<&str>) -> Record {
    let record = event(
        "order_completed",
        id,
        at,
        one_item_order(&format!("o-{id}")),
    );
    match received_at {
        Some(r) => with(record, "received_at", r),
        None => record,
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

/// The embedded log, read as if the stream's servers stamped arrivals `offset` microseconds
/// off: their clock jumped while the test sets the offset.
struct JumpingClock {
    log: Arc<LocalLog>,
    offset: Arc<std::sync::atomic::AtomicI64>,
}

struct JumpingReader {
    inner: Box<dyn ShardReader>,
    offset: Arc<std::sync::atomic::AtomicI64>,
}

#[async_trait::async_trait]
impl StreamConsumer for JumpingClock {
    fn name(&self) -> &str {
        self.log.name()
    }
    async fn list_shards(&self) -> shoplake_ingest::Result<Vec<ShardInfo>> {
        self.log.list_shards().await
    }
    async fn open_shard(
        &self,
        shard: &ShardId,
        from: StartPosition,
    ) -> shoplake_ingest::Result<Box<dyn ShardReader>> {
        Ok(Box::new(JumpingReader {
            inner: self.log.open_shard(shard, from).await?,
            offset: self.offset.clone(),
        }))
    }
}

#[async_trait::async_trait]
impl ShardReader for JumpingReader {
    async fn next_batch(&mut self, max: usize) -> shoplake_ingest::Result<ReadBatch> {
        let mut batch = self.inner.next_batch(max).await?;
        let offset = self.offset.load(std::sync::atomic::Ordering::SeqCst);
        for r in &mut batch.records {
            r.arrival_micros += offset;
        }
        Ok(batch)
    }
}

/// A shopper's order event `id` sent now (device time = server time), without a received_at.
fn view(id: &str) -> Record {
    let now = ago(chrono::Duration::zero());
    with(order(id, &now, None), "sent_at", now)
}

/// The stream's servers' clock jumps a year ahead for one record and comes back. Before the
/// stage's clock (`transform::clock`), that record moved the stage's time a year ahead: the flush
/// after it expired every open session (the shopper's next event began a new visit) and the
/// de-duplication window; now the shopper's visit goes on and a retry is still recognised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jump_of_the_servers_clock_neither_ends_open_visits_nor_empties_the_dedup_window() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(LocalLog::open(&dir.path().join("stream.redb"), 1).unwrap());
    let offset = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let stream = Arc::new(JumpingClock {
        log: log.clone(),
        offset: offset.clone(),
    });
    let lake = shoplake_batch::Lake::open(
        &dir.path().join("lake").display().to_string(),
        Default::default(),
    )
    .unwrap();
    let config = shoplake_transform::StageConfig::default();
    let mut stage = shoplake_transform::Stage::open(
        stream,
        lake.store(),
        &dir.path().join("stage.redb"),
        config,
    )
    .unwrap();
    let (first, jumped, next) = (
        "00000000-0000-4000-8000-00000000c001",
        "00000000-0000-4000-8000-00000000c002",
        "00000000-0000-4000-8000-00000000c003",
    );
    log.put_records(vec![view(first)]).await.unwrap();
    assert_eq!(stage.drain().await.unwrap().events, 1);

    // One record stamped while the servers' clock was a year ahead (its corrected event time
    // follows the server's clock, so it is valid), a flush, and the clock comes back.
    offset.store(
        365 * 24 * 3_600_000_000,
        std::sync::atomic::Ordering::SeqCst,
    );
    // Another shopper's.
    let other = with(with(view(jumped), "anonymous_id", "a-2"), "user_id", "u-2");
    log.put_records(vec![other]).await.unwrap();
    stage.drain().await.unwrap();
    offset.store(0, std::sync::atomic::Ordering::SeqCst);
    // The window is walked every 100th flush.
    for _ in 0..100 {
        stage.flush().await.unwrap();
    }

    // The shopper's next event, and the client's retry of the first.
    log.put_records(vec![view(next), view(first)])
        .await
        .unwrap();
    let drained = stage.drain().await.unwrap();
    assert_eq!(drained.events, 1, "the retry is a duplicate: {drained:?}");
    shoplake_batch::compact_all(&lake, &Default::default())
        .await
        .unwrap();
    let visits = crate::lake::count(
        &dir.path().join("lake"),
        &format!(
            "SELECT count(DISTINCT session_id) AS n FROM events WHERE event_id IN ('{first}', '{next}')"
        ),
    )
    .await;
    assert_eq!(visits, 1, "the shopper's visit went on through the jump");
}

/// The same event id with another payload used to be counted as a duplicate and dropped: the
/// second order vanished without a trace (`drained.duplicates` was 1 and `bad_rows` empty). Now
/// it is a bad row `conflicting_duplicate` with its bytes, also after the stage restarts from its
/// state; a retry that differs only in how it travelled (`sent_at`, `received_at`) is still a
/// plain duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_id_with_another_payload_is_a_bad_row_and_a_retry_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let stream = Arc::new(LocalLog::open(&dir.path().join("stream.redb"), 1).unwrap());
    let id = "00000000-0000-4000-8000-0000000000c1";
    let at = ago(chrono::Duration::minutes(3));
    let first = with(order(id, &at, None), "sent_at", at.clone());
    let retry = with(first.clone(), "sent_at", ago(chrono::Duration::minutes(1)));
    let other = event("order_completed", id, &at, one_item_order("o-reused"));
    stream
        .put_records(vec![first, retry, other.clone()])
        .await
        .unwrap();
    let (lake, mut stage) = lake_and_stage(dir.path(), stream.clone());
    let drained = stage.drain().await.unwrap();
    assert_eq!(
        (drained.events, drained.duplicates, drained.bad_rows),
        (1, 1, 1),
        "{drained:?}"
    );
    drop(stage);

    // A fresh process: the fingerprints come back with the window.
    let other_again = with(other, "received_at", ago(chrono::Duration::zero()));
    stream.put_records(vec![other_again]).await.unwrap();
    let (_, mut stage) = lake_and_stage(dir.path(), stream.clone());
    let drained = stage.drain().await.unwrap();
    assert_eq!(
        (drained.events, drained.duplicates, drained.bad_rows),
        (0, 0, 1),
        "{drained:?}"
    );
    drop(stage);

    shoplake_batch::compact_all(&lake, &Default::default())
        .await
        .unwrap();
    let root = dir.path().join("lake");
    assert_eq!(
        count(
            &root,
            &format!("SELECT count(*) FROM events WHERE event_id = '{id}' AND order_id = 'o-{id}'")
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &root,
            &format!(
                "SELECT count(*) FROM bad_rows WHERE reason = 'conflicting_duplicate' \
                 AND stage = 'dedup' AND event_id = '{id}' \
                 AND CAST(raw AS VARCHAR) LIKE '%o-reused%'"
            )
        )
        .await,
        2
    );
}

/// A live engine with a bug: it panics on one event id, and counts the others.
struct PanicsOn(&'static str, std::sync::atomic::AtomicU64);

impl shoplake_transform::Observer for PanicsOn {
    fn reset(&self) {}
    fn restore(
        &self,
        _: shoplake_transform::observe::SavedEntries,
    ) -> Result<usize, shoplake_transform::observe::ObserverError> {
        Ok(0)
    }
    fn observe(&self, event: &shoplake_events::ValidEvent<'_>, _: &str) {
        assert_ne!(event.event_id(), self.0, "a bug in a live engine");
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    fn replay(
        &self,
        _: &arrow::array::RecordBatch,
    ) -> Result<(usize, usize), shoplake_transform::observe::ObserverError> {
        Ok((0, 0))
    }
    fn take_rows(
        &self,
        _: i64,
    ) -> Result<
        Vec<shoplake_transform::observe::StagedRows>,
        shoplake_transform::observe::ObserverError,
    > {
        Ok(Vec::new())
    }
    fn take_dirty(&self, _: u64) -> Vec<(String, Option<Vec<u8>>)> {
        Vec::new()
    }
}

/// A live engine that panicked on an event used to take the stage down with it, at that record
/// again after every restart. Now the event lands in the lake, the engine goes on with the next
/// ones, and the panic is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_engine_that_panics_on_an_event_neither_stops_the_stage_nor_loses_the_event() {
    let dir = tempfile::tempdir().unwrap();
    let stream = Arc::new(LocalLog::open(&dir.path().join("stream.redb"), 1).unwrap());
    let ids = [
        "00000000-0000-4000-8000-0000000000d1",
        "00000000-0000-4000-8000-0000000000d2",
        "00000000-0000-4000-8000-0000000000d3",
    ];
    stream
        .put_records(ids.iter().map(|id| view(id)).collect())
        .await
        .unwrap();
    let (lake, stage) = lake_and_stage(dir.path(), stream);
    let engine = Arc::new(PanicsOn(ids[1], Default::default()));
    let (mut stage, _) = stage.with_observer(engine.clone()).unwrap();
    let drained = stage.drain().await.unwrap();
    assert_eq!(drained.events, 3, "{drained:?}");
    assert_eq!(engine.1.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(
        stage
            .metrics()
            .live_panics
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    drop(stage);
    shoplake_batch::compact_all(&lake, &Default::default())
        .await
        .unwrap();
    assert_eq!(
        count(
            &dir.path().join("lake"),
            "SELECT count(*) FROM events WHERE event_name = 'order_completed'"
        )
        .await,
        3
    );
}

//! The local log: the conformance suite, plus what only an embedded log must do; the Kinesis
//! backend and the Firehose client against the emulators (`kinesis`, `firehose`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod firehose;
mod kinesis;
mod proxy;

use std::sync::Arc;

use bytes::Bytes;
use shoplake_ingest::{
    LocalLog, Record, StartPosition, StreamConsumer, StreamProducer, conformance,
};

/// The endpoint of the emulator `./scripts/test` started and named in `var`, or None when the
/// caller explicitly skips the emulators (`SHOPLAKE_SKIP_EMULATORS=1`).
fn endpoint(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if std::env::var("SHOPLAKE_SKIP_EMULATORS").as_deref() == Ok("1") => {
            eprintln!("skipped: {var} is not set and SHOPLAKE_SKIP_EMULATORS=1");
            None
        }
        _ => panic!(
            "{var} is not set: the Kinesis and Firehose tests talk to AWS emulators that \
             ./scripts/test installs and starts; run ./scripts/test (or set \
             SHOPLAKE_SKIP_EMULATORS=1 to skip these tests)"
        ),
    }
}

fn log(dir: &tempfile::TempDir, shards: u32) -> LocalLog {
    LocalLog::open(&dir.path().join("events.redb"), shards).unwrap()
}

#[tokio::test]
async fn conformance_ordering_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let l = log(&dir, 4);
    conformance::ordering_per_key(&l, &l).await;
}

#[tokio::test]
async fn conformance_resume_after_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let l = log(&dir, 3);
    conformance::resume_after_checkpoint(&l, &l).await;
}

#[tokio::test]
async fn conformance_at_least_once_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let l = log(&dir, 2);
    conformance::at_least_once_across_restart(&l, &l).await;
}

#[tokio::test]
async fn conformance_latest_and_at_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let l = log(&dir, 2);
    conformance::latest_and_at_timestamp(&l, &l).await;
}

#[tokio::test]
async fn records_survive_a_reopen_and_sequences_continue() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let l = log(&dir, 2);
        l.put_records(vec![Record {
            partition_key: "k".into(),
            data: Bytes::from("one"),
        }])
        .await
        .unwrap()
    };
    let l = log(&dir, 8); // the stored shard count wins
    assert_eq!(l.shards(), 2);
    let second = l
        .put_records(vec![Record {
            partition_key: "k".into(),
            data: Bytes::from("two"),
        }])
        .await
        .unwrap();
    assert_eq!(first[0].shard_id, second[0].shard_id);
    assert!(second[0].sequence_number > first[0].sequence_number);
    let mut r = l
        .open_shard(&first[0].shard_id, StartPosition::TrimHorizon)
        .await
        .unwrap();
    let b = r.next_batch(10).await.unwrap();
    assert_eq!(
        b.records.iter().map(|r| r.data.clone()).collect::<Vec<_>>(),
        vec![Bytes::from("one"), Bytes::from("two")]
    );
}

#[tokio::test]
async fn limits_are_refused_with_the_offending_value() {
    let dir = tempfile::tempdir().unwrap();
    let l = log(&dir, 1);
    let rec = |k: &str, n: usize| Record {
        partition_key: k.into(),
        data: Bytes::from(vec![b'x'; n]),
    };
    let err = l.put_records(vec![]).await.unwrap_err().to_string();
    assert!(err.contains("1 to 500 records, got 0"), "{err}");
    let err = l
        .put_records((0..501).map(|_| rec("k", 1)).collect())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("got 501"), "{err}");
    let err = l
        .put_records(vec![rec(&"k".repeat(257), 1)])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("partition key") && err.contains("257"),
        "{err}"
    );
    let err = l.put_records(vec![rec("k", 2 << 20)]).await.unwrap_err();
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("limit is 1048576"), "{err}");
    let err = l
        .put_records((0..6).map(|_| rec("k", (1 << 20) - 1)).collect())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("5242880"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_producers_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let l = Arc::new(log(&dir, 4));
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let l = l.clone();
            tokio::spawn(async move {
                for b in 0..20 {
                    let batch = (0..25)
                        .map(|i| Record {
                            partition_key: format!("p{t}-{i}"),
                            data: Bytes::from(format!("{t}/{b}/{i}")),
                        })
                        .collect();
                    l.put_records(batch).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let mut n = 0;
    let mut distinct = std::collections::HashSet::new();
    for s in l.list_shards().await.unwrap() {
        let mut r = l
            .open_shard(&s.shard_id, StartPosition::TrimHorizon)
            .await
            .unwrap();
        loop {
            let b = r.next_batch(1000).await.unwrap();
            if b.records.is_empty() {
                break;
            }
            n += b.records.len();
            distinct.extend(b.records.into_iter().map(|r| r.data));
        }
    }
    assert_eq!(n, 8 * 20 * 25);
    assert_eq!(distinct.len(), n);
}

#[tokio::test]
async fn trim_drops_old_records_only() {
    let dir = tempfile::tempdir().unwrap();
    let l = log(&dir, 1);
    l.put_records(vec![Record {
        partition_key: "k".into(),
        data: Bytes::from("old"),
    }])
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let cut = chrono::Utc::now().timestamp_micros();
    l.put_records(vec![Record {
        partition_key: "k".into(),
        data: Bytes::from("new"),
    }])
    .await
    .unwrap();
    assert_eq!(l.trim_older_than(cut).unwrap(), 1);
    let shard = l.list_shards().await.unwrap().remove(0).shard_id;
    let b = l
        .open_shard(&shard, StartPosition::TrimHorizon)
        .await
        .unwrap()
        .next_batch(10)
        .await
        .unwrap();
    assert_eq!(b.records.len(), 1);
    assert_eq!(b.records[0].data, Bytes::from("new"));
    // Sequence numbers are never reused after a trim.
    l.trim_older_than(i64::MAX).unwrap();
    let r = l
        .put_records(vec![Record {
            partition_key: "k".into(),
            data: Bytes::from("later"),
        }])
        .await
        .unwrap();
    assert_eq!(r[0].sequence_number.as_u64(), Some(3));
}

/// A checkpoint from another log (the stream's folder replaced, the stage's state kept) is refused
/// with an error that says so, rather than waiting in silence for a sequence that may never come.
#[tokio::test]
async fn a_checkpoint_past_the_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let l = log(&dir, 1);
    let put = l
        .put_records(vec![Record {
            partition_key: "k".into(),
            data: Bytes::from("one"),
        }])
        .await
        .unwrap();
    let shard = put[0].shard_id.clone();
    // Resuming after the last record written is fine; after a sequence it never reached is not.
    l.open_shard(
        &shard,
        StartPosition::AfterSequenceNumber(put[0].sequence_number.clone()),
    )
    .await
    .unwrap();
    let far = shoplake_ingest::SequenceNumber::from_u64(5_000);
    let err = l
        .open_shard(&shard, StartPosition::AfterSequenceNumber(far))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("resume after sequence 5000") && err.contains("only reached 1"),
        "{err}"
    );
}

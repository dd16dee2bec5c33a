//! The conformance suite every stream backend runs: the semantics the stage relies on. Each
//! function panics with a message naming the broken guarantee.
//!
//! A failed expectation is a broken guarantee, so the suite panics (it only runs inside tests).
#![allow(clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use crate::stream::*;

fn record(key: &str, i: usize) -> Record {
    Record {
        partition_key: key.to_owned(),
        data: Bytes::from(format!("{key}:{i}")),
    }
}

async fn read_all<C: StreamConsumer + ?Sized>(
    consumer: &C,
    from: impl Fn(&ShardId) -> StartPosition,
) -> BTreeMap<ShardId, Vec<StreamRecord>> {
    let mut out = BTreeMap::new();
    for shard in consumer.list_shards().await.expect("list shards") {
        let mut reader = consumer
            .open_shard(&shard.shard_id, from(&shard.shard_id))
            .await
            .expect("open shard");
        let mut records = Vec::new();
        loop {
            let batch = reader.next_batch(97).await.expect("read");
            if batch.records.is_empty() {
                break;
            }
            records.extend(batch.records);
        }
        out.insert(shard.shard_id, records);
    }
    out
}

/// Puts `keys × per_key` records in interleaved calls; returns them by key in put order.
pub async fn put_interleaved<P: StreamProducer + ?Sized>(
    producer: &P,
    keys: usize,
    per_key: usize,
) -> HashMap<String, Vec<Bytes>> {
    let mut expected: HashMap<String, Vec<Bytes>> = HashMap::new();
    let mut batch = Vec::new();
    for i in 0..per_key {
        for k in 0..keys {
            let r = record(&format!("key-{k}"), i);
            expected
                .entry(r.partition_key.clone())
                .or_default()
                .push(r.data.clone());
            batch.push(r);
            if batch.len() == 50 {
                let results = producer
                    .put_records(std::mem::take(&mut batch))
                    .await
                    .expect("put");
                assert_eq!(results.len(), 50, "one result per record");
            }
        }
    }
    if !batch.is_empty() {
        producer.put_records(batch).await.expect("put");
    }
    expected
}

/// Every record is read exactly once from TrimHorizon, in put order per key, each key in one shard.
pub async fn ordering_per_key<P: StreamProducer + ?Sized, C: StreamConsumer + ?Sized>(
    producer: &P,
    consumer: &C,
) {
    let expected = put_interleaved(producer, 20, 15).await;
    let read = read_all(consumer, |_| StartPosition::TrimHorizon).await;
    let mut by_key: HashMap<String, Vec<Bytes>> = HashMap::new();
    let mut shard_of: HashMap<String, ShardId> = HashMap::new();
    for (shard, records) in &read {
        let mut last: Option<&SequenceNumber> = None;
        for r in records {
            assert!(
                last.is_none_or(|l| *l < r.sequence_number),
                "sequence numbers increase within shard {shard}"
            );
            last = Some(&r.sequence_number);
            let owner = shard_of
                .entry(r.partition_key.clone())
                .or_insert_with(|| shard.clone());
            assert_eq!(owner, shard, "key {} is in one shard", r.partition_key);
            by_key
                .entry(r.partition_key.clone())
                .or_default()
                .push(r.data.clone());
        }
    }
    assert_eq!(
        by_key, expected,
        "every record exactly once, in order per key"
    );
}

/// A reader opened after a checkpoint continues exactly after it.
pub async fn resume_after_checkpoint<P: StreamProducer + ?Sized, C: StreamConsumer + ?Sized>(
    producer: &P,
    consumer: &C,
) {
    put_interleaved(producer, 5, 40).await;
    let all = read_all(consumer, |_| StartPosition::TrimHorizon).await;
    let checkpoints: HashMap<ShardId, SequenceNumber> = all
        .iter()
        .filter(|(_, r)| r.len() > 3)
        .map(|(s, r)| (s.clone(), r[r.len() / 2].sequence_number.clone()))
        .collect();
    assert!(!checkpoints.is_empty());
    let resumed = read_all(consumer, |s| match checkpoints.get(s) {
        Some(seq) => StartPosition::AfterSequenceNumber(seq.clone()),
        None => StartPosition::TrimHorizon,
    })
    .await;
    for (shard, records) in &all {
        let expected: Vec<_> = match checkpoints.get(shard) {
            Some(seq) => records
                .iter()
                .filter(|r| r.sequence_number > *seq)
                .collect(),
            None => records.iter().collect(),
        };
        let got: Vec<_> = resumed[shard].iter().collect();
        assert_eq!(
            got, expected,
            "shard {shard} resumes right after its checkpoint"
        );
    }
}

/// A consumer that stops without checkpointing what it read, and restarts from its last
/// checkpoint, misses nothing (it may see some records twice).
pub async fn at_least_once_across_restart<
    P: StreamProducer + ?Sized,
    C: StreamConsumer + ?Sized,
>(
    producer: &P,
    consumer: &C,
) {
    let expected = put_interleaved(producer, 8, 25).await;
    let total: usize = expected.values().map(Vec::len).sum();
    let mut seen: HashMap<Bytes, usize> = HashMap::new();
    for shard in consumer.list_shards().await.expect("list") {
        // First run: read two batches, checkpoint after the first only, then "crash".
        let mut reader = consumer
            .open_shard(&shard.shard_id, StartPosition::TrimHorizon)
            .await
            .expect("open");
        let first = reader.next_batch(10).await.expect("read");
        let second = reader.next_batch(10).await.expect("read");
        for r in first.records.iter().chain(&second.records) {
            *seen.entry(r.data.clone()).or_default() += 1;
        }
        drop(reader);
        let from = match first.records.last() {
            Some(r) => StartPosition::AfterSequenceNumber(r.sequence_number.clone()),
            None => StartPosition::TrimHorizon,
        };
        let mut reader = consumer
            .open_shard(&shard.shard_id, from)
            .await
            .expect("reopen");
        loop {
            let b = reader.next_batch(50).await.expect("read");
            if b.records.is_empty() {
                break;
            }
            for r in b.records {
                *seen.entry(r.data).or_default() += 1;
            }
        }
    }
    assert_eq!(seen.len(), total, "no record missing after the restart");
    assert!(
        seen.values().any(|n| *n == 2),
        "records after the checkpoint were delivered again"
    );
}

/// Latest sees only later records; AtTimestamp starts at the first record at or after the time.
pub async fn latest_and_at_timestamp<P: StreamProducer + ?Sized, C: StreamConsumer + ?Sized>(
    producer: &P,
    consumer: &C,
) {
    put_interleaved(producer, 1, 5).await;
    let shard = {
        let r = producer
            .put_records(vec![record("key-0", 99)])
            .await
            .expect("put");
        r[0].shard_id.clone()
    };
    let mut latest = consumer
        .open_shard(&shard, StartPosition::Latest)
        .await
        .expect("open");
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let cut = chrono::Utc::now().timestamp_micros();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    producer
        .put_records(vec![record("key-0", 100), record("key-0", 101)])
        .await
        .expect("put");
    let b = latest.next_batch(100).await.expect("read");
    let data: Vec<_> = b.records.iter().map(|r| r.data.clone()).collect();
    assert_eq!(
        data,
        vec![Bytes::from("key-0:100"), Bytes::from("key-0:101")],
        "Latest reads only new records"
    );
    let mut at = consumer
        .open_shard(&shard, StartPosition::AtTimestamp(cut))
        .await
        .expect("open");
    let b = at.next_batch(100).await.expect("read");
    let data: Vec<_> = b.records.iter().map(|r| r.data.clone()).collect();
    assert_eq!(
        data,
        vec![Bytes::from("key-0:100"), Bytes::from("key-0:101")],
        "AtTimestamp starts at the cut"
    );
}

//! ListShards, shard iterators, and the GetRecords loop of one shard.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Instant;

use async_trait::async_trait;
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::{Shard, ShardIteratorType};
use tracing::{debug, warn};

use super::KinesisStream;
use super::aggregation::deaggregate;
use crate::stream::*;
use crate::{Error, Result};

/// Empty GetRecords answers taken in a row, while the answer says the reader is behind (Kinesis
/// can answer empty pages inside a shard), before `next_batch` returns empty.
const MAX_EMPTY_CALLS_WHILE_BEHIND: u32 = 10;

/// Fewest records one GetRecords call asks for.
const MIN_GET_RECORDS_LIMIT: usize = 1000;

fn micros_of(t: &DateTime) -> i64 {
    t.secs() * 1_000_000 + i64::from(t.subsec_nanos() / 1_000)
}

fn date_time_of(micros: i64) -> DateTime {
    DateTime::from_secs_and_nanos(
        micros.div_euclid(1_000_000),
        (micros.rem_euclid(1_000_000) * 1_000) as u32,
    )
}

impl KinesisStream {
    /// Every shard of the stream, open and closed, through as many ListShards pages as it takes.
    pub(super) async fn list_shards_raw(&self) -> Result<Vec<Shard>> {
        let client = self.client().await;
        let mut shards = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .inner
                .call("ListShards", || {
                    let request = client.list_shards();
                    // A page token stands for the stream: the two cannot go together.
                    match &token {
                        Some(t) => request.next_token(t),
                        None => request.stream_name(&self.inner.name),
                    }
                    .max_results(1000)
                    .send()
                })
                .await?;
            shards.extend_from_slice(page.shards());
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                return Ok(shards);
            }
        }
    }

    /// A reader of `shard` from `from` (the concrete type of what `open_shard` returns).
    pub async fn open_reader(
        &self,
        shard: &ShardId,
        from: StartPosition,
    ) -> Result<KinesisShardReader> {
        let opened_at = chrono::Utc::now().timestamp_micros();
        let (after, start) = match from {
            StartPosition::AfterSequenceNumber(seq) => (Some(seq), StartPosition::TrimHorizon),
            other => (None, other),
        };
        let mut reader = KinesisShardReader {
            stream: self.clone(),
            shard: shard.clone(),
            iterator: None,
            start,
            after,
            skip_through: None,
            buffer: VecDeque::new(),
            last_call: None,
            ended: false,
            lag: None,
        };
        reader.reopen().await?;
        // Re-opening a LATEST reader that has returned nothing must not skip what arrived since.
        if reader.start == StartPosition::Latest {
            reader.start = StartPosition::AtTimestamp(opened_at);
        }
        Ok(reader)
    }
}

#[async_trait]
impl StreamConsumer for KinesisStream {
    fn name(&self) -> &str {
        &self.inner.name
    }

    async fn list_shards(&self) -> Result<Vec<ShardInfo>> {
        Ok(self
            .list_shards_raw()
            .await?
            .into_iter()
            .map(|s| ShardInfo {
                parent_shard_ids: s
                    .parent_shard_id()
                    .into_iter()
                    .chain(s.adjacent_parent_shard_id())
                    .map(|p| ShardId(p.to_owned()))
                    .collect(),
                closed: s
                    .sequence_number_range()
                    .and_then(|r| r.ending_sequence_number())
                    .is_some(),
                shard_id: ShardId(s.shard_id().to_owned()),
            })
            .collect())
    }

    async fn open_shard(
        &self,
        shard: &ShardId,
        from: StartPosition,
    ) -> Result<Box<dyn ShardReader>> {
        Ok(Box::new(self.open_reader(shard, from).await?))
    }
}

/// Reads one shard: GetRecords at most every `get_records_interval`, de-aggregating KPL
/// records; holds nothing but its position, so a lease layer can hand the shard to another worker
/// at any returned record.
pub struct KinesisShardReader {
    stream: KinesisStream,
    shard: ShardId,
    /// None before the first open and after the end of a closed shard.
    iterator: Option<String>,
    /// Where to start when no record has been returned (and no checkpoint given).
    start: StartPosition,
    /// The last record returned (or the checkpoint opened after): re-opening starts after it.
    after: Option<SequenceNumber>,
    /// After re-opening AT an aggregate's sequence number: its records up to this index were
    /// returned already.
    skip_through: Option<(String, u64)>,
    /// De-aggregated records not yet returned (an aggregate can hold more than `max`).
    buffer: VecDeque<StreamRecord>,
    last_call: Option<Instant>,
    /// GetRecords answered no next iterator: the shard is closed and read to its end.
    ended: bool,
    lag: Option<i64>,
}

impl std::fmt::Debug for KinesisShardReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KinesisShardReader")
            .field("stream", &self.stream.name())
            .field("shard", &self.shard)
            .field("after", &self.after)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl KinesisShardReader {
    pub fn shard_id(&self) -> &ShardId {
        &self.shard
    }

    /// The current shard iterator (None before opening and at the end of a closed shard).
    pub fn shard_iterator(&self) -> Option<&str> {
        self.iterator.as_deref()
    }

    /// Replaces the shard iterator: for tests that hand the reader an iterator that has expired.
    #[doc(hidden)]
    pub fn replace_shard_iterator(&mut self, iterator: String) {
        self.iterator = Some(iterator);
    }

    /// Gets a new iterator just after the last returned record (or at the start position).
    async fn reopen(&mut self) -> Result<()> {
        let inner = &self.stream.inner;
        let client = self.stream.client().await;
        let (kind, sequence, timestamp, skip) = match (&self.after, &self.start) {
            (Some(seq), _) => match seq.parts() {
                (s, None) => (
                    ShardIteratorType::AfterSequenceNumber,
                    Some(s.to_owned()),
                    None,
                    None,
                ),
                (s, Some(k)) => (
                    ShardIteratorType::AtSequenceNumber,
                    Some(s.to_owned()),
                    None,
                    Some((s.to_owned(), k)),
                ),
            },
            (None, StartPosition::TrimHorizon) => {
                (ShardIteratorType::TrimHorizon, None, None, None)
            }
            (None, StartPosition::Latest) => (ShardIteratorType::Latest, None, None, None),
            (None, StartPosition::AtTimestamp(t)) => (
                ShardIteratorType::AtTimestamp,
                None,
                Some(date_time_of(*t)),
                None,
            ),
            (None, StartPosition::AfterSequenceNumber(s)) => (
                ShardIteratorType::AfterSequenceNumber,
                Some(s.0.clone()),
                None,
                None,
            ),
        };
        let out = inner
            .call("GetShardIterator", || {
                client
                    .get_shard_iterator()
                    .stream_name(&inner.name)
                    .shard_id(&self.shard.0)
                    .shard_iterator_type(kind.clone())
                    .set_starting_sequence_number(sequence.clone())
                    .set_timestamp(timestamp)
                    .send()
            })
            .await
            .map_err(|e| match e {
                Error::Kinesis { code: Some(c), .. } if c == "ResourceNotFoundException" => {
                    Error::UnknownShard {
                        stream: inner.name.clone(),
                        shard_id: self.shard.0.clone(),
                    }
                }
                other => other,
            })?;
        debug!(stream = %inner.name, shard_id = %self.shard, ?kind, ?sequence, "shard iterator opened");
        self.iterator = out.shard_iterator().map(str::to_owned);
        self.skip_through = skip;
        if self.iterator.is_none() {
            self.ended = true;
        }
        Ok(())
    }

    /// Up to `max` buffered records, with the end of the shard when they are its last.
    fn take(&mut self, max: usize) -> ReadBatch {
        let n = max.max(1).min(self.buffer.len());
        let records: Vec<StreamRecord> = self.buffer.drain(..n).collect();
        if let Some(last) = records.last() {
            self.after = Some(last.sequence_number.clone());
        }
        self.stream
            .inner
            .metrics
            .records_read
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        ReadBatch {
            records,
            end_of_shard: self.ended && self.buffer.is_empty(),
            millis_behind_latest: self.lag,
        }
    }

    /// Appends what one GetRecords returned, de-aggregated, minus what a checkpoint inside an
    /// aggregate already covered.
    fn buffer_records(&mut self, records: Vec<aws_sdk_kinesis::types::Record>) {
        for r in records {
            let arrival = r
                .approximate_arrival_timestamp
                .as_ref()
                .map(micros_of)
                .unwrap_or_default();
            let data = r.data.into_bytes();
            let skip = self.skip_through.take();
            match deaggregate(&data) {
                Some(users) => {
                    let skip_to = match &skip {
                        Some((s, k)) if *s == r.sequence_number => Some(*k),
                        _ => None,
                    };
                    for (k, u) in users.into_iter().enumerate() {
                        if skip_to.is_some_and(|last| k as u64 <= last) {
                            continue;
                        }
                        self.buffer.push_back(StreamRecord {
                            shard_id: self.shard.clone(),
                            sequence_number: SequenceNumber::in_aggregate(
                                &r.sequence_number,
                                k as u64,
                            ),
                            partition_key: u.partition_key,
                            data: u.data,
                            arrival_micros: arrival,
                        });
                    }
                }
                None => {
                    // AT a checkpoint's sequence number that is not an aggregate: it was returned.
                    if skip.is_some_and(|(s, _)| s == r.sequence_number) {
                        continue;
                    }
                    self.buffer.push_back(StreamRecord {
                        shard_id: self.shard.clone(),
                        sequence_number: SequenceNumber(r.sequence_number),
                        partition_key: r.partition_key.unwrap_or_default(),
                        data,
                        arrival_micros: arrival,
                    });
                }
            }
        }
    }
}

#[async_trait]
impl ShardReader for KinesisShardReader {
    async fn next_batch(&mut self, max: usize) -> Result<ReadBatch> {
        if !self.buffer.is_empty() || self.ended {
            return Ok(self.take(max));
        }
        let interval = self.stream.inner.config.get_records_interval;
        // Calls are few (5/s per shard), so each asks for a good number of records; what exceeds
        // `max` waits in the buffer for the next call of `next_batch`.
        let limit = max
            .max(MIN_GET_RECORDS_LIMIT)
            .min(self.stream.inner.config.get_records_limit);
        let mut empty_calls = 0;
        let mut expired = 0;
        loop {
            if let Some(t) = self.last_call {
                tokio::time::sleep_until((t + interval).into()).await;
            }
            self.last_call = Some(Instant::now());
            let Some(iterator) = self.iterator.clone() else {
                self.reopen().await?;
                if self.ended {
                    return Ok(self.take(max));
                }
                continue;
            };
            let inner = &self.stream.inner;
            let client = self.stream.client().await;
            inner
                .metrics
                .get_records_calls
                .fetch_add(1, Ordering::Relaxed);
            let out = inner
                .call("GetRecords", || {
                    client
                        .get_records()
                        .shard_iterator(&iterator)
                        .limit(limit as i32)
                        .send()
                })
                .await;
            let out = match out {
                Ok(out) => out,
                Err(Error::Kinesis { code: Some(c), .. })
                    if c == "ExpiredIteratorException" && expired < 3 =>
                {
                    // Iterators live 5 minutes: start again right after the last record returned.
                    expired += 1;
                    inner
                        .metrics
                        .iterators_expired
                        .fetch_add(1, Ordering::Relaxed);
                    warn!(stream = %inner.name, shard_id = %self.shard, after = ?self.after, "shard iterator expired; re-opening after the last record read");
                    self.iterator = None;
                    continue;
                }
                Err(e) => return Err(e),
            };
            self.lag = out.millis_behind_latest;
            self.iterator = out.next_shard_iterator;
            if self.iterator.is_none() {
                self.ended = true;
                inner.metrics.set_lag(&self.shard.0, None);
            } else {
                inner.metrics.set_lag(&self.shard.0, self.lag);
            }
            self.buffer_records(out.records);
            if !self.buffer.is_empty() || self.ended {
                return Ok(self.take(max));
            }
            if self.lag.unwrap_or(0) > 0 && empty_calls < MAX_EMPTY_CALLS_WHILE_BEHIND {
                empty_calls += 1;
                continue;
            }
            return Ok(ReadBatch {
                records: Vec::new(),
                end_of_shard: false,
                millis_behind_latest: self.lag,
            });
        }
    }
}

//! The events stream, as both backends see it: producers put records that a partition key routes to
//! a shard; consumers read each shard in sequence order from a position (a checkpoint), at least
//! once. The shapes follow Kinesis (shard ids, decimal sequence numbers, shard iterators, resharding
//! parents) so that the Kinesis backend is a thin mapping.

use std::cmp::Ordering;
use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;

use crate::Result;

/// A shard id, `shardId-000000000000` as Kinesis names them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub String);

impl ShardId {
    /// The id of shard number `n` in Kinesis' format.
    pub fn from_index(n: u32) -> Self {
        ShardId(format!("shardId-{n:012}"))
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A sequence number: a decimal string, ordered numerically. A record that was put inside a KPL
/// aggregate is numbered `S.K`: the aggregate's sequence number `S` and its index `K` in the
/// aggregate, ordered after `S`'s predecessors and before its successors (see `kinesis`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SequenceNumber(pub String);

impl SequenceNumber {
    /// The local log's format: 20 zero-padded digits, so that text order is numeric order too.
    pub fn from_u64(n: u64) -> Self {
        SequenceNumber(format!("{n:020}"))
    }

    /// The numeric value, when it fits a u64 (always for the local log).
    pub fn as_u64(&self) -> Option<u64> {
        self.0.parse().ok()
    }

    /// Record `index` of the aggregate whose sequence number is `aggregate`: `S.K`.
    pub fn in_aggregate(aggregate: &str, index: u64) -> Self {
        SequenceNumber(format!("{aggregate}.{index}"))
    }

    /// The stream's own sequence number and, for a record of an aggregate, its index in it.
    pub fn parts(&self) -> (&str, Option<u64>) {
        match self.0.split_once('.') {
            Some((seq, sub)) => (seq, sub.parse().ok()),
            None => (&self.0, None),
        }
    }
}

impl Ord for SequenceNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        fn numeric(s: &str) -> (usize, &str) {
            let t = s.trim_start_matches('0');
            (t.len(), t)
        }
        let (a, a_sub) = self.parts();
        let (b, b_sub) = other.parts();
        numeric(a).cmp(&numeric(b)).then(a_sub.cmp(&b_sub))
    }
}

impl PartialOrd for SequenceNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Kinesis' limits on a put, enforced by every backend so that code tested on the local log works
/// on Kinesis: records per put,
pub const MAX_RECORDS_PER_PUT: usize = 500;
/// data plus partition key of one record,
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// data plus partition keys of one put,
pub const MAX_PUT_BYTES: usize = 5 << 20;
/// and characters of a partition key.
pub const MAX_PARTITION_KEY_CHARS: usize = 256;

/// Checks record number `i` of a put against the per-record limits; returns its size (data plus
/// partition key), or why it is refused.
pub fn check_record(i: usize, r: &Record) -> std::result::Result<usize, String> {
    let chars = r.partition_key.chars().count();
    if chars == 0 || chars > MAX_PARTITION_KEY_CHARS {
        return Err(format!(
            "record {i}: partition key must have 1 to {MAX_PARTITION_KEY_CHARS} characters, got {chars}"
        ));
    }
    let size = r.data.len() + r.partition_key.len();
    if size > MAX_RECORD_BYTES {
        return Err(format!(
            "record {i} is {size} bytes with its partition key, the limit is {MAX_RECORD_BYTES}"
        ));
    }
    Ok(size)
}

/// A record to put.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub partition_key: String,
    pub data: Bytes,
}

/// Where a put record landed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutResult {
    pub shard_id: ShardId,
    pub sequence_number: SequenceNumber,
}

/// A record read from a shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamRecord {
    pub shard_id: ShardId,
    pub sequence_number: SequenceNumber,
    pub partition_key: String,
    pub data: Bytes,
    /// When the stream received it, UTC epoch microseconds (Kinesis' ApproximateArrivalTimestamp).
    pub arrival_micros: i64,
}

/// A shard and its lineage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardInfo {
    pub shard_id: ShardId,
    /// Shards this one was split or merged from: read them to their end first.
    pub parent_shard_ids: Vec<ShardId>,
    /// No more records will be added (resharded away).
    pub closed: bool,
}

/// Where a reader starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartPosition {
    /// The oldest record kept.
    TrimHorizon,
    /// Only records put after the reader opens.
    Latest,
    /// Just after a checkpoint.
    AfterSequenceNumber(SequenceNumber),
    /// The first record that arrived at or after this time (UTC micros).
    AtTimestamp(i64),
}

/// One read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadBatch {
    pub records: Vec<StreamRecord>,
    /// The shard is closed and every record has been returned.
    pub end_of_shard: bool,
    /// How far behind the newest record of the shard the reader is.
    pub millis_behind_latest: Option<i64>,
}

/// The producer side.
#[async_trait]
pub trait StreamProducer: Send + Sync + 'static {
    /// Puts records durably; one result per record, in input order. Records with the same partition
    /// key keep their order. Ok only when every record is durable (backends retry partial failures).
    async fn put_records(&self, records: Vec<Record>) -> Result<Vec<PutResult>>;
}

/// The consumer side.
#[async_trait]
pub trait StreamConsumer: Send + Sync + 'static {
    /// The stream's name, for logs and metrics.
    fn name(&self) -> &str;
    async fn list_shards(&self) -> Result<Vec<ShardInfo>>;
    async fn open_shard(
        &self,
        shard: &ShardId,
        from: StartPosition,
    ) -> Result<Box<dyn ShardReader>>;
}

/// Reads one shard in sequence order.
#[async_trait]
pub trait ShardReader: Send {
    /// The next records after the last returned one, at most `max`; empty when caught up.
    async fn next_batch(&mut self, max: usize) -> Result<ReadBatch>;
}

//! PutRecords: limits checked up front, optional aggregation, requests within the service limits,
//! partial failures retried first and alone, backoff with jitter, bounded requests in flight,
//! per-key order.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Instant;

use async_trait::async_trait;
use aws_sdk_kinesis::operation::put_records::PutRecordsOutput;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tracing::{debug, warn};

use super::aggregation::Aggregator;
use super::{
    Backoff, Failure, Inner, KinesisStream, MAX_RECORDS_PER_REQUEST, MAX_REQUEST_BYTES, ShardMap,
    classify, hash_key, is_throttling_code,
};
use crate::stream::*;
use crate::{Error, Result};

/// One Kinesis record to put: a user record, or an aggregate of several.
struct Unit {
    partition_key: String,
    data: Bytes,
    /// Indices (in the call's input) of the user records it carries, in order.
    members: Vec<usize>,
    /// Ids of the partition keys it carries (for ordering).
    keys: Vec<u32>,
    aggregated: bool,
    /// Shard the aggregation predicted, if any.
    predicted: Option<ShardId>,
    attempts: u32,
    not_before: Option<Instant>,
}

impl Unit {
    fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}

type Sent = (
    Vec<(usize, Unit)>,
    std::result::Result<PutRecordsOutput, Error>,
);

impl KinesisStream {
    /// Refuses what Kinesis would refuse, naming the record and the value.
    fn check_limits(&self, records: &[Record]) -> Result<()> {
        let limit = |message: String| {
            Err(Error::Limit {
                stream: self.inner.name.clone(),
                message,
            })
        };
        for (i, r) in records.iter().enumerate() {
            if let Err(message) = check_record(i, r) {
                return limit(message);
            }
        }
        Ok(())
    }

    /// The open shards' hash ranges, from ListShards, cached for a minute or until a put lands on
    /// another shard than predicted.
    async fn shard_map(&self) -> Result<ShardMap> {
        {
            let map = self
                .inner
                .shard_map
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(m) = map.as_ref()
                && !m.stale
                && m.fetched.elapsed() < std::time::Duration::from_secs(60)
            {
                return Ok(m.clone());
            }
        }
        let shards = self.list_shards_raw().await?;
        let mut ranges = Vec::new();
        for s in shards {
            if s.sequence_number_range()
                .and_then(|r| r.ending_sequence_number())
                .is_some()
            {
                continue;
            }
            let Some(range) = s.hash_key_range() else {
                continue;
            };
            let (Ok(start), Ok(end)) = (
                range.starting_hash_key().parse::<u128>(),
                range.ending_hash_key().parse::<u128>(),
            ) else {
                continue;
            };
            ranges.push((start, end, ShardId(s.shard_id().to_owned())));
        }
        ranges.sort();
        let map = ShardMap {
            ranges,
            fetched: Instant::now(),
            stale: false,
        };
        *self
            .inner
            .shard_map
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(map.clone());
        Ok(map)
    }

    fn mark_shard_map_stale(&self) {
        if let Some(m) = self
            .inner
            .shard_map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            m.stale = true;
        }
    }

    /// The records as Kinesis records: one each, or aggregates of the records that map to the
    /// same shard (in input order within a shard).
    async fn units(&self, records: Vec<Record>) -> Result<Vec<Unit>> {
        let mut key_ids: HashMap<String, u32> = HashMap::new();
        let mut key_id = |k: &str| -> u32 {
            let next = key_ids.len() as u32;
            *key_ids.entry(k.to_owned()).or_insert(next)
        };
        if !self.inner.config.aggregate || records.len() < 2 {
            return Ok(records
                .into_iter()
                .enumerate()
                .map(|(i, r)| Unit {
                    keys: vec![key_id(&r.partition_key)],
                    partition_key: r.partition_key,
                    data: r.data,
                    members: vec![i],
                    aggregated: false,
                    predicted: None,
                    attempts: 0,
                    not_before: None,
                })
                .collect());
        }
        let map = self.shard_map().await?;
        let max = self.inner.config.aggregate_max_bytes;
        struct Open {
            agg: Aggregator,
            first_key: String,
            members: Vec<usize>,
            keys: Vec<u32>,
        }
        let close = |open: Open, shard: Option<ShardId>, out: &mut Vec<Unit>| {
            let mut keys = open.keys;
            keys.sort_unstable();
            keys.dedup();
            out.push(Unit {
                partition_key: open.first_key,
                data: open.agg.finish(),
                members: open.members,
                keys,
                aggregated: true,
                predicted: shard,
                attempts: 0,
                not_before: None,
            });
        };
        let mut out = Vec::new();
        let mut open: HashMap<Option<usize>, Open> = HashMap::new();
        let data: Vec<Bytes> = records.iter().map(|r| r.data.clone()).collect();
        for (i, r) in records.into_iter().enumerate() {
            let shard = map.shard_of(hash_key(&r.partition_key));
            let id = key_id(&r.partition_key);
            let fits =
                |o: &Open| o.agg.size_with(&r.partition_key, &r.data) + o.first_key.len() <= max;
            if open.get(&shard).is_some_and(|o| !fits(o))
                && let Some(o) = open.remove(&shard)
            {
                close(o, shard.map(|s| map.ranges[s].2.clone()), &mut out);
            }
            let o = open.entry(shard).or_insert_with(|| Open {
                agg: Aggregator::new(),
                first_key: r.partition_key.clone(),
                members: Vec::new(),
                keys: Vec::new(),
            });
            if !o.agg.is_empty() || fits(o) {
                o.agg.add(&r.partition_key, r.data);
                o.members.push(i);
                o.keys.push(id);
            } else {
                // Too large for any aggregate: on its own, after what its shard holds so far.
                open.remove(&shard);
                out.push(Unit {
                    keys: vec![id],
                    partition_key: r.partition_key,
                    data: r.data,
                    members: vec![i],
                    aggregated: false,
                    predicted: None,
                    attempts: 0,
                    not_before: None,
                });
            }
        }
        let mut rest: Vec<_> = open.into_iter().collect();
        rest.sort_by_key(|(_, o)| o.members[0]);
        for (shard, o) in rest {
            close(o, shard.map(|s| map.ranges[s].2.clone()), &mut out);
        }
        // An aggregate of one record is sent as that record (as the KPL does).
        for u in &mut out {
            if u.aggregated && u.members.len() == 1 {
                u.data = data[u.members[0]].clone();
                u.aggregated = false;
            }
        }
        Ok(out)
    }
}

/// Picks the next request from `pending` (in input order): units whose keys have nothing in
/// flight or waiting earlier, within the request limits.
fn pick(
    pending: &BTreeMap<usize, Unit>,
    in_flight: &HashMap<u32, usize>,
    strict: bool,
    now: Instant,
) -> Vec<usize> {
    let mut blocked: HashSet<u32> = in_flight.keys().copied().collect();
    let mut in_request: HashSet<u32> = HashSet::new();
    let (mut chosen, mut bytes) = (Vec::new(), 0);
    for (&i, u) in pending {
        let waiting = u.not_before.is_some_and(|t| t > now);
        let held = u.keys.iter().any(|k| blocked.contains(k))
            || (strict && u.keys.iter().any(|k| in_request.contains(k)));
        if waiting || held {
            blocked.extend(&u.keys);
            continue;
        }
        if chosen.len() == MAX_RECORDS_PER_REQUEST || bytes + u.size() > MAX_REQUEST_BYTES {
            break;
        }
        bytes += u.size();
        in_request.extend(&u.keys);
        chosen.push(i);
    }
    chosen
}

#[async_trait]
impl StreamProducer for KinesisStream {
    /// Puts any number of records (split into requests within Kinesis' limits); Ok when every one
    /// is durable. Records over a limit are refused before anything is sent.
    async fn put_records(&self, records: Vec<Record>) -> Result<Vec<PutResult>> {
        self.check_limits(&records)?;
        let total = records.len();
        let units = self.units(records).await?;
        let inner = &self.inner;
        let client = self.client().await.clone();
        let backoff = Backoff::from_config(&inner.config);
        let mut results: Vec<Option<PutResult>> = vec![None; total];
        let mut pending: BTreeMap<usize, Unit> = units.into_iter().enumerate().collect();
        let mut in_flight_keys: HashMap<u32, usize> = HashMap::new();
        let mut in_flight: FuturesUnordered<_> = FuturesUnordered::new();

        while !pending.is_empty() || !in_flight.is_empty() {
            let now = Instant::now();
            let chosen = pick(&pending, &in_flight_keys, inner.config.strict_order, now);
            let done: Sent = if !chosen.is_empty() {
                // A slot for one more request, unless one of ours finishes first.
                tokio::select! {
                    permit = inner.in_flight.clone().acquire_owned() => {
                        let Ok(permit) = permit else {
                            return unreachable_closed(inner);
                        };
                        let batch: Vec<(usize, Unit)> = chosen
                            .into_iter()
                            .filter_map(|i| pending.remove(&i).map(|u| (i, u)))
                            .collect();
                        for (_, u) in &batch {
                            for k in &u.keys {
                                *in_flight_keys.entry(*k).or_default() += 1;
                            }
                        }
                        in_flight.push(send(inner, client.clone(), batch, permit));
                        continue;
                    }
                    Some(done) = in_flight.next(), if !in_flight.is_empty() => done,
                }
            } else if in_flight.is_empty() {
                // Everything left waits for its backoff.
                let wake = pending
                    .values()
                    .filter_map(|u| u.not_before)
                    .min()
                    .unwrap_or(now);
                tokio::time::sleep_until(wake.into()).await;
                continue;
            } else {
                let wake = pending.values().filter_map(|u| u.not_before).min();
                tokio::select! {
                    Some(done) = in_flight.next() => done,
                    _ = tokio::time::sleep_until(wake.unwrap_or(now).into()), if wake.is_some() => continue,
                }
            };

            let (batch, outcome) = done;
            for (_, u) in &batch {
                for k in &u.keys {
                    if let Some(n) = in_flight_keys.get_mut(k) {
                        *n -= 1;
                        if *n == 0 {
                            in_flight_keys.remove(k);
                        }
                    }
                }
            }
            match outcome {
                Ok(output) => {
                    self.accept_entries(batch, &output, &mut results, &mut pending, &backoff)?;
                }
                Err(e) if e.is_retryable() => {
                    debug!(stream = %inner.name, error = %e, "PutRecords failed; retrying the request");
                    let why = e.to_string();
                    for (i, u) in batch {
                        retry_later(inner, &backoff, &mut pending, i, u, &why)?;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.ok_or_else(|| Error::Unavailable {
                    stream: inner.name.clone(),
                    message: "a record was neither put nor failed".into(),
                })
            })
            .collect()
    }
}

impl KinesisStream {
    /// The entries of a PutRecords answer: a result for each accepted record (its members', for
    /// an aggregate), and each failed one back in `pending` after its backoff.
    fn accept_entries(
        &self,
        batch: Vec<(usize, Unit)>,
        output: &PutRecordsOutput,
        results: &mut [Option<PutResult>],
        pending: &mut BTreeMap<usize, Unit>,
        backoff: &Backoff,
    ) -> Result<()> {
        let inner = &self.inner;
        let entries = output.records();
        if entries.len() != batch.len() {
            return Err(Error::Unavailable {
                stream: inner.name.clone(),
                message: format!(
                    "PutRecords answered {} entries for {} records",
                    entries.len(),
                    batch.len()
                ),
            });
        }
        let mut failed = 0u64;
        let mut throttled = 0u64;
        for ((i, u), entry) in batch.into_iter().zip(entries) {
            match (
                entry.error_code(),
                entry.shard_id(),
                entry.sequence_number(),
            ) {
                (None, Some(shard), Some(seq)) => {
                    if u.predicted.as_ref().is_some_and(|p| p.0 != shard) {
                        self.mark_shard_map_stale();
                    }
                    inner
                        .metrics
                        .records_put
                        .fetch_add(u.members.len() as u64, Ordering::Relaxed);
                    if u.aggregated {
                        inner.metrics.aggregates_put.fetch_add(1, Ordering::Relaxed);
                    }
                    for (k, &m) in u.members.iter().enumerate() {
                        results[m] = Some(PutResult {
                            shard_id: ShardId(shard.to_owned()),
                            sequence_number: if u.aggregated {
                                SequenceNumber::in_aggregate(seq, k as u64)
                            } else {
                                SequenceNumber(seq.to_owned())
                            },
                        });
                    }
                }
                (code, _, _) => {
                    failed += 1;
                    let code = code.unwrap_or("no sequence number");
                    if is_throttling_code(code) {
                        throttled += 1;
                    }
                    let why = format!("{code}: {}", entry.error_message().unwrap_or_default());
                    retry_later(inner, backoff, pending, i, u, &why)?;
                }
            }
        }
        if failed > 0 {
            inner
                .metrics
                .put_entries_retried
                .fetch_add(failed, Ordering::Relaxed);
            inner
                .metrics
                .put_throttled
                .fetch_add(throttled, Ordering::Relaxed);
            warn!(stream = %inner.name, failed, throttled, "PutRecords partly failed; retrying the failed records");
        }
        Ok(())
    }
}

/// A unit of a failed entry or request back in `pending` after its backoff, or the error once it
/// has had `max_attempts`.
fn retry_later(
    inner: &Inner,
    backoff: &Backoff,
    pending: &mut BTreeMap<usize, Unit>,
    i: usize,
    mut u: Unit,
    why: &str,
) -> Result<()> {
    u.attempts += 1;
    if u.attempts >= inner.config.max_attempts {
        return Err(Error::Unavailable {
            stream: inner.name.clone(),
            message: format!(
                "a record of partition key {:?} was not accepted after {} attempts: {why}",
                u.partition_key, u.attempts
            ),
        });
    }
    u.not_before = Some(Instant::now() + backoff.delay(u.attempts));
    pending.insert(i, u);
    Ok(())
}

fn unreachable_closed<T>(inner: &Inner) -> Result<T> {
    // The semaphore is never closed; say so rather than panic if that ever changes.
    Err(Error::Unavailable {
        stream: inner.name.clone(),
        message: "the producer is shutting down".into(),
    })
}

/// One PutRecords request; the permit is held until it is answered.
async fn send(
    inner: &Inner,
    client: aws_sdk_kinesis::Client,
    batch: Vec<(usize, Unit)>,
    _permit: tokio::sync::OwnedSemaphorePermit,
) -> Sent {
    let entries: std::result::Result<Vec<_>, _> = batch
        .iter()
        .map(|(_, u)| {
            PutRecordsRequestEntry::builder()
                .partition_key(u.partition_key.clone())
                .data(Blob::from_maybe_shared(u.data.clone()))
                .build()
        })
        .collect();
    let entries = match entries {
        Ok(e) => e,
        Err(e) => {
            return (
                batch,
                Err(Error::Limit {
                    stream: inner.name.clone(),
                    message: e.to_string(),
                }),
            );
        }
    };
    inner.metrics.put_requests.fetch_add(1, Ordering::Relaxed);
    let outcome = client
        .put_records()
        .stream_name(&inner.name)
        .set_records(Some(entries))
        .send()
        .await;
    let outcome = match outcome {
        Ok(o) => Ok(o),
        Err(err) => {
            let failure = classify(&err);
            if failure == Failure::Throttled {
                inner.metrics.throttled("PutRecords");
            }
            Err(inner.error("PutRecords", err, failure))
        }
    };
    (batch, outcome)
}

//! Shard leases and checkpoints in the object store beside the lake, so that several `shoplake
//! stream` workers share one stream's shards without two reading the same shard, a dead worker's
//! shards are taken over, and a worker that loses its disk resumes where the stream was durably
//! staged.
//!
//! ## Layout
//!
//! Every shard has a folder `_checkpoints/STREAM/SHARD/` of JSON objects named by an epoch
//! (`00000000000000000007.json`); the highest epoch is the shard's current lease: its owner
//! (`None` once released) and its checkpoint (the last sequence number whose record is durable in
//! staging, or `SHARD_END`). Objects are only ever created, never overwritten: every change
//! (renewal, checkpoint, takeover, release) creates epoch N + 1 with a conditional put
//! (`If-None-Match: *` on S3, an exclusive create on a local folder). Of two workers racing for
//! the same epoch exactly one wins; the other learns that the lease moved on. Older epochs are
//! deleted as new ones are written.
//!
//! ## Rules (those of the Kinesis Client Library, on an object store instead of DynamoDB)
//!
//! - A lease is expired when its epoch has not moved for `ttl`, as this worker's own clock
//!   observes it: no comparison of clocks between machines.
//! - A worker renews what it holds every `ttl / 3` (a checkpoint is a renewal), and aims at
//!   `ceil(shards / live workers)` leases: it takes free and expired leases first, then steals one
//!   lease per round from the busiest worker when that one holds more than its share.
//! - A child shard is taken only when its parents are at `SHARD_END`.
//! - A checkpoint is written only after the staged files it covers are durable; a worker that
//!   finds its lease taken stops reading that shard. The records it read since its last
//!   checkpoint are read again by the new owner: staged twice, kept once by compaction.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use shoplake_ingest::{ShardId, ShardInfo};
use shoplake_server::telemetry::{self, Collector, DescriptorEncoder};
use tracing::{debug, info, warn};

use crate::state::SHARD_END;
use crate::{Error, Result};

/// Folder of the leases, under the lake root.
pub const CHECKPOINTS_DIR: &str = "_checkpoints";

/// Lease reads or writes in flight at once.
const CONCURRENT_REQUESTS: usize = 16;

/// One epoch of a shard's lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The worker holding the shard; `None` once released.
    pub owner: Option<String>,
    /// Last sequence number durable downstream, or `SHARD_END`; `None`: nothing read yet.
    pub checkpoint: Option<String>,
    /// When it was written (UTC milliseconds), for people reading the objects; expiry does not
    /// use it.
    pub written_at_ms: i64,
}

/// What changed in a round of [`Leases::balance`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Assignment {
    /// Shards this worker now holds, with the checkpoint to resume after.
    pub acquired: Vec<(ShardId, Option<String>)>,
    /// Shards another worker took.
    pub lost: Vec<ShardId>,
}

/// Counters of the leases (exported under the [`names`] below).
#[derive(Debug, Default)]
pub struct LeaseMetrics {
    pub held: AtomicU64,
    pub acquired: AtomicU64,
    pub stolen: AtomicU64,
    pub lost: AtomicU64,
    pub writes: AtomicU64,
}

/// Metric names of the leases (counters without `_total`, which the encoder adds).
pub mod names {
    pub const HELD: &str = "shoplake_stage_leases_held";
    pub const ACQUIRED: &str = "shoplake_stage_leases_acquired";
    pub const STOLEN: &str = "shoplake_stage_leases_stolen";
    pub const LOST: &str = "shoplake_stage_leases_lost";
    pub const WRITES: &str = "shoplake_stage_lease_writes";
}

impl Collector for LeaseMetrics {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        telemetry::gauge(
            &mut enc,
            names::HELD,
            "Shard leases this worker holds.",
            load(&self.held),
        )?;
        let counters: [(&str, &str, &AtomicU64); 4] = [
            (
                names::ACQUIRED,
                "Shard leases taken (free, expired or stolen).",
                &self.acquired,
            ),
            (
                names::STOLEN,
                "Shard leases taken from a busier live worker.",
                &self.stolen,
            ),
            (
                names::LOST,
                "Shard leases another worker took from this one.",
                &self.lost,
            ),
            (
                names::WRITES,
                "Lease objects written (renewals, checkpoints, takeovers, releases).",
                &self.writes,
            ),
        ];
        for (name, help, v) in counters {
            telemetry::counter(&mut enc, name, help, load(v))?;
        }
        Ok(())
    }
}

struct Held {
    epoch: u64,
    checkpoint: Option<String>,
    /// When the lease was last written; `None`: a write failed, renew at the next round.
    written: Option<Instant>,
}

struct Seen {
    epoch: u64,
    since: Instant,
    record: LeaseRecord,
    /// Whether this worker has seen the lease move (a renewal, a checkpoint, a takeover): its
    /// owner was alive then. A lease seen at one epoch only may be a dead worker's.
    moved: bool,
}

impl Seen {
    /// `record` at `epoch`, observed now.
    fn now(epoch: u64, record: LeaseRecord) -> Self {
        Seen {
            epoch,
            since: Instant::now(),
            record,
            moved: false,
        }
    }
}

/// This worker's view of a stream's leases.
pub struct Leases {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    worker: String,
    ttl: Duration,
    held: BTreeMap<ShardId, Held>,
    seen: HashMap<ShardId, Seen>,
    metrics: Arc<LeaseMetrics>,
}

fn store_err(path: &Path) -> impl Fn(object_store::Error) -> Error + '_ {
    move |source| Error::Staging {
        path: path.to_string(),
        source,
    }
}

impl Leases {
    /// The leases of `stream` under `store` (rooted at the lake), for worker `worker`.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        stream: &str,
        worker: impl Into<String>,
        ttl: Duration,
    ) -> Self {
        Leases {
            store,
            prefix: format!("{CHECKPOINTS_DIR}/{stream}"),
            worker: worker.into(),
            ttl,
            held: BTreeMap::new(),
            seen: HashMap::new(),
            metrics: Arc::default(),
        }
    }

    pub fn worker(&self) -> &str {
        &self.worker
    }

    pub fn metrics(&self) -> Arc<LeaseMetrics> {
        self.metrics.clone()
    }

    /// How often [`Leases::balance`] should run: a third of the lease time.
    pub fn renew_interval(&self) -> Duration {
        self.ttl / 3
    }

    /// Shards read to their end (by any worker).
    pub fn finished(&self) -> HashSet<ShardId> {
        self.seen
            .iter()
            .filter(|(_, s)| s.record.checkpoint.as_deref() == Some(SHARD_END))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The current lease of every shard that has one, as last read.
    pub fn records(&self) -> BTreeMap<ShardId, LeaseRecord> {
        self.seen
            .iter()
            .map(|(id, s)| (id.clone(), s.record.clone()))
            .collect()
    }

    fn path(&self, shard: &ShardId, epoch: u64) -> Path {
        Path::from(format!("{}/{}/{epoch:020}.json", self.prefix, shard.0))
    }

    /// Reads the current epoch of every shard (one listing, and one read per changed lease);
    /// deletes epochs older than the previous one.
    async fn scan(&mut self) -> Result<()> {
        let prefix = Path::from(self.prefix.as_str());
        let objects: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(store_err(&prefix))?;
        let mut latest: HashMap<ShardId, u64> = HashMap::new();
        let mut stale = Vec::new();
        let mut epochs: Vec<(ShardId, u64, Path)> = Vec::new();
        for o in objects {
            let mut parts = o.location.parts().collect::<Vec<_>>().into_iter().rev();
            let (Some(file), Some(shard)) = (parts.next(), parts.next()) else {
                continue;
            };
            let Some(epoch) = file
                .as_ref()
                .strip_suffix(".json")
                .and_then(|e| e.parse::<u64>().ok())
            else {
                continue;
            };
            let shard = ShardId(shard.as_ref().to_owned());
            let max = latest.entry(shard.clone()).or_default();
            *max = (*max).max(epoch);
            epochs.push((shard, epoch, o.location));
        }
        for (shard, epoch, path) in epochs {
            if epoch + 1 < latest[&shard] {
                stale.push(path);
            }
        }
        // Read the changed leases concurrently: a round costs one round trip, not one per shard.
        let changed: Vec<(ShardId, u64)> = latest
            .into_iter()
            .filter(|(shard, epoch)| self.seen.get(shard).is_none_or(|s| s.epoch != *epoch))
            .collect();
        let this = &*self;
        let reads = changed.into_iter().map(|(shard, epoch)| async move {
            let path = this.path(&shard, epoch);
            let bytes = match this.store.get(&path).await {
                Ok(r) => r.bytes().await.map_err(store_err(&path))?,
                // Replaced and deleted since the listing: the next round sees the new one.
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(store_err(&path)(e)),
            };
            let record: LeaseRecord = serde_json::from_slice(&bytes).map_err(|e| Error::State {
                path: path.to_string(),
                source: Box::new(e),
            })?;
            Ok(Some((shard, epoch, record)))
        });
        let read: Vec<_> = futures::stream::iter(reads)
            .buffer_unordered(CONCURRENT_REQUESTS)
            .try_collect()
            .await?;
        for (shard, epoch, record) in read.into_iter().flatten() {
            let moved = self.seen.contains_key(&shard);
            self.seen.insert(
                shard,
                Seen {
                    moved,
                    ..Seen::now(epoch, record)
                },
            );
        }
        for path in stale {
            self.delete(&path).await;
        }
        Ok(())
    }

    /// Deletes an epoch that a newer one replaced. Best effort: a leftover is ignored by readers
    /// and deleted again at the next round's listing.
    async fn delete(&self, path: &Path) {
        if let Err(e) = self.store.delete(path).await {
            debug!(path = %path, error = %e, "old lease epoch not deleted; retried next round");
        }
    }

    /// Creates epoch `epoch` of `shard`; false when another worker created it first.
    async fn create(&self, shard: &ShardId, epoch: u64, record: &LeaseRecord) -> Result<bool> {
        let path = self.path(shard, epoch);
        let body = serde_json::to_vec(record).map_err(|e| Error::Encode(e.to_string()))?;
        self.metrics.writes.fetch_add(1, Ordering::Relaxed);
        match self
            .store
            .put_opts(
                &path,
                PutPayload::from(body),
                PutOptions::from(PutMode::Create),
            )
            .await
        {
            Ok(_) => {
                if epoch >= 2 {
                    self.delete(&self.path(shard, epoch - 2)).await;
                }
                Ok(true)
            }
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(store_err(&path)(e)),
        }
    }

    fn record(&self, owner: bool, checkpoint: Option<String>) -> LeaseRecord {
        LeaseRecord {
            owner: owner.then(|| self.worker.clone()),
            checkpoint,
            written_at_ms: chrono::Utc::now().timestamp_millis(),
        }
    }

    /// Writes the next epoch of each held lease in `updates` (with its new checkpoint),
    /// concurrently. A lease another worker took is dropped and returned; a failed write keeps
    /// the checkpoint for the next round's renewal and is logged. Shards not held are returned as
    /// lost.
    async fn advance_all(&mut self, updates: Vec<(ShardId, Option<String>)>) -> Vec<ShardId> {
        shoplake_server::faults::point("lease.renew");
        let this = &*self;
        let writes = updates.into_iter().map(|(shard, checkpoint)| {
            let next = this.held.get(&shard).map(|h| h.epoch + 1);
            let record = this.record(true, checkpoint.clone());
            async move {
                let won = match next {
                    Some(epoch) => this.create(&shard, epoch, &record).await,
                    None => Ok(false),
                };
                (shard, next.unwrap_or(0), checkpoint, record, won)
            }
        });
        let results: Vec<_> = futures::stream::iter(writes)
            .buffer_unordered(CONCURRENT_REQUESTS)
            .collect()
            .await;
        let mut lost = Vec::new();
        for (shard, epoch, checkpoint, record, won) in results {
            match won {
                Ok(true) => {
                    self.seen.insert(shard.clone(), Seen::now(epoch, record));
                    if checkpoint.as_deref() == Some(SHARD_END) {
                        // Finished: nothing left to hold.
                        self.held.remove(&shard);
                    } else {
                        self.held.insert(
                            shard,
                            Held {
                                epoch,
                                checkpoint,
                                written: Some(Instant::now()),
                            },
                        );
                    }
                }
                Ok(false) => {
                    self.lose(&shard);
                    lost.push(shard);
                }
                Err(e) => {
                    warn!(shard_id = %shard.0, error = %e, "lease write failed; retried at the next lease round");
                    if let Some(held) = self.held.get_mut(&shard) {
                        held.checkpoint = checkpoint;
                        held.written = None;
                    }
                }
            }
        }
        self.count_held();
        lost
    }

    fn count_held(&self) {
        self.metrics
            .held
            .store(self.held.len() as u64, Ordering::Relaxed);
    }

    fn lose(&mut self, shard: &ShardId) {
        if self.held.remove(shard).is_some() {
            warn!(shard_id = %shard.0, worker = %self.worker, "shard lease taken by another worker");
            self.metrics.lost.fetch_add(1, Ordering::Relaxed);
            self.count_held();
        }
    }

    /// Records checkpoints of held shards (after what they cover is durable). Returns the shards
    /// whose lease another worker took: stop reading them. A failed write is retried at the next
    /// round and does not stop the others.
    pub async fn checkpoint(&mut self, checkpoints: &[(String, String)]) -> Vec<ShardId> {
        let updates = checkpoints
            .iter()
            .map(|(shard, seq)| (ShardId(shard.clone()), Some(seq.clone())))
            .collect();
        self.advance_all(updates).await
    }

    /// One round: reads the leases, renews what this worker holds, and takes its share of
    /// `shards` (free, expired, then one stolen from the busiest worker).
    pub async fn balance(&mut self, shards: &[ShardInfo]) -> Result<Assignment> {
        self.scan().await?;
        let mut out = Assignment::default();
        let overwritten: Vec<ShardId> = self
            .held
            .iter()
            .filter(|(shard, h)| self.seen.get(*shard).is_some_and(|s| s.epoch != h.epoch))
            .map(|(shard, _)| shard.clone())
            .collect();
        for shard in overwritten {
            self.lose(&shard);
            out.lost.push(shard);
        }
        let due = self
            .held
            .iter()
            .filter(|(_, h)| {
                h.written
                    .is_none_or(|t| t.elapsed() >= self.renew_interval())
            })
            .map(|(shard, h)| (shard.clone(), h.checkpoint.clone()))
            .collect();
        out.lost.extend(self.advance_all(due).await);

        let finished = self.finished();
        let listed: HashSet<&ShardId> = shards.iter().map(|s| &s.shard_id).collect();
        let eligible: Vec<&ShardInfo> = shards
            .iter()
            .filter(|s| !finished.contains(&s.shard_id))
            .filter(|s| {
                s.parent_shard_ids.iter().all(|p| {
                    finished.contains(p) || !(listed.contains(p) || self.seen.contains_key(p))
                })
            })
            .collect();
        let live_owner = |s: &Seen| {
            s.record
                .owner
                .clone()
                .filter(|_| s.since.elapsed() < self.ttl)
        };
        let mut by_owner: HashMap<String, Vec<ShardId>> = HashMap::new();
        let mut free = Vec::new();
        for s in &eligible {
            match self.seen.get(&s.shard_id).and_then(live_owner) {
                // Held by this worker before it restarted (the same id): take it back at once.
                Some(owner) if owner == self.worker && !self.held.contains_key(&s.shard_id) => {
                    free.push(s.shard_id.clone())
                }
                Some(owner) => by_owner.entry(owner).or_default().push(s.shard_id.clone()),
                None => free.push(s.shard_id.clone()),
            }
        }
        let workers = by_owner.len() + usize::from(!by_owner.contains_key(&self.worker));
        let target = eligible.len().div_ceil(workers.max(1));
        for shard in free {
            if self.held.len() >= target {
                break;
            }
            if let Some(checkpoint) = self.take(&shard).await? {
                out.acquired.push((shard, checkpoint));
            }
        }
        if self.held.len() < target
            && let Some((owner, theirs)) = by_owner
                .iter()
                .filter(|(o, v)| **o != self.worker && v.len() > target)
                .max_by_key(|(o, v)| (v.len(), (*o).clone()))
        {
            let shard = theirs.iter().max().cloned();
            let owner = owner.clone();
            if let Some(shard) = shard
                && let Some(checkpoint) = self.take(&shard).await?
            {
                info!(shard_id = %shard.0, from = %owner, worker = %self.worker, "shard lease stolen to balance the workers");
                self.metrics.stolen.fetch_add(1, Ordering::Relaxed);
                out.acquired.push((shard, checkpoint));
            }
        }
        Ok(out)
    }

    /// Takes `shard`'s lease; its checkpoint when won.
    async fn take(&mut self, shard: &ShardId) -> Result<Option<Option<String>>> {
        let (epoch, checkpoint) = match self.seen.get(shard) {
            Some(s) => (s.epoch + 1, s.record.checkpoint.clone()),
            None => (1, None),
        };
        let record = self.record(true, checkpoint.clone());
        if !self.create(shard, epoch, &record).await? {
            return Ok(None);
        }
        info!(shard_id = %shard.0, worker = %self.worker, checkpoint = ?checkpoint, "shard lease taken");
        self.seen.insert(shard.clone(), Seen::now(epoch, record));
        self.held.insert(
            shard.clone(),
            Held {
                epoch,
                checkpoint: checkpoint.clone(),
                written: Some(Instant::now()),
            },
        );
        self.metrics.acquired.fetch_add(1, Ordering::Relaxed);
        self.count_held();
        Ok(Some(checkpoint))
    }

    /// Whether an unfinished shard is neither held by this worker nor by a worker seen alive
    /// (its lease moved since this worker looked): a released shard, or one whose owner may
    /// have died, which this worker takes once the lease is free or expired. A drain goes on
    /// until there is none (`Stage::drain`), or it would end with such a shard unread.
    pub fn waiting_on_others(&self) -> bool {
        let finished = self.finished();
        let alive_elsewhere =
            |s: &Seen| s.moved && s.record.owner.as_ref().is_some_and(|o| *o != self.worker);
        self.seen.iter().any(|(shard, s)| {
            let settled =
                finished.contains(shard) || self.held.contains_key(shard) || alive_elsewhere(s);
            !settled
        })
    }

    /// Hands every held lease back (a clean stop): other workers take them at once, from the
    /// last checkpoint, instead of waiting for them to expire.
    pub async fn release_all(&mut self) -> Result<()> {
        let held = std::mem::take(&mut self.held);
        for (shard, h) in held {
            let record = self.record(false, h.checkpoint);
            if self.create(&shard, h.epoch + 1, &record).await? {
                info!(shard_id = %shard.0, worker = %self.worker, "shard lease released");
            }
        }
        self.count_held();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shards(n: u32) -> Vec<ShardInfo> {
        (0..n)
            .map(|i| ShardInfo {
                shard_id: ShardId::from_index(i),
                parent_shard_ids: vec![],
                closed: false,
            })
            .collect()
    }

    fn held(a: &Assignment) -> Vec<String> {
        a.acquired.iter().map(|(s, _)| s.0.clone()).collect()
    }

    #[tokio::test]
    async fn workers_share_shards_checkpoint_and_take_over_a_dead_one() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> =
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let ttl = Duration::from_millis(600);
        let four = shards(4);
        let mut a = Leases::new(store.clone(), "s", "a", ttl);
        let mut b = Leases::new(store.clone(), "s", "b", ttl);

        // Alone, a takes every shard.
        let first = a.balance(&four).await.unwrap();
        assert_eq!(held(&first).len(), 4);
        assert!(first.acquired.iter().all(|(_, c)| c.is_none()));
        // b steals one per round until both hold two; a learns it lost them.
        for _ in 0..2 {
            assert_eq!(held(&b.balance(&four).await.unwrap()).len(), 1);
        }
        assert!(b.balance(&four).await.unwrap().acquired.is_empty());
        let a_round = a.balance(&four).await.unwrap();
        assert_eq!(a_round.lost.len(), 2, "{a_round:?}");
        assert_eq!(a.held.len(), 2);
        assert_eq!(b.held.len(), 2);
        let a_shards: HashSet<_> = a.held.keys().cloned().collect();
        assert!(b.held.keys().all(|s| !a_shards.contains(s)));

        // a checkpoints its shards; writing to one of b's is refused.
        let cps: Vec<(String, String)> = a
            .held
            .keys()
            .map(|s| (s.0.clone(), format!("{}-seq", s.0)))
            .collect();
        assert!(a.checkpoint(&cps).await.is_empty());
        let b_shard = b.held.keys().next().unwrap().clone();
        assert_eq!(
            a.checkpoint(&[(b_shard.0.clone(), "x".into())]).await,
            vec![b_shard.clone()]
        );
        a.scan().await.unwrap();
        assert_eq!(a.records()[&b_shard].owner.as_deref(), Some("b"));

        // a dies: after the ttl, b takes a's shards with a's checkpoints.
        tokio::time::sleep(Duration::from_millis(250)).await;
        b.balance(&four).await.unwrap();
        tokio::time::sleep(ttl).await;
        let took = b.balance(&four).await.unwrap();
        let mut got: Vec<_> = took.acquired.clone();
        got.sort();
        let mut want: Vec<_> = cps
            .iter()
            .map(|(s, c)| (ShardId(s.clone()), Some(c.clone())))
            .collect();
        want.sort();
        assert_eq!(got, want);
        assert_eq!(b.held.len(), 4);

        // A clean stop hands the leases over at once, checkpoints kept.
        b.release_all().await.unwrap();
        let mut c = Leases::new(store.clone(), "s", "c", ttl);
        let c_round = c.balance(&four).await.unwrap();
        assert_eq!(c_round.acquired.len(), 4);
        assert!(c_round.acquired.contains(&want[0]));
        // Old epochs are cleaned up: at most two objects per shard.
        let objects: Vec<_> = store.list(None).try_collect().await.unwrap();
        assert!(objects.len() <= 8, "{} lease objects", objects.len());
    }

    #[tokio::test]
    async fn a_child_waits_for_its_parent_to_end() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> =
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let parent = ShardId::from_index(0);
        let child = ShardInfo {
            shard_id: ShardId::from_index(1),
            parent_shard_ids: vec![parent.clone()],
            closed: false,
        };
        let all = vec![
            ShardInfo {
                shard_id: parent.clone(),
                parent_shard_ids: vec![],
                closed: true,
            },
            child,
        ];
        let mut a = Leases::new(store, "s", "a", Duration::from_secs(10));
        assert_eq!(
            held(&a.balance(&all).await.unwrap()),
            vec![parent.0.clone()]
        );
        assert!(
            a.checkpoint(&[(parent.0.clone(), SHARD_END.into())])
                .await
                .is_empty()
        );
        assert!(a.finished().contains(&parent));
        assert_eq!(
            held(&a.balance(&all).await.unwrap()),
            vec![ShardId::from_index(1).0]
        );
        assert_eq!(a.held.len(), 1, "a finished shard is not held");
    }
}

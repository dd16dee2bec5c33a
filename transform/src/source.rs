//! The stage's source: which shards it reads and from where. It owns the shard readers, finds new
//! shards (children wait for their parents to finish), shares them with other workers through
//! [`Leases`] on Kinesis, tees every record read into the raw archive, and turns what the batch
//! read into [`Checkpoint`]s once the stage has made it durable.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoplake_ingest::firehose::ArchivedRecord;
use shoplake_ingest::{
    Firehose, SequenceNumber, ShardId, ShardInfo, ShardReader, StartPosition, StreamConsumer,
    StreamRecord,
};
use tracing::{debug, info, warn};

use crate::leases::{LeaseMetrics, Leases};
use crate::state::SHARD_END;
use crate::{Error, Result};

/// Where reading a shard resumes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checkpoint {
    /// Just after this record.
    After(SequenceNumber),
    /// The shard was read to its end (closed by resharding): nothing left to read.
    End,
}

impl Checkpoint {
    /// Reads the stored form (the state database's and the leases').
    pub fn decode(stored: &str) -> Self {
        match stored {
            SHARD_END => Checkpoint::End,
            seq => Checkpoint::After(SequenceNumber(seq.to_owned())),
        }
    }

    /// The stored form.
    pub fn encode(&self) -> String {
        match self {
            Checkpoint::After(seq) => seq.0.clone(),
            Checkpoint::End => SHARD_END.to_owned(),
        }
    }
}

struct Cursor {
    reader: Box<dyn ShardReader>,
    /// Last sequence number taken into the current (unflushed) batch.
    pending: Option<SequenceNumber>,
    end_reached: bool,
}

/// The raw archive's delivery stream and the lines of the batch being built.
struct Archive {
    firehose: Firehose,
    lines: Vec<u8>,
}

/// Records of one shard from one read.
pub(crate) struct ShardRead {
    pub records: Vec<StreamRecord>,
    pub millis_behind_latest: Option<i64>,
}

/// The shard readers of one stage.
pub(crate) struct Source {
    consumer: Arc<dyn StreamConsumer>,
    /// Each shard's checkpoint as last committed.
    checkpoints: HashMap<ShardId, Checkpoint>,
    cursors: BTreeMap<ShardId, Cursor>,
    finished: HashSet<ShardId>,
    last_shard_scan: Option<Instant>,
    /// Shared reading (see [`crate::leases`]): which shards this worker reads and from where.
    leases: Option<Leases>,
    /// The stream's shards as last listed (for the leases).
    shards: Vec<ShardInfo>,
    shards_listed: Option<Instant>,
    /// The raw archive: every record read, sent to Firehose before its checkpoint moves.
    archive: Option<Archive>,
}

impl Source {
    /// Reads `consumer` from `checkpoints` (stored form, by shard id).
    pub fn new(consumer: Arc<dyn StreamConsumer>, checkpoints: &HashMap<String, String>) -> Self {
        let checkpoints: HashMap<ShardId, Checkpoint> = checkpoints
            .iter()
            .map(|(shard, stored)| (ShardId(shard.clone()), Checkpoint::decode(stored)))
            .collect();
        let finished = checkpoints
            .iter()
            .filter(|(_, c)| **c == Checkpoint::End)
            .map(|(shard, _)| shard.clone())
            .collect();
        Source {
            consumer,
            checkpoints,
            cursors: BTreeMap::new(),
            finished,
            last_shard_scan: None,
            leases: None,
            shards: Vec::new(),
            shards_listed: None,
            archive: None,
        }
    }

    /// Reads only the shards `leases` gives this worker, from the checkpoints kept in them.
    pub fn set_leases(&mut self, leases: Leases) {
        self.checkpoints.clear();
        self.finished.clear();
        self.leases = Some(leases);
    }

    pub fn set_archive(&mut self, firehose: Firehose) {
        self.archive = Some(Archive {
            firehose,
            lines: Vec::new(),
        });
    }

    pub fn lease_metrics(&self) -> Option<Arc<LeaseMetrics>> {
        self.leases.as_ref().map(Leases::metrics)
    }

    /// Whether a scan of the stream's shards has happened since the last shard finished.
    pub fn scanned(&self) -> bool {
        self.last_shard_scan.is_some()
    }

    /// Whether a shard is held by another worker's lease that may be a dead worker's
    /// ([`Leases::waiting_on_others`]); never without leases.
    pub fn waiting_on_others(&self) -> bool {
        self.leases.as_ref().is_some_and(|l| l.waiting_on_others())
    }

    /// Hands the held leases back, so that other workers go on at once.
    pub async fn release_leases(&mut self) {
        if let Some(leases) = &mut self.leases
            && let Err(e) = leases.release_all().await
        {
            warn!(error = %e, "releasing the shard leases failed; they expire instead");
        }
    }

    /// Reads each open shard once (finding new shards first when due).
    pub async fn read(&mut self, max_records: usize) -> Result<Vec<ShardRead>> {
        let rescan = match &self.leases {
            // Renewals keep the leases alive: every third of their time.
            Some(leases) => self
                .last_shard_scan
                .is_none_or(|t| t.elapsed() >= leases.renew_interval()),
            None => {
                self.last_shard_scan
                    .is_none_or(|t| t.elapsed() > Duration::from_secs(30))
                    || self.cursors.is_empty()
            }
        };
        if rescan {
            self.discover_shards().await?;
        }
        let mut out = Vec::new();
        for cursor in self.cursors.values_mut() {
            if cursor.end_reached {
                continue;
            }
            let batch = cursor.reader.next_batch(max_records).await?;
            if let Some(last) = batch.records.last() {
                cursor.pending = Some(last.sequence_number.clone());
            }
            cursor.end_reached |= batch.end_of_shard;
            out.push(ShardRead {
                records: batch.records,
                millis_behind_latest: batch.millis_behind_latest,
            });
        }
        Ok(out)
    }

    /// Whether a shard was read to its end and awaits its final checkpoint.
    pub fn end_reached(&self) -> bool {
        self.cursors.values().any(|c| c.end_reached)
    }

    /// Appends `records` to the raw archive's batch; returns how many were too large for it.
    pub fn tee(&mut self, records: &[StreamRecord]) -> u64 {
        let Some(archive) = &mut self.archive else {
            return 0;
        };
        let stream = self.consumer.name();
        let mut skipped = 0;
        for r in records {
            if !ArchivedRecord::append_line(stream, r, &mut archive.lines) {
                skipped += 1;
                warn!(shard_id = %r.shard_id.0, sequence_number = %r.sequence_number.0, bytes = r.data.len(), "record too large for a Firehose record: left out of the raw archive");
            }
        }
        skipped
    }

    /// Sends the raw archive's batch; returns once Firehose has accepted it.
    pub async fn flush_archive(&mut self) -> Result<()> {
        if let Some(a) = &mut self.archive
            && !a.lines.is_empty()
        {
            a.firehose
                .put_ndjson(&a.lines)
                .await
                .map_err(Error::Delivery)?;
            a.lines.clear();
        }
        Ok(())
    }

    /// The checkpoints of what the batch read, once its staged files are durable: written into
    /// the leases here, and returned (stored form) for the state database.
    pub async fn take_checkpoints(&mut self) -> Vec<(String, String)> {
        let mut checkpoints: Vec<(ShardId, Checkpoint)> = Vec::new();
        for (id, cursor) in &mut self.cursors {
            if cursor.end_reached {
                checkpoints.push((id.clone(), Checkpoint::End));
            } else if let Some(seq) = cursor.pending.take() {
                checkpoints.push((id.clone(), Checkpoint::After(seq)));
            }
        }
        let stored: Vec<(String, String)> = checkpoints
            .iter()
            .map(|(shard, c)| (shard.0.clone(), c.encode()))
            .collect();
        let mut ended: Vec<ShardId> = checkpoints
            .iter()
            .filter(|(_, c)| *c == Checkpoint::End)
            .map(|(shard, _)| shard.clone())
            .collect();
        if let Some(leases) = &mut self.leases {
            // The staged files are durable: the checkpoints can go into the leases.
            for shard in leases.checkpoint(&stored).await {
                self.cursors.remove(&shard);
                ended.retain(|s| *s != shard);
            }
        }
        self.checkpoints.extend(checkpoints);
        for id in ended {
            self.cursors.remove(&id);
            info!(shard_id = %id.0, "shard finished");
            self.finished.insert(id);
            self.last_shard_scan = None;
            self.shards_listed = None;
        }
        stored
    }

    /// Opens readers for shards not yet read; a child shard waits until its parents are finished.
    async fn discover_shards(&mut self) -> Result<()> {
        if self.leases.is_some() {
            return self.coordinate().await;
        }
        let shards = self.consumer.list_shards().await?;
        for shard in shards {
            if self.cursors.contains_key(&shard.shard_id) || self.finished.contains(&shard.shard_id)
            {
                continue;
            }
            if !shard
                .parent_shard_ids
                .iter()
                .all(|p| self.finished.contains(p) || !self.is_known(p))
            {
                continue;
            }
            let checkpoint = self.checkpoints.get(&shard.shard_id).cloned();
            self.open_cursor(shard.shard_id, checkpoint).await?;
        }
        self.last_shard_scan = Some(Instant::now());
        Ok(())
    }

    fn is_known(&self, shard: &ShardId) -> bool {
        self.cursors.contains_key(shard) || self.checkpoints.contains_key(shard)
    }

    /// A lease round: renews, takes and drops shards, and opens readers for the new ones.
    async fn coordinate(&mut self) -> Result<()> {
        if self
            .shards_listed
            .is_none_or(|t| t.elapsed() > Duration::from_secs(30))
        {
            self.shards = self.consumer.list_shards().await?;
            self.shards_listed = Some(Instant::now());
        }
        let Some(leases) = &mut self.leases else {
            return Ok(());
        };
        let assignment = leases.balance(&self.shards).await?;
        self.finished = leases.finished();
        for shard in assignment.lost {
            self.cursors.remove(&shard);
        }
        for (shard, checkpoint) in assignment.acquired {
            let checkpoint = checkpoint.as_deref().map(Checkpoint::decode);
            self.open_cursor(shard, checkpoint).await?;
        }
        self.last_shard_scan = Some(Instant::now());
        Ok(())
    }

    /// Opens a reader on `shard` just after `checkpoint` (from its start without one).
    async fn open_cursor(&mut self, shard: ShardId, checkpoint: Option<Checkpoint>) -> Result<()> {
        let from = match checkpoint {
            Some(Checkpoint::After(seq)) => StartPosition::AfterSequenceNumber(seq),
            None => StartPosition::TrimHorizon,
            Some(Checkpoint::End) => {
                self.finished.insert(shard);
                return Ok(());
            }
        };
        debug!(shard_id = %shard.0, ?from, "opening shard");
        let reader = self.consumer.open_shard(&shard, from).await?;
        self.cursors.insert(
            shard,
            Cursor {
                reader,
                pending: None,
                end_reached: false,
            },
        );
        Ok(())
    }
}

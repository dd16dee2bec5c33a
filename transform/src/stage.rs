//! The streaming stage's loop: consume → (archive the raw records) → decode → validate (bad rows
//! aside) → dedup → enrich → stage Parquet (or send the events to Firehose) → commit checkpoint.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use object_store::ObjectStore;
use shoplake_events::lake::{STAGING_BAD_ROWS, STAGING_EVENTS, STAGING_FRAUD_DECISIONS};
use shoplake_events::{
    BadRow, BadRowBatchBuilder, Enrichment, EventBatchBuilder, Limits, Reason, ValidEvent, decode,
};
use shoplake_ingest::firehose::ArchivedRecord;
use shoplake_ingest::{
    Firehose, SequenceNumber, ShardId, ShardInfo, ShardReader, StartPosition, StreamConsumer,
    StreamRecord,
};
use tracing::{debug, info, warn};

use crate::config::StageConfig;
use crate::decisions::DecisionRows;
use crate::enrich::bots::BotCache;
use crate::enrich::channel::{Touch, classify};
use crate::enrich::fx::FxRates;
use crate::enrich::sessions::Sessions;
use crate::leases::{LeaseMetrics, Leases};
use crate::live::Live;
use crate::staging::{encode_ndjson, encode_parquet, put};
use crate::state::{IdHasher, IdMap, SHARD_END, StateDelta, StateStore};
use crate::{Error, Result};

/// Counters of the stage, readable while it runs (Prometheus names in `render_prometheus`).
#[derive(Debug, Default)]
pub struct StageMetrics {
    pub records_read: AtomicU64,
    pub events_staged: AtomicU64,
    pub duplicates: AtomicU64,
    pub bad_rows: AtomicU64,
    pub bad_rows_by_reason: [AtomicU64; 16],
    pub flushes: AtomicU64,
    pub bytes_staged: AtomicU64,
    pub unknown_currency: AtomicU64,
    pub bots: AtomicU64,
    /// Largest `millis_behind_latest` over the shards at the last read.
    pub lag_millis: AtomicI64,
    pub dedup_entries: AtomicU64,
    /// Records too large for a Firehose record, left out of the raw archive (their payload is
    /// over Kinesis' event limits, so they are bad rows and their bytes are kept there).
    pub archive_skipped: AtomicU64,
    /// Thread CPU time spent decoding, validating, de-duplicating and enriching records into
    /// Arrow builders (the live engines and the raw archive included when on): the stage's own
    /// cost per record, apart from reading the stream and writing staging.
    pub process_cpu_nanos: AtomicU64,
}

impl StageMetrics {
    /// The counters in the Prometheus text format.
    pub fn render_prometheus(&self) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
            ));
        };
        counter(
            "shoplake_stage_records_read_total",
            "Records read from the stream.",
            self.records_read.load(Ordering::Relaxed),
        );
        counter(
            "shoplake_stage_events_staged_total",
            "Valid, unique events written to staging.",
            self.events_staged.load(Ordering::Relaxed),
        );
        counter(
            "shoplake_stage_duplicates_total",
            "Events dropped as duplicates of an earlier event_id.",
            self.duplicates.load(Ordering::Relaxed),
        );
        counter(
            "shoplake_stage_flushes_total",
            "Staging flushes (each one moves the checkpoint).",
            self.flushes.load(Ordering::Relaxed),
        );
        counter(
            "shoplake_stage_bytes_staged_total",
            "Bytes of Parquet written to staging.",
            self.bytes_staged.load(Ordering::Relaxed),
        );
        counter(
            "shoplake_stage_unknown_currency_total",
            "Events whose currency has no reporting rate.",
            self.unknown_currency.load(Ordering::Relaxed),
        );
        counter(
            "shoplake_stage_archive_skipped_total",
            "Records too large for a Firehose record, left out of the raw archive.",
            self.archive_skipped.load(Ordering::Relaxed),
        );
        counter(
            "shoplake_stage_bot_events_total",
            "Events marked as coming from bots.",
            self.bots.load(Ordering::Relaxed),
        );
        out.push_str("# HELP shoplake_stage_bad_rows_total Inputs rejected, by reason.\n# TYPE shoplake_stage_bad_rows_total counter\n");
        for (i, reason) in Reason::ALL.iter().enumerate() {
            let v = self.bad_rows_by_reason[i].load(Ordering::Relaxed);
            out.push_str(&format!(
                "shoplake_stage_bad_rows_total{{reason=\"{reason}\"}} {v}\n"
            ));
        }
        out.push_str(&format!(
            "# HELP shoplake_stage_lag_milliseconds How far the stage is behind the tip of the stream.\n# TYPE shoplake_stage_lag_milliseconds gauge\nshoplake_stage_lag_milliseconds {}\n",
            self.lag_millis.load(Ordering::Relaxed)
        ));
        out.push_str(&format!(
            "# HELP shoplake_stage_process_cpu_seconds_total Thread CPU time decoding, validating, de-duplicating and enriching records.\n# TYPE shoplake_stage_process_cpu_seconds_total counter\nshoplake_stage_process_cpu_seconds_total {}\n",
            self.process_cpu_nanos.load(Ordering::Relaxed) as f64 / 1e9
        ));
        out.push_str(&format!(
            "# HELP shoplake_stage_dedup_entries Event ids held for de-duplication.\n# TYPE shoplake_stage_dedup_entries gauge\nshoplake_stage_dedup_entries {}\n",
            self.dedup_entries.load(Ordering::Relaxed)
        ));
        out
    }
}

/// CPU time of the calling thread so far.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Called with every event the live engines are about to see (valid, unique, not a bot) and the
/// engines before they see it: how an evaluation asks the engines what they would have answered
/// just before an order.
pub type Probe = Box<dyn FnMut(&ValidEvent<'_>, &str, &Live) + Send>;

/// What one drain or flush did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlushReport {
    pub records: u64,
    pub events: u64,
    pub duplicates: u64,
    pub bad_rows: u64,
    /// Fraud decisions staged.
    pub decisions: u64,
    pub files: Vec<String>,
}

struct Cursor {
    reader: Box<dyn ShardReader>,
    /// Last sequence number taken into the current (unflushed) batch.
    pending: Option<SequenceNumber>,
    end_reached: bool,
}

/// The streaming stage over one stream, one state database and one lake.
pub struct Stage {
    consumer: Arc<dyn StreamConsumer>,
    store: Arc<dyn ObjectStore>,
    state: Arc<StateStore>,
    /// The previous flush's state commit, running on a blocking thread while the next batch is
    /// read and processed (awaited before the next commit and before returning).
    committing: Option<tokio::task::JoinHandle<Result<()>>>,
    config: StageConfig,
    limits: Limits,
    fx: FxRates,
    sessions: Sessions,
    bots: BotCache,
    /// event id → received_at of every event staged within the TTL.
    dedup: IdMap,
    /// Ids of the batch being built (not yet in `dedup`).
    pending_ids: Vec<(u128, i64)>,
    pending_set: HashSet<u128, IdHasher>,
    checkpoints: HashMap<String, String>,
    cursors: BTreeMap<ShardId, Cursor>,
    finished: HashSet<ShardId>,
    events: EventBatchBuilder,
    bad: BadRowBatchBuilder,
    batch_records: usize,
    batch_started: Option<Instant>,
    max_received: i64,
    metrics: Arc<StageMetrics>,
    last_shard_scan: Option<Instant>,
    /// Fraud scoring and recommendations, fed by every valid, unique, non-bot event.
    live: Option<Arc<Live>>,
    probe: Option<Probe>,
    /// Fraud decisions of the batch being built.
    decisions: DecisionRows,
    /// Latest event time of a live event (for the live state's expiry).
    max_event_time: i64,
    /// Shared reading (see [`crate::leases`]): which shards this worker reads and from where.
    leases: Option<Leases>,
    /// The stream's shards as last listed (for the leases).
    shards: Vec<ShardInfo>,
    shards_listed: Option<Instant>,
    /// The raw archive: every record read, sent to Firehose before its checkpoint moves.
    archive: Option<Archive>,
    /// Sends the enriched events to Firehose (NDJSON into staging) instead of writing Parquet.
    events_sink: Option<Firehose>,
}

/// The raw archive's delivery stream and the lines of the batch being built.
struct Archive {
    firehose: Firehose,
    lines: Vec<u8>,
}

impl Stage {
    /// Opens the stage: loads checkpoints, the dedup window and sessions from `state_path`.
    pub fn open(
        consumer: Arc<dyn StreamConsumer>,
        store: Arc<dyn ObjectStore>,
        state_path: &Path,
        config: StageConfig,
    ) -> Result<Self> {
        let fx = config.fx_rates()?;
        let state = StateStore::open(state_path)?;
        let loaded = state.load()?;
        let finished = loaded
            .checkpoints
            .iter()
            .filter(|(_, v)| v.as_str() == SHARD_END)
            .map(|(k, _)| ShardId(k.clone()))
            .collect();
        let max_received = loaded.dedup.values().copied().max().unwrap_or(i64::MIN);
        info!(
            stream = consumer.name(),
            checkpoints = loaded.checkpoints.len(),
            dedup_entries = loaded.dedup.len(),
            sessions = loaded.sessions.len(),
            "stage state loaded"
        );
        let metrics = Arc::new(StageMetrics::default());
        metrics
            .dedup_entries
            .store(loaded.dedup.len() as u64, Ordering::Relaxed);
        Ok(Stage {
            limits: config.limits(),
            sessions: Sessions::new(
                config.session_timeout_secs as i64 * 1_000_000,
                loaded.sessions,
            ),
            bots: BotCache::default(),
            // Room for a whole batch: untouched room costs no memory, regrowing copies it all.
            events: EventBatchBuilder::with_capacity(config.max_batch_records.min(1 << 20)),
            consumer,
            store,
            state: Arc::new(state),
            committing: None,
            fx,
            dedup: loaded.dedup,
            pending_ids: Vec::new(),
            pending_set: HashSet::default(),
            checkpoints: loaded.checkpoints,
            cursors: BTreeMap::new(),
            finished,
            bad: BadRowBatchBuilder::default(),
            batch_records: 0,
            batch_started: None,
            max_received,
            metrics,
            last_shard_scan: None,
            live: None,
            probe: None,
            decisions: DecisionRows::default(),
            max_event_time: i64::MIN,
            leases: None,
            shards: Vec::new(),
            shards_listed: None,
            archive: None,
            events_sink: None,
            config,
        })
    }

    /// Reads only the shards `leases` gives this worker, from the checkpoints kept in them
    /// (which then take the place of the ones in the state database), and writes each
    /// checkpoint into its lease.
    pub fn with_leases(mut self, leases: Leases) -> Self {
        info!(
            worker = leases.worker(),
            "stage shares the stream's shards through leases"
        );
        self.checkpoints.clear();
        self.finished.clear();
        self.leases = Some(leases);
        self
    }

    /// Archives every record read through `firehose` (one [`ArchivedRecord`] a line), for
    /// `shoplake replay`; a batch's checkpoint moves only once Firehose has accepted its records.
    pub fn with_archive(mut self, firehose: Firehose) -> Self {
        info!(
            delivery_stream = firehose.name(),
            "stage archives the raw stream through Firehose"
        );
        self.archive = Some(Archive {
            firehose,
            lines: Vec::new(),
        });
        self
    }

    /// Sends the enriched events through `firehose` as NDJSON (its S3 destination being the
    /// lake's `_staging/events/`) instead of writing Parquet staging files; a batch's checkpoint
    /// moves only once Firehose has accepted them.
    pub fn with_events_firehose(mut self, firehose: Firehose) -> Self {
        info!(
            delivery_stream = firehose.name(),
            "stage sends enriched events through Firehose"
        );
        self.events_sink = Some(firehose);
        self
    }

    /// The leases' counters, when the stage uses leases.
    pub fn lease_metrics(&self) -> Option<Arc<LeaseMetrics>> {
        self.leases.as_ref().map(Leases::metrics)
    }

    /// Hands the held leases back (after the last flush), so that other workers go on at once.
    async fn release_leases(&mut self) {
        if let Some(leases) = &mut self.leases
            && let Err(e) = leases.release_all().await
        {
            warn!(error = %e, "releasing the shard leases failed; they expire instead");
        }
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
            self.open_cursor(shard, checkpoint).await?;
        }
        self.last_shard_scan = Some(Instant::now());
        Ok(())
    }

    /// Opens a reader on `shard` just after `checkpoint` (from its start without one).
    async fn open_cursor(&mut self, shard: ShardId, checkpoint: Option<String>) -> Result<()> {
        let from = match checkpoint {
            Some(seq) => StartPosition::AfterSequenceNumber(SequenceNumber(seq)),
            None => StartPosition::TrimHorizon,
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

    /// Feeds `live` with the stream, saving its state with each checkpoint; the state saved by
    /// an earlier run is loaded into it first. Returns how many saved entities were loaded.
    pub fn with_live(mut self, live: Arc<Live>) -> Result<(Self, usize)> {
        let loaded = if live.is_enabled() {
            live.reset();
            live.restore(self.state.load_live()?)?
        } else {
            0
        };
        self.live = live.is_enabled().then_some(live);
        Ok((self, loaded))
    }

    /// Rebuilds the live state from events read back from the lake (a batch of the `events`
    /// table, oldest first), when no saved copy was loaded. Their ids also join the
    /// de-duplication window: a stage that starts without any state re-reads its stream, and the
    /// records the lake already holds must neither be staged again nor feed the engines twice.
    /// Returns how many events were fed, and how many rows no longer pass the contract.
    pub fn seed_from_lake(&mut self, batch: &arrow::array::RecordBatch) -> Result<(usize, usize)> {
        use arrow::array::AsArray;
        use arrow::datatypes::TimestampMicrosecondType;
        let Some(live) = &self.live else {
            return Ok((0, 0));
        };
        use shoplake_events::fields::{EVENT_ID, IS_BOT, RECEIVED_AT};
        let column = |name: &str| {
            batch.column_by_name(name).ok_or_else(|| {
                Error::Encode(format!(
                    "events read back from the lake have no {name} column"
                ))
            })
        };
        let (ids, received, bot) = (column(EVENT_ID)?, column(RECEIVED_AT)?, column(IS_BOT)?);
        let (Some(ids), Some(received), Some(bot)) = (
            ids.as_string_opt::<i32>(),
            received.as_primitive_opt::<TimestampMicrosecondType>(),
            bot.as_boolean_opt(),
        ) else {
            return Err(Error::Encode(
                "events read back from the lake are not in the contract's types".into(),
            ));
        };
        // Bots never feed the engines; their ids are remembered all the same.
        let humans: arrow::array::BooleanArray =
            bot.iter().map(|b| Some(b != Some(true))).collect();
        let fed = live.replay(&arrow::compute::filter_record_batch(batch, &humans)?)?;
        // Event ids are UUIDs (the contract checked them before they were staged).
        for (id, received) in ids.iter().zip(received.iter()) {
            let (Some(id), Some(received)) = (id, received) else {
                continue;
            };
            let Ok(id) = uuid::Uuid::try_parse(id).map(|u| u.as_u128()) else {
                continue;
            };
            if !self.dedup.contains_key(&id) && self.pending_set.insert(id) {
                self.pending_ids.push((id, received));
                self.max_received = self.max_received.max(received);
            }
        }
        Ok(fed)
    }

    /// Calls `probe` before each event reaches the live engines.
    pub fn with_probe(mut self, probe: Probe) -> Self {
        self.probe = Some(probe);
        self
    }

    pub fn metrics(&self) -> Arc<StageMetrics> {
        self.metrics.clone()
    }

    /// Counts into `metrics` (shared with a previous run of the stage, so counters keep going).
    pub fn with_metrics(mut self, metrics: Arc<StageMetrics>) -> Self {
        metrics
            .dedup_entries
            .store(self.dedup.len() as u64, Ordering::Relaxed);
        self.metrics = metrics;
        self
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
            let checkpoint = self.checkpoints.get(&shard.shard_id.0).cloned();
            self.open_cursor(shard.shard_id, checkpoint).await?;
        }
        self.last_shard_scan = Some(Instant::now());
        Ok(())
    }

    fn is_known(&self, shard: &ShardId) -> bool {
        self.cursors.contains_key(shard) || self.checkpoints.contains_key(&shard.0)
    }

    /// Reads each shard once and processes what it got; returns the number of records read.
    pub async fn poll(&mut self) -> Result<usize> {
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
        let mut read = 0;
        let mut lag = 0;
        let ids: Vec<ShardId> = self.cursors.keys().cloned().collect();
        for id in ids {
            let Some(cursor) = self.cursors.get_mut(&id) else {
                continue;
            };
            if cursor.end_reached {
                continue;
            }
            let batch = cursor.reader.next_batch(self.config.read_batch).await?;
            lag = lag.max(batch.millis_behind_latest.unwrap_or(0));
            if let Some(last) = batch.records.last() {
                cursor.pending = Some(last.sequence_number.clone());
            }
            if batch.end_of_shard {
                cursor.end_reached = true;
            }
            read += batch.records.len();
            if !batch.records.is_empty() {
                tokio::task::block_in_place(|| {
                    let cpu = thread_cpu();
                    self.process(&batch.records);
                    self.metrics
                        .process_cpu_nanos
                        .fetch_add((thread_cpu() - cpu).as_nanos() as u64, Ordering::Relaxed);
                });
            }
        }
        self.metrics.lag_millis.store(lag, Ordering::Relaxed);
        if self.cursors.values().any(|c| c.end_reached) && self.batch_records == 0 {
            // Nothing buffered: a closed shard can be checkpointed at its end right away.
            self.flush().await?;
        }
        Ok(read)
    }

    fn process(&mut self, records: &[StreamRecord]) {
        if self.batch_started.is_none() {
            self.batch_started = Some(Instant::now());
        }
        self.batch_records += records.len();
        self.metrics
            .records_read
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        if let Some(archive) = &mut self.archive {
            let stream = self.consumer.name();
            for r in records {
                if !ArchivedRecord::append_line(stream, r, &mut archive.lines) {
                    self.metrics.archive_skipped.fetch_add(1, Ordering::Relaxed);
                    warn!(shard_id = %r.shard_id.0, sequence_number = %r.sequence_number.0, bytes = r.data.len(), "record too large for a Firehose record: left out of the raw archive");
                }
            }
        }
        for r in records {
            match decode(&r.data, r.arrival_micros, &self.limits) {
                Ok(valid) => {
                    self.max_received = self.max_received.max(valid.received_at);
                    // decode checked that event_id is a UUID.
                    let id = uuid::Uuid::try_parse(valid.event_id())
                        .map(|u| u.as_u128())
                        .unwrap_or_default();
                    if self.dedup.contains_key(&id) || !self.pending_set.insert(id) {
                        self.metrics.duplicates.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    self.pending_ids.push((id, valid.received_at));
                    let e = &valid.event;
                    let ctx = e.context.as_ref();
                    let page = ctx.and_then(|c| c.page.as_ref());
                    let utm = ctx.and_then(|c| c.campaign.as_ref());
                    let clicks = ctx.and_then(|c| c.click_ids.as_ref());
                    let channel = classify(&Touch {
                        utm_source: utm.and_then(|u| u.source.as_deref()),
                        utm_medium: utm.and_then(|u| u.medium.as_deref()),
                        gclid: clicks.and_then(|c| c.gclid.as_deref()),
                        fbclid: clicks.and_then(|c| c.fbclid.as_deref()),
                        msclkid: clicks.and_then(|c| c.msclkid.as_deref()),
                        referrer: page.and_then(|p| p.referrer.as_deref()),
                        page_url: page.and_then(|p| p.url.as_deref()),
                    });
                    let bot = self.bots.is_bot(
                        ctx.and_then(|c| c.user_agent.as_deref()),
                        ctx.and_then(|c| c.device_type.as_deref()),
                    );
                    if bot {
                        self.metrics.bots.fetch_add(1, Ordering::Relaxed);
                    }
                    let currency = e.properties.as_ref().and_then(|p| p.currency.as_deref());
                    let fx_rate = currency.and_then(|c| self.fx.rate(c));
                    if currency.is_some() && fx_rate.is_none() {
                        self.metrics
                            .unknown_currency
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    let (session_id, inferred) = self.sessions.of(&valid);
                    if !bot && let Some(live) = &self.live {
                        if let Some(probe) = &mut self.probe {
                            probe(&valid, session_id, live);
                        }
                        self.max_event_time = self.max_event_time.max(valid.event_time);
                        if let Some(decision) = live.observe(&valid, session_id) {
                            self.decisions.push(decision, valid.received_at);
                        }
                    }
                    self.events.append(
                        &valid,
                        &Enrichment {
                            session_id,
                            session_inferred: inferred,
                            channel,
                            reporting_currency: self.fx.reporting(),
                            fx_rate,
                            is_bot: bot,
                            stream_shard: &r.shard_id.0,
                            stream_sequence: &r.sequence_number.0,
                        },
                    );
                }
                Err(rejection) => {
                    let i = Reason::ALL
                        .iter()
                        .position(|x| *x == rejection.reason)
                        .unwrap_or(0);
                    self.metrics.bad_rows_by_reason[i].fetch_add(1, Ordering::Relaxed);
                    self.metrics.bad_rows.fetch_add(1, Ordering::Relaxed);
                    self.bad.append(&BadRow {
                        bad_row_id: format!("{}:{}", r.shard_id.0, r.sequence_number.0),
                        received_at: r.arrival_micros,
                        stage: "validate",
                        rejection,
                        raw: &r.data,
                        stream_shard: &r.shard_id.0,
                        stream_sequence: &r.sequence_number.0,
                    });
                }
            }
        }
    }

    /// Whether the buffered batch is due for a flush.
    pub fn flush_due(&self) -> bool {
        self.batch_records >= self.config.max_batch_records
            || self
                .batch_started
                .is_some_and(|t| t.elapsed() >= Duration::from_millis(self.config.max_batch_age_ms))
    }

    /// Writes the buffered batch to staging, then moves the checkpoints (with the dedup window and
    /// sessions) in one transaction. Staged files come first: a crash between the two re-reads
    /// records whose events are already staged, and compaction drops those copies by event_id.
    pub async fn flush(&mut self) -> Result<FlushReport> {
        let mut report = FlushReport {
            records: self.batch_records as u64,
            ..Default::default()
        };
        let flush_id = format!(
            "{:020}-{}",
            chrono::Utc::now().timestamp_micros(),
            uuid::Uuid::new_v4().simple()
        );
        // The raw archive goes out while the events are encoded and written.
        let archived = async {
            if let Some(a) = &mut self.archive
                && !a.lines.is_empty()
            {
                a.firehose
                    .put_ndjson(&a.lines)
                    .await
                    .map_err(Error::Delivery)?;
                a.lines.clear();
            }
            Ok::<(), Error>(())
        };
        let staged = async {
            if self.events.is_empty() {
                return Ok::<_, Error>(None);
            }
            let batch = self.events.finish()?;
            report.events = batch.num_rows() as u64;
            match &self.events_sink {
                Some(firehose) => {
                    let data = tokio::task::block_in_place(|| encode_ndjson(&batch))?;
                    firehose.put_ndjson(&data).await.map_err(Error::Delivery)?;
                    self.metrics
                        .bytes_staged
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                    Ok(Some(format!("firehose://{}", firehose.name())))
                }
                None => {
                    let data = tokio::task::block_in_place(|| encode_parquet(&batch))?;
                    self.metrics
                        .bytes_staged
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                    let path = put(
                        &self.store,
                        STAGING_EVENTS,
                        &format!("{flush_id}.parquet"),
                        data,
                    )
                    .await?;
                    Ok(Some(path.to_string()))
                }
            }
        };
        let ((), staged) = futures::try_join!(archived, staged)?;
        report.files.extend(staged);
        if !self.decisions.is_empty() {
            let batch = self
                .decisions
                .finish(chrono::Utc::now().timestamp_micros())?;
            let data = encode_parquet(&batch)?;
            let path = put(
                &self.store,
                STAGING_FRAUD_DECISIONS,
                &format!("{flush_id}.parquet"),
                data,
            )
            .await?;
            report.decisions = batch.num_rows() as u64;
            report.files.push(path.to_string());
        }
        if !self.bad.is_empty() {
            let batch = self.bad.finish()?;
            report.bad_rows = batch.num_rows() as u64;
            let data = encode_parquet(&batch)?;
            let path = put(
                &self.store,
                STAGING_BAD_ROWS,
                &format!("{flush_id}.parquet"),
                data,
            )
            .await?;
            report.files.push(path.to_string());
        }

        // Expire the dedup window and idle sessions.
        let ttl = self.config.dedup_ttl_hours as i64 * 3_600_000_000;
        let mut expired_ids = Vec::new();
        if self.dedup.len() + self.pending_ids.len() > self.config.dedup_max_entries
            || self
                .metrics
                .flushes
                .load(Ordering::Relaxed)
                .is_multiple_of(100)
        {
            let mut cutoff = self.max_received.saturating_sub(ttl);
            let over = (self.dedup.len() + self.pending_ids.len())
                .saturating_sub(self.config.dedup_max_entries);
            if over > 0 {
                let mut times: Vec<i64> = self.dedup.values().copied().collect();
                let nth = over.min(times.len().saturating_sub(1));
                times.select_nth_unstable(nth);
                cutoff = cutoff.max(times[nth]);
            }
            self.dedup.retain(|id, seen| {
                let keep = *seen >= cutoff;
                if !keep {
                    expired_ids.push(*id);
                }
                keep
            });
        }
        let expired_sessions = self
            .sessions
            .expire(self.max_received.saturating_sub(2 * 3_600_000_000));
        let sessions = self.sessions.take_dirty();
        let live = match &self.live {
            Some(live) => {
                // Expiry walks the whole state: every 20 flushes (a minute or two) is enough for
                // windows of ten minutes and more.
                if self.max_event_time > i64::MIN
                    && self.metrics.flushes.load(Ordering::Relaxed) % 20 == 19
                {
                    live.expire(self.max_event_time);
                }
                live.take_dirty()
            }
            None => Vec::new(),
        };

        let mut checkpoints: Vec<(String, String)> = Vec::new();
        let mut ended = Vec::new();
        for (id, cursor) in &mut self.cursors {
            if cursor.end_reached {
                checkpoints.push((id.0.clone(), SHARD_END.to_owned()));
                ended.push(id.clone());
            } else if let Some(seq) = cursor.pending.take() {
                checkpoints.push((id.0.clone(), seq.0));
            }
        }
        if let Some(leases) = &mut self.leases {
            // The staged files are durable: the checkpoints can go into the leases.
            for shard in leases.checkpoint(&checkpoints).await {
                self.cursors.remove(&shard);
                ended.retain(|s| *s != shard);
            }
        }
        let new_ids = std::mem::take(&mut self.pending_ids);
        self.dedup.extend(new_ids.iter().copied());
        self.pending_set.clear();
        for (shard, seq) in &checkpoints {
            self.checkpoints.insert(shard.clone(), seq.clone());
        }
        let delta = StateDelta {
            checkpoints,
            new_ids,
            expired_ids,
            sessions,
            expired_sessions,
            live,
        };
        // One commit at a time, in order: the previous one must have landed before this one
        // starts. This one then runs while the stage reads and processes the next batch: the
        // checkpoint is durable once it completes, and until then a crash re-reads the records
        // (whose staged files are already written), as before.
        self.wait_for_commit().await?;
        let state = self.state.clone();
        self.committing = Some(tokio::task::spawn_blocking(move || state.commit(&delta)));
        for id in ended {
            self.cursors.remove(&id);
            info!(shard_id = %id.0, "shard finished");
            self.finished.insert(id);
            self.last_shard_scan = None;
            self.shards_listed = None;
        }

        report.duplicates = self.metrics.duplicates.load(Ordering::Relaxed);
        self.metrics
            .events_staged
            .fetch_add(report.events, Ordering::Relaxed);
        self.metrics.flushes.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .dedup_entries
            .store(self.dedup.len() as u64, Ordering::Relaxed);
        self.batch_records = 0;
        self.batch_started = None;
        if report.records > 0 {
            debug!(
                records = report.records,
                events = report.events,
                bad_rows = report.bad_rows,
                "staged"
            );
        }
        Ok(report)
    }

    /// Waits for the state commit in flight, if any.
    async fn wait_for_commit(&mut self) -> Result<()> {
        match self.committing.take() {
            Some(handle) => handle.await.map_err(|e| Error::State {
                path: "state commit".into(),
                source: Box::new(e),
            })?,
            None => Ok(()),
        }
    }

    /// Reads until every shard is caught up, flushing as batches fill, then flushes the rest.
    pub async fn drain(&mut self) -> Result<FlushReport> {
        let mut total = FlushReport::default();
        loop {
            let read = self.poll().await?;
            if self.flush_due() || read == 0 {
                let r = self.flush().await?;
                total.records += r.records;
                total.events += r.events;
                total.bad_rows += r.bad_rows;
                total.decisions += r.decisions;
                total.duplicates = r.duplicates;
                total.files.extend(r.files);
            }
            // A flush that finished a closed shard (resharding) makes its children readable:
            // the drain goes on to them instead of stopping at the parent's end.
            if read == 0 && self.last_shard_scan.is_some() {
                self.wait_for_commit().await?;
                self.release_leases().await;
                return Ok(total);
            }
        }
    }

    /// Runs until `shutdown` resolves, then flushes what is buffered and returns.
    pub async fn run(&mut self, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
        tokio::pin!(shutdown);
        let mut idle = Duration::from_millis(10);
        loop {
            // Shutdown is checked between polls, never raced against one: a poll cut off
            // mid-flush would have taken a batch out of the builders without staging it.
            if futures::poll!(&mut shutdown).is_ready() {
                break;
            }
            let read = match self.poll().await {
                Ok(n) => n,
                Err(e) if e.is_retryable() => {
                    warn!(error = %e, "stream read failed, retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if self.flush_due() {
                self.flush().await?;
            }
            if read == 0 {
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(idle) => {}
                }
                idle = (idle * 2).min(Duration::from_millis(200));
            } else {
                idle = Duration::from_millis(10);
            }
        }
        let r = self.flush().await?;
        self.wait_for_commit().await?;
        self.release_leases().await;
        info!(
            records = r.records,
            events = r.events,
            "stage stopped after a final flush"
        );
        Ok(())
    }
}

impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Self {
        Error::Encode(e.to_string())
    }
}

//! The streaming stage's loop: source → admit → enrich → sink, then the checkpoint.
//!
//! ```text
//! Source::read (shards, leases; tee to the raw archive)
//!   → admit (decode + validate ─► bad rows; dedup by event id; bots)
//!   → enrich (event time, session, channel, fx) ─► Arrow builders; Observer::observe
//! flush: Sink::stage (events, bad rows, the observer's rows) ∥ the raw archive
//!   → expire the dedup window and sessions → Source::take_checkpoints (leases)
//!   → one redb commit: checkpoints + dedup window + sessions + the observer's state
//! ```

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use object_store::{ObjectStore, ObjectStoreExt};
use shoplake_events::erasure::{TOMBSTONES_PREFIX, Tombstones};
use shoplake_events::{BadRow, BadRowBatchBuilder, Enrichment, EventBatchBuilder, Limits, Reason};
use shoplake_ingest::{Firehose, StreamConsumer, StreamRecord};
use shoplake_server::telemetry::{self, Collector, DescriptorEncoder};
use tracing::{debug, error, info, warn};

use crate::admit::{Admission, admit};
use crate::clock::StageClock;
use crate::config::StageConfig;
use crate::enrich::bots::BotCache;
use crate::enrich::channel::{Touch, classify};
use crate::enrich::fx::FxRates;
use crate::enrich::sessions::Sessions;
use crate::leases::{LeaseMetrics, Leases};
use crate::observe::Observer;
use crate::sink::Sink;
use crate::source::Source;
use crate::state::{IdMap, Seen, Sighting, StateDelta, StateStore};
use crate::{Error, Result};

/// Counters of the stage, readable while it runs (exported under the [`names`] below).
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
    /// Events on which a live engine panicked: they land in the lake all the same; the live
    /// state (scores, recommendations) misses them.
    pub live_panics: AtomicU64,
    /// Records of people erased while they were in flight (tombstoned), dropped.
    pub erased: AtomicU64,
}

/// Metric names of the stage (counters without `_total`, which the encoder adds).
pub mod names {
    pub const RECORDS_READ: &str = "shoplake_stage_records_read";
    pub const EVENTS_STAGED: &str = "shoplake_stage_events_staged";
    pub const DUPLICATES: &str = "shoplake_stage_duplicates";
    pub const FLUSHES: &str = "shoplake_stage_flushes";
    pub const BYTES_STAGED: &str = "shoplake_stage_bytes_staged";
    pub const UNKNOWN_CURRENCY: &str = "shoplake_stage_unknown_currency";
    pub const ARCHIVE_SKIPPED: &str = "shoplake_stage_archive_skipped";
    pub const BOT_EVENTS: &str = "shoplake_stage_bot_events";
    pub const BAD_ROWS: &str = "shoplake_stage_bad_rows";
    pub const LAG: &str = "shoplake_stage_lag_milliseconds";
    pub const PROCESS_CPU: &str = "shoplake_stage_process_cpu_seconds";
    pub const DEDUP_ENTRIES: &str = "shoplake_stage_dedup_entries";
    pub const LIVE_PANICS: &str = "shoplake_stage_live_panics";
    pub const ERASED: &str = "shoplake_stage_erased_records";
}

impl Collector for StageMetrics {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let counters: [(&str, &str, &AtomicU64); 10] = [
            (
                names::RECORDS_READ,
                "Records read from the stream.",
                &self.records_read,
            ),
            (
                names::EVENTS_STAGED,
                "Valid, unique events written to staging.",
                &self.events_staged,
            ),
            (
                names::DUPLICATES,
                "Events dropped as duplicates of an earlier event_id.",
                &self.duplicates,
            ),
            (
                names::FLUSHES,
                "Staging flushes (each one moves the checkpoint).",
                &self.flushes,
            ),
            (
                names::BYTES_STAGED,
                "Bytes of Parquet written to staging.",
                &self.bytes_staged,
            ),
            (
                names::UNKNOWN_CURRENCY,
                "Events whose currency has no reporting rate.",
                &self.unknown_currency,
            ),
            (
                names::ARCHIVE_SKIPPED,
                "Records too large for a Firehose record, left out of the raw archive.",
                &self.archive_skipped,
            ),
            (
                names::BOT_EVENTS,
                "Events marked as coming from bots.",
                &self.bots,
            ),
            (
                names::LIVE_PANICS,
                "Events a live engine panicked on (in the lake all the same, missed by live state).",
                &self.live_panics,
            ),
            (
                names::ERASED,
                "Records of erased people (tombstoned) that arrived after the request, dropped.",
                &self.erased,
            ),
        ];
        for (name, help, v) in counters {
            telemetry::counter(&mut enc, name, help, load(v))?;
        }
        telemetry::counter_by(
            &mut enc,
            names::BAD_ROWS,
            "Inputs rejected, by reason.",
            "reason",
            Reason::ALL
                .iter()
                .zip(&self.bad_rows_by_reason)
                .map(|(r, n)| (r.as_str(), load(n))),
        )?;
        telemetry::gauge(
            &mut enc,
            names::LAG,
            "How far the stage is behind the tip of the stream.",
            self.lag_millis.load(Ordering::Relaxed),
        )?;
        telemetry::seconds_counter(
            &mut enc,
            names::PROCESS_CPU,
            "Thread CPU time decoding, validating, de-duplicating and enriching records.",
            load(&self.process_cpu_nanos) as f64 / 1e9,
        )?;
        telemetry::gauge(
            &mut enc,
            names::DEDUP_ENTRIES,
            "Event ids held for de-duplication.",
            load(&self.dedup_entries),
        )
    }
}

/// CPU time of the calling thread so far.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// What one drain or flush did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlushReport {
    pub records: u64,
    pub events: u64,
    pub duplicates: u64,
    pub bad_rows: u64,
    /// Rows the observer staged (the live engines: fraud decisions).
    pub decisions: u64,
    pub files: Vec<String>,
}

/// The streaming stage over one stream, one state database and one lake.
pub struct Stage {
    source: Source,
    sink: Sink,
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
    pending: IdMap,
    events: EventBatchBuilder,
    bad: BadRowBatchBuilder,
    batch_records: usize,
    batch_started: Option<Instant>,
    /// The time the dedup window and sessions expire by (`clock`: the stream's, guarded against
    /// servers' clock jumps).
    clock: StageClock,
    metrics: Arc<StageMetrics>,
    /// Fed by every valid, unique, non-bot event (the live engines: fraud scoring and
    /// recommendations).
    observer: Option<Arc<dyn Observer>>,
    /// The lake's store, where the erasure tombstones are read from.
    store: Arc<dyn ObjectStore>,
    /// People erased recently ([`shoplake_events::erasure`]), re-read every
    /// [`TOMBSTONES_EVERY`].
    tombstones: Tombstones,
    tombstones_read: Option<Instant>,
    /// Each request's tombstones by object (written once: read once).
    tombstone_objects: std::collections::HashMap<object_store::path::Path, Tombstones>,
}

/// How often the stage reads the erasure tombstones again: an event of a person erased arrives
/// at most this long after the request and still lands (compaction drops it then).
const TOMBSTONES_EVERY: Duration = Duration::from_secs(10);

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
        let clock = StageClock::new(
            loaded
                .dedup
                .values()
                .map(|s| s.received)
                .max()
                .unwrap_or(i64::MIN),
        );
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
                crate::config::micros(config.session_timeout),
                loaded.sessions,
            ),
            bots: BotCache::default(),
            // Room for a whole batch: untouched room costs no memory, regrowing copies it all.
            events: EventBatchBuilder::with_capacity(config.max_batch_records.min(1 << 20)),
            source: Source::new(consumer, &loaded.checkpoints),
            sink: Sink::new(store.clone()),
            store,
            tombstones: Tombstones::default(),
            tombstones_read: None,
            tombstone_objects: std::collections::HashMap::new(),
            state: Arc::new(state),
            committing: None,
            fx,
            dedup: loaded.dedup,
            pending: IdMap::default(),
            bad: BadRowBatchBuilder::default(),
            batch_records: 0,
            batch_started: None,
            clock,
            metrics,
            observer: None,
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
        self.source.set_leases(leases);
        self
    }

    /// Archives every record read through `firehose` (one
    /// [`shoplake_ingest::firehose::ArchivedRecord`] a line), for
    /// `shoplake replay`; a batch's checkpoint moves only once Firehose has accepted its records.
    pub fn with_archive(mut self, firehose: Firehose) -> Self {
        info!(
            delivery_stream = firehose.name(),
            "stage archives the raw stream through Firehose"
        );
        self.source.set_archive(firehose);
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
        self.sink.set_events_firehose(firehose);
        self
    }

    /// The leases' counters, when the stage uses leases.
    pub fn lease_metrics(&self) -> Option<Arc<LeaseMetrics>> {
        self.source.lease_metrics()
    }

    /// Feeds `observer` with the stream, saving its state with each checkpoint; the state saved
    /// by an earlier run is loaded into it first. Returns how many saved entities were loaded.
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Result<(Self, usize)> {
        observer.reset();
        let loaded = observer
            .restore(self.state.load_live()?)
            .map_err(|source| Error::Observer { source })?;
        self.observer = Some(observer);
        Ok((self, loaded))
    }

    /// Rebuilds the observer's state from events read back from the lake (a batch of the `events`
    /// table, oldest first), when no saved copy was loaded. Their ids also join the
    /// de-duplication window: a stage that starts without any state re-reads its stream, and the
    /// records the lake already holds must neither be staged again nor be observed twice.
    /// Returns how many events were fed, and how many rows no longer pass the contract.
    pub fn seed_from_lake(&mut self, batch: &arrow::array::RecordBatch) -> Result<(usize, usize)> {
        use arrow::array::AsArray;
        use arrow::datatypes::TimestampMicrosecondType;
        let Some(observer) = &self.observer else {
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
        let fed = observer
            .replay(&arrow::compute::filter_record_batch(batch, &humans)?)
            .map_err(|source| Error::Observer { source })?;
        // Event ids are UUIDs (the contract checked them before they were staged).
        for (id, received) in ids.iter().zip(received.iter()) {
            let (Some(id), Some(received)) = (id, received) else {
                continue;
            };
            let Ok(id) = uuid::Uuid::try_parse(id).map(|u| u.as_u128()) else {
                continue;
            };
            // Their payloads' fingerprints are not known: a later copy is a plain duplicate.
            if !self.dedup.contains_key(&id) && !self.pending.contains_key(&id) {
                self.pending.insert(
                    id,
                    Seen {
                        received,
                        fingerprint: 0,
                    },
                );
                self.clock.observe(received);
            }
        }
        Ok(fed)
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

    /// Reads each shard once and processes what it got; returns the number of records read.
    pub async fn poll(&mut self) -> Result<usize> {
        self.read_tombstones().await;
        let reads = self.source.read(self.config.read_batch).await?;
        let mut read = 0;
        let mut lag = 0;
        for shard in reads {
            lag = lag.max(shard.millis_behind_latest.unwrap_or(0));
            read += shard.records.len();
            if !shard.records.is_empty() {
                tokio::task::block_in_place(|| {
                    let cpu = thread_cpu();
                    self.process(&shard.records);
                    self.metrics
                        .process_cpu_nanos
                        .fetch_add((thread_cpu() - cpu).as_nanos() as u64, Ordering::Relaxed);
                });
            }
        }
        self.metrics.lag_millis.store(lag, Ordering::Relaxed);
        if self.source.end_reached() && self.batch_records == 0 {
            // Nothing buffered: a closed shard can be checkpointed at its end right away.
            self.flush().await?;
        }
        Ok(read)
    }

    /// Reads the erasure tombstones again when [`TOMBSTONES_EVERY`] has passed. A failure keeps
    /// the ones read before (compaction checks them again), and is logged.
    async fn read_tombstones(&mut self) {
        if self
            .tombstones_read
            .is_some_and(|t| t.elapsed() < TOMBSTONES_EVERY)
        {
            return;
        }
        self.tombstones_read = Some(Instant::now());
        let prefix = object_store::path::Path::from(TOMBSTONES_PREFIX);
        let listed: Vec<_> =
            match futures::TryStreamExt::try_collect(self.store.list(Some(&prefix))).await {
                Ok(listed) => listed,
                Err(e) => {
                    warn!(path = TOMBSTONES_PREFIX, error = %e, "erasure tombstones not listed");
                    return;
                }
            };
        let mut objects = std::collections::HashMap::with_capacity(listed.len());
        for o in listed {
            if let Some(known) = self.tombstone_objects.remove(&o.location) {
                objects.insert(o.location, known);
                continue;
            }
            let read = match self.store.get(&o.location).await {
                Ok(got) => got.bytes().await,
                // Expired and deleted since the listing.
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => Err(e),
            };
            match read.map(|bytes| Tombstones::from_json(&bytes)) {
                Ok(Ok(t)) => {
                    objects.insert(o.location, t);
                }
                Ok(Err(e)) => {
                    warn!(path = %o.location, error = %e, "erasure tombstones unreadable")
                }
                Err(e) => {
                    // Not kept as read: the next round, TOMBSTONES_EVERY later, reads it again.
                    warn!(path = %o.location, error = %e, "erasure tombstones not read");
                }
            }
        }
        self.tombstone_objects = objects;
        let now = chrono::Utc::now().timestamp_micros();
        self.tombstones = Tombstones::merge(self.tombstone_objects.values(), now);
    }

    fn process(&mut self, records: &[StreamRecord]) {
        if self.batch_started.is_none() {
            self.batch_started = Some(Instant::now());
        }
        self.batch_records += records.len();
        self.metrics
            .records_read
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        let mut skipped = 0;
        for r in records {
            let (dedup, pending, clock) = (&self.dedup, &mut self.pending, &mut self.clock);
            let admitted = admit(
                &r.data,
                r.arrival_micros,
                &self.limits,
                &mut self.bots,
                |id, seen| {
                    clock.observe(seen.received);
                    let sighting =
                        Seen::sighting(dedup.get(&id).or_else(|| pending.get(&id)), seen);
                    if sighting == Sighting::First {
                        pending.insert(id, seen);
                    }
                    sighting
                },
            );
            // A person erased while their records were in flight: the record goes nowhere, not
            // even into the raw archive (no check at all while nobody is tombstoned).
            let erased = !self.tombstones.is_empty()
                && match &admitted {
                    Admission::Admitted { event, .. } => self.tombstones.erases_either(
                        event.event.user_id.as_ref().map(|s| s.0.as_ref()),
                        event.event.anonymous_id.as_ref().map(|s| s.0.as_ref()),
                    ),
                    Admission::Rejected(_) | Admission::Duplicate => {
                        self.tombstones.erases_raw(&r.data)
                    }
                };
            if erased {
                self.metrics.erased.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            skipped += self.source.tee(std::slice::from_ref(r));
            match admitted {
                Admission::Admitted {
                    event: valid, bot, ..
                } => {
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
                    if !bot && let Some(observer) = &self.observer {
                        // A bug in a live engine must not stop the pipeline nor lose the event:
                        // it lands in the lake, the live state misses it, and it is counted and
                        // logged with its id. (The engines' locks do not poison: parking_lot.)
                        let observed =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                observer.observe(&valid, session_id)
                            }));
                        if observed.is_err() {
                            self.metrics.live_panics.fetch_add(1, Ordering::Relaxed);
                            error!(
                                event_id = valid.event_id(),
                                "a live engine panicked on this event: it goes to the lake, \
                                 the live state misses it"
                            );
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
                Admission::Duplicate => {
                    self.metrics.duplicates.fetch_add(1, Ordering::Relaxed);
                }
                Admission::Rejected(rejection) => {
                    let stage = match rejection.reason {
                        Reason::ConflictingDuplicate => "dedup",
                        _ => "validate",
                    };
                    let i = Reason::ALL
                        .iter()
                        .position(|x| *x == rejection.reason)
                        .unwrap_or(0);
                    self.metrics.bad_rows_by_reason[i].fetch_add(1, Ordering::Relaxed);
                    self.metrics.bad_rows.fetch_add(1, Ordering::Relaxed);
                    self.bad.append(&BadRow {
                        bad_row_id: format!("{}:{}", r.shard_id.0, r.sequence_number.0),
                        received_at: r.arrival_micros,
                        stage,
                        rejection,
                        raw: &r.data,
                        stream_shard: &r.shard_id.0,
                        stream_sequence: &r.sequence_number.0,
                    });
                }
            }
        }
        self.metrics
            .archive_skipped
            .fetch_add(skipped, Ordering::Relaxed);
    }

    /// Whether the buffered batch is due for a flush.
    pub fn flush_due(&self) -> bool {
        self.batch_records >= self.config.max_batch_records
            || self
                .batch_started
                .is_some_and(|t| t.elapsed() >= self.config.max_batch_age)
    }

    /// Writes the buffered batch to staging, then moves the checkpoints (with the dedup window and
    /// sessions) in one transaction. Staged files come first: a crash between the two re-reads
    /// records whose events are already staged, and compaction drops those copies by event_id.
    pub async fn flush(&mut self) -> Result<FlushReport> {
        let flush_id = format!(
            "{:020}-{}",
            chrono::Utc::now().timestamp_micros(),
            uuid::Uuid::new_v4().simple()
        );
        let events = (!self.events.is_empty())
            .then(|| self.events.finish())
            .transpose()?;
        let bad_rows = (!self.bad.is_empty())
            .then(|| self.bad.finish())
            .transpose()?;
        let observed = match &self.observer {
            Some(o) => o
                .take_rows(chrono::Utc::now().timestamp_micros())
                .map_err(|source| Error::Observer { source })?,
            None => Vec::new(),
        };
        // The raw archive goes out while the batch is encoded and written.
        let ((), staged) = futures::try_join!(
            self.source.flush_archive(),
            self.sink.stage(&flush_id, events, bad_rows, observed)
        )?;
        self.metrics
            .bytes_staged
            .fetch_add(staged.event_bytes, Ordering::Relaxed);
        shoplake_server::faults::point("stage.staged");
        self.checkpoint().await?;

        let report = FlushReport {
            records: self.batch_records as u64,
            events: staged.events,
            duplicates: self.metrics.duplicates.load(Ordering::Relaxed),
            bad_rows: staged.bad_rows,
            decisions: staged.observed,
            files: staged.files,
        };
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

    /// After the batch is staged: expires the dedup window and idle sessions, takes the
    /// checkpoints of what was read, and starts the state commit that makes them durable.
    async fn checkpoint(&mut self) -> Result<()> {
        let now = self.clock.now();
        let expired_ids = self.expire_dedup_window(now);
        let expired_sessions = self.sessions.expire(now.saturating_sub(2 * 3_600_000_000));
        let sessions = self.sessions.take_dirty();
        let live = match &self.observer {
            Some(o) => o.take_dirty(self.metrics.flushes.load(Ordering::Relaxed)),
            None => Vec::new(),
        };
        let checkpoints = self.source.take_checkpoints().await;
        let new_ids: Vec<(u128, Seen)> = self.pending.drain().collect();
        self.dedup.extend(new_ids.iter().copied());
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
        shoplake_server::faults::point("stage.checkpoint");
        let state = self.state.clone();
        self.committing = Some(tokio::task::spawn_blocking(move || state.commit(&delta)));
        Ok(())
    }

    /// Forgets the ids received more than the TTL before the latest, and the oldest beyond the
    /// window's size; returns them. Walks the window only when over its size or every 100
    /// flushes.
    fn expire_dedup_window(&mut self, now: i64) -> Vec<u128> {
        let ttl = crate::config::micros(self.config.dedup_ttl);
        let mut expired_ids = Vec::new();
        let size = self.dedup.len() + self.pending.len();
        if size <= self.config.dedup_max_entries
            && !self
                .metrics
                .flushes
                .load(Ordering::Relaxed)
                .is_multiple_of(100)
        {
            return expired_ids;
        }
        let mut cutoff = now.saturating_sub(ttl);
        let over = size.saturating_sub(self.config.dedup_max_entries);
        if over > 0 {
            let mut times: Vec<i64> = self.dedup.values().map(|s| s.received).collect();
            let nth = over.min(times.len().saturating_sub(1));
            times.select_nth_unstable(nth);
            cutoff = cutoff.max(times[nth]);
        }
        self.dedup.retain(|id, seen| {
            let keep = seen.received >= cutoff;
            if !keep {
                expired_ids.push(*id);
            }
            keep
        });
        expired_ids
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
            if read == 0 && self.source.scanned() {
                // A shard held by a lease that has not moved since this worker looked may be a
                // crashed worker's: wait until it moves (its owner is alive and reads it) or
                // expires (this worker takes it over), or the drain would end with the shard
                // unread.
                if self.source.waiting_on_others() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                self.wait_for_commit().await?;
                self.source.release_leases().await;
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
        self.source.release_leases().await;
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

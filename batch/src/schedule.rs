//! The lake's maintenance on a schedule, as `shoplake up` runs it: compaction every interval, the
//! daily rollups' refresh every interval of its own,
//! OPTIMIZE of every table, the `product_affinity` rebuild, and retention with VACUUM
//! ([`crate::lifecycle`]) at their own, longer intervals.
//!
//! Each job runs after the compaction of its tick, once its interval has passed since it last
//! ran, so jobs never overlap. A failure (a conflict with another writer included) is logged as a
//! warning and retried at the next interval: every job is idempotent, and the next run starts
//! from what the lake holds then.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shoplake_server::telemetry::{self, Collector, DescriptorEncoder};
use tracing::{info, warn};

use crate::affinity::{self, AffinityOptions};
use crate::lifecycle::{self, Retention};
use crate::{CompactOptions, CompactReport, Lake, optimize, tables};

/// What the scheduled compactions did, for `/metrics`.
#[derive(Debug, Default)]
pub struct CompactionMetrics {
    events: Arc<AtomicU64>,
    bad_rows: AtomicU64,
    quarantined_files: AtomicU64,
    already_in_lake: AtomicU64,
    lake_files_read: AtomicU64,
    beyond_dedup_window: AtomicU64,
    conflicts: AtomicU64,
    failures: AtomicU64,
    retention_files: AtomicU64,
    retention_objects: AtomicU64,
    vacuum_files: AtomicU64,
    /// Bytes of storage freed: VACUUM's deleted files and retention's deleted objects.
    bytes_reclaimed: AtomicU64,
}

impl CompactionMetrics {
    fn add(&self, r: &CompactReport) {
        self.events.fetch_add(r.events_written, Ordering::Relaxed);
        self.bad_rows
            .fetch_add(r.bad_rows_written, Ordering::Relaxed);
        self.quarantined_files
            .fetch_add(r.quarantined_files, Ordering::Relaxed);
        self.already_in_lake
            .fetch_add(r.already_in_lake, Ordering::Relaxed);
        self.lake_files_read
            .fetch_add(r.lake_files_read, Ordering::Relaxed);
        self.beyond_dedup_window
            .fetch_add(r.beyond_dedup_window, Ordering::Relaxed);
        self.conflicts.fetch_add(r.conflicts, Ordering::Relaxed);
    }
}

impl Collector for CompactionMetrics {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        telemetry::counter(
            &mut enc,
            "shoplake_compaction_events_written",
            "Events compaction appended to the lake.",
            get(&self.events),
        )?;
        telemetry::counter(
            &mut enc,
            "shoplake_compaction_bad_rows_written",
            "Bad rows compaction appended to the lake.",
            get(&self.bad_rows),
        )?;
        telemetry::counter(
            &mut enc,
            "shoplake_compaction_quarantined_files",
            "Staged files compaction could not read, moved under _quarantine/ with a bad row each.",
            get(&self.quarantined_files),
        )?;
        telemetry::counter(
            &mut enc,
            "shoplake_compaction_already_in_lake",
            "Staged events the lake already held, dropped by the key index (re-reads, retries \
             past the stage's window, shards that moved).",
            get(&self.already_in_lake),
        )?;
        telemetry::counter(
            &mut enc,
            "shoplake_compaction_lake_files_read",
            "Lake files whose key column the key index read (to index them, or to confirm a key).",
            get(&self.lake_files_read),
        )?;
        telemetry::counter(
            &mut enc,
            "shoplake_compaction_beyond_dedup_window",
            "Events written with a clock correction over 12 h: a retry of one sent after the \
             device's clock moved by over a day is the one duplicate the key index can miss.",
            get(&self.beyond_dedup_window),
        )?;
        telemetry::counter(
            &mut enc,
            "shoplake_compaction_conflicts",
            "Commits that lost to another writer's commit (the step ran again on its result).",
            get(&self.conflicts),
        )?;
        telemetry::counter(
            &mut enc,
            "shoplake_compaction_failures",
            "Compactions that failed (each is retried at the next interval).",
            get(&self.failures),
        )?;
        telemetry::counter(
            &mut enc,
            "shoplake_retention_files_removed",
            "Files of days past their table's retention period removed from the tables.",
            get(&self.retention_files),
        )?;
        telemetry::counter(
            &mut enc,
            "shoplake_retention_objects_deleted",
            "Quarantined and raw archive objects deleted past their retention period.",
            get(&self.retention_objects),
        )?;
        telemetry::counter(
            &mut enc,
            "shoplake_vacuum_files_deleted",
            "Files no table version within the grace period needed, deleted from storage.",
            get(&self.vacuum_files),
        )?;
        telemetry::counter(
            &mut enc,
            "shoplake_lake_bytes_reclaimed",
            "Bytes of storage freed by VACUUM and by retention's object deletes.",
            get(&self.bytes_reclaimed),
        )
    }
}

/// Shortest time between two compactions.
const MIN_COMPACT_INTERVAL: Duration = Duration::from_secs(1);

/// What to run and how often.
///
/// ```no_run
/// # async fn example(lake: std::sync::Arc<shoplake_batch::Lake>) {
/// use std::time::Duration;
/// let schedule = shoplake_batch::Schedule::new(
///     lake,
///     shoplake_batch::CompactOptions::default(),
///     Duration::from_secs(15),
/// )
/// .with_optimize(Duration::from_secs(3600));
/// let compacted = schedule.events_compacted();
/// schedule.run(async {
///     let _ = tokio::signal::ctrl_c().await;
/// })
/// .await;
/// # }
/// ```
#[derive(Debug)]
pub struct Schedule {
    lake: Arc<Lake>,
    compact: CompactOptions,
    compact_every: Duration,
    /// Time between refreshes of the daily rollups (None: after every compaction).
    rollups_every: Option<Duration>,
    optimize_every: Option<Duration>,
    affinity: Option<(Duration, AffinityOptions)>,
    /// Retention then VACUUM (with its grace) every interval.
    lifecycle: Option<(Duration, Retention, Duration)>,
    metrics: Arc<CompactionMetrics>,
}

impl Schedule {
    /// Compaction of `lake` with `compact` every `every` (at least a second); no other job.
    pub fn new(lake: Arc<Lake>, compact: CompactOptions, every: Duration) -> Self {
        Schedule {
            lake,
            compact,
            compact_every: every.max(MIN_COMPACT_INTERVAL),
            rollups_every: None,
            optimize_every: None,
            affinity: None,
            lifecycle: None,
            metrics: Arc::default(),
        }
    }

    /// Computes the daily rollups of the days compaction touched ([`crate::rollup::refresh`])
    /// at most every `every` instead of after every compaction: a busy day is read once a
    /// minute rather than every 15 seconds; reports on rollups lag by up to `every`.
    pub fn with_rollups(mut self, every: Duration) -> Self {
        self.rollups_every = Some(every);
        self
    }

    /// Also OPTIMIZE every table of the lake every `every`; zero turns it off.
    pub fn with_optimize(mut self, every: Duration) -> Self {
        self.optimize_every = Some(every).filter(|e| !e.is_zero());
        self
    }

    /// Also rebuild `product_affinity` with `options` every `every`; zero turns it off.
    pub fn with_affinity(mut self, every: Duration, options: AffinityOptions) -> Self {
        self.affinity = Some((every, options)).filter(|(e, _)| !e.is_zero());
        self
    }

    /// Also apply `retention`, then VACUUM every table with `grace`, every `every`; zero turns
    /// it off.
    pub fn with_lifecycle(
        mut self,
        every: Duration,
        retention: Retention,
        grace: Duration,
    ) -> Self {
        self.lifecycle = Some((every, retention, grace)).filter(|(e, _, _)| !e.is_zero());
        self
    }

    /// The events compaction has written since the schedule started (for progress reports).
    pub fn events_compacted(&self) -> Arc<AtomicU64> {
        self.metrics.events.clone()
    }

    /// The compactions' counters, for `/metrics`.
    pub fn metrics(&self) -> Arc<CompactionMetrics> {
        self.metrics.clone()
    }

    /// Runs the jobs until `stop` completes. A stop waits for the job that is running, if any;
    /// the next interval does not start.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        let mut last_rollups = Instant::now();
        let mut last_optimize = Instant::now();
        let mut last_affinity = Instant::now();
        let mut last_lifecycle = Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.compact_every) => {}
                _ = &mut stop => return,
            }
            self.compact().await;
            if self
                .rollups_every
                .is_none_or(|every| last_rollups.elapsed() >= every)
            {
                last_rollups = Instant::now();
                self.refresh_rollups().await;
            }
            if let Some(every) = self.optimize_every
                && last_optimize.elapsed() >= every
            {
                last_optimize = Instant::now();
                self.optimize().await;
            }
            if let Some((every, options)) = &self.affinity
                && last_affinity.elapsed() >= *every
            {
                last_affinity = Instant::now();
                self.affinity(options).await;
            }
            if let Some((every, retention, grace)) = &self.lifecycle
                && last_lifecycle.elapsed() >= *every
            {
                last_lifecycle = Instant::now();
                self.lifecycle(retention, *grace).await;
            }
        }
    }

    async fn refresh_rollups(&self) {
        if let Err(e) = crate::rollup::refresh(&self.lake, &self.compact.write_options()).await {
            self.metrics.failures.fetch_add(1, Ordering::Relaxed);
            warn!(error = %e, "the rollups' refresh failed; it is retried at the next interval");
        }
    }

    async fn compact(&self) {
        match crate::compact_staged(&self.lake, &self.compact).await {
            Ok(r) => self.metrics.add(&r),
            Err(e) => {
                self.metrics.failures.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "compaction failed; it is retried at the next interval")
            }
        }
    }

    async fn optimize(&self) {
        let write = self.compact.write_options();
        for table in tables::ALL.map(|t| t.name) {
            match optimize::optimize(&self.lake, table, &write).await {
                Ok(r) if r.files_removed > 0 => info!(
                    table,
                    removed = r.files_removed,
                    added = r.files_added,
                    "optimized"
                ),
                Ok(_) => {}
                Err(e) => {
                    warn!(table, error = %e, "optimize failed; it is retried at the next interval")
                }
            }
        }
    }

    async fn lifecycle(&self, retention: &Retention, grace: Duration) {
        let now = chrono::Utc::now();
        match lifecycle::retain(&self.lake, retention, now).await {
            Ok(r) => {
                let files: u64 = r.tables.values().map(|t| t.files).sum();
                let objects = r.quarantine_objects_deleted + r.raw_archive_objects_deleted;
                let m = &self.metrics;
                m.retention_files.fetch_add(files, Ordering::Relaxed);
                m.retention_objects.fetch_add(objects, Ordering::Relaxed);
                m.bytes_reclaimed
                    .fetch_add(r.bytes_deleted, Ordering::Relaxed);
                info!(files, objects, "retention applied");
            }
            Err(e) => warn!(error = %e, "retention failed; it is retried at the next interval"),
        }
        for table in tables::ALL.map(|t| t.name) {
            match lifecycle::vacuum(&self.lake, table, grace, now).await {
                Ok(r) => {
                    let m = &self.metrics;
                    m.vacuum_files.fetch_add(r.files_deleted, Ordering::Relaxed);
                    m.bytes_reclaimed
                        .fetch_add(r.bytes_reclaimed, Ordering::Relaxed);
                    if r.files_deleted > 0 {
                        info!(
                            table,
                            files = r.files_deleted,
                            bytes = r.bytes_reclaimed,
                            "vacuumed"
                        );
                    }
                }
                Err(e) => {
                    warn!(table, error = %e, "vacuum failed; it is retried at the next interval")
                }
            }
        }
        self.erasures(retention.erasure_grace).await;
    }

    async fn erasures(&self, grace: Duration) {
        let write = self.compact.write_options();
        match crate::erase::vacuum_erasures(&self.lake, grace, chrono::Utc::now(), &write).await {
            Ok(done) => {
                let m = &self.metrics;
                m.vacuum_files
                    .fetch_add(done.files_deleted, Ordering::Relaxed);
                m.bytes_reclaimed
                    .fetch_add(done.bytes_reclaimed, Ordering::Relaxed);
            }
            Err(e) => {
                warn!(error = %e, "erasure vacuum failed; it is retried at the next interval")
            }
        }
    }

    async fn affinity(&self, options: &AffinityOptions) {
        match affinity::rebuild(&self.lake, options, &self.compact.write_options()).await {
            Ok(r) => info!(
                rows = r.rows,
                products = r.products,
                "product_affinity rebuilt"
            ),
            Err(e) => {
                warn!(error = %e, "product_affinity failed; it is retried at the next interval")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lake() -> (tempfile::TempDir, Arc<Lake>) {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap(), Default::default()).unwrap();
        (dir, Arc::new(lake))
    }

    #[test]
    fn zero_intervals_turn_jobs_off_and_compaction_runs_at_most_every_second() {
        let (_dir, lake) = lake();
        let options = AffinityOptions {
            half_life_hours: 1.0,
            session_window: 1,
            order_pair_limit: 2,
            neighbours: 1,
            shrinkage: 1.0,
            until: None,
        };
        let s = Schedule::new(lake.clone(), CompactOptions::default(), Duration::ZERO)
            .with_optimize(Duration::ZERO)
            .with_affinity(Duration::ZERO, options.clone());
        assert_eq!(s.compact_every, MIN_COMPACT_INTERVAL);
        assert!(s.optimize_every.is_none() && s.affinity.is_none());
        let s = Schedule::new(lake, CompactOptions::default(), Duration::from_secs(15))
            .with_optimize(Duration::from_secs(3600))
            .with_affinity(Duration::from_secs(7200), options);
        assert_eq!(s.compact_every, Duration::from_secs(15));
        assert_eq!(s.optimize_every, Some(Duration::from_secs(3600)));
        assert_eq!(s.affinity.map(|a| a.0), Some(Duration::from_secs(7200)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stop_ends_the_schedule_between_jobs() {
        let (_dir, lake) = lake();
        let s = Schedule::new(lake, CompactOptions::default(), Duration::from_secs(3600));
        let compacted = s.events_compacted();
        // Stopped before the first interval ends: nothing ran.
        tokio::time::timeout(Duration::from_secs(5), s.run(std::future::ready(())))
            .await
            .expect("the schedule stops at once");
        assert_eq!(compacted.load(Ordering::Relaxed), 0);
    }
}

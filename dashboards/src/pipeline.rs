//! `GET /v1/pipeline`: what an operator checks when a number looks wrong — the stage's counters
//! and lag, events per second over the last minute, how old the latest compaction is, and each
//! table's version, files and bytes; and what the pages need to know of the process: the
//! reporting currency, and whether it runs the stage (the Live page).
//!
//! `shoplake up` runs the stage in the same process and gives its counters
//! ([`Pipeline::with_stage`]); `shoplake query` alone has none, and says so (`"stage": null`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde_json::json;
use shoplake_query::QueryService;
use shoplake_server::auth::{Access, Routes};
use shoplake_transform::StageMetrics;

/// How often the rate of events is sampled, and over how long it is measured.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
const RATE_OVER: Duration = Duration::from_secs(60);

/// The sources of the pipeline page.
pub struct Pipeline {
    service: Arc<QueryService>,
    stage: Option<(Arc<StageMetrics>, Arc<AtomicU64>)>,
    /// The reporting currency of the amounts the reports give.
    currency: String,
    /// (when, events staged so far), oldest first, over [`RATE_OVER`].
    samples: Mutex<VecDeque<(Instant, u64)>>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("stage", &self.stage.is_some())
            .finish_non_exhaustive()
    }
}

fn timestamp(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

impl Pipeline {
    /// The pipeline page of `service`, whose amounts are in `currency` (the reporting currency).
    pub fn new(service: Arc<QueryService>, currency: &str) -> Self {
        Pipeline {
            service,
            stage: None,
            currency: currency.to_owned(),
            samples: Mutex::new(VecDeque::new()),
        }
    }

    /// The stage of this process and the events its compaction wrote.
    pub fn with_stage(mut self, metrics: Arc<StageMetrics>, compacted: Arc<AtomicU64>) -> Self {
        self.stage = Some((metrics, compacted));
        self
    }

    fn sample(&self) {
        let Some((metrics, _)) = &self.stage else {
            return;
        };
        let now = Instant::now();
        let mut samples = self.samples.lock();
        samples.push_back((now, metrics.events_staged.load(Ordering::Relaxed)));
        while samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > RATE_OVER + SAMPLE_EVERY)
        {
            samples.pop_front();
        }
    }

    /// Events staged per second over the last minute (None before two samples).
    fn events_per_second(&self) -> Option<f64> {
        let samples = self.samples.lock();
        let ((t0, n0), (t1, n1)) = (samples.front()?, samples.back()?);
        let seconds = t1.duration_since(*t0).as_secs_f64();
        (seconds >= 1.0).then(|| n1.saturating_sub(*n0) as f64 / seconds)
    }

    /// Samples the stage's counter every few seconds while the pipeline is alive.
    fn start_sampling(self: &Arc<Self>) {
        if self.stage.is_none() {
            return;
        }
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(p) => p.sample(),
                    None => return,
                }
            }
        });
    }

    async fn view(&self) -> Result<serde_json::Value, shoplake_query::Error> {
        let tables = self.service.table_files().await?;
        let now = chrono::Utc::now();
        let events_commit = tables
            .iter()
            .find(|(name, _, _)| *name == "events")
            .and_then(|(_, _, f)| f.committed_at_ms);
        let stage = self.stage.as_ref().map(|(m, _)| {
            let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
            json!({
                "records_read": load(&m.records_read),
                "events_staged": load(&m.events_staged),
                "bad_rows": load(&m.bad_rows),
                "duplicates": load(&m.duplicates),
                "lag_ms": m.lag_millis.load(Ordering::Relaxed),
                "events_per_second": self.events_per_second(),
            })
        });
        Ok(json!({
            "as_of": timestamp(now.timestamp_millis()),
            "currency": self.currency,
            // Whether this process runs the stage (and so serves /v1/live/pulse).
            "live": self.stage.is_some(),
            "stage": stage,
            "compaction": {
                "events_compacted": self.stage.as_ref().map(|(_, c)| c.load(Ordering::Relaxed)),
                "last_commit": events_commit.and_then(timestamp),
                "age_seconds": events_commit.map(|ms| (now.timestamp_millis() - ms).max(0) / 1000),
            },
            "tables": tables.iter().map(|(name, version, files)| json!({
                "name": name,
                "delta_version": version,
                "files": files.files,
                "bytes": files.bytes,
                "last_commit": files.committed_at_ms.and_then(timestamp),
            })).collect::<Vec<_>>(),
        }))
    }

    /// `GET /v1/pipeline`, for the roles that see reports.
    pub fn router(self) -> Routes {
        let this = Arc::new(self);
        this.start_sampling();
        Routes::new()
            .get("/v1/pipeline", answer, Access::Reports)
            .with_state(this)
    }
}

async fn answer(State(pipeline): State<Arc<Pipeline>>) -> Response {
    match pipeline.view().await {
        Ok(view) => axum::Json(view).into_response(),
        Err(e) => shoplake_server::ApiError::from(e).into_response(),
    }
}

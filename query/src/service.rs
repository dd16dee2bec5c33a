//! The DataFusion session over the lake, kept current as the lake grows.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use std::collections::{BTreeMap, BTreeSet};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNode;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::{
    MemTable, TableType, ViewTable, provider_as_source, source_as_provider,
};
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, Volatility};
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream, execute_stream};
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};
use datafusion::scalar::ScalarValue;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use futures::future::{BoxFuture, FutureExt, Shared};
use futures::{Stream, StreamExt};
use shoplake_batch::{Lake, tables};
use shoplake_server::telemetry::{self, Collector, DescriptorEncoder};
use tokio::sync::{Mutex, OwnedSemaphorePermit, mpsc};
use tracing::{debug, info};

use crate::bounds::{StatementPool, Turns, query_runtime};
use crate::cache::{Cached, ResultCache, digest};
use crate::encode::Trailer;
use crate::reports::Reports;
use crate::{Error, Params, QueryConfig, Result};

/// The views, in dependency order: (name, `CREATE OR REPLACE VIEW` statement).
pub const VIEWS: &[(&str, &str)] = &[
    ("sessions", include_str!("../../sql/views/sessions.sql")),
    (
        "daily_campaign_performance",
        include_str!("../../sql/views/daily_campaign_performance.sql"),
    ),
    (
        "funnel_steps",
        include_str!("../../sql/views/funnel_steps.sql"),
    ),
];

/// How the query session runs.
#[derive(Clone, Debug)]
pub struct QueryOptions {
    /// Storage options for the lake (S3 endpoint, region, credentials).
    pub storage_options: HashMap<String, String>,
    /// What a statement may take: time, memory, rows, turns (the `[query]` config).
    pub limits: QueryConfig,
    /// How often, at most, table versions are checked.
    pub refresh_interval: Duration,
    /// Skip what filters rule out: Delta files by their statistics, Parquet row groups by theirs
    /// and by bloom filters, pages by the page index. Off only to measure what it saves: scans then
    /// get no filters at all and every row is read and filtered after decoding.
    pub pruning: bool,
    /// What erasure requests (`POST /v1/admin/erasures`) run with; None: this service takes
    /// none.
    pub erasure: Option<shoplake_batch::erase::EraseOptions>,
}

impl Default for QueryOptions {
    fn default() -> Self {
        QueryOptions {
            storage_options: HashMap::new(),
            limits: QueryConfig::default(),
            refresh_interval: Duration::from_secs(1),
            pruning: true,
            erasure: None,
        }
    }
}

/// A query's result, collected: its schema (also when there are no rows) and its batches.
#[derive(Clone, Debug)]
pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub elapsed: Duration,
    /// Bytes the Parquet scans read (DataFusion's `bytes_scanned`): what pruning left to read.
    pub bytes_scanned: u64,
}

impl QueryResult {
    pub fn row_count(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// One statement to run.
#[derive(Clone, Debug, Default)]
pub struct QueryRequest {
    pub sql: String,
    pub params: Params,
    /// Rows the client wants at most: the answer is cut there and says it was (`truncated`),
    /// instead of being refused at `max_rows`.
    pub limit: Option<u64>,
    /// What the caller may read.
    pub catalog: Catalog,
    /// The statement already parsed (the Postgres wire parses with Postgres's dialect and
    /// rewrites what clients probe); `sql` is then only its text for logs.
    pub statement: Option<Box<SqlStatement>>,
    /// A shorter time limit than `query.timeout` (a Postgres session's `statement_timeout`).
    pub timeout: Option<Duration>,
}

/// The tables and views a statement may read, by what the caller's role may see.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Catalog {
    /// Every table and view.
    #[default]
    Full,
    /// Tables without their personal columns, and the views whose answers hold none
    /// (marketing).
    NoPersonalData,
}

impl QueryRequest {
    pub fn new(sql: impl Into<String>) -> Self {
        QueryRequest {
            sql: sql.into(),
            ..QueryRequest::default()
        }
    }
}

struct Refresh {
    checked: Option<Instant>,
    /// Registered Delta version per table (None: registered empty).
    versions: HashMap<&'static str, Option<u64>>,
    /// The data files of each registered Delta version.
    files: HashMap<&'static str, TableFiles>,
    /// The late events per day of the registered `events` version, being counted or counted.
    late: Option<LateDays>,
}

/// Late events per day (Date32 → events received after their day ended) of one `events`
/// version, over the whole table. Counted once per version, in the background from the moment the
/// version is registered, and shared by every report answer until the next version: a report then
/// pays nothing for its freshness, where counting per answer cost a scan of the period's
/// `received_at` (a second on 10M events, the whole of a small report's time).
type LateDays = Shared<BoxFuture<'static, std::result::Result<Arc<BTreeMap<i32, u64>>, String>>>;

/// Counts [`LateDays`] on the query runtime, within the statement time limit.
fn count_late_days(
    ctx: SessionContext,
    runtime: Option<&tokio::runtime::Handle>,
    timeout: Duration,
) -> LateDays {
    let work = async move {
        let sql = "SELECT event_date, count(*) AS events FROM events \
                   WHERE received_at >= CAST(event_date AS TIMESTAMP) + INTERVAL '1 day' \
                   GROUP BY event_date";
        let batches = tokio::time::timeout(timeout, async { ctx.sql(sql).await?.collect().await })
            .await
            .map_err(|_| format!("counting late events took more than {timeout:?}"))?
            .map_err(|e| e.to_string())?;
        let mut late = BTreeMap::new();
        for batch in &batches {
            let days = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Date32)
                .map_err(|e| e.to_string())?;
            let (Some(days), Some(counts)) = (
                days.as_any().downcast_ref::<arrow::array::Date32Array>(),
                batch
                    .column(1)
                    .as_any()
                    .downcast_ref::<arrow::array::Int64Array>(),
            ) else {
                return Err("late events: unexpected column types".to_owned());
            };
            for i in 0..batch.num_rows() {
                late.insert(days.value(i), u64::try_from(counts.value(i)).unwrap_or(0));
            }
        }
        Ok(Arc::new(late))
    };
    let task = spawn_on(runtime, work);
    async move { task.await.map_err(|e| e.to_string())? }
        .boxed()
        .shared()
}

/// How complete a report's period is ([`QueryService::freshness`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Freshness {
    /// When `events` was last committed (UTC milliseconds): later events are not in the answer.
    pub complete_until_ms: Option<i64>,
    /// Days of the period (`YYYY-MM-DD`) that received events after they ended, and how many.
    pub late_days: Vec<(String, u64)>,
}

/// The data files of a table's registered version, for the dashboards' pipeline page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TableFiles {
    pub files: usize,
    pub bytes: u64,
    /// When the version was committed (UTC milliseconds).
    pub committed_at_ms: Option<i64>,
}

impl TableFiles {
    fn of(table: &deltalake::DeltaTable) -> Self {
        let Ok(state) = table.snapshot() else {
            return TableFiles::default();
        };
        let log = state.log_data();
        TableFiles {
            files: log.num_files(),
            bytes: log
                .iter()
                .map(|f| u64::try_from(f.size()).unwrap_or(0))
                .sum(),
            committed_at_ms: table.version().and_then(|v| state.version_timestamp(v)),
        }
    }
}

/// Counters for `/metrics`.
pub struct QueryMetrics {
    pub queries: AtomicU64,
    pub bad_sql: AtomicU64,
    pub failed: AtomicU64,
    pub not_allowed: AtomicU64,
    pub timed_out: AtomicU64,
    pub too_large: AtomicU64,
    pub busy: AtomicU64,
    pub micros: AtomicU64,
    pub bytes_scanned: AtomicU64,
    pub rows_sent: AtomicU64,
    turns: Arc<Turns>,
    max_concurrent: usize,
    cache: Arc<ResultCache>,
}

impl std::fmt::Debug for QueryMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryMetrics")
            .field("queries", &self.queries)
            .finish_non_exhaustive()
    }
}

/// Metric names of the query service (counters without `_total`, which the encoder adds).
pub mod names {
    pub const QUERIES: &str = "shoplake_queries";
    pub const QUERY_ERRORS: &str = "shoplake_query_errors";
    pub const QUERY_SECONDS: &str = "shoplake_query_seconds";
    pub const BYTES_SCANNED: &str = "shoplake_query_bytes_scanned";
    pub const ROWS_SENT: &str = "shoplake_query_rows_sent";
    pub const RUNNING: &str = "shoplake_queries_running";
    pub const WAITING: &str = "shoplake_queries_waiting";
    pub const CACHE_LOOKUPS: &str = "shoplake_query_cache_lookups";
    pub const CACHE_BYTES: &str = "shoplake_query_cache_bytes";
}

impl Collector for QueryMetrics {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        telemetry::counter(
            &mut enc,
            names::QUERIES,
            "SQL statements asked for.",
            load(&self.queries),
        )?;
        telemetry::counter_by(
            &mut enc,
            names::QUERY_ERRORS,
            "Statements that did not answer, by why: bad SQL or parameters, not a query, over \
             the time limit, over the row or byte cap, no turn free (the caller's or the \
             limits'), or failed (the service's).",
            "kind",
            [
                ("bad_sql", load(&self.bad_sql)),
                ("not_allowed", load(&self.not_allowed)),
                ("timed_out", load(&self.timed_out)),
                ("too_large", load(&self.too_large)),
                ("busy", load(&self.busy)),
                ("failed", load(&self.failed)),
            ],
        )?;
        telemetry::seconds_counter(
            &mut enc,
            names::QUERY_SECONDS,
            "Time spent planning and running statements.",
            load(&self.micros) as f64 / 1e6,
        )?;
        telemetry::counter(
            &mut enc,
            names::BYTES_SCANNED,
            "Bytes the Parquet scans read.",
            load(&self.bytes_scanned),
        )?;
        telemetry::counter(
            &mut enc,
            names::ROWS_SENT,
            "Rows of answers handed to clients.",
            load(&self.rows_sent),
        )?;
        telemetry::gauge(
            &mut enc,
            names::RUNNING,
            "Statements running now.",
            self.turns.running(self.max_concurrent) as i64,
        )?;
        telemetry::gauge(
            &mut enc,
            names::WAITING,
            "Statements waiting for a turn now.",
            self.turns.waiting() as i64,
        )?;
        telemetry::counter_by(
            &mut enc,
            names::CACHE_LOOKUPS,
            "Result cache lookups, by outcome.",
            "outcome",
            [
                ("hit", load(&self.cache.hits)),
                ("miss", load(&self.cache.misses)),
            ],
        )?;
        telemetry::gauge(
            &mut enc,
            names::CACHE_BYTES,
            "Bytes of answers the result cache holds.",
            self.cache.size().0 as i64,
        )
    }
}

/// The runtime statements run on, shut down without waiting when the service goes (a runtime
/// dropped inside another one's task would panic).
struct QueryRuntime(Option<tokio::runtime::Runtime>);

impl QueryRuntime {
    fn handle(&self) -> Option<&tokio::runtime::Handle> {
        self.0.as_ref().map(tokio::runtime::Runtime::handle)
    }
}

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// SQL over the lake.
pub struct QueryService {
    ctx: SessionContext,
    /// The catalog of roles that may not see personal data: every table without its personal
    /// columns ([`shoplake_batch::TableDescriptor::personal_columns`]), and the views whose
    /// answers hold none.
    restricted: SessionContext,
    lake: Lake,
    options: QueryOptions,
    refresh: Mutex<Refresh>,
    metrics: Arc<QueryMetrics>,
    turns: Arc<Turns>,
    cache: Arc<ResultCache>,
    runtime: QueryRuntime,
    /// The named reports of `sql/reports`.
    reports: Arc<Reports>,
}

impl QueryService {
    /// Opens the lake at `lake_root` (a path or URL) and registers its tables and views.
    pub async fn open(lake_root: &str, storage_options: HashMap<String, String>) -> Result<Self> {
        Self::open_with(
            lake_root,
            QueryOptions {
                storage_options,
                ..QueryOptions::default()
            },
        )
        .await
    }

    pub async fn open_with(lake_root: &str, options: QueryOptions) -> Result<Self> {
        let limits = &options.limits;
        limits
            .validate()
            .map_err(|detail| Error::BadConfig { detail })?;
        let lake = Lake::open(lake_root, options.storage_options.clone())?;
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(QueryConfig::bytes(limits.memory_limit), 1.0)
            .build_arc()
            .map_err(Error::execution)?;
        let mut config = SessionConfig::new().with_information_schema(true);
        let parquet = &mut config.options_mut().execution.parquet;
        // Evaluate filters while decoding (late materialisation) and use page indexes.
        parquet.pushdown_filters = options.pruning;
        parquet.reorder_filters = true;
        parquet.enable_page_index = options.pruning;
        parquet.pruning = options.pruning;
        parquet.bloom_filter_on_read = options.pruning;
        // The restricted catalog shares the runtime (its memory pool and the object stores Delta
        // registers) and the settings.
        let restricted = SessionContext::new_with_config_rt(config.clone(), runtime.clone());
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        // What Postgres clients probe (pg_catalog, version()), in both catalogs: each lists only
        // its own tables and columns.
        crate::pg::install_catalog(&ctx)?;
        crate::pg::install_catalog(&restricted)?;
        let turns = Arc::new(Turns::new(
            limits.max_concurrent,
            limits.queue,
            limits.queue_timeout,
        ));
        let cache = Arc::new(ResultCache::new(QueryConfig::bytes(limits.cache_size)));
        let metrics = Arc::new(QueryMetrics {
            queries: AtomicU64::new(0),
            bad_sql: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            not_allowed: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            too_large: AtomicU64::new(0),
            busy: AtomicU64::new(0),
            micros: AtomicU64::new(0),
            bytes_scanned: AtomicU64::new(0),
            rows_sent: AtomicU64::new(0),
            turns: turns.clone(),
            max_concurrent: limits.max_concurrent,
            cache: cache.clone(),
        });
        let runtime = QueryRuntime(Some(query_runtime(limits.threads, limits.low_priority)?));
        let reports = Arc::new(Reports::load(options.limits.reports_dir.as_deref())?);
        let service = QueryService {
            ctx,
            restricted,
            lake,
            options,
            refresh: Mutex::new(Refresh {
                checked: None,
                versions: HashMap::new(),
                files: HashMap::new(),
                late: None,
            }),
            metrics,
            turns,
            cache,
            runtime,
            reports,
        };
        service.refresh(true).await?;
        service.reports.plan_schemas(&service.ctx).await?;
        service
            .reports
            .register_functions(&service.ctx, &service.ctx, true);
        service
            .reports
            .register_functions(&service.restricted, &service.ctx, false);
        service.ctx.register_udtf(
            "table_at",
            Arc::new(crate::travel::TableAt {
                lake: service.lake.clone(),
            }),
        );
        Ok(service)
    }

    /// Counters of queries served.
    pub fn metrics(&self) -> &Arc<QueryMetrics> {
        &self.metrics
    }

    /// The niceness of the threads statements run on (Linux; for checks and tests).
    pub async fn query_thread_nice(&self) -> Option<i32> {
        let handle = self.runtime.handle()?.clone();
        handle
            .spawn(async { crate::current_thread_nice() })
            .await
            .ok()
            .flatten()
    }

    /// The named reports.
    pub fn reports(&self) -> &Reports {
        &self.reports
    }

    /// The statement of report `name` with `given` parameters (text, as in a query string) bound
    /// to their types and the others at their defaults; `personal`: whether the caller may see
    /// personal data (an analyst's report is refused to the others).
    pub fn report_request(
        &self,
        name: &str,
        given: &BTreeMap<String, String>,
        personal: bool,
    ) -> Result<QueryRequest> {
        let report = self
            .reports
            .get(name)
            .filter(|r| r.allowed(personal))
            .ok_or_else(|| Error::NoReport {
                name: name.to_owned(),
                known: self
                    .reports
                    .all()
                    .iter()
                    .filter(|r| r.allowed(personal))
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        Ok(QueryRequest {
            sql: report.sql.clone(),
            params: report.bind_text(given, crate::reports::today())?,
            catalog: Catalog::Full,
            ..QueryRequest::default()
        })
    }

    /// How complete a report's period is: when `events` was last committed (data after that is
    /// still in the stream or staging) and the days of the period that received events after
    /// they ended (late data: a report of such a day changed after the fact). None when the
    /// request binds no `from` and `to`.
    pub async fn freshness(&self, request: &QueryRequest) -> Result<Option<Freshness>> {
        let Params::Named(values) = &request.params else {
            return Ok(None);
        };
        let (Some(ScalarValue::Date32(Some(from))), Some(ScalarValue::Date32(Some(to)))) =
            (values.get("from"), values.get("to"))
        else {
            return Ok(None);
        };
        self.refresh(false).await?;
        let (complete_until, late) = {
            let refresh = self.refresh.lock().await;
            let events = shoplake_events::lake::EVENTS_TABLE;
            (
                refresh.files.get(events).and_then(|f| f.committed_at_ms),
                refresh.late.clone(),
            )
        };
        let late = match late {
            Some(late) => late.await.map_err(|detail| Error::Freshness { detail })?,
            None => Arc::default(),
        };
        let late_days = late
            .range(*from..=*to)
            .filter_map(|(day, events)| {
                let day = arrow::temporal_conversions::date32_to_datetime(*day)?;
                Some((day.date().format("%Y-%m-%d").to_string(), *events))
            })
            .collect();
        Ok(Some(Freshness {
            complete_until_ms: complete_until,
            late_days,
        }))
    }

    /// The limits statements run under.
    /// Erases a person from the lake (`shoplake_batch::erase`: staging compacted, their ids
    /// tombstoned, their rows deleted from every table, the raw archive and quarantine scrubbed),
    /// then drops every answer the cache keeps. None when this service takes no erasure requests.
    pub async fn erase(
        &self,
        subject: &shoplake_batch::erase::Subject,
    ) -> Result<Option<shoplake_batch::erase::ErasureReport>> {
        use shoplake_batch::erase;
        let Some(opts) = &self.options.erasure else {
            return Ok(None);
        };
        let ids = erase::prepare(&self.lake, subject, opts).await?;
        let report = erase::erase(
            &self.lake,
            subject,
            &ids,
            erase::Outside::default(),
            opts,
            chrono::Utc::now(),
        )
        .await?;
        self.cache.clear();
        Ok(Some(report))
    }

    pub fn limits(&self) -> &QueryConfig {
        &self.options.limits
    }

    /// The tables, with their registered Delta versions (None: not written yet) and their
    /// schemas as the registry describes them (without the personal columns in the restricted
    /// catalog).
    pub async fn tables(&self, catalog: Catalog) -> Result<Vec<(String, Option<u64>, SchemaRef)>> {
        self.refresh(false).await?;
        let refresh = self.refresh.lock().await;
        Ok(tables::ALL
            .iter()
            .map(|t| {
                let version = refresh.versions.get(t.name).copied().flatten();
                let schema = t.schema();
                let schema = match catalog {
                    Catalog::Full => schema,
                    Catalog::NoPersonalData => Arc::new(arrow::datatypes::Schema::new(
                        schema
                            .fields()
                            .iter()
                            .filter(|f| !t.is_personal(f.name()))
                            .cloned()
                            .collect::<Vec<_>>(),
                    )),
                };
                (t.name.to_owned(), version, schema)
            })
            .collect())
    }

    /// The data files of each table as registered now (after a refresh when one is due).
    pub async fn table_files(&self) -> Result<Vec<(&'static str, Option<u64>, TableFiles)>> {
        self.refresh(false).await?;
        let refresh = self.refresh.lock().await;
        Ok(tables::ALL
            .iter()
            .map(|t| {
                let version = refresh.versions.get(t.name).copied().flatten();
                let files = refresh.files.get(t.name).copied().unwrap_or_default();
                (t.name, version, files)
            })
            .collect())
    }

    /// Registers new table versions (and the views again) when the lake changed.
    async fn refresh(&self, force: bool) -> Result<()> {
        let mut refresh = self.refresh.lock().await;
        if !force
            && refresh
                .checked
                .is_some_and(|t| t.elapsed() < self.options.refresh_interval)
        {
            return Ok(());
        }
        let mut changed = force;
        for descriptor in tables::ALL {
            let name = descriptor.name;
            let table = self.lake.table(name).await?;
            let version = table.as_ref().and_then(|t| t.version());
            if !force && refresh.versions.get(name) == Some(&version) {
                continue;
            }
            let files = table.as_ref().map(TableFiles::of).unwrap_or_default();
            let provider: Arc<dyn TableProvider> = match table {
                Some(table) => {
                    table
                        .update_datafusion_session(&self.ctx.state())
                        .map_err(|source| shoplake_batch::Error::delta(name, source))?;
                    let provider = table.table_provider().await.map_err(Error::execution)?;
                    let provider = if self.options.pruning {
                        provider
                    } else {
                        Arc::new(Unpruned(provider))
                    };
                    with_contract_columns(name, provider, &descriptor.schema())?
                }
                None => Arc::new(
                    MemTable::try_new(descriptor.schema(), vec![vec![]])
                        .map_err(Error::execution)?,
                ),
            };
            self.ctx.deregister_table(name).map_err(Error::execution)?;
            self.ctx
                .register_table(name, provider)
                .map_err(Error::execution)?;
            debug!(table = name, ?version, "registered table version");
            refresh.versions.insert(name, version);
            refresh.files.insert(name, files);
            changed = true;
            if name == shoplake_events::lake::EVENTS_TABLE {
                refresh.late = version.map(|_| {
                    count_late_days(
                        self.ctx.clone(),
                        self.runtime.handle(),
                        self.options.limits.timeout,
                    )
                });
            }
        }
        if changed {
            // Views hold the plan of the providers they were created over: create them again.
            for (view, statement) in VIEWS {
                self.ctx
                    .sql(statement)
                    .await
                    .map(|_| ())
                    .map_err(|source| Error::BadView {
                        view,
                        source: Box::new(source),
                    })?;
            }
            self.restrict().await?;
            if !force {
                info!(versions = ?refresh.versions, "lake changed; tables and views refreshed");
            }
        }
        refresh.checked = Some(Instant::now());
        Ok(())
    }

    /// Registers the restricted catalog over the full one's providers: each table as a view of
    /// its columns that hold no personal data, and each view whose answer has no column of a
    /// personal name (funnels and campaign figures: counts over shoppers, not shoppers).
    async fn restrict(&self) -> Result<()> {
        let personal: BTreeSet<&str> = tables::ALL
            .iter()
            .flat_map(|t| t.personal_columns.iter().copied())
            .collect();
        for descriptor in tables::ALL {
            let name = descriptor.name;
            let provider = self
                .ctx
                .table_provider(name)
                .await
                .map_err(Error::execution)?;
            let keep: Vec<usize> = provider
                .schema()
                .fields()
                .iter()
                .enumerate()
                .filter(|(_, f)| !descriptor.is_personal(f.name()))
                .map(|(i, _)| i)
                .collect();
            let plan = LogicalPlanBuilder::scan(name, provider_as_source(provider), Some(keep))
                .and_then(LogicalPlanBuilder::build)
                .map_err(Error::execution)?;
            self.restricted
                .deregister_table(name)
                .map_err(Error::execution)?;
            self.restricted
                .register_table(name, Arc::new(ViewTable::new(plan, None)))
                .map_err(Error::execution)?;
        }
        for (view, _) in VIEWS {
            self.restricted
                .deregister_table(*view)
                .map_err(Error::execution)?;
            let provider = self
                .ctx
                .table_provider(*view)
                .await
                .map_err(Error::execution)?;
            let leaks = provider
                .schema()
                .fields()
                .iter()
                .any(|f| personal.contains(f.name().as_str()));
            if !leaks {
                self.restricted
                    .register_table(*view, provider)
                    .map_err(Error::execution)?;
            }
        }
        Ok(())
    }

    /// Plans a parsed statement without running it or taking a turn: what a Postgres client's
    /// Parse and Describe need (its parameters and columns). Refused like [`QueryService::prepare`]
    /// refuses: only queries, over the catalog the caller may read.
    pub async fn describe(&self, statement: SqlStatement, catalog: Catalog) -> Result<LogicalPlan> {
        self.refresh(false).await?;
        let statement = DfStatement::Statement(Box::new(statement));
        check_read_only(&statement)?;
        let plan = self
            .context(catalog)
            .state()
            .statement_to_plan(statement)
            .await
            .map_err(classify)?;
        verify_read_only(&plan)?;
        Ok(plan)
    }

    /// [`QueryService::describe`] of a statement's text (Flight SQL).
    pub async fn describe_sql(&self, sql: &str, catalog: Catalog) -> Result<LogicalPlan> {
        let state = self.context(catalog).state();
        let dialect = state.config().options().sql_parser.dialect;
        match state.sql_to_statement(sql, &dialect).map_err(classify)? {
            DfStatement::Statement(statement) => self.describe(*statement, catalog).await,
            other => {
                check_read_only(&other)?;
                Err(Error::NotAllowed {
                    detail: "only queries run here".into(),
                })
            }
        }
    }

    /// The session of a catalog (the Postgres wire's SHOW and pg_catalog answers read it).
    pub(crate) fn context(&self, catalog: Catalog) -> &SessionContext {
        match catalog {
            Catalog::Full => &self.ctx,
            Catalog::NoPersonalData => &self.restricted,
        }
    }

    /// The runtime statements run on (the Postgres wire's connections run there too, so that
    /// encoding rows takes the CPU ingestion leaves).
    pub(crate) fn runtime_handle(&self) -> Option<&tokio::runtime::Handle> {
        self.runtime.handle()
    }

    /// Runs one query (a SELECT, WITH, EXPLAIN, SHOW or DESCRIBE statement) and collects its
    /// answer, under the same limits as every other caller.
    pub async fn sql(&self, sql: &str) -> Result<QueryResult> {
        self.run(&QueryRequest::new(sql)).await
    }

    /// [`QueryService::sql`] with parameters and a limit.
    pub async fn run(&self, request: &QueryRequest) -> Result<QueryResult> {
        let started = Instant::now();
        let mut stream = self.prepare(request).await?.execute();
        let mut batches = Vec::new();
        while let Some(batch) = stream.next().await {
            batches.push(batch?);
        }
        let trailer = stream.trailer();
        Ok(QueryResult {
            schema: stream.schema(),
            batches,
            elapsed: started.elapsed(),
            bytes_scanned: trailer.bytes_scanned,
        })
    }

    /// Takes a turn, plans the statement and looks it up in the cache; nothing runs yet. The
    /// answer's `etag` is known from here, so that a client that has it already can be told so
    /// without running anything.
    pub async fn prepare(&self, request: &QueryRequest) -> Result<Prepared> {
        let started = Instant::now();
        self.metrics.queries.fetch_add(1, Ordering::Relaxed);
        let prepared = self.plan(request, started).await;
        if let Err(e) = &prepared {
            self.metrics.count_error(e);
            self.metrics
                .micros
                .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
        prepared
    }

    async fn plan(&self, request: &QueryRequest, started: Instant) -> Result<Prepared> {
        let permit = self.turns.take().await?;
        self.refresh(false).await?;
        let state = self.context(request.catalog).state();
        let statement = match &request.statement {
            Some(statement) => DfStatement::Statement(statement.clone()),
            None => {
                let dialect = state.config().options().sql_parser.dialect;
                state
                    .sql_to_statement(&request.sql, &dialect)
                    .map_err(classify)?
            }
        };
        check_read_only(&statement)?;
        let normalized = statement.to_string();
        let plan = state.statement_to_plan(statement).await.map_err(classify)?;
        verify_read_only(&plan)?;
        let mut read = BTreeSet::new();
        tables_read(&plan, &mut read);
        // An answer that depends on more than the lake (now(), random(), the session's user) or
        // on no table at all (catalog probes: cheap anyway) is not kept.
        let cacheable = !read.is_empty() && deterministic(&plan);
        let versions = {
            let refresh = self.refresh.lock().await;
            read.iter()
                .map(|t| {
                    let v = refresh.versions.get(t.as_str()).copied().flatten();
                    format!("{t}@{}", v.map_or("-".to_owned(), |v| v.to_string()))
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        let key = format!(
            "{normalized}\u{1f}{}\u{1f}{:?}\u{1f}{:?}\u{1f}{versions}",
            request.params.key(),
            request.limit,
            request.catalog
        );
        let etag = digest(&key);
        let mut df = request.params.bind(DataFrame::new(state.clone(), plan))?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let cached = if cacheable {
            self.cache.get(&key)
        } else {
            None
        };
        let source = match cached {
            Some(cached) => Source::Cached(cached),
            None => {
                if let Some(limit) = request.limit {
                    // One row more than asked: whether there were more is the `truncated` flag.
                    let fetch = usize::try_from(limit.saturating_add(1)).unwrap_or(usize::MAX);
                    df = df.limit(0, Some(fetch)).map_err(classify)?;
                }
                let physical = df.create_physical_plan().await.map_err(classify)?;
                let memory = RuntimeEnvBuilder::from_runtime_env(state.runtime_env())
                    .with_memory_pool(Arc::new(StatementPool::new(
                        state.runtime_env().memory_pool.clone(),
                        QueryConfig::bytes(self.options.limits.query_memory_limit),
                    )))
                    .build_arc()
                    .map_err(Error::execution)?;
                let task = Arc::new(TaskContext::from(&state).with_runtime(memory));
                Source::Plan {
                    plan: physical,
                    task,
                    cache_key: (cacheable && self.cache.enabled()).then_some(key),
                }
            }
        };
        Ok(Prepared {
            schema,
            etag,
            source,
            limit: request.limit,
            permit,
            started,
            timeout: request.timeout.map_or(self.options.limits.timeout, |t| {
                t.min(self.options.limits.timeout)
            }),
            max_rows: self.options.limits.max_rows,
            runtime: self.runtime.handle().cloned(),
            metrics: self.metrics.clone(),
            cache: self.cache.clone(),
        })
    }
}

impl QueryMetrics {
    fn count_error(&self, e: &Error) {
        let counter = match e {
            Error::BadSql { .. } | Error::BadParams { .. } => &self.bad_sql,
            Error::NotAllowed { .. } => &self.not_allowed,
            Error::Timeout { .. } => &self.timed_out,
            Error::TooLarge { .. } | Error::OutOfMemory { .. } => &self.too_large,
            Error::Busy { .. } => &self.busy,
            _ => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Where a prepared statement's answer comes from.
enum Source {
    Cached(Cached),
    Plan {
        plan: Arc<dyn ExecutionPlan>,
        task: Arc<TaskContext>,
        /// Where to keep the answer, when the cache is on.
        cache_key: Option<String>,
    },
}

/// A planned statement holding its turn: [`Prepared::execute`] runs it.
pub struct Prepared {
    schema: SchemaRef,
    etag: String,
    source: Source,
    limit: Option<u64>,
    permit: OwnedSemaphorePermit,
    started: Instant,
    timeout: Duration,
    max_rows: u64,
    runtime: Option<tokio::runtime::Handle>,
    metrics: Arc<QueryMetrics>,
    cache: Arc<ResultCache>,
}

impl Prepared {
    /// The answer's columns.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Names the answer: the same statement, parameters and table versions give the same tag.
    pub fn etag(&self) -> &str {
        &self.etag
    }

    /// Whether the answer comes from the cache.
    pub fn is_cached(&self) -> bool {
        matches!(self.source, Source::Cached(_))
    }

    /// Runs the statement on the query runtime; batches come through the returned stream as
    /// they are produced (two at most wait for the reader). Dropping the stream stops the
    /// statement.
    pub fn execute(self) -> QueryStream {
        let (tx, rx) = mpsc::channel(2);
        let done = Arc::new(Done::default());
        let schema = self.schema.clone();
        let cached = self.is_cached();
        let producer = produce(self, tx, done.clone());
        QueryStream {
            schema,
            rx,
            done,
            cached,
            task: Some(producer),
        }
    }
}

/// What the producer tells after the last batch.
#[derive(Debug, Default)]
struct Done {
    bytes_scanned: AtomicU64,
    truncated: std::sync::atomic::AtomicBool,
    elapsed_micros: AtomicU64,
}

/// Starts the task that runs a prepared statement and sends its batches.
fn produce(
    prepared: Prepared,
    tx: mpsc::Sender<Result<RecordBatch>>,
    done: Arc<Done>,
) -> tokio::task::JoinHandle<()> {
    let runtime = prepared.runtime.clone();
    let work = async move {
        let Prepared {
            source,
            limit,
            permit,
            started,
            timeout,
            max_rows,
            metrics,
            cache,
            ..
        } = prepared;
        let (batches, plan, cache_key) = match source {
            Source::Cached(cached) => (
                BatchSource::Cached(
                    cached
                        .batches
                        .iter()
                        .cloned()
                        .collect::<Vec<_>>()
                        .into_iter(),
                ),
                None,
                None,
            ),
            Source::Plan {
                plan,
                task,
                cache_key,
            } => match execute_stream(plan.clone(), task) {
                Ok(stream) => (BatchSource::Live(stream), Some(plan), cache_key),
                Err(e) => (BatchSource::Failed(Some(e)), None, None),
            },
        };
        let mut run = Run {
            batches,
            limit,
            max_rows,
            deadline: tokio::time::Instant::from_std(started + timeout),
            timeout,
            rows: 0,
            keep: cache_key.as_ref().map(|_| (Vec::new(), 0)),
            keep_limit: cache.entry_limit(),
        };
        let outcome = run.send_all(&tx, &metrics, &done).await;
        // The statement's tasks stop and its turn comes back before the reader hears the end,
        // so that a client that asks again at once finds the turn free.
        let Run { batches, keep, .. } = run;
        drop(batches);
        drop(permit);
        let elapsed = started.elapsed().as_micros() as u64;
        done.elapsed_micros.store(elapsed, Ordering::Relaxed);
        metrics.micros.fetch_add(elapsed, Ordering::Relaxed);
        match outcome {
            Outcome::Complete => {
                if let Some(plan) = plan {
                    let scanned = bytes_scanned(plan.as_ref());
                    done.bytes_scanned.store(scanned, Ordering::Relaxed);
                    metrics.bytes_scanned.fetch_add(scanned, Ordering::Relaxed);
                }
                if let (Some(key), Some((kept, bytes))) = (cache_key, keep) {
                    let batches = Arc::new(kept);
                    cache.put(key, Cached { batches, bytes });
                }
            }
            Outcome::Failed(e) => {
                metrics.count_error(&e);
                let _ = tx.send(Err(e)).await;
            }
            Outcome::ReaderGone => {}
        }
    };
    spawn_on(runtime.as_ref(), work)
}

/// Spawns `work` on the query runtime. Without a runtime of its own (only while the service is
/// being dropped), it runs on the caller's.
fn spawn_on<F>(
    runtime: Option<&tokio::runtime::Handle>,
    work: F,
) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match runtime {
        Some(runtime) => runtime.spawn(work),
        None => tokio::spawn(work),
    }
}

/// How a statement's run ended.
enum Outcome {
    Complete,
    Failed(Error),
    /// The reader dropped its stream: nobody to tell.
    ReaderGone,
}

/// A statement's batches on their way to the reader, with the caps that apply to them.
struct Run {
    batches: BatchSource,
    limit: Option<u64>,
    max_rows: u64,
    deadline: tokio::time::Instant,
    timeout: Duration,
    rows: u64,
    /// The answer so far and its bytes, while it may still go into the cache.
    keep: Option<(Vec<RecordBatch>, usize)>,
    keep_limit: usize,
}

impl Run {
    async fn send_all(
        &mut self,
        tx: &mpsc::Sender<Result<RecordBatch>>,
        metrics: &QueryMetrics,
        done: &Done,
    ) -> Outcome {
        loop {
            let next = match &mut self.batches {
                BatchSource::Cached(iter) => Ok(iter.next().map(Ok)),
                BatchSource::Live(stream) => {
                    tokio::time::timeout_at(self.deadline, stream.next()).await
                }
                BatchSource::Failed(e) => Ok(e.take().map(Err)),
            };
            let mut batch = match next {
                Err(_) => {
                    return Outcome::Failed(Error::Timeout {
                        limit: self.timeout,
                    });
                }
                Ok(None) => return Outcome::Complete,
                Ok(Some(Err(e))) => return Outcome::Failed(classify(e)),
                Ok(Some(Ok(batch))) => batch,
            };
            let mut last = false;
            let after = self.rows + batch.num_rows() as u64;
            match self.limit {
                Some(limit) if after > limit => {
                    let fits = usize::try_from(limit - self.rows).unwrap_or(usize::MAX);
                    batch = batch.slice(0, fits.min(batch.num_rows()));
                    done.truncated.store(true, Ordering::Relaxed);
                    last = true;
                }
                None if after > self.max_rows => {
                    return Outcome::Failed(Error::TooLarge {
                        what: "rows",
                        limit: self.max_rows,
                    });
                }
                _ => {}
            }
            self.rows += batch.num_rows() as u64;
            if let Some((kept, bytes)) = &mut self.keep {
                *bytes += batch.get_array_memory_size();
                if *bytes > self.keep_limit {
                    self.keep = None;
                } else {
                    kept.push(batch.clone());
                }
            }
            metrics
                .rows_sent
                .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
            if tx.send(Ok(batch)).await.is_err() {
                return Outcome::ReaderGone;
            }
            if last {
                return Outcome::Complete;
            }
        }
    }
}

enum BatchSource {
    Cached(std::vec::IntoIter<RecordBatch>),
    Live(SendableRecordBatchStream),
    /// The plan could not start: its error, once.
    Failed(Option<DataFusionError>),
}

/// A statement's answer as it is produced.
pub struct QueryStream {
    schema: SchemaRef,
    rx: mpsc::Receiver<Result<RecordBatch>>,
    done: Arc<Done>,
    cached: bool,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl QueryStream {
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// What is known after the last batch: whether the client's limit cut the answer, how long
    /// it took, what the scans read.
    pub fn trailer(&self) -> Trailer {
        Trailer {
            truncated: self.done.truncated.load(Ordering::Relaxed),
            elapsed_ms: self.done.elapsed_micros.load(Ordering::Relaxed) as f64 / 1000.0,
            bytes_scanned: self.done.bytes_scanned.load(Ordering::Relaxed),
            cached: self.cached,
        }
    }
}

impl Drop for QueryStream {
    fn drop(&mut self) {
        // A reader that stops early stops the statement (it would stop at its next send anyway).
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Stream for QueryStream {
    type Item = Result<RecordBatch>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// Only queries: SELECT / WITH / VALUES, EXPLAIN of one, SHOW and DESCRIBE.
fn check_read_only(statement: &DfStatement) -> Result<()> {
    fn sql_is_query(s: &SqlStatement) -> bool {
        match s {
            SqlStatement::Query(_)
            | SqlStatement::ExplainTable { .. }
            | SqlStatement::ShowTables { .. }
            | SqlStatement::ShowColumns { .. }
            | SqlStatement::ShowVariable { .. } => true,
            SqlStatement::Explain { statement, .. } => sql_is_query(statement),
            _ => false,
        }
    }
    let allowed = match statement {
        DfStatement::Statement(s) => sql_is_query(s),
        DfStatement::Explain(e) => match e.statement.as_ref() {
            DfStatement::Statement(s) => sql_is_query(s),
            _ => false,
        },
        _ => false,
    };
    if allowed {
        return Ok(());
    }
    let text = statement.to_string();
    let verb: String = text
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
        .to_uppercase();
    Err(Error::NotAllowed {
        detail: format!(
            "only queries run here (SELECT, WITH, VALUES, EXPLAIN, SHOW, DESCRIBE); {verb} … is not \
             allowed"
        ),
    })
}

/// The plan holds no DDL, DML or session statement (checked again after planning: a view or a
/// rewrite could hide one).
fn verify_read_only(plan: &LogicalPlan) -> Result<()> {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
        .verify_plan(plan)
        .map_err(|e| Error::NotAllowed {
            detail: e.strip_backtrace(),
        })
}

/// Whether the plan's answer depends only on the tables it reads: no volatile or stable function
/// (`random()`, `now()`, `current_date`, `current_user`).
fn deterministic(plan: &LogicalPlan) -> bool {
    let mut pure = true;
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                let fixed = match e {
                    Expr::ScalarFunction(f) => {
                        f.func.signature().volatility == Volatility::Immutable
                    }
                    other => !other.is_volatile_node(),
                };
                if fixed {
                    Ok(TreeNodeRecursion::Continue)
                } else {
                    pure = false;
                    Ok(TreeNodeRecursion::Stop)
                }
            })
        })
    });
    pure
}

/// `provider` of table `name`, with the columns of the contract (`wanted`) it lacks read as nulls
/// of their types: a table written before the contract gained them, which the next compaction
/// evolves (`shoplake_batch::write`'s `evolved`), still answers every view and report meanwhile.
pub(crate) fn with_contract_columns(
    name: &str,
    provider: Arc<dyn TableProvider>,
    wanted: &SchemaRef,
) -> Result<Arc<dyn TableProvider>> {
    let have = provider.schema();
    let missing: Vec<_> = wanted
        .fields()
        .iter()
        .filter(|f| have.field_with_name(f.name()).is_err())
        .collect();
    if missing.is_empty() {
        return Ok(provider);
    }
    let mut columns: Vec<Expr> = have
        .fields()
        .iter()
        .map(|f| Expr::Column(datafusion::common::Column::from_name(f.name())))
        .collect();
    for f in missing {
        let null = ScalarValue::try_from(f.data_type()).map_err(Error::execution)?;
        columns.push(datafusion::logical_expr::lit(null).alias(f.name()));
    }
    let plan = LogicalPlanBuilder::scan(name, provider_as_source(provider), None)
        .and_then(|b| b.project(columns))
        .and_then(|b| b.build())
        .map_err(Error::execution)?;
    Ok(Arc::new(ViewTable::new(plan, None)))
}

/// The lake tables a plan reads, through the views it uses.
fn tables_read(plan: &LogicalPlan, out: &mut BTreeSet<String>) {
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            if let Ok(provider) = source_as_provider(&scan.source)
                && let Some(view) = provider.downcast_ref::<ViewTable>()
            {
                tables_read(view.logical_plan(), out);
            } else {
                out.insert(scan.table_name.table().to_owned());
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
}

/// Bytes read by the Parquet scans of an executed plan.
fn bytes_scanned(plan: &dyn ExecutionPlan) -> u64 {
    let own = plan
        .metrics()
        .and_then(|m| m.sum_by_name("bytes_scanned"))
        .map_or(0, |v| v.as_usize() as u64);
    own + plan
        .children()
        .into_iter()
        .map(|child| bytes_scanned(child.as_ref()))
        .sum::<u64>()
}

/// A table whose scans get no filters (`QueryOptions::pruning` off): no Delta file skipping, no
/// row-group, bloom-filter or page pruning; DataFusion filters the rows after reading them all.
#[derive(Debug)]
struct Unpruned(Arc<dyn TableProvider>);

#[async_trait]
impl TableProvider for Unpruned {
    fn schema(&self) -> SchemaRef {
        self.0.schema()
    }

    fn table_type(&self) -> TableType {
        self.0.table_type()
    }

    // Filters are not pushed down (the default `supports_filters_pushdown` declines them all).
    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        self.0.scan(state, projection, filters, limit).await
    }
}

/// Planning errors are the user's SQL; execution errors are ours, unless they are about the SQL
/// or the statement's memory.
fn classify(e: DataFusionError) -> Error {
    match e.find_root() {
        DataFusionError::ResourcesExhausted(detail) => Error::OutOfMemory {
            detail: detail.clone(),
        },
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_) => Error::BadSql { error: Box::new(e) },
        _ => Error::execution(e),
    }
}

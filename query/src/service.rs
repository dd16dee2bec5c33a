//! The DataFusion session over the lake, kept current as the lake grows.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::{MemTable, TableType};
use datafusion::error::DataFusionError;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use shoplake_batch::{Lake, tables};
use shoplake_server::telemetry::{self, Collector, DescriptorEncoder};
use tokio::sync::Mutex;
use tracing::{debug, info};

use crate::{Error, Result};

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
    /// Memory all running queries may hold; a query over it fails instead of taking the host down.
    pub memory_limit_bytes: usize,
    /// How often, at most, table versions are checked.
    pub refresh_interval: Duration,
    /// Skip what filters rule out: Delta files by their statistics, Parquet row groups by theirs
    /// and by bloom filters, pages by the page index. Off only to measure what it saves: scans then
    /// get no filters at all and every row is read and filtered after decoding.
    pub pruning: bool,
}

impl Default for QueryOptions {
    fn default() -> Self {
        QueryOptions {
            storage_options: HashMap::new(),
            memory_limit_bytes: 2 << 30,
            refresh_interval: Duration::from_secs(1),
            pruning: true,
        }
    }
}

/// A query's result: its schema (also when there are no rows) and its batches.
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

struct Refresh {
    checked: Option<Instant>,
    /// Registered Delta version per table (None: registered empty).
    versions: HashMap<&'static str, Option<u64>>,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct QueryMetrics {
    pub queries: AtomicU64,
    pub bad_sql: AtomicU64,
    pub failed: AtomicU64,
    pub micros: AtomicU64,
    pub bytes_scanned: AtomicU64,
}

/// Metric names of the query service (counters without `_total`, which the encoder adds).
pub mod names {
    pub const QUERIES: &str = "shoplake_queries";
    pub const QUERY_ERRORS: &str = "shoplake_query_errors";
    pub const QUERY_SECONDS: &str = "shoplake_query_seconds";
    pub const BYTES_SCANNED: &str = "shoplake_query_bytes_scanned";
}

impl Collector for QueryMetrics {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        telemetry::counter(
            &mut enc,
            names::QUERIES,
            "SQL statements run.",
            load(&self.queries),
        )?;
        telemetry::counter_by(
            &mut enc,
            names::QUERY_ERRORS,
            "Statements that failed: bad SQL (the user's) or failed (the service's).",
            "kind",
            [
                ("bad_sql", load(&self.bad_sql)),
                ("failed", load(&self.failed)),
            ],
        )?;
        telemetry::seconds_counter(
            &mut enc,
            names::QUERY_SECONDS,
            "Time spent running statements.",
            load(&self.micros) as f64 / 1e6,
        )?;
        telemetry::counter(
            &mut enc,
            names::BYTES_SCANNED,
            "Bytes the Parquet scans read.",
            load(&self.bytes_scanned),
        )
    }
}

/// SQL over the lake.
pub struct QueryService {
    ctx: SessionContext,
    lake: Lake,
    options: QueryOptions,
    refresh: Mutex<Refresh>,
    metrics: Arc<QueryMetrics>,
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
        let lake = Lake::open(lake_root, options.storage_options.clone())?;
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(options.memory_limit_bytes, 1.0)
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
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        let service = QueryService {
            ctx,
            lake,
            options,
            refresh: Mutex::new(Refresh {
                checked: None,
                versions: HashMap::new(),
            }),
            metrics: Arc::default(),
        };
        service.refresh(true).await?;
        Ok(service)
    }

    /// Counters of queries served.
    pub fn metrics(&self) -> &Arc<QueryMetrics> {
        &self.metrics
    }

    /// The tables, with their registered Delta versions (None: not written yet) and their
    /// schemas as the registry describes them.
    pub async fn tables(&self) -> Result<Vec<(String, Option<u64>, SchemaRef)>> {
        self.refresh(false).await?;
        let refresh = self.refresh.lock().await;
        Ok(tables::ALL
            .iter()
            .map(|t| {
                let version = refresh.versions.get(t.name).copied().flatten();
                (t.name.to_owned(), version, t.schema())
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
            let provider: Arc<dyn TableProvider> = match table {
                Some(table) => {
                    table
                        .update_datafusion_session(&self.ctx.state())
                        .map_err(|source| shoplake_batch::Error::delta(name, source))?;
                    let provider = table.table_provider().await.map_err(Error::execution)?;
                    if self.options.pruning {
                        provider
                    } else {
                        Arc::new(Unpruned(provider))
                    }
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
            changed = true;
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
            if !force {
                info!(versions = ?refresh.versions, "lake changed; tables and views refreshed");
            }
        }
        refresh.checked = Some(Instant::now());
        Ok(())
    }

    /// Runs one query (a SELECT, WITH, EXPLAIN, SHOW or DESCRIBE statement).
    pub async fn sql(&self, sql: &str) -> Result<QueryResult> {
        let start = Instant::now();
        self.metrics.queries.fetch_add(1, Ordering::Relaxed);
        let result = self.run(sql).await;
        self.metrics
            .micros
            .fetch_add(start.elapsed().as_micros() as u64, Ordering::Relaxed);
        match &result {
            Err(Error::BadSql { .. }) => self.metrics.bad_sql.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.metrics.failed.fetch_add(1, Ordering::Relaxed),
            Ok(_) => 0,
        };
        result.map(|(schema, batches, bytes_scanned)| {
            self.metrics
                .bytes_scanned
                .fetch_add(bytes_scanned, Ordering::Relaxed);
            QueryResult {
                schema,
                batches,
                elapsed: start.elapsed(),
                bytes_scanned,
            }
        })
    }

    async fn run(&self, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>, u64)> {
        self.refresh(false).await?;
        let read_only = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let df = self
            .ctx
            .sql_with_options(sql, read_only)
            .await
            .map_err(classify)?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let plan = df.create_physical_plan().await.map_err(classify)?;
        let batches = collect(plan.clone(), self.ctx.task_ctx())
            .await
            .map_err(classify)?;
        Ok((schema, batches, bytes_scanned(plan.as_ref())))
    }
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

/// Planning errors are the user's SQL; execution errors are ours, unless they are about the SQL.
fn classify(e: DataFusionError) -> Error {
    match e.find_root() {
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_) => Error::BadSql { error: Box::new(e) },
        _ => Error::execution(e),
    }
}

//! Time travel for analysts: `table_at('events', 42)` reads version 42 of a lake table, and
//! `table_at('events', TIMESTAMP '2026-12-01 09:00:00')` the last version committed at or before
//! that time (UTC), so a report can be re-run as the lake stood then. The reach is what VACUUM
//! kept: `[retention] deleted_files`, 7 days by default.
//!
//! A table function rather than `VERSION AS OF` syntax: DataFusion's SQL has no such clause, and a
//! function works the same from HTTP, the Postgres wire and Flight SQL. Its columns are today's
//! contract's: a version written before the contract gained a column reads it as nulls. Only the
//! roles that see personal data have it (the restricted catalog of marketing hides personal
//! columns, which an old version would show).

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableFunctionImpl, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::provider_as_source;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{Expr, LogicalPlanBuilder};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::scalar::ScalarValue;
use shoplake_batch::{AsOf, Lake, tables};

/// `table_at(name, version | timestamp)`.
#[derive(Debug)]
pub(crate) struct TableAt {
    pub(crate) lake: Lake,
}

fn plan_err(message: String) -> DataFusionError {
    DataFusionError::Plan(message)
}

/// The constant an argument is: a literal, or a literal cast to a type (`TIMESTAMP '…'` is a
/// string cast to a timestamp; the string is read as a time below).
fn constant(e: &Expr) -> Option<&ScalarValue> {
    match e {
        Expr::Literal(v, _) => Some(v),
        Expr::Cast(c) => constant(&c.expr),
        Expr::TryCast(c) => constant(&c.expr),
        _ => None,
    }
}

const USAGE: &str = "table_at(table, version) or table_at(table, TIMESTAMP '…')";

impl TableFunctionImpl for TableAt {
    fn call(&self, args: &[Expr]) -> datafusion::error::Result<Arc<dyn TableProvider>> {
        let (Some(name), Some(at), 2) = (
            args.first().and_then(constant),
            args.get(1).and_then(constant),
            args.len(),
        ) else {
            return Err(plan_err(format!(
                "{USAGE}: two constants, got {}",
                args.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        let name = match name {
            ScalarValue::Utf8(Some(n)) | ScalarValue::Utf8View(Some(n)) => n.clone(),
            other => {
                return Err(plan_err(format!(
                    "{USAGE}: the table is a name, got {other}"
                )));
            }
        };
        let descriptor = tables::get(&name).map_err(|e| plan_err(e.to_string()))?;
        let at = match at {
            ScalarValue::Int64(Some(v)) if *v >= 0 => AsOf::Version(*v as u64),
            ScalarValue::TimestampMicrosecond(Some(t), _) => AsOf::Time(*t),
            ScalarValue::TimestampNanosecond(Some(t), _) => AsOf::Time(t.div_euclid(1_000)),
            ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => AsOf::Time(
                arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(s)
                    .map_err(|e| plan_err(format!("{USAGE}: {s:?} is not a time: {e}")))?
                    .div_euclid(1_000),
            ),
            other => {
                return Err(plan_err(format!(
                    "{USAGE}: a version (0 or more) or a timestamp, got {other}"
                )));
            }
        };
        Ok(Arc::new(TableAtVersion {
            lake: self.lake.clone(),
            name: descriptor.name,
            at,
            schema: descriptor.schema(),
        }))
    }
}

/// One table at one version, loaded when scanned.
#[derive(Debug)]
struct TableAtVersion {
    lake: Lake,
    name: &'static str,
    at: AsOf,
    schema: SchemaRef,
}

#[async_trait]
impl TableProvider for TableAtVersion {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let name = self.name;
        let table = self
            .lake
            .table_at(name, self.at)
            .await
            .map_err(|e| DataFusionError::Execution(format!("{name} at {:?}: {e}", self.at)))?
            .ok_or_else(|| DataFusionError::Execution(format!("the lake has no {name} table")))?;
        let provider = table
            .table_provider()
            .await
            .map_err(|e| DataFusionError::Execution(e.to_string()))?;
        let provider = crate::service::with_contract_columns(name, provider, &self.schema)
            .map_err(|e| DataFusionError::Execution(e.to_string()))?;
        // The version's own types may differ from the contract's as DataFusion reads them (string
        // views for strings): each projected column is cast to the declared type, by name.
        let fields: Vec<usize> = match projection {
            Some(columns) => columns.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let columns: Vec<Expr> = fields
            .iter()
            .map(|i| {
                let f = self.schema.field(*i);
                datafusion::logical_expr::cast(
                    Expr::Column(datafusion::common::Column::from_name(f.name())),
                    f.data_type().clone(),
                )
                .alias(f.name())
            })
            .collect();
        let mut plan =
            LogicalPlanBuilder::scan(name, provider_as_source(provider), None)?.project(columns)?;
        if let Some(limit) = limit {
            plan = plan.limit(0, Some(limit))?;
        }
        let _ = filters; // none are pushed here (the default: DataFusion filters above)
        state.create_physical_plan(&plan.build()?).await
    }
}

//! The lake writer's settings: how every Delta table of the lake is written, whichever job writes
//! it (compaction's appends, the derived tables' merges and rebuilds, optimize, the affinity job).
//!
//! One place decides the Parquet layout, so that a table's files are the same whoever wrote them:
//! zstd at [`WriteOptions::zstd_level`], row groups of [`ROW_GROUP_ROWS`] rows, and bloom filters
//! on the columns the table's [`TableDescriptor`] names (why these: the crate docs' *Layout*).
//! Rows reach a writer through [`conform`], which casts them to the table's schema.
//!
//! ## Concurrent writers
//! Two compactors (or a compactor and `shoplake load spend`) may write the same table at once.
//! Delta's optimistic commits guard against that only as far as each commit says what it read,
//! and two rules close what they leave open:
//! - **Rows never go in by the commit that creates a table.** delta-rs retries a creating commit
//!   that lost the race at the next version *without a conflict check*, so two writers that both
//!   saw no table would both add their rows. Tables are created empty ([`create_empty`]; two
//!   creations at once are harmless) and rows go in by a later commit, against a snapshot.
//! - **Every commit that adds rows carries the next version of one application transaction**
//!   ([`WRITER_APP_ID`], a Delta `txn` action; [`writer_commit`]). Delta's conflict checker
//!   refuses a commit when a commit it did not read carried the same application id, so of two
//!   writers that read the same snapshot exactly one lands, whatever their predicates say (a
//!   MERGE's conflict check otherwise rests on file statistics, and an overwrite of a table has
//!   none). The loser sees [`Error::is_conflict`] and re-runs its round against the new snapshot.

use std::num::NonZeroU64;

use arrow::array::RecordBatch;
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::SaveMode;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use crate::tables::TableDescriptor;
use crate::{Error, Lake, Result, delta_err};

/// The Delta application id every commit that adds rows to a table carries (see *Concurrent
/// writers* above). Its value is the one compaction's appends always carried, so lakes written
/// before it covered every writer read on.
pub const WRITER_APP_ID: &str = "shoplake-compactor";

/// Rows per Parquet row group: the unit of statistics and bloom-filter pruning.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;

/// False-positive rate of the bloom filters.
const BLOOM_FILTER_FPP: f64 = 0.01;

/// How the lake's Parquet files are written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteOptions {
    /// Target size of the Parquet files written, bytes.
    pub target_file_size: u64,
    /// zstd level of the lake's Parquet files.
    pub zstd_level: i32,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            target_file_size: 256 << 20,
            zstd_level: 3,
        }
    }
}

impl WriteOptions {
    /// The Parquet writer properties of `table`'s files: zstd at the configured level, row groups
    /// of [`ROW_GROUP_ROWS`], and a bloom filter on each of the table's
    /// [`bloom_filter_columns`](TableDescriptor::bloom_filter_columns).
    pub fn writer_properties(&self, table: &TableDescriptor) -> Result<WriterProperties> {
        let level = ZstdLevel::try_new(self.zstd_level).map_err(|e| Error::BadOption {
            name: "zstd_level",
            value: self.zstd_level.to_string(),
            reason: e.to_string(),
        })?;
        let mut builder = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
        // Bloom filters on the ids a lookup names (one shopper, one order): a row group without
        // the id is skipped without reading its pages. At most a row group's rows at 1% false
        // positives, and parquet folds each filter down to what its distinct values need once
        // they are known.
        for column in table.bloom_filter_columns {
            let path = ColumnPath::from(*column);
            builder = builder
                .set_column_bloom_filter_enabled(path.clone(), true)
                .set_column_bloom_filter_fpp(path.clone(), BLOOM_FILTER_FPP)
                .set_column_bloom_filter_max_ndv(path, ROW_GROUP_ROWS as u64);
        }
        Ok(builder.build())
    }

    /// The target file size for deltalake's writers (None: its default, when set to 0).
    pub fn target_file_size(&self) -> Option<NonZeroU64> {
        NonZeroU64::new(self.target_file_size)
    }
}

/// Casts `batches` to `table`'s schema column by column (DataFusion may hand back equivalent
/// types, such as string views, and columns in another order).
pub fn conform(batches: Vec<RecordBatch>, table: &TableDescriptor) -> Result<Vec<RecordBatch>> {
    let schema = table.schema();
    batches
        .into_iter()
        .map(|b| {
            let columns = schema
                .fields()
                .iter()
                .map(|f| {
                    let c = b
                        .column_by_name(f.name())
                        .ok_or_else(|| Error::missing_column(table.name, f.name()))?;
                    Ok(arrow::compute::cast(c, f.data_type())?)
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(RecordBatch::try_new(schema.clone(), columns)?)
        })
        .collect()
}

/// The commit properties of a write by `operation` (recorded in the Delta log's commit info as
/// `shoplake.operation`, with `shoplake.rows` when given).
pub(crate) fn commit_properties(operation: &str, rows: Option<usize>) -> CommitProperties {
    let operation = (
        "shoplake.operation".to_owned(),
        serde_json::json!(operation),
    );
    match rows {
        Some(rows) => CommitProperties::default().with_metadata([
            operation,
            ("shoplake.rows".to_owned(), serde_json::json!(rows)),
        ]),
        None => CommitProperties::default().with_metadata([operation]),
    }
}

/// The commit properties of `operation` adding rows to `table`: [`commit_properties`] and the next
/// version of the [`WRITER_APP_ID`] transaction, so that a concurrent writer's commit conflicts.
pub(crate) async fn writer_commit(
    table: &deltalake::DeltaTable,
    name: &str,
    operation: &str,
    rows: Option<usize>,
) -> Result<CommitProperties> {
    let last = last_writer_version(table, name).await?;
    Ok(commit_after(last, operation, rows))
}

/// [`writer_commit`] for a caller that already read the table's [`last_writer_version`].
pub(crate) fn commit_after(
    last: Option<i64>,
    operation: &str,
    rows: Option<usize>,
) -> CommitProperties {
    commit_properties(operation, rows)
        .with_application_transaction(Transaction::new(WRITER_APP_ID, last.unwrap_or(0) + 1))
}

/// The version of the last [`WRITER_APP_ID`] transaction committed to `table`; None when no
/// commit carried one (a table created empty and never written since).
pub(crate) async fn last_writer_version(
    table: &deltalake::DeltaTable,
    name: &str,
) -> Result<Option<i64>> {
    table
        .snapshot()
        .map_err(delta_err(name))?
        .transaction_version(table.log_store().as_ref(), WRITER_APP_ID)
        .await
        .map_err(delta_err(name))
}

/// The table `table`, loaded; created empty first ([`create_empty`]) when the lake lacks it.
/// Either way its schema is the contract's ([`evolved`]).
pub(crate) async fn table_or_empty(
    lake: &Lake,
    table: &TableDescriptor,
    opts: &WriteOptions,
) -> Result<deltalake::DeltaTable> {
    match evolved(lake, table).await? {
        Some(loaded) => Ok(loaded),
        None => create_empty(lake, table, opts).await,
    }
}

/// The table `table` as every writer opens it: loaded (None when the lake lacks it), its schema
/// brought up to the contract's first. Columns the contract gained since the table was written
/// (a newer version of shoplake, a new event field) are added to it as nullable columns, in a
/// commit of their own recorded as `shoplake.operation = evolve_schema` with
/// `shoplake.columns_added`, the event contract's version and shoplake's: the rows written before read them as null, in shoplake and in any
/// Delta reader. Columns the table holds and the contract no longer names are kept. A column
/// whose type changed cannot be merged: [`Error::SchemaChange`] names it and says what to do,
/// and nothing is written.
pub(crate) async fn evolved(
    lake: &Lake,
    table: &TableDescriptor,
) -> Result<Option<deltalake::DeltaTable>> {
    use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
    use deltalake::kernel::{StructField, StructType};
    let Some(loaded) = lake.table(table.name).await? else {
        return Ok(None);
    };
    let name = table.name;
    let current = loaded.snapshot().map_err(delta_err(name))?.schema();
    let wanted: StructType = table
        .schema()
        .as_ref()
        .try_into_kernel()
        .map_err(|e| Error::Arrow(arrow::error::ArrowError::SchemaError(e.to_string())))?;
    let mut added = Vec::new();
    for field in wanted.fields() {
        match current.field(field.name()) {
            Some(have) if have.data_type() != field.data_type() => {
                return Err(Error::SchemaChange {
                    table: name.to_owned(),
                    column: field.name().clone(),
                    found: have.data_type().to_string(),
                    wanted: field.data_type().to_string(),
                });
            }
            Some(_) => {}
            None => added.push(StructField::new(
                field.name().clone(),
                field.data_type().clone(),
                true,
            )),
        }
    }
    if added.is_empty() {
        return Ok(Some(loaded));
    }
    let names: Vec<String> = added.iter().map(|f| f.name().clone()).collect();
    let commit = CommitProperties::default().with_metadata([
        (
            "shoplake.operation".to_owned(),
            serde_json::json!("evolve_schema"),
        ),
        (
            "shoplake.columns_added".to_owned(),
            serde_json::json!(names),
        ),
        (
            "shoplake.contract_version".to_owned(),
            serde_json::json!(shoplake_events::SCHEMA_VERSION),
        ),
        (
            "shoplake.version".to_owned(),
            serde_json::json!(env!("CARGO_PKG_VERSION")),
        ),
    ]);
    let evolved = loaded
        .add_columns()
        .with_fields(added)
        .with_commit_properties(commit)
        .await
        .map_err(delta_err(name))?;
    tracing::info!(table = name, columns = ?names, "schema evolved: columns added");
    Ok(Some(evolved))
}

/// The table property that keeps personal columns out of the Delta log's file statistics: the
/// log records each file's min and max per column, and it outlives the files (an erased
/// person's ids would stay in `_delta_log` after their rows and files are gone). Statistics are
/// kept for every other column (event times for pruning, amounts, …); the personal ones still
/// have Parquet's own statistics and bloom filters inside each file, which leave with it.
fn stats_columns(table: &TableDescriptor) -> Vec<(&'static str, Option<String>)> {
    if table.personal_columns.is_empty() {
        return Vec::new();
    }
    let columns: Vec<String> = table
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|c| !table.is_personal(c) && !table.partition_columns.contains(&c.as_str()))
        .collect();
    vec![("delta.dataSkippingStatsColumns", Some(columns.join(",")))]
}

/// Creates `table` empty (a commit with its schema and partitioning, no rows) unless it exists,
/// and loads it. Rows go in by later commits (see *Concurrent writers* above); two creations at
/// once are harmless (the second adds an empty commit).
pub(crate) async fn create_empty(
    lake: &Lake,
    table: &TableDescriptor,
    opts: &WriteOptions,
) -> Result<deltalake::DeltaTable> {
    lake.new_table(table.name)?
        .write(vec![RecordBatch::new_empty(table.schema())])
        .with_save_mode(SaveMode::Ignore)
        .with_partition_columns(table.partition_columns.iter().copied())
        .with_configuration(stats_columns(table))
        .with_writer_properties(opts.writer_properties(table)?)
        .await
        .map_err(delta_err(table.name))?;
    lake.table(table.name)
        .await?
        .ok_or_else(|| Error::MissingTable {
            table: table.name.to_owned(),
        })
}

/// Merges `source` into `table` on its descriptor's key: a matched row takes every column of the
/// source row, an unmatched one is inserted whole, in a commit with `commit`'s properties (from
/// [`writer_commit`]). Returns (rows inserted, rows updated).
pub(crate) async fn upsert_on_key(
    table: deltalake::DeltaTable,
    descriptor: &TableDescriptor,
    source: datafusion::dataframe::DataFrame,
    opts: &WriteOptions,
    commit: CommitProperties,
) -> Result<(usize, usize)> {
    use datafusion::prelude::col;
    let name = descriptor.name;
    let schema = descriptor.schema();
    let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let on = descriptor
        .key
        .iter()
        .map(|k| col(format!("target.{k}")).eq(col(format!("source.{k}"))))
        .reduce(|a, b| a.and(b))
        .ok_or_else(|| Error::MissingColumn {
            table: name.to_owned(),
            column: "its key".to_owned(),
        })?;
    let (_, metrics) = table
        .merge(source, on)
        .with_source_alias("source")
        .with_target_alias("target")
        .with_writer_properties(opts.writer_properties(descriptor)?)
        .with_commit_properties(commit)
        .when_matched_update(|u| {
            columns
                .iter()
                .fold(u, |u, c| u.update(*c, col(format!("source.{c}"))))
        })
        .and_then(|m| {
            m.when_not_matched_insert(|i| {
                columns
                    .iter()
                    .fold(i, |i, c| i.set(*c, col(format!("source.{c}"))))
            })
        })
        .map_err(crate::delta_err(name))?
        .await
        .map_err(crate::delta_err(name))?;
    Ok((
        metrics.num_target_rows_inserted,
        metrics.num_target_rows_updated,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables;

    #[test]
    fn each_table_gets_bloom_filters_on_its_own_id_columns_only() {
        let opts = WriteOptions::default();
        for table in tables::ALL {
            let props = opts.writer_properties(table).unwrap();
            for field in table.schema().fields() {
                let path = ColumnPath::from(field.name().as_str());
                assert_eq!(
                    props.bloom_filter_properties(&path).is_some(),
                    table.bloom_filter_columns.contains(&field.name().as_str()),
                    "{}.{}",
                    table.name,
                    field.name()
                );
            }
            assert_eq!(props.max_row_group_row_count(), Some(ROW_GROUP_ROWS));
            assert_eq!(
                props.compression(&ColumnPath::from("any")),
                Compression::ZSTD(ZstdLevel::try_new(3).unwrap())
            );
        }
    }

    #[test]
    fn a_zstd_level_out_of_range_is_refused_with_its_value() {
        let opts = WriteOptions {
            zstd_level: 99,
            ..WriteOptions::default()
        };
        let e = opts.writer_properties(&tables::EVENTS).unwrap_err();
        assert!(
            matches!(&e, Error::BadOption { name: "zstd_level", value, .. } if value == "99"),
            "{e}"
        );
    }
}

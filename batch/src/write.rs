//! The lake writer's settings: how every Delta table of the lake is written, whichever job writes
//! it (compaction's appends, the derived tables' merges and rebuilds, optimize, the affinity job).
//!
//! One place decides the Parquet layout, so that a table's files are the same whoever wrote them:
//! zstd at [`WriteOptions::zstd_level`], row groups of [`ROW_GROUP_ROWS`] rows, and bloom filters
//! on the columns the table's [`TableDescriptor`] names (why these: the crate docs' *Layout*).
//! Rows reach a writer through [`conform`], which casts them to the table's schema.

use std::num::NonZeroU64;

use arrow::array::RecordBatch;
use deltalake::kernel::transaction::CommitProperties;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use crate::tables::TableDescriptor;
use crate::{Error, Result};

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

/// Merges `source` into `table` on its descriptor's key: a matched row takes every column of the
/// source row, an unmatched one is inserted whole. Returns (rows inserted, rows updated).
pub(crate) async fn upsert_on_key(
    table: deltalake::DeltaTable,
    descriptor: &TableDescriptor,
    source: datafusion::dataframe::DataFrame,
    opts: &WriteOptions,
    operation: &str,
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
        .with_commit_properties(commit_properties(operation, None))
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

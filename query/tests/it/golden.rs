//! Golden SQL: every `sql/tests/*.slt` file run through the real query service (tables, views)
//! over the seeded lake. Rewrite the expected results after an intended change with
//! `SHOPLAKE_SLT_COMPLETE=1 cargo test --workspace --test it golden`, then read the diff.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::Array;
use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use shoplake_query::QueryService;
use sqllogictest::{DBOutput, DefaultColumnType};

use crate::lake::service;

struct Db(Arc<QueryService>);

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct DbError(String);

fn column_type(t: &DataType) -> DefaultColumnType {
    match t {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => DefaultColumnType::Integer,
        DataType::Float16
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => DefaultColumnType::FloatingPoint,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => DefaultColumnType::Text,
        _ => DefaultColumnType::Any,
    }
}

/// One cell as text: NULL for nulls, (empty) for empty strings, floats to 6 significant places.
fn cell(array: &dyn Array, row: usize, formatter: &ArrayFormatter<'_>) -> String {
    if array.is_null(row) {
        return "NULL".into();
    }
    let text = formatter.value(row).to_string();
    match array.data_type() {
        DataType::Float32 | DataType::Float64 => {
            let v: f64 = text.parse().unwrap_or(f64::NAN);
            let s = format!("{v:.6}");
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        }
        _ if text.is_empty() => "(empty)".into(),
        _ => text,
    }
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for Db {
    type Error = DbError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, DbError> {
        let result = self.0.sql(sql).await.map_err(|e| DbError(e.to_string()))?;
        let types = result
            .schema
            .fields()
            .iter()
            .map(|f| column_type(f.data_type()))
            .collect();
        let options = FormatOptions::default();
        let mut rows = Vec::new();
        for batch in &result.batches {
            let formatters = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| DbError(e.to_string()))?;
            for row in 0..batch.num_rows() {
                rows.push(
                    batch
                        .columns()
                        .iter()
                        .zip(&formatters)
                        .map(|(c, f)| cell(c.as_ref(), row, f))
                        .collect(),
                );
            }
        }
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "shoplake"
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await;
    }
}

fn slt_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sql/tests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "slt"))
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_sql() {
    let service = service().await;
    let complete = std::env::var_os("SHOPLAKE_SLT_COMPLETE").is_some();
    let files = slt_files();
    assert!(!files.is_empty(), "no .slt files in sql/tests");
    let mut failures = Vec::new();
    for file in files {
        let s = service.clone();
        let mut runner = sqllogictest::Runner::new(move || {
            let s = s.clone();
            async move { Ok(Db(s)) }
        });
        if complete {
            runner
                .update_test_file(
                    &file,
                    " ",
                    sqllogictest::default_validator,
                    sqllogictest::default_normalizer,
                    sqllogictest::default_column_validator,
                )
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        } else if let Err(e) = runner.run_file_async(&file).await {
            failures.push(format!("{}: {}", file.display(), e.display(true)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

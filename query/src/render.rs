//! Results as a table, CSV, a JSON array of row objects, or NDJSON.

use arrow::record_batch::RecordBatch;

use crate::{QueryResult, Result};

/// Output formats of `shoplake sql`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
    /// A JSON array of objects, one per row.
    Json,
    /// One JSON object per line.
    NdJson,
}

/// Renders a result; the table and CSV show the columns even when there are no rows.
pub fn render(result: &QueryResult, format: Format) -> Result<String> {
    let batches: Vec<&RecordBatch> = result.batches.iter().collect();
    Ok(match format {
        Format::Table => arrow::util::pretty::pretty_format_batches_with_schema(
            result.schema.clone(),
            &result.batches,
        )?
        .to_string(),
        Format::Csv => {
            let mut out = Vec::new();
            {
                let mut writer = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut out);
                if batches.is_empty() {
                    writer.write(&RecordBatch::new_empty(result.schema.clone()))?;
                }
                for b in &batches {
                    writer.write(b)?;
                }
            }
            String::from_utf8_lossy(&out).trim_end().to_owned()
        }
        Format::Json => String::from_utf8_lossy(&json_array(&batches)?).into_owned(),
        Format::NdJson => {
            let mut out = Vec::new();
            {
                let mut writer = arrow::json::LineDelimitedWriter::new(&mut out);
                writer.write_batches(&batches)?;
                writer.finish()?;
            }
            String::from_utf8_lossy(&out).trim_end().to_owned()
        }
    })
}

fn json_array(batches: &[&RecordBatch]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut writer = arrow::json::ArrayWriter::new(&mut out);
        writer.write_batches(batches)?;
        writer.finish()?;
    }
    if out.is_empty() {
        out.extend_from_slice(b"[]");
    }
    Ok(out)
}

/// The rows as JSON objects (nulls omitted, as arrow-json writes them).
pub fn to_json_rows(result: &QueryResult) -> Result<Vec<serde_json::Value>> {
    let batches: Vec<&RecordBatch> = result.batches.iter().collect();
    let bytes = json_array(&batches)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| arrow::error::ArrowError::JsonError(e.to_string()).into())
}

//! Answers encoded batch by batch, so that a large answer is sent as it is produced and never
//! sits whole in memory: JSON, NDJSON, CSV, the Arrow IPC stream and Parquet.

use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde_json::json;

use crate::Result;

/// Wire formats of an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WireFormat {
    /// `{"columns": […], "rows": [{…}], "row_count", "truncated", "elapsed_ms", "bytes_scanned"}`.
    Json,
    /// One JSON object per row and line.
    NdJson,
    /// A header line, then one line per row.
    Csv,
    /// The Arrow IPC stream format (pyarrow `ipc.open_stream`, DuckDB, polars).
    Arrow,
    /// A Parquet file (zstd), row groups as they fill.
    Parquet,
}

impl WireFormat {
    pub const ALL: [WireFormat; 5] = [
        WireFormat::Json,
        WireFormat::NdJson,
        WireFormat::Csv,
        WireFormat::Arrow,
        WireFormat::Parquet,
    ];

    /// The `?format=` name.
    pub fn name(self) -> &'static str {
        match self {
            WireFormat::Json => "json",
            WireFormat::NdJson => "ndjson",
            WireFormat::Csv => "csv",
            WireFormat::Arrow => "arrow",
            WireFormat::Parquet => "parquet",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            WireFormat::Json => "application/json",
            WireFormat::NdJson => "application/x-ndjson",
            WireFormat::Csv => "text/csv; charset=utf-8",
            WireFormat::Arrow => "application/vnd.apache.arrow.stream",
            WireFormat::Parquet => "application/vnd.apache.parquet",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(name))
    }

    /// The format an `Accept` header asks for: the first of its media types we serve (quality
    /// values are not weighed; clients that send several list their preference first). `*/*`
    /// and no header mean JSON; None when only formats we do not serve are accepted.
    pub fn from_accept(accept: Option<&str>) -> Option<Self> {
        let Some(accept) = accept else {
            return Some(WireFormat::Json);
        };
        for media in accept.split(',') {
            let media = media.split(';').next().unwrap_or_default().trim();
            let format = match media.to_ascii_lowercase().as_str() {
                "*/*" | "application/*" | "application/json" => WireFormat::Json,
                "application/x-ndjson" | "application/jsonl" | "application/ndjson" => {
                    WireFormat::NdJson
                }
                "text/csv" | "text/*" => WireFormat::Csv,
                "application/vnd.apache.arrow.stream" => WireFormat::Arrow,
                "application/vnd.apache.parquet" | "application/x-parquet" => WireFormat::Parquet,
                _ => continue,
            };
            return Some(format);
        }
        None
    }
}

/// Encodes one answer: `begin`, `batch` per batch, `finish`; each returns the bytes to send.
pub struct Encoder {
    inner: Inner,
}

enum Inner {
    Json { rows: u64 },
    NdJson,
    Csv { header: bool },
    Arrow(Box<arrow::ipc::writer::StreamWriter<Vec<u8>>>),
    Parquet(Box<ArrowWriter<Vec<u8>>>),
}

/// What the JSON trailer tells after the rows.
#[derive(Clone, Copy, Debug, Default)]
pub struct Trailer {
    pub truncated: bool,
    pub elapsed_ms: f64,
    pub bytes_scanned: u64,
    pub cached: bool,
}

impl Encoder {
    /// The encoder and the bytes that open the answer.
    pub fn begin(format: WireFormat, schema: &SchemaRef) -> Result<(Self, Bytes)> {
        let (inner, head) = match format {
            WireFormat::Json => {
                let columns: Vec<_> = schema
                    .fields()
                    .iter()
                    .map(|f| json!({"name": f.name(), "type": f.data_type().to_string()}))
                    .collect();
                let head = format!("{{\"columns\":{},\"rows\":[", json!(columns));
                (Inner::Json { rows: 0 }, Bytes::from(head))
            }
            WireFormat::NdJson => (Inner::NdJson, Bytes::new()),
            WireFormat::Csv => (Inner::Csv { header: true }, Bytes::new()),
            WireFormat::Arrow => {
                let mut writer = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), schema)?;
                let head = Bytes::from(std::mem::take(writer.get_mut()));
                (Inner::Arrow(Box::new(writer)), head)
            }
            WireFormat::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::default()))
                    .set_max_row_group_row_count(Some(128 * 1024))
                    .build();
                let writer = ArrowWriter::try_new(Vec::new(), Arc::clone(schema), Some(props))?;
                (Inner::Parquet(Box::new(writer)), Bytes::new())
            }
        };
        let mut encoder = Encoder { inner };
        // CSV writes its header with the first batch: an empty answer still gets one.
        if let Inner::Csv { .. } = encoder.inner {
            let empty = encoder.batch(&RecordBatch::new_empty(Arc::clone(schema)))?;
            let mut all = head.to_vec();
            all.extend_from_slice(&empty);
            return Ok((encoder, Bytes::from(all)));
        }
        Ok((encoder, head))
    }

    /// The bytes of one batch.
    pub fn batch(&mut self, batch: &RecordBatch) -> Result<Bytes> {
        Ok(match &mut self.inner {
            Inner::Json { rows } => {
                let mut out = Vec::new();
                {
                    let mut writer = arrow::json::ArrayWriter::new(&mut out);
                    writer.write(batch)?;
                    writer.finish()?;
                }
                // `[{…},{…}]` → `{…},{…}`, with a comma before when rows came already.
                let inner = out
                    .strip_prefix(b"[")
                    .and_then(|o| o.strip_suffix(b"]"))
                    .unwrap_or_default();
                if inner.is_empty() {
                    return Ok(Bytes::new());
                }
                let mut chunk = Vec::with_capacity(inner.len() + 1);
                if *rows > 0 {
                    chunk.push(b',');
                }
                chunk.extend_from_slice(inner);
                *rows += batch.num_rows() as u64;
                Bytes::from(chunk)
            }
            Inner::NdJson => {
                let mut out = Vec::new();
                {
                    let mut writer = arrow::json::LineDelimitedWriter::new(&mut out);
                    writer.write(batch)?;
                    writer.finish()?;
                }
                Bytes::from(out)
            }
            Inner::Csv { header } => {
                let mut out = Vec::new();
                {
                    let mut writer = arrow::csv::WriterBuilder::new()
                        .with_header(*header)
                        .build(&mut out);
                    writer.write(&flat_for_csv(batch)?)?;
                }
                *header = false;
                Bytes::from(out)
            }
            Inner::Arrow(writer) => {
                writer.write(batch)?;
                Bytes::from(std::mem::take(writer.get_mut()))
            }
            Inner::Parquet(writer) => {
                writer.write(batch)?;
                // Row groups reach the buffer as they fill; the writer counts offsets itself.
                Bytes::from(std::mem::take(writer.inner_mut()))
            }
        })
    }

    /// The bytes that close the answer.
    pub fn finish(self, trailer: Trailer) -> Result<Bytes> {
        Ok(match self.inner {
            Inner::Json { rows } => Bytes::from(format!(
                "],\"row_count\":{rows},\"truncated\":{},\"elapsed_ms\":{},\"bytes_scanned\":{},\"cached\":{}}}",
                trailer.truncated,
                json!(trailer.elapsed_ms),
                trailer.bytes_scanned,
                trailer.cached
            )),
            Inner::NdJson | Inner::Csv { .. } => Bytes::new(),
            Inner::Arrow(mut writer) => {
                writer.finish()?;
                Bytes::from(std::mem::take(writer.get_mut()))
            }
            Inner::Parquet(writer) => Bytes::from(writer.into_inner()?),
        })
    }
}

/// `batch` with its nested columns (structs, lists, maps) as JSON text, which CSV can carry.
fn flat_for_csv(batch: &RecordBatch) -> Result<RecordBatch> {
    let nested = |t: &DataType| t.is_nested();
    if !batch
        .schema()
        .fields()
        .iter()
        .any(|f| nested(f.data_type()))
    {
        return Ok(batch.clone());
    }
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if nested(field.data_type()) {
            fields.push(Field::new(field.name(), DataType::Utf8, true));
            columns.push(json_text(field.name(), column)?);
        } else {
            fields.push(field.as_ref().clone());
            columns.push(Arc::clone(column));
        }
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// Each value of `column` as JSON text (arrow-json's encoding; nulls stay null).
fn json_text(name: &str, column: &ArrayRef) -> Result<ArrayRef> {
    let schema = Arc::new(Schema::new(vec![Field::new(
        name,
        column.data_type().clone(),
        true,
    )]));
    let one = RecordBatch::try_new(schema, vec![Arc::clone(column)])?;
    let mut out = Vec::new();
    {
        let mut writer = arrow::json::LineDelimitedWriter::new(&mut out);
        writer.write(&one)?;
        writer.finish()?;
    }
    let values: Vec<Option<String>> = out
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| {
            serde_json::from_slice::<serde_json::Value>(line)
                .ok()
                .and_then(|row| row.get(name).map(serde_json::Value::to_string))
        })
        .collect();
    Ok(Arc::new(StringArray::from(values)))
}

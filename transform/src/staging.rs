//! Staging: enriched batches and bad rows written as Parquet files into the object store, where
//! compaction picks them up; or, with the Firehose events sink, the enriched events as NDJSON
//! lines that Firehose delivers there.

use std::sync::Arc;

use arrow::array::RecordBatch;
use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::{Error, Result};

/// Encodes a batch as one Parquet file (zstd level 1: staging favours speed; compaction recompresses).
pub fn encode_parquet(batch: &RecordBatch) -> Result<Bytes> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(1).map_err(|e| Error::Encode(e.to_string()))?,
        ))
        .set_max_row_group_row_count(Some(1 << 20))
        .build();
    let mut buf = Vec::with_capacity(batch.get_array_memory_size() / 4);
    let mut writer = ArrowWriter::try_new(&mut buf, batch.schema(), Some(props))
        .map_err(|e| Error::Encode(e.to_string()))?;
    writer
        .write(batch)
        .map_err(|e| Error::Encode(e.to_string()))?;
    writer.close().map_err(|e| Error::Encode(e.to_string()))?;
    Ok(Bytes::from(buf))
}

/// Encodes a batch as NDJSON, one row a line (null fields left out), in the form compaction reads
/// back into the same columns.
pub fn encode_ndjson(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(batch.get_array_memory_size());
    let mut writer = arrow::json::LineDelimitedWriter::new(&mut buf);
    writer.write(batch)?;
    writer.finish()?;
    Ok(buf)
}

/// Writes `file` under `prefix`; returns once the object store has it.
pub async fn put(
    store: &Arc<dyn ObjectStore>,
    prefix: &str,
    file: &str,
    data: Bytes,
) -> Result<Path> {
    let path = Path::from(format!("{prefix}/{file}"));
    store
        .put(&path, PutPayload::from_bytes(data))
        .await
        .map_err(|source| Error::Staging {
            path: path.to_string(),
            source,
        })?;
    Ok(path)
}

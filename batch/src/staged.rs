//! Reading staged objects: the Parquet files the streaming stage writes, and the NDJSON objects
//! (plain or gzip) that a Firehose delivery stream delivers into `_staging/events/` when the stage
//! sends its events there.
//!
//! Which one an object is follows from its name: `.parquet` is Parquet; any other name is NDJSON
//! (Firehose names its objects `STREAM-VERSION-DATE-UUID`, with the extension the delivery stream
//! is configured with, if any), and gzip is recognised by its magic bytes, not by the name.
//! Names starting with a dot are left alone (temporary files of other tools).
//!
//! An NDJSON object is decoded whole into the table's columns. A line that does not decode (not
//! JSON, a missing required field, a value of the wrong type) does not stop compaction: the
//! object is decoded again line by line, and each such line becomes a bad row (stage `compact`)
//! whose id names the object and line and whose received_at is the object's write time, so a
//! re-run after a crash finds the same row.

use std::io::{BufRead, BufReader, Read};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::json::ReaderBuilder;
use bytes::Bytes;
use object_store::ObjectMeta;
use object_store::path::Path;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use shoplake_events::{BadRow, BadRowBatchBuilder, Reason, Rejection};

use crate::{Error, Result};

/// How a staged object is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Encoding {
    Parquet,
    /// Newline-delimited JSON, plain or gzip.
    Ndjson,
}

/// The encoding of a staged object, by its name; None for names to leave alone.
pub(crate) fn encoding(path: &Path) -> Option<Encoding> {
    let name = path.filename()?;
    if name.starts_with('.') {
        return None;
    }
    Some(match path.extension() {
        Some("parquet") => Encoding::Parquet,
        _ => Encoding::Ndjson,
    })
}

/// Whether `meta` is a staged object of an encoding in `accepted`.
pub(crate) fn accepts(meta: &ObjectMeta, accepted: &[Encoding]) -> bool {
    encoding(&meta.location).is_some_and(|e| accepted.contains(&e))
}

/// What one staged object held: its rows in the table's schema, and the lines of an NDJSON
/// object that did not decode, as bad rows.
#[derive(Default)]
pub(crate) struct Decoded {
    pub rows: Vec<RecordBatch>,
    pub bad_rows: Option<RecordBatch>,
}

/// Decodes the staged object `meta` into `schema`.
pub(crate) fn decode(meta: &ObjectMeta, bytes: Bytes, schema: &SchemaRef) -> Result<Decoded> {
    let path = &meta.location;
    match encoding(path) {
        Some(Encoding::Parquet) | None => {
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
                .and_then(|b| b.with_batch_size(65_536).build())
                .map_err(|source| Error::Staging {
                    path: path.to_string(),
                    source,
                })?;
            Ok(Decoded {
                rows: reader.collect::<std::result::Result<_, _>>()?,
                bad_rows: None,
            })
        }
        // A bad line's received_at is when the object was written, so that a re-run finds it.
        Some(Encoding::Ndjson) => {
            decode_ndjson(path, bytes, schema, meta.last_modified.timestamp_micros())
        }
    }
}

/// An object Firehose delivered, as text: gunzipped when it starts with gzip's magic bytes
/// (Firehose's GZIP compression; several members, as concatenated gzip files, are read in turn),
/// else as it is. Staging and `shoplake replay` (the raw archive) read objects through it.
pub fn gunzip_if_gzip(bytes: Bytes) -> std::io::Result<Bytes> {
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len() * 8);
    flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_end(&mut out)?;
    Ok(Bytes::from(out))
}

fn decode_ndjson(
    path: &Path,
    bytes: Bytes,
    schema: &SchemaRef,
    received_at: i64,
) -> Result<Decoded> {
    let unreadable = |source| Error::StagedObject {
        path: path.to_string(),
        source,
    };
    let undecodable = |source| Error::StagedJson {
        path: path.to_string(),
        source,
    };
    let text = gunzip_if_gzip(bytes).map_err(unreadable)?;
    let whole = ReaderBuilder::new(schema.clone())
        .with_batch_size(65_536)
        .build(BufReader::new(&text[..]))
        .map_err(undecodable)?
        .collect::<std::result::Result<Vec<_>, _>>();
    if let Ok(rows) = whole {
        return Ok(Decoded {
            rows,
            bad_rows: None,
        });
    }
    // Some line does not fit the schema: line by line, the bad ones aside.
    let mut rows = Vec::new();
    let mut bad = BadRowBatchBuilder::default();
    let mut bad_count = 0;
    for (i, line) in BufRead::split(&text[..], b'\n').enumerate() {
        let line = line.map_err(unreadable)?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let decoded = ReaderBuilder::new(schema.clone())
            .build(BufReader::new(&line[..]))
            .map_err(undecodable)?
            .collect::<std::result::Result<Vec<_>, _>>();
        match decoded {
            Ok(batches) => rows.extend(batches),
            Err(e) => {
                bad_count += 1;
                let json = serde_json::from_slice::<serde_json::Value>(&line).ok();
                let reason = match json {
                    Some(_) => Reason::WrongType,
                    None => Reason::MalformedJson,
                };
                let event_id = json
                    .as_ref()
                    .and_then(|v| v.get("event_id")?.as_str().map(str::to_owned));
                bad.append(&BadRow {
                    bad_row_id: format!("{path}:{}", i + 1),
                    received_at,
                    stage: "compact",
                    rejection: Rejection {
                        reason,
                        field: None,
                        message: format!("line {} of staged object {path}: {e}", i + 1),
                        event_id,
                        event_name: None,
                    },
                    raw: &line,
                    stream_shard: "",
                    stream_sequence: "",
                });
            }
        }
    }
    tracing::warn!(path = %path, lines = bad_count, "staged NDJSON lines that do not decode were kept as bad rows");
    Ok(Decoded {
        rows,
        bad_rows: Some(bad.finish()?),
    })
}

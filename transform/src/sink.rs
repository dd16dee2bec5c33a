//! The stage's sink: where a flushed batch goes before its checkpoint moves. Enriched events as a
//! Parquet staging file in the lake's object store (or as NDJSON through the Firehose events
//! sink, which delivers into the same folder); bad rows and the observer's rows (fraud decisions)
//! as Parquet staging files beside them. Compaction picks them all up.

use std::sync::Arc;

use arrow::array::RecordBatch;
use object_store::ObjectStore;
use shoplake_events::lake::{STAGING_BAD_ROWS, STAGING_EVENTS};
use shoplake_ingest::Firehose;

use crate::observe::StagedRows;
use crate::staging::{encode_ndjson, encode_parquet, put};
use crate::{Error, Result};

/// What one batch put into staging.
#[derive(Debug, Default)]
pub(crate) struct Staged {
    pub events: u64,
    pub bad_rows: u64,
    /// Rows of the observer (fraud decisions).
    pub observed: u64,
    /// Bytes of events staged (Parquet or NDJSON).
    pub event_bytes: u64,
    pub files: Vec<String>,
}

/// Staging of one stage.
pub(crate) struct Sink {
    store: Arc<dyn ObjectStore>,
    /// Sends the enriched events to Firehose (NDJSON into staging) instead of writing Parquet.
    events_firehose: Option<Firehose>,
}

impl Sink {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Sink {
            store,
            events_firehose: None,
        }
    }

    pub fn set_events_firehose(&mut self, firehose: Firehose) {
        self.events_firehose = Some(firehose);
    }

    /// Stages one flush's batches (each file named `flush_id`); returns once all are durable.
    pub async fn stage(
        &self,
        flush_id: &str,
        events: Option<RecordBatch>,
        bad_rows: Option<RecordBatch>,
        observed: Vec<StagedRows>,
    ) -> Result<Staged> {
        let mut staged = Staged::default();
        let file = format!("{flush_id}.parquet");
        if let Some(batch) = events {
            staged.events = batch.num_rows() as u64;
            let (location, bytes) = self.stage_events(&file, &batch).await?;
            staged.event_bytes = bytes;
            staged.files.push(location);
        }
        for rows in observed.into_iter().filter(|r| r.batch.num_rows() > 0) {
            let path = put(
                &self.store,
                rows.folder,
                &file,
                encode_parquet(&rows.batch)?,
            )
            .await?;
            staged.observed += rows.batch.num_rows() as u64;
            staged.files.push(path.to_string());
        }
        if let Some(batch) = bad_rows {
            staged.bad_rows = batch.num_rows() as u64;
            let path = put(
                &self.store,
                STAGING_BAD_ROWS,
                &file,
                encode_parquet(&batch)?,
            )
            .await?;
            staged.files.push(path.to_string());
        }
        Ok(staged)
    }

    /// The enriched events, to Firehose or as a Parquet file; returns where and how many bytes.
    async fn stage_events(&self, file: &str, batch: &RecordBatch) -> Result<(String, u64)> {
        match &self.events_firehose {
            Some(firehose) => {
                let data = tokio::task::block_in_place(|| encode_ndjson(batch))?;
                firehose.put_ndjson(&data).await.map_err(Error::Delivery)?;
                Ok((format!("firehose://{}", firehose.name()), data.len() as u64))
            }
            None => {
                let data = tokio::task::block_in_place(|| encode_parquet(batch))?;
                let bytes = data.len() as u64;
                let path = put(&self.store, STAGING_EVENTS, file, data).await?;
                Ok((path.to_string(), bytes))
            }
        }
    }
}

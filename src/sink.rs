//! The emitter's sink onto the events stream: what lets the simulator (or any Rust storefront using
//! the emitter library) write to whichever stream backend is configured.

use std::sync::Arc;

use shoplake_ingest::{Record, StreamProducer};
use shoplake_storefront_emitter::emitter::{Envelope, Sink, SinkError};

/// Sends emitter batches with `put_records`, at most 500 records a call (the Kinesis limit).
pub struct StreamSink(pub Arc<dyn StreamProducer>);

#[async_trait::async_trait]
impl Sink for StreamSink {
    async fn send(&self, batch: Vec<Envelope>) -> Result<(), SinkError> {
        let mut records: Vec<Record> = batch
            .into_iter()
            .map(|e| Record {
                partition_key: e.partition_key,
                data: e.payload,
            })
            .collect();
        while !records.is_empty() {
            let rest = records.split_off(records.len().min(500));
            self.0
                .put_records(std::mem::replace(&mut records, rest))
                .await
                .map_err(|e| SinkError {
                    retryable: e.is_retryable(),
                    message: e.to_string(),
                })?;
        }
        Ok(())
    }
}

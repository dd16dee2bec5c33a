//! The emitter: batching, back-pressure, retries and per-key ordering in front of a [`Sink`].
//!
//! Events are spread over `lanes` by a hash of their partition key; each lane is a task that owns
//! a bounded queue and sends one batch at a time, so events with the same key reach the sink in
//! the order they were emitted while different lanes send concurrently (at most `lanes` batches in
//! flight). When a lane's queue is full, [`Emitter::emit`] waits: that is the back-pressure a
//! storefront sees when the stream falls behind.
//!
//! A batch that fails with a retryable error is retried with exponential backoff and full jitter
//! up to `max_retries` times; a batch that fails for good is counted in `dropped` and the error is
//! returned by the next [`Emitter::emit`], [`Emitter::flush`] or [`Emitter::close`].
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use shoplake_storefront_emitter::emitter::{Emitter, EmitterConfig, Envelope, Sink, SinkError};
//!
//! #[derive(Default)]
//! struct Memory(Mutex<Vec<Envelope>>);
//!
//! #[async_trait::async_trait]
//! impl Sink for Memory {
//!     async fn send(&self, batch: Vec<Envelope>) -> Result<(), SinkError> {
//!         self.0.lock().unwrap().extend(batch);
//!         Ok(())
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let sink = Arc::new(Memory::default());
//! let emitter = Emitter::new(sink.clone(), EmitterConfig::default());
//! emitter.emit("user-1".into(), br#"{"event_name":"page_viewed"}"#.to_vec().into()).await.unwrap();
//! emitter.close().await.unwrap();
//! assert_eq!(sink.0.lock().unwrap().len(), 1);
//! # });
//! ```

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::warn;

/// One event for the sink: its partition key (events with the same key stay in order) and bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub partition_key: String,
    pub payload: Bytes,
}

/// Why a sink could not take a batch, and whether sending it again can help.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    pub retryable: bool,
    pub message: String,
}

/// Where the emitter's batches go (the events stream, a collector, a test buffer).
#[async_trait::async_trait]
pub trait Sink: Send + Sync {
    /// Takes the whole batch or fails; a retryable failure means none of it was taken, or that
    /// taking part of it twice is acceptable (delivery is at least once, deduplicated downstream).
    async fn send(&self, batch: Vec<Envelope>) -> Result<(), SinkError>;
}

/// How the emitter batches and retries.
#[derive(Clone, Debug)]
pub struct EmitterConfig {
    /// Most events in one batch (500 is the Kinesis PutRecords limit).
    pub max_batch_events: usize,
    /// Most payload bytes in one batch (Kinesis takes 5 MiB per request).
    pub max_batch_bytes: usize,
    /// How long a partial batch waits for more events.
    pub linger: Duration,
    /// Concurrent senders; each keeps its keys in order.
    pub lanes: usize,
    /// Events each lane queues before `emit` waits.
    pub queue_capacity: usize,
    /// Retries of a batch that failed with a retryable error.
    pub max_retries: u32,
    /// First backoff; doubled on each retry up to `max_backoff`, with full jitter.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for EmitterConfig {
    fn default() -> Self {
        EmitterConfig {
            max_batch_events: 500,
            max_batch_bytes: 4 * 1024 * 1024,
            linger: Duration::from_millis(50),
            lanes: 4,
            queue_capacity: 4096,
            max_retries: 10,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Failure of the emitter: the sink refused a batch for good.
#[derive(Clone, Debug, thiserror::Error)]
pub enum EmitError {
    #[error("the sink failed and {dropped} events were dropped: {message}")]
    Sink { dropped: u64, message: String },
    #[error("the emitter is closed")]
    Closed,
}

/// Counters of what the emitter did.
#[derive(Debug, Default)]
pub struct EmitterMetrics {
    pub emitted: AtomicU64,
    pub sent: AtomicU64,
    pub batches: AtomicU64,
    pub retries: AtomicU64,
    pub dropped: AtomicU64,
}

enum Command {
    Event(Envelope),
    Flush(oneshot::Sender<()>),
}

/// The emitter. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Emitter {
    lanes: Mutex<Vec<mpsc::Sender<Command>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    failure: Arc<Mutex<Option<EmitError>>>,
    metrics: Arc<EmitterMetrics>,
}

impl Emitter {
    /// Starts the lanes on the current tokio runtime.
    pub fn new(sink: Arc<dyn Sink>, config: EmitterConfig) -> Self {
        let lanes = config.lanes.max(1);
        let failure = Arc::new(Mutex::new(None));
        let metrics = Arc::new(EmitterMetrics::default());
        let mut senders = Vec::with_capacity(lanes);
        let mut tasks = Vec::with_capacity(lanes);
        for _ in 0..lanes {
            let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
            senders.push(tx);
            let lane = Lane {
                sink: sink.clone(),
                config: config.clone(),
                failure: failure.clone(),
                metrics: metrics.clone(),
            };
            tasks.push(tokio::spawn(lane.run(rx)));
        }
        Emitter {
            lanes: Mutex::new(senders),
            tasks: Mutex::new(tasks),
            failure,
            metrics,
        }
    }

    /// Counters of what was emitted, sent, retried and dropped.
    pub fn metrics(&self) -> &EmitterMetrics {
        &self.metrics
    }

    fn check(&self) -> Result<(), EmitError> {
        match &*self.failure.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn lane(&self, key: &str) -> Result<mpsc::Sender<Command>, EmitError> {
        let lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        if lanes.is_empty() {
            return Err(EmitError::Closed);
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        Ok(lanes[(hasher.finish() % lanes.len() as u64) as usize].clone())
    }

    /// Queues one event; waits while its lane's queue is full (back-pressure).
    pub async fn emit(&self, partition_key: String, payload: Bytes) -> Result<(), EmitError> {
        self.check()?;
        let lane = self.lane(&partition_key)?;
        lane.send(Command::Event(Envelope {
            partition_key,
            payload,
        }))
        .await
        .map_err(|_| EmitError::Closed)?;
        self.metrics.emitted.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Sends everything queued so far and waits until the sink has taken it.
    pub async fn flush(&self) -> Result<(), EmitError> {
        let lanes: Vec<_> = self.lanes.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut waits = Vec::with_capacity(lanes.len());
        for lane in lanes {
            let (tx, rx) = oneshot::channel();
            if lane.send(Command::Flush(tx)).await.is_ok() {
                waits.push(rx);
            }
        }
        for wait in waits {
            let _ = wait.await;
        }
        self.check()
    }

    /// Flushes, then stops the lanes.
    pub async fn close(&self) -> Result<(), EmitError> {
        let result = self.flush().await;
        self.lanes.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let tasks: Vec<_> = self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        for task in tasks {
            let _ = task.await;
        }
        result
    }
}

struct Lane {
    sink: Arc<dyn Sink>,
    config: EmitterConfig,
    failure: Arc<Mutex<Option<EmitError>>>,
    metrics: Arc<EmitterMetrics>,
}

impl Lane {
    async fn run(self, mut rx: mpsc::Receiver<Command>) {
        let mut batch: Vec<Envelope> = Vec::new();
        let mut bytes = 0usize;
        loop {
            let command = if batch.is_empty() {
                rx.recv().await
            } else {
                match tokio::time::timeout(self.config.linger, rx.recv()).await {
                    Ok(command) => command,
                    Err(_) => {
                        self.send(std::mem::take(&mut batch)).await;
                        bytes = 0;
                        continue;
                    }
                }
            };
            match command {
                Some(Command::Event(envelope)) => {
                    let size = envelope.payload.len() + envelope.partition_key.len();
                    if !batch.is_empty() && bytes + size > self.config.max_batch_bytes {
                        self.send(std::mem::take(&mut batch)).await;
                        bytes = 0;
                    }
                    bytes += size;
                    batch.push(envelope);
                    if batch.len() >= self.config.max_batch_events {
                        self.send(std::mem::take(&mut batch)).await;
                        bytes = 0;
                    }
                }
                Some(Command::Flush(done)) => {
                    if !batch.is_empty() {
                        self.send(std::mem::take(&mut batch)).await;
                        bytes = 0;
                    }
                    let _ = done.send(());
                }
                None => {
                    if !batch.is_empty() {
                        self.send(batch).await;
                    }
                    return;
                }
            }
        }
    }

    async fn send(&self, batch: Vec<Envelope>) {
        let n = batch.len() as u64;
        let mut attempt = 0u32;
        loop {
            match self.sink.send(batch.clone()).await {
                Ok(()) => {
                    self.metrics.sent.fetch_add(n, Ordering::Relaxed);
                    self.metrics.batches.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(e) if e.retryable && attempt < self.config.max_retries => {
                    attempt += 1;
                    self.metrics.retries.fetch_add(1, Ordering::Relaxed);
                    let cap = self
                        .config
                        .initial_backoff
                        .saturating_mul(1 << attempt.min(16))
                        .min(self.config.max_backoff);
                    let wait = rand::rng().random_range(0..=cap.as_micros() as u64);
                    warn!(attempt, events = n, error = %e.message, "sink failed; retrying");
                    tokio::time::sleep(Duration::from_micros(wait)).await;
                }
                Err(e) => {
                    let dropped = self.metrics.dropped.fetch_add(n, Ordering::Relaxed) + n;
                    tracing::error!(events = n, error = %e.message, "sink failed for good; events dropped");
                    *self.failure.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(EmitError::Sink {
                            dropped,
                            message: e.message,
                        });
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    /// Fails the first `fail` calls with the given retryability, then keeps what it gets.
    struct Flaky {
        fail: AtomicU32,
        retryable: bool,
        got: Mutex<Vec<Envelope>>,
        calls: AtomicU32,
    }

    impl Flaky {
        fn new(fail: u32, retryable: bool) -> Arc<Self> {
            Arc::new(Flaky {
                fail: AtomicU32::new(fail),
                retryable,
                got: Mutex::new(Vec::new()),
                calls: AtomicU32::new(0),
            })
        }
    }

    #[async_trait::async_trait]
    impl Sink for Flaky {
        async fn send(&self, batch: Vec<Envelope>) -> Result<(), SinkError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self
                .fail
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |f| f.checked_sub(1))
                .is_ok()
            {
                return Err(SinkError {
                    retryable: self.retryable,
                    message: "throttled".into(),
                });
            }
            self.got.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    fn config() -> EmitterConfig {
        EmitterConfig {
            max_batch_events: 10,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            ..EmitterConfig::default()
        }
    }

    #[tokio::test]
    async fn retries_keep_every_event_in_order_per_key() {
        let sink = Flaky::new(3, true);
        let emitter = Emitter::new(sink.clone(), config());
        for i in 0..95u32 {
            let key = format!("k{}", i % 7);
            emitter
                .emit(key, i.to_string().into_bytes().into())
                .await
                .unwrap();
        }
        emitter.close().await.unwrap();
        let got = sink.got.lock().unwrap();
        assert_eq!(got.len(), 95);
        for k in 0..7u32 {
            let seq: Vec<u32> = got
                .iter()
                .filter(|e| e.partition_key == format!("k{k}"))
                .map(|e| std::str::from_utf8(&e.payload).unwrap().parse().unwrap())
                .collect();
            let mut sorted = seq.clone();
            sorted.sort();
            assert_eq!(seq, sorted, "key k{k} kept its order");
        }
        assert_eq!(emitter.metrics().retries.load(Ordering::SeqCst), 3);
        assert!(sink.calls.load(Ordering::SeqCst) >= 10, "batched by 10");
    }

    #[tokio::test]
    async fn a_permanent_failure_is_reported_with_the_dropped_count() {
        let sink = Flaky::new(1, false);
        let emitter = Emitter::new(
            sink.clone(),
            EmitterConfig {
                lanes: 1,
                ..config()
            },
        );
        for i in 0..10u32 {
            emitter
                .emit("k".into(), i.to_string().into_bytes().into())
                .await
                .unwrap();
        }
        let err = emitter.flush().await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "the sink failed and 10 events were dropped: throttled"
        );
        assert!(emitter.emit("k".into(), Bytes::new()).await.is_err());
    }

    #[tokio::test]
    async fn linger_sends_a_partial_batch() {
        let sink = Flaky::new(0, true);
        let emitter = Emitter::new(sink.clone(), config());
        emitter
            .emit("k".into(), Bytes::from_static(b"x"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(sink.got.lock().unwrap().len(), 1, "sent without a flush");
        emitter.close().await.unwrap();
    }
}

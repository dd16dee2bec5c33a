//! What keeps one statement from taking the process down: turns (a cap on statements running at
//! once, a short queue), a memory pool per statement inside the shared one, and the runtime the
//! statements run on.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::warn;

use crate::{Error, Result};

/// Turns to run: `running` at once, `queue` more waiting, each at most `wait`.
pub(crate) struct Turns {
    running: Arc<Semaphore>,
    waiting: AtomicUsize,
    queue: usize,
    wait: Duration,
}

impl Turns {
    pub(crate) fn new(running: usize, queue: usize, wait: Duration) -> Self {
        Turns {
            running: Arc::new(Semaphore::new(running)),
            waiting: AtomicUsize::new(0),
            queue,
            wait,
        }
    }

    /// A turn, or [`Error::Busy`] when the queue is full or the wait too long. The turn ends when
    /// the permit is dropped (with the statement's answer stream).
    pub(crate) async fn take(&self) -> Result<OwnedSemaphorePermit> {
        if let Ok(permit) = self.running.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let busy = || Error::Busy {
            retry_after: self.wait,
        };
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(busy());
        }
        let permit = tokio::time::timeout(self.wait, self.running.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        match permit {
            Ok(Ok(permit)) => Ok(permit),
            // Timed out, or the semaphore closed (never: it lives as long as the service).
            _ => Err(busy()),
        }
    }

    /// Statements running now.
    pub(crate) fn running(&self, capacity: usize) -> usize {
        capacity.saturating_sub(self.running.available_permits())
    }

    /// Statements waiting for a turn now.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}

/// One statement's memory: at most `limit` bytes, and only what the shared pool (every
/// statement's total) still has. DataFusion's operators ask it before they buffer; a sort or
/// an aggregation that is refused spills to disk, others fail with "resources exhausted".
pub(crate) struct StatementPool {
    shared: Arc<dyn MemoryPool>,
    limit: usize,
    used: AtomicUsize,
}

impl StatementPool {
    pub(crate) fn new(shared: Arc<dyn MemoryPool>, limit: usize) -> Self {
        StatementPool {
            shared,
            limit,
            used: AtomicUsize::new(0),
        }
    }
}

impl fmt::Debug for StatementPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatementPool")
            .field("limit", &self.limit)
            .field("used", &self.used.load(Ordering::Relaxed))
            .finish()
    }
}

impl fmt::Display for StatementPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "statement pool ({} of {} bytes)",
            self.used.load(Ordering::Relaxed),
            self.limit
        )
    }
}

impl MemoryPool for StatementPool {
    fn name(&self) -> &str {
        "statement"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.shared.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.shared.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.used.fetch_add(additional, Ordering::AcqRel);
        self.shared.grow(reservation, additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.used.fetch_sub(shrink, Ordering::AcqRel);
        self.shared.shrink(reservation, shrink);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> DfResult<()> {
        let before = self.used.fetch_add(additional, Ordering::AcqRel);
        if before + additional > self.limit {
            self.used.fetch_sub(additional, Ordering::AcqRel);
            return Err(DataFusionError::ResourcesExhausted(format!(
                "the statement needs more than its {} bytes of memory (query.query_memory_limit): \
                 {} asked for {additional} more with {before} in use",
                self.limit,
                reservation.consumer().name()
            )));
        }
        self.shared
            .try_grow(reservation, additional)
            .inspect_err(|_| {
                self.used.fetch_sub(additional, Ordering::AcqRel);
            })
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

/// The runtime statements run on: `threads` workers (0: one per core), named `shoplake-query`,
/// at nice 10 when `low_priority`, so that ingestion's threads win the CPU when both want it.
pub(crate) fn query_runtime(threads: usize, low_priority: bool) -> Result<tokio::runtime::Runtime> {
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        threads
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("shoplake-query")
        .enable_all()
        .on_thread_start(move || {
            if low_priority {
                lower_priority();
            }
        })
        .build()
        .map_err(|source| Error::Runtime { source })
}

/// Nice 10 for the calling thread. `thread-priority` maps its 0–99 scale onto niceness 19…-20;
/// 22 is nice 10 (a tenth of a nice-0 thread's CPU share when both are busy).
fn lower_priority() {
    use thread_priority::{ThreadPriority, ThreadPriorityValue, set_current_thread_priority};
    let Ok(value) = ThreadPriorityValue::try_from(22u8) else {
        return;
    };
    if let Err(e) = set_current_thread_priority(ThreadPriority::Crossplatform(value)) {
        warn!(error = ?e, "the query threads could not lower their priority");
    }
}

/// The niceness of the calling thread, from `/proc` (Linux); for tests and `/metrics`.
pub fn current_thread_nice() -> Option<i32> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(16)?.parse().ok()
}

//! What the stage feeds beside staging: an [`Observer`] sees every admitted event (valid, the first
//! of its id, not a bot) in stream order, may stage rows of its own with each flush, and keeps
//! state that the stage saves with each checkpoint, in the same transaction.
//!
//! The live engines (`shoplake-live`: fraud scoring and recommendations) are the observer of
//! `shoplake stream` and `shoplake up`; an evaluation wraps them in one that looks at each event
//! first. The stage knows nothing of what an observer computes: it calls these methods at fixed
//! points of its loop.
//!
//! ```text
//! stage.process ─► admit ─► Observer::observe(event, session)
//! stage.flush   ─► Observer::take_rows  ─► _staging/<folder>/   (before the checkpoint)
//!               ─► Observer::take_dirty ─► redb "live" table    (with the checkpoint)
//! stage open    ─► Observer::reset + Observer::restore(saved)
//! warm start    ─► Observer::replay(events read back from the lake)
//! ```

use arrow::array::RecordBatch;
use shoplake_events::ValidEvent;

/// An observer's own failure (its saved state does not load, its rows do not encode, …).
pub type ObserverError = Box<dyn std::error::Error + Send + Sync>;

/// Rows an observer stages with a flush, into the lake's staging folder `folder`.
#[derive(Debug)]
pub struct StagedRows {
    pub folder: &'static str,
    pub batch: RecordBatch,
}

/// Saved entities of an observer, in key order: what [`Observer::take_dirty`] returned over time.
pub type SavedEntries = Vec<(String, Vec<u8>)>;

/// Fed by the stage with every admitted event; see the module docs for when each method is called.
pub trait Observer: Send + Sync {
    /// Forgets everything observed: a stage that opens (again, after a failure) then restores the
    /// saved state, so records re-read after the last checkpoint are not counted twice. Rows not
    /// yet taken are dropped too: their events will be observed again.
    fn reset(&self);

    /// Loads the entities saved with the checkpoints; returns how many it loaded.
    fn restore(&self, saved: SavedEntries) -> Result<usize, ObserverError>;

    /// Sees one admitted event with its session id (the client's or the inferred one).
    fn observe(&self, event: &ValidEvent<'_>, session_id: &str);

    /// Sees events read back from the lake's `events` table (oldest first), to rebuild its state
    /// when none was saved; they produce no rows (those are in the lake already). Returns how
    /// many events were fed, and how many rows no longer pass the contract.
    fn replay(&self, batch: &RecordBatch) -> Result<(usize, usize), ObserverError>;

    /// The rows produced since the last call, to be staged with this flush (`now_micros`: the
    /// flush's wall-clock time).
    fn take_rows(&self, now_micros: i64) -> Result<Vec<StagedRows>, ObserverError>;

    /// The saved entities changed since the last call (`Some` bytes to write, `None` to delete),
    /// committed with this flush's checkpoint. `flushes` counts the stage's earlier flushes, for
    /// an observer that does slower upkeep (expiry) every so many.
    fn take_dirty(&self, flushes: u64) -> Vec<(String, Option<Vec<u8>>)>;
}

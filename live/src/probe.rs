//! An observer for evaluations: shows each admitted event, and the engines just before they see
//! it, to a probe — how `shoplake eval` asks what the storefront would have been answered just
//! before an order.

use std::sync::Arc;

use parking_lot::Mutex;
use shoplake_events::ValidEvent;
use shoplake_transform::observe::{Observer, ObserverError, SavedEntries, StagedRows};

use crate::Live;

/// Called with every event the engines are about to see (valid, unique, not a bot), its session,
/// and the engines before they see it.
pub type Probe = Box<dyn FnMut(&ValidEvent<'_>, &str, &Live) + Send>;

/// [`Live`] with a probe in front of it.
pub struct Probed {
    live: Arc<Live>,
    probe: Mutex<Probe>,
}

impl Probed {
    pub fn new(live: Arc<Live>, probe: Probe) -> Self {
        Probed {
            live,
            probe: Mutex::new(probe),
        }
    }
}

impl Observer for Probed {
    fn reset(&self) {
        Observer::reset(&*self.live);
    }

    fn restore(&self, saved: SavedEntries) -> Result<usize, ObserverError> {
        Observer::restore(&*self.live, saved)
    }

    fn observe(&self, event: &ValidEvent<'_>, session_id: &str) {
        (self.probe.lock())(event, session_id, &self.live);
        Observer::observe(&*self.live, event, session_id);
    }

    fn replay(&self, batch: &arrow::array::RecordBatch) -> Result<(usize, usize), ObserverError> {
        Observer::replay(&*self.live, batch)
    }

    fn take_rows(&self, now_micros: i64) -> Result<Vec<StagedRows>, ObserverError> {
        self.live.take_rows(now_micros)
    }

    fn take_dirty(&self, flushes: u64) -> Vec<(String, Option<Vec<u8>>)> {
        Observer::take_dirty(&*self.live, flushes)
    }
}

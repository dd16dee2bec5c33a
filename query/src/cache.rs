//! Answers kept for repeated statements, keyed to the Delta versions of the tables they read.
//!
//! The key is the statement as the SQL parser prints it back (so spacing and keyword case do not
//! matter), its parameter values, the catalog that answered it (what the caller's role may read),
//! and the versions of the tables the plan reads: a table that gets a new version (a compaction,
//! an optimize) makes every key over it new, and the old answers age out. The same key is the
//! HTTP `ETag`. Bounded in bytes of Arrow memory; the least recently used answer goes first.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::record_batch::RecordBatch;
use lru::LruCache;
use parking_lot::Mutex;

/// A kept answer.
#[derive(Clone, Debug)]
pub struct Cached {
    pub batches: Arc<Vec<RecordBatch>>,
    pub bytes: usize,
}

pub(crate) struct ResultCache {
    capacity: usize,
    state: Mutex<State>,
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
}

struct State {
    entries: LruCache<String, Cached>,
    bytes: usize,
}

impl ResultCache {
    pub(crate) fn new(capacity: usize) -> Self {
        ResultCache {
            capacity,
            state: Mutex::new(State {
                entries: LruCache::unbounded(),
                bytes: 0,
            }),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Largest answer worth keeping: an eighth of the cache, so one answer cannot empty it.
    pub(crate) fn entry_limit(&self) -> usize {
        self.capacity / 8
    }

    pub(crate) fn enabled(&self) -> bool {
        self.capacity > 0
    }

    pub(crate) fn get(&self, key: &str) -> Option<Cached> {
        if !self.enabled() {
            return None;
        }
        let found = self.state.lock().entries.get(key).cloned();
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    pub(crate) fn put(&self, key: String, answer: Cached) {
        if !self.enabled() || answer.bytes > self.entry_limit() {
            return;
        }
        let mut state = self.state.lock();
        state.bytes += answer.bytes;
        if let Some(old) = state.entries.put(key, answer) {
            state.bytes -= old.bytes;
        }
        while state.bytes > self.capacity {
            match state.entries.pop_lru() {
                Some((_, old)) => state.bytes -= old.bytes,
                None => break,
            }
        }
    }

    /// Bytes and answers held.
    /// Drops every kept answer (an erasure: no answer may keep a person who was erased).
    pub(crate) fn clear(&self) {
        let mut state = self.state.lock();
        state.entries.clear();
        state.bytes = 0;
    }

    pub(crate) fn size(&self) -> (usize, usize) {
        let state = self.state.lock();
        (state.bytes, state.entries.len())
    }
}

/// A short, stable digest of a key, for the `ETag`: the first 128 bits of its SHA-256.
pub(crate) fn digest(key: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes())
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    fn answer(rows: i64) -> Cached {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from_iter_values(0..rows))],
        )
        .unwrap();
        Cached {
            bytes: batch.get_array_memory_size(),
            batches: Arc::new(vec![batch]),
        }
    }

    #[test]
    fn the_least_recently_used_answer_goes_first() {
        let one = answer(100).bytes;
        let cache = ResultCache::new(one * 8 * 2);
        for k in ["a", "b"] {
            cache.put(k.into(), answer(100));
        }
        assert!(cache.get("a").is_some());
        // Over the budget: b (least recently used) goes.
        for k in [
            "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q",
        ] {
            cache.put(k.into(), answer(100));
        }
        assert!(cache.size().0 <= one * 16);
        assert!(cache.get("b").is_none());
        assert_eq!(cache.hits.load(Ordering::Relaxed), 1);
        assert_eq!(cache.misses.load(Ordering::Relaxed), 1);
        // Too large for one entry: not kept.
        cache.put("big".into(), answer(100_000));
        assert!(cache.get("big").is_none());
    }

    #[test]
    fn digests_differ_by_key() {
        assert_ne!(digest("select 1|events=3"), digest("select 1|events=4"));
        assert_eq!(digest("x").len(), 32);
    }
}

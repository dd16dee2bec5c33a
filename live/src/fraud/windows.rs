//! Sliding event-time windows: counts and sums ([`Window`]) and distinct values ([`Distinct`]).
//!
//! An entry at event time `e` counts at time `t` in a window of length `w` when `t - w < e ≤ t`:
//! an order placed exactly ten minutes ago has left the ten-minute window. Entries may arrive out
//! of order (late events): they are inserted where they belong in time, so a count made at `t`
//! is the same whatever order the events came in, as long as nothing was expired in between.
//!
//! Both are bounded. A [`Window`] keeps one entry per distinct event time until it holds
//! [`Window::COMPACT_AT`] entries; past that, entries older than ten minutes (relative to the
//! newest) are merged per minute and entries older than an hour per quarter hour, each merged entry
//! taking the time of the newest event it holds. A hot entity (a busy shared IP) therefore holds at
//! most ~600 + 50 + 96 entries, and its counts may keep an event up to one second (ten minutes),
//! one minute (hour) or fifteen minutes (day) past the window's far edge, never drop one early. A
//! [`Distinct`] keeps at most [`Distinct::CAP`] values, dropping the one seen longest ago, so its
//! counts saturate at the cap.

use serde::{Deserialize, Serialize};

/// One second, one minute, … in microseconds.
pub const SECOND: i64 = 1_000_000;
pub const MINUTE: i64 = 60 * SECOND;
pub const HOUR: i64 = 60 * MINUTE;
pub const DAY: i64 = 24 * HOUR;

/// The window lengths features use.
pub const TEN_MINUTES: i64 = 10 * MINUTE;
/// The longest window: nothing older than this (plus the allowed lateness) is ever counted.
pub const LONGEST: i64 = DAY;

/// Counts of events, and sums of an amount they carry, over sliding event-time windows.
///
/// Sums are kept as `f32` (it fits in the entry's padding): about seven significant digits, plenty
/// for comparing spend with a threshold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Window {
    /// (event time in UTC micros, events at that time, their amounts' sum), sorted by time.
    entries: Vec<(i64, u32, f32)>,
}

impl Window {
    /// Entries held before older ones are merged.
    pub const COMPACT_AT: usize = 64;

    pub const fn new() -> Self {
        Window {
            entries: Vec::new(),
        }
    }

    /// Records `n` events at time `t`.
    pub fn add(&mut self, t: i64, n: u32) {
        self.add_amount(t, n, 0.0);
    }

    /// Records `n` events at time `t` carrying `amount` in all.
    pub fn add_amount(&mut self, t: i64, n: u32, amount: f64) {
        let at = self.entries.partition_point(|&(e, ..)| e <= t);
        match self.entries.get_mut(at.wrapping_sub(1)) {
            Some((e, count, sum)) if *e == t => {
                *count = count.saturating_add(n);
                *sum += amount as f32;
            }
            _ => self.entries.insert(at, (t, n, amount as f32)),
        }
        if self.entries.len() > Self::COMPACT_AT {
            self.compact();
        }
    }

    /// The entries in the window of length `len` ending at `now`: `now - len < e ≤ now`.
    fn in_window(&self, now: i64, len: i64) -> impl Iterator<Item = &(i64, u32, f32)> {
        let end = self.entries.partition_point(|&(e, ..)| e <= now);
        self.entries[..end]
            .iter()
            .rev()
            .take_while(move |&&(e, ..)| e > now - len)
    }

    /// Events in the window of length `len` ending at `now`.
    pub fn count(&self, now: i64, len: i64) -> u32 {
        self.in_window(now, len)
            .fold(0u32, |acc, &(_, n, _)| acc.saturating_add(n))
    }

    /// Sum of the amounts in the window of length `len` ending at `now`.
    pub fn sum(&self, now: i64, len: i64) -> f64 {
        self.in_window(now, len).map(|&(.., a)| f64::from(a)).sum()
    }

    /// Forgets entries at or before `horizon`; true when something was forgotten.
    pub fn expire(&mut self, horizon: i64) -> bool {
        let stale = self.entries.partition_point(|&(e, ..)| e <= horizon);
        self.entries.drain(..stale);
        stale > 0
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries held (for tests and size checks).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Time of the newest entry.
    pub fn newest(&self) -> Option<i64> {
        self.entries.last().map(|&(e, ..)| e)
    }

    /// Merges old entries: per second in the last ten minutes, per minute up to an hour, per
    /// quarter hour beyond (ages relative to the newest entry). A merged entry takes the time of
    /// its newest event, so it stays in a window at least as long as each event it holds.
    fn compact(&mut self) {
        let Some(newest) = self.newest() else { return };
        let granule = |e: i64| -> (i64, i64) {
            let age = newest - e;
            let g = if age < TEN_MINUTES {
                SECOND
            } else if age < HOUR {
                MINUTE
            } else {
                15 * MINUTE
            };
            (g, e.div_euclid(g))
        };
        let mut merged: Vec<(i64, u32, f32)> = Vec::with_capacity(self.entries.len());
        let mut last_bucket = None;
        for &(e, n, a) in &self.entries {
            let bucket = granule(e);
            match merged.last_mut() {
                Some((t, count, sum)) if last_bucket == Some(bucket) => {
                    *t = e;
                    *count = count.saturating_add(n);
                    *sum += a;
                }
                _ => merged.push((e, n, a)),
            }
            last_bucket = Some(bucket);
        }
        self.entries = merged;
    }
}

/// Distinct values (as 64-bit hashes) seen over sliding event-time windows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Distinct {
    /// (value hash, first seen, last seen), in insertion order.
    entries: Vec<(u64, i64, i64)>,
}

impl Distinct {
    /// Values held; beyond it the value last seen longest ago is dropped.
    pub const CAP: usize = 32;

    pub const fn new() -> Self {
        Distinct {
            entries: Vec::new(),
        }
    }

    /// Records `value` seen at time `t`; true when the state changed.
    pub fn add(&mut self, value: u64, t: i64) -> bool {
        if let Some(entry) = self.entries.iter_mut().find(|(v, ..)| *v == value) {
            let (first, last) = (entry.1.min(t), entry.2.max(t));
            let changed = (first, last) != (entry.1, entry.2);
            (entry.1, entry.2) = (first, last);
            return changed;
        }
        if self.entries.len() >= Self::CAP
            && let Some(oldest) = (0..self.entries.len()).min_by_key(|&i| self.entries[i].2)
        {
            self.entries.swap_remove(oldest);
        }
        self.entries.push((value, t, t));
        true
    }

    /// Values seen in the window of length `len` ending at `now` (first seen at or before `now`,
    /// last seen after `now - len`).
    pub fn count(&self, now: i64, len: i64) -> u32 {
        self.entries
            .iter()
            .filter(|&&(_, first, last)| first <= now && last > now - len)
            .count() as u32
    }

    /// Whether `value` is counted in the window of length `len` ending at `now`.
    pub fn contains(&self, value: u64, now: i64, len: i64) -> bool {
        self.entries
            .iter()
            .any(|&(v, first, last)| v == value && first <= now && last > now - len)
    }

    /// Forgets values last seen at or before `horizon`; true when something was forgotten.
    pub fn expire(&mut self, horizon: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|&(_, _, last)| last > horizon);
        self.entries.len() != before
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Time a value was last seen, the newest of all.
    pub fn newest(&self) -> Option<i64> {
        self.entries.iter().map(|&(_, _, last)| last).max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_767_225_600_000_000;

    #[test]
    fn an_entry_leaves_the_window_exactly_at_its_length() {
        let mut w = Window::default();
        w.add(T0, 1);
        assert_eq!(w.count(T0, TEN_MINUTES), 1);
        assert_eq!(w.count(T0 + TEN_MINUTES - 1, TEN_MINUTES), 1);
        assert_eq!(
            w.count(T0 + TEN_MINUTES, TEN_MINUTES),
            0,
            "ten minutes old: out"
        );
        // Not yet happened at an earlier time.
        assert_eq!(w.count(T0 - 1, TEN_MINUTES), 0);
        assert_eq!(w.count(T0 + TEN_MINUTES, HOUR), 1);
    }

    #[test]
    fn out_of_order_events_count_as_if_in_order() {
        let times = [
            T0 + 5 * MINUTE,
            T0,
            T0 + 2 * MINUTE,
            T0 + 9 * MINUTE,
            T0 + MINUTE,
        ];
        let mut late = Window::default();
        for t in times {
            late.add(t, 1);
        }
        let mut sorted_times = times;
        sorted_times.sort();
        let mut in_order = Window::default();
        for t in sorted_times {
            in_order.add(t, 1);
        }
        assert_eq!(late, in_order);
        // At T0+10m: T0 has left, the four others are in.
        assert_eq!(late.count(T0 + 10 * MINUTE, TEN_MINUTES), 4);
        // Scored as of T0+2m (a late order): T0, T0+1m, T0+2m.
        assert_eq!(late.count(T0 + 2 * MINUTE, TEN_MINUTES), 3);
        // Same-time events share an entry.
        late.add(T0, 2);
        assert_eq!(late.len(), 5);
        assert_eq!(late.count(T0, 1), 3);
    }

    #[test]
    fn sums_follow_the_same_window() {
        let mut w = Window::default();
        w.add_amount(T0, 1, 10.5);
        w.add_amount(T0 + 5 * MINUTE, 1, 20.25);
        w.add_amount(T0 + 5 * MINUTE, 2, 4.0);
        assert_eq!(w.count(T0 + 5 * MINUTE, TEN_MINUTES), 4);
        assert_eq!(w.sum(T0 + 5 * MINUTE, TEN_MINUTES), 34.75);
        assert_eq!(
            w.sum(T0 + 10 * MINUTE, TEN_MINUTES),
            24.25,
            "the first left"
        );
        assert_eq!(w.sum(T0 - 1, TEN_MINUTES), 0.0);
        // Compaction keeps the total.
        for i in 0..200 {
            w.add_amount(T0 + HOUR + i * MINUTE, 1, 1.0);
        }
        let total = w.sum(T0 + HOUR + 199 * MINUTE, DAY);
        assert!((total - 234.75).abs() < 1e-3, "{total}");
    }

    #[test]
    fn expiry_frees_entries_no_window_can_count() {
        let mut w = Window::default();
        for i in 0..10 {
            w.add(T0 + i * HOUR, 1);
        }
        assert!(!w.expire(T0 - 1));
        assert!(w.expire(T0 + 4 * HOUR));
        assert_eq!(w.len(), 5);
        assert_eq!(w.count(T0 + 9 * HOUR, DAY), 5);
        assert!(w.expire(T0 + 9 * HOUR));
        assert!(w.is_empty());
        assert_eq!(w.newest(), None);
    }

    #[test]
    fn a_hot_window_stays_bounded_and_its_recent_counts_exact() {
        let mut w = Window::default();
        // One event every 2 s for a day: 43,200 events.
        let n = DAY / (2 * SECOND);
        for i in 0..n {
            w.add(T0 + i * 2 * SECOND, 1);
        }
        let now = T0 + (n - 1) * 2 * SECOND;
        assert!(w.len() <= 600 + 50 + 96, "{} entries", w.len());
        assert_eq!(w.count(now, TEN_MINUTES), 300, "exact over ten minutes");
        let hour = w.count(now, HOUR);
        assert!((1800..=1800 + 30).contains(&hour), "{hour}");
        let day = w.count(now, DAY);
        assert!((n as u32 - 450..=n as u32).contains(&day), "{day}");
    }

    #[test]
    fn distinct_values_in_a_window() {
        let mut d = Distinct::default();
        assert!(d.add(1, T0));
        assert!(d.add(2, T0 + HOUR));
        assert!(!d.add(1, T0), "seen again at the same time: unchanged");
        assert!(d.add(1, T0 + 2 * HOUR));
        assert_eq!(d.count(T0 + 2 * HOUR, DAY), 2);
        assert_eq!(
            d.count(T0 + 2 * HOUR, HOUR),
            1,
            "2 was last seen an hour ago"
        );
        assert!(d.contains(1, T0 + 2 * HOUR, HOUR));
        assert!(!d.contains(2, T0 + 2 * HOUR, HOUR));
        // Before 2 was first seen, only 1 counts.
        assert_eq!(d.count(T0 + 1, DAY), 1);
        assert!(d.expire(T0 + HOUR));
        assert_eq!(d.len(), 1);
        assert_eq!(d.newest(), Some(T0 + 2 * HOUR));
    }

    #[test]
    fn distinct_is_capped_by_dropping_the_stalest() {
        let mut d = Distinct::default();
        for v in 0..100u64 {
            d.add(v, T0 + v as i64 * SECOND);
        }
        assert_eq!(d.len(), Distinct::CAP);
        assert!(d.contains(99, T0 + DAY / 2, DAY));
        assert!(!d.contains(0, T0 + DAY / 2, DAY));
    }

    proptest::proptest! {
        /// Whatever the arrival order and however many events, counts never exceed the truth over
        /// the window and never miss an event inside it, within the compaction tolerance.
        #[test]
        fn counts_bracket_the_truth(offsets in proptest::collection::vec(0i64..2 * DAY, 0..400), probe in 0i64..2 * DAY) {
            let mut w = Window::default();
            for &o in &offsets {
                w.add(T0 + o, 1);
            }
            let now = T0 + probe;
            for (len, slack) in [(TEN_MINUTES, SECOND), (HOUR, MINUTE), (DAY, 15 * MINUTE)] {
                let exact = offsets.iter().filter(|&&o| o <= probe && o > probe - len).count() as u32;
                let loose = offsets.iter().filter(|&&o| o <= probe && o > probe - len - slack).count() as u32;
                let got = w.count(now, len);
                // Compaction ages are relative to the newest entry: the bounds hold from its time on.
                if probe >= offsets.iter().copied().max().unwrap_or(0) {
                    proptest::prop_assert!(exact <= got && got <= loose, "len {len}: {exact} ≤ {got} ≤ {loose}");
                }
            }
        }
    }
}

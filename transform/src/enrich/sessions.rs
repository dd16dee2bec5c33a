//! Sessions for events whose client did not set one: a shopper's events belong to one session until
//! `timeout` passes without an event. The session id is derived from the shopper and the session's
//! first event time, so a replay infers the same ids.

use std::collections::{HashMap, HashSet};

/// Inferred sessions of every shopper seen recently, bounded by expiry.
#[derive(Debug, Default)]
pub struct Sessions {
    timeout_micros: i64,
    /// shopper → (last event time, session id)
    open: HashMap<String, (i64, String)>,
    dirty: HashSet<String>,
}

/// Namespace of the UUIDv5 session ids.
const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x5d1b_7a0e_3c4f_4a8e_9b61_2f0c_a7d3_e915);

impl Sessions {
    pub fn new(timeout_micros: i64, loaded: HashMap<String, (i64, String)>) -> Self {
        Sessions {
            timeout_micros,
            open: loaded,
            dirty: HashSet::new(),
        }
    }

    /// The session of an event, and whether it was inferred: the client's `session_id`, else the
    /// inferred session of its shopper (anonymous id, else user id) at its event time.
    pub fn of<'a>(&'a mut self, event: &'a shoplake_events::ValidEvent<'_>) -> (&'a str, bool) {
        let e = &event.event;
        match e.session_id.as_deref() {
            Some(s) => (s, false),
            None => {
                let shopper = e
                    .anonymous_id
                    .as_deref()
                    .or(e.user_id.as_deref())
                    .unwrap_or_default();
                (self.assign(shopper, event.event_time), true)
            }
        }
    }

    /// The session of `shopper`'s event at `event_time`.
    pub fn assign(&mut self, shopper: &str, event_time: i64) -> &str {
        let timeout = self.timeout_micros;
        let new_id = || {
            uuid::Uuid::new_v5(
                &NAMESPACE,
                format!("{shopper}\u{1f}{event_time}").as_bytes(),
            )
            .to_string()
        };
        let entry = self
            .open
            .entry(shopper.to_owned())
            .or_insert_with(|| (event_time, new_id()));
        if event_time - entry.0 > timeout {
            *entry = (event_time, new_id());
        } else if event_time > entry.0 {
            entry.0 = event_time;
        }
        if !self.dirty.contains(shopper) {
            self.dirty.insert(shopper.to_owned());
        }
        &entry.1
    }

    /// Sessions changed since the last call, to persist with the checkpoint.
    pub fn take_dirty(&mut self) -> Vec<(String, i64, String)> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .into_iter()
            .filter_map(|k| self.open.get(&k).map(|(t, id)| (k.clone(), *t, id.clone())))
            .collect()
    }

    /// Forgets shoppers idle since before `cutoff`; returns their keys.
    pub fn expire(&mut self, cutoff: i64) -> Vec<String> {
        let mut gone = Vec::new();
        self.open.retain(|k, (t, _)| {
            let keep = *t >= cutoff;
            if !keep {
                gone.push(k.clone());
            }
            keep
        });
        gone
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000_000;

    #[test]
    fn thirty_minutes_of_inactivity_starts_a_new_session() {
        let mut s = Sessions::new(30 * MIN, HashMap::new());
        let a = s.assign("anon-1", 0).to_owned();
        assert_eq!(s.assign("anon-1", 10 * MIN), a);
        assert_eq!(
            s.assign("anon-1", 39 * MIN),
            a,
            "inactivity counts from the last event"
        );
        let b = s.assign("anon-1", 70 * MIN).to_owned();
        assert_ne!(a, b);
        assert_ne!(s.assign("anon-2", 70 * MIN), b);
        // Deterministic: a replay infers the same ids.
        let mut again = Sessions::new(30 * MIN, HashMap::new());
        assert_eq!(again.assign("anon-1", 0), a);
        assert_eq!(s.take_dirty().len(), 2);
        assert!(s.take_dirty().is_empty());
        assert_eq!(s.expire(69 * MIN), Vec::<String>::new());
        assert_eq!(s.expire(71 * MIN).len(), 2);
        assert!(s.is_empty());
    }
}

//! The stage's durable state in one redb database: stream checkpoints, the de-duplication window,
//! inferred sessions and the state of the stage's observer (the live engines: [`crate::observe`]).
//! All are written in one transaction per flush, after the staged files they cover are durable,
//! so a crash at any moment leaves them consistent with each other.

use std::collections::HashMap;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::{Error, Result};

const CHECKPOINTS: TableDefinition<&str, &str> = TableDefinition::new("checkpoints");
const DEDUP: TableDefinition<u128, i64> = TableDefinition::new("dedup");
/// Event id → [`Seen::fingerprint`] of the ids in `dedup` (a table of its own, so that a state
/// written before fingerprints existed opens as it is: its ids have none, and a later copy of one
/// counts as a plain duplicate).
const FINGERPRINTS: TableDefinition<u128, u64> = TableDefinition::new("fingerprints");
const SESSIONS: TableDefinition<&str, (i64, &str)> = TableDefinition::new("sessions");
/// Entities of the stage's observer (the live engines: `fraud/…`, `recs/…`), each serialized by
/// its engine.
const LIVE: TableDefinition<&str, &[u8]> = TableDefinition::new("live");

/// Checkpoint value of a shard that was read to its end (closed by resharding).
pub const SHARD_END: &str = "SHARD_END";

fn db_err(path: &Path) -> impl Fn(redb::Error) -> Error + '_ {
    move |source| Error::State {
        path: path.display().to_string(),
        source: Box::new(source),
    }
}

/// What one flush writes.
#[derive(Debug, Default)]
pub struct StateDelta {
    pub checkpoints: Vec<(String, String)>,
    pub new_ids: Vec<(u128, Seen)>,
    pub expired_ids: Vec<u128>,
    pub sessions: Vec<(String, i64, String)>,
    pub expired_sessions: Vec<String>,
    /// Live entities changed since the last flush: Some(bytes) to write, None to delete.
    pub live: Vec<(String, Option<Vec<u8>>)>,
}

/// The hasher of event-id sets: ids come from clients, so it stays seeded, but foldhash hashes a
/// `u128` several times faster than the standard SipHash (one lookup and one insert per event).
pub type IdHasher = foldhash::quality::RandomState;

/// What the de-duplication window keeps of an admitted event id (16 bytes: an entry of the map
/// takes 32 with or without the fingerprint, as a `u128` key aligns it to 16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    /// When it was received (server time, micros).
    pub received: i64,
    /// `ValidEvent::fingerprint` of its payload; 0 when not known (ids read back from the lake at
    /// a warm start, or kept by a state written before fingerprints).
    pub fingerprint: u64,
}

/// What a later copy of an id is, against the first one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sighting {
    /// The id was not seen in the window.
    First,
    /// The same event again (a retry), or one whose first payload is not known.
    Again,
    /// The same id with a different payload.
    Conflict,
}

impl Seen {
    /// What `now` is, given what the window kept of the id before (`None`: nothing).
    pub fn sighting(before: Option<&Seen>, now: Seen) -> Sighting {
        match before {
            None => Sighting::First,
            Some(b)
                if b.fingerprint != 0
                    && now.fingerprint != 0
                    && b.fingerprint != now.fingerprint =>
            {
                Sighting::Conflict
            }
            Some(_) => Sighting::Again,
        }
    }
}

/// Event ids → what was seen of them: the de-duplication window.
pub type IdMap = HashMap<u128, Seen, IdHasher>;

/// Everything loaded at start.
#[derive(Debug, Default)]
pub struct LoadedState {
    pub checkpoints: HashMap<String, String>,
    pub dedup: IdMap,
    pub sessions: HashMap<String, (i64, String)>,
}

pub use crate::observe::SavedEntries as LiveEntries;

/// The redb database of one stage.
pub struct StateStore {
    db: Database,
    path: std::path::PathBuf,
}

impl StateStore {
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::State {
                path: path.display().to_string(),
                source: Box::new(e),
            })?;
        }
        // redb's page cache defaults to 1 GiB; the recent ids dedup looks up fit in far less.
        let db = redb::Builder::new()
            .set_cache_size(64 << 20)
            .create(path)
            .map_err(|e| db_err(path)(e.into()))?;
        let store = StateStore {
            db,
            path: path.to_owned(),
        };
        // Create the tables so that readers never meet a missing one.
        store.commit(&StateDelta::default())?;
        Ok(store)
    }

    /// Deletes the inferred sessions and the observer's entities for which `matches(key,
    /// value)` holds from the state stored in `path` (erasure of a person), and rewrites the
    /// file, so that none of their bytes is left in free pages; returns how many. No stage may
    /// have it open (redb's lock refuses it). Checkpoints and the de-duplication window (event
    /// ids' hashes and times) are copied as they are.
    pub fn erase_entries(path: &Path, matches: impl Fn(&[u8], &[u8]) -> bool) -> Result<u64> {
        let err = db_err(path);
        let io = |e: std::io::Error| err(redb::Error::Io(e));
        let old = Database::open(path).map_err(|e| err(e.into()))?;
        let tmp = path.with_extension("erasing");
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
            _ => {}
        }
        let new = Database::create(&tmp).map_err(|e| err(e.into()))?;
        let read = old.begin_read().map_err(|e| err(e.into()))?;
        let write = new.begin_write().map_err(|e| err(e.into()))?;
        let mut removed = 0;
        macro_rules! copy {
            ($def:expr, |$k:ident, $v:ident| $erased:expr) => {{
                let mut to = write.open_table($def).map_err(|e| err(e.into()))?;
                match read.open_table($def) {
                    Ok(from) => {
                        for row in from.iter().map_err(|e| err(e.into()))? {
                            let (k, v) = row.map_err(|e| err(e.into()))?;
                            let ($k, $v) = (k.value(), v.value());
                            if $erased {
                                removed += 1;
                            } else {
                                to.insert($k, $v).map_err(|e| err(e.into()))?;
                            }
                        }
                    }
                    Err(redb::TableError::TableDoesNotExist(_)) => {}
                    Err(e) => return Err(err(e.into())),
                }
            }};
        }
        copy!(CHECKPOINTS, |_k, _v| false);
        copy!(DEDUP, |_k, _v| false);
        copy!(FINGERPRINTS, |_k, _v| false);
        copy!(SESSIONS, |k, v| matches(k.as_bytes(), v.1.as_bytes()));
        copy!(LIVE, |k, v| matches(k.as_bytes(), v));
        write.commit().map_err(|e| err(e.into()))?;
        drop((read, old, new));
        std::fs::rename(&tmp, path).map_err(io)?;
        Ok(removed)
    }

    pub fn load(&self) -> Result<LoadedState> {
        let err = db_err(&self.path);
        let tx = self.db.begin_read().map_err(|e| err(e.into()))?;
        let mut out = LoadedState::default();
        let t = tx.open_table(CHECKPOINTS).map_err(|e| err(e.into()))?;
        for row in t.iter().map_err(|e| err(e.into()))? {
            let (k, v) = row.map_err(|e| err(e.into()))?;
            out.checkpoints
                .insert(k.value().to_owned(), v.value().to_owned());
        }
        let t = tx.open_table(DEDUP).map_err(|e| err(e.into()))?;
        out.dedup
            .reserve(t.len().map_err(|e| err(e.into()))? as usize);
        for row in t.iter().map_err(|e| err(e.into()))? {
            let (k, v) = row.map_err(|e| err(e.into()))?;
            out.dedup.insert(
                k.value(),
                Seen {
                    received: v.value(),
                    fingerprint: 0,
                },
            );
        }
        let t = tx.open_table(FINGERPRINTS).map_err(|e| err(e.into()))?;
        for row in t.iter().map_err(|e| err(e.into()))? {
            let (k, v) = row.map_err(|e| err(e.into()))?;
            if let Some(seen) = out.dedup.get_mut(&k.value()) {
                seen.fingerprint = v.value();
            }
        }
        let t = tx.open_table(SESSIONS).map_err(|e| err(e.into()))?;
        for row in t.iter().map_err(|e| err(e.into()))? {
            let (k, v) = row.map_err(|e| err(e.into()))?;
            let (last, id) = v.value();
            out.sessions
                .insert(k.value().to_owned(), (last, id.to_owned()));
        }
        Ok(out)
    }

    /// The saved live entities (read once at start, separately from [`Self::load`], so that a
    /// stage without live engines never reads them).
    pub fn load_live(&self) -> Result<LiveEntries> {
        let err = db_err(&self.path);
        let tx = self.db.begin_read().map_err(|e| err(e.into()))?;
        let t = tx.open_table(LIVE).map_err(|e| err(e.into()))?;
        let mut out = Vec::with_capacity(t.len().map_err(|e| err(e.into()))? as usize);
        for row in t.iter().map_err(|e| err(e.into()))? {
            let (k, v) = row.map_err(|e| err(e.into()))?;
            out.push((k.value().to_owned(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Writes one flush's changes in a single durable transaction.
    pub fn commit(&self, delta: &StateDelta) -> Result<()> {
        let err = db_err(&self.path);
        let tx = self.db.begin_write().map_err(|e| err(e.into()))?;
        {
            let mut t = tx.open_table(CHECKPOINTS).map_err(|e| err(e.into()))?;
            for (shard, seq) in &delta.checkpoints {
                t.insert(shard.as_str(), seq.as_str())
                    .map_err(|e| err(e.into()))?;
            }
            let mut t = tx.open_table(DEDUP).map_err(|e| err(e.into()))?;
            let mut f = tx.open_table(FINGERPRINTS).map_err(|e| err(e.into()))?;
            for (id, seen) in &delta.new_ids {
                t.insert(*id, seen.received).map_err(|e| err(e.into()))?;
                if seen.fingerprint != 0 {
                    f.insert(*id, seen.fingerprint).map_err(|e| err(e.into()))?;
                }
            }
            for id in &delta.expired_ids {
                t.remove(*id).map_err(|e| err(e.into()))?;
                f.remove(*id).map_err(|e| err(e.into()))?;
            }
            let mut t = tx.open_table(SESSIONS).map_err(|e| err(e.into()))?;
            for (key, last, id) in &delta.sessions {
                t.insert(key.as_str(), (*last, id.as_str()))
                    .map_err(|e| err(e.into()))?;
            }
            for key in &delta.expired_sessions {
                t.remove(key.as_str()).map_err(|e| err(e.into()))?;
            }
            let mut t = tx.open_table(LIVE).map_err(|e| err(e.into()))?;
            for (key, value) in &delta.live {
                match value {
                    Some(v) => t.insert(key.as_str(), v.as_slice()),
                    None => t.remove(key.as_str()),
                }
                .map_err(|e| err(e.into()))?;
            }
        }
        tx.commit().map_err(|e| err(e.into()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(received: i64, fingerprint: u64) -> Seen {
        Seen {
            received,
            fingerprint,
        }
    }

    #[test]
    fn a_later_copy_conflicts_only_when_both_payloads_are_known_and_differ() {
        assert_eq!(Seen::sighting(None, seen(1, 5)), Sighting::First);
        assert_eq!(
            Seen::sighting(Some(&seen(1, 5)), seen(9, 5)),
            Sighting::Again
        );
        assert_eq!(
            Seen::sighting(Some(&seen(1, 5)), seen(9, 6)),
            Sighting::Conflict
        );
        assert_eq!(
            Seen::sighting(Some(&seen(1, 0)), seen(9, 6)),
            Sighting::Again
        );
        assert_eq!(
            Seen::sighting(Some(&seen(1, 5)), seen(9, 0)),
            Sighting::Again
        );
    }

    #[test]
    fn state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let s = StateStore::open(&path).unwrap();
            s.commit(&StateDelta {
                checkpoints: vec![("shardId-000000000000".into(), "00000000000000000042".into())],
                new_ids: vec![(7, seen(1000, 70)), (8, seen(2000, 80)), (9, seen(3000, 0))],
                expired_ids: vec![],
                sessions: vec![("anon-1".into(), 5000, "s-1".into())],
                expired_sessions: vec![],
                live: vec![
                    ("fraud/card/1".into(), Some(vec![1, 2])),
                    ("recs/p/1".into(), Some(vec![3])),
                ],
            })
            .unwrap();
            s.commit(&StateDelta {
                expired_ids: vec![7],
                live: vec![("recs/p/1".into(), None)],
                ..Default::default()
            })
            .unwrap();
        }
        let s = StateStore::open(&path).unwrap();
        let loaded = s.load().unwrap();
        assert_eq!(
            loaded.checkpoints["shardId-000000000000"],
            "00000000000000000042"
        );
        assert_eq!(loaded.dedup.len(), 2);
        assert_eq!(loaded.dedup[&8], seen(2000, 80));
        assert_eq!(loaded.dedup[&9], seen(3000, 0));
        assert_eq!(loaded.sessions["anon-1"], (5000, "s-1".to_owned()));
        assert_eq!(
            s.load_live().unwrap(),
            vec![("fraud/card/1".to_owned(), vec![1, 2])]
        );
    }
}

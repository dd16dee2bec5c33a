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
    pub new_ids: Vec<(u128, i64)>,
    pub expired_ids: Vec<u128>,
    pub sessions: Vec<(String, i64, String)>,
    pub expired_sessions: Vec<String>,
    /// Live entities changed since the last flush: Some(bytes) to write, None to delete.
    pub live: Vec<(String, Option<Vec<u8>>)>,
}

/// The hasher of event-id sets: ids come from clients, so it stays seeded, but foldhash hashes a
/// `u128` several times faster than the standard SipHash (one lookup and one insert per event).
pub type IdHasher = foldhash::quality::RandomState;

/// Event ids → when they were received: the de-duplication window.
pub type IdMap = HashMap<u128, i64, IdHasher>;

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
            out.dedup.insert(k.value(), v.value());
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
            for (id, seen) in &delta.new_ids {
                t.insert(*id, *seen).map_err(|e| err(e.into()))?;
            }
            for id in &delta.expired_ids {
                t.remove(*id).map_err(|e| err(e.into()))?;
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

    #[test]
    fn state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let s = StateStore::open(&path).unwrap();
            s.commit(&StateDelta {
                checkpoints: vec![("shardId-000000000000".into(), "00000000000000000042".into())],
                new_ids: vec![(7, 1000), (8, 2000)],
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
        assert_eq!(loaded.dedup.len(), 1);
        assert_eq!(loaded.dedup[&8], 2000);
        assert_eq!(loaded.sessions["anon-1"], (5000, "s-1".to_owned()));
        assert_eq!(
            s.load_live().unwrap(),
            vec![("fraud/card/1".to_owned(), vec![1, 2])]
        );
    }
}

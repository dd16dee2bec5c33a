//! Write keys: created and revoked with `shoplake keys`, stored hashed in a redb file, each tied to
//! the source (web, ios, android, backend, …) that the collector records on every event the key
//! sends.
//!
//! A key is shown once, when it is created; the file keeps only its SHA-256. The file is opened in
//! redb's multi-process mode, so `shoplake keys` can create and revoke keys while a collector runs;
//! the collector re-reads the keys every few seconds ([`KeyCache`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rand::RngCore;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// hex SHA-256 of the key → the key's record as JSON.
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("write_keys");

/// Errors of the key store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("write keys at {path}: {source}")]
    Storage {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "source {source_name:?} is not a valid source name: use 1 to 32 characters among a-z, 0-9, '_' and '-' (web, ios, android, backend, or your own)"
    )]
    InvalidSource { source_name: String },
    #[error("no write key with id {key_id:?} (see `shoplake keys list`)")]
    UnknownKey { key_id: String },
}

/// A write key as stored (without the key itself).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// A public id of the key: the first 16 hex digits of its SHA-256.
    pub key_id: String,
    /// The source recorded on every event sent with the key.
    pub source: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, when revoked.
    pub revoked_at: Option<String>,
}

/// A key just created: the only time its secret is known.
#[derive(Clone, Debug)]
pub struct NewKey {
    pub key: String,
    pub info: KeyInfo,
}

/// The hex SHA-256 of a key, as stored.
pub fn hash_key(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

fn valid_source(source: &str) -> bool {
    (1..=32).contains(&source.len())
        && source
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The write keys file.
pub struct KeyStore {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("path", &self.path)
            .finish()
    }
}

impl KeyStore {
    /// Opens (or creates) the keys file; other processes may have it open at the same time.
    pub fn open(path: &Path) -> Result<Self, KeyError> {
        let err = |e: Box<dyn std::error::Error + Send + Sync>| KeyError::Storage {
            path: path.display().to_string(),
            source: e,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(Box::new(e)))?;
        }
        let db = Database::builder()
            .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter)
            .set_cache_size(1 << 20)
            .create(path)
            .map_err(|e| err(Box::new(e)))?;
        let store = KeyStore {
            db,
            path: path.to_owned(),
        };
        // Create the table so that readers find it.
        store.write(|_| Ok(()))?;
        Ok(store)
    }

    fn storage(&self, e: impl Into<redb::Error>) -> KeyError {
        KeyError::Storage {
            path: self.path.display().to_string(),
            source: Box::new(e.into()),
        }
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&mut redb::Table<&str, &[u8]>) -> Result<T, KeyError>,
    ) -> Result<T, KeyError> {
        let tx = self.db.begin_write().map_err(|e| self.storage(e))?;
        let out = {
            let mut table = tx.open_table(KEYS).map_err(|e| self.storage(e))?;
            f(&mut table)?
        };
        tx.commit().map_err(|e| self.storage(e))?;
        Ok(out)
    }

    fn decode(&self, bytes: &[u8]) -> Result<KeyInfo, KeyError> {
        serde_json::from_slice(bytes).map_err(|e| KeyError::Storage {
            path: self.path.display().to_string(),
            source: Box::new(e),
        })
    }

    /// Creates a key for `source`; the returned secret is not stored anywhere.
    pub fn create(&self, source: &str) -> Result<NewKey, KeyError> {
        if !valid_source(source) {
            return Err(KeyError::InvalidSource {
                source_name: source.to_owned(),
            });
        }
        let mut secret = [0u8; 20];
        rand::rng().fill_bytes(&mut secret);
        let key = format!("shk_{}", hex(&secret));
        let hash = hash_key(&key);
        let info = KeyInfo {
            key_id: hash[..16].to_owned(),
            source: source.to_owned(),
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            revoked_at: None,
        };
        let value = serde_json::to_vec(&info).map_err(|e| KeyError::Storage {
            path: self.path.display().to_string(),
            source: Box::new(e),
        })?;
        self.write(|t| {
            t.insert(hash.as_str(), value.as_slice())
                .map_err(|e| self.storage(e))?;
            Ok(())
        })?;
        Ok(NewKey { key, info })
    }

    /// Every key ever created, revoked ones included, oldest first.
    pub fn list(&self) -> Result<Vec<KeyInfo>, KeyError> {
        let mut keys: Vec<KeyInfo> = self.entries()?.into_iter().map(|(_, info)| info).collect();
        keys.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then(a.key_id.cmp(&b.key_id))
        });
        Ok(keys)
    }

    fn entries(&self) -> Result<Vec<(String, KeyInfo)>, KeyError> {
        let tx = self.db.begin_read().map_err(|e| self.storage(e))?;
        let table = tx.open_table(KEYS).map_err(|e| self.storage(e))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| self.storage(e))? {
            let (hash, value) = entry.map_err(|e| self.storage(e))?;
            out.push((hash.value().to_owned(), self.decode(value.value())?));
        }
        Ok(out)
    }

    /// Revokes the key with this id: the collector refuses it from its next key refresh on.
    pub fn revoke(&self, key_id: &str) -> Result<KeyInfo, KeyError> {
        self.write(|t| {
            let mut found = None;
            for entry in t.iter().map_err(|e| self.storage(e))? {
                let (hash, value) = entry.map_err(|e| self.storage(e))?;
                let info = self.decode(value.value())?;
                if info.key_id == key_id {
                    found = Some((hash.value().to_owned(), info));
                    break;
                }
            }
            let Some((hash, mut info)) = found else {
                return Err(KeyError::UnknownKey {
                    key_id: key_id.to_owned(),
                });
            };
            if info.revoked_at.is_none() {
                info.revoked_at =
                    Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                let value = serde_json::to_vec(&info).map_err(|e| KeyError::Storage {
                    path: self.path.display().to_string(),
                    source: Box::new(e),
                })?;
                t.insert(hash.as_str(), value.as_slice())
                    .map_err(|e| self.storage(e))?;
            }
            Ok(info)
        })
    }

    /// The keys that are not revoked, by hash.
    pub fn active(&self) -> Result<HashMap<String, Arc<KeyInfo>>, KeyError> {
        Ok(self
            .entries()?
            .into_iter()
            .filter(|(_, info)| info.revoked_at.is_none())
            .map(|(hash, info)| (hash, Arc::new(info)))
            .collect())
    }
}

/// The active keys in memory, re-read from the [`KeyStore`] every `refresh`.
pub struct KeyCache {
    store: KeyStore,
    refresh_micros: i64,
    next_refresh: AtomicI64,
    keys: RwLock<HashMap<String, Arc<KeyInfo>>>,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache")
            .field("store", &self.store)
            .finish()
    }
}

impl KeyCache {
    /// Loads the active keys of `store`.
    pub fn new(store: KeyStore, refresh: Duration) -> Result<Self, KeyError> {
        let keys = store.active()?;
        Ok(KeyCache {
            store,
            refresh_micros: refresh.as_micros() as i64,
            next_refresh: AtomicI64::new(now_micros() + refresh.as_micros() as i64),
            keys: RwLock::new(keys),
        })
    }

    /// The key's record, when it is active.
    pub fn authenticate(&self, key: &str) -> Option<Arc<KeyInfo>> {
        self.refresh_if_due();
        let hash = hash_key(key);
        // A poisoned lock only means a refresh panicked; the map in it is still whole.
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        keys.get(&hash).cloned()
    }

    fn refresh_if_due(&self) {
        let now = now_micros();
        let due = self.next_refresh.load(Ordering::Relaxed);
        if now < due
            || self
                .next_refresh
                .compare_exchange(
                    due,
                    now + self.refresh_micros,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return;
        }
        match self.store.active() {
            Ok(fresh) => {
                *self.keys.write().unwrap_or_else(|p| p.into_inner()) = fresh;
            }
            Err(e) => {
                tracing::warn!(error = %e, "re-reading the write keys failed; the keys read before stay in use");
            }
        }
    }
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stored_hashed_and_revocable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.redb");
        let store = KeyStore::open(&path).unwrap();
        let web = store.create("web").unwrap();
        let ios = store.create("ios").unwrap();
        assert!(web.key.starts_with("shk_") && web.key.len() == 44);
        assert_ne!(web.key, ios.key);
        assert_eq!(web.info.key_id, &hash_key(&web.key)[..16]);
        let bytes = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(&web.key), "the key itself is never stored");

        let cache = KeyCache::new(store, Duration::from_millis(0)).unwrap();
        assert_eq!(cache.authenticate(&web.key).unwrap().source, "web");
        assert_eq!(cache.authenticate(&ios.key).unwrap().source, "ios");
        assert!(cache.authenticate("shk_nope").is_none());

        // Another handle (as `shoplake keys revoke` in another process) revokes; the cache sees it.
        let other = KeyStore::open(&path).unwrap();
        let revoked = other.revoke(&web.info.key_id).unwrap();
        assert!(revoked.revoked_at.is_some());
        std::thread::sleep(Duration::from_millis(2));
        assert!(cache.authenticate(&web.key).is_none());
        assert!(cache.authenticate(&ios.key).is_some());
        let listed = other.list().unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed.iter().filter(|k| k.revoked_at.is_some()).count(), 1);
        assert!(matches!(
            other.revoke("0000"),
            Err(KeyError::UnknownKey { .. })
        ));
        assert!(matches!(
            other.create("Web Shop"),
            Err(KeyError::InvalidSource { .. })
        ));
    }
}

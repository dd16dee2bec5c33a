//! Users and API tokens in a redb file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::RngCore;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Role;

/// user name → the user's record as JSON.
const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
/// hex SHA-256 of the token → the token's record as JSON.
const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");

/// PBKDF2 rounds of a stored password (SCRAM-SHA-256's salted password; Postgres uses 4096).
pub const SCRAM_ITERATIONS: u32 = 4096;

/// Errors of the user and token store, in the user's words.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("users and tokens at {path}: {source}")]
    Storage {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "{name:?} is not a valid user name: use 1 to 63 characters among a-z, 0-9, '_', '-' and '.'"
    )]
    InvalidName { name: String },
    #[error("the user {name:?} exists already (see `shoplake users list`)")]
    UserExists { name: String },
    #[error("no user named {name:?} (see `shoplake users list`)")]
    UnknownUser { name: String },
    #[error("no token with id {token_id:?} (see `shoplake tokens list`)")]
    UnknownToken { token_id: String },
    #[error("a password needs at least 12 characters")]
    WeakPassword,
}

/// A user as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub name: String,
    pub role: Role,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, when disabled: the user's tokens and password stop working.
    pub disabled_at: Option<String>,
    /// The SCRAM-SHA-256 verifier of the user's password (Postgres wire), if one is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scram: Option<Scram>,
}

/// What SCRAM-SHA-256 needs of a password: its salt, rounds and salted password (PBKDF2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scram {
    /// Hex.
    pub salt: String,
    pub iterations: u32,
    /// Hex of PBKDF2-HMAC-SHA256(password, salt, iterations).
    pub salted_password: String,
}

impl Scram {
    fn new(password: &str) -> Self {
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        Scram {
            salt: hex(&salt),
            iterations: SCRAM_ITERATIONS,
            salted_password: hex(&salted_password(password, &salt, SCRAM_ITERATIONS)),
        }
    }

    /// Whether `password` is the one this verifier was made from.
    pub fn verify(&self, password: &str) -> bool {
        let Some(salt) = unhex(&self.salt) else {
            return false;
        };
        let computed = hex(&salted_password(password, &salt, self.iterations));
        // Compared whole: both are fixed-length hex of a PBKDF2 output.
        constant_time_eq(computed.as_bytes(), self.salted_password.as_bytes())
    }
}

/// PBKDF2-HMAC-SHA256 of `password`: SCRAM-SHA-256's SaltedPassword (RFC 7677).
pub fn salted_password(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut out = [0u8; 32];
    let rounds = std::num::NonZeroU32::new(iterations.max(1)).unwrap_or(std::num::NonZeroU32::MIN);
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        rounds,
        salt,
        password.as_bytes(),
        &mut out,
    );
    out
}

/// A token as stored (without the token itself).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// A public id: the first 16 hex digits of the token's SHA-256.
    pub token_id: String,
    pub user: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; None: never expires.
    pub expires_at: Option<String>,
    /// RFC 3339, when revoked.
    pub revoked_at: Option<String>,
}

impl TokenInfo {
    /// Whether the token works at `now` (not revoked, not expired).
    pub fn is_live(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        self.revoked_at.is_none()
            && self
                .expires_at
                .as_deref()
                .is_none_or(|e| chrono::DateTime::parse_from_rfc3339(e).is_ok_and(|e| e > now))
    }
}

/// A token just created: the only time its secret is known.
#[derive(Clone, Debug)]
pub struct NewToken {
    pub token: String,
    pub info: TokenInfo,
}

/// The users and tokens file.
pub struct AuthStore {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for AuthStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthStore")
            .field("path", &self.path)
            .finish()
    }
}

fn now_rfc3339(now: chrono::DateTime<chrono::Utc>) -> String {
    now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl AuthStore {
    /// Opens (or creates) the file; other processes may have it open at the same time.
    pub fn open(path: &Path) -> Result<Self, AuthError> {
        let err = |e: Box<dyn std::error::Error + Send + Sync>| AuthError::Storage {
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
        let store = AuthStore {
            db,
            path: path.to_owned(),
        };
        // Create the tables so that readers find them.
        store.write(|_, _| Ok(()))?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn storage(&self, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> AuthError {
        AuthError::Storage {
            path: self.path.display().to_string(),
            source: e.into(),
        }
    }

    fn write<T>(
        &self,
        f: impl FnOnce(
            &mut redb::Table<&str, &[u8]>,
            &mut redb::Table<&str, &[u8]>,
        ) -> Result<T, AuthError>,
    ) -> Result<T, AuthError> {
        let tx = self
            .db
            .begin_write()
            .map_err(|e| self.storage(redb::Error::from(e)))?;
        let out = {
            let mut users = tx
                .open_table(USERS)
                .map_err(|e| self.storage(redb::Error::from(e)))?;
            let mut tokens = tx
                .open_table(TOKENS)
                .map_err(|e| self.storage(redb::Error::from(e)))?;
            f(&mut users, &mut tokens)?
        };
        tx.commit()
            .map_err(|e| self.storage(redb::Error::from(e)))?;
        Ok(out)
    }

    fn read_all<T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<(String, T)>, AuthError> {
        let tx = self
            .db
            .begin_read()
            .map_err(|e| self.storage(redb::Error::from(e)))?;
        let table = tx
            .open_table(table)
            .map_err(|e| self.storage(redb::Error::from(e)))?;
        let mut out = Vec::new();
        for entry in table
            .iter()
            .map_err(|e| self.storage(redb::Error::from(e)))?
        {
            let (key, value) = entry.map_err(|e| self.storage(redb::Error::from(e)))?;
            let record = serde_json::from_slice(value.value()).map_err(|e| self.storage(e))?;
            out.push((key.value().to_owned(), record));
        }
        Ok(out)
    }

    fn encode<T: Serialize>(&self, record: &T) -> Result<Vec<u8>, AuthError> {
        serde_json::to_vec(record).map_err(|e| self.storage(e))
    }

    /// Creates a user; `password` (for the Postgres wire protocol) is optional.
    pub fn create_user(
        &self,
        name: &str,
        role: Role,
        password: Option<&str>,
    ) -> Result<UserInfo, AuthError> {
        if !valid_name(name) {
            return Err(AuthError::InvalidName {
                name: name.to_owned(),
            });
        }
        if password.is_some_and(|p| p.chars().count() < 12) {
            return Err(AuthError::WeakPassword);
        }
        let user = UserInfo {
            name: name.to_owned(),
            role,
            created_at: now_rfc3339(chrono::Utc::now()),
            disabled_at: None,
            scram: password.map(Scram::new),
        };
        let value = self.encode(&user)?;
        self.write(|users, _| {
            if users
                .get(name)
                .map_err(|e| self.storage(redb::Error::from(e)))?
                .is_some()
            {
                return Err(AuthError::UserExists {
                    name: name.to_owned(),
                });
            }
            users
                .insert(name, value.as_slice())
                .map_err(|e| self.storage(redb::Error::from(e)))?;
            Ok(())
        })?;
        Ok(user)
    }

    /// Sets (or replaces) a user's password.
    pub fn set_password(&self, name: &str, password: &str) -> Result<(), AuthError> {
        if password.chars().count() < 12 {
            return Err(AuthError::WeakPassword);
        }
        self.update_user(name, |user| user.scram = Some(Scram::new(password)))
            .map(drop)
    }

    /// Disables a user: their tokens and password stop working at the servers' next refresh.
    pub fn disable_user(&self, name: &str) -> Result<UserInfo, AuthError> {
        self.update_user(name, |user| {
            user.disabled_at
                .get_or_insert_with(|| now_rfc3339(chrono::Utc::now()));
        })
    }

    fn update_user(
        &self,
        name: &str,
        change: impl FnOnce(&mut UserInfo),
    ) -> Result<UserInfo, AuthError> {
        self.write(|users, _| {
            let current = users
                .get(name)
                .map_err(|e| self.storage(redb::Error::from(e)))?
                .map(|v| v.value().to_vec());
            let Some(current) = current else {
                return Err(AuthError::UnknownUser {
                    name: name.to_owned(),
                });
            };
            let mut user: UserInfo =
                serde_json::from_slice(&current).map_err(|e| self.storage(e))?;
            change(&mut user);
            let value = self.encode(&user)?;
            users
                .insert(name, value.as_slice())
                .map_err(|e| self.storage(redb::Error::from(e)))?;
            Ok(user)
        })
    }

    /// Every user, by name.
    pub fn users(&self) -> Result<Vec<UserInfo>, AuthError> {
        Ok(self
            .read_all::<UserInfo>(USERS)?
            .into_iter()
            .map(|(_, u)| u)
            .collect())
    }

    /// Creates a token for `user`, valid for `valid_for` (None: until revoked).
    pub fn create_token(
        &self,
        user: &str,
        valid_for: Option<Duration>,
    ) -> Result<NewToken, AuthError> {
        if !self.users()?.iter().any(|u| u.name == user) {
            return Err(AuthError::UnknownUser {
                name: user.to_owned(),
            });
        }
        let mut secret = [0u8; 24];
        rand::rng().fill_bytes(&mut secret);
        let token = format!("slt_{}", hex(&secret));
        let hash = hash_token(&token);
        let now = chrono::Utc::now();
        let info = TokenInfo {
            token_id: hash[..16].to_owned(),
            user: user.to_owned(),
            created_at: now_rfc3339(now),
            expires_at: valid_for
                .and_then(|d| chrono::Duration::from_std(d).ok())
                .map(|d| now_rfc3339(now + d)),
            revoked_at: None,
        };
        let value = self.encode(&info)?;
        self.write(|_, tokens| {
            tokens
                .insert(hash.as_str(), value.as_slice())
                .map_err(|e| self.storage(redb::Error::from(e)))?;
            Ok(())
        })?;
        Ok(NewToken { token, info })
    }

    /// Every token ever created, oldest first.
    pub fn tokens(&self) -> Result<Vec<TokenInfo>, AuthError> {
        let mut tokens: Vec<TokenInfo> = self
            .read_all::<TokenInfo>(TOKENS)?
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        tokens.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then(a.token_id.cmp(&b.token_id))
        });
        Ok(tokens)
    }

    /// Revokes the token with this id.
    pub fn revoke_token(&self, token_id: &str) -> Result<TokenInfo, AuthError> {
        self.write(|_, tokens| {
            let mut found = None;
            for entry in tokens
                .iter()
                .map_err(|e| self.storage(redb::Error::from(e)))?
            {
                let (hash, value) = entry.map_err(|e| self.storage(redb::Error::from(e)))?;
                let info: TokenInfo =
                    serde_json::from_slice(value.value()).map_err(|e| self.storage(e))?;
                if info.token_id == token_id {
                    found = Some((hash.value().to_owned(), info));
                    break;
                }
            }
            let Some((hash, mut info)) = found else {
                return Err(AuthError::UnknownToken {
                    token_id: token_id.to_owned(),
                });
            };
            if info.revoked_at.is_none() {
                info.revoked_at = Some(now_rfc3339(chrono::Utc::now()));
                let value = self.encode(&info)?;
                tokens
                    .insert(hash.as_str(), value.as_slice())
                    .map_err(|e| self.storage(redb::Error::from(e)))?;
            }
            Ok(info)
        })
    }

    /// What the guard needs: live tokens by hash with their user's role, and enabled users.
    pub fn snapshot(&self) -> Result<Snapshot, AuthError> {
        let users: HashMap<String, UserInfo> = self
            .read_all::<UserInfo>(USERS)?
            .into_iter()
            .filter(|(_, u)| u.disabled_at.is_none())
            .collect();
        let tokens = self
            .read_all::<TokenInfo>(TOKENS)?
            .into_iter()
            .filter(|(_, t)| t.revoked_at.is_none() && users.contains_key(&t.user))
            .collect();
        Ok(Snapshot { users, tokens })
    }
}

/// The store as the servers hold it between refreshes.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Enabled users by name.
    pub users: HashMap<String, UserInfo>,
    /// Unrevoked tokens of enabled users, by hash (expiry is checked at use).
    pub tokens: HashMap<String, TokenInfo>,
}

/// The hex SHA-256 of a token, as stored.
pub fn hash_token(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn valid_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-' || b == b'.'
        })
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_tokens_and_passwords() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuthStore::open(&dir.path().join("auth.redb")).unwrap();
        let ana = store
            .create_user("ana", Role::Analyst, Some("correct horse battery"))
            .unwrap();
        assert!(ana.scram.as_ref().unwrap().verify("correct horse battery"));
        assert!(!ana.scram.as_ref().unwrap().verify("correct horse battery!"));
        assert!(matches!(
            store.create_user("ana", Role::Admin, None),
            Err(AuthError::UserExists { .. })
        ));
        assert!(matches!(
            store.create_user("Ana Smith", Role::Admin, None),
            Err(AuthError::InvalidName { .. })
        ));
        assert!(matches!(
            store.create_user("bob", Role::Admin, Some("short")),
            Err(AuthError::WeakPassword)
        ));
        assert!(matches!(
            store.create_token("nobody", None),
            Err(AuthError::UnknownUser { .. })
        ));

        let token = store
            .create_token("ana", Some(Duration::from_secs(3600)))
            .unwrap();
        assert!(token.token.starts_with("slt_"));
        let snapshot = store.snapshot().unwrap();
        let info = &snapshot.tokens[&hash_token(&token.token)];
        assert_eq!(info.user, "ana");
        assert!(info.is_live(chrono::Utc::now()));
        assert!(!info.is_live(chrono::Utc::now() + chrono::Duration::hours(2)));
        // The file never holds the token.
        let bytes = std::fs::read(dir.path().join("auth.redb")).unwrap();
        assert!(
            !bytes
                .windows(token.token.len())
                .any(|w| w == token.token.as_bytes())
        );

        store.revoke_token(&token.info.token_id).unwrap();
        assert!(store.snapshot().unwrap().tokens.is_empty());
        let again = store.create_token("ana", None).unwrap();
        store.disable_user("ana").unwrap();
        let snapshot = store.snapshot().unwrap();
        assert!(!snapshot.tokens.contains_key(&hash_token(&again.token)));
        assert!(snapshot.users.is_empty());
    }

    #[test]
    fn salted_passwords_match_rfc7677() {
        // RFC 7677's example: user "user", password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==,
        // 4096 rounds; its ServerKey and StoredKey follow from this SaltedPassword, which the
        // Postgres wire tests check end to end. Here: stable and salt-dependent.
        let a = salted_password("pencil", b"salt-a", 4096);
        assert_eq!(a, salted_password("pencil", b"salt-a", 4096));
        assert_ne!(a, salted_password("pencil", b"salt-b", 4096));
        assert_eq!(unhex(&hex(&a)).unwrap(), a.to_vec());
    }
}

//! Erasure of a person on request: what the parts of the pipeline share.
//!
//! - [`Tombstones`]: the people erased recently, as SHA-256 digests of their ids (never the ids
//!   themselves, so the list can stay in the lake after the person's bytes are gone). The stage
//!   drops an arriving event of a tombstoned user or anonymous id, and compaction drops a staged
//!   row of one, so that events still in flight when the request was made are honoured when they
//!   arrive. A tombstone expires (the request says when): a person who comes back later as a new
//!   customer under the same id is a new customer.
//! - [`Mentions`]: whether a value names one of a person's ids, as a whole token (`u-42` is in
//!   `{"user_id":"u-42"}` but not in `u-420`): how erasure finds their rows in every table and
//!   their records in the stream, the archive and the state.

use std::collections::HashSet;

use aho_corasick::AhoCorasick;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Where the tombstones live, relative to the lake root: one object per erasure request,
/// `REQUEST_ID.json`, written once and never changed (two requests at once cannot lose each
/// other's), deleted once every tombstone in it has expired.
pub const TOMBSTONES_PREFIX: &str = "_erasures/tombstones";

/// The object of request `request_id`'s tombstones, relative to the lake root.
pub fn tombstones_path(request_id: &str) -> String {
    format!("{TOMBSTONES_PREFIX}/{request_id}.json")
}

/// The digest a tombstone keeps of an id: SHA-256 of a domain prefix and the id.
fn digest(id: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"shoplake-erasure\0");
    h.update(id.as_bytes());
    h.finalize().into()
}

/// [`digest`] in hex, as a tombstone object stores it.
pub fn id_digest(id: &str) -> String {
    digest(id).iter().map(|b| format!("{b:02x}")).collect()
}

/// A stored hex digest back into bytes; None for anything else.
fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// One erased id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    /// The erasure request it belongs to.
    pub request_id: String,
    /// [`id_digest`] of a user or anonymous id.
    pub id_sha256: String,
    /// Until when arriving events of the id are dropped (UTC micros).
    pub until_micros: i64,
}

/// Tombstones: those of one request, as its object under [`TOMBSTONES_PREFIX`] holds them, or
/// those of every request together ([`Tombstones::merge`]).
#[derive(Clone, Debug, Default)]
pub struct Tombstones {
    entries: Vec<Tombstone>,
    /// The entries' digests as bytes: the stage looks every event's ids up while tombstones
    /// are in force, without an allocation.
    digests: HashSet<[u8; 32]>,
}

#[derive(Serialize, Deserialize)]
struct File {
    tombstones: Vec<Tombstone>,
}

impl Tombstones {
    /// Reads the file's bytes; a digest that is not 64 hex digits is an error.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let file: File = serde_json::from_slice(bytes)?;
        if let Some(bad) = file
            .tombstones
            .iter()
            .find(|t| parse_digest(&t.id_sha256).is_none())
        {
            return Err(serde::de::Error::custom(format!(
                "id_sha256 {:?} is not a SHA-256 digest in hex",
                bad.id_sha256
            )));
        }
        Ok(Self::from_entries(file.tombstones))
    }

    fn from_entries(entries: Vec<Tombstone>) -> Self {
        let digests = entries
            .iter()
            .filter_map(|t| parse_digest(&t.id_sha256))
            .collect();
        Self { entries, digests }
    }

    /// The file's bytes.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec_pretty(&File {
            tombstones: self.entries.clone(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The tombstones of request `request_id`: `ids`, until `until_micros`.
    pub fn of_request(
        request_id: &str,
        ids: impl IntoIterator<Item = impl AsRef<str>>,
        until_micros: i64,
    ) -> Self {
        Self::from_entries(
            ids.into_iter()
                .map(|id| Tombstone {
                    request_id: request_id.to_owned(),
                    id_sha256: id_digest(id.as_ref()),
                    until_micros,
                })
                .collect(),
        )
    }

    /// All of `parts` together, but the tombstones expired at `now_micros`.
    pub fn merge<'a>(parts: impl IntoIterator<Item = &'a Tombstones>, now_micros: i64) -> Self {
        Self::from_entries(
            parts
                .into_iter()
                .flat_map(|p| &p.entries)
                .filter(|t| t.until_micros > now_micros)
                .cloned()
                .collect(),
        )
    }

    /// Whether every tombstone has expired at `now_micros` (the request's object can go).
    pub fn expired(&self, now_micros: i64) -> bool {
        self.entries.iter().all(|t| t.until_micros <= now_micros)
    }

    /// Whether `id` is erased.
    pub fn erases(&self, id: &str) -> bool {
        !self.digests.is_empty() && self.digests.contains(&digest(id))
    }

    /// Whether an event of `user_id` / `anonymous_id` is erased.
    pub fn erases_either(&self, user_id: Option<&str>, anonymous_id: Option<&str>) -> bool {
        !self.digests.is_empty()
            && (user_id.is_some_and(|u| self.erases(u))
                || anonymous_id.is_some_and(|a| self.erases(a)))
    }

    /// Whether a raw payload (a record the stage rejected, a bad row's bytes) is of an erased
    /// person: its top-level user or anonymous id (contract or Segment spelling) is tombstoned.
    /// A payload that is not a JSON object names nobody this way.
    pub fn erases_raw(&self, raw: &[u8]) -> bool {
        #[derive(Deserialize)]
        struct Ids<'a> {
            #[serde(borrow, default, alias = "userId")]
            user_id: Option<std::borrow::Cow<'a, str>>,
            #[serde(borrow, default, alias = "anonymousId")]
            anonymous_id: Option<std::borrow::Cow<'a, str>>,
        }
        if self.digests.is_empty() {
            return false;
        }
        match serde_json::from_slice::<Ids<'_>>(raw) {
            Ok(ids) => self.erases_either(ids.user_id.as_deref(), ids.anonymous_id.as_deref()),
            Err(_) => false,
        }
    }
}

/// Finds a person's ids in text and bytes, each as a whole token: the bytes on either side of a
/// match are not letters, digits, `-` or `_`.
#[derive(Clone, Debug)]
pub struct Mentions {
    finder: Option<AhoCorasick>,
}

impl Mentions {
    /// A finder of `ids` (empty ids are left out).
    pub fn new(ids: impl IntoIterator<Item = impl AsRef<str>>) -> Self {
        let ids: Vec<String> = ids
            .into_iter()
            .map(|s| s.as_ref().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        Self {
            finder: AhoCorasick::new(&ids).ok().filter(|_| !ids.is_empty()),
        }
    }

    /// Whether `bytes` names one of the ids as a whole token.
    pub fn in_bytes(&self, bytes: &[u8]) -> bool {
        let Some(finder) = &self.finder else {
            return false;
        };
        let token = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
        finder.find_overlapping_iter(bytes).any(|m| {
            let before = m.start().checked_sub(1).map(|i| bytes[i]);
            let after = bytes.get(m.end()).copied();
            !before.is_some_and(token) && !after.is_some_and(token)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mention_is_a_whole_token() {
        let m = Mentions::new(["u-42", "ann@example.com"]);
        assert!(m.in_bytes(br#"{"user_id":"u-42","x":1}"#));
        assert!(m.in_bytes(b"u-42"));
        assert!(m.in_bytes(b"mailto:ann@example.com?x"));
        assert!(!m.in_bytes(b"u-420"));
        assert!(!m.in_bytes(b"xu-42"));
        assert!(!m.in_bytes(b"u-42_b"));
        // One occurrence inside a longer token and one alone: found.
        assert!(m.in_bytes(b"u-420 u-42"));
        assert!(!Mentions::new(Vec::<String>::new()).in_bytes(b"anything"));
    }

    #[test]
    fn tombstones_keep_digests_expire_and_read_raw_payloads() {
        let t = Tombstones::of_request("r1", ["u-42", "anon-7"], 100);
        assert!(t.erases("u-42") && t.erases("anon-7") && !t.erases("u-43"));
        let json = t.to_json().unwrap();
        assert!(
            !String::from_utf8_lossy(&json).contains("u-42"),
            "ids are not kept"
        );
        let back = Tombstones::from_json(&json).unwrap();
        assert!(back.erases_either(None, Some("anon-7")));
        assert!(back.erases_raw(br#"{"userId":"u-42","event":"x"}"#));
        assert!(back.erases_raw(br#"{"user_id":"u-9","anonymous_id":"anon-7"}"#));
        assert!(!back.erases_raw(br#"{"user_id":"u-9"}"#));
        assert!(!back.erases_raw(b"not json u-42"));
        let bad = br#"{"tombstones":[{"request_id":"r","id_sha256":"zz","until_micros":1}]}"#;
        assert!(
            Tombstones::from_json(bad)
                .unwrap_err()
                .to_string()
                .contains("zz")
        );
        // Expired at 100: left out when merged with a later request's at 200.
        let r2 = Tombstones::of_request("r2", ["u-1"], 300);
        let both = Tombstones::merge([&back, &r2], 50);
        assert!(both.erases("u-42") && both.erases("u-1"));
        let later = Tombstones::merge([&back, &r2], 200);
        assert_eq!(later.len(), 1);
        assert!(!later.erases("u-42") && later.erases("u-1"));
        assert!(back.expired(200) && !r2.expired(200));
    }
}

//! The engine's per-entity state: what it remembers of each account, card, device, IP, shipping
//! address and recent order, how that is keyed, expired and serialized.
//!
//! Entities are keyed by a 64-bit FNV-1a hash of their id (stable across processes and Rust
//! versions, unlike std's hasher), so raw IPs, card fingerprints and user ids are never held or
//! persisted in clear. Persisted keys read `kind:hash` (`device:9f2c…`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use serde::{Deserialize, Serialize};

use super::windows::{Distinct, Window};

/// What an entity is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// An account: its user id, or its anonymous id when it has none.
    User,
    Card,
    Device,
    Ip,
    Address,
    /// An order placed recently, to attribute its payment failure to its card, device and IP.
    Order,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::User,
        Kind::Card,
        Kind::Device,
        Kind::Ip,
        Kind::Address,
        Kind::Order,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Card => "card",
            Kind::Device => "device",
            Kind::Ip => "ip",
            Kind::Address => "address",
            Kind::Order => "order",
        }
    }
}

/// 64-bit FNV-1a over parts, with a separator so that ("ab","c") and ("a","bc") differ.
pub fn hash_parts(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// An entity's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub kind: Kind,
    pub id: u64,
}

impl Key {
    /// The key of the entity named `raw` (prefix: distinguishes user ids from anonymous ids).
    pub fn of(kind: Kind, prefix: &str, raw: &str) -> Key {
        Key {
            kind,
            id: hash_parts(&[kind.name().as_bytes(), prefix.as_bytes(), raw.as_bytes()]),
        }
    }

    /// Parses the form written by `Display` (`device:00ff…`).
    pub fn parse(s: &str) -> Option<Key> {
        let (kind, id) = s.split_once(':')?;
        let kind = Kind::ALL.into_iter().find(|k| k.name() == kind)?;
        if id.len() != 16 {
            return None;
        }
        let id = u64::from_str_radix(id, 16).ok()?;
        Some(Key { kind, id })
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{:016x}", self.kind.name(), self.id)
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The id is already a well-mixed hash; the kind moves it apart per kind.
        state.write_u64(self.id ^ (self.kind as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    }
}

/// A hasher for [`Key`]s, whose ids are hashes already.
#[derive(Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = hash_parts(&[&self.0.to_le_bytes(), bytes]);
    }
    fn write_u64(&mut self, v: u64) {
        self.0 ^= v;
    }
}

pub type KeyBuild = BuildHasherDefault<KeyHasher>;

/// What the engine remembers of an account across orders.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// When the account signed up (`signed_up` event time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_up: Option<i64>,
    /// Orders remembered, and their amounts in the reporting currency.
    pub orders: u32,
    pub amount_sum: f64,
    pub amount_max: f64,
    /// Devices used: (device key id, first seen with the account, last seen).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<(u64, i64, i64)>,
    /// Countries orders were shipped to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ship_countries: Vec<String>,
}

impl Profile {
    /// Devices and shipping countries remembered per account.
    pub const MAX_DEVICES: usize = 8;
    pub const MAX_SHIP_COUNTRIES: usize = 8;

    /// Records the use of `device` at `t`; true when the state changed.
    pub fn use_device(&mut self, device: u64, t: i64) -> bool {
        if let Some(d) = self.devices.iter_mut().find(|d| d.0 == device) {
            let (first, last) = (d.1.min(t), d.2.max(t));
            let changed = (first, last) != (d.1, d.2);
            (d.1, d.2) = (first, last);
            return changed;
        }
        if self.devices.len() >= Self::MAX_DEVICES
            && let Some(stalest) = (0..self.devices.len()).min_by_key(|&i| self.devices[i].2)
        {
            self.devices.swap_remove(stalest);
        }
        self.devices.push((device, t, t));
        true
    }

    /// Whether `device` is new to the account at `t`: first seen with it less than `recent` ago
    /// while another device was seen with the account before that.
    pub fn is_new_device(&self, device: u64, t: i64, recent: i64) -> bool {
        let first_with_device = self
            .devices
            .iter()
            .find(|d| d.0 == device)
            .map_or(t, |d| d.1.min(t));
        t - first_with_device < recent
            && self
                .devices
                .iter()
                .any(|d| d.0 != device && d.1 < first_with_device)
    }

    pub fn ship_to(&mut self, country: &str) {
        if self.ship_countries.iter().any(|c| c == country) {
            return;
        }
        if self.ship_countries.len() >= Self::MAX_SHIP_COUNTRIES {
            self.ship_countries.remove(0);
        }
        self.ship_countries.push(country.to_owned());
    }
}

/// The entities an order touched, to attribute its later payment failure.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OrderLinks {
    pub placed: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<Key>,
    /// A payment failure was counted already.
    #[serde(default)]
    pub failed: bool,
}

impl Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Key::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("bad entity key {s:?}")))
    }
}

/// Order, payment and sharing activity of an entity over the windows (accounts, cards, devices,
/// IPs, addresses; boxed apart so that a device that only viewed products stays small).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Activity {
    /// Orders placed.
    #[serde(default, skip_serializing_if = "Window::is_empty")]
    pub orders: Window,
    /// Payment attempts (`payment_info_entered`).
    #[serde(default, skip_serializing_if = "Window::is_empty")]
    pub attempts: Window,
    /// Failed payments (`payment_failed`), at the failure's time.
    #[serde(default, skip_serializing_if = "Window::is_empty")]
    pub failed: Window,
    /// Accounts (user ids) seen (devices, IPs, cards, addresses).
    #[serde(default, skip_serializing_if = "Distinct::is_empty")]
    pub accounts: Distinct,
    /// Cards used (devices, IPs).
    #[serde(default, skip_serializing_if = "Distinct::is_empty")]
    pub cards: Distinct,
}

impl Activity {
    const EMPTY: Activity = Activity {
        orders: Window::new(),
        attempts: Window::new(),
        failed: Window::new(),
        accounts: Distinct::new(),
        cards: Distinct::new(),
    };

    fn is_empty(&self) -> bool {
        self.orders.is_empty()
            && self.attempts.is_empty()
            && self.failed.is_empty()
            && self.accounts.is_empty()
            && self.cards.is_empty()
    }

    /// Not short-circuiting: every window is pruned.
    fn expire(&mut self, horizon: i64) -> bool {
        self.orders.expire(horizon)
            | self.attempts.expire(horizon)
            | self.failed.expire(horizon)
            | self.accounts.expire(horizon)
            | self.cards.expire(horizon)
    }
}

static NO_ACTIVITY: Activity = Activity::EMPTY;

/// One entity's state. Which parts are used depends on its kind.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Entity {
    pub first_seen: i64,
    pub last_seen: i64,
    /// Products viewed (devices).
    #[serde(default, skip_serializing_if = "Window::is_empty")]
    pub views: Window,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    activity: Option<Box<Activity>>,
    /// What the engine remembers of an account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<Box<Profile>>,
    /// The entities of a recent order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<Box<OrderLinks>>,
}

impl Entity {
    /// The entity's activity (empty when it has none).
    pub fn activity(&self) -> &Activity {
        self.activity.as_deref().unwrap_or(&NO_ACTIVITY)
    }

    pub fn activity_mut(&mut self) -> &mut Activity {
        self.activity.get_or_insert_with(Box::default)
    }

    fn has_window_entries(&self) -> bool {
        !self.views.is_empty() || !self.activity().is_empty()
    }

    /// Forgets window entries at or before `horizon`; true when something was forgotten.
    fn expire_windows(&mut self, horizon: i64) -> bool {
        let mut changed = self.views.expire(horizon);
        if let Some(a) = self.activity.as_mut() {
            changed |= a.expire(horizon);
            if a.is_empty() {
                self.activity = None;
            }
        }
        changed
    }

    /// Approximate heap size, for tests of boundedness.
    #[cfg(test)]
    pub fn approx_bytes(&self) -> usize {
        let a = self.activity();
        std::mem::size_of::<Self>()
            + self
                .activity
                .as_ref()
                .map_or(0, |_| std::mem::size_of::<Activity>())
            + 16 * (a.orders.len() + a.attempts.len() + a.failed.len() + self.views.len())
            + 24 * (a.accounts.len() + a.cards.len())
            + self.profile.as_ref().map_or(0, |p| {
                std::mem::size_of::<Profile>() + 24 * p.devices.len() + 26 * p.ship_countries.len()
            })
    }
}

/// Every entity, their expiry deadlines and the keys changed since the last checkpoint.
#[derive(Default)]
pub struct Store {
    pub map: HashMap<Key, Entity, KeyBuild>,
    /// One deadline per entity (lazily refreshed: an entity touched since its deadline was pushed
    /// gets a new one when the old one comes up).
    deadlines: BinaryHeap<Reverse<(i64, Key)>>,
    pub dirty: HashSet<Key, KeyBuild>,
    /// How long window entries are kept (the longest window plus the allowed lateness), and how
    /// long an idle account's profile is.
    pub horizon: i64,
    pub profile_ttl: i64,
}

impl Store {
    pub fn new(horizon: i64, profile_ttl: i64) -> Self {
        Store {
            horizon,
            profile_ttl: profile_ttl.max(horizon),
            ..Store::default()
        }
    }

    pub fn get(&self, key: Option<Key>) -> Option<&Entity> {
        key.and_then(|k| self.map.get(&k))
    }

    /// The entity at `key`, created when missing, marked changed and seen at `t`.
    pub fn touch(&mut self, key: Key, t: i64) -> &mut Entity {
        self.dirty.insert(key);
        let mut created = false;
        let entity = self.map.entry(key).or_insert_with(|| {
            created = true;
            Entity {
                first_seen: t,
                last_seen: t,
                ..Entity::default()
            }
        });
        entity.first_seen = entity.first_seen.min(t);
        entity.last_seen = entity.last_seen.max(t);
        if created {
            let deadline = entity.last_seen + self.horizon;
            self.deadlines.push(Reverse((deadline, key)));
        }
        entity
    }

    /// Puts back an entity loaded from a checkpoint.
    pub fn restore(&mut self, key: Key, entity: Entity) {
        let deadline = self.deadline(key.kind, &entity);
        if self.map.insert(key, entity).is_none() {
            self.deadlines.push(Reverse((deadline, key)));
        }
    }

    fn ttl(&self, kind: Kind) -> i64 {
        match kind {
            Kind::User => self.profile_ttl,
            _ => self.horizon,
        }
    }

    fn deadline(&self, kind: Kind, e: &Entity) -> i64 {
        if e.has_window_entries() {
            e.last_seen.saturating_add(self.horizon)
        } else {
            e.last_seen.saturating_add(self.ttl(kind))
        }
    }

    /// Forgets what no window can count any more as of `now`, and entities left with nothing.
    pub fn expire(&mut self, now: i64) {
        let horizon = now.saturating_sub(self.horizon);
        while let Some(&Reverse((deadline, key))) = self.deadlines.peek() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            let ttl = self.ttl(key.kind);
            let Some(entity) = self.map.get_mut(&key) else {
                continue;
            };
            let changed = entity.expire_windows(horizon);
            if entity.last_seen.saturating_add(ttl) <= now {
                self.map.remove(&key);
                self.dirty.insert(key);
                continue;
            }
            if changed {
                self.dirty.insert(key);
            }
            let next = if entity.has_window_entries() {
                entity.last_seen.saturating_add(self.horizon)
            } else {
                entity.last_seen.saturating_add(ttl)
            };
            self.deadlines.push(Reverse((next, key)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fraud::windows::{DAY, HOUR};

    #[test]
    fn a_device_that_only_viewed_products_is_small() {
        assert!(
            std::mem::size_of::<Entity>() <= 64,
            "{}",
            std::mem::size_of::<Entity>()
        );
    }

    #[test]
    fn keys_print_and_parse() {
        let k = Key::of(Kind::Device, "", "d-42");
        assert_eq!(Key::parse(&k.to_string()), Some(k));
        assert!(k.to_string().starts_with("device:"));
        assert_ne!(Key::of(Kind::User, "u", "x"), Key::of(Kind::User, "a", "x"));
        assert_ne!(
            Key::of(Kind::Ip, "", "x").id,
            Key::of(Kind::Card, "", "x").id
        );
        assert_eq!(Key::parse("device:zz"), None);
        assert_eq!(Key::parse("planet:0000000000000001"), None);
        // Stable across runs: FNV-1a of fixed input.
        assert_eq!(hash_parts(&[b"a"]), hash_parts(&[b"a"]));
        assert_ne!(hash_parts(&[b"ab", b"c"]), hash_parts(&[b"a", b"bc"]));
    }

    #[test]
    fn expiry_drops_idle_entities_and_keeps_profiles_longer() {
        let mut store = Store::new(DAY + HOUR, 30 * DAY);
        let t0 = 1_767_225_600_000_000;
        let device = Key::of(Kind::Device, "", "d-1");
        let user = Key::of(Kind::User, "u", "u-1");
        store.touch(device, t0).activity_mut().orders.add(t0, 1);
        let u = store.touch(user, t0);
        u.activity_mut().orders.add(t0, 1);
        u.profile = Some(Box::default());
        store.dirty.clear();

        store.expire(t0 + DAY);
        assert_eq!(store.map.len(), 2, "still within a day and the lateness");
        assert!(store.dirty.is_empty());

        store.expire(t0 + DAY + HOUR);
        assert!(
            !store.map.contains_key(&device),
            "device idle past the horizon"
        );
        let u = &store.map[&user];
        assert!(u.activity().orders.is_empty(), "window entries forgotten");
        assert!(u.activity.is_none(), "and their box freed");
        assert!(u.profile.is_some(), "the profile is kept");
        assert!(store.dirty.contains(&device) && store.dirty.contains(&user));

        // Touched again later: the deadline moves.
        store.touch(user, t0 + 10 * DAY);
        store.expire(t0 + 31 * DAY);
        assert!(store.map.contains_key(&user));
        store.expire(t0 + 40 * DAY);
        assert!(store.map.is_empty());
        assert!(store.deadlines.is_empty());
    }
}

//! The engine's state: interned products and categories, shoppers in an LRU list with their ids,
//! and the counters that decay with event time.
//!
//! Products are interned to a [`Pid`] (an index into a slot vector) so that neighbour lists,
//! sessions and histories hold 4-byte ids instead of strings; a product id string is stored once,
//! shared by the index and the slot.

use std::collections::HashMap;
use std::sync::Arc;

/// An interned product: index of its slot.
pub(super) type Pid = u32;
/// An interned category; [`NO_CATEGORY`] when the product has none.
pub(super) type Cat = u16;
pub(super) const NO_CATEGORY: Cat = Cat::MAX;
/// End of the shoppers' LRU list.
pub(super) const NIL: u32 = u32::MAX;

/// Forward decay: a count added at event time `t` weighs `2^((t − t_ref) / half_life)`, so that
/// every stored count shrinks relative to new ones without being touched. Ratios of counts (all
/// normalisations) are unaffected by the common scale; effective counts are the stored ones
/// divided by [`Decay::weight`] of the present.
#[derive(Clone, Debug)]
pub(super) struct Decay {
    pub t_ref: i64,
    pub half_life_micros: f64,
}

impl Decay {
    /// Exponent beyond which stored counts are rescaled (2^60 still leaves f32 room for 2^60 events).
    pub const MAX_EXPONENT: f64 = 60.0;

    pub fn exponent(&self, t: i64) -> f64 {
        (t - self.t_ref) as f64 / self.half_life_micros
    }

    pub fn weight(&self, t: i64) -> f64 {
        self.exponent(t).exp2()
    }
}

/// A co-occurrence count with one neighbour (decayed, in the engine's scale).
pub(super) type Edge = (Pid, f32);

#[derive(Clone, Debug)]
pub(super) struct Product {
    pub id: Arc<str>,
    pub category: Cat,
    pub in_stock: bool,
    /// Event time of the last event about the product.
    pub last_seen: i64,
    /// Sessions that viewed the product (decayed): `c_i` of viewed-together.
    pub view_sessions: f64,
    /// Orders that contained the product (decayed): `c_i` of bought-together, and popularity.
    pub orders: f64,
    /// Shoppers who bought it, and of those, who bought it again (plain counts).
    pub buyers: u32,
    pub repeaters: u32,
    /// Sum of ln(seconds between two purchases by one shopper), and how many.
    pub log_interval_sum: f64,
    pub intervals: u32,
    /// Trending ring: activity per bucket; `trend_epoch` is the bucket number of the latest slot.
    pub trend_epoch: i64,
    pub trend: Box<[f32]>,
    /// Raw co-occurrence lists (unsorted, at most 2 × neighbours).
    pub viewed: Vec<Edge>,
    pub bought: Vec<Edge>,
    /// Serving lists: best first, normalised so that the first scores 1.
    pub serve_viewed: Vec<Edge>,
    pub serve_bought: Vec<Edge>,
    /// Changed since the last `take_dirty`.
    pub dirty: bool,
    /// Raw lists changed since the serving lists were computed.
    pub stale: bool,
}

impl Product {
    pub fn new(id: Arc<str>, category: Cat, buckets: usize, now: i64) -> Self {
        Product {
            id,
            category,
            in_stock: true,
            last_seen: now,
            view_sessions: 0.0,
            orders: 0.0,
            buyers: 0,
            repeaters: 0,
            log_interval_sum: 0.0,
            intervals: 0,
            trend_epoch: i64::MIN,
            trend: vec![0.0; buckets].into_boxed_slice(),
            viewed: Vec::new(),
            bought: Vec::new(),
            serve_viewed: Vec::new(),
            serve_bought: Vec::new(),
            dirty: false,
            stale: false,
        }
    }

    /// Adds `amount` of activity in trending bucket `bucket`; older than the window: ignored.
    pub fn add_trend(&mut self, bucket: i64, amount: f32) {
        let n = self.trend.len() as i64;
        if self.trend_epoch == i64::MIN || bucket - self.trend_epoch >= n {
            self.trend.fill(0.0);
            self.trend_epoch = bucket;
        } else if bucket > self.trend_epoch {
            for b in self.trend_epoch + 1..=bucket {
                self.trend[b.rem_euclid(n) as usize] = 0.0;
            }
            self.trend_epoch = bucket;
        } else if self.trend_epoch - bucket >= n {
            return;
        }
        self.trend[bucket.rem_euclid(n) as usize] += amount;
    }

    /// Activity in the window that ends with bucket `now_bucket`.
    pub fn trend_total(&self, now_bucket: i64) -> f32 {
        if self.trend_epoch == i64::MIN {
            return 0.0;
        }
        let n = self.trend.len() as i64;
        let first = (self.trend_epoch - n + 1).max(now_bucket - n + 1);
        let last = self.trend_epoch.min(now_bucket);
        (first..=last)
            .map(|b| self.trend[b.rem_euclid(n) as usize])
            .sum()
    }
}

/// Adds `w` to the edge toward `other`; returns whether the list grew.
pub(super) fn bump(list: &mut Vec<Edge>, other: Pid, w: f32) -> bool {
    match list.iter_mut().find(|(p, _)| *p == other) {
        Some(edge) => {
            edge.1 += w;
            false
        }
        None => {
            list.push((other, w));
            true
        }
    }
}

/// Product ids ↔ slots, with eviction and a cap.
#[derive(Debug, Default)]
pub(super) struct Products {
    pub slots: Vec<Option<Product>>,
    pub index: HashMap<Arc<str>, Pid>,
    pub free: Vec<Pid>,
    /// Products changed since the last `take_dirty` (may repeat; the flag decides).
    pub dirty: Vec<Pid>,
    /// Products whose raw lists changed since the last refresh (may repeat).
    pub stale: Vec<Pid>,
}

impl Products {
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn lookup(&self, id: &str) -> Option<Pid> {
        self.index.get(id).copied()
    }

    pub fn get(&self, pid: Pid) -> Option<&Product> {
        self.slots.get(pid as usize).and_then(Option::as_ref)
    }

    pub fn get_mut(&mut self, pid: Pid) -> Option<&mut Product> {
        self.slots.get_mut(pid as usize).and_then(Option::as_mut)
    }

    /// The slot of `id`, created when there is room.
    pub fn intern(&mut self, id: &str, max: usize, buckets: usize, now: i64) -> Option<Pid> {
        if let Some(pid) = self.lookup(id) {
            return Some(pid);
        }
        if self.index.len() >= max {
            return None;
        }
        let id: Arc<str> = Arc::from(id);
        let product = Product::new(id.clone(), NO_CATEGORY, buckets, now);
        let pid = match self.free.pop() {
            Some(pid) => {
                self.slots[pid as usize] = Some(product);
                pid
            }
            None => {
                self.slots.push(Some(product));
                (self.slots.len() - 1) as Pid
            }
        };
        self.index.insert(id, pid);
        Some(pid)
    }

    pub fn mark_dirty(&mut self, pid: Pid) {
        if let Some(p) = self.slots.get_mut(pid as usize).and_then(Option::as_mut)
            && !p.dirty
        {
            p.dirty = true;
            self.dirty.push(pid);
        }
    }

    pub fn mark_stale(&mut self, pid: Pid) {
        if let Some(p) = self.slots.get_mut(pid as usize).and_then(Option::as_mut)
            && !p.stale
        {
            p.stale = true;
            self.stale.push(pid);
        }
    }

    /// Frees a slot; returns the product that was there.
    pub fn remove(&mut self, pid: Pid) -> Option<Product> {
        let product = self.slots.get_mut(pid as usize)?.take()?;
        self.index.remove(&*product.id);
        self.free.push(pid);
        Some(product)
    }

    pub fn iter(&self) -> impl Iterator<Item = (Pid, &Product)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.as_ref().map(|p| (i as Pid, p)))
    }
}

/// Category names ↔ ids.
#[derive(Debug, Default)]
pub(super) struct Categories {
    pub names: Vec<Arc<str>>,
    pub index: HashMap<Arc<str>, Cat>,
}

impl Categories {
    pub fn lookup(&self, name: &str) -> Option<Cat> {
        self.index.get(name).copied()
    }

    pub fn intern(&mut self, name: &str, max: usize) -> Cat {
        if let Some(c) = self.lookup(name) {
            return c;
        }
        if self.names.len() >= max {
            return NO_CATEGORY;
        }
        let name: Arc<str> = Arc::from(name);
        let c = self.names.len() as Cat;
        self.names.push(name.clone());
        self.index.insert(name, c);
        c
    }

    pub fn name(&self, c: Cat) -> Option<&str> {
        self.names.get(usize::from(c)).map(|n| &**n)
    }
}

/// A product the shopper viewed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct View {
    pub pid: Pid,
    pub at: i64,
    /// Added to the cart, not only viewed.
    pub carted: bool,
}

/// A product the shopper bought.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Purchase {
    pub pid: Pid,
    /// Event time of the latest order with it.
    pub last: i64,
    /// Orders with it.
    pub orders: u32,
}

#[derive(Clone, Debug)]
pub(super) struct Shopper {
    /// The shopper's ids; `ids[0]` names the stored entity and never changes.
    pub ids: Vec<Arc<str>>,
    /// The user id among `ids`, when one is known.
    pub user: Option<Arc<str>>,
    pub last_seen: i64,
    /// Hash of the current session id, and its distinct products (oldest first).
    pub session: u64,
    pub session_items: Vec<Pid>,
    /// Most recent first.
    pub views: Vec<View>,
    /// Most recent last.
    pub bought: Vec<Purchase>,
    pub dirty: bool,
    /// LRU links (toward more and less recently seen).
    pub newer: u32,
    pub older: u32,
}

impl Shopper {
    pub fn new(ids: Vec<Arc<str>>, user: Option<Arc<str>>, now: i64) -> Self {
        Shopper {
            ids,
            user,
            last_seen: now,
            session: 0,
            session_items: Vec::new(),
            views: Vec::new(),
            bought: Vec::new(),
            dirty: false,
            newer: NIL,
            older: NIL,
        }
    }

    pub fn key(&self) -> &str {
        self.ids.first().map_or("", |id| &**id)
    }
}

/// Shoppers in slots, their ids → slot, and an LRU list (head = most recently seen).
#[derive(Debug, Default)]
pub(super) struct Shoppers {
    pub slots: Vec<Option<Shopper>>,
    pub index: HashMap<Arc<str>, u32>,
    pub free: Vec<u32>,
    pub head: Option<u32>,
    pub tail: Option<u32>,
    pub count: usize,
    pub dirty: Vec<u32>,
}

impl Shoppers {
    pub fn lookup(&self, id: &str) -> Option<u32> {
        self.index.get(id).copied()
    }

    pub fn get(&self, slot: u32) -> Option<&Shopper> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    pub fn get_mut(&mut self, slot: u32) -> Option<&mut Shopper> {
        self.slots.get_mut(slot as usize).and_then(Option::as_mut)
    }

    pub fn mark_dirty(&mut self, slot: u32) {
        if let Some(s) = self.get_mut(slot)
            && !s.dirty
        {
            s.dirty = true;
            self.dirty.push(slot);
        }
    }

    /// Adds a shopper at the head of the LRU list and indexes its ids.
    pub fn insert(&mut self, shopper: Shopper) -> u32 {
        let ids = shopper.ids.clone();
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(shopper);
                slot
            }
            None => {
                self.slots.push(Some(shopper));
                (self.slots.len() - 1) as u32
            }
        };
        for id in ids {
            self.index.insert(id, slot);
        }
        self.count += 1;
        self.link_head(slot);
        slot
    }

    /// Removes a shopper and its ids; returns it.
    pub fn remove(&mut self, slot: u32) -> Option<Shopper> {
        self.unlink(slot);
        let shopper = self.slots.get_mut(slot as usize)?.take()?;
        for id in &shopper.ids {
            if self.index.get(&**id) == Some(&slot) {
                self.index.remove(&**id);
            }
        }
        self.free.push(slot);
        self.count -= 1;
        Some(shopper)
    }

    /// Moves a shopper to the head of the LRU list.
    pub fn touch(&mut self, slot: u32) {
        if self.head != Some(slot) {
            self.unlink(slot);
            self.link_head(slot);
        }
    }

    fn link_head(&mut self, slot: u32) {
        let old_head = self.head;
        if let Some(s) = self.get_mut(slot) {
            s.newer = NIL;
            s.older = old_head.unwrap_or(NIL);
        }
        if let Some(h) = old_head.and_then(|h| self.get_mut(h)) {
            h.newer = slot;
        }
        self.head = Some(slot);
        if self.tail.is_none() {
            self.tail = Some(slot);
        }
    }

    fn unlink(&mut self, slot: u32) {
        let Some((newer, older)) = self.get(slot).map(|s| (s.newer, s.older)) else {
            return;
        };
        match self.get_mut(newer) {
            Some(n) => n.older = older,
            None => {
                if self.head == Some(slot) {
                    self.head = (older != NIL).then_some(older);
                }
            }
        }
        match self.get_mut(older) {
            Some(o) => o.newer = newer,
            None => {
                if self.tail == Some(slot) {
                    self.tail = (newer != NIL).then_some(newer);
                }
            }
        }
        if let Some(s) = self.get_mut(slot) {
            s.newer = NIL;
            s.older = NIL;
        }
    }

    /// Rebuilds the LRU list in order of `last_seen` (after a restore, which inserts in any order).
    pub fn sort_lru(&mut self) {
        let mut order: Vec<(i64, u32)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (s.last_seen, i as u32)))
            .collect();
        order.sort_unstable();
        self.head = None;
        self.tail = None;
        for (_, slot) in order {
            self.link_head(slot);
        }
    }
}

/// FNV-1a: a stable 64-bit hash of session ids (stable across processes, so a restored shopper
/// recognises its ongoing session).
pub(super) fn session_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trending_ring_moves_and_forgets() {
        let mut p = Product::new(Arc::from("p"), NO_CATEGORY, 3, 0);
        p.add_trend(10, 1.0);
        p.add_trend(11, 2.0);
        assert_eq!(p.trend_total(11), 3.0);
        p.add_trend(9, 4.0); // inside the window of bucket 11 (9, 10, 11)
        assert_eq!(p.trend_total(11), 7.0);
        p.add_trend(8, 8.0); // too old: ignored
        assert_eq!(p.trend_total(11), 7.0);
        assert_eq!(p.trend_total(12), 3.0, "bucket 9 left the window");
        assert_eq!(p.trend_total(14), 0.0);
        p.add_trend(13, 1.0); // buckets 12 and 13 reuse the slots of 9 and 10
        assert_eq!(p.trend_total(13), 3.0);
        p.add_trend(100, 5.0);
        assert_eq!(p.trend_total(100), 5.0);
    }

    #[test]
    fn lru_order_and_removal() {
        let mut s = Shoppers::default();
        let id = |x: &str| vec![Arc::<str>::from(x)];
        let a = s.insert(Shopper::new(id("a"), None, 1));
        let b = s.insert(Shopper::new(id("b"), None, 2));
        let c = s.insert(Shopper::new(id("c"), None, 3));
        assert_eq!((s.head, s.tail), (Some(c), Some(a)));
        s.touch(a);
        assert_eq!((s.head, s.tail), (Some(a), Some(b)));
        assert!(s.remove(b).is_some());
        assert_eq!((s.head, s.tail), (Some(a), Some(c)));
        assert_eq!(s.lookup("b"), None);
        let d = s.insert(Shopper::new(id("d"), None, 4));
        assert_eq!(d, b, "the freed slot is reused");
        assert_eq!(s.count, 3);
        s.slots[a as usize].as_mut().unwrap().last_seen = 0;
        s.sort_lru();
        assert_eq!((s.head, s.tail), (Some(d), Some(a)));
    }
}

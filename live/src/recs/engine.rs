//! The runtime: [`RecsEngine::observe`] on the stage's hot path, [`RecsEngine::recommend`] and
//! [`RecsEngine::related`] behind the HTTP endpoints, and [`RecsEngine::expire`] at checkpoints.

use std::collections::HashMap;

use shoplake_events::wire::Event;
use shoplake_events::{EventName, ValidEvent};

use super::config::{Normalization, RecsConfig};
use super::model::{
    Cat, Categories, Decay, Edge, NO_CATEGORY, Pid, Product, Products, Purchase, Shopper, Shoppers,
    View, bump, session_hash,
};
use super::{Reason, Recommendation, RecsQuery};

const SECOND: i64 = 1_000_000;

/// Trending activity of one event, per product.
const TREND_VIEW: f32 = 1.0;
const TREND_CART: f32 = 2.0;
const TREND_ORDER: f32 = 3.0;
/// Share of a product's session views in its popularity (orders count 1).
const POPULAR_VIEW_SHARE: f64 = 0.01;
/// Two purchases of a product by one shopper closer than this are one order, not a repurchase.
const MIN_REPURCHASE_GAP: i64 = 60 * SECOND;
/// How often products idle beyond their TTL are looked for (event time).
const PRODUCT_SWEEP_MICROS: i64 = 86_400 * SECOND;
/// Custom event names that carry stock levels.
const INVENTORY_EVENTS: &[&str] = &["Inventory Updated", "inventory_updated"];

/// Counts of repeat buying over a group of products (a category or the store).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct RepeatStats {
    pub buyers: f64,
    pub repeaters: f64,
    pub log_interval_sum: f64,
    pub intervals: f64,
}

impl RepeatStats {
    fn add(&mut self, p: &Product) {
        self.buyers += f64::from(p.buyers);
        self.repeaters += f64::from(p.repeaters);
        self.log_interval_sum += p.log_interval_sum;
        self.intervals += f64::from(p.intervals);
    }
}

/// What [`RecsEngine::refresh`] precomputes for serving.
#[derive(Debug, Default)]
pub(super) struct Lists {
    /// Per category (index = [`Cat`]) and overall: best first, normalised so the first scores 1.
    pub trending: Vec<Vec<Edge>>,
    pub trending_all: Vec<Edge>,
    pub popular: Vec<Vec<Edge>>,
    pub popular_all: Vec<Edge>,
    pub repeat: Vec<RepeatStats>,
    pub repeat_all: RepeatStats,
}

/// Sizes of the engine's state, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecsStats {
    pub products: usize,
    pub shoppers: usize,
    pub categories: usize,
    /// Products ignored because the engine held `max_products` when they first appeared.
    pub products_refused: u64,
    /// Refreshes of the serving lists so far.
    pub refreshes: u64,
}

/// Live recommendation state. See the module docs for what it keeps and how it answers.
pub struct RecsEngine {
    pub(super) config: RecsConfig,
    pub(super) decay: Decay,
    /// Whether any event or state was fed (the decay reference is set).
    pub(super) started: bool,
    /// Latest event time seen.
    pub(super) clock: i64,
    pub(super) products: Products,
    pub(super) categories: Categories,
    pub(super) shoppers: Shoppers,
    /// Sessions with at least one product view, and orders (decayed): `n` of the normalisations.
    pub(super) total_sessions: f64,
    pub(super) total_orders: f64,
    pub(super) globals_dirty: bool,
    /// Keys of entities deleted since the last `take_dirty`.
    pub(super) deleted: Vec<String>,
    pub(super) lists: Lists,
    pub(super) needs_refresh: bool,
    /// An event was observed since the last refresh.
    pub(super) changed: bool,
    pub(super) next_refresh: i64,
    pub(super) next_product_sweep: i64,
    /// The shoppers' LRU list is in restore order, not recency order.
    pub(super) lru_unsorted: bool,
    pub(super) products_refused: u64,
    pub(super) refreshes: u64,
    /// Co-occurrences and the counts behind them (sessions, orders) up to this event time came
    /// from [`RecsEngine::seed`]: events up to it feed everything else only.
    pub(super) history_until: i64,
}

impl std::fmt::Debug for RecsEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecsEngine")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Candidates of one answer, with their score per reason.
struct Candidates {
    at: HashMap<Pid, usize>,
    items: Vec<(Pid, [f64; Reason::COUNT])>,
}

impl Candidates {
    fn new() -> Self {
        Candidates {
            at: HashMap::with_capacity(128),
            items: Vec::with_capacity(128),
        }
    }

    fn add(&mut self, pid: Pid, score: f64, reason: Reason) {
        if score.is_nan() || score <= 0.0 {
            return;
        }
        let i = *self.at.entry(pid).or_insert_with(|| {
            self.items.push((pid, [0.0; Reason::COUNT]));
            self.items.len() - 1
        });
        self.items[i].1[reason as usize] += score;
    }

    fn add_list(&mut self, list: &[Edge], weight: f64, reason: Reason) {
        for &(pid, s) in list {
            self.add(pid, weight * f64::from(s), reason);
        }
    }

    /// Best first (ties by product id): (pid, total score, main reason).
    fn ranked(self, products: &Products) -> Vec<(Pid, f64, Reason)> {
        let mut out: Vec<(Pid, f64, Reason)> = self
            .items
            .into_iter()
            .map(|(pid, parts)| {
                let total: f64 = parts.iter().sum();
                let mut best = 0;
                for (i, v) in parts.iter().enumerate() {
                    if *v > parts[best] {
                        best = i;
                    }
                }
                (pid, total, Reason::ALL[best])
            })
            .collect();
        out.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then_with(|| by_id(products, a.0, b.0)));
        out
    }
}

impl RecsEngine {
    pub fn new(config: RecsConfig) -> Self {
        let config = config.sanitized();
        RecsEngine {
            decay: Decay {
                t_ref: 0,
                half_life_micros: config.half_life.as_secs_f64() * 1e6,
            },
            config,
            started: false,
            clock: i64::MIN,
            products: Products::default(),
            categories: Categories::default(),
            shoppers: Shoppers::default(),
            total_sessions: 0.0,
            total_orders: 0.0,
            globals_dirty: false,
            deleted: Vec::new(),
            lists: Lists::default(),
            needs_refresh: true,
            changed: false,
            next_refresh: i64::MIN,
            next_product_sweep: i64::MIN,
            lru_unsorted: false,
            products_refused: 0,
            refreshes: 0,
            history_until: i64::MIN,
        }
    }

    pub fn config(&self) -> &RecsConfig {
        &self.config
    }

    pub fn stats(&self) -> RecsStats {
        RecsStats {
            products: self.products.len(),
            shoppers: self.shoppers.count,
            categories: self.categories.names.len(),
            products_refused: self.products_refused,
            refreshes: self.refreshes,
        }
    }

    /// Feeds one valid, de-duplicated, non-bot event; `session_id` is the stage's (client or
    /// inferred) session.
    ///
    /// Uses product views, clicks, cart and wishlist adds (recently viewed, viewed together,
    /// trending), cart removals, orders (bought together, popularity, buy again, exclusions), any event carrying
    /// both ids and `identify` / `alias` (identity links), and custom "Inventory Updated" events
    /// (stock). Everything else returns at once.
    pub fn observe(&mut self, event: &ValidEvent<'_>, session_id: &str) {
        let t = event.event_time;
        let e = &event.event;
        self.advance(t);
        self.changed = true;
        match event.name {
            EventName::ProductViewed
            | EventName::ProductClicked
            | EventName::WishlistProductAdded => self.on_view(e, t, session_id, false),
            EventName::ProductAdded => self.on_view(e, t, session_id, true),
            EventName::ProductRemoved => self.on_cart_removal(e, t),
            EventName::OrderCompleted => self.on_order(e, t),
            EventName::Custom => {
                if e.custom_event_name
                    .as_deref()
                    .is_some_and(|n| INVENTORY_EVENTS.iter().any(|i| i.eq_ignore_ascii_case(n)))
                {
                    self.on_inventory(e, t);
                }
            }
            _ => {
                if e.user_id.is_some() && e.anonymous_id.is_some() {
                    self.resolve(e, false, t);
                }
            }
        }
        if self.needs_refresh || t >= self.next_refresh {
            self.refresh();
        }
    }

    /// Moves the clock and sets or rescales the decay reference.
    fn advance(&mut self, t: i64) {
        if !self.started {
            self.started = true;
            self.decay.t_ref = t;
            self.globals_dirty = true;
        }
        if t > self.clock {
            self.clock = t;
            self.globals_dirty = true;
        }
        if self.decay.exponent(self.clock) > Decay::MAX_EXPONENT {
            self.rescale();
        }
    }

    /// Moves the decay reference to the present and scales every stored count to match.
    fn rescale(&mut self) {
        let shift = self.decay.exponent(self.clock).floor();
        let factor = (-shift).exp2();
        self.decay.t_ref += (shift * self.decay.half_life_micros) as i64;
        let dirty: Vec<Pid> = self.products.iter().map(|(pid, _)| pid).collect();
        for pid in dirty {
            if let Some(p) = self.products.get_mut(pid) {
                p.view_sessions *= factor;
                p.orders *= factor;
                for e in p.viewed.iter_mut().chain(p.bought.iter_mut()) {
                    e.1 = (f64::from(e.1) * factor) as f32;
                }
            }
            self.products.mark_dirty(pid);
        }
        self.total_sessions *= factor;
        self.total_orders *= factor;
        self.globals_dirty = true;
    }

    fn bucket(&self, t: i64) -> i64 {
        t.div_euclid(self.config.trending_bucket.as_secs().max(1) as i64 * SECOND)
    }

    /// The product's slot, created (with its category) when there is room.
    fn intern_product(&mut self, id: &str, category: Option<&str>, t: i64) -> Option<Pid> {
        let pid = match self.products.lookup(id) {
            Some(pid) => pid,
            None => {
                let Some(pid) = self.products.intern(
                    id,
                    self.config.max_products,
                    self.config.trending_buckets,
                    t,
                ) else {
                    self.products_refused += 1;
                    return None;
                };
                self.products.mark_dirty(pid);
                pid
            }
        };
        if let Some(name) = category.filter(|c| !c.is_empty())
            && self
                .products
                .get(pid)
                .is_some_and(|p| p.category == NO_CATEGORY)
        {
            let cat = self.categories.intern(name, self.config.max_categories);
            if let Some(p) = self.products.get_mut(pid) {
                p.category = cat;
            }
            self.products.mark_dirty(pid);
        }
        Some(pid)
    }

    /// The shopper of an event, linking its anonymous id and user id. A shopper is created only
    /// when `create` (events with products); otherwise only known shoppers are linked.
    ///
    /// Every id names one shopper at most, and a shopper's first id (its stored key) always names
    /// it: ids join a shopper (or a whole anonymous shopper folds into a user's) and leave it only
    /// when it holds `ids_per_shopper`, which drops its oldest anonymous id other than the key.
    fn resolve(&mut self, e: &Event<'_>, create: bool, t: i64) -> Option<u32> {
        let anon = e.anonymous_id.as_deref();
        let user = e.user_id.as_deref();
        let by_user = user.and_then(|u| self.shoppers.lookup(u));
        let by_anon = anon.and_then(|a| self.shoppers.lookup(a));
        let slot = match (by_user, by_anon) {
            (Some(u), Some(a)) if u == a => u,
            (Some(u), Some(a)) => {
                // A device shared by two accounts keeps its anonymous id with the first; each
                // user's own events count for that user.
                if self.shoppers.get(a).is_some_and(|s| s.user.is_none()) {
                    self.merge(a, u);
                }
                u
            }
            (Some(u), None) => {
                if let Some(id) = anon {
                    self.add_id(u, id, false);
                }
                u
            }
            (None, Some(a)) => match user {
                None => a,
                Some(uid) => {
                    if self.shoppers.get(a).is_some_and(|s| s.user.is_none()) {
                        self.add_id(a, uid, true);
                        a
                    } else {
                        self.create_shopper(uid, None, true, t)
                    }
                }
            },
            (None, None) => {
                if !create {
                    return None;
                }
                match (user, anon) {
                    (Some(u), a) => self.create_shopper(u, a, true, t),
                    (None, Some(a)) => self.create_shopper(a, None, false, t),
                    (None, None) => return None,
                }
            }
        };
        self.shoppers.touch(slot);
        if let Some(s) = self.shoppers.get_mut(slot) {
            s.last_seen = s.last_seen.max(t);
        }
        self.shoppers.mark_dirty(slot);
        Some(slot)
    }

    fn create_shopper(&mut self, key: &str, other: Option<&str>, is_user: bool, t: i64) -> u32 {
        if self.lru_unsorted {
            self.shoppers.sort_lru();
            self.lru_unsorted = false;
        }
        while self.shoppers.count >= self.config.max_shoppers {
            let Some(tail) = self.shoppers.tail else {
                break;
            };
            self.evict_shopper(tail);
        }
        let key: std::sync::Arc<str> = key.into();
        let mut ids = vec![key.clone()];
        if let Some(o) = other {
            ids.push(o.into());
        }
        let slot = self
            .shoppers
            .insert(Shopper::new(ids, is_user.then_some(key.clone()), t));
        self.shoppers.mark_dirty(slot);
        slot
    }

    fn evict_shopper(&mut self, slot: u32) {
        if let Some(s) = self.shoppers.remove(slot) {
            self.deleted.push(format!("s/{}", s.key()));
        }
    }

    /// Adds an id to a shopper, dropping its oldest anonymous id beyond the cap.
    fn add_id(&mut self, slot: u32, id: &str, is_user: bool) {
        let cap = self.config.ids_per_shopper;
        let id: std::sync::Arc<str> = id.into();
        let mut dropped = None;
        if let Some(s) = self.shoppers.get_mut(slot) {
            if s.ids.len() >= cap
                && let Some(i) = (1..s.ids.len()).find(|&i| s.user.as_ref() != Some(&s.ids[i]))
            {
                dropped = Some(s.ids.remove(i));
            }
            s.ids.push(id.clone());
            if is_user {
                s.user = Some(id.clone());
            }
        }
        if let Some(old) = dropped
            && self.shoppers.index.get(&*old) == Some(&slot)
        {
            self.shoppers.index.remove(&*old);
        }
        self.shoppers.index.insert(id, slot);
        self.shoppers.mark_dirty(slot);
    }

    /// Folds shopper `from` (anonymous) into `into`: its history counts for `into` from now on.
    fn merge(&mut self, from: u32, into: u32) {
        let Some(old) = self.shoppers.remove(from) else {
            return;
        };
        self.deleted.push(format!("s/{}", old.key()));
        for id in &old.ids {
            self.add_id(into, id, false);
        }
        let cfg = &self.config;
        let Some(s) = self.shoppers.get_mut(into) else {
            return;
        };
        let mut views = std::mem::take(&mut s.views);
        views.extend(old.views);
        views.sort_by_key(|v| std::cmp::Reverse(v.at));
        let mut merged: Vec<View> = Vec::with_capacity(cfg.recently_viewed);
        for v in views {
            match merged.iter().position(|m| m.pid == v.pid) {
                Some(i) => merged[i].carted |= v.carted,
                None if merged.len() < cfg.recently_viewed => merged.push(v),
                None => {}
            }
        }
        s.views = merged;
        for b in old.bought {
            match s.bought.iter_mut().find(|x| x.pid == b.pid) {
                Some(x) => {
                    x.last = x.last.max(b.last);
                    x.orders += b.orders;
                }
                None => s.bought.push(b),
            }
        }
        s.bought.sort_by_key(|b| b.last);
        let excess = s.bought.len().saturating_sub(cfg.purchases_per_shopper);
        s.bought.drain(..excess);
        if old.last_seen > s.last_seen {
            s.session = old.session;
            s.session_items = old.session_items;
        }
        s.last_seen = s.last_seen.max(old.last_seen);
        self.shoppers.mark_dirty(into);
    }

    fn on_view(&mut self, e: &Event<'_>, t: i64, session_id: &str, carted: bool) {
        let Some(product) = e
            .properties
            .as_ref()
            .and_then(|p| p.products.as_deref())
            .and_then(|p| p.first())
        else {
            return;
        };
        let Some(id) = product.product_id.as_deref() else {
            return;
        };
        let Some(pid) = self.intern_product(id, product.category.as_deref(), t) else {
            return;
        };
        let bucket = self.bucket(t);
        if let Some(p) = self.products.get_mut(pid) {
            p.last_seen = p.last_seen.max(t);
            p.add_trend(bucket, if carted { TREND_CART } else { TREND_VIEW });
        }
        self.products.mark_dirty(pid);
        let Some(slot) = self.resolve(e, true, t) else {
            return;
        };
        let w = self.decay.weight(t);
        let session = session_hash(session_id);
        let cfg = &self.config;
        let Some(s) = self
            .shoppers
            .slots
            .get_mut(slot as usize)
            .and_then(|s| s.as_mut())
        else {
            return;
        };
        if s.session != session {
            s.session = session;
            s.session_items.clear();
        }
        if !s.session_items.contains(&pid) {
            // Seeded history already counts this view: it only joins the session's products.
            let counted = t > self.history_until;
            if counted && s.session_items.is_empty() {
                self.total_sessions += w;
                self.globals_dirty = true;
            }
            if counted && let Some(p) = self.products.get_mut(pid) {
                p.view_sessions += w;
            }
            let mut grown = Vec::new();
            let partners: &[Pid] = if counted { &s.session_items } else { &[] };
            for &q in partners {
                for (a, b) in [(pid, q), (q, pid)] {
                    if let Some(p) = self.products.get_mut(a) {
                        if bump(&mut p.viewed, b, w as f32) && p.viewed.len() > 2 * cfg.neighbours {
                            grown.push(a);
                        }
                        self.products.mark_dirty(a);
                        self.products.mark_stale(a);
                    }
                }
            }
            s.session_items.push(pid);
            if s.session_items.len() > cfg.session_window {
                s.session_items.remove(0);
            }
            for a in grown {
                self.prune(a, false);
            }
        }
        let Some(s) = self.shoppers.get_mut(slot) else {
            return;
        };
        let carted = match s.views.iter().position(|v| v.pid == pid) {
            Some(i) => s.views.remove(i).carted || carted,
            None => carted,
        };
        s.views.insert(0, View { pid, at: t, carted });
        s.views.truncate(self.config.recently_viewed);
    }

    /// A product taken out of the cart is only viewed again.
    fn on_cart_removal(&mut self, e: &Event<'_>, t: i64) {
        let pid = e
            .properties
            .as_ref()
            .and_then(|p| p.products.as_deref())
            .and_then(|p| p.first())
            .and_then(|p| p.product_id.as_deref())
            .and_then(|id| self.products.lookup(id));
        let Some(pid) = pid else {
            return;
        };
        let Some(slot) = self.resolve(e, false, t) else {
            return;
        };
        if let Some(v) = self
            .shoppers
            .get_mut(slot)
            .and_then(|s| s.views.iter_mut().find(|v| v.pid == pid))
        {
            v.carted = false;
        }
    }

    fn on_order(&mut self, e: &Event<'_>, t: i64) {
        let Some(lines) = e.properties.as_ref().and_then(|p| p.products.as_deref()) else {
            return;
        };
        let mut pids: Vec<Pid> = Vec::with_capacity(lines.len());
        for line in lines {
            if let Some(id) = line.product_id.as_deref()
                && let Some(pid) = self.intern_product(id, line.category.as_deref(), t)
                && !pids.contains(&pid)
            {
                pids.push(pid);
            }
        }
        if pids.is_empty() {
            return;
        }
        let w = self.decay.weight(t);
        let bucket = self.bucket(t);
        // Seeded history already counts this order's co-occurrences and popularity.
        let counted = t > self.history_until;
        for &pid in &pids {
            if let Some(p) = self.products.get_mut(pid) {
                if counted {
                    p.orders += w;
                }
                p.last_seen = p.last_seen.max(t);
                p.add_trend(bucket, TREND_ORDER);
            }
            self.products.mark_dirty(pid);
        }
        let paired = if counted {
            &pids[..pids.len().min(self.config.order_pair_limit)]
        } else {
            &[]
        };
        let mut grown = Vec::new();
        for (i, &a) in paired.iter().enumerate() {
            for (j, &b) in paired.iter().enumerate() {
                if i != j
                    && let Some(p) = self.products.get_mut(a)
                {
                    if bump(&mut p.bought, b, w as f32)
                        && p.bought.len() > 2 * self.config.neighbours
                    {
                        grown.push(a);
                    }
                    self.products.mark_stale(a);
                }
            }
        }
        for a in grown {
            self.prune(a, true);
        }
        if counted {
            self.total_orders += w;
            self.globals_dirty = true;
        }

        let Some(slot) = self.resolve(e, true, t) else {
            return;
        };
        let cap = self.config.purchases_per_shopper;
        let Some(s) = self
            .shoppers
            .slots
            .get_mut(slot as usize)
            .and_then(|s| s.as_mut())
        else {
            return;
        };
        for &pid in &pids {
            let Some(p) = self.products.get_mut(pid) else {
                continue;
            };
            match s.bought.iter().position(|b| b.pid == pid) {
                Some(i) => {
                    let mut b = s.bought.remove(i);
                    if t - b.last >= MIN_REPURCHASE_GAP {
                        let secs = ((t - b.last) as f64 / 1e6).max(1.0);
                        p.log_interval_sum += secs.ln();
                        p.intervals += 1;
                        if b.orders == 1 {
                            p.repeaters += 1;
                        }
                        b.orders += 1;
                    }
                    b.last = b.last.max(t);
                    s.bought.push(b);
                }
                None => {
                    p.buyers += 1;
                    s.bought.push(Purchase {
                        pid,
                        last: t,
                        orders: 1,
                    });
                }
            }
        }
        let excess = s.bought.len().saturating_sub(cap);
        s.bought.drain(..excess);
    }

    fn on_inventory(&mut self, e: &Event<'_>, t: i64) {
        let Some(lines) = e.properties.as_ref().and_then(|p| p.products.as_deref()) else {
            return;
        };
        for line in lines {
            if let (Some(id), Some(quantity)) = (line.product_id.as_deref(), line.quantity)
                && let Some(pid) = self.intern_product(id, line.category.as_deref(), t)
            {
                self.set_stock(pid, quantity > 0);
            }
        }
    }

    /// Marks a product in or out of stock (creating it when unknown and there is room).
    pub fn set_in_stock(&mut self, product_id: &str, in_stock: bool) {
        let now = if self.started { self.clock } else { 0 };
        if let Some(pid) = self.intern_product(product_id, None, now) {
            self.set_stock(pid, in_stock);
        }
    }

    fn set_stock(&mut self, pid: Pid, in_stock: bool) {
        if let Some(p) = self.products.get_mut(pid)
            && p.in_stock != in_stock
        {
            p.in_stock = in_stock;
            self.products.mark_dirty(pid);
        }
    }

    pub fn knows_product(&self, product_id: &str) -> bool {
        self.products.lookup(product_id).is_some()
    }

    /// Entities the engine holds (what `take_dirty` may write): products, shoppers and the
    /// globals.
    pub fn entities(&self) -> usize {
        self.products.len() + self.shoppers.count + usize::from(self.started)
    }

    pub fn knows_shopper(&self, shopper: &str) -> bool {
        self.shoppers.lookup(shopper).is_some()
    }

    /// Normalised score of a co-occurrence, from effective (present-scale) counts.
    fn pair_score(&self, c_ij: f64, c_i: f64, c_j: f64, n: f64) -> f64 {
        if c_ij <= 0.0 || c_i <= 0.0 || c_j <= 0.0 {
            return 0.0;
        }
        let base = match self.config.normalization {
            Normalization::Cosine => c_ij / (c_i * c_j).sqrt(),
            Normalization::Lift => c_ij * n / (c_i * c_j),
            Normalization::Pmi => (c_ij * n / (c_i * c_j)).ln().max(0.0),
            Normalization::Raw => c_ij,
        };
        base * c_ij / (c_ij + self.config.shrinkage)
    }

    /// Scores of a product's raw list of one kind.
    pub(super) fn edge_scores(&self, pid: Pid, bought: bool) -> Vec<Edge> {
        let Some(p) = self.products.get(pid) else {
            return Vec::new();
        };
        let scale = self.decay.weight(self.clock);
        let (list, c_i, n) = if bought {
            (&p.bought, p.orders, self.total_orders)
        } else {
            (&p.viewed, p.view_sessions, self.total_sessions)
        };
        list.iter()
            .map(|&(j, c_ij)| {
                let c_j = self
                    .products
                    .get(j)
                    .map_or(0.0, |q| if bought { q.orders } else { q.view_sessions });
                let s =
                    self.pair_score(f64::from(c_ij) / scale, c_i / scale, c_j / scale, n / scale);
                (j, s as f32)
            })
            .collect()
    }

    /// Keeps the strongest `neighbours` edges (by score) of a raw list.
    fn prune(&mut self, pid: Pid, bought: bool) {
        let mut scored = self.edge_scores(pid, bought);
        let keep = self.config.neighbours;
        if scored.len() <= keep {
            return;
        }
        scored.select_nth_unstable_by(keep, |a, b| best_first(&self.products, a, b));
        scored.truncate(keep);
        let kept: Vec<Pid> = scored.iter().map(|e| e.0).collect();
        if let Some(p) = self.products.get_mut(pid) {
            let list = if bought { &mut p.bought } else { &mut p.viewed };
            list.retain(|e| kept.contains(&e.0));
        }
    }

    /// The serving list of one kind: best first, normalised so that the first scores 1.
    fn serving_list(&self, pid: Pid, bought: bool) -> Vec<Edge> {
        let mut scored = self.edge_scores(pid, bought);
        scored.retain(|e| e.1 > 0.0);
        let n = self.config.serve_neighbours;
        if scored.len() > n {
            scored.select_nth_unstable_by(n, |a, b| best_first(&self.products, a, b));
            scored.truncate(n);
        }
        scored.sort_unstable_by(|a, b| best_first(&self.products, a, b));
        normalise(&mut scored);
        scored
    }

    /// Loads item-to-item history (the lake's `product_affinity`): co-occurrence counts and the
    /// session and order counts behind them, as of `affinity.as_of`. From then on, events up to
    /// `as_of` (a replay of the lake's recent days) feed everything but those counts, so nothing
    /// is counted twice. Returns the pairs loaded. Call before feeding events; the serving lists
    /// are rebuilt at the next refresh.
    ///
    /// Counts decayed with another half-life than the engine's are loaded as they are (the
    /// difference fades as the stream adds its own); the caller is told by the returned
    /// [`Affinity::half_life_hours`].
    pub fn seed(&mut self, affinity: &super::Affinity) -> usize {
        if affinity.pairs.is_empty() {
            return 0;
        }
        self.advance(affinity.as_of);
        let scale = self.decay.weight(affinity.as_of);
        self.total_sessions += affinity.sessions * scale;
        self.total_orders += affinity.orders * scale;
        self.globals_dirty = true;
        let mut counted: std::collections::HashSet<(Pid, bool)> = Default::default();
        let mut loaded = 0;
        let mut grown = Vec::new();
        for pair in &affinity.pairs {
            let (Some(a), Some(b)) = (
                self.intern_product(&pair.product, None, affinity.as_of),
                self.intern_product(&pair.related, None, affinity.as_of),
            ) else {
                continue;
            };
            for (pid, count) in [(a, pair.product_count), (b, pair.related_count)] {
                if counted.insert((pid, pair.bought))
                    && let Some(p) = self.products.get_mut(pid)
                {
                    if pair.bought {
                        p.orders += count * scale;
                    } else {
                        p.view_sessions += count * scale;
                    }
                }
            }
            if let Some(p) = self.products.get_mut(a) {
                let list = if pair.bought {
                    &mut p.bought
                } else {
                    &mut p.viewed
                };
                if bump(list, b, (pair.together * scale) as f32)
                    && list.len() > 2 * self.config.neighbours
                {
                    grown.push((a, pair.bought));
                }
                loaded += 1;
            }
            self.products.mark_dirty(a);
            self.products.mark_stale(a);
        }
        for (pid, bought) in grown {
            self.prune(pid, bought);
        }
        self.history_until = self.history_until.max(affinity.as_of);
        self.needs_refresh = true;
        loaded
    }

    /// Recomputes what serving reads, as of the latest event time: stale products' neighbour
    /// lists, trending and popular lists, repeat-buying statistics. `observe` runs it every
    /// `refresh` of event time and `expire` each time; call it after restoring, before
    /// serving.
    pub fn refresh(&mut self) {
        self.refreshes += 1;
        self.needs_refresh = false;
        self.changed = false;
        self.next_refresh = self
            .clock
            .saturating_add(self.config.refresh.as_micros() as i64);
        for pid in std::mem::take(&mut self.products.stale) {
            if !self.products.get(pid).is_some_and(|p| p.stale) {
                continue;
            }
            let viewed = self.serving_list(pid, false);
            let bought = self.serving_list(pid, true);
            if let Some(p) = self.products.get_mut(pid) {
                p.serve_viewed = viewed;
                p.serve_bought = bought;
                p.stale = false;
            }
            self.products.mark_dirty(pid);
        }
        let cats = self.categories.names.len();
        let now_bucket = self.bucket(self.clock);
        let scale = self.decay.weight(self.clock);
        let mut trending: Vec<Vec<Edge>> = vec![Vec::new(); cats];
        let mut popular: Vec<Vec<Edge>> = vec![Vec::new(); cats];
        let mut trending_all = Vec::new();
        let mut popular_all = Vec::new();
        // Products without any activity yet (known from stock updates only): popular last.
        let mut idle = Vec::new();
        let mut repeat = vec![RepeatStats::default(); cats];
        let mut repeat_all = RepeatStats::default();
        for (pid, p) in self.products.iter() {
            let trend = p.trend_total(now_bucket);
            let pop = ((p.orders + POPULAR_VIEW_SHARE * p.view_sessions) / scale) as f32;
            if trend > 0.0 {
                trending_all.push((pid, trend));
            }
            if pop > 0.0 {
                popular_all.push((pid, pop));
            } else {
                idle.push((pid, 0.0));
            }
            repeat_all.add(p);
            if let Some(c) = (p.category != NO_CATEGORY).then_some(usize::from(p.category))
                && c < cats
            {
                if trend > 0.0 {
                    trending[c].push((pid, trend));
                }
                if pop > 0.0 {
                    popular[c].push((pid, pop));
                }
                repeat[c].add(p);
            }
        }
        let n = self.config.list_len;
        for list in trending
            .iter_mut()
            .chain(popular.iter_mut())
            .chain([&mut trending_all, &mut popular_all])
        {
            top_n(list, n, &self.products);
        }
        if popular_all.len() < n && !idle.is_empty() {
            top_n(&mut idle, n - popular_all.len(), &self.products);
            popular_all.extend(idle);
        }
        self.lists = Lists {
            trending,
            trending_all,
            popular,
            popular_all,
            repeat,
            repeat_all,
        };
    }

    /// Refreshes when anything was observed since the last refresh; true when it did. The stage
    /// calls it at each checkpoint: `observe` refreshes only when event time passes the next
    /// refresh, and the stage reads its shards in turn, so the events of the last shard read can
    /// be older than the clock and would otherwise leave lists stale until later events come.
    pub fn refresh_if_changed(&mut self) -> bool {
        if !self.changed && self.products.stale.is_empty() {
            return false;
        }
        self.refresh();
        true
    }

    /// Forgets shoppers idle beyond their TTL, products idle beyond theirs (checked once a day of
    /// event time) or beyond the cap, and refreshes the serving lists. Call at each checkpoint.
    pub fn expire(&mut self, now_micros: i64) {
        if !self.started {
            return;
        }
        self.advance(now_micros);
        let now = self.clock;
        if self.lru_unsorted {
            self.shoppers.sort_lru();
            self.lru_unsorted = false;
        }
        let cutoff = now.saturating_sub(self.config.shopper_ttl.as_micros() as i64);
        while let Some(tail) = self.shoppers.tail {
            if self
                .shoppers
                .get(tail)
                .is_some_and(|s| s.last_seen < cutoff)
            {
                self.evict_shopper(tail);
            } else {
                break;
            }
        }
        let full = self.products.len() >= self.config.max_products;
        if full || now >= self.next_product_sweep {
            self.next_product_sweep = now.saturating_add(PRODUCT_SWEEP_MICROS);
            self.sweep_products(now, full);
        }
        self.refresh();
    }

    /// Evicts idle products, and the least recently seen down to 90% of the cap when `full`,
    /// then removes every reference to them.
    fn sweep_products(&mut self, now: i64, full: bool) {
        let cutoff = now.saturating_sub(self.config.product_ttl.as_micros() as i64);
        let mut by_age: Vec<(i64, Pid)> = self
            .products
            .iter()
            .map(|(pid, p)| (p.last_seen, pid))
            .collect();
        let mut evict: Vec<Pid> = by_age
            .iter()
            .filter(|(seen, _)| *seen < cutoff)
            .map(|(_, pid)| *pid)
            .collect();
        if full {
            let target = self.config.max_products - self.config.max_products / 10;
            let over = by_age.len().saturating_sub(target);
            if over > 0 {
                by_age.select_nth_unstable(over - 1);
                evict = by_age[..over].iter().map(|(_, pid)| *pid).collect();
                evict.extend(
                    by_age[over..]
                        .iter()
                        .filter(|(seen, _)| *seen < cutoff)
                        .map(|(_, pid)| *pid),
                );
            }
        }
        if evict.is_empty() {
            return;
        }
        let mut gone = vec![false; self.products.slots.len()];
        for &pid in &evict {
            if let Some(p) = self.products.remove(pid) {
                gone[pid as usize] = true;
                self.deleted.push(format!("p/{}", p.id));
            }
        }
        let is_gone = |pid: Pid| gone.get(pid as usize).copied().unwrap_or(false);
        let live: Vec<Pid> = self.products.iter().map(|(pid, _)| pid).collect();
        for pid in live {
            let Some(p) = self.products.get_mut(pid) else {
                continue;
            };
            let before = p.viewed.len() + p.bought.len();
            p.viewed.retain(|e| !is_gone(e.0));
            p.bought.retain(|e| !is_gone(e.0));
            p.serve_viewed.retain(|e| !is_gone(e.0));
            p.serve_bought.retain(|e| !is_gone(e.0));
            if p.viewed.len() + p.bought.len() != before {
                self.products.mark_dirty(pid);
                self.products.mark_stale(pid);
            }
        }
        for slot in 0..self.shoppers.slots.len() as u32 {
            let Some(s) = self.shoppers.get_mut(slot) else {
                continue;
            };
            let before = s.views.len() + s.bought.len() + s.session_items.len();
            s.views.retain(|v| !is_gone(v.pid));
            s.bought.retain(|b| !is_gone(b.pid));
            s.session_items.retain(|p| !is_gone(*p));
            if s.views.len() + s.bought.len() + s.session_items.len() != before {
                self.shoppers.mark_dirty(slot);
            }
        }
    }

    /// Repurchase rate of a product, shrunk toward its category's and the store's, and whether it
    /// is a buy-again product; and its typical repurchase interval in microseconds.
    fn repurchase(&self, p: &Product) -> Option<(f64, f64)> {
        let all = &self.lists.repeat_all;
        if all.buyers <= 0.0 || all.repeaters <= 0.0 || all.intervals <= 0.0 {
            return None;
        }
        let a = self.config.buy_again_prior;
        let cat = self
            .lists
            .repeat
            .get(usize::from(p.category))
            .copied()
            .unwrap_or_default();
        let r_all = all.repeaters / all.buyers;
        let r_cat = (cat.repeaters + a * r_all) / (cat.buyers + a);
        let r = (f64::from(p.repeaters) + a * r_cat) / (f64::from(p.buyers) + a);
        if r < self.config.buy_again_min_lift * r_all {
            return None;
        }
        let l_all = all.log_interval_sum / all.intervals;
        let l_cat = (cat.log_interval_sum + a * l_all) / (cat.intervals + a);
        let l = (p.log_interval_sum + a * l_cat) / (f64::from(p.intervals) + a);
        Some((r, l.exp() * 1e6))
    }

    /// Whether a purchase is a buy-again product that is due at `now`: its repurchase rate.
    fn due(&self, b: &Purchase, now: i64) -> Option<f64> {
        let p = self.products.get(b.pid)?;
        let (rate, interval) = self.repurchase(p)?;
        ((now - b.last) as f64 >= self.config.buy_again_due_fraction * interval).then_some(rate)
    }

    /// Products `recommend` must not return for this shopper: bought within the exclusion window
    /// and not due for buying again. Sorted.
    fn blocked(&self, shopper: Option<&Shopper>, now: i64) -> Vec<Pid> {
        let Some(s) = shopper else {
            return Vec::new();
        };
        let window = self.config.exclude_bought.as_micros() as i64;
        let mut out: Vec<Pid> = s
            .bought
            .iter()
            .filter(|b| now - b.last < window && self.due(b, now).is_none())
            .map(|b| b.pid)
            .collect();
        out.sort_unstable();
        out
    }

    /// Whether `recommend` would leave this product out for this shopper: out of stock, or
    /// bought within the exclusion window and not a buy-again product that is due.
    pub fn is_excluded(&self, shopper: &str, product_id: &str, now_micros: i64) -> bool {
        let Some(pid) = self.products.lookup(product_id) else {
            return false;
        };
        if self.products.get(pid).is_some_and(|p| !p.in_stock) {
            return true;
        }
        let s = self
            .shoppers
            .lookup(shopper)
            .and_then(|s| self.shoppers.get(s));
        self.blocked(s, now_micros).binary_search(&pid).is_ok()
    }

    /// Up to `k` products for a shopper (user id or anonymous id), best first. `now_micros` is
    /// event time (the stage's latest).
    pub fn recommend(
        &self,
        shopper: &str,
        query: &RecsQuery<'_>,
        now_micros: i64,
    ) -> Vec<Recommendation> {
        if query.k == 0 {
            return Vec::new();
        }
        let category = match query.category {
            Some(name) => match self.categories.lookup(name) {
                Some(c) => Some(c),
                None => return Vec::new(),
            },
            None => None,
        };
        let w = &self.config.weights;
        let context = query.context_product.and_then(|p| self.products.lookup(p));
        let s = self
            .shoppers
            .lookup(shopper)
            .and_then(|s| self.shoppers.get(s));
        let mut blocked = self.blocked(s, now_micros);
        let mut c = Candidates::new();
        if let Some(ctx) = context {
            self.add_neighbours(&mut c, ctx, w.context, true);
            blocked.push(ctx);
            blocked.sort_unstable();
        }
        if let Some(s) = s {
            let mut seed_w = w.recent_seed;
            let half_life = (w.recency_half_life.as_secs_f64() * 1e6).max(1.0);
            for (i, v) in s.views.iter().enumerate() {
                let age = (now_micros - v.at).max(0) as f64;
                let recency = (-age / half_life).exp2();
                if i < self.config.seeds {
                    self.add_neighbours(&mut c, v.pid, seed_w * recency, true);
                    seed_w *= w.seed_decay;
                }
                let cart = if v.carted { w.cart_factor } else { 1.0 };
                c.add(
                    v.pid,
                    w.recently_viewed * cart * recency,
                    Reason::RecentlyViewed,
                );
            }
            for b in s.bought.iter().rev().take(3) {
                self.add_neighbours(&mut c, b.pid, w.purchase_seed, false);
            }
            let due: Vec<(Pid, f64)> = s
                .bought
                .iter()
                .filter_map(|b| self.due(b, now_micros).map(|r| (b.pid, r)))
                .collect();
            let best = due.iter().map(|d| d.1).fold(0.0, f64::max);
            for (pid, rate) in due {
                c.add(pid, w.buy_again * rate / best, Reason::BuyAgain);
            }
            for (cat, share) in self.favourite_categories(s) {
                if let Some(list) = self.lists.trending.get(usize::from(cat)) {
                    for &(pid, score) in list.iter().take(query.k) {
                        c.add(pid, w.trending * share * f64::from(score), Reason::Trending);
                    }
                }
            }
        }
        let mut out: Vec<Recommendation> = Vec::with_capacity(query.k);
        let mut chosen: Vec<Pid> = Vec::with_capacity(query.k);
        for (pid, score, reason) in c.ranked(&self.products) {
            if out.len() == query.k {
                break;
            }
            if self.servable(pid, category, &blocked) {
                out.push(self.recommendation(pid, score, reason));
                chosen.push(pid);
            }
        }
        self.fill(&mut out, &mut chosen, query.k, category, &blocked);
        out
    }

    /// Up to `k` products related to `product_id`, best first; trending/popular with that reason
    /// when the product is unknown or has too few neighbours.
    pub fn related(&self, product_id: &str, k: usize, _now_micros: i64) -> Vec<Recommendation> {
        if k == 0 {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(k);
        let mut chosen = Vec::with_capacity(k);
        let Some(pid) = self.products.lookup(product_id) else {
            self.fill(&mut out, &mut chosen, k, None, &[]);
            return out;
        };
        let blocked = [pid];
        let mut c = Candidates::new();
        self.add_neighbours(&mut c, pid, 1.0, true);
        for (q, score, reason) in c.ranked(&self.products) {
            if out.len() == k {
                break;
            }
            if self.servable(q, None, &blocked) {
                out.push(self.recommendation(q, score, reason));
                chosen.push(q);
            }
        }
        let cat = self
            .products
            .get(pid)
            .map(|p| p.category)
            .filter(|c| *c != NO_CATEGORY);
        if let Some(cat) = cat {
            self.fill_from(
                &mut out,
                &mut chosen,
                k,
                None,
                &blocked,
                Source::Trending(Some(cat)),
            );
            self.fill_from(
                &mut out,
                &mut chosen,
                k,
                None,
                &blocked,
                Source::Popular(Some(cat)),
            );
        }
        self.fill(&mut out, &mut chosen, k, None, &blocked);
        out
    }

    fn add_neighbours(&self, c: &mut Candidates, pid: Pid, weight: f64, viewed_too: bool) {
        let Some(p) = self.products.get(pid) else {
            return;
        };
        let w = &self.config.weights;
        c.add_list(
            &p.serve_bought,
            weight * w.bought_together,
            Reason::BoughtTogether,
        );
        if viewed_too {
            c.add_list(
                &p.serve_viewed,
                weight * w.viewed_together,
                Reason::ViewedTogether,
            );
        }
    }

    /// The categories of the shopper's recent views and purchases, with their shares (top two).
    fn favourite_categories(&self, s: &Shopper) -> Vec<(Cat, f64)> {
        let mut counts: Vec<(Cat, f64)> = Vec::new();
        let pids = s.views.iter().map(|v| v.pid).chain(
            s.bought
                .iter()
                .rev()
                .take(self.config.recently_viewed)
                .map(|b| b.pid),
        );
        let mut total = 0.0;
        for pid in pids {
            let Some(cat) = self
                .products
                .get(pid)
                .map(|p| p.category)
                .filter(|c| *c != NO_CATEGORY)
            else {
                continue;
            };
            total += 1.0;
            match counts.iter_mut().find(|x| x.0 == cat) {
                Some(x) => x.1 += 1.0,
                None => counts.push((cat, 1.0)),
            }
        }
        counts.sort_by(|a, b| {
            b.1.total_cmp(&a.1)
                .then_with(|| self.categories.name(a.0).cmp(&self.categories.name(b.0)))
        });
        counts.truncate(2);
        for x in &mut counts {
            x.1 /= total;
        }
        counts
    }

    fn servable(&self, pid: Pid, category: Option<Cat>, blocked: &[Pid]) -> bool {
        let Some(p) = self.products.get(pid) else {
            return false;
        };
        p.in_stock
            && category.is_none_or(|c| p.category == c)
            && blocked.binary_search(&pid).is_err()
    }

    fn recommendation(&self, pid: Pid, score: f64, reason: Reason) -> Recommendation {
        Recommendation {
            product_id: self
                .products
                .get(pid)
                .map(|p| p.id.to_string())
                .unwrap_or_default(),
            score,
            reason,
        }
    }

    /// Completes an answer with trending, then popular products (of the category when filtered).
    fn fill(
        &self,
        out: &mut Vec<Recommendation>,
        chosen: &mut Vec<Pid>,
        k: usize,
        category: Option<Cat>,
        blocked: &[Pid],
    ) {
        self.fill_from(
            out,
            chosen,
            k,
            category,
            blocked,
            Source::Trending(category),
        );
        self.fill_from(out, chosen, k, category, blocked, Source::Popular(category));
    }

    fn fill_from(
        &self,
        out: &mut Vec<Recommendation>,
        chosen: &mut Vec<Pid>,
        k: usize,
        category: Option<Cat>,
        blocked: &[Pid],
        source: Source,
    ) {
        if out.len() >= k {
            return;
        }
        let (list, reason) = match source {
            Source::Trending(c) => (
                self.list(&self.lists.trending, &self.lists.trending_all, c),
                Reason::Trending,
            ),
            Source::Popular(c) => (
                self.list(&self.lists.popular, &self.lists.popular_all, c),
                Reason::Popular,
            ),
        };
        // Below every score already given, in the list's order.
        let mut ceiling = out.last().map_or(1.0, |r| r.score) * 0.5;
        for &(pid, s) in list {
            if out.len() >= k {
                break;
            }
            if chosen.contains(&pid) || !self.servable(pid, category, blocked) {
                continue;
            }
            let score = (ceiling * f64::from(s).max(1e-3)).min(ceiling);
            ceiling = score;
            out.push(self.recommendation(pid, score, reason));
            chosen.push(pid);
        }
    }

    fn list<'a>(&'a self, per_cat: &'a [Vec<Edge>], all: &'a [Edge], c: Option<Cat>) -> &'a [Edge] {
        match c {
            Some(c) => per_cat.get(usize::from(c)).map_or(&[][..], |l| &l[..]),
            None => all,
        }
    }
}

#[derive(Clone, Copy)]
enum Source {
    Trending(Option<Cat>),
    Popular(Option<Cat>),
}

/// Keeps the `n` best entries, best first, normalised so the first scores 1.
fn top_n(list: &mut Vec<Edge>, n: usize, products: &Products) {
    if list.len() > n {
        list.select_nth_unstable_by(n, |a, b| best_first(products, a, b));
        list.truncate(n);
    }
    list.sort_unstable_by(|a, b| best_first(products, a, b));
    normalise(list);
}

/// Higher score first, ties by product id: an order that does not depend on slot numbers, so a
/// restored engine answers exactly as the one it was saved from.
fn best_first(products: &Products, a: &Edge, b: &Edge) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then_with(|| by_id(products, a.0, b.0))
}

fn by_id(products: &Products, a: Pid, b: Pid) -> std::cmp::Ordering {
    let id = |p: Pid| products.get(p).map(|p| &*p.id);
    id(a).cmp(&id(b))
}

fn normalise(list: &mut [Edge]) {
    if let Some(max) = list.first().map(|e| e.1)
        && max > 0.0
    {
        for e in list.iter_mut() {
            e.1 /= max;
        }
    }
}

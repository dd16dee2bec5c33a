//! Dirty tracking and the stored form of the engine's entities.
//!
//! Product references are stored as product id strings (slots are private to one process). A
//! restore may meet a reference before the product's own entity: the product is created empty
//! and filled in when its entity comes.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::RecsError;
use super::engine::RecsEngine;
use super::model::{NO_CATEGORY, Pid, Purchase, Shopper, View};

const GLOBALS: &str = "g";
const PRODUCT: &str = "p/";
const SHOPPER: &str = "s/";

#[derive(Serialize, Deserialize)]
struct GlobalsRecord {
    t_ref: i64,
    half_life_micros: f64,
    clock: i64,
    total_sessions: f64,
    total_orders: f64,
}

/// A product; `S` is `&str` when writing and `String` when reading.
#[derive(Serialize, Deserialize)]
struct ProductRecord<S> {
    category: Option<S>,
    in_stock: bool,
    last_seen: i64,
    view_sessions: f64,
    orders: f64,
    buyers: u32,
    repeaters: u32,
    log_interval_sum: f64,
    intervals: u32,
    trend_epoch: i64,
    trend: Vec<f32>,
    viewed: Vec<(S, f32)>,
    bought: Vec<(S, f32)>,
    /// Serving lists as last computed (a restored engine answers as the saved one did), and
    /// whether they are due for recomputation.
    serve_viewed: Vec<(S, f32)>,
    serve_bought: Vec<(S, f32)>,
    stale: bool,
}

#[derive(Serialize, Deserialize)]
struct ShopperRecord<S> {
    ids: Vec<S>,
    user: Option<S>,
    last_seen: i64,
    session: u64,
    session_items: Vec<S>,
    /// (product, event time, added to cart), most recent first.
    views: Vec<(S, i64, bool)>,
    /// (product, event time of the latest order with it, orders), most recent last.
    bought: Vec<(S, i64, u32)>,
}

fn corrupt(key: &str) -> impl FnOnce(serde_json::Error) -> RecsError + '_ {
    move |source| RecsError::Corrupt {
        key: key.to_owned(),
        source,
    }
}

impl RecsEngine {
    /// Entities changed since the last call: `(key, Some(serialized))`, or `(key, None)` when
    /// deleted. Deletions come first; a key deleted and written again since the last call is
    /// only written.
    pub fn take_dirty(&mut self) -> Vec<(String, Option<Vec<u8>>)> {
        let mut written: Vec<(String, Option<Vec<u8>>)> = Vec::new();
        for pid in std::mem::take(&mut self.products.dirty) {
            let Some(p) = self.products.get(pid).filter(|p| p.dirty) else {
                continue;
            };
            let id = |q: Pid| self.products.get(q).map(|q| &*q.id);
            let record = ProductRecord {
                category: (p.category != NO_CATEGORY)
                    .then(|| self.categories.name(p.category))
                    .flatten(),
                in_stock: p.in_stock,
                last_seen: p.last_seen,
                view_sessions: p.view_sessions,
                orders: p.orders,
                buyers: p.buyers,
                repeaters: p.repeaters,
                log_interval_sum: p.log_interval_sum,
                intervals: p.intervals,
                trend_epoch: p.trend_epoch,
                trend: p.trend.to_vec(),
                viewed: p
                    .viewed
                    .iter()
                    .filter_map(|&(q, w)| id(q).map(|q| (q, w)))
                    .collect(),
                bought: p
                    .bought
                    .iter()
                    .filter_map(|&(q, w)| id(q).map(|q| (q, w)))
                    .collect(),
                serve_viewed: p
                    .serve_viewed
                    .iter()
                    .filter_map(|&(q, w)| id(q).map(|q| (q, w)))
                    .collect(),
                serve_bought: p
                    .serve_bought
                    .iter()
                    .filter_map(|&(q, w)| id(q).map(|q| (q, w)))
                    .collect(),
                stale: p.stale,
            };
            if let Some(bytes) = encode(&record, &p.id) {
                written.push((format!("{PRODUCT}{}", p.id), Some(bytes)));
            }
            if let Some(p) = self.products.get_mut(pid) {
                p.dirty = false;
            }
        }
        for slot in std::mem::take(&mut self.shoppers.dirty) {
            let Some(s) = self.shoppers.get(slot).filter(|s| s.dirty) else {
                continue;
            };
            let id = |q: Pid| self.products.get(q).map(|q| &*q.id);
            let record = ShopperRecord {
                ids: s.ids.iter().map(|i| &**i).collect(),
                user: s.user.as_deref(),
                last_seen: s.last_seen,
                session: s.session,
                session_items: s.session_items.iter().filter_map(|&q| id(q)).collect(),
                views: s
                    .views
                    .iter()
                    .filter_map(|v| id(v.pid).map(|q| (q, v.at, v.carted)))
                    .collect(),
                bought: s
                    .bought
                    .iter()
                    .filter_map(|b| id(b.pid).map(|q| (q, b.last, b.orders)))
                    .collect(),
            };
            if let Some(bytes) = encode(&record, s.key()) {
                written.push((format!("{SHOPPER}{}", s.key()), Some(bytes)));
            }
            if let Some(s) = self.shoppers.get_mut(slot) {
                s.dirty = false;
            }
        }
        if self.globals_dirty && self.started {
            let record = GlobalsRecord {
                t_ref: self.decay.t_ref,
                half_life_micros: self.decay.half_life_micros,
                clock: self.clock,
                total_sessions: self.total_sessions,
                total_orders: self.total_orders,
            };
            if let Some(bytes) = encode(&record, GLOBALS) {
                written.push((GLOBALS.to_owned(), Some(bytes)));
            }
            self.globals_dirty = false;
        }
        let keys: HashSet<&str> = written.iter().map(|(k, _)| k.as_str()).collect();
        let mut out: Vec<(String, Option<Vec<u8>>)> = std::mem::take(&mut self.deleted)
            .into_iter()
            .filter(|k| !keys.contains(k.as_str()))
            .collect::<HashSet<String>>()
            .into_iter()
            .map(|k| (k, None))
            .collect();
        out.extend(written);
        out
    }

    /// Loads one entity written by [`RecsEngine::take_dirty`]. Entities may come in any order;
    /// call [`RecsEngine::refresh`] once all are loaded, before serving (until then, answers
    /// lack the trending and popular fallbacks).
    pub fn restore(&mut self, key: &str, value: &[u8]) -> Result<(), RecsError> {
        if key == GLOBALS {
            let g: GlobalsRecord = serde_json::from_slice(value).map_err(corrupt(key))?;
            if (g.half_life_micros - self.decay.half_life_micros).abs() > 1.0 {
                tracing::warn!(
                    stored_hours = g.half_life_micros / 3.6e9,
                    configured_hours = self.decay.half_life_micros / 3.6e9,
                    "recommendation counts were decayed with another half-life; they keep their scale"
                );
            }
            self.started = true;
            self.decay.t_ref = g.t_ref;
            self.clock = self.clock.max(g.clock);
            self.total_sessions = g.total_sessions;
            self.total_orders = g.total_orders;
        } else if let Some(id) = key.strip_prefix(PRODUCT) {
            let r: ProductRecord<String> = serde_json::from_slice(value).map_err(corrupt(key))?;
            self.restore_product(id, r);
        } else if let Some(id) = key.strip_prefix(SHOPPER) {
            let r: ShopperRecord<String> = serde_json::from_slice(value).map_err(corrupt(key))?;
            if r.ids.first().map(String::as_str) != Some(id) {
                return Err(RecsError::UnknownKey {
                    key: key.to_owned(),
                });
            }
            self.restore_shopper(r);
        } else {
            return Err(RecsError::UnknownKey {
                key: key.to_owned(),
            });
        }
        self.needs_refresh = true;
        Ok(())
    }

    /// The slot of a stored product reference (created empty when its entity comes later).
    fn restored_pid(&mut self, id: &str, last_seen: i64) -> Option<Pid> {
        self.products.intern(
            id,
            self.config.max_products,
            self.config.trending_buckets,
            last_seen,
        )
    }

    fn restore_product(&mut self, id: &str, r: ProductRecord<String>) {
        let Some(pid) = self.restored_pid(id, r.last_seen) else {
            self.products_refused += 1;
            return;
        };
        let category = r.category.as_deref().map_or(NO_CATEGORY, |c| {
            self.categories.intern(c, self.config.max_categories)
        });
        let mut edges = |list: Vec<(String, f32)>| -> Vec<(Pid, f32)> {
            list.into_iter()
                .filter_map(|(q, w)| self.restored_pid(&q, r.last_seen).map(|q| (q, w)))
                .collect()
        };
        let viewed = edges(r.viewed);
        let bought = edges(r.bought);
        let serve_viewed = edges(r.serve_viewed);
        let serve_bought = edges(r.serve_bought);
        let buckets = self.config.trending_buckets;
        if let Some(p) = self.products.get_mut(pid) {
            p.category = category;
            p.in_stock = r.in_stock;
            p.last_seen = r.last_seen;
            p.view_sessions = r.view_sessions;
            p.orders = r.orders;
            p.buyers = r.buyers;
            p.repeaters = r.repeaters;
            p.log_interval_sum = r.log_interval_sum;
            p.intervals = r.intervals;
            if r.trend.len() == buckets {
                p.trend_epoch = r.trend_epoch;
                p.trend = r.trend.into_boxed_slice();
            }
            p.viewed = viewed;
            p.bought = bought;
            p.serve_viewed = serve_viewed;
            p.serve_bought = serve_bought;
            p.stale = false;
        }
        if r.stale {
            self.products.mark_stale(pid);
        }
    }

    fn restore_shopper(&mut self, r: ShopperRecord<String>) {
        let mut pid = |q: &str| self.restored_pid(q, r.last_seen);
        let session_items = r.session_items.iter().filter_map(|q| pid(q)).collect();
        let views = r
            .views
            .iter()
            .filter_map(|(q, at, carted)| {
                pid(q).map(|pid| View {
                    pid,
                    at: *at,
                    carted: *carted,
                })
            })
            .collect();
        let bought = r
            .bought
            .iter()
            .filter_map(|(q, last, orders)| {
                pid(q).map(|pid| Purchase {
                    pid,
                    last: *last,
                    orders: *orders,
                })
            })
            .collect();
        // The engine never gives one id to two shoppers; should a damaged store do so, the
        // shopper restored first keeps it.
        let ids: Vec<std::sync::Arc<str>> = r
            .ids
            .iter()
            .filter(|id| self.shoppers.lookup(id).is_none())
            .map(|id| std::sync::Arc::from(id.as_str()))
            .collect();
        if ids.first().map(|k| &**k) != r.ids.first().map(String::as_str) {
            tracing::warn!(key = %r.ids[0], "a stored shopper's key belongs to another; skipped");
            return;
        }
        let user = r
            .user
            .as_deref()
            .and_then(|u| ids.iter().find(|i| &***i == u).cloned());
        let mut shopper = Shopper::new(ids, user, r.last_seen);
        shopper.session = r.session;
        shopper.session_items = session_items;
        shopper.views = views;
        shopper.bought = bought;
        self.shoppers.insert(shopper);
        self.lru_unsorted = true;
    }
}

fn encode<T: Serialize>(record: &T, key: &str) -> Option<Vec<u8>> {
    match serde_json::to_vec(record) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            // Only non-string map keys or a failing writer make serde_json fail; neither exists here.
            tracing::error!(key, error = %e, "a recommendation entity could not be encoded; it is not saved");
            None
        }
    }
}

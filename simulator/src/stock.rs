//! The warehouse: every product's stock level, sent by the back office as `custom` events named
//! "Inventory Updated" (Segment's convention for a custom event; the live recommendations already
//! read them, and the `inventory` report reads them from the lake). Each lists products with
//! `quantity` = the product's stock level from that moment on; 0 is out of stock.
//!
//! - At the start, the level of every product (in events of at most [`PER_EVENT`] products): a
//!   product's level covers a random number of days of its expected sales (log-uniform, from an
//!   hour to three weeks) plus 1 to 4 units, so popular products with little cover and slow
//!   movers with a few units run out within the first hours; 3% start out of stock.
//! - After each order, the new levels of the products it took (what a store's inventory webhook
//!   sends). A level does not go below 0: an order for a product out of stock is a backorder.
//! - When a product runs out, a restock is ordered: it arrives after a lead time (log-uniform,
//!   2 hours to 5 days) with three days to a month of cover, and is sent then.
//!
//! Shoppers do not look at stock: they view, add and buy products out of stock as before (the
//! demand a store loses while out of stock is what the report measures). Stock has its own
//! generator, seeded from the simulation's seed, so every shopper's events are the same with and
//! without it; stock events are never spoiled, resent or late (a back-office system, not a device).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shoplake_events::wire::{Context, Event, Product, Properties, Str};
use shoplake_events::{EventName, format_timestamp};

use super::world::{Catalog, uuid};
use super::{RecordKind, SimRecord};

const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;
/// Products per "Inventory Updated" event at the start (the contract allows 250).
const PER_EVENT: usize = 200;
/// The event's custom name.
pub const INVENTORY_UPDATED: &str = "Inventory Updated";
/// The back office's id on the stream (the contract needs an id; no shopper has this one).
pub const INVENTORY_SOURCE: &str = "inventory-service";
/// Units sold per session, roughly (measured: 1,446 units in 3,000 sessions of seed 7); only
/// scales the levels, which are random anyway.
const UNITS_PER_SESSION: f64 = 0.5;
/// Share of products out of stock at the start (a restock on its way).
const OUT_AT_START: f64 = 0.03;

/// Stock levels and pending restocks.
pub(crate) struct Stock {
    rng: ChaCha8Rng,
    /// Expected units sold per day, per product.
    daily_demand: Vec<f64>,
    level: Vec<i64>,
    /// A restock on its way: when it arrives and the level it brings.
    restock: Vec<Option<(i64, i64)>>,
}

impl Stock {
    /// Levels for `catalog` at `start`, for a store of `sessions_per_hour`; returns the stock and
    /// the records announcing the levels.
    pub fn new(
        seed: u64,
        catalog: &Catalog,
        sessions_per_hour: f64,
        start: i64,
    ) -> (Stock, Vec<SimRecord>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5754_4f43_4b00_0001);
        let total: f64 = catalog.products.iter().map(|p| p.weight).sum();
        let per_day = sessions_per_hour.max(0.0) * 24.0 * UNITS_PER_SESSION;
        let daily_demand: Vec<f64> = catalog
            .products
            .iter()
            .map(|p| per_day * p.weight / total.max(f64::MIN_POSITIVE))
            .collect();
        // A few units at least (slow movers are stocked too), some products out of stock.
        let level = daily_demand
            .iter()
            .map(|&d| {
                let units =
                    cover(&mut rng, d, HOUR as f64 / DAY as f64, 21.0) + rng.random_range(1..=4);
                if rng.random_bool(OUT_AT_START) {
                    0
                } else {
                    units
                }
            })
            .collect();
        let mut stock = Stock {
            rng,
            daily_demand,
            level,
            restock: vec![None; catalog.products.len()],
        };
        let all: Vec<usize> = (0..catalog.products.len()).collect();
        let mut records = Vec::new();
        for chunk in all.chunks(PER_EVENT) {
            records.push(stock.record(catalog, chunk, start));
        }
        for p in 0..catalog.products.len() {
            if stock.level[p] == 0 {
                records.push(stock.order_restock(catalog, p, start));
            }
        }
        (stock, records)
    }

    /// An order at `t` took `lines` (product, units): the new levels, and the restocks of the
    /// products it emptied. Sales come in time order ([`sale_marker`]).
    pub fn sold(&mut self, catalog: &Catalog, lines: &[(usize, i64)], t: i64) -> Vec<SimRecord> {
        let mut products: Vec<usize> = Vec::new();
        let mut emptied: Vec<usize> = Vec::new();
        for &(p, units) in lines {
            if p >= self.level.len() {
                continue;
            }
            if let Some((at, level)) = self.restock[p]
                && at <= t
            {
                self.level[p] = level;
                self.restock[p] = None;
            }
            self.level[p] = (self.level[p] - units.max(0)).max(0);
            if self.level[p] == 0 && self.restock[p].is_none() && !emptied.contains(&p) {
                emptied.push(p);
            }
            if !products.contains(&p) {
                products.push(p);
            }
        }
        let sent = t + self.rng.random_range(1_000_000..5_000_000);
        let mut records = vec![self.record(catalog, &products, sent)];
        for p in emptied {
            records.push(self.order_restock(catalog, p, sent));
        }
        records
    }

    /// Orders a restock of `p` at `t`: the record of its arrival.
    fn order_restock(&mut self, catalog: &Catalog, p: usize, t: i64) -> SimRecord {
        let lead = log_uniform(&mut self.rng, 2.0 * HOUR as f64, 5.0 * DAY as f64) as i64;
        let level = cover(&mut self.rng, self.daily_demand[p], 3.0, 30.0).max(5);
        let at = t + lead;
        self.restock[p] = Some((at, level));
        let before = std::mem::replace(&mut self.level[p], level);
        let record = self.record(catalog, &[p], at);
        self.level[p] = before;
        record
    }

    /// An "Inventory Updated" event at `t` with the current levels of `products`.
    fn record(&mut self, catalog: &Catalog, products: &[usize], t: i64) -> SimRecord {
        let received = t + self.rng.random_range(5_000..50_000);
        let event = Event {
            event_id: Some(Str::from(uuid(&mut self.rng))),
            event_name: Some(Str::from(EventName::Custom.as_str())),
            custom_event_name: Some(Str::from(INVENTORY_UPDATED)),
            schema_version: Some(1),
            anonymous_id: Some(Str::from(INVENTORY_SOURCE)),
            occurred_at: Some(Str::from(format_timestamp(t))),
            sent_at: Some(Str::from(format_timestamp(t))),
            received_at: Some(Str::from(format_timestamp(received))),
            context: Some(Context {
                source: Some(Str::from("backend")),
                ..Context::default()
            }),
            properties: Some(Properties {
                products: Some(
                    products
                        .iter()
                        .map(|&p| {
                            let product = &catalog.products[p];
                            Product {
                                product_id: Some(Str::from(product.id.clone())),
                                sku: Some(Str::from(product.sku.clone())),
                                category: Some(Str::from(product.category)),
                                brand: Some(Str::from(product.brand)),
                                quantity: Some(self.level[p]),
                                ..Product::default()
                            }
                        })
                        .collect(),
                ),
                ..Properties::default()
            }),
            ..Event::default()
        };
        SimRecord {
            partition_key: INVENTORY_SOURCE.to_owned(),
            payload: serde_json::to_vec(&event).unwrap_or_default(),
            kind: RecordKind::Valid(EventName::Custom),
            server_time_micros: received,
        }
    }
}

/// The marker of an order's sale at `t` (product index, units per line), queued with the
/// records so that the warehouse applies it in time order.
pub(crate) fn sale_marker(lines: &[(usize, i64)], t: i64) -> SimRecord {
    let mut payload = Vec::with_capacity(lines.len() * 16);
    for &(product, units) in lines {
        payload.extend_from_slice(&(product as u64).to_le_bytes());
        payload.extend_from_slice(&units.to_le_bytes());
    }
    SimRecord {
        partition_key: String::new(),
        payload,
        kind: RecordKind::StockSale,
        server_time_micros: t,
    }
}

/// The lines of a [`sale_marker`].
pub(crate) fn decode_sale(payload: &[u8]) -> Vec<(usize, i64)> {
    payload
        .chunks_exact(16)
        .map(|c| {
            let mut product = [0u8; 8];
            let mut units = [0u8; 8];
            product.copy_from_slice(&c[..8]);
            units.copy_from_slice(&c[8..]);
            (
                u64::from_le_bytes(product) as usize,
                i64::from_le_bytes(units),
            )
        })
        .collect()
}

fn log_uniform(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    (lo.ln() + rng.random::<f64>() * (hi.ln() - lo.ln())).exp()
}

/// Units covering a random number of days (log-uniform from `lo` to `hi`) of `daily` sales.
fn cover(rng: &mut ChaCha8Rng, daily: f64, lo: f64, hi: f64) -> i64 {
    (daily * log_uniform(rng, lo, hi)).round() as i64
}

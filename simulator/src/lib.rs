//! # shoplake-simulator: a seeded storefront to test and demonstrate the pipeline with
//!
//! Owns a deterministic online store (`shoplake emit`, and the simulated traffic of `shoplake
//! up`): a catalog with affinity groups, users, marketing campaigns, sessions walking a funnel,
//! orders with payments, shipments, cancellations and returns, the warehouse's stock levels
//! (out of stock, restocked), injected fraud with ground-truth
//! labels, and a configurable share of bad input. Nothing enters it but a [`SimConfig`] (and, for
//! long runs, a folder for the records due later: [`Simulator::with_spill`]); records leave
//! through [`Simulator::next`] as bytes of the event contract's wire format with a partition key
//! ([`SimRecord`]), and the caller puts them on the stream (the binary hands them to the
//! storefront emitter). The same seed gives the same records, byte for byte: the golden SQL
//! tests depend on it. It lives apart from the emitter library so that a storefront embedding the
//! emitter does not compile it.
//!
//! Shoppers arrive as a Poisson process (`sessions_per_hour`); each session is generated whole
//! when it starts (a funnel walk: landing page, lists, searches, product views, cart, checkout,
//! order) and its events wait in a queue ordered by the time the server receives them, together
//! with the back-office events of its orders (payment, shipment, delivery, cancellations,
//! returns and refunds, hours or days later). [`Simulator::next`] hands out the earliest one.
//!
//! Faults are injected as a storefront really produces them: a share of events is spoiled
//! ([`SimConfig::bad_share`], each with the [`shoplake_events::Reason`] validation will give),
//! resent with the same `event_id` ([`SimConfig::duplicate_share`]), delivered hours late by a
//! device that was offline ([`SimConfig::late_share`]), or stamped by a device whose clock is off
//! ([`SimConfig::skewed_device_share`]). Fraud scenarios ([`SimConfig::fraud_share`] of the
//! orders, 1% by default, in the proportions of [`FraudMix`]) are labelled in
//! [`Simulator::labels`], never in the events; a store learns of them weeks later, as an
//! `order_refunded` with the reason `fraud_chargeback`. Honest shoppers do what fraud rules can
//! mistake for fraud ([`Confounders`]): they share devices and IPs, travel, change phones, ship
//! gifts abroad, buy expensive things, reorder without browsing and pay with several cards.
//!
//! [`SimStats`] counts what was handed out, which is what the lake must hold.
//!
//! Why these dependencies: `rand` / `rand_chacha` for a seeded generator that is the same on every
//! platform; `uuid` for event ids; `shoplake-events` so that every event is built with the wire
//! types of the contract (and checked against its validator in tests); `serde` / `serde_json` for
//! the payloads, the fraud labels and the counts; `tracing` to report a spill file that fails.
//!
//! ```
//! use shoplake_simulator::{SimConfig, Simulator};
//!
//! let mut sim = Simulator::new(SimConfig { seed: 1, max_sessions: Some(50), ..SimConfig::default() });
//! let mut n = 0;
//! while let Some(record) = sim.next() {
//!     assert!(!record.payload.is_empty());
//!     n += 1;
//! }
//! assert_eq!(sim.stats().records, n);
//! assert!(sim.stats().valid_unique > 100);
//! ```

mod faults;
mod shopper;
pub mod spend;
mod spill;
mod stock;
mod world;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use shoplake_events::{EventName, Reason};

use world::{Catalog, Source, User};

/// Relative weights of the fraud patterns among fraudulent *orders* (a card-testing scenario
/// places several orders, a takeover one or two: scenarios are drawn so that the orders come out in
/// these proportions).
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct FraudMix {
    /// Bursts of small orders with many cards from one device or a few: most payments fail. Some
    /// testers browse a little first.
    pub card_testing: f64,
    /// An existing account used by someone else: mostly from a new device, often abroad, with an
    /// expensive basket; but also from the owner's own device, from the home country, shipped
    /// home (to a reshipper).
    pub account_takeover: f64,
    /// Many new accounts from one device or IP, each taking a welcome or referral coupon after a
    /// few product views.
    pub multi_account: f64,
}

impl Default for FraudMix {
    fn default() -> Self {
        FraudMix {
            card_testing: 1.0,
            account_takeover: 1.0,
            multi_account: 1.0,
        }
    }
}

/// `"card_testing,account_takeover,multi_account"`: three weights ≥ 0, not all 0 (the
/// `--fraud-mix` of `shoplake eval` and `shoplake emit`).
impl std::str::FromStr for FraudMix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let w: Vec<f64> = s
            .split(',')
            .map(|x| x.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{s:?}: {e}"))?;
        match w[..] {
            [card_testing, account_takeover, multi_account]
                if w.iter().all(|x| *x >= 0.0) && w.iter().any(|x| *x > 0.0) =>
            {
                Ok(FraudMix {
                    card_testing,
                    account_takeover,
                    multi_account,
                })
            }
            _ => Err(format!(
                "{s:?}: three weights ≥ 0, not all 0: CARD_TESTING,ACCOUNT_TAKEOVER,MULTI_ACCOUNT"
            )),
        }
    }
}

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The same seed gives the same events, byte for byte.
    pub seed: u64,
    /// Simulated start time, UTC microseconds.
    pub start_micros: i64,
    /// Arrival rate of shopping sessions, in simulated time.
    pub sessions_per_hour: f64,
    /// Stop after this many sessions (their back-office events still follow). None: no end.
    pub max_sessions: Option<u64>,
    /// Size of the returning-shopper base.
    pub users: usize,
    /// Products in the catalog.
    pub products: usize,
    /// Share of events spoiled into bad input.
    pub bad_share: f64,
    /// Share of events resent with the same event_id.
    pub duplicate_share: f64,
    /// Share of device events delivered late (offline for minutes to a day and a half).
    pub late_share: f64,
    /// Share of devices whose clock is off by minutes to days.
    pub skewed_device_share: f64,
    /// Share of orders that are fraudulent (1% by default, a real store's order of magnitude):
    /// a fraud scenario starts whenever fraud orders fall behind this share of the orders so far.
    pub fraud_share: f64,
    pub fraud_mix: FraudMix,
    /// Share of sessions from crawlers.
    pub bot_share: f64,
    /// What makes honest shoppers look like fraud: shared devices and IPs, travel, new phones,
    /// gifts abroad, big baskets, reorders without browsing, several cards.
    pub confounders: Confounders,
    /// Whether the back office sends stock levels ("Inventory Updated" custom events from the
    /// warehouse): every level at the start, the new levels after each order, each restock.
    pub stock: bool,
}

/// Honest behaviour that fraud rules can mistake for fraud (issue 22: without it, most rules
/// cannot produce a false positive and the fraud figures measure the simulator). Shares are of
/// shoppers or sessions as each says; all 0 gives the store of earlier versions' shape.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Confounders {
    /// Share of new shoppers who live with an earlier one: the same device (a family tablet or
    /// laptop, its own browser profile) and home IP; a third of them also share a card.
    pub household: f64,
    /// Share of new shoppers behind carrier-grade NAT or an office: their IP is one of
    /// `shared_ips` per country, shared with many others.
    pub shared_ip: f64,
    /// Shared (NAT / office) IPs per country.
    pub shared_ips: usize,
    /// Share of returning shoppers' sessions from abroad (travel, expatriates): an IP of
    /// another country, the usual locale and card.
    pub travel: f64,
    /// Share of returning shoppers' sessions on a new phone or browser, kept from then on.
    pub new_device: f64,
    /// Share of honest orders shipped to another country (gifts, family abroad).
    pub gift_abroad: f64,
    /// Share of honest sessions that put an expensive product (the catalogue's top 5% by price)
    /// in the cart.
    pub big_ticket: f64,
    /// Share of signed-in returning shoppers' sessions that reorder earlier purchases straight
    /// from the order history, viewing no product.
    pub buy_again: f64,
    /// Most payment cards an honest shopper has (each order uses one; 1 to this many).
    pub cards_per_shopper: usize,
}

impl Default for Confounders {
    fn default() -> Self {
        Confounders {
            household: 0.12,
            shared_ip: 0.2,
            shared_ips: 20,
            travel: 0.04,
            new_device: 0.05,
            gift_abroad: 0.04,
            big_ticket: 0.04,
            buy_again: 0.08,
            cards_per_shopper: 3,
        }
    }
}

impl Confounders {
    /// Sets one by its field name (`shared_ip=0.3` on a command line); shares must be in 0..=1,
    /// counts at least 1.
    pub fn set(&mut self, key: &str, value: f64) -> Result<(), String> {
        let share = |v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(v)
            } else {
                Err(format!("{key}: a share from 0 to 1, not {v}"))
            }
        };
        let count = |v: f64| {
            if v >= 1.0 && v.fract() == 0.0 {
                Ok(v as usize)
            } else {
                Err(format!("{key}: a whole number ≥ 1, not {v}"))
            }
        };
        match key {
            "household" => self.household = share(value)?,
            "shared_ip" => self.shared_ip = share(value)?,
            "shared_ips" => self.shared_ips = count(value)?,
            "travel" => self.travel = share(value)?,
            "new_device" => self.new_device = share(value)?,
            "gift_abroad" => self.gift_abroad = share(value)?,
            "big_ticket" => self.big_ticket = share(value)?,
            "buy_again" => self.buy_again = share(value)?,
            "cards_per_shopper" => self.cards_per_shopper = count(value)?,
            _ => {
                return Err(format!(
                    "{key}: not a confounder (household, shared_ip, shared_ips, travel, \
                     new_device, gift_abroad, big_ticket, buy_again, cards_per_shopper)"
                ));
            }
        }
        Ok(())
    }

    /// None of them: honest shoppers never share, travel or change devices.
    pub fn none() -> Confounders {
        Confounders {
            household: 0.0,
            shared_ip: 0.0,
            shared_ips: 1,
            travel: 0.0,
            new_device: 0.0,
            gift_abroad: 0.0,
            big_ticket: 0.0,
            buy_again: 0.0,
            cards_per_shopper: 1,
        }
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 42,
            start_micros: 1_767_225_600_000_000, // 2026-01-01T00:00:00Z
            sessions_per_hour: 3_600.0,
            max_sessions: None,
            users: 5_000,
            products: 1_000,
            bad_share: 0.01,
            duplicate_share: 0.01,
            late_share: 0.01,
            skewed_device_share: 0.05,
            fraud_share: 0.01,
            fraud_mix: FraudMix::default(),
            bot_share: 0.02,
            confounders: Confounders::default(),
            stock: true,
        }
    }
}

/// What a record is, as the simulator meant it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    Valid(EventName),
    /// The same bytes as an earlier valid record.
    Duplicate,
    /// Bad input; validation reports this reason.
    Bad(Reason),
    /// The simulator's own marker of an order's sale, which the warehouse applies to its stock
    /// levels when its time comes (so that levels change in time order); never handed out.
    StockSale,
}

/// One record for the stream.
#[derive(Clone, Debug)]
pub struct SimRecord {
    /// The shopper's id (anonymous id, or user id for back-office events): keeps a shopper's
    /// events in order on one shard.
    pub partition_key: String,
    pub payload: Vec<u8>,
    pub kind: RecordKind,
    /// When the server receives it (simulated clock), UTC micros; also its `received_at`.
    pub server_time_micros: i64,
}

/// Ground truth of one fraudulent order, for the fraud evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct FraudLabel {
    pub order_id: String,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    /// card_testing, account_takeover or multi_account.
    pub pattern: String,
    pub occurred_at: String,
}

/// Counts of what [`Simulator::next`] handed out.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct SimStats {
    pub sessions: u64,
    /// Every record, valid, duplicate or bad.
    pub records: u64,
    /// Distinct valid events: what the `events` table must hold.
    pub valid_unique: u64,
    pub duplicates: u64,
    /// Bad inputs: what the `bad_rows` table must hold.
    pub bad: u64,
    pub bad_by_reason: BTreeMap<String, u64>,
    /// Valid unique events per event name.
    pub by_event_name: BTreeMap<String, u64>,
    /// Valid order_completed events.
    pub orders: u64,
    /// Of which fraudulent.
    pub fraud_orders: u64,
}

struct Pending {
    record: SimRecord,
    label: Option<FraudLabel>,
}

/// Queue key: server time, then generation order (deterministic ties).
type Key = Reverse<(i64, u64)>;

/// The simulator. An iterator of records in server-time order.
pub struct Simulator {
    config: SimConfig,
    rng: ChaCha8Rng,
    catalog: Catalog,
    sources: Vec<Source>,
    users: Vec<User>,
    queue: BinaryHeap<(Key, usize)>,
    slots: Vec<Option<Pending>>,
    free: Vec<usize>,
    seq: u64,
    next_session_at: i64,
    sessions_started: u64,
    stats: SimStats,
    labels: Vec<FraudLabel>,
    /// Records due after the current time bucket, on disk ([`Simulator::with_spill`]).
    spill: Option<spill::Spill>,
    /// A spill file that could not be read back: the simulation ends there.
    failure: Option<std::io::Error>,
    /// What the paid campaigns cost ([`spend`]).
    spend: spend::Spend,
    /// Orders generated so far (placed, handed out or not), and of them fraudulent: the fraud
    /// share's controller.
    orders_generated: u64,
    fraud_generated: u64,
    /// Stock levels, when the back office sends them ([`SimConfig::stock`]).
    stock: Option<stock::Stock>,
}

impl Simulator {
    pub fn new(config: SimConfig) -> Self {
        let config_seed = config.seed;
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let catalog = Catalog::generate(&mut rng, config.products);
        let sources = world::sources();
        let mut sim = Simulator {
            next_session_at: config.start_micros,
            config,
            rng,
            catalog,
            sources,
            users: Vec::new(),
            queue: BinaryHeap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            seq: 0,
            sessions_started: 0,
            stats: SimStats::default(),
            labels: Vec::new(),
            spill: None,
            failure: None,
            spend: spend::Spend::new(config_seed),
            orders_generated: 0,
            fraud_generated: 0,
            stock: None,
        };
        sim.seed_users();
        if sim.config.stock {
            let (stock, records) = stock::Stock::new(
                config_seed,
                &sim.catalog,
                sim.config.sessions_per_hour,
                sim.config.start_micros,
            );
            sim.stock = Some(stock);
            for record in records {
                sim.enqueue(record, None);
            }
        }
        sim
    }

    /// Keeps the records due after the current 10-second bucket of simulated time in files under
    /// `dir` (emptied first) instead of memory, so that memory stays flat however long the
    /// simulator runs and however far ahead it schedules events. The output is the same.
    pub fn with_spill(mut self, dir: &std::path::Path) -> std::io::Result<Self> {
        let mut spill = spill::Spill::open(dir, self.config.start_micros)?;
        // Records queued while the world was generated move out too.
        let mut kept = Vec::new();
        for (Reverse((t, seq)), slot) in std::mem::take(&mut self.queue) {
            let Some(pending) = self.slots[slot].take() else {
                continue;
            };
            self.free.push(slot);
            if t < spill.loaded_until {
                kept.push((Reverse((t, seq)), pending));
            } else {
                spill.push(seq, &pending)?;
            }
        }
        self.spill = Some(spill);
        for (key, pending) in kept {
            self.push_in_memory(key, pending);
        }
        Ok(self)
    }

    /// Records generated but not handed out yet: (in memory, spilled to disk).
    pub fn pending(&self) -> (u64, u64) {
        (
            self.queue.len() as u64,
            self.spill.as_ref().map_or(0, |s| s.records),
        )
    }

    /// Why the simulation ended early, if it did (a spill file could not be read back).
    pub fn take_error(&mut self) -> Option<std::io::Error> {
        self.failure.take()
    }

    /// Counts of what was handed out so far.
    pub fn stats(&self) -> &SimStats {
        &self.stats
    }

    /// Fraud labels of the orders handed out since the last call.
    /// What the paid campaigns cost per day so far: every session that landed from one (handed
    /// out or not yet) is a click.
    pub fn spend(&self) -> Vec<spend::SpendRow> {
        self.spend.rows()
    }

    pub fn labels(&mut self) -> Vec<FraudLabel> {
        std::mem::take(&mut self.labels)
    }

    /// The next record in server-time order; None when a bounded simulation is over.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<SimRecord> {
        loop {
            let more_sessions = self
                .config
                .max_sessions
                .is_none_or(|max| self.sessions_started < max);
            if self.queue.is_empty() {
                self.load_next_bucket(more_sessions.then_some(self.next_session_at))?;
            }
            let head = self.queue.peek().map(|(Reverse((t, _)), _)| *t);
            if more_sessions && head.is_none_or(|t| t >= self.next_session_at) {
                let start = self.next_session_at;
                self.sessions_started += 1;
                self.stats.sessions += 1;
                self.session(start);
                let rate_per_micro = self.config.sessions_per_hour.max(1e-6) / 3_600e6;
                let u: f64 = self.rng.random_range(f64::EPSILON..1.0);
                self.next_session_at += (-u.ln() / rate_per_micro).max(1.0) as i64;
                continue;
            }
            let (_, slot) = self.queue.pop()?;
            let pending = self.slots[slot].take()?;
            self.free.push(slot);
            if pending.record.kind == RecordKind::StockSale {
                self.apply_sale(&pending.record);
                continue;
            }
            self.count(&pending);
            return Some(pending.record);
        }
    }

    fn count(&mut self, pending: &Pending) {
        let stats = &mut self.stats;
        stats.records += 1;
        match pending.record.kind {
            RecordKind::Valid(name) => {
                stats.valid_unique += 1;
                *stats
                    .by_event_name
                    .entry(name.as_str().to_owned())
                    .or_default() += 1;
                if name == EventName::OrderCompleted {
                    stats.orders += 1;
                    if let Some(label) = &pending.label {
                        stats.fraud_orders += 1;
                        self.labels.push(label.clone());
                    }
                }
            }
            RecordKind::Duplicate => stats.duplicates += 1,
            RecordKind::StockSale => {}
            RecordKind::Bad(reason) => {
                stats.bad += 1;
                *stats
                    .bad_by_reason
                    .entry(reason.as_str().to_owned())
                    .or_default() += 1;
            }
        }
    }

    /// Refills the in-memory queue from the earliest spilled bucket if it starts before `before`
    /// (the next session's start); None when reading it failed.
    fn load_next_bucket(&mut self, before: Option<i64>) -> Option<()> {
        let Some(spill) = self.spill.as_mut() else {
            return Some(());
        };
        match spill.take_next_bucket(before) {
            Ok(records) => {
                for (seq, pending) in records {
                    let key = Reverse((pending.record.server_time_micros, seq));
                    self.push_in_memory(key, pending);
                }
                Some(())
            }
            Err(e) => {
                tracing::error!(error = %e, "the simulator could not read back its spill file; stopping");
                self.failure = Some(e);
                None
            }
        }
    }

    /// Applies a sale marker ([`RecordKind::StockSale`]) to the stock levels, queueing the
    /// warehouse's events.
    fn apply_sale(&mut self, marker: &SimRecord) {
        let lines = stock::decode_sale(&marker.payload);
        let Some(stock) = self.stock.as_mut() else {
            return;
        };
        for record in stock.sold(&self.catalog, &lines, marker.server_time_micros) {
            self.enqueue(record, None);
        }
    }

    fn enqueue(&mut self, record: SimRecord, label: Option<FraudLabel>) {
        self.seq += 1;
        let key = Reverse((record.server_time_micros, self.seq));
        let pending = Pending { record, label };
        if let Some(spill) = self.spill.as_mut()
            && pending.record.server_time_micros >= spill.loaded_until
        {
            if let Err(e) = spill.push(self.seq, &pending) {
                // The record stays buffered in memory and is written at the next flush.
                tracing::warn!(error = %e, "the simulator could not write its spill file");
            }
            return;
        }
        self.push_in_memory(key, pending);
    }

    fn push_in_memory(&mut self, key: Key, pending: Pending) {
        let pending = Some(pending);
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = pending;
                slot
            }
            None => {
                self.slots.push(pending);
                self.slots.len() - 1
            }
        };
        self.queue.push((key, slot));
    }
}

#[cfg(test)]
mod tests;

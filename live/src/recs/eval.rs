//! Offline evaluation: hit rate@k and MRR of recommendations against held-out next purchases,
//! next to a popularity baseline. `shoplake eval` and the module's tests run it over the simulator.
//!
//! Events go through what the stage does before the engine sees them ([`Evaluation::feed_record`]:
//! decode and validate, drop repeated event ids, drop bots, infer sessions the stage's way), then
//! through every engine under test. Each `order_completed` is a held-out purchase: the engines and
//! the baseline are asked *before* the order is fed, and a case is a hit when any product of the
//! order is in the top k; its reciprocal rank is 1 / the rank of the first such product (0 when
//! none). Three moments of asking ([`Protocol`]):
//! - [`Protocol::BeforeOrder`]: just before the order (the product's target protocol). The
//!   session's views and cart are known by then, so recently viewed products score well here.
//! - [`Protocol::SessionStart`]: at the first event of the order's session, before anything of the
//!   session is known: what a home page could have shown.
//! - [`Protocol::ProductPage`]: at the session's first product view, with that product as
//!   `context_product`; the relevant products are the order's others.
//!
//! The baseline is the k most-bought products so far (exact counts), minus the products the first
//! engine would exclude for that shopper (bought recently and not due, out of stock).

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::time::Instant;

use shoplake_events::{EventName, Limits, ValidEvent};

use super::next::{NextProduct, NextReport};
use super::{RecsConfig, RecsEngine, RecsQuery};
use shoplake_transform::admit::{Admission, admit};
use shoplake_transform::enrich::bots::BotCache;
use shoplake_transform::enrich::sessions::Sessions;
use shoplake_transform::state::{Seen, Sighting};

/// Hits and reciprocal ranks over evaluated cases.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Metrics {
    pub cases: u64,
    pub hits: u64,
    pub reciprocal_rank_sum: f64,
}

impl Metrics {
    /// Records one case: `ranked` best first (already cut to k), `relevant` the held-out products.
    pub fn record<'a>(&mut self, ranked: impl IntoIterator<Item = &'a str>, relevant: &[&str]) {
        self.cases += 1;
        if let Some(rank) = first_hit(ranked, relevant) {
            self.hits += 1;
            self.reciprocal_rank_sum += 1.0 / rank as f64;
        }
    }

    /// Share of cases with a relevant product in the list.
    pub fn hit_rate(&self) -> f64 {
        if self.cases == 0 {
            0.0
        } else {
            self.hits as f64 / self.cases as f64
        }
    }

    /// Mean reciprocal rank of the first relevant product (0 for a miss).
    pub fn mrr(&self) -> f64 {
        if self.cases == 0 {
            0.0
        } else {
            self.reciprocal_rank_sum / self.cases as f64
        }
    }
}

/// 1-based rank of the first relevant item of `ranked`.
pub fn first_hit<'a>(
    ranked: impl IntoIterator<Item = &'a str>,
    relevant: &[&str],
) -> Option<usize> {
    ranked
        .into_iter()
        .position(|p| relevant.contains(&p))
        .map(|i| i + 1)
}

/// The most-bought products so far.
#[derive(Debug, Default)]
pub struct PopularityBaseline {
    counts: HashMap<String, u64>,
    ranked: BTreeSet<(Reverse<u64>, String)>,
}

impl PopularityBaseline {
    /// Counts one order (each distinct product once).
    pub fn record_order<'a>(&mut self, products: impl IntoIterator<Item = &'a str>) {
        let mut seen = HashSet::new();
        for p in products {
            if !seen.insert(p) {
                continue;
            }
            let n = self.counts.entry(p.to_owned()).or_default();
            self.ranked.remove(&(Reverse(*n), p.to_owned()));
            *n += 1;
            self.ranked.insert((Reverse(*n), p.to_owned()));
        }
    }

    /// The `k` most-bought products that are not `excluded`, most bought first (ties by id).
    pub fn top(&self, k: usize, excluded: impl Fn(&str) -> bool) -> Vec<&str> {
        self.ranked
            .iter()
            .map(|(_, p)| p.as_str())
            .filter(|p| !excluded(p))
            .take(k)
            .collect()
    }
}

/// When the recommendations of a case are asked; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    BeforeOrder,
    SessionStart,
    ProductPage,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [
        Protocol::BeforeOrder,
        Protocol::SessionStart,
        Protocol::ProductPage,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::BeforeOrder => "before_order",
            Protocol::SessionStart => "session_start",
            Protocol::ProductPage => "product_page",
        }
    }
}

/// Name of the baseline in reports.
pub const BASELINE: &str = "popularity baseline";

/// What happened to one fed record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fed {
    Rejected,
    Duplicate,
    Bot,
    Used,
}

/// Counts of fed records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeedCounts {
    pub rejected: u64,
    pub duplicates: u64,
    pub bots: u64,
    pub used: u64,
    pub orders: u64,
}

/// Lists asked at one moment of a session: one per engine, then the baseline's.
#[derive(Debug)]
struct Asked {
    lists: Vec<Vec<String>>,
    context: Option<String>,
}

#[derive(Debug)]
struct PendingSession {
    started: i64,
    at_start: Asked,
    at_first_view: Option<Asked>,
}

/// One row of a report.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub protocol: Protocol,
    pub variant: String,
    pub metrics: Metrics,
}

/// Metrics per protocol and variant (the engines in order, then the baseline).
#[derive(Clone, Debug, PartialEq)]
pub struct EvalReport {
    pub k: usize,
    pub counts: FeedCounts,
    pub rows: Vec<Row>,
    /// Wall time of the first engine per `observe` (without the calls that refreshed the
    /// serving lists), per refresh, and per `recommend`, in microseconds, in whatever build ran
    /// the evaluation (information, not a benchmark: one thread, no lock).
    pub observe_micros: f64,
    pub refresh_micros: f64,
    pub refreshes: u64,
    pub recommend_micros: f64,
}

impl EvalReport {
    pub fn get(&self, protocol: Protocol, variant: &str) -> Option<&Metrics> {
        self.rows
            .iter()
            .find(|r| r.protocol == protocol && r.variant == variant)
            .map(|r| &r.metrics)
    }
}

impl fmt::Display for EvalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counts;
        writeln!(
            f,
            "events used {}, orders {}, rejected {}, duplicates {}, bots {}",
            c.used, c.orders, c.rejected, c.duplicates, c.bots
        )?;
        writeln!(
            f,
            "first engine, this build: {:.2} µs per observe, {:.2} µs per recommend, {} refreshes of {:.0} µs",
            self.observe_micros, self.recommend_micros, self.refreshes, self.refresh_micros
        )?;
        writeln!(
            f,
            "{:<14} {:<20} {:>6} {:>11} {:>8}",
            "protocol",
            "variant",
            "cases",
            format!("hit@{}", self.k),
            "mrr"
        )?;
        for r in &self.rows {
            writeln!(
                f,
                "{:<14} {:<20} {:>6} {:>11.4} {:>8.4}",
                r.protocol.as_str(),
                r.variant,
                r.metrics.cases,
                r.metrics.hit_rate(),
                r.metrics.mrr()
            )?;
        }
        Ok(())
    }
}

/// Runs engines side by side over one event stream and scores them on its purchases.
pub struct Evaluation {
    k: usize,
    engines: Vec<(String, RecsEngine)>,
    /// The same engines on the next unseen product, beside their baselines.
    next: NextProduct,
    baseline: PopularityBaseline,
    /// Per protocol: one per engine, then the baseline.
    metrics: HashMap<Protocol, Vec<Metrics>>,
    /// What the stage's de-duplication window would keep.
    seen: HashMap<u128, Seen>,
    sessions: Sessions,
    pending: HashMap<String, PendingSession>,
    counts: FeedCounts,
    limits: Limits,
    bots: BotCache,
    clock: i64,
    next_cleanup: i64,
    /// Time spent in the first engine's observe (calls without and with a refresh) and recommend,
    /// and how many recommends.
    observe_nanos: u128,
    observe_calls: u64,
    refresh_nanos: u128,
    recommend_nanos: Cell<u128>,
    recommends: Cell<u64>,
}

/// Inactivity that ends an inferred session (the stage's default).
const SESSION_TIMEOUT_MICROS: i64 = 30 * 60 * 1_000_000;
/// Sessions whose lists are kept for their orders (event time since their start).
const PENDING_MICROS: i64 = 6 * 3_600 * 1_000_000;

impl Evaluation {
    /// Engines named for the report (the first one's exclusions also apply to the baseline).
    pub fn new(engines: Vec<(String, RecsConfig)>, k: usize) -> Self {
        let n = engines.len() + 1;
        Evaluation {
            k,
            next: NextProduct::new(engines.iter().map(|(name, _)| name.clone()).collect(), k),
            engines: engines
                .into_iter()
                .map(|(name, config)| (name, RecsEngine::new(config)))
                .collect(),
            baseline: PopularityBaseline::default(),
            metrics: Protocol::ALL
                .iter()
                .map(|p| (*p, vec![Metrics::default(); n]))
                .collect(),
            seen: HashMap::new(),
            sessions: Sessions::new(SESSION_TIMEOUT_MICROS, HashMap::new()),
            pending: HashMap::new(),
            counts: FeedCounts::default(),
            limits: Limits::default(),
            bots: BotCache::default(),
            clock: i64::MIN,
            next_cleanup: i64::MIN,
            observe_nanos: 0,
            observe_calls: 0,
            refresh_nanos: 0,
            recommend_nanos: Cell::new(0),
            recommends: Cell::new(0),
        }
    }

    pub fn engines(&self) -> &[(String, RecsEngine)] {
        &self.engines
    }

    /// Feeds one stream record as the stage would: rejects, repeated event ids and bots are
    /// dropped; the session is the client's or inferred.
    pub fn feed_record(&mut self, payload: &[u8], arrival_micros: i64) -> Fed {
        let seen = &mut self.seen;
        let valid = match admit(
            payload,
            arrival_micros,
            &self.limits,
            &mut self.bots,
            |id, now| {
                let sighting = Seen::sighting(seen.get(&id), now);
                if sighting == Sighting::First {
                    seen.insert(id, now);
                }
                sighting
            },
        ) {
            Admission::Rejected(_) => {
                self.counts.rejected += 1;
                return Fed::Rejected;
            }
            Admission::Duplicate => {
                self.counts.duplicates += 1;
                return Fed::Duplicate;
            }
            Admission::Admitted { bot: true, .. } => {
                self.counts.bots += 1;
                return Fed::Bot;
            }
            Admission::Admitted { event, .. } => event,
        };
        let session = self.sessions.of(&valid).0.to_owned();
        self.feed(&valid, &session);
        Fed::Used
    }

    /// Feeds one valid, unique, non-bot event: asks for the cases it closes or opens, then lets
    /// every engine observe it.
    pub fn feed(&mut self, event: &ValidEvent<'_>, session_id: &str) {
        self.counts.used += 1;
        let t = event.event_time;
        self.clock = self.clock.max(t);
        let e = &event.event;
        let shopper = e
            .user_id
            .as_deref()
            .or(e.anonymous_id.as_deref())
            .unwrap_or_default()
            .to_owned();
        let products: Vec<&str> = e
            .properties
            .as_ref()
            .and_then(|p| p.products.as_deref())
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p.product_id.as_deref())
            .collect();
        if !self.pending.contains_key(session_id) {
            let at_start = self.ask(&shopper, None, t);
            self.pending.insert(
                session_id.to_owned(),
                PendingSession {
                    started: t,
                    at_start,
                    at_first_view: None,
                },
            );
        }
        if event.name == EventName::ProductViewed
            && let Some(&product) = products.first()
            && self
                .pending
                .get(session_id)
                .is_some_and(|p| p.at_first_view.is_none())
        {
            let asked = self.ask(&shopper, Some(product), t);
            if let Some(p) = self.pending.get_mut(session_id) {
                p.at_first_view = Some(asked);
            }
        }
        if event.name == EventName::OrderCompleted && !products.is_empty() {
            self.counts.orders += 1;
            let mut relevant = products.clone();
            relevant.sort_unstable();
            relevant.dedup();
            let now = self.ask(&shopper, None, t);
            self.score(Protocol::BeforeOrder, &now, &relevant);
            if let Some(p) = self.pending.get(session_id) {
                let at_start = &p.at_start;
                let first_view = p.at_first_view.as_ref();
                let mut m = std::mem::take(&mut self.metrics);
                score_into(&mut m, Protocol::SessionStart, at_start, &relevant);
                if let Some(asked) = first_view {
                    let others: Vec<&str> = relevant
                        .iter()
                        .copied()
                        .filter(|p| Some(*p) != asked.context.as_deref())
                        .collect();
                    if !others.is_empty() {
                        score_into(&mut m, Protocol::ProductPage, asked, &others);
                    }
                }
                self.metrics = m;
            }
            self.baseline.record_order(relevant.iter().copied());
        }
        self.next.feed(event, session_id, &self.engines);
        for (i, (_, engine)) in self.engines.iter_mut().enumerate() {
            let refreshes = engine.stats().refreshes;
            let started = Instant::now();
            engine.observe(event, session_id);
            let spent = started.elapsed().as_nanos();
            if i == 0 && engine.stats().refreshes == refreshes {
                self.observe_nanos += spent;
                self.observe_calls += 1;
            } else if i == 0 {
                self.refresh_nanos += spent;
            }
        }
        if t >= self.next_cleanup {
            self.next_cleanup = t + 600 * 1_000_000;
            let cutoff = t - PENDING_MICROS;
            self.pending.retain(|_, p| p.started >= cutoff);
            self.sessions.expire(t - 2 * SESSION_TIMEOUT_MICROS);
            self.sessions.take_dirty();
            for (_, engine) in &mut self.engines {
                engine.expire(t);
                engine.take_dirty();
            }
        }
    }

    /// Every engine's top k and the baseline's, for a shopper at `t`.
    fn ask(&self, shopper: &str, context: Option<&str>, t: i64) -> Asked {
        let query = RecsQuery {
            k: self.k,
            context_product: context,
            category: None,
        };
        let mut lists: Vec<Vec<String>> = self
            .engines
            .iter()
            .enumerate()
            .map(|(i, (_, e))| {
                let started = Instant::now();
                let recs = e.recommend(shopper, &query, t);
                if i == 0 {
                    let spent = started.elapsed().as_nanos();
                    self.recommend_nanos.set(self.recommend_nanos.get() + spent);
                    self.recommends.set(self.recommends.get() + 1);
                }
                recs.into_iter().map(|r| r.product_id).collect()
            })
            .collect();
        let first = self.engines.first().map(|(_, e)| e);
        let baseline = self
            .baseline
            .top(self.k, |p| {
                context == Some(p) || first.is_some_and(|e| e.is_excluded(shopper, p, t))
            })
            .into_iter()
            .map(str::to_owned)
            .collect();
        lists.push(baseline);
        Asked {
            lists,
            context: context.map(str::to_owned),
        }
    }

    fn score(&mut self, protocol: Protocol, asked: &Asked, relevant: &[&str]) {
        score_into(&mut self.metrics, protocol, asked, relevant);
    }

    /// The engines and the baselines on the next unseen product ([`super::next`]).
    pub fn next_report(&self) -> NextReport {
        self.next.report()
    }

    pub fn report(&self) -> EvalReport {
        let mut rows = Vec::new();
        for protocol in Protocol::ALL {
            let Some(ms) = self.metrics.get(&protocol) else {
                continue;
            };
            for (i, m) in ms.iter().enumerate() {
                let variant = self
                    .engines
                    .get(i)
                    .map_or(BASELINE, |(name, _)| name.as_str());
                rows.push(Row {
                    protocol,
                    variant: variant.to_owned(),
                    metrics: *m,
                });
            }
        }
        let refreshes = self.engines.first().map_or(0, |(_, e)| e.stats().refreshes);
        let per = |nanos: u128, n: u64| {
            if n == 0 {
                0.0
            } else {
                nanos as f64 / n as f64 / 1e3
            }
        };
        EvalReport {
            k: self.k,
            counts: self.counts,
            rows,
            observe_micros: per(self.observe_nanos, self.observe_calls),
            refresh_micros: per(self.refresh_nanos, refreshes),
            refreshes,
            recommend_micros: per(self.recommend_nanos.get(), self.recommends.get()),
        }
    }
}

fn score_into(
    metrics: &mut HashMap<Protocol, Vec<Metrics>>,
    protocol: Protocol,
    asked: &Asked,
    relevant: &[&str],
) {
    if let Some(ms) = metrics.get_mut(&protocol) {
        for (m, list) in ms.iter_mut().zip(&asked.lists) {
            m.record(list.iter().map(String::as_str), relevant);
        }
    }
}

/// What `shoplake eval` collects while the real stage runs (through [`crate::probe::Probed`]):
/// for every order, just before the engines see it, what the storefront would have been served
/// for that shopper (the `GET /v1/recommendations` function), and the same cases through
/// `variants` and the popularity baseline side by side.
pub struct OrderProbe {
    k: usize,
    /// The served engine, asked the way the endpoint asks.
    pub served: Metrics,
    /// The same cases through every variant, and the popularity baseline; and the next unseen
    /// products ([`Evaluation::next_report`]).
    pub side_by_side: Evaluation,
}

impl OrderProbe {
    pub fn new(variants: Vec<(String, RecsConfig)>, k: usize) -> Self {
        OrderProbe {
            k,
            served: Metrics::default(),
            side_by_side: Evaluation::new(variants, k),
        }
    }

    /// One admitted event, before `live` sees it.
    pub fn observe(&mut self, event: &ValidEvent<'_>, session_id: &str, live: &crate::Live) {
        if event.name == EventName::OrderCompleted {
            let e = &event.event;
            let bought: Vec<&str> = e
                .properties
                .as_ref()
                .and_then(|p| p.products.as_ref())
                .map(|ps| ps.iter().filter_map(|p| p.product_id.as_deref()).collect())
                .unwrap_or_default();
            let shopper = e.user_id.as_deref().or(e.anonymous_id.as_deref());
            if let Some(shopper) = shopper
                && !bought.is_empty()
            {
                let query = RecsQuery {
                    k: self.k,
                    context_product: None,
                    category: None,
                };
                if let Some((_, items)) = live.recommend(shopper, &query) {
                    self.served
                        .record(items.iter().map(|i| i.product_id.as_str()), &bought);
                }
            }
        }
        self.side_by_side.feed(event, session_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_rate_and_mrr_by_hand() {
        let mut m = Metrics::default();
        m.record(["a", "b", "c"], &["c"]); // rank 3
        m.record(["a", "b", "c"], &["b", "a"]); // rank 1
        m.record(["a", "b"], &["x"]); // miss
        m.record([], &["x"]); // miss
        assert_eq!((m.cases, m.hits), (4, 2));
        assert!((m.hit_rate() - 0.5).abs() < 1e-12);
        assert!((m.mrr() - (1.0 / 3.0 + 1.0) / 4.0).abs() < 1e-12);
        assert_eq!(Metrics::default().mrr(), 0.0);
    }

    #[test]
    fn baseline_is_most_bought_minus_exclusions() {
        let mut b = PopularityBaseline::default();
        b.record_order(["a", "b", "b"]); // b counted once per order
        b.record_order(["b", "c"]);
        b.record_order(["c"]);
        b.record_order(["c"]);
        assert_eq!(b.top(2, |_| false), vec!["c", "b"]);
        assert_eq!(b.top(5, |p| p == "c"), vec!["b", "a"]);
    }
}

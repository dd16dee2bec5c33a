//! Recommendations judged as a merchandiser would (issue 22): does the list hold the **next
//! product the shopper views or buys that they have not already seen in the session**?
//!
//! Three moments of asking ([`Moment`]): at the session's first event (a home page), on the
//! session's first product page (that product as `context_product`), and when checkout starts (a
//! cart page). A case opened at a moment is closed by the shopper's next `product_viewed` or
//! `order_completed` (in this session or a later one, within [`HORIZON_MICROS`]) that holds a
//! product not seen in the session by then; the relevant products are those. Products the session
//! has viewed, added or ordered are taken out of every list before it is cut to k, so no list
//! wastes a slot on what the shopper has in front of them. Cases never closed are counted apart.
//!
//! Every list is scored the same way: hit rate@k, MRR, NDCG@k, catalogue coverage (share of the
//! products seen in the stream that some list showed) and novelty (mean self-information,
//! `−log2` of a recommended product's share of product views so far). Lists side by side:
//! - the engines under test (named, e.g. the served configuration and its variants);
//! - `popularity`: the most-bought products so far;
//! - `trending`: the most-viewed products of the last 24 hours of event time;
//! - `recently viewed`: the shopper's own latest product views, most recent first;
//! - `co-occurrence`: the first engine's item-to-item neighbours (bought and viewed together) of
//!   the page's product, else of the shopper's latest viewed product, and nothing else.
//!
//! Popularity and trending are the non-personalised baselines: they show every shopper the same
//! list.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;

use serde::Serialize;
use shoplake_events::{EventName, ValidEvent};

use super::{Reason, RecsEngine, RecsQuery};

/// How long a case waits for its shopper's next unseen product.
pub const HORIZON_MICROS: i64 = 7 * 86_400 * 1_000_000;
const TRENDING_WINDOW_MICROS: i64 = 24 * 3_600 * 1_000_000;
/// How often (event time) the trending list is recomputed.
const TRENDING_REFRESH_MICROS: i64 = 60 * 1_000_000;
/// Latest views kept per shopper for the recently-viewed and co-occurrence lists.
const RECENT_VIEWS: usize = 20;

/// When a case is asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Moment {
    SessionStart,
    FirstProduct,
    BeforeCheckout,
}

impl Moment {
    pub const ALL: [Moment; 3] = [
        Moment::SessionStart,
        Moment::FirstProduct,
        Moment::BeforeCheckout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Moment::SessionStart => "session_start",
            Moment::FirstProduct => "first_product",
            Moment::BeforeCheckout => "before_checkout",
        }
    }
}

/// The baselines' names.
pub const POPULARITY: &str = "popularity";
pub const TRENDING: &str = "trending";
pub const RECENTLY_VIEWED: &str = "recently viewed";
pub const CO_OCCURRENCE: &str = "co-occurrence";

/// Sums over the closed cases of one list at one moment.
#[derive(Clone, Debug, Default)]
struct Sums {
    cases: u64,
    hits: u64,
    reciprocal_ranks: f64,
    ndcg: f64,
    shown: HashSet<String>,
    novelty: f64,
    items: u64,
}

/// One list at one moment.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Figures {
    pub moment: Moment,
    pub list: String,
    pub cases: u64,
    pub hit_rate: f64,
    pub mrr: f64,
    pub ndcg: f64,
    /// Share of the products seen in the stream that this list showed at least once.
    pub coverage: f64,
    /// Mean −log2(share of product views) of the products shown, in bits.
    pub novelty: f64,
}

/// Every list at every moment.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NextReport {
    pub k: usize,
    /// Cases opened and never closed within the horizon (or by the end of the stream).
    pub unclosed: u64,
    pub rows: Vec<Figures>,
}

impl NextReport {
    pub fn get(&self, moment: Moment, list: &str) -> Option<&Figures> {
        self.rows
            .iter()
            .find(|r| r.moment == moment && r.list == list)
    }

    /// The best hit rate of the non-personalised baselines at `moment`.
    pub fn best_non_personalised(&self, moment: Moment) -> f64 {
        [POPULARITY, TRENDING]
            .iter()
            .filter_map(|l| self.get(moment, l))
            .map(|f| f.hit_rate)
            .fold(0.0, f64::max)
    }
}

impl fmt::Display for NextReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<16} {:<26} {:>6} {:>8} {:>7} {:>8} {:>9} {:>8}",
            "moment",
            "list",
            "cases",
            format!("hit@{}", self.k),
            "mrr",
            format!("ndcg@{}", self.k),
            "coverage",
            "novelty"
        )?;
        for r in &self.rows {
            writeln!(
                f,
                "{:<16} {:<26} {:>6} {:>8.4} {:>7.4} {:>8.4} {:>9.3} {:>8.2}",
                r.moment.as_str(),
                r.list,
                r.cases,
                r.hit_rate,
                r.mrr,
                r.ndcg,
                r.coverage,
                r.novelty
            )?;
        }
        writeln!(f, "cases never closed: {}", self.unclosed)
    }
}

/// An open case: the lists shown and what the session had seen.
#[derive(Debug)]
struct Case {
    moment: Moment,
    asked_at: i64,
    excluded: HashSet<String>,
    lists: Vec<Vec<String>>,
}

#[derive(Debug, Default)]
struct SessionState {
    seen: HashSet<String>,
    asked_product: bool,
    asked_checkout: bool,
    last: i64,
}

/// Runs engines and baselines side by side over one event stream (valid, unique, non-bot
/// events with their session) and scores them on next unseen products.
pub struct NextProduct {
    k: usize,
    /// The engines' names, as [`NextProduct::feed`] is given them.
    engines: Vec<String>,
    sums: HashMap<Moment, Vec<Sums>>,
    sessions: HashMap<String, SessionState>,
    /// Open cases by the shopper id they were asked for.
    open: HashMap<String, Vec<Case>>,
    unclosed: u64,
    bought: HashMap<String, u64>,
    views: HashMap<String, u64>,
    total_views: u64,
    window: VecDeque<(i64, String)>,
    window_counts: HashMap<String, u64>,
    trending: Vec<String>,
    trending_at: i64,
    recent: HashMap<String, VecDeque<String>>,
    clock: i64,
    next_cleanup: i64,
}

impl NextProduct {
    /// Lists of the engines named `engines` (given to each [`NextProduct::feed`] in this order),
    /// then the baselines; the first engine's neighbours are the co-occurrence list.
    pub fn new(engines: Vec<String>, k: usize) -> Self {
        let lists = engines.len() + 4;
        NextProduct {
            k: k.max(1),
            engines,
            sums: Moment::ALL
                .iter()
                .map(|m| (*m, vec![Sums::default(); lists]))
                .collect(),
            sessions: HashMap::new(),
            open: HashMap::new(),
            unclosed: 0,
            bought: HashMap::new(),
            views: HashMap::new(),
            total_views: 0,
            window: VecDeque::new(),
            window_counts: HashMap::new(),
            trending: Vec::new(),
            trending_at: i64::MIN,
            recent: HashMap::new(),
            clock: i64::MIN,
            next_cleanup: i64::MIN,
        }
    }

    fn list_names(&self) -> Vec<String> {
        let mut names = self.engines.clone();
        names.extend([POPULARITY, TRENDING, RECENTLY_VIEWED, CO_OCCURRENCE].map(String::from));
        names
    }

    /// One valid, unique, non-bot event of `session_id`, before any of `engines` (the ones named
    /// at [`NextProduct::new`]) has seen it; the caller feeds and expires the engines.
    pub fn feed(
        &mut self,
        event: &ValidEvent<'_>,
        session_id: &str,
        engines: &[(String, RecsEngine)],
    ) {
        let t = event.event_time;
        self.clock = self.clock.max(t);
        let e = &event.event;
        let ids: Vec<&str> = [e.user_id.as_deref(), e.anonymous_id.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        let shopper = ids.first().copied().unwrap_or_default().to_owned();
        let products: Vec<String> = e
            .properties
            .as_ref()
            .and_then(|p| p.products.as_deref())
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p.product_id.as_deref().map(str::to_owned))
            .collect();
        let viewed = event.name == EventName::ProductViewed;
        let ordered = event.name == EventName::OrderCompleted;

        // Close the shopper's open cases this view or order answers.
        if (viewed || ordered) && !products.is_empty() {
            for id in &ids {
                self.close(id, &products);
            }
        }
        if !shopper.is_empty() {
            let new_session = !self.sessions.contains_key(session_id);
            let state = self.sessions.entry(session_id.to_owned()).or_default();
            state.last = t;
            let ask_product = viewed && !state.asked_product && !products.is_empty();
            let ask_checkout = event.name == EventName::CheckoutStarted && !state.asked_checkout;
            state.asked_product |= ask_product;
            state.asked_checkout |= ask_checkout;
            let mut seen = state.seen.clone();
            if new_session {
                self.ask(
                    engines,
                    Moment::SessionStart,
                    &shopper,
                    None,
                    seen.clone(),
                    t,
                );
            }
            if ask_product {
                seen.extend(products.iter().cloned());
                let context = products.first();
                self.ask(engines, Moment::FirstProduct, &shopper, context, seen, t);
            } else if ask_checkout {
                seen.extend(products.iter().cloned());
                self.ask(engines, Moment::BeforeCheckout, &shopper, None, seen, t);
            }
            if matches!(
                event.name,
                EventName::ProductViewed
                    | EventName::ProductAdded
                    | EventName::ProductClicked
                    | EventName::CartViewed
                    | EventName::CheckoutStarted
                    | EventName::OrderCompleted
            ) && let Some(state) = self.sessions.get_mut(session_id)
            {
                state.seen.extend(products.iter().cloned());
            }
        }

        // What the baselines learn from the event.
        if viewed {
            for p in &products {
                *self.views.entry(p.clone()).or_default() += 1;
                self.total_views += 1;
                self.window.push_back((t, p.clone()));
                *self.window_counts.entry(p.clone()).or_default() += 1;
                for id in &ids {
                    let recent = self.recent.entry((*id).to_owned()).or_default();
                    recent.retain(|q| q != p);
                    recent.push_front(p.clone());
                    recent.truncate(RECENT_VIEWS);
                }
            }
        }
        if ordered {
            let distinct: HashSet<&String> = products.iter().collect();
            for p in distinct {
                *self.bought.entry(p.clone()).or_default() += 1;
            }
        }
        if t >= self.next_cleanup {
            self.cleanup(t);
        }
    }

    fn close(&mut self, shopper: &str, products: &[String]) {
        let Some(cases) = self.open.get_mut(shopper) else {
            return;
        };
        let mut still_open = Vec::new();
        for case in std::mem::take(cases) {
            let relevant: Vec<&str> = products
                .iter()
                .filter(|p| !case.excluded.contains(*p))
                .map(String::as_str)
                .collect();
            if relevant.is_empty() {
                still_open.push(case);
                continue;
            }
            let (views, total) = (&self.views, self.total_views);
            let catalogue = self.views.len().max(1) as f64;
            if let Some(sums) = self.sums.get_mut(&case.moment) {
                for (s, list) in sums.iter_mut().zip(&case.lists) {
                    score(s, list, &relevant, |p| {
                        let n = views.get(p).copied().unwrap_or(0) as f64;
                        -((n + 1.0) / (total as f64 + catalogue)).log2()
                    });
                }
            }
        }
        if still_open.is_empty() {
            self.open.remove(shopper);
        } else if let Some(cases) = self.open.get_mut(shopper) {
            *cases = still_open;
        }
    }

    fn ask(
        &mut self,
        engines: &[(String, RecsEngine)],
        moment: Moment,
        shopper: &str,
        context: Option<&String>,
        excluded: HashSet<String>,
        t: i64,
    ) {
        self.refresh_trending(t);
        let k = self.k;
        // Enough to fill k after taking out what the session has seen.
        let wide = (k + excluded.len()).min(k + 200);
        let cut = |items: &mut dyn Iterator<Item = String>| -> Vec<String> {
            let mut out = Vec::with_capacity(k);
            for p in items {
                if out.len() == k {
                    break;
                }
                if !excluded.contains(&p) && context != Some(&p) && !out.contains(&p) {
                    out.push(p);
                }
            }
            out
        };
        let query = RecsQuery {
            k: wide,
            context_product: context.map(String::as_str),
            category: None,
        };
        let mut lists: Vec<Vec<String>> = engines
            .iter()
            .map(|(_, e)| {
                cut(&mut e
                    .recommend(shopper, &query, t)
                    .into_iter()
                    .map(|r| r.product_id))
            })
            .collect();
        let mut popular: Vec<(&String, &u64)> = self.bought.iter().collect();
        popular.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        lists.push(cut(&mut popular.into_iter().map(|(p, _)| p.clone())));
        lists.push(cut(&mut self.trending.iter().cloned()));
        let recent = self.recent.get(shopper);
        lists.push(cut(&mut recent.into_iter().flatten().cloned()));
        let seed = context.or_else(|| recent.and_then(|r| r.front()));
        let neighbours = match (seed, engines.first()) {
            (Some(seed), Some((_, engine))) => engine
                .related(seed, wide, t)
                .into_iter()
                .filter(|r| matches!(r.reason, Reason::BoughtTogether | Reason::ViewedTogether))
                .map(|r| r.product_id)
                .collect(),
            _ => Vec::new(),
        };
        lists.push(cut(&mut neighbours.into_iter()));
        self.open.entry(shopper.to_owned()).or_default().push(Case {
            moment,
            asked_at: t,
            excluded,
            lists,
        });
    }

    fn refresh_trending(&mut self, t: i64) {
        while let Some((at, p)) = self.window.front() {
            if *at >= t - TRENDING_WINDOW_MICROS {
                break;
            }
            if let Some(n) = self.window_counts.get_mut(p) {
                *n -= 1;
                if *n == 0 {
                    self.window_counts.remove(p);
                }
            }
            self.window.pop_front();
        }
        if t < self.trending_at.saturating_add(TRENDING_REFRESH_MICROS) {
            return;
        }
        self.trending_at = t;
        let mut ranked: Vec<(&String, &u64)> = self.window_counts.iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        self.trending = ranked
            .into_iter()
            .take(self.k + 200)
            .map(|(p, _)| p.clone())
            .collect();
    }

    fn cleanup(&mut self, t: i64) {
        self.next_cleanup = t + 600 * 1_000_000;
        let horizon = t - HORIZON_MICROS;
        let mut unclosed = 0;
        self.open.retain(|_, cases| {
            let before = cases.len();
            cases.retain(|c| c.asked_at >= horizon);
            unclosed += (before - cases.len()) as u64;
            !cases.is_empty()
        });
        self.unclosed += unclosed;
        // A session idle for two hours is over (the stage's timeout is 30 minutes).
        let idle = t - 2 * 3_600 * 1_000_000;
        self.sessions.retain(|_, s| s.last >= idle);
    }

    pub fn report(&self) -> NextReport {
        let names = self.list_names();
        let catalogue = self.views.len().max(1) as f64;
        let mut rows = Vec::new();
        for moment in Moment::ALL {
            let Some(sums) = self.sums.get(&moment) else {
                continue;
            };
            for (s, name) in sums.iter().zip(&names) {
                let per = |x: f64, n: u64| if n == 0 { 0.0 } else { x / n as f64 };
                rows.push(Figures {
                    moment,
                    list: name.clone(),
                    cases: s.cases,
                    hit_rate: per(s.hits as f64, s.cases),
                    mrr: per(s.reciprocal_ranks, s.cases),
                    ndcg: per(s.ndcg, s.cases),
                    coverage: s.shown.len() as f64 / catalogue,
                    novelty: per(s.novelty, s.items),
                });
            }
        }
        let still_open: usize = self.open.values().map(Vec::len).sum();
        NextReport {
            k: self.k,
            unclosed: self.unclosed + still_open as u64,
            rows,
        }
    }
}

/// Adds one closed case of one list to `s`.
fn score(s: &mut Sums, list: &[String], relevant: &[&str], information: impl Fn(&str) -> f64) {
    s.cases += 1;
    let mut dcg = 0.0;
    let mut first = None;
    for (i, p) in list.iter().enumerate() {
        if relevant.contains(&p.as_str()) {
            dcg += 1.0 / ((i + 2) as f64).log2();
            first.get_or_insert(i + 1);
        }
        if !s.shown.contains(p) {
            s.shown.insert(p.clone());
        }
        s.novelty += information(p);
        s.items += 1;
    }
    if let Some(rank) = first {
        s.hits += 1;
        s.reciprocal_ranks += 1.0 / rank as f64;
    }
    let ideal: f64 = (0..relevant.len().min(list.len().max(1)))
        .map(|i| 1.0 / ((i + 2) as f64).log2())
        .sum();
    if ideal > 0.0 {
        s.ndcg += dcg / ideal;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_rank_and_ndcg_by_hand() {
        let mut s = Sums::default();
        let list: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        score(&mut s, &list, &["c"], |_| 1.0); // rank 3: dcg 1/log2(4) = 0.5, ideal 1
        score(&mut s, &list, &["x"], |_| 1.0); // miss
        score(&mut s, &list, &["a", "b"], |_| 1.0); // ranks 1 and 2: ideal too
        assert_eq!((s.cases, s.hits), (3, 2));
        assert!((s.reciprocal_ranks - (1.0 / 3.0 + 1.0)).abs() < 1e-12);
        assert!((s.ndcg - 1.5).abs() < 1e-12);
        assert_eq!(s.shown.len(), 3);
        assert_eq!((s.items, s.novelty), (9, 9.0));
    }
}

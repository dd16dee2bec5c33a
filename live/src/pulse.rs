//! The store's last hour, minute by minute, as the stream shows it: what the dashboards' Live page
//! reads (`GET /v1/live/pulse`), from the stage's own state rather than the lake, so that it is
//! seconds old rather than a compaction old.
//!
//! Each minute of event time keeps its events, sessions, orders (each order id once, however
//! often its `order_completed` is re-sent), revenue in the reporting currency, and per product
//! its views, add-to-carts, orders and revenue. Minutes older than [`MINUTES`] before the wall
//! clock are dropped as the clock moves, so memory is bounded by one hour of distinct sessions,
//! orders and products. Events more than a minute ahead of the clock are not counted.
//!
//! The pulse is not saved with the checkpoint: a stage that restarts empties it (the records it
//! reads again would otherwise count twice) and it fills again over the next hour.

use std::collections::{HashMap, HashSet, VecDeque};

use parking_lot::Mutex;
use serde::Serialize;
use shoplake_events::{EventName, ValidEvent, format_timestamp};
use shoplake_transform::enrich::fx::FxRates;

/// Minutes kept.
pub const MINUTES: i64 = 60;
/// Products listed under "top" and "trending".
const TOP: usize = 10;
/// The recent part of the hour that "trending" compares with the rest.
const RECENT_MINUTES: i64 = 10;
/// Views in the recent minutes a product needs to be trending.
const MIN_RECENT_VIEWS: u64 = 3;
const MINUTE_MICROS: i64 = 60_000_000;

#[derive(Clone, Debug, Default)]
struct ProductCounts {
    views: u64,
    adds: u64,
    orders: u64,
    revenue: f64,
}

#[derive(Debug, Default)]
struct Minute {
    /// Minutes since the epoch.
    at: i64,
    events: u64,
    sessions: HashSet<String>,
    orders: HashSet<String>,
    revenue: f64,
    products: HashMap<String, ProductCounts>,
}

/// The last hour of the stream.
#[derive(Debug)]
pub struct Pulse {
    fx: FxRates,
    minutes: Mutex<VecDeque<Minute>>,
    /// Product names seen (kept while the product is in the window).
    names: Mutex<HashMap<String, String>>,
}

/// One minute of [`PulseView`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MinuteView {
    pub minute: String,
    pub events: u64,
    pub sessions: u64,
    pub orders: u64,
    pub revenue: f64,
}

/// A product's hour.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProductView {
    pub product_id: String,
    pub name: Option<String>,
    pub views: u64,
    pub adds: u64,
    pub orders: u64,
    pub revenue: f64,
}

/// A product whose views grew: views in the last [`RECENT_MINUTES`] against the minutes before.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrendingView {
    pub product_id: String,
    pub name: Option<String>,
    pub views_recent: u64,
    pub views_before: u64,
    /// Views per minute recently over views per minute before (with one view added before, so
    /// that a product new this hour does not divide by zero).
    pub lift: f64,
}

/// `GET /v1/live/pulse`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PulseView {
    pub as_of: String,
    pub currency: String,
    /// [`MINUTES`] minutes, oldest first, the current (incomplete) one last; zero where nothing
    /// happened.
    pub minutes: Vec<MinuteView>,
    pub top_products: Vec<ProductView>,
    pub trending: Vec<TrendingView>,
}

fn name_of(names: &HashMap<String, String>, id: &str) -> Option<String> {
    names.get(id).cloned()
}

impl Pulse {
    pub fn new(fx: FxRates) -> Self {
        Pulse {
            fx,
            minutes: Mutex::new(VecDeque::new()),
            names: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets everything (a stage that restarts).
    pub fn reset(&self) {
        self.minutes.lock().clear();
        self.names.lock().clear();
    }

    /// Counts one admitted event, as of wall-clock time `now_micros`.
    pub fn observe(&self, event: &ValidEvent<'_>, session_id: &str, now_micros: i64) {
        let now = now_micros.div_euclid(MINUTE_MICROS);
        let at = event.event_time.div_euclid(MINUTE_MICROS);
        if at <= now - MINUTES || at > now + 1 {
            return;
        }
        let props = event.event.properties.as_ref();
        let mut minutes = self.minutes.lock();
        expire(&mut minutes, now);
        let index = match minutes.binary_search_by_key(&at, |m| m.at) {
            Ok(i) => i,
            Err(i) => {
                minutes.insert(
                    i,
                    Minute {
                        at,
                        ..Minute::default()
                    },
                );
                i
            }
        };
        let Some(minute) = minutes.get_mut(index) else {
            return;
        };
        minute.events += 1;
        if !session_id.is_empty() && !minute.sessions.contains(session_id) {
            minute.sessions.insert(session_id.to_owned());
        }
        let products = props.and_then(|p| p.products.as_deref()).unwrap_or(&[]);
        if !products.is_empty() {
            let mut names = self.names.lock();
            for product in products {
                if let (Some(id), Some(name)) = (&product.product_id, &product.name)
                    && !names.contains_key(&**id)
                {
                    names.insert(id.to_string(), name.to_string());
                }
            }
        }
        let count = |minute: &mut Minute, f: &dyn Fn(&mut ProductCounts)| {
            for id in products.iter().filter_map(|p| p.product_id.as_deref()) {
                f(minute.products.entry(id.to_owned()).or_default());
            }
        };
        match event.name {
            EventName::ProductViewed => count(minute, &|c| c.views += 1),
            EventName::ProductAdded => count(minute, &|c| c.adds += 1),
            EventName::OrderCompleted => {
                let order = props.and_then(|p| p.order_id.as_deref()).unwrap_or("");
                if order.is_empty() || !minute.orders.insert(order.to_owned()) {
                    return;
                }
                let rate = props
                    .and_then(|p| p.currency.as_deref())
                    .and_then(|c| self.fx.rate(c))
                    .map_or(0.0, |r| r as f64 / 1e8);
                let revenue = props.and_then(|p| p.revenue.or(p.total)).unwrap_or(0.0);
                minute.revenue += revenue * rate;
                for product in products {
                    let Some(id) = product.product_id.as_deref() else {
                        continue;
                    };
                    let c = minute.products.entry(id.to_owned()).or_default();
                    c.orders += 1;
                    let quantity = product.quantity.unwrap_or(1).max(0) as f64;
                    c.revenue += product.price.unwrap_or(0.0) * quantity * rate;
                }
            }
            _ => {}
        }
    }

    /// The last hour as of wall-clock time `now_micros`.
    pub fn view(&self, now_micros: i64) -> PulseView {
        let now = now_micros.div_euclid(MINUTE_MICROS);
        let mut minutes = self.minutes.lock();
        expire(&mut minutes, now);
        let mut by_product: HashMap<&str, (ProductCounts, u64)> = HashMap::new();
        let mut series = Vec::with_capacity(MINUTES as usize);
        for at in now - MINUTES + 1..=now {
            let minute = minutes
                .binary_search_by_key(&at, |m| m.at)
                .ok()
                .and_then(|i| minutes.get(i));
            series.push(MinuteView {
                minute: format_timestamp(at * MINUTE_MICROS),
                events: minute.map_or(0, |m| m.events),
                sessions: minute.map_or(0, |m| m.sessions.len() as u64),
                orders: minute.map_or(0, |m| m.orders.len() as u64),
                revenue: minute.map_or(0.0, |m| (m.revenue * 100.0).round() / 100.0),
            });
        }
        for minute in minutes.iter() {
            let recent = minute.at > now - RECENT_MINUTES;
            for (id, c) in &minute.products {
                let (total, recent_views) = by_product.entry(id.as_str()).or_default();
                total.views += c.views;
                total.adds += c.adds;
                total.orders += c.orders;
                total.revenue += c.revenue;
                if recent {
                    *recent_views += c.views;
                }
            }
        }
        let mut names = self.names.lock();
        names.retain(|id, _| by_product.contains_key(id.as_str()));
        let mut top: Vec<ProductView> = by_product
            .iter()
            .map(|(id, (c, _))| ProductView {
                product_id: (*id).to_owned(),
                name: name_of(&names, id),
                views: c.views,
                adds: c.adds,
                orders: c.orders,
                revenue: (c.revenue * 100.0).round() / 100.0,
            })
            .collect();
        top.sort_by(|a, b| {
            (b.orders, b.views, &a.product_id).cmp(&(a.orders, a.views, &b.product_id))
        });
        top.truncate(TOP);
        let before_minutes = (MINUTES - RECENT_MINUTES) as f64;
        let mut trending: Vec<TrendingView> = by_product
            .iter()
            .filter(|(_, (_, recent))| *recent >= MIN_RECENT_VIEWS)
            .map(|(id, (c, recent))| {
                let before = c.views - recent;
                TrendingView {
                    product_id: (*id).to_owned(),
                    name: name_of(&names, id),
                    views_recent: *recent,
                    views_before: before,
                    lift: (*recent as f64 / RECENT_MINUTES as f64)
                        / ((before + 1) as f64 / before_minutes),
                }
            })
            .collect();
        trending.sort_by(|a, b| {
            b.lift
                .total_cmp(&a.lift)
                .then_with(|| a.product_id.cmp(&b.product_id))
        });
        trending.truncate(TOP);
        PulseView {
            as_of: format_timestamp(now_micros),
            currency: self.fx.reporting().to_owned(),
            minutes: series,
            top_products: top,
            trending,
        }
    }
}

/// Drops the minutes that left the window ending at minute `now`.
fn expire(minutes: &mut VecDeque<Minute>, now: i64) {
    while minutes.front().is_some_and(|m| m.at <= now - MINUTES) {
        minutes.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoplake_events::{Limits, decode};

    const NOW: i64 = 1_780_000_000_000_000;

    fn event(name: &str, seconds_ago: i64, extra: &str) -> Vec<u8> {
        let at = format_timestamp(NOW - seconds_ago * 1_000_000);
        format!(
            r#"{{"event_id":"{}","event_name":"{name}","occurred_at":"{at}","received_at":"{at}","anonymous_id":"a1","properties":{{{extra}}}}}"#,
            uuid_like(seconds_ago, name)
        )
        .into_bytes()
    }

    fn uuid_like(n: i64, name: &str) -> String {
        format!("00000000-0000-4000-8000-{:06x}{:06x}", n, name.len())
    }

    fn feed(pulse: &Pulse, bytes: &[u8], session: &str) {
        let valid = decode(bytes, NOW, &Limits::default()).expect("valid event");
        pulse.observe(&valid, session, NOW);
    }

    #[test]
    fn the_hour_counts_each_order_once_and_finds_what_trends() {
        let pulse = Pulse::new(FxRates::defaults("USD").expect("rates"));
        let viewed = r#""products":[{"product_id":"p1","name":"Lamp"}]"#;
        for s in [10, 20, 30, 40] {
            feed(&pulse, &event("product_viewed", s, viewed), "s1");
        }
        feed(
            &pulse,
            &event(
                "product_viewed",
                50 * 60,
                r#""products":[{"product_id":"p2"}]"#,
            ),
            "s2",
        );
        let order = r#""order_id":"o1","total":12.5,"revenue":10.0,"currency":"EUR","products":[{"product_id":"p1","price":10.0,"quantity":1}]"#;
        feed(&pulse, &event("order_completed", 5, order), "s1");
        // A re-sent order_completed of the same order (a new event id) is not a second order.
        feed(&pulse, &event("order_completed", 4, order), "s1");
        // Older than the hour: not counted.
        feed(&pulse, &event("product_viewed", 61 * 60, viewed), "s3");

        let view = pulse.view(NOW);
        assert_eq!(view.minutes.len(), 60);
        let events: u64 = view.minutes.iter().map(|m| m.events).sum();
        assert_eq!(events, 7);
        let orders: u64 = view.minutes.iter().map(|m| m.orders).sum();
        assert_eq!(orders, 1);
        let revenue: f64 = view.minutes.iter().map(|m| m.revenue).sum();
        assert!((revenue - 10.8).abs() < 1e-9, "EUR 10 at 1.08: {revenue}");
        let last = view.minutes.last().expect("a minute");
        assert_eq!((last.sessions, last.orders), (1, 1));
        assert_eq!(view.top_products[0].product_id, "p1");
        assert_eq!(view.top_products[0].name.as_deref(), Some("Lamp"));
        assert_eq!(
            (view.top_products[0].views, view.top_products[0].orders),
            (4, 1)
        );
        assert_eq!(view.trending.len(), 1, "p2 had one view, 50 minutes ago");
        assert_eq!(view.trending[0].views_recent, 4);

        pulse.reset();
        assert_eq!(pulse.view(NOW).top_products.len(), 0);
    }
}

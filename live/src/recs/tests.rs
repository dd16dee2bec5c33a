//! Tests of the recommendation engine: hand-checked co-occurrence values, each signal, exclusions,
//! identity, fallbacks, restart, bounds, and the offline evaluation over the simulator.

use shoplake_simulator::{FraudMix, SimConfig, Simulator};

use super::eval::{BASELINE, EvalReport, Evaluation, Protocol};
use super::next::{CO_OCCURRENCE, Moment, NextReport, POPULARITY, RECENTLY_VIEWED, TRENDING};
use super::*;

/// Runs the evaluation of every normalisation (the default first) over one simulation: on held-out
/// orders, and on next unseen products.
fn evaluate_both(sim: SimConfig) -> (EvalReport, NextReport) {
    let default = RecsConfig::default().normalization;
    let mut variants = vec![(
        format!("{} (default)", default.as_str()),
        RecsConfig::default(),
    )];
    for &n in Normalization::ALL {
        if n != default {
            variants.push((
                n.as_str().to_owned(),
                RecsConfig {
                    normalization: n,
                    ..RecsConfig::default()
                },
            ));
        }
    }
    let mut eval = Evaluation::new(variants, 10);
    let mut sim = Simulator::new(sim);
    while let Some(record) = sim.next() {
        eval.feed_record(&record.payload, record.server_time_micros);
    }
    (eval.report(), eval.next_report())
}

/// Two seeds and settings (the second with more fraud, card testing ×4, and honest shoppers who
/// change phones and reorder more). Before each order the served engine hits at least twice as
/// often as the most-bought products; and (issue 22's target, on settings the engine was not tuned
/// on: its development used `shoplake eval`'s defaults, seed 42 and 5,000 users) on the first
/// product page, the next product the shopper views or buys that the session has not seen is in
/// the top 10 at least 1.5× as often as in the best list shown to everyone (popularity, trending).
#[test]
fn offline_evaluation_beats_popularity_twice_on_two_seeds() {
    let card_testing_heavy = FraudMix {
        card_testing: 4.0,
        account_takeover: 1.0,
        multi_account: 1.0,
    };
    // A larger run for measuring: SHOPLAKE_RECS_EVAL_SESSIONS=20000 (the default keeps the test
    // to seconds in a debug build).
    let sessions = std::env::var("SHOPLAKE_RECS_EVAL_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000);
    let changing = shoplake_simulator::Confounders {
        buy_again: 0.2,
        new_device: 0.1,
        ..shoplake_simulator::Confounders::default()
    };
    for (seed, fraud_mix, fraud_share, confounders) in [
        (1, FraudMix::default(), 0.01, Default::default()),
        (2, card_testing_heavy, 0.03, changing),
    ] {
        let (report, next) = evaluate_both(SimConfig {
            seed,
            max_sessions: Some(sessions),
            users: 1_500,
            sessions_per_hour: 300.0,
            fraud_share,
            fraud_mix,
            confounders,
            ..SimConfig::default()
        });
        println!("seed {seed}, fraud share {fraud_share}:\n{report}\n{next}");
        let default = format!("{} (default)", RecsConfig::default().normalization.as_str());
        let first_page = next.get(Moment::FirstProduct, &default).unwrap();
        assert!(
            first_page.cases > 500,
            "seed {seed}: {} cases",
            first_page.cases
        );
        let best = next.best_non_personalised(Moment::FirstProduct);
        assert!(
            first_page.hit_rate >= 1.5 * best,
            "seed {seed}: hit rate {:.4} vs {best:.4}\n{next}",
            first_page.hit_rate
        );
        for list in [POPULARITY, TRENDING, RECENTLY_VIEWED, CO_OCCURRENCE] {
            for moment in Moment::ALL {
                assert!(next.get(moment, list).unwrap().cases > 0, "{list}");
            }
        }
        // Coverage and novelty are measured: the served lists reach beyond the best sellers.
        let popular = next.get(Moment::FirstProduct, POPULARITY).unwrap();
        assert!(first_page.coverage > popular.coverage, "{next}");
        assert!(first_page.novelty > popular.novelty, "{next}");
        let ours = report.get(Protocol::BeforeOrder, &default).unwrap();
        let base = report.get(Protocol::BeforeOrder, BASELINE).unwrap();
        assert!(ours.cases > 300, "too few orders: {}", ours.cases);
        assert!(report.counts.bots > 0 && report.counts.duplicates > 0);
        assert!(
            ours.hit_rate() >= 2.0 * base.hit_rate(),
            "seed {seed}: hit rate {} vs baseline {}",
            ours.hit_rate(),
            base.hit_rate()
        );
        assert!(
            ours.mrr() >= 2.0 * base.mrr(),
            "seed {seed}: MRR {} vs baseline {}",
            ours.mrr(),
            base.mrr()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Crafted sequences.

use std::collections::{BTreeMap, HashSet};

use shoplake_events::wire::{Event, Product, Properties, Str};
use shoplake_events::{EventName, ValidEvent};

const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;
/// 2026-01-01T00:00:00Z, on a trending bucket boundary.
const T0: i64 = 1_767_225_600_000_000;

fn s(v: &str) -> Option<Str<'static>> {
    Some(Str::from(v.to_owned()))
}

fn product(id: &str, category: &str) -> Product<'static> {
    Product {
        product_id: s(id),
        category: s(category),
        quantity: Some(1),
        ..Product::default()
    }
}

fn event(
    name: EventName,
    anon: Option<&str>,
    user: Option<&str>,
    t: i64,
    products: Vec<Product<'static>>,
) -> ValidEvent<'static> {
    ValidEvent {
        event: Event {
            event_id: s(&uuid::Uuid::new_v4().to_string()),
            event_name: s(name.as_str()),
            anonymous_id: anon.and_then(s),
            user_id: user.and_then(s),
            properties: Some(Properties {
                products: (!products.is_empty()).then_some(products),
                ..Properties::default()
            }),
            ..Event::default()
        },
        name,
        schema_version: 1,
        occurred_at: t,
        sent_at: None,
        received_at: t,
        event_time: t,
        clock_skew_ms: 0,
    }
}

/// An anonymous shopper views a product.
fn view(e: &mut RecsEngine, shopper: &str, session: &str, t: i64, id: &str, category: &str) {
    let ev = event(
        EventName::ProductViewed,
        Some(shopper),
        None,
        t,
        vec![product(id, category)],
    );
    e.observe(&ev, session);
}

/// An anonymous shopper orders products.
fn order(e: &mut RecsEngine, shopper: &str, t: i64, lines: &[(&str, &str)]) {
    let ev = event(
        EventName::OrderCompleted,
        Some(shopper),
        None,
        t,
        lines.iter().map(|(id, c)| product(id, c)).collect(),
    );
    e.observe(&ev, &format!("order-{shopper}-{t}"));
}

fn ids(recs: &[Recommendation]) -> Vec<&str> {
    recs.iter().map(|r| r.product_id.as_str()).collect()
}

fn top(k: usize) -> RecsQuery<'static> {
    RecsQuery {
        k,
        ..RecsQuery::default()
    }
}

/// Each session is a new anonymous shopper viewing its products at `t`.
fn sessions(e: &mut RecsEngine, t: i64, sessions: &[&[&str]]) {
    for (i, products) in sessions.iter().enumerate() {
        let shopper = format!("shopper-{t}-{i}");
        for p in *products {
            view(e, &shopper, &format!("session-{t}-{i}"), t, p, "cat");
        }
    }
}

fn scores(e: &RecsEngine, id: &str, bought: bool) -> BTreeMap<String, f64> {
    let pid = e.products.lookup(id).unwrap();
    e.edge_scores(pid, bought)
        .into_iter()
        .map(|(q, s)| (e.products.get(q).unwrap().id.to_string(), f64::from(s)))
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-5
}

/// A is viewed with B in 2 sessions and with the popular P in 3; P is in 8 of the 10 sessions.
const CO_VIEWS: &[&[&str]] = &[
    &["A", "B"],
    &["A", "B"],
    &["A", "P"],
    &["A", "P"],
    &["A", "P"],
    &["P", "C"],
    &["P", "D"],
    &["P", "E"],
    &["P", "F"],
    &["P", "G"],
];

#[test]
fn co_occurrence_normalisations_by_hand() {
    // c_A = 5, c_B = 2, c_P = 8, c_AB = 2, c_AP = 3, n = 10 sessions; no shrinkage.
    let expected = [
        (Normalization::Raw, 2.0, 3.0),
        (
            Normalization::Cosine,
            2.0 / 10f64.sqrt(),
            3.0 / 40f64.sqrt(),
        ),
        (Normalization::Lift, 2.0 * 10.0 / 10.0, 3.0 * 10.0 / 40.0),
        (Normalization::Pmi, 2f64.ln(), 0.0), // ln(0.75) < 0 is floored
    ];
    for (n, ab, ap) in expected {
        let mut e = RecsEngine::new(RecsConfig {
            normalization: n,
            shrinkage: 0.0,
            ..RecsConfig::default()
        });
        sessions(&mut e, T0, CO_VIEWS);
        let s = scores(&e, "A", false);
        assert!(close(s["B"], ab), "{n:?}: A–B {} ≠ {ab}", s["B"]);
        assert!(close(s["P"], ap), "{n:?}: A–P {} ≠ {ap}", s["P"]);
        e.expire(T0);
        let related = e.related("A", 2, T0);
        assert_eq!(related[0].reason, Reason::ViewedTogether, "{n:?}");
        if n == Normalization::Raw {
            assert_eq!(
                related[0].product_id, "P",
                "raw counts favour the popular product"
            );
        } else {
            assert_eq!(
                related[0].product_id, "B",
                "{n:?}: the popular product must not dominate"
            );
            // Viewed-together weight 0.6 × the best neighbour's normalised score 1.
            assert!(close(related[0].score, 0.6));
        }
    }
    // Shrinkage: a pair seen c times keeps c / (c + 1): cosine A–B = 0.632 × 2/3.
    let mut e = RecsEngine::new(RecsConfig::default());
    sessions(&mut e, T0, CO_VIEWS);
    assert!(close(
        scores(&e, "A", false)["B"],
        2.0 / 10f64.sqrt() * 2.0 / 3.0
    ));
}

#[test]
fn co_occurrence_decays_with_event_time() {
    let mut e = RecsEngine::new(RecsConfig {
        normalization: Normalization::Raw,
        shrinkage: 0.0,
        half_life: std::time::Duration::from_secs(3_600),
        ..RecsConfig::default()
    });
    sessions(&mut e, T0, &[&["A", "X"]]);
    sessions(&mut e, T0 + 2 * HOUR, &[&["A", "Y"]]);
    // Two half-lives later the old pair counts a quarter.
    let s = scores(&e, "A", false);
    assert!(close(s["X"], 0.25) && close(s["Y"], 1.0), "{s:?}");
    // Cosine with decayed counts: c_A = 1.25, c_X = 0.25, c_Y = 1.
    let mut e = RecsEngine::new(RecsConfig {
        shrinkage: 0.0,
        half_life: std::time::Duration::from_secs(3_600),
        ..RecsConfig::default()
    });
    sessions(&mut e, T0, &[&["A", "X"]]);
    sessions(&mut e, T0 + 2 * HOUR, &[&["A", "Y"]]);
    let s = scores(&e, "A", false);
    assert!(close(s["X"], 0.25 / (1.25f64 * 0.25).sqrt()), "{s:?}");
    assert!(close(s["Y"], 1.0 / 1.25f64.sqrt()), "{s:?}");
    // Far later, the decay reference is rescaled and the ratios hold.
    sessions(&mut e, T0 + 100 * HOUR, &[&["Q", "R"]]);
    let s = scores(&e, "A", false);
    assert!(close(s["X"], 0.25 / (1.25f64 * 0.25).sqrt()), "{s:?}");
}

#[test]
fn bought_together_from_orders() {
    let mut e = RecsEngine::new(RecsConfig::default());
    order(&mut e, "o1", T0, &[("A", "shoes"), ("B", "socks")]);
    order(&mut e, "o2", T0, &[("A", "shoes"), ("B", "socks")]);
    order(&mut e, "o3", T0, &[("A", "shoes"), ("C", "insoles")]);
    // Cosine with shrinkage 1: A–B = 2/√6 · 2/3, A–C = 1/√3 · 1/2.
    let s = scores(&e, "A", true);
    assert!(close(s["B"], 2.0 / 6f64.sqrt() * 2.0 / 3.0), "{s:?}");
    assert!(close(s["C"], 1.0 / 3f64.sqrt() / 2.0), "{s:?}");
    e.expire(T0);
    let related = e.related("A", 2, T0);
    assert_eq!(ids(&related), ["B", "C"]);
    assert!(related.iter().all(|r| r.reason == Reason::BoughtTogether));
    assert!(close(related[0].score, 1.0));
}

#[test]
fn trending_window_moves_and_expires() {
    let mut e = RecsEngine::new(RecsConfig {
        trending_bucket: std::time::Duration::from_secs(3_600),
        trending_buckets: 3,
        ..RecsConfig::default()
    });
    for i in 0..3 {
        view(&mut e, &format!("x{i}"), &format!("sx{i}"), T0, "X", "toys");
    }
    view(&mut e, "y", "sy", T0 + 2 * HOUR, "Y", "toys");
    view(&mut e, "z", "sz", T0 + 2 * HOUR, "Z", "books");
    let toys = RecsQuery {
        k: 5,
        category: Some("toys"),
        ..RecsQuery::default()
    };
    let reasons = |r: &[Recommendation]| -> Vec<(String, Reason)> {
        r.iter().map(|r| (r.product_id.clone(), r.reason)).collect()
    };
    e.expire(T0 + 2 * HOUR);
    assert_eq!(
        reasons(&e.recommend("nobody", &toys, T0 + 2 * HOUR)),
        [
            ("X".into(), Reason::Trending),
            ("Y".into(), Reason::Trending)
        ]
    );
    // The bucket of T0 leaves the 3-hour window: X is only popular now.
    e.expire(T0 + 3 * HOUR);
    assert_eq!(
        reasons(&e.recommend("nobody", &toys, T0 + 3 * HOUR)),
        [
            ("Y".into(), Reason::Trending),
            ("X".into(), Reason::Popular)
        ]
    );
    e.expire(T0 + 5 * HOUR);
    assert_eq!(
        reasons(&e.recommend("nobody", &toys, T0 + 5 * HOUR)),
        [("X".into(), Reason::Popular), ("Y".into(), Reason::Popular)]
    );
}

#[test]
fn recently_viewed_order_and_cap() {
    let mut e = RecsEngine::new(RecsConfig {
        recently_viewed: 3,
        weights: Weights {
            recent_seed: 0.0,
            trending: 0.0,
            ..Weights::default()
        },
        ..RecsConfig::default()
    });
    for (i, p) in ["A", "B", "C", "D", "B"].iter().enumerate() {
        view(&mut e, "v", "session", T0 + i as i64 * 1_000_000, p, "cat");
    }
    e.expire(T0 + 10_000_000);
    let recs = e.recommend("v", &top(10), T0 + 10_000_000);
    assert_eq!(ids(&recs[..3]), ["B", "D", "C"]);
    assert!(recs[..3].iter().all(|r| r.reason == Reason::RecentlyViewed));
    // 0.5, halving per 24 hours since the view.
    let decayed = |age_secs: f64| 0.5 * (-age_secs / 86_400.0).exp2();
    assert!(close(recs[0].score, decayed(6.0)) && close(recs[1].score, decayed(7.0)));
    assert!(close(recs[2].score, decayed(8.0)) && recs[2].score < recs[1].score);
    // A fell off the list (cap 3) and comes back only as a trending filler.
    assert_eq!(recs[3].product_id, "A");
    assert_eq!(recs[3].reason, Reason::Trending);
    // A cart add counts 1.5 times.
    let add = event(
        EventName::ProductAdded,
        Some("v"),
        None,
        T0 + 11_000_000,
        vec![product("C", "cat")],
    );
    e.observe(&add, "session");
    let recs = e.recommend("v", &top(3), T0 + 11_000_000);
    assert_eq!(ids(&recs), ["C", "B", "D"]);
    assert!(close(recs[0].score, 0.75));
    // Taken out of the cart, it is only viewed.
    let removed = event(
        EventName::ProductRemoved,
        Some("v"),
        None,
        T0 + 11_000_000,
        vec![product("C", "cat")],
    );
    e.observe(&removed, "session");
    let recs = e.recommend("v", &top(1), T0 + 11_000_000);
    assert_eq!(recs[0].product_id, "C");
    assert!(close(recs[0].score, 0.5));
}

#[test]
fn buy_again_when_due_and_not_otherwise() {
    let mut e = RecsEngine::new(RecsConfig::default());
    // Four shoppers buy G (grocery) again after 10 days; N and M_i (shoes) are bought once.
    for i in 0..4 {
        let shopper = format!("s{i}");
        let m = format!("M{i}");
        order(
            &mut e,
            &shopper,
            T0,
            &[("G", "grocery"), ("N", "shoes"), (&m, "shoes")],
        );
        order(&mut e, &shopper, T0 + 10 * DAY, &[("G", "grocery")]);
    }
    order(
        &mut e,
        "z",
        T0 + 20 * DAY,
        &[("G", "grocery"), ("N", "shoes")],
    );
    // Two days later G is not due (typical interval 10 days, due after half) and is excluded as
    // just bought; N is never a buy-again product.
    let now = T0 + 22 * DAY;
    let recs = e.recommend("z", &top(10), now);
    assert!(
        !ids(&recs).contains(&"G") && !ids(&recs).contains(&"N"),
        "{recs:?}"
    );
    assert!(e.is_excluded("z", "G", now) && e.is_excluded("z", "N", now));
    let now = T0 + 26 * DAY;
    let recs = e.recommend("z", &top(10), now);
    assert_eq!(recs[0].product_id, "G", "{recs:?}");
    assert_eq!(recs[0].reason, Reason::BuyAgain);
    assert!(!ids(&recs).contains(&"N"));
    // Whoever never bought G is not offered it again.
    assert!(
        e.recommend("s0", &top(10), now)
            .iter()
            .all(|r| r.reason != Reason::BuyAgain || r.product_id == "G")
    );
    assert!(
        e.recommend("stranger", &top(10), now)
            .iter()
            .all(|r| r.reason != Reason::BuyAgain)
    );
}

/// Shoppers who view A, B, C, D (category x) together and E, F (category y) together.
fn store_with_co_views() -> RecsEngine {
    let mut e = RecsEngine::new(RecsConfig::default());
    for i in 0..5 {
        let shopper = format!("w{i}");
        let session = format!("ws{i}");
        for p in ["A", "B", "C", "D"] {
            view(&mut e, &shopper, &session, T0, p, "x");
        }
        for p in ["E", "F"] {
            view(&mut e, &shopper, &format!("{session}-y"), T0, p, "y");
        }
    }
    e
}

fn inventory(e: &mut RecsEngine, t: i64, id: &str, quantity: i64) {
    // Built directly: the contract's validation (events/src/validate.rs) rejects quantity 0.
    let mut ev = event(
        EventName::Custom,
        Some("warehouse"),
        None,
        t,
        vec![product(id, "x")],
    );
    ev.event.custom_event_name = s("Inventory Updated");
    if let Some(p) = ev
        .event
        .properties
        .as_mut()
        .and_then(|p| p.products.as_mut())
    {
        p[0].quantity = Some(quantity);
    }
    e.observe(&ev, "warehouse");
}

#[test]
fn exclusions_category_and_context() {
    let mut e = store_with_co_views();
    for p in ["A", "B", "C"] {
        view(&mut e, "q", "qs", T0 + HOUR, p, "x");
    }
    order(&mut e, "q", T0 + HOUR, &[("A", "x")]);
    let now = T0 + HOUR;
    e.expire(now);
    let on_d = |k| RecsQuery {
        k,
        context_product: Some("D"),
        category: None,
    };
    // What the shopper is shown, and what any page shows.
    let for_q = |e: &RecsEngine| {
        let mut out = e.recommend("q", &top(20), now);
        out.extend(e.recommend("q", &on_d(20), now));
        out
    };
    let all = |e: &RecsEngine| {
        let mut out = for_q(e);
        out.extend(e.related("C", 20, now));
        out.extend(e.recommend("stranger", &on_d(20), now));
        out
    };
    assert!(!ids(&for_q(&e)).contains(&"A"), "just bought");
    assert!(
        ids(&e.related("C", 20, now)).contains(&"A"),
        "related has no shopper"
    );
    assert!(ids(&all(&e)).contains(&"B"));
    e.set_in_stock("B", false);
    assert!(!ids(&all(&e)).contains(&"B"), "out of stock");
    assert!(e.is_excluded("anyone", "B", now));
    e.set_in_stock("B", true);
    assert!(ids(&all(&e)).contains(&"B"));
    inventory(&mut e, now, "C", 0);
    assert!(!ids(&all(&e)).contains(&"C"), "inventory says none left");
    inventory(&mut e, now, "C", 3);
    assert!(ids(&all(&e)).contains(&"C"));
    // Thirty days on, A may come back.
    assert!(!e.is_excluded("q", "A", now + 31 * DAY));

    let y = RecsQuery {
        k: 10,
        category: Some("y"),
        ..RecsQuery::default()
    };
    let recs = e.recommend("q", &y, now);
    assert_eq!(ids(&recs), ["E", "F"]);
    assert!(
        e.recommend(
            "q",
            &RecsQuery {
                k: 10,
                category: Some("none"),
                ..y
            },
            now
        )
        .is_empty()
    );

    let recs = e.recommend("stranger", &on_d(3), now);
    assert!(!ids(&recs).contains(&"D"));
    assert_eq!(recs[0].reason, Reason::ViewedTogether);
    assert!(
        ["B", "C"].contains(&recs[0].product_id.as_str()),
        "{recs:?}"
    );
}

#[test]
fn anonymous_history_counts_after_login() {
    // Trending off, so that a product's reason is the shopper's own history.
    let mut e = RecsEngine::new(RecsConfig {
        weights: Weights {
            trending: 0.0,
            ..Weights::default()
        },
        ..RecsConfig::default()
    });
    let linked = |e: &RecsEngine, user: &str, product: &str| {
        e.recommend(user, &top(10), T0 + HOUR)
            .iter()
            .any(|r| r.product_id == product && r.reason == Reason::RecentlyViewed)
    };
    // identify
    view(&mut e, "a1", "s1", T0, "P1", "x");
    assert!(!e.knows_shopper("u1"));
    e.observe(
        &event(EventName::Identify, Some("a1"), Some("u1"), T0 + 1, vec![]),
        "s1",
    );
    assert!(e.knows_shopper("u1") && linked(&e, "u1", "P1"));
    // alias
    view(&mut e, "a2", "s2", T0, "P2", "x");
    e.observe(
        &event(EventName::Alias, Some("a2"), Some("u2"), T0 + 1, vec![]),
        "s2",
    );
    assert!(linked(&e, "u2", "P2"));
    // any event carrying both ids
    view(&mut e, "a3", "s3", T0, "P3", "x");
    let both = event(
        EventName::ProductViewed,
        Some("a3"),
        Some("u3"),
        T0 + 2,
        vec![product("P4", "x")],
    );
    e.observe(&both, "s3");
    assert!(linked(&e, "u3", "P3") && linked(&e, "u3", "P4"));
    // A known user logs in on a new device: both histories count, under either id.
    let on_other_device = event(
        EventName::ProductViewed,
        Some("a4-old"),
        Some("u4"),
        T0,
        vec![product("P5", "x")],
    );
    e.observe(&on_other_device, "s4-old");
    view(&mut e, "a4", "s4", T0 + 1, "P6", "x");
    e.take_dirty();
    e.observe(
        &event(EventName::LoggedIn, Some("a4"), Some("u4"), T0 + 2, vec![]),
        "s4",
    );
    assert!(linked(&e, "u4", "P5") && linked(&e, "u4", "P6") && linked(&e, "a4", "P5"));
    let dirty = e.take_dirty();
    assert!(
        dirty.contains(&("s/a4".to_owned(), None)),
        "the anonymous shopper is folded in"
    );
    // A device shared by two accounts: the anonymous id stays with the first account, each
    // user's own events count for that user.
    let first = event(
        EventName::ProductViewed,
        Some("a5"),
        Some("u5"),
        T0,
        vec![product("P7", "x")],
    );
    e.observe(&first, "s5");
    let second = event(
        EventName::ProductViewed,
        Some("a5"),
        Some("u6"),
        T0 + 1,
        vec![product("P8", "x")],
    );
    e.observe(&second, "s6");
    assert!(linked(&e, "u6", "P8") && !linked(&e, "u6", "P7"));
    assert!(linked(&e, "a5", "P7") && !linked(&e, "a5", "P8"));
    assert!(!e.knows_shopper("u9"));
}

#[test]
fn unknown_shopper_and_product_get_trending_then_popular() {
    let mut e = RecsEngine::new(RecsConfig::default());
    assert!(
        e.recommend("x", &top(5), T0).is_empty(),
        "an empty engine knows nothing"
    );
    assert!(e.related("p", 5, T0).is_empty());
    view(&mut e, "a", "s-old", T0, "Old", "x");
    view(&mut e, "b", "s-new", T0 + 48 * HOUR, "New", "x");
    view(&mut e, "b", "s-new", T0 + 48 * HOUR, "Newer", "y");
    let now = T0 + 48 * HOUR;
    e.expire(now);
    for recs in [
        e.recommend("nobody", &top(5), now),
        e.related("unknown", 5, now),
    ] {
        let got: Vec<(&str, Reason)> = recs
            .iter()
            .map(|r| (r.product_id.as_str(), r.reason))
            .collect();
        assert_eq!(
            got,
            [
                ("New", Reason::Trending),
                ("Newer", Reason::Trending),
                ("Old", Reason::Popular)
            ]
        );
        assert!(recs.windows(2).all(|w| w[0].score >= w[1].score));
    }
    // A known product without neighbours: its category first.
    let recs = e.related("Old", 5, now);
    assert_eq!(ids(&recs), ["New", "Newer"]);
    assert!(!e.knows_product("unknown") && e.knows_product("Old"));
}

/// Feeds simulator records as the stage would (rejects, repeats and bots dropped).
struct Feeder {
    seen: HashSet<String>,
    shoppers: Vec<String>,
    products: Vec<String>,
    now: i64,
}

impl Feeder {
    fn new() -> Self {
        Feeder {
            seen: HashSet::new(),
            shoppers: Vec::new(),
            products: Vec::new(),
            now: 0,
        }
    }

    fn feed(&mut self, engines: &mut [&mut RecsEngine], payload: &[u8], arrival: i64) {
        let Ok(v) = shoplake_events::decode(payload, arrival, &shoplake_events::Limits::default())
        else {
            return;
        };
        if !self.seen.insert(v.event_id().to_owned()) {
            return;
        }
        let e = &v.event;
        let ctx = e.context.as_ref();
        if shoplake_transform::enrich::bots::is_bot(
            ctx.and_then(|c| c.user_agent.as_deref()),
            ctx.and_then(|c| c.device_type.as_deref()),
        ) {
            return;
        }
        for id in [&e.anonymous_id, &e.user_id].into_iter().flatten() {
            if self.shoppers.len() < 400 && !self.shoppers.iter().any(|s| s == &**id) {
                self.shoppers.push(id.to_string());
            }
        }
        for p in e
            .properties
            .iter()
            .flat_map(|p| p.products.iter().flatten())
        {
            if let Some(id) = p.product_id.as_deref()
                && self.products.len() < 200
                && !self.products.iter().any(|x| x == id)
            {
                self.products.push(id.to_owned());
            }
        }
        let session = e
            .session_id
            .as_deref()
            .or(e.anonymous_id.as_deref())
            .or(e.user_id.as_deref())
            .unwrap_or_default()
            .to_owned();
        self.now = self.now.max(v.event_time);
        for engine in engines.iter_mut() {
            engine.observe(&v, &session);
        }
    }
}

/// Equal answers, or the first difference.
fn same(a: &[Vec<Recommendation>], b: &[Vec<Recommendation>]) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(x, y, "answer {i} differs");
    }
}

fn answers(e: &RecsEngine, f: &Feeder) -> Vec<Vec<Recommendation>> {
    let mut out = Vec::new();
    for shopper in &f.shoppers {
        out.push(e.recommend(shopper, &top(10), f.now));
    }
    for (i, p) in f.products.iter().enumerate() {
        out.push(e.related(p, 10, f.now));
        let shopper = &f.shoppers[i % f.shoppers.len()];
        out.push(e.recommend(
            shopper,
            &RecsQuery {
                k: 10,
                context_product: Some(p),
                category: Some(["shoes", "grocery", "pet"][i % 3]),
            },
            f.now,
        ));
    }
    out
}

#[test]
fn restored_engine_answers_the_same() {
    let config = RecsConfig {
        max_shoppers: 300,
        ..RecsConfig::default()
    };
    let mut sim = Simulator::new(SimConfig {
        seed: 7,
        max_sessions: Some(600),
        users: 200,
        sessions_per_hour: 600.0,
        ..SimConfig::default()
    });
    let mut live = RecsEngine::new(config.clone());
    let mut saved: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut f = Feeder::new();
    let mut deletions = 0;
    let mut checkpoint = |e: &mut RecsEngine, saved: &mut BTreeMap<String, Vec<u8>>, now| {
        e.expire(now);
        for (k, v) in e.take_dirty() {
            match v {
                Some(v) => {
                    saved.insert(k, v);
                }
                None => {
                    deletions += 1;
                    saved.remove(&k);
                }
            }
        }
    };
    let mut n = 0;
    while let Some(r) = sim.next() {
        f.feed(&mut [&mut live], &r.payload, r.server_time_micros);
        n += 1;
        if n % 997 == 0 {
            checkpoint(&mut live, &mut saved, f.now);
        }
        if n == 12_000 {
            break;
        }
    }
    checkpoint(&mut live, &mut saved, f.now);
    assert_eq!(saved.len(), live.entities());
    assert!(deletions > 0, "shoppers beyond the cap were deleted");

    let mut restored = RecsEngine::new(config);
    for (k, v) in &saved {
        restored.restore(k, v).unwrap();
    }
    restored.refresh();
    assert_eq!(restored.entities(), live.entities());
    let sizes = |e: &RecsEngine| {
        let s = e.stats();
        (s.products, s.shoppers, s.categories)
    };
    assert_eq!(sizes(&restored), sizes(&live));
    let before = answers(&live, &f);
    assert!(before.iter().filter(|a| !a.is_empty()).count() > 500);
    same(&answers(&restored, &f), &before);

    // Both go on from there alike.
    for _ in 0..5_000 {
        let Some(r) = sim.next() else { break };
        f.feed(
            &mut [&mut live, &mut restored],
            &r.payload,
            r.server_time_micros,
        );
    }
    same(&answers(&restored, &f), &answers(&live, &f));

    assert!(matches!(
        restored.restore("x/1", b"{}"),
        Err(RecsError::UnknownKey { .. })
    ));
    assert!(matches!(
        restored.restore("p/1", b"not json"),
        Err(RecsError::Corrupt { .. })
    ));
}

#[test]
fn state_stays_within_its_caps() {
    let config = RecsConfig {
        max_shoppers: 50,
        max_products: 100,
        recently_viewed: 5,
        purchases_per_shopper: 4,
        ids_per_shopper: 3,
        neighbours: 4,
        serve_neighbours: 3,
        session_window: 3,
        trending_buckets: 4,
        ..RecsConfig::default()
    };
    let mut e = RecsEngine::new(config.clone());
    let mut t = T0;
    for i in 0..3_000u64 {
        // Shoppers come and go; products are drawn from 500 and the catalog keeps changing.
        let shopper = format!("a{}", i / 3);
        let x = (i * 7919) % 500;
        t += 10_000_000;
        view(
            &mut e,
            &shopper,
            &format!("s{}", i / 6),
            t,
            &format!("p{x}"),
            &format!("c{}", x % 7),
        );
        if i % 5 == 0 {
            let lines: Vec<(String, &str)> = (0..6)
                .map(|j| (format!("p{}", (x + j * 13) % 500), "c"))
                .collect();
            let lines: Vec<(&str, &str)> = lines.iter().map(|(a, b)| (a.as_str(), *b)).collect();
            order(&mut e, &shopper, t, &lines);
        }
        if i % 3 == 0 {
            let login = event(
                EventName::Identify,
                Some(&shopper),
                Some(&format!("u{}", i % 20)),
                t,
                vec![],
            );
            e.observe(&login, "login");
        }
        assert!(e.stats().shoppers <= 50 && e.stats().products <= 100);
        if i % 100 == 0 {
            e.expire(t);
            assert!(e.stats().products <= 90, "expire makes room");
        }
    }
    e.expire(t);
    assert!(e.stats().products_refused > 0);
    for (_, p) in e.products.iter() {
        assert!(p.viewed.len() <= 8 && p.bought.len() <= 8);
        assert!(p.serve_viewed.len() <= 3 && p.serve_bought.len() <= 3);
        assert_eq!(p.trend.len(), 4);
    }
    for s in e.shoppers.slots.iter().flatten() {
        assert!(s.views.len() <= 5 && s.bought.len() <= 4 && s.session_items.len() <= 3);
        assert!(s.ids.len() <= 3);
        for id in &s.ids {
            assert_eq!(
                e.shoppers
                    .index
                    .get(&**id)
                    .copied()
                    .map(|x| e.shoppers.get(x).unwrap().key()),
                Some(s.key())
            );
        }
    }
    assert_eq!(
        e.shoppers.index.len(),
        e.shoppers
            .slots
            .iter()
            .flatten()
            .map(|s| s.ids.len())
            .sum::<usize>()
    );
    // Everyone idle beyond the TTL is forgotten, and their entities are deleted.
    e.take_dirty();
    e.expire(t + 91 * DAY);
    assert_eq!(e.stats().shoppers, 0);
    let deleted = e
        .take_dirty()
        .iter()
        .filter(|(k, v)| k.starts_with("s/") && v.is_none())
        .count();
    assert!(deleted > 0);
    e.expire(t + 181 * DAY + PRODUCT_SWEEP_DAY);
    assert_eq!(e.stats().products, 0, "idle products are forgotten too");
}

const PRODUCT_SWEEP_DAY: i64 = DAY;

/// The stage reads its shards in turn, so an order can arrive after later events of another
/// shard: `observe` does not refresh for it (event time has not passed the next refresh), and the
/// stage's checkpoint does (`refresh_if_changed`), so the storefront and a restarted stage are
/// served the same lists.
#[test]
fn an_order_older_than_the_clock_is_served_after_the_next_checkpoint() {
    let mut e = RecsEngine::new(RecsConfig::default());
    view(&mut e, "w", "ws", T0 + HOUR, "Z", "x");
    order(&mut e, "q", T0, &[("A", "x"), ("B", "x")]);
    let bought_b = |e: &RecsEngine| {
        e.related("A", 10, T0 + HOUR)
            .iter()
            .any(|r| r.product_id == "B" && r.reason == Reason::BoughtTogether)
    };
    assert!(!bought_b(&e), "not refreshed by observe");
    assert!(e.refresh_if_changed());
    assert!(bought_b(&e));
    assert!(!e.refresh_if_changed(), "nothing new since");
}

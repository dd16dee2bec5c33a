//! Engine tests: features on crafted event sequences, rules, hot reload, restart, and the offline
//! evaluation over the simulator.

use std::collections::{HashMap, HashSet};

use shoplake_events::wire::{Context, Event, Product, Properties, Str};
use shoplake_events::{EventName, ValidEvent};

use super::windows::{DAY, HOUR, MINUTE, SECOND};
use super::*;
use features::Feature;

const T0: i64 = 1_767_225_600_000_000;

fn s(v: &str) -> Option<Str<'static>> {
    Some(Str::from(v.to_owned()))
}

/// Who acts: account, device, IP and where the IP is.
#[derive(Clone)]
struct Shopper {
    user: Option<&'static str>,
    anon: &'static str,
    device: &'static str,
    ip: &'static str,
    country: &'static str,
    locale: &'static str,
}

const ALICE: Shopper = Shopper {
    user: Some("u-alice"),
    anon: "a-alice",
    device: "d-alice",
    ip: "24.1.1.1",
    country: "US",
    locale: "en-US",
};

/// An order's particulars.
#[derive(Clone)]
struct Order {
    id: &'static str,
    total: f64,
    currency: &'static str,
    card: Option<&'static str>,
    billing: &'static str,
    shipping: &'static str,
    coupon: Option<&'static str>,
    address: Option<&'static str>,
}

const ORDER: Order = Order {
    id: "o-1",
    total: 40.0,
    currency: "USD",
    card: Some("fp_alice"),
    billing: "US",
    shipping: "US",
    coupon: None,
    address: None,
};

static EVENT_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn event(name: EventName, t: i64, who: &Shopper) -> ValidEvent<'static> {
    let id = EVENT_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    ValidEvent {
        event: Event {
            event_id: s(&format!("00000000-0000-4000-8000-{id:012x}")),
            event_name: s(name.as_str()),
            anonymous_id: s(who.anon),
            user_id: who.user.and_then(s),
            context: Some(Context {
                ip: s(who.ip),
                country: s(who.country),
                locale: s(who.locale),
                device_id: s(who.device),
                user_agent: s("Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/124.0.0.0"),
                ..Context::default()
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

fn with_props(mut e: ValidEvent<'static>, p: Properties<'static>) -> ValidEvent<'static> {
    e.event.properties = Some(p);
    e
}

fn order_event(t: i64, who: &Shopper, o: &Order) -> ValidEvent<'static> {
    let mut p = Properties {
        order_id: s(o.id),
        products: Some(vec![Product {
            product_id: s("p-1"),
            price: Some(o.total),
            quantity: Some(1),
            ..Product::default()
        }]),
        total: Some(o.total),
        currency: s(o.currency),
        payment_method: s(if o.card.is_some() { "card" } else { "paypal" }),
        card_fingerprint: o.card.and_then(s),
        billing_country: s(o.billing),
        shipping_country: s(o.shipping),
        coupon: o.coupon.and_then(s),
        ..Properties::default()
    };
    if let Some(a) = o.address {
        let raw = serde_json::value::RawValue::from_string(format!("{a:?}")).unwrap();
        p.extra
            .push((Str::from(features::SHIPPING_ADDRESS.to_owned()), raw));
    }
    with_props(event(EventName::OrderCompleted, t, who), p)
}

fn payment_failed(t: i64, who: &Shopper, order_id: &str) -> ValidEvent<'static> {
    let mut e = event(EventName::PaymentFailed, t, who);
    e.event.context = None;
    with_props(
        e,
        Properties {
            order_id: s(order_id),
            reason: s("card_declined"),
            ..Properties::default()
        },
    )
}

fn product_viewed(t: i64, who: &Shopper) -> ValidEvent<'static> {
    with_props(
        event(EventName::ProductViewed, t, who),
        Properties {
            products: Some(vec![Product {
                product_id: s("p-1"),
                ..Product::default()
            }]),
            ..Properties::default()
        },
    )
}

/// The rules the crafted scenarios below are written against (the first default rules, frozen).
const TEST_RULES: &str = include_str!("test_rules.toml");

fn engine() -> FraudEngine {
    engine_with(TEST_RULES)
}

fn engine_with(rules: &str) -> FraudEngine {
    FraudEngine::new(
        Arc::new(RuleSet::parse(rules).unwrap()),
        FxRates::defaults("USD").unwrap(),
    )
}

/// A shopper who browsed then ordered at `t`: the decision.
fn browse_and_order(engine: &mut FraudEngine, t: i64, who: &Shopper, o: &Order) -> Decision {
    engine.observe(&product_viewed(t - MINUTE, who));
    engine.observe(&order_event(t, who, o)).unwrap()
}

fn f(d: &Decision, name: &str) -> f64 {
    d.feature(name)
        .unwrap_or_else(|| panic!("no feature {name}"))
}

// --- Features on crafted sequences ---

#[test]
fn a_legit_customer_is_allowed_with_plain_features() {
    let mut e = engine();
    let d = browse_and_order(&mut e, T0, &ALICE, &ORDER);
    assert_eq!(d.verdict, Verdict::Allow, "{:?}", d.reasons);
    assert_eq!(d.reasons, Vec::<String>::new());
    assert_eq!(f(&d, "amount"), 40.0);
    assert_eq!(f(&d, "first_order"), 1.0);
    assert_eq!(f(&d, "device_orders_10m"), 1.0, "this order included");
    assert_eq!(f(&d, "device_cards_1d"), 1.0);
    assert_eq!(f(&d, "device_accounts_1d"), 1.0);
    assert_eq!(f(&d, "device_views_1h"), 1.0);
    assert_eq!(f(&d, "ip_country_mismatch"), 0.0);
    assert_eq!(d.order_id, "o-1");
    assert_eq!(d.user_id.as_deref(), Some("u-alice"));
    assert_eq!(d.rules_version, "test-1");

    // A week later, again, same card: history and no velocity.
    let second = Order {
        id: "o-2",
        total: 55.0,
        ..ORDER
    };
    let d = browse_and_order(&mut e, T0 + 7 * DAY, &ALICE, &second);
    assert_eq!(d.verdict, Verdict::Allow, "{:?}", d.reasons);
    assert_eq!(f(&d, "prior_orders"), 1.0);
    assert_eq!(f(&d, "first_order"), 0.0);
    assert!((f(&d, "amount_vs_avg") - 55.0 / 40.0).abs() < 1e-9);
    assert_eq!(
        f(&d, "user_orders_1d"),
        1.0,
        "the first order left the day window"
    );
    assert!((f(&d, "account_age_hours") - 7.0 * 24.0).abs() < 1e-6);
}

#[test]
fn amounts_are_compared_in_the_reporting_currency() {
    let mut e = engine();
    let eur = Order {
        total: 100.0,
        currency: "EUR",
        ..ORDER
    };
    let d = browse_and_order(&mut e, T0, &ALICE, &eur);
    assert!((f(&d, "amount") - 108.0).abs() < 1e-9);
    let odd = Order {
        id: "o-2",
        currency: "XTS",
        ..ORDER
    };
    let d = browse_and_order(&mut e, T0 + MINUTE * 5, &ALICE, &odd);
    assert_eq!(f(&d, "unknown_currency"), 1.0);
    assert_eq!(f(&d, "amount"), 0.0);
    // Paid without a card: no card features.
    let paypal = Order {
        id: "o-3",
        card: None,
        ..ORDER
    };
    let d = browse_and_order(&mut e, T0 + MINUTE * 6, &ALICE, &paypal);
    assert_eq!(f(&d, "card_payment"), 0.0);
    assert_eq!(f(&d, "card_orders_10m"), 0.0);
    assert_eq!(f(&d, "card_amount_1d"), 0.0);
    assert_eq!(f(&d, "card_accounts_1d"), 0.0);
    assert_eq!(f(&d, "device_orders_10m"), 3.0);
    assert_eq!(f(&d, "device_cards_1d"), 1.0, "the earlier card");
    assert!((f(&d, "device_amount_1d") - (108.0 + 40.0)).abs() < 1e-3);
}

#[test]
fn card_testing_fires_on_many_cards_and_declines() {
    let mut e = engine();
    let tester = Shopper {
        user: None,
        anon: "a-tester",
        device: "d-tester",
        ip: "24.9.9.9",
        ..ALICE
    };
    let cards = ["fp_1", "fp_2", "fp_3", "fp_4", "fp_5"];
    let ids = ["o-t1", "o-t2", "o-t3", "o-t4", "o-t5"];
    let mut decisions = Vec::new();
    for (i, (card, id)) in cards.into_iter().zip(ids).enumerate() {
        let t = T0 + i as i64 * MINUTE;
        let o = Order {
            id,
            total: 9.0,
            card: Some(card),
            ..ORDER
        };
        // The tester browses, so only the card and decline signals are at work here.
        decisions.push(browse_and_order(&mut e, t, &tester, &o));
        e.observe(&payment_failed(t + 3 * SECOND, &tester, id));
    }
    assert_eq!(decisions[0].verdict, Verdict::Allow);
    let second = &decisions[1];
    assert_eq!(f(second, "device_cards_1d"), 2.0);
    assert_eq!(f(second, "device_failed_10m"), 1.0);
    assert_eq!(
        f(second, "card_failed_1h"),
        0.0,
        "a new card has no failures"
    );
    assert!(
        second
            .reasons
            .contains(&"several_cards_on_device".to_owned())
    );
    assert_eq!(second.verdict, Verdict::Review);
    let last = &decisions[4];
    assert_eq!(f(last, "device_cards_1d"), 5.0);
    assert_eq!(f(last, "ip_cards_1d"), 5.0);
    assert_eq!(f(last, "device_failed_1h"), 4.0);
    assert_eq!(f(last, "device_orders_10m"), 5.0);
    assert_eq!(
        f(last, "user_failed_1h"),
        4.0,
        "guest: the anonymous id is the account"
    );
    assert_eq!(last.verdict, Verdict::Block);
    for reason in [
        "many_cards_on_device",
        "failed_payment_burst",
        "order_velocity_device",
    ] {
        assert!(last.reasons.contains(&reason.to_owned()), "{reason}");
    }
}

#[test]
fn payment_attempts_are_counted_per_account_device_and_ip() {
    let mut e = engine();
    for i in 0..3 {
        let t = T0 + i * MINUTE;
        e.observe(&with_props(
            event(EventName::PaymentInfoEntered, t, &ALICE),
            Properties {
                payment_method: s("card"),
                ..Properties::default()
            },
        ));
    }
    let d = browse_and_order(&mut e, T0 + 20 * MINUTE, &ALICE, &ORDER);
    assert_eq!(f(&d, "user_attempts_10m"), 0.0);
    assert_eq!(f(&d, "user_attempts_1h"), 3.0);
    assert_eq!(f(&d, "device_attempts_1h"), 3.0);
    assert_eq!(f(&d, "ip_attempts_1d"), 3.0);
}

#[test]
fn checkout_without_browsing_fires_only_without_product_views() {
    let mut e = engine();
    let d = e.observe(&order_event(T0, &ALICE, &ORDER)).unwrap();
    assert_eq!(f(&d, "device_views_1h"), 0.0);
    assert!(d.reasons.contains(&"checkout_without_browsing".to_owned()));
    assert_eq!(d.verdict, Verdict::Review);

    let mut e = engine();
    let d = browse_and_order(&mut e, T0, &ALICE, &ORDER);
    assert!(!d.reasons.contains(&"checkout_without_browsing".to_owned()));
    // A view more than an hour before does not count.
    let mut e = engine();
    e.observe(&product_viewed(T0 - 61 * MINUTE, &ALICE));
    let d = e.observe(&order_event(T0, &ALICE, &ORDER)).unwrap();
    assert_eq!(f(&d, "device_views_1h"), 0.0);
}

#[test]
fn account_takeover_fires_on_new_device_country_and_amount() {
    let mut e = engine();
    // Alice's history: three orders over a month from her own device.
    for (i, id) in ["o-a1", "o-a2", "o-a3"].into_iter().enumerate() {
        let o = Order {
            id,
            total: 60.0,
            ..ORDER
        };
        let d = browse_and_order(&mut e, T0 + i as i64 * 10 * DAY, &ALICE, &o);
        assert_eq!(d.verdict, Verdict::Allow, "{:?}", d.reasons);
    }
    // Someone logs into her account from a device in Brazil and orders a laptop to Brazil.
    let thief = Shopper {
        anon: "a-thief",
        device: "d-thief",
        ip: "177.1.2.3",
        country: "BR",
        ..ALICE
    };
    let t = T0 + 31 * DAY;
    e.observe(&event(EventName::LoggedIn, t, &thief));
    let laptop = Order {
        id: "o-ato",
        total: 1400.0,
        shipping: "BR",
        ..ORDER
    };
    let d = browse_and_order(&mut e, t + 5 * MINUTE, &thief, &laptop);
    assert_eq!(f(&d, "new_device"), 1.0);
    assert_eq!(f(&d, "new_ship_country"), 1.0);
    assert_eq!(f(&d, "ip_country_mismatch"), 1.0);
    assert_eq!(f(&d, "billing_shipping_mismatch"), 1.0);
    assert!((f(&d, "amount_vs_avg") - 1400.0 / 60.0).abs() < 1e-9);
    assert_eq!(d.verdict, Verdict::Block, "{:?}", d.reasons);
    for reason in [
        "new_device_high_amount",
        "new_ship_country_high_amount",
        "amount_spike",
        "high_amount_foreign",
    ] {
        assert!(d.reasons.contains(&reason.to_owned()), "{reason}");
    }

    // Alice herself, next day, as usual: vouched for.
    let usual = Order {
        id: "o-a4",
        total: 70.0,
        ..ORDER
    };
    let d = browse_and_order(&mut e, t + DAY, &ALICE, &usual);
    assert_eq!(f(&d, "new_device"), 0.0);
    assert_eq!(d.verdict, Verdict::Allow);
    assert!(d.reasons.contains(&"established_customer".to_owned()));
}

#[test]
fn ip_country_falls_back_to_the_locale_region() {
    let mut e = engine();
    let no_geo = Shopper {
        country: "",
        locale: "de-DE",
        ..ALICE
    };
    let d = browse_and_order(&mut e, T0, &no_geo, &ORDER);
    assert_eq!(f(&d, "ip_country_mismatch"), 1.0, "DE locale, US billing");
    let no_hint = Shopper {
        country: "",
        locale: "en",
        ..ALICE
    };
    let o = Order { id: "o-2", ..ORDER };
    let d = browse_and_order(&mut e, T0 + HOUR, &no_hint, &o);
    assert_eq!(f(&d, "ip_country_mismatch"), 0.0, "nothing to compare");
}

#[test]
fn multi_accounting_fires_on_accounts_sharing_a_device() {
    let mut e = engine();
    let users = ["u-m1", "u-m2", "u-m3"];
    let anons = ["a-m1", "a-m2", "a-m3"];
    let ids = ["o-m1", "o-m2", "o-m3"];
    let mut decisions = Vec::new();
    for i in 0..3 {
        let who = Shopper {
            user: Some(users[i]),
            anon: anons[i],
            device: "d-farm",
            ip: "24.7.7.7",
            ..ALICE
        };
        let t = T0 + i as i64 * 10 * MINUTE;
        e.observe(&event(EventName::SignedUp, t, &who));
        let o = Order {
            id: ids[i],
            card: None,
            coupon: Some("WELCOME20"),
            ..ORDER
        };
        decisions.push(browse_and_order(&mut e, t + 3 * MINUTE, &who, &o));
    }
    // The farm's first account: nothing shared yet, but the bare minimum to take the offer.
    let first = &decisions[0];
    assert_eq!(f(first, "device_accounts_1d"), 1.0);
    assert!(f(first, "account_age_hours") < 0.1);
    assert_eq!(first.reasons, vec!["welcome_offer_farming".to_owned()]);
    assert_eq!(first.shadow_reasons, vec!["new_account_coupon".to_owned()]);
    assert_eq!(first.score, 50.0, "the shadow rule adds nothing");
    assert_eq!(first.verdict, Verdict::Review);
    let third = &decisions[2];
    assert_eq!(f(third, "device_accounts_1d"), 3.0);
    assert_eq!(f(third, "ip_accounts_1d"), 3.0);
    assert_eq!(third.verdict, Verdict::Block);
    assert!(third.reasons.contains(&"many_device_accounts".to_owned()));
    assert!(third.reasons.contains(&"shared_ip_accounts".to_owned()));

    // An honest newcomer who browses before taking the welcome offer: not flagged.
    let mut e = engine();
    let newcomer = Shopper {
        user: Some("u-new"),
        ..ALICE
    };
    e.observe(&event(EventName::SignedUp, T0, &newcomer));
    for i in 0..3 {
        e.observe(&product_viewed(T0 + i * MINUTE, &newcomer));
    }
    let o = Order {
        coupon: Some("WELCOME20"),
        ..ORDER
    };
    let d = e
        .observe(&order_event(T0 + 5 * MINUTE, &newcomer, &o))
        .unwrap();
    assert_eq!(d.verdict, Verdict::Allow, "{:?}", d.reasons);
    assert_eq!(d.shadow_reasons, vec!["new_account_coupon".to_owned()]);

    // One account signing in again on its own device stays one account.
    let mut e = engine();
    e.observe(&event(EventName::LoggedIn, T0, &ALICE));
    e.observe(&event(EventName::LoggedIn, T0 + HOUR, &ALICE));
    let d = browse_and_order(&mut e, T0 + 2 * HOUR, &ALICE, &ORDER);
    assert_eq!(f(&d, "device_accounts_1d"), 1.0);
}

#[test]
fn shared_cards_and_addresses_count_accounts() {
    let mut e = engine();
    let mut last = None;
    for (i, (user, id)) in [("u-1", "o-1"), ("u-2", "o-2"), ("u-3", "o-3")]
        .into_iter()
        .enumerate()
    {
        let who = Shopper {
            user: Some(user),
            anon: ["a-1", "a-2", "a-3"][i],
            device: ["d-1", "d-2", "d-3"][i],
            ip: ["24.0.0.1", "24.0.0.2", "24.0.0.3"][i],
            ..ALICE
        };
        let o = Order {
            id,
            card: Some("fp_shared"),
            address: Some("addr-9f2c"),
            ..ORDER
        };
        last = Some(browse_and_order(&mut e, T0 + i as i64 * HOUR, &who, &o));
    }
    let d = last.unwrap();
    assert_eq!(f(&d, "card_accounts_1d"), 3.0);
    assert_eq!(f(&d, "card_orders_1d"), 3.0);
    assert_eq!(f(&d, "card_amount_1d"), 120.0);
    assert_eq!(f(&d, "user_amount_1d"), 40.0);
    assert_eq!(f(&d, "card_orders_1h"), 1.0);
    assert_eq!(f(&d, "address_accounts_1d"), 3.0);
    assert_eq!(f(&d, "address_orders_1d"), 3.0);
    assert_eq!(f(&d, "device_accounts_1d"), 1.0);
    assert!(d.reasons.contains(&"shared_card_accounts".to_owned()));
    assert!(d.reasons.contains(&"shared_address_accounts".to_owned()));
    assert_eq!(d.verdict, Verdict::Block);
}

#[test]
fn window_edges_and_late_events_through_the_engine() {
    let rules = "[thresholds]\nreview = 1\nblock = 2\n";
    let mut e = engine_with(rules);
    let o = |id| Order { id, ..ORDER };
    e.observe(&order_event(T0, &ALICE, &o("o-1")));
    let d = e.score(&order_event(T0 + 10 * MINUTE - 1, &ALICE, &o("o-2")));
    assert_eq!(f(&d, "device_orders_10m"), 2.0);
    let d = e.score(&order_event(T0 + 10 * MINUTE, &ALICE, &o("o-2")));
    assert_eq!(
        f(&d, "device_orders_10m"),
        1.0,
        "exactly ten minutes old: out"
    );
    assert_eq!(f(&d, "device_orders_1h"), 2.0);

    // An order arriving 30 minutes late (within the allowed hour) is recorded where it belongs.
    e.observe(&order_event(T0 + 2 * HOUR, &ALICE, &o("o-3")));
    e.observe(&order_event(T0 + 90 * MINUTE, &ALICE, &o("o-late")));
    let d = e.score(&order_event(T0 + 2 * HOUR + MINUTE, &ALICE, &o("o-4")));
    assert_eq!(f(&d, "device_orders_1h"), 3.0, "o-late, o-3 and this one");
    // Beyond the allowed lateness: scored, not recorded.
    let d = e
        .observe(&order_event(T0 + 30 * MINUTE, &ALICE, &o("o-very-late")))
        .unwrap();
    assert_eq!(d.order_id, "o-very-late");
    let d = e.score(&order_event(T0 + 2 * HOUR + MINUTE, &ALICE, &o("o-4")));
    assert_eq!(f(&d, "user_orders_1d"), 4.0);
}

#[test]
fn a_repeated_order_is_counted_once() {
    let mut e = engine();
    e.observe(&order_event(T0, &ALICE, &ORDER));
    let again = e
        .observe(&order_event(T0 + SECOND, &ALICE, &ORDER))
        .unwrap();
    assert_eq!(f(&again, "device_orders_10m"), 1.0);
    assert_eq!(f(&again, "prior_orders"), 0.0);
    e.observe(&payment_failed(T0 + 2 * SECOND, &ALICE, "o-1"));
    e.observe(&payment_failed(T0 + 3 * SECOND, &ALICE, "o-1"));
    let d = e.score(&order_event(
        T0 + MINUTE,
        &ALICE,
        &Order { id: "o-2", ..ORDER },
    ));
    assert_eq!(f(&d, "device_failed_10m"), 1.0, "one failure per order");
    assert_eq!(f(&d, "card_failed_10m"), 1.0);
}

#[test]
fn events_that_touch_no_state_leave_nothing() {
    let mut e = engine();
    for name in [
        EventName::PageViewed,
        EventName::ProductAdded,
        EventName::CheckoutStarted,
        EventName::CartViewed,
        EventName::OrderShipped,
    ] {
        assert!(e.observe(&event(name, T0, &ALICE)).is_none());
    }
    assert_eq!(e.entities(), 0);
    assert!(e.take_dirty().is_empty());
    // A payment failure of an unknown order goes to the account alone.
    e.observe(&payment_failed(T0, &ALICE, "o-unknown"));
    assert_eq!(e.entities(), 1);
}

#[test]
fn score_leaves_state_unchanged_and_agrees_with_observe() {
    let mut e = engine();
    browse_and_order(&mut e, T0, &ALICE, &ORDER);
    e.take_dirty();
    let entities = e.entities();
    let next = order_event(T0 + MINUTE, &ALICE, &Order { id: "o-2", ..ORDER });
    let scored = e.score(&next);
    assert_eq!(e.entities(), entities);
    assert!(e.take_dirty().is_empty());
    let observed = e.observe(&next).unwrap();
    assert_eq!(scored.features, observed.features);
    assert_eq!(scored.score, observed.score);
    // Scoring an order without an id yet.
    let mut draft = order_event(T0 + 2 * MINUTE, &ALICE, &ORDER);
    draft.event.properties.as_mut().unwrap().order_id = None;
    assert_eq!(e.score(&draft).order_id, "");
}

#[test]
fn expiry_frees_state_and_reports_deletions() {
    let mut e = engine();
    browse_and_order(&mut e, T0, &ALICE, &ORDER);
    e.observe(&payment_failed(T0 + SECOND, &ALICE, "o-1"));
    // Account, card, device, IP and order.
    assert_eq!(e.entities(), 5);
    e.take_dirty();
    e.expire(T0 + DAY);
    assert_eq!(e.entities(), 5, "within the day and the allowed lateness");
    e.expire(T0 + DAY + HOUR + 2 * MINUTE);
    assert_eq!(e.entities(), 1, "only the account's profile is kept");
    let dirty = e.take_dirty();
    let deleted = dirty.iter().filter(|(_, v)| v.is_none()).count();
    assert_eq!(deleted, 4);
    assert!(
        dirty
            .iter()
            .any(|(k, v)| k.starts_with("user:") && v.is_some())
    );
    e.expire(T0 + 91 * DAY);
    assert_eq!(e.entities(), 0);
}

#[test]
fn per_entity_state_stays_small_under_a_flood() {
    let mut e = engine();
    let busy = Shopper {
        user: None,
        anon: "a-nat",
        device: "d-nat",
        ip: "24.5.5.5",
        ..ALICE
    };
    let ids: Vec<String> = (0..5000).map(|i| format!("o-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let o = Order {
            id: "x",
            card: Some("fp_nat"),
            ..ORDER
        };
        let mut ev = order_event(T0 + i as i64 * 5 * SECOND, &busy, &o);
        ev.event.properties.as_mut().unwrap().order_id = s(id);
        e.observe(&ev);
    }
    e.expire(T0 + 5000 * 5 * SECOND);
    let device = state::Key::of(state::Kind::Device, "d", "d-nat");
    let bytes = e.store.map[&device].approx_bytes();
    assert!(bytes < 16 * 1024, "{bytes} bytes");
    let next = Order {
        id: "o-next",
        ..ORDER
    };
    let last = e.score(&order_event(T0 + 5000 * 5 * SECOND, &busy, &next));
    assert_eq!(
        f(&last, "device_orders_10m"),
        120.0,
        "119 earlier + this one, exact"
    );
}

// --- Persistence ---

#[test]
fn restart_from_dirty_state_gives_the_same_decision() {
    let mut e = engine();
    let mut store: HashMap<String, Vec<u8>> = HashMap::new();
    let checkpoint = |e: &mut FraudEngine, store: &mut HashMap<String, Vec<u8>>| {
        for (k, v) in e.take_dirty() {
            match v {
                Some(v) => store.insert(k, v),
                None => store.remove(&k),
            };
        }
    };
    let tester = Shopper {
        user: Some("u-t"),
        device: "d-t",
        ..ALICE
    };
    // Something that will have expired by the restart, so that the store sees a deletion.
    e.observe(&product_viewed(T0 - 3 * DAY, &ALICE));
    e.observe(&event(EventName::SignedUp, T0 - HOUR, &tester));
    for (i, (id, card)) in [("o-1", "fp_1"), ("o-2", "fp_2")].into_iter().enumerate() {
        let t = T0 + i as i64 * MINUTE;
        let o = Order {
            id,
            card: Some(card),
            ..ORDER
        };
        browse_and_order(&mut e, t, &tester, &o);
        e.observe(&payment_failed(t + SECOND, &tester, id));
        checkpoint(&mut e, &mut store);
    }
    let alice_device = state::Key::of(state::Kind::Device, "d", "d-alice").to_string();
    assert!(store.contains_key(&alice_device));
    e.expire(T0 + 2 * MINUTE);
    checkpoint(&mut e, &mut store);
    assert!(
        !store.contains_key(&alice_device),
        "deleted with the checkpoint"
    );

    let mut fresh = engine();
    for (k, v) in &store {
        fresh.restore(k, v).unwrap();
    }
    assert_eq!(fresh.entities(), e.entities());
    let next = order_event(
        T0 + 3 * MINUTE,
        &tester,
        &Order {
            id: "o-3",
            card: Some("fp_3"),
            ..ORDER
        },
    );
    let before = e.observe(&next).unwrap();
    let after = fresh.observe(&next).unwrap();
    assert_eq!(before.features, after.features);
    assert_eq!(before.score, after.score);
    assert_eq!(before.reasons, after.reasons);
    assert_eq!(f(&after, "device_cards_1d"), 3.0);
    assert_eq!(f(&after, "device_failed_10m"), 2.0);
    assert!((f(&after, "account_age_hours") - (1.0 + 3.0 / 60.0)).abs() < 1e-6);

    assert!(matches!(
        fresh.restore("bogus", b"{}"),
        Err(FraudError::BadKey { .. })
    ));
    let err = fresh
        .restore("device:00000000000000ff", b"[1,2")
        .unwrap_err();
    assert!(err.to_string().contains("device:00000000000000ff"), "{err}");
}

#[test]
fn the_engine_can_be_shared_between_the_stage_and_the_endpoint() {
    fn shared<T: Send + Sync>() {}
    shared::<FraudEngine>();
    shared::<Arc<RuleSet>>();
    shared::<Decision>();
}

#[test]
fn decisions_serialize_for_the_endpoint_and_the_table() {
    let mut e = engine();
    let d = e.observe(&order_event(T0, &ALICE, &ORDER)).unwrap();
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["verdict"], "review");
    assert_eq!(json["reasons"][0], "checkout_without_browsing");
    assert_eq!(json["order_id"], "o-1");
    assert_eq!(json["features"][0][0], "amount");
    assert_eq!(json["features"][0][1], 40.0);
}

// --- The learned model ---

#[test]
fn the_default_model_reads() {
    let m = model::Model::default_model();
    assert_eq!(m.version(), "simulated-seed42");
    assert_eq!(m.features(), model::inputs().as_slice());
    assert_eq!(m.trees(), 200);
    let (orders, fraud) = m.trained_on();
    assert!(orders > 5_000 && fraud > 500, "{orders} {fraud}");
    // Written back, it reads the same.
    let again = model::Model::from_json(&m.to_json()).unwrap();
    let mut values = features::FeatureValues::default();
    values.set(Feature::Amount, 900.0);
    values.set(Feature::NewDevice, 1.0);
    assert_eq!(again.score(&values), m.score(&values));
    assert!((0.0..=1.0).contains(&m.score(&values)));
}

/// A two-feature model trained on a combination no single feature shows.
fn toy_model() -> model::Model {
    let features = [Feature::Amount, Feature::DeviceCards1d];
    let x: Vec<Vec<f64>> = (0..600)
        .map(|i| vec![f64::from(i % 30) * 20.0, f64::from(i % 4)])
        .collect();
    let y: Vec<bool> = x.iter().map(|r| r[0] >= 400.0 && r[1] >= 2.0).collect();
    model::Model::train(&features, &x, &y, &model::Params::default(), "toy-1")
}

#[test]
fn a_model_learns_a_combination_of_signals() {
    let m = toy_model();
    assert_eq!(m.trained_on(), (600, 100));
    assert!(
        m.probability(&[500.0, 3.0]) > 0.95,
        "{}",
        m.probability(&[500.0, 3.0])
    );
    assert!(m.probability(&[500.0, 0.0]) < 0.05);
    assert!(m.probability(&[100.0, 3.0]) < 0.05);
}

#[test]
fn a_model_file_that_cannot_be_used_is_refused_with_the_reason() {
    let good = toy_model().to_json();
    let refused = |text: &str| model::Model::from_json(text).unwrap_err().to_string();
    assert!(refused("{").contains("not valid JSON"), "{}", refused("{"));
    let other = good.replace("shoplake-gbdt-1", "xgboost-2");
    assert_eq!(
        refused(&other),
        "fraud model has format \"xgboost-2\"; this version reads \"shoplake-gbdt-1\""
    );
    let unknown = good.replace("\"device_cards_1d\"", "\"device_karma\"");
    assert_eq!(
        refused(&unknown),
        "fraud model reads feature \"device_karma\", which this version does not compute"
    );
    let own = good.replace("\"device_cards_1d\"", "\"model_score\"");
    assert!(
        refused(&own).contains("its own output"),
        "{}",
        refused(&own)
    );
    // A split pointing back at itself would loop.
    let mut file: serde_json::Value = serde_json::from_str(&good).unwrap();
    file["trees"][0][0]["left"] = serde_json::json!(0);
    assert_eq!(
        refused(&file.to_string()),
        format!(
            "fraud model tree 0: node 0 points to nodes 0 and {}, not after it among {}",
            file["trees"][0][0]["right"],
            file["trees"][0].as_array().unwrap().len()
        )
    );
    file["trees"][0][0]["left"] = serde_json::json!(1);
    file["trees"][0][0]["feature"] = serde_json::json!(2);
    assert_eq!(
        refused(&file.to_string()),
        "fraud model tree 0: node 0 splits on feature 2 of 2"
    );
    // Leaves whose sum would overflow to NaN (and allow every order) are refused.
    let mut file: serde_json::Value = serde_json::from_str(&good).unwrap();
    let leaf = file["trees"][0]
        .as_array()
        .unwrap()
        .iter()
        .position(|n| n.get("leaf").is_some())
        .unwrap();
    file["trees"][0][leaf]["leaf"] = serde_json::json!(1e308);
    assert_eq!(
        refused(&file.to_string()),
        format!("fraud model tree 0: node {leaf} has a leaf value of 1e308, beyond ±100 log odds")
    );
    let mut file: serde_json::Value = serde_json::from_str(&good).unwrap();
    file["base"] = serde_json::json!(-1e300);
    assert_eq!(
        refused(&file.to_string()),
        "fraud model base -1e300 is beyond ±100 log odds"
    );
}

/// A value that comes back a unit in the last place off (a float through JSON, a rate applied in
/// another order) falls on the side of every cut its training value fell on; NaN is read as 0.
#[test]
fn a_model_scores_the_values_it_was_trained_on_the_same_one_ulp_off() {
    let features = [Feature::Amount, Feature::DeviceCards1d];
    // Converted amounts with 17 significant digits.
    let x: Vec<Vec<f64>> = (0..500)
        .map(|i| vec![f64::from(i) * 1.7320508075688772, f64::from(i % 5)])
        .collect();
    let y: Vec<bool> = x.iter().map(|r| r[0] > 400.0 && r[1] >= 3.0).collect();
    let m = model::Model::train(&features, &x, &y, &model::Params::default(), "ulp");
    let m = model::Model::from_json(&m.to_json()).unwrap();
    for r in &x {
        let p = m.probability(r);
        for nudged in [r[0].next_up(), r[0].next_down()] {
            assert_eq!(m.probability(&[nudged, r[1]]), p, "{r:?}");
        }
    }
    assert_eq!(m.probability(&[f64::NAN, 4.0]), m.probability(&[0.0, 4.0]));
}

#[test]
fn a_rules_file_names_its_model_and_the_model_adds_to_the_score() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("toy.json"), toy_model().to_json()).unwrap();
    let path = dir.path().join("rules.toml");
    let text = "version = \"v1\"\n[thresholds]\nreview = 50\nblock = 80\n\n[model]\nweight = 60\n\
                file = \"toy.json\"\n\n[[rule]]\nreason = \"model_and_coupon\"\n\
                condition = \"model_score > 0.5 && coupon\"\nscore = 30\n";
    std::fs::write(&path, text).unwrap();
    // The model file is found beside the rules file, whatever the working folder.
    let (_, rules) = RulesFile::open(&path).unwrap();
    assert_eq!(rules.version(), "v1+toy-1");
    let mut values = features::FeatureValues::default();
    values.set(Feature::Amount, 500.0);
    values.set(Feature::DeviceCards1d, 3.0);
    values.set(Feature::Coupon, 1.0);
    rules.apply_model(&mut values);
    let p = values.get(Feature::ModelScore);
    assert!(p > 0.95, "{p}");
    let out = rules.evaluate(&values);
    assert!((out.score - (60.0 * p + 30.0)).abs() < 1e-9, "{out:?}");
    assert_eq!(out.verdict, Verdict::Block);
    assert_eq!(out.reasons, ["model_and_coupon"]);
    // The engine sets it on every decision.
    let engine = FraudEngine::new(rules.clone(), FxRates::defaults("USD").unwrap());
    let big = Order {
        total: 500.0,
        ..ORDER
    };
    let d = engine.score(&order_event(T0, &ALICE, &big));
    let score = d.feature("model_score").unwrap();
    assert!((0.0..=1.0).contains(&score));
    assert_eq!(d.rules_version, "v1+toy-1");

    // A model file that is missing or unusable refuses the rules file, at the `file` line.
    std::fs::write(&path, text.replace("toy.json", "gone.json")).unwrap();
    let err = RulesFile::open(&path).unwrap_err();
    assert_eq!(err.line, Some(8));
    assert!(err.message.starts_with("cannot read model file"), "{err}");
    std::fs::write(dir.path().join("bad.json"), "{\"format\": 1}").unwrap();
    std::fs::write(&path, text.replace("toy.json", "bad.json")).unwrap();
    let err = RulesFile::open(&path).unwrap_err().to_string();
    assert!(err.starts_with("line 8: model file"), "{err}");
    assert!(err.contains("not valid JSON"), "{err}");
    // A new model in the same file is taken by the watcher, like a change of the rules.
    std::fs::write(&path, text).unwrap();
    let (mut watched, rules) = RulesFile::open(&path).unwrap();
    assert_eq!(rules.version(), "v1+toy-1");
    assert_eq!(
        watched.check().unwrap().map(|r| r.version().to_owned()),
        None
    );
    let retrained = model::Model::train(
        &[Feature::Amount],
        &[vec![1.0], vec![2.0]],
        &[false, true],
        &model::Params::default(),
        "toy-2",
    );
    std::fs::write(dir.path().join("toy.json"), retrained.to_json()).unwrap();
    let reloaded = watched.check().unwrap().unwrap();
    assert_eq!(reloaded.version(), "v1+toy-2");
    // A broken model file is refused once; the caller keeps what it runs.
    std::fs::write(dir.path().join("toy.json"), "{").unwrap();
    let err = watched.check().unwrap_err().to_string();
    assert!(err.starts_with("line 8: model file"), "{err}");
    assert!(watched.check().unwrap().is_none());

    // Without a [model] table no model runs.
    let rules =
        RuleSet::parse(&text.replace("[model]\nweight = 60\nfile = \"toy.json\"\n", "")).unwrap();
    assert!(rules.model().is_none());
    let mut values = features::FeatureValues::default();
    values.set(Feature::Amount, 500.0);
    rules.apply_model(&mut values);
    assert_eq!(values.get(Feature::ModelScore), 0.0);
}

// --- Rules ---

#[test]
fn the_default_rules_parse() {
    let rules = RuleSet::parse(rules::DEFAULT_RULES).unwrap();
    assert_eq!(rules.version(), "default-3+simulated-seed42");
    assert_eq!(rules.model().unwrap().version(), "simulated-seed42");
    assert!(rules.rules().len() >= 15);
    let t = rules.thresholds();
    assert_eq!((t.review, t.block), (50.0, 80.0));
    // Every rule is documented by a comment right above it.
    let lines: Vec<&str> = rules::DEFAULT_RULES.lines().collect();
    for rule in rules.rules() {
        assert!(
            lines[rule.line - 2].starts_with('#'),
            "rule {} at line {} has no comment",
            rule.reason,
            rule.line
        );
    }
}

const GOOD: &str = r#"
version = "test-3"

[thresholds]
review = 30
block = 60

[[rule]]
reason = "many_cards"
condition = "device_cards_1d >= 3"
score = 40

[[rule]]
reason = "big"
condition = "amount > 500.0 && !first_order"
score = 25

[[rule]]
reason = "watch"
condition = "max(device_orders_1h, ip_orders_1h) >= 2"
score = 100
shadow = true
"#;

fn features_with(values: &[(&str, f64)]) -> features::FeatureValues {
    let mut v = features::FeatureValues::default();
    for (name, x) in values {
        v.set(features::Feature::from_name(name).unwrap(), *x);
    }
    v
}

#[test]
fn thresholds_give_the_verdict_and_shadow_rules_only_record() {
    let rules = RuleSet::parse(GOOD).unwrap();
    assert_eq!(rules.version(), "test-3");
    let out = rules.evaluate(&features_with(&[("device_cards_1d", 2.0)]));
    assert_eq!((out.score, out.verdict), (0.0, Verdict::Allow));
    let out = rules.evaluate(&features_with(&[("device_cards_1d", 3.0)]));
    assert_eq!((out.score, out.verdict), (40.0, Verdict::Review));
    assert_eq!(out.reasons, vec!["many_cards".to_owned()]);
    let out = rules.evaluate(&features_with(&[
        ("device_cards_1d", 3.0),
        ("amount", 900.0),
        ("ip_orders_1h", 2.0),
    ]));
    assert_eq!((out.score, out.verdict), (65.0, Verdict::Block));
    assert_eq!(out.reasons, vec!["many_cards".to_owned(), "big".to_owned()]);
    assert_eq!(out.shadow_reasons, vec!["watch".to_owned()]);
    // first_order blocks "big".
    let out = rules.evaluate(&features_with(&[("amount", 900.0), ("first_order", 1.0)]));
    assert_eq!(out.verdict, Verdict::Allow);
    // Exactly at a threshold counts.
    assert_eq!(rules.verdict(30.0), Verdict::Review);
    assert_eq!(rules.verdict(59.9), Verdict::Review);
    assert_eq!(rules.verdict(60.0), Verdict::Block);
}

#[test]
fn without_a_version_the_content_hash_is_the_version() {
    let text = GOOD.replace("version = \"test-3\"\n", "");
    let a = RuleSet::parse(&text).unwrap();
    let b = RuleSet::parse(&text.replace("score = 25", "score = 26")).unwrap();
    assert!(a.version().starts_with("content-"), "{}", a.version());
    assert_ne!(a.version(), b.version());
    assert_eq!(a.version(), RuleSet::parse(&text).unwrap().version());
}

/// GOOD with one line replaced: (line number in GOOD, 1-based; new text).
fn bad(line: usize, text: &str) -> RuleError {
    let mut lines: Vec<&str> = GOOD.lines().collect();
    lines[line - 1] = text;
    RuleSet::parse(&lines.join("\n")).unwrap_err()
}

#[test]
fn bad_rules_are_refused_with_line_and_reason() {
    let lines: Vec<&str> = GOOD.lines().collect();
    let line_of = |needle: &str| lines.iter().position(|l| l.contains(needle)).unwrap() + 1;
    let cond = line_of("device_cards_1d >= 3");

    let e = bad(cond, r#"condition = "device_cardz_1d >= 3""#);
    assert_eq!(e.line, Some(cond));
    assert!(e.message.contains("unknown feature device_cardz_1d"), "{e}");
    assert!(e.message.contains("did you mean device_cards_1d"), "{e}");
    assert!(e.to_string().starts_with(&format!("line {cond}: ")), "{e}");

    let e = bad(cond, r#"condition = "device_cards_1d >= (3""#);
    assert_eq!(e.line, Some(cond));
    assert!(e.message.contains("not a valid expression"), "{e}");

    let e = bad(cond, r#"condition = "device_cards_1d + 3""#);
    assert_eq!(e.line, Some(cond));
    assert!(e.message.contains("must give true or false"), "{e}");

    let e = bad(cond, r#"condition = "new_device > 3""#);
    assert_eq!(e.line, Some(cond));
    assert!(e.message.contains("cannot be evaluated"), "{e}");

    let e = bad(cond, r#"condition = "frobnicate(amount) > 3""#);
    assert!(e.message.contains("frobnicate"), "{e}");

    let e = bad(cond, r#"condition = "amount = 3""#);
    assert!(e.message.contains("assigns to amount"), "{e}");

    // A rule without a score: the line of its table.
    let score = line_of("score = 40");
    let e = bad(score, "");
    assert_eq!(e.line, Some(line_of("[[rule]]")), "{e}");
    assert!(e.message.contains("missing field `score`"), "{e}");

    let e = bad(score, "scor = 40");
    assert_eq!(e.line, Some(score));
    assert!(e.message.contains("unknown field `scor`"), "{e}");

    let review = line_of("review = 30");
    let e = bad(review, "review = 70");
    assert_eq!(e.line, Some(review));
    assert!(e.message.contains("thresholds out of order"), "{e}");
    assert!(e.message.contains("70") && e.message.contains("60"), "{e}");

    let e = bad(line_of("reason = \"big\""), "reason = \"many_cards\"");
    assert_eq!(e.line, Some(line_of("reason = \"big\"")));
    assert!(e.message.contains("used twice"), "{e}");

    let e = bad(line_of("reason = \"big\""), "reason = \"Big Orders\"");
    assert!(e.message.contains("a-z"), "{e}");

    let e = bad(line_of("score = 25"), "score = \"high\"");
    assert_eq!(e.line, Some(line_of("score = 25")));

    let e = bad(line_of("block = 60"), "block = ");
    assert_eq!(e.line, Some(line_of("block = 60")));

    let e =
        RuleSet::parse("[[rule]]\nreason = \"x\"\ncondition = \"true\"\nscore = 1\n").unwrap_err();
    assert_eq!(e.line, None);
    assert!(e.message.contains("[thresholds]"), "{e}");
}

#[test]
fn a_division_by_zero_at_run_time_does_not_fire() {
    let rules = RuleSet::parse(
        "[thresholds]\nreview = 1\nblock = 2\n[[rule]]\nreason = \"ratio\"\ncondition = \"device_orders_1d / ip_orders_1d > 1\"\nscore = 5\n",
    )
    .unwrap();
    let out = rules.evaluate(&features_with(&[("device_orders_1d", 4.0)]));
    assert_eq!((out.score, out.errors), (0.0, 1));
    let out = rules.evaluate(&features_with(&[
        ("device_orders_1d", 4.0),
        ("ip_orders_1d", 2.0),
    ]));
    assert_eq!((out.score, out.errors), (5.0, 0));
}

#[test]
fn rules_file_hot_reload() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.toml");
    std::fs::write(&path, GOOD).unwrap();
    let (mut file, rules) = RulesFile::open(&path).unwrap();
    assert_eq!(rules.version(), "test-3");
    assert!(file.check().unwrap().is_none(), "unchanged");

    // A valid change (length differs, so it is seen whatever the mtime resolution).
    std::fs::write(&path, GOOD.replace("test-3", "test-4")).unwrap();
    let new = file.check().unwrap().expect("changed");
    assert_eq!(new.version(), "test-4");
    assert!(file.check().unwrap().is_none());

    // Rewritten with the same content: nothing to do.
    std::fs::write(&path, GOOD.replace("test-3", "test-4")).unwrap();
    assert!(file.check().unwrap().is_none());

    // A bad change is reported once; the caller keeps test-4.
    let broken = GOOD
        .replace("test-3", "test-5")
        .replace("device_cards_1d >= 3", "device_cardz_1d >= 3");
    std::fs::write(&path, &broken).unwrap();
    let err = file.check().unwrap_err();
    assert_eq!(err.line, Some(10));
    assert!(
        file.check().unwrap().is_none(),
        "the same bad file is not reported again"
    );

    // Fixed: picked up.
    std::fs::write(&path, GOOD.replace("test-3", "test-66")).unwrap();
    assert_eq!(file.check().unwrap().unwrap().version(), "test-66");

    // Removed: reported once, then quiet.
    std::fs::remove_file(&path).unwrap();
    let err = file.check().unwrap_err();
    assert!(err.message.contains("cannot read rules file"), "{err}");
    assert!(file.check().unwrap().is_none());

    // Opening a bad file fails with its line.
    std::fs::write(&path, &broken).unwrap();
    assert_eq!(RulesFile::open(&path).unwrap_err().line, Some(10));
}

#[test]
fn set_rules_swaps_the_rules_of_a_running_engine() {
    let mut e = engine();
    browse_and_order(&mut e, T0, &ALICE, &ORDER);
    let strict = "version = \"strict\"\n[thresholds]\nreview = 1\nblock = 1\n[[rule]]\nreason = \"any_order\"\ncondition = \"items >= 1\"\nscore = 1\n";
    e.set_rules(Arc::new(RuleSet::parse(strict).unwrap()));
    assert_eq!(e.rules().version(), "strict");
    let d = browse_and_order(&mut e, T0 + DAY, &ALICE, &Order { id: "o-2", ..ORDER });
    assert_eq!(
        (d.verdict, d.rules_version.as_str()),
        (Verdict::Block, "strict")
    );
    assert_eq!(f(&d, "prior_orders"), 1.0, "state kept across the swap");
}

// --- Offline evaluation over the simulator ---

mod simulated {
    use shoplake_events::{Limits, decode};
    use shoplake_simulator::{FraudMix, SimConfig, Simulator};

    use super::*;
    use crate::fraud::eval::{self, AMOUNT, FraudReport, LOGISTIC, Options, RULES, Targets};
    use shoplake_simulator::Confounders;
    use shoplake_transform::enrich::bots::is_bot;

    /// Runs the simulator through the engine as the stage does (decode, skip rejects, repeated
    /// event ids and bots), returning the decisions and the labels.
    fn run(sim: SimConfig, rules: &str) -> (Vec<Decision>, HashMap<String, String>) {
        let mut sim = Simulator::new(sim);
        let mut engine = engine_with(rules);
        let limits = Limits::default();
        let mut seen = HashSet::new();
        let mut decisions = Vec::new();
        let mut labels = HashMap::new();
        let mut latest = i64::MIN;
        let mut n = 0u64;
        while let Some(record) = sim.next() {
            for label in sim.labels() {
                labels.insert(label.order_id, label.pattern);
            }
            let Ok(event) = decode(&record.payload, record.server_time_micros, &limits) else {
                continue;
            };
            if !seen.insert(event.event_id().to_owned()) {
                continue;
            }
            let ctx = event.event.context.as_ref();
            if is_bot(
                ctx.and_then(|c| c.user_agent.as_deref()),
                ctx.and_then(|c| c.device_type.as_deref()),
            ) {
                continue;
            }
            latest = latest.max(event.event_time);
            decisions.extend(engine.observe(&event));
            n += 1;
            if n.is_multiple_of(2_000) {
                engine.expire(latest);
            }
        }
        (decisions, labels)
    }

    /// Settings the rules were *not* tuned on (development used `shoplake eval`'s defaults:
    /// seed 42, the default confounders, an even mix, 500 sessions an hour): other seeds, more
    /// sharing, travel and gifts, other mixes and traffic.
    fn unseen() -> Vec<(&'static str, SimConfig)> {
        let base = |seed: u64| SimConfig {
            seed,
            max_sessions: Some(9_000),
            // Enough fraud to measure; figures are reweighted to 1%.
            fraud_share: 0.1,
            sessions_per_hour: 700.0,
            ..SimConfig::default()
        };
        vec![
            (
                "seed 101, more households, NAT and travel, takeover-heavy",
                SimConfig {
                    confounders: Confounders {
                        household: 0.2,
                        shared_ip: 0.3,
                        travel: 0.08,
                        gift_abroad: 0.06,
                        ..Confounders::default()
                    },
                    fraud_mix: FraudMix {
                        card_testing: 0.5,
                        account_takeover: 2.0,
                        multi_account: 1.0,
                    },
                    ..base(101)
                },
            ),
            (
                "seed 102, big baskets, new phones, reorders, farm-heavy, busier",
                SimConfig {
                    confounders: Confounders {
                        big_ticket: 0.08,
                        new_device: 0.1,
                        buy_again: 0.15,
                        ..Confounders::default()
                    },
                    fraud_mix: FraudMix {
                        card_testing: 1.0,
                        account_takeover: 1.0,
                        multi_account: 2.0,
                    },
                    sessions_per_hour: 1_500.0,
                    ..base(102)
                },
            ),
        ]
    }

    /// The decisions the amount threshold would have made: its rule over the same features.
    fn amount_threshold(decisions: &[Decision]) -> Vec<Decision> {
        let rules = RuleSet::parse(
            "[thresholds]\nreview = 50\nblock = 80\n\n[[rule]]\nreason = \"big\"\n\
             condition = \"amount >= 300\"\nscore = 60\n",
        )
        .unwrap();
        decisions
            .iter()
            .map(|d| {
                let mut values = features::FeatureValues::default();
                for (name, v) in &d.features {
                    values.set(features::Feature::from_name(name).unwrap(), *v);
                }
                let out = rules.evaluate(&values);
                Decision {
                    score: out.score,
                    verdict: out.verdict,
                    reasons: out.reasons,
                    shadow_reasons: out.shadow_reasons,
                    ..d.clone()
                }
            })
            .collect()
    }

    fn check(name: &str, report: &FraudReport) {
        println!("--- {name}\n{report}");
        assert!(
            report.test_fraud >= 60,
            "{name}: too few fraud orders to judge ({})",
            report.test_fraud
        );
        assert_eq!(report.labels_without_decision, 0);
        if let Err(e) = eval::check_targets(report, &Targets::default()) {
            panic!("{name}: issue 22's targets missed: {e}");
        }
    }

    /// Issue 22's targets ([`Targets::default`]: at 1% fraud and a 1% review budget, recall ≥ 0.7
    /// at precision ≥ 0.5 and at least twice the amount threshold's recall), asserted on settings
    /// the rules and the shipped model never saw. The default rules (default-3: default-2 plus
    /// the shipped model, trained on the development run) reach 0.80 / 0.76 and 0.82 / 0.78 here;
    /// default-2 alone reached 0.48 / 0.44 and 0.46 / 0.44.
    #[test]
    fn the_default_rules_meet_the_targets_on_unseen_settings_and_the_amount_threshold_does_not() {
        let options = Options::default();
        for (name, sim) in unseen() {
            let (decisions, labels) = run(sim, rules::DEFAULT_RULES);
            let report = eval::evaluate(&decisions, &labels, &options);
            check(name, &report);
            // The learned baseline is a real contender: well above chance.
            let ap = |s: &str| {
                report
                    .scorer(s)
                    .unwrap()
                    .at(0.01)
                    .unwrap()
                    .average_precision
            };
            assert!(ap(LOGISTIC) > 0.1, "{name}: {report}");
            // The same check fails when the rules are replaced by the amount threshold.
            let replaced = eval::evaluate(&amount_threshold(&decisions), &labels, &options);
            let at = |r: &FraudReport, s: &str| r.scorer(s).unwrap().at(0.01).unwrap().clone();
            assert_eq!(
                at(&replaced, RULES).budget_recall,
                at(&report, AMOUNT).budget_recall
            );
            let err = eval::check_targets(&replaced, &Targets::default()).unwrap_err();
            assert!(err.contains("recall"), "{err}");
            println!("--- {name}, rules replaced by the amount threshold: {err}");
        }
    }

    /// Writes the decisions of a development run (`shoplake eval`'s settings: seed 42, the
    /// default confounders) as CSV, one row per order with every feature and the label, for
    /// working on rules outside the engine:
    /// `SHOPLAKE_FRAUD_CASES=cases.csv cargo test --workspace --lib dump_development_cases -- --ignored`.
    #[test]
    #[ignore = "writes a file for rule development"]
    fn dump_development_cases() {
        let path = std::env::var("SHOPLAKE_FRAUD_CASES").unwrap();
        let sessions = std::env::var("SHOPLAKE_FRAUD_SESSIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(30_000);
        // `SHOPLAKE_FRAUD_SETTING=unseen-0` (or 1): one of the unseen settings instead.
        let sim = match std::env::var("SHOPLAKE_FRAUD_SETTING").as_deref() {
            Ok("unseen-0") => unseen().swap_remove(0).1,
            Ok("unseen-1") => unseen().swap_remove(1).1,
            _ => development(sessions),
        };
        let (decisions, labels) = run(sim, rules::DEFAULT_RULES);
        let mut out = String::from("order_id,time,pattern,score");
        for f in features::Feature::ALL {
            out.push(',');
            out.push_str(f.name());
        }
        out.push('\n');
        for c in eval::cases(&decisions, &labels) {
            out.push_str(&format!(
                "{},{},{},{}",
                c.order_id,
                c.time,
                c.pattern.as_deref().unwrap_or(""),
                c.score
            ));
            for v in &c.features {
                out.push_str(&format!(",{v}"));
            }
            out.push('\n');
        }
        std::fs::write(path, out).unwrap();
    }

    /// The development run: `shoplake eval`'s seed and confounders, 10% fraud.
    fn development(sessions: u64) -> SimConfig {
        SimConfig {
            seed: 42,
            max_sessions: Some(sessions),
            fraud_share: 0.1,
            sessions_per_hour: 500.0,
            ..SimConfig::default()
        }
    }

    /// Trains the shipped model ([`model::DEFAULT_MODEL`]) on the development run, 30,000
    /// sessions, and writes it where `SHOPLAKE_FRAUD_MODEL` says:
    /// `SHOPLAKE_FRAUD_MODEL=$PWD/live/src/fraud/default_model.json cargo test --workspace --lib
    /// write_default_model -- --ignored`.
    #[test]
    #[ignore = "writes the shipped model"]
    fn write_default_model() {
        let path = std::env::var("SHOPLAKE_FRAUD_MODEL").unwrap();
        let (decisions, labels) = run(development(30_000), rules::DEFAULT_RULES);
        let cases = eval::cases(&decisions, &labels);
        let model = eval::train_model(&cases, "simulated-seed42");
        println!(
            "{} trees, trained on {:?} (orders, fraud)",
            model.trees(),
            model.trained_on()
        );
        std::fs::write(path, model.to_json()).unwrap();
    }

    #[test]
    fn the_velocity_rules_parse() {
        assert_eq!(eval::velocity_rules().version(), "velocity-baseline-1");
    }

    /// Cost of the engine in the stage's loop and of `score`, in whatever build runs it (prints,
    /// asserts nothing: timing belongs to benchmarks). Run with
    /// `cargo test --workspace --lib fraud::tests::simulated::speed -- --ignored --nocapture`.
    #[test]
    #[ignore = "prints timings"]
    fn speed() {
        use std::time::Instant;
        let mut sim = Simulator::new(SimConfig {
            seed: 11,
            max_sessions: Some(3_000),
            fraud_share: 0.02,
            ..SimConfig::default()
        });
        let mut records = Vec::new();
        while let Some(r) = sim.next() {
            records.push(r);
        }
        let limits = Limits::default();
        // Decode only: a lower bound of what the stage does per record without fraud.
        let start = Instant::now();
        let mut valid = 0;
        for r in &records {
            valid += usize::from(decode(&r.payload, r.server_time_micros, &limits).is_ok());
        }
        let decode_only = start.elapsed();
        let mut engine = engine();
        let mut observe = std::time::Duration::ZERO;
        let mut score_times = Vec::new();
        let mut latest = i64::MIN;
        let (mut checkpoint, mut written, mut bytes) = (std::time::Duration::ZERO, 0, 0);
        for (i, r) in records.iter().enumerate() {
            if i.is_multiple_of(5_000) {
                // What the stage does at each checkpoint.
                let t = Instant::now();
                let dirty = engine.take_dirty();
                checkpoint += t.elapsed();
                written += dirty.len();
                bytes += dirty
                    .iter()
                    .filter_map(|(_, v)| v.as_ref())
                    .map(Vec::len)
                    .sum::<usize>();
            }
            let Ok(event) = decode(&r.payload, r.server_time_micros, &limits) else {
                continue;
            };
            if event.name == EventName::OrderCompleted {
                let t = Instant::now();
                std::hint::black_box(engine.score(&event));
                score_times.push(t.elapsed());
            }
            latest = latest.max(event.event_time);
            let t = Instant::now();
            std::hint::black_box(engine.observe(&event));
            if i.is_multiple_of(2_000) {
                engine.expire(latest);
            }
            observe += t.elapsed();
        }
        score_times.sort();
        let pct = |p: f64| score_times[((score_times.len() - 1) as f64 * p) as usize];
        println!(
            "{} records ({valid} valid): decode {:?} ({:.2} µs/record), observe {:?} ({:.2} µs/record, {:.1}% of decode)",
            records.len(),
            decode_only,
            decode_only.as_secs_f64() * 1e6 / records.len() as f64,
            observe,
            observe.as_secs_f64() * 1e6 / valid as f64,
            100.0 * observe.as_secs_f64() / decode_only.as_secs_f64()
        );
        println!(
            "checkpoints every 5,000 records: {written} entities written, {bytes} bytes, {checkpoint:?} in take_dirty ({:.1}% of decode)",
            100.0 * checkpoint.as_secs_f64() / decode_only.as_secs_f64()
        );
        println!(
            "score over {} orders: p50 {:?}, p99 {:?}, max {:?}; {} entities at the end",
            score_times.len(),
            pct(0.5),
            pct(0.99),
            pct(1.0),
            engine.entities()
        );
    }
}

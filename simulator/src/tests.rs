use std::collections::{HashMap, HashSet};

use shoplake_events::{Limits, decode};

use super::*;

fn run(config: SimConfig) -> (Vec<SimRecord>, SimStats, Vec<FraudLabel>) {
    let mut sim = Simulator::new(config);
    let mut records = Vec::new();
    let mut labels = Vec::new();
    while let Some(r) = sim.next() {
        records.push(r);
        labels.extend(sim.labels());
    }
    (records, sim.stats().clone(), labels)
}

fn config(seed: u64, sessions: u64) -> SimConfig {
    SimConfig {
        seed,
        max_sessions: Some(sessions),
        bad_share: 0.03,
        duplicate_share: 0.02,
        fraud_share: 0.05,
        ..SimConfig::default()
    }
}

#[test]
fn the_same_seed_gives_the_same_bytes() {
    let (a, ..) = run(config(3, 200));
    let (b, ..) = run(config(3, 200));
    let (c, ..) = run(config(4, 200));
    assert_eq!(a.len(), b.len());
    assert!(a.iter().zip(&b).all(|(x, y)| x.payload == y.payload));
    assert_ne!(a[0].payload, c[0].payload);
}

#[test]
fn every_record_is_what_the_simulator_says_it_is() {
    let (records, stats, _) = run(config(5, 1500));
    let limits = Limits::default();
    let mut valid_ids = HashSet::new();
    let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
    let mut last_time = i64::MIN;
    for r in &records {
        assert!(r.server_time_micros >= last_time, "server-time order");
        last_time = r.server_time_micros;
        let decoded = decode(&r.payload, r.server_time_micros, &limits);
        match (r.kind, decoded) {
            (RecordKind::Valid(name), Ok(event)) => {
                assert_eq!(event.name, name);
                assert_eq!(event.received_at, r.server_time_micros);
                assert!(valid_ids.insert(event.event_id().to_owned()), "unique ids");
            }
            (RecordKind::Duplicate, Ok(event)) => {
                assert!(
                    valid_ids.contains(event.event_id()),
                    "a duplicate follows its original"
                )
            }
            (RecordKind::Bad(reason), Err(rejection)) => {
                assert_eq!(
                    rejection.reason,
                    reason,
                    "{rejection} in {}",
                    String::from_utf8_lossy(&r.payload[..r.payload.len().min(400)])
                );
                *by_reason.entry(reason.as_str().to_owned()).or_default() += 1;
            }
            (kind, Ok(_)) => panic!("{kind:?} decoded as valid"),
            (kind, Err(e)) => panic!(
                "{kind:?} rejected: {e} in {}",
                String::from_utf8_lossy(&r.payload)
            ),
        }
    }
    assert_eq!(stats.records, records.len() as u64);
    assert_eq!(stats.valid_unique, valid_ids.len() as u64);
    assert_eq!(stats.bad_by_reason, by_reason);
    assert_eq!(stats.bad, by_reason.values().sum::<u64>());
    assert!(
        by_reason.len() >= 10,
        "most kinds of bad input: {by_reason:?}"
    );
    assert!(stats.duplicates > 0);
}

#[test]
fn sessions_walk_a_funnel_with_drop_off() {
    let (_, stats, _) = run(config(6, 3000));
    let n = |name: &str| stats.by_event_name.get(name).copied().unwrap_or(0);
    assert!(n("product_viewed") > n("product_added"));
    assert!(n("product_added") > n("checkout_started"));
    assert!(n("checkout_started") > n("order_completed"));
    assert!(n("order_completed") > 50, "{stats:?}");
    assert_eq!(stats.orders, n("order_completed"));
    for name in [
        "payment_authorized",
        "order_shipped",
        "order_delivered",
        "signed_up",
        "products_searched",
        "cart_viewed",
    ] {
        assert!(n(name) > 0, "{name} occurs");
    }
    // Back-office events arrive after their orders: shipments lag orders.
    assert!(n("order_delivered") <= n("order_shipped"));
}

#[test]
fn fraud_labels_name_orders_that_are_in_the_stream() {
    // Fraud at 20% of orders: enough scenarios for every pattern to show.
    let (records, stats, labels) = run(SimConfig {
        fraud_share: 0.2,
        ..config(7, 6000)
    });
    assert_eq!(labels.len() as u64, stats.fraud_orders);
    let patterns: HashSet<&str> = labels.iter().map(|l| l.pattern.as_str()).collect();
    assert_eq!(
        patterns,
        HashSet::from(["card_testing", "account_takeover", "multi_account"])
    );
    let orders: HashSet<String> = records
        .iter()
        .filter(|r| r.kind == RecordKind::Valid(EventName::OrderCompleted))
        .filter_map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.payload).ok()?;
            Some(v["properties"]["order_id"].as_str()?.to_owned())
        })
        .collect();
    assert!(labels.iter().all(|l| orders.contains(&l.order_id)));
    // Labels stay out of the events.
    assert!(
        records
            .iter()
            .all(|r| !String::from_utf8_lossy(&r.payload).contains("card_testing"))
    );
}

#[test]
fn bought_together_items_share_affinity_groups() {
    let sim = Simulator::new(config(8, 1));
    let group_of: HashMap<String, usize> = sim
        .catalog
        .products
        .iter()
        .map(|p| (p.id.clone(), p.group))
        .collect();
    let (records, ..) = run(config(8, 3000));
    let (mut same, mut pairs) = (0u64, 0u64);
    for r in &records {
        if r.kind != RecordKind::Valid(EventName::OrderCompleted) {
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
        let ids: Vec<&str> = v["properties"]["products"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["product_id"].as_str().unwrap())
            .collect();
        for (i, a) in ids.iter().enumerate() {
            for b in &ids[i + 1..] {
                pairs += 1;
                same += u64::from(group_of[*a] == group_of[*b]);
            }
        }
    }
    // With ~250 groups, random pairs would share a group well under 1% of the time.
    assert!(pairs > 20 && same * 4 > pairs, "{same} of {pairs} pairs");
}

#[test]
fn spilling_to_disk_changes_nothing_but_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (expected, expected_stats, expected_labels) = run(config(9, 3000));
    let mut sim = Simulator::new(config(9, 3000))
        .with_spill(&dir.path().join("spill"))
        .unwrap();
    let (mut records, mut labels) = (Vec::new(), Vec::new());
    let (mut most_in_memory, mut most_spilled) = (0, 0);
    while let Some(r) = sim.next() {
        records.push(r);
        labels.extend(sim.labels());
        let (in_memory, spilled) = sim.pending();
        most_in_memory = most_in_memory.max(in_memory);
        most_spilled = most_spilled.max(spilled);
    }
    assert!(sim.take_error().is_none());
    assert_eq!(records.len(), expected.len());
    for (got, want) in records.iter().zip(&expected) {
        assert_eq!(got.payload, want.payload);
        assert_eq!(got.partition_key, want.partition_key);
        assert_eq!(got.kind, want.kind);
        assert_eq!(got.server_time_micros, want.server_time_micros);
    }
    assert_eq!(sim.stats(), &expected_stats);
    assert_eq!(labels, expected_labels);
    // One session per second of simulated time, each lasting minutes, orders followed for days:
    // thousands of records wait, of which memory holds only the current ten seconds' worth.
    assert!(most_spilled > 5_000, "spilled {most_spilled}");
    assert!(
        most_in_memory < most_spilled / 20,
        "in memory {most_in_memory}, spilled {most_spilled}"
    );
    assert_eq!(sim.pending(), (0, 0));
}

/// The order events of a run: (order id, user id, device id, IP, GeoIP country, billing and
/// shipping country, card).
fn orders(records: &[SimRecord]) -> Vec<[String; 8]> {
    records
        .iter()
        .filter(|r| r.kind == RecordKind::Valid(EventName::OrderCompleted))
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
            let text = |x: &serde_json::Value| x.as_str().unwrap_or_default().to_owned();
            let (c, p) = (&v["context"], &v["properties"]);
            [
                text(&p["order_id"]),
                text(&v["user_id"]),
                text(&c["device_id"]),
                text(&c["ip"]),
                text(&c["country"]),
                text(&p["billing_country"]),
                text(&p["shipping_country"]),
                text(&p["card_fingerprint"]),
            ]
        })
        .collect()
}

#[test]
fn fraud_is_its_share_of_orders_in_the_mix_and_is_charged_back_later() {
    let (records, stats, labels) = run(SimConfig {
        seed: 21,
        max_sessions: Some(20_000),
        fraud_share: 0.04,
        ..SimConfig::default()
    });
    let share = stats.fraud_orders as f64 / stats.orders as f64;
    assert!((0.03..0.05).contains(&share), "{stats:?}");
    let mut by_pattern: HashMap<&str, f64> = HashMap::new();
    for l in &labels {
        *by_pattern.entry(l.pattern.as_str()).or_default() += 1.0 / labels.len() as f64;
    }
    for (pattern, share) in &by_pattern {
        assert!((0.15..0.55).contains(share), "{pattern}: {by_pattern:?}");
    }
    // Chargebacks: of fraud orders only, two weeks to two months after the order.
    let placed: HashMap<String, i64> = records
        .iter()
        .filter(|r| r.kind == RecordKind::Valid(EventName::OrderCompleted))
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
            let id = v["properties"]["order_id"].as_str().unwrap().to_owned();
            (id, r.server_time_micros)
        })
        .collect();
    let fraud: HashSet<&str> = labels.iter().map(|l| l.order_id.as_str()).collect();
    let mut chargebacks = 0;
    for r in &records {
        if r.kind != RecordKind::Valid(EventName::OrderRefunded) {
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
        if v["properties"]["reason"] != "fraud_chargeback" {
            continue;
        }
        let order = v["properties"]["order_id"].as_str().unwrap();
        if !placed.contains_key(order) {
            // The order event was spoiled into bad input (and its label with it).
            continue;
        }
        assert!(fraud.contains(order), "an honest order charged back");
        let days = (r.server_time_micros - placed[order]) as f64 / 86_400e6;
        assert!((14.0..61.0).contains(&days), "{days} days");
        chargebacks += 1;
    }
    // Paid fraud orders (most card tests are declined) are mostly charged back.
    assert!(
        chargebacks * 5 > labels.len(),
        "{chargebacks} of {}",
        labels.len()
    );
}

#[test]
fn honest_shoppers_share_devices_and_ips_travel_and_use_several_cards() {
    let honest_orders = |confounders: Confounders| {
        let (records, _, labels) = run(SimConfig {
            seed: 22,
            max_sessions: Some(10_000),
            fraud_share: 0.0,
            confounders,
            ..SimConfig::default()
        });
        assert!(labels.is_empty());
        orders(&records)
    };
    // How often each confounder shows among honest orders.
    let measure = |orders: &[[String; 8]]| {
        let mut users_of: HashMap<(usize, &str), HashSet<&str>> = HashMap::new();
        let mut cards_of: HashMap<&str, HashSet<&str>> = HashMap::new();
        for o in orders.iter().filter(|o| !o[1].is_empty()) {
            for (k, field) in [(0, 2), (1, 3), (2, 7)] {
                if !o[field].is_empty() {
                    users_of.entry((k, &o[field])).or_default().insert(&o[1]);
                }
            }
            if !o[7].is_empty() {
                cards_of.entry(&o[1]).or_default().insert(&o[7]);
            }
        }
        let shared = |k: usize, n: usize| {
            users_of
                .iter()
                .filter(|((kind, _), users)| *kind == k && users.len() >= n)
                .count()
        };
        let abroad = orders.iter().filter(|o| o[4] != o[5]).count();
        let shipped_abroad = orders.iter().filter(|o| o[5] != o[6]).count();
        let several_cards = cards_of.values().filter(|c| c.len() >= 2).count();
        [
            shared(0, 2),
            shared(1, 3),
            shared(2, 2),
            abroad,
            shipped_abroad,
            several_cards,
        ]
    };
    let real = measure(&honest_orders(Confounders::default()));
    let none = measure(&honest_orders(Confounders::none()));
    let names = [
        "devices with 2+ accounts",
        "IPs with 3+ accounts",
        "cards of 2+ accounts",
        "orders from abroad",
        "orders shipped abroad",
        "accounts with 2+ cards",
    ];
    println!("{names:?}\n{real:?}");
    for (i, name) in names.iter().enumerate() {
        assert!(
            real[i] >= 2,
            "{name}: {} with the default confounders",
            real[i]
        );
        assert_eq!(none[i], 0, "{name} without confounders");
    }
}

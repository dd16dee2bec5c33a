//! End to end through the HTTP collector: Segment's official Python SDK, pointed at a running
//! `shoplake collect`, sends a storefront's e-commerce events; the lake ends with exactly those
//! events, mapped onto the contract.
//! scripts/test installs the SDK ([`python`]).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::e2e::{block_on, count, http_get, ok, python, run, sql, start_collect, terminate};

#[test]
fn segment_sdk_events_land_in_the_lake_exactly_once() {
    let python = python();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let key = run(data, &["keys", "create", "--source", "backend"]);
    let key = key.trim();
    assert!(key.starts_with("shk_"), "{key}");
    let listed = run(data, &["keys", "list", "--json"]);
    let listed: Value = serde_json::from_str(listed.trim()).unwrap();
    assert_eq!(listed["source"], "backend");

    let (collect, addr) = start_collect(data);

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/segment_sdk.py");
    let out = Command::new(python)
        .arg(script)
        .arg(format!("http://{addr}"))
        .arg(key)
        .output()
        .expect("start python");
    let sent: Value = serde_json::from_str(ok(out).trim()).expect("json from segment_sdk.py");
    let sent = sent.as_object().unwrap();
    assert_eq!(sent.len(), 12);
    let (_, metrics) = http_get(&addr, "/metrics").unwrap();
    assert!(
        metrics.contains("shoplake_collector_events_accepted_total 12"),
        "{metrics}"
    );
    assert!(terminate(collect).success(), "a clean stop on SIGTERM");

    run(data, &["stream", "--drain"]);
    run(data, &["batch", "compact"]);
    assert_eq!(count(data, "select count(*) from bad_rows"), 0);
    assert_eq!(count(data, "select count(*) from events"), 12);
    // Exactly the events sent, each under the contract's name, with the SDK's message ids.
    let rows = sql(data, "select event_id, event_name from events");
    assert_eq!(rows.len(), 12);
    for row in &rows {
        let name = row["event_name"].as_str().unwrap();
        assert_eq!(
            sent.get(name).and_then(Value::as_str),
            row["event_id"].as_str(),
            "{row}"
        );
    }
    let one = |query: &str| -> Value {
        let rows = sql(data, query);
        assert_eq!(rows.len(), 1, "{query}: {rows:?}");
        rows[0].clone()
    };
    let order = one(
        "select order_id, cast(total as varchar) as total, cast(revenue as varchar) as revenue, currency, user_id, source, device_type, cardinality(products) as products from events where event_name = 'order_completed'",
    );
    assert_eq!(
        order,
        serde_json::json!({"order_id": "o-1", "total": "104.80", "revenue": "99.80", "currency": "EUR",
                           "user_id": "u-1", "source": "backend", "device_type": "server", "products": 1})
    );
    assert_eq!(
        one("select cast(total as varchar) as t from events where event_name = 'checkout_started'")
            ["t"],
        "99.80"
    );
    assert_eq!(
        one("select checkout_step from events where event_name = 'checkout_step_completed'")["checkout_step"],
        2
    );
    assert_eq!(
        one("select search_query from events where event_name = 'products_searched'")["search_query"],
        "red shoes"
    );
    assert_eq!(
        one("select product_id from events where event_name = 'product_viewed'")["product_id"],
        "p-1"
    );
    assert_eq!(
        one("select custom_event_name from events where event_name = 'custom'")["custom_event_name"],
        "Newsletter Subscribed"
    );
    let page = one(
        "select page_url, page_title, utm_source, utm_medium, anonymous_id from events where event_name = 'page_viewed'",
    );
    assert_eq!(page["page_title"], "Shop");
    assert_eq!(page["utm_source"], "news");
    assert_eq!(page["utm_medium"], "email");
    assert_eq!(page["anonymous_id"], "a-1");
    let alias = one("select anonymous_id, user_id from events where event_name = 'alias'");
    assert_eq!(
        (alias["anonymous_id"].as_str(), alias["user_id"].as_str()),
        (Some("a-1"), Some("u-1"))
    );
    assert!(
        one("select traits from events where event_name = 'identify'")["traits"]
            .as_str()
            .unwrap()
            .contains("gold")
    );
    // identify and alias both link a-1 to u-1: one link, two events.
    let link = one(
        "select user_id, link_events, users_linked, is_current, source from identities where anonymous_id = 'a-1'",
    );
    assert_eq!(
        link,
        serde_json::json!({"user_id": "u-1", "link_events": 2, "users_linked": 1, "is_current": true, "source": "backend"})
    );
}

/// Starts `shoplake collect` on `data` with a fresh write key of `source`; returns it, its
/// address and the key.
fn start_collect_with_key(data: &Path, source: &str) -> (std::process::Child, String, String) {
    let key = run(data, &["keys", "create", "--source", source]);
    let (collect, addr) = start_collect(data);
    (collect, addr, key.trim().to_owned())
}

#[test]
fn an_alias_through_the_collector_links_the_earlier_visit_to_the_user() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let (collect, addr, key) = start_collect_with_key(data, "web");
    // A shopper browses anonymously (two hours ago: the device sends late, its clock is right),
    // then signs in: the storefront aliases the anonymous id to the user. Another device
    // identifies with both ids; a third only ever browses.
    let now = chrono::Utc::now();
    let at = |minutes_ago: i64| {
        (now - chrono::Duration::minutes(minutes_ago))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let body = serde_json::json!({
        "sentAt": at(0),
        "batch": [
            {"type": "page", "anonymousId": "a-7", "messageId": "m-1", "timestamp": at(120),
             "name": "Home", "properties": {"url": "https://shop.example/", "path": "/"}},
            {"type": "track", "event": "Product Viewed", "anonymousId": "a-7", "messageId": "m-2",
             "timestamp": at(119), "properties": {"product_id": "p-1", "price": 10.0, "currency": "EUR"}},
            {"type": "alias", "previousId": "a-7", "userId": "u-7", "messageId": "m-3", "timestamp": at(1)},
            {"type": "identify", "anonymousId": "a-8", "userId": "u-8", "messageId": "m-4",
             "timestamp": at(1), "traits": {"plan": "gold"}},
            {"type": "page", "anonymousId": "a-9", "messageId": "m-5", "timestamp": at(1),
             "name": "Home", "properties": {"url": "https://shop.example/", "path": "/"}},
        ]
    });
    let status = block_on(async {
        reqwest::Client::new()
            .post(format!("http://{addr}/v1/batch"))
            .basic_auth(&key, Some(""))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(status, 200);
    assert!(terminate(collect).success(), "a clean stop on SIGTERM");
    run(data, &["stream", "--drain"]);
    let report: Value = serde_json::from_str(run(data, &["batch", "compact"]).trim()).unwrap();
    assert_eq!(report["events_written"], 5);
    assert_eq!(report["identities"], 2, "{report}");

    let links = sql(
        data,
        "select anonymous_id, user_id, linked_by, source, link_events, users_linked, is_current from identities order by 1",
    );
    assert_eq!(
        links,
        [
            serde_json::json!({"anonymous_id": "a-7", "user_id": "u-7", "linked_by": "alias", "source": "web",
                               "link_events": 1, "users_linked": 1, "is_current": true}),
            serde_json::json!({"anonymous_id": "a-8", "user_id": "u-8", "linked_by": "identify", "source": "web",
                               "link_events": 1, "users_linked": 1, "is_current": true}),
        ]
    );
    // The anonymous visit two hours before the alias is its own session, and it is u-7's.
    let sessions = sql(
        data,
        "select anonymous_id, user_id, user_from_identity, events from sessions order by started_at, anonymous_id",
    );
    assert_eq!(
        sessions,
        [
            serde_json::json!({"anonymous_id": "a-7", "user_id": "u-7", "user_from_identity": true, "events": 2}),
            serde_json::json!({"anonymous_id": "a-7", "user_id": "u-7", "user_from_identity": false, "events": 1}),
            serde_json::json!({"anonymous_id": "a-8", "user_id": "u-8", "user_from_identity": false, "events": 1}),
            // No link, no user (the JSON output leaves nulls out).
            serde_json::json!({"anonymous_id": "a-9", "user_from_identity": false, "events": 1}),
        ]
    );
}

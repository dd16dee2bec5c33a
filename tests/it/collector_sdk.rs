//! End to end through the HTTP collector: Segment's official Python SDK, pointed at a running
//! `shoplake collect`, sends a storefront's e-commerce events; the lake ends with exactly those
//! events, mapped onto the contract.
//! scripts/test installs the SDK and sets SHOPLAKE_TEST_PYTHON; without it, the test is skipped.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::e2e::{count, free_port, http_get, ok, run, shoplake, sql, terminate};

#[test]
fn segment_sdk_events_land_in_the_lake_exactly_once() {
    let Some(python) = std::env::var_os("SHOPLAKE_TEST_PYTHON") else {
        eprintln!(
            "SKIPPED: the Segment SDK test (SHOPLAKE_TEST_PYTHON is not set; ./scripts/test sets it)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let key = run(data, &["keys", "create", "--source", "backend"]);
    let key = key.trim();
    assert!(key.starts_with("shk_"), "{key}");
    let listed = run(data, &["keys", "list", "--json"]);
    let listed: Value = serde_json::from_str(listed.trim()).unwrap();
    assert_eq!(listed["source"], "backend");

    let addr = format!("127.0.0.1:{}", free_port());
    let collect = shoplake(data, &["collect", "--http-addr", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(&addr, "/ready").map(|r| r.0) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "shoplake collect did not get ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

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
}

//! Every endpoint with valid and invalid requests, and a batch with bad events in it.

use reqwest::StatusCode;
use serde_json::{Value, json};
use shoplake_collector::CollectorConfig;
use shoplake_events::{Limits, Reason, decode};

use crate::{assert_error, order, reply, start, uuid};

#[tokio::test]
async fn collector_every_endpoint_answers_valid_and_invalid_requests() {
    let s = start(CollectorConfig::default()).await;
    let now = chrono::Utc::now().to_rfc3339();
    let calls = [
        (
            "/v1/track",
            json!({"event": "Product Viewed", "anonymousId": "a-1", "timestamp": now, "properties": {"product_id": "p-1"}}),
            "product_viewed",
        ),
        (
            "/v1/page",
            json!({"anonymousId": "a-1", "name": "Home", "properties": {"url": "https://shop.example/", "path": "/"}}),
            "page_viewed",
        ),
        (
            "/v1/screen",
            json!({"anonymousId": "a-1", "name": "Cart"}),
            "screen_viewed",
        ),
        (
            "/v1/identify",
            json!({"userId": "u-1", "anonymousId": "a-1", "traits": {"plan": "gold"}}),
            "identify",
        ),
        (
            "/v1/alias",
            json!({"userId": "u-1", "previousId": "a-1"}),
            "alias",
        ),
        (
            "/v1/group",
            json!({"userId": "u-1", "groupId": "acme"}),
            "group",
        ),
        (
            "/v1/batch",
            json!({"batch": [{"type": "track", "event": "Newsletter Subscribed", "userId": "u-1"}]}),
            "custom",
        ),
        (
            "/v1/import",
            json!({"batch": [{"type": "track", "event": "Order Shipped", "userId": "u-1", "properties": {"order_id": "o-1"}}]}),
            "order_shipped",
        ),
        (
            "/v1/t",
            json!({"event": "Signed In", "userId": "u-1"}),
            "logged_in",
        ),
    ];
    for (path, body, _) in &calls {
        let (status, answer) = s.post(path, body).await;
        assert_eq!(status, StatusCode::OK, "{path}: {answer}");
        assert_eq!(answer, json!({"success": true}), "{path}");
        // The same endpoint with a body that is not JSON.
        let resp = s
            .post_raw(
                path,
                b"{\"event\": ".to_vec(),
                &[("content-type", "application/json")],
                true,
            )
            .await;
        let (status, answer) = reply(resp).await;
        assert_error(
            status,
            &answer,
            StatusCode::BAD_REQUEST,
            "malformed",
            "not valid JSON",
        );
        // And with JSON that is not an object.
        let resp = s.post_raw(path, b"[1]".to_vec(), &[], true).await;
        let (status, answer) = reply(resp).await;
        assert_error(
            status,
            &answer,
            StatusCode::BAD_REQUEST,
            "malformed",
            "JSON object",
        );
    }
    let (status, answer) = s
        .post("/v1/batch", &json!({"batch": {"type": "track"}}))
        .await;
    assert_error(
        status,
        &answer,
        StatusCode::BAD_REQUEST,
        "malformed",
        "array",
    );

    // Exactly one event per valid call, each valid under the contract, with the web source.
    let events = s.events().await;
    let mut names: Vec<&str> = events
        .iter()
        .map(|e| e["event_name"].as_str().unwrap())
        .collect();
    names.sort();
    let mut want: Vec<&str> = calls.iter().map(|c| c.2).collect();
    want.sort();
    assert_eq!(names, want);
    for raw in s.records().await {
        let v = decode(&raw, crate::arrival(), &Limits::default());
        assert!(
            v.is_ok(),
            "{:?}: {}",
            v.err(),
            String::from_utf8_lossy(&raw)
        );
    }
    assert!(events.iter().all(|e| e["context"]["source"] == "web"));
    let custom = events.iter().find(|e| e["event_name"] == "custom").unwrap();
    assert_eq!(custom["custom_event_name"], "Newsletter Subscribed");
    let metrics = shoplake_server::telemetry::render(s.collector.metrics());
    assert!(
        metrics.contains("shoplake_collector_events_accepted_total 9"),
        "{metrics}"
    );
    assert!(
        metrics.contains("shoplake_collector_requests_rejected_total{reason=\"malformed\"} 19"),
        "{metrics}"
    );
}

#[tokio::test]
async fn collector_one_bad_event_does_not_reject_the_batch() {
    let s = start(CollectorConfig::default()).await;
    let mut bad = order(&uuid(2));
    bad["properties"]["total"] = json!("a lot");
    let batch = json!({"batch": [order(&uuid(1)), bad, 42, {"type": "purchase", "userId": "u"}, order(&uuid(3))]});
    let (status, answer) = s.post("/v1/batch", &batch).await;
    assert_eq!((status, answer), (StatusCode::OK, json!({"success": true})));
    let records = s.records().await;
    assert_eq!(records.len(), 5, "every element is on the stream");
    let mut valid = Vec::new();
    let mut rejected = Vec::new();
    for raw in &records {
        match decode(raw, crate::arrival(), &Limits::default()) {
            Ok(v) => valid.push(v.event_id().to_owned()),
            Err(r) => rejected.push((r.reason, r.field, raw.clone())),
        }
    }
    valid.sort();
    assert_eq!(valid, [uuid(1), uuid(3)]);
    rejected.sort_by(|a, b| (a.0.as_str(), &a.1).cmp(&(b.0.as_str(), &b.1)));
    let reasons: Vec<(Reason, Option<&str>)> =
        rejected.iter().map(|r| (r.0, r.1.as_deref())).collect();
    assert_eq!(
        reasons,
        [
            (Reason::UnknownEvent, Some("event_name")),
            (Reason::WrongType, None),
            (Reason::WrongType, Some("properties.total")),
        ]
    );
    // The bad rows keep what the client sent.
    let wrong_total: Value = serde_json::from_slice(&rejected[2].2).unwrap();
    assert_eq!(wrong_total["original"]["properties"]["total"], "a lot");
    assert_eq!(rejected[1].2, b"42");
    let metrics = shoplake_server::telemetry::render(s.collector.metrics());
    assert!(
        metrics.contains("shoplake_collector_events_invalid_total{reason=\"wrong_type\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("shoplake_collector_events_invalid_total{reason=\"unknown_event\"} 1"),
        "{metrics}"
    );
}

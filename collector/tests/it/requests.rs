//! How requests are read: size limits, gzip bodies, CORS, rate limits per key.

use std::io::Write;

use reqwest::StatusCode;
use serde_json::{Value, json};
use shoplake_collector::{CollectorConfig, KeyStore};
use shoplake_events::{Limits, Reason, decode};

use crate::{assert_error, order, reply, start, uuid};

#[tokio::test]
async fn collector_size_limits() {
    let s = start(CollectorConfig::default()).await;
    let big = "x".repeat(33 * 1024);
    // One event over 32 KB: 400.
    let event = json!({"event": "Product Viewed", "userId": "u", "properties": {"product_id": "p", "note": big}});
    let (status, answer) = s.post("/v1/track", &event).await;
    assert_error(
        status,
        &answer,
        StatusCode::BAD_REQUEST,
        "event_too_large",
        &format!(
            "the event is {} bytes, the limit is 32768 bytes",
            event.to_string().len()
        ),
    );
    // A batch over 500 KB: 413.
    let items: Vec<Value> = (0..20)
        .map(|i| json!({"type": "track", "event": "Product Viewed", "userId": "u", "messageId": uuid(i), "properties": {"product_id": "p", "note": "y".repeat(30 * 1024)}}))
        .collect();
    let (status, answer) = s.post("/v1/batch", &json!({"batch": items})).await;
    assert_error(
        status,
        &answer,
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        "the batch is more than 577024 bytes, the limit is 512000 bytes",
    );
    assert!(
        s.records().await.is_empty(),
        "nothing of a refused request is written"
    );
    // Inside a batch, an event over 32 KB is accepted with the others and becomes a bad row.
    let (status, _) = s
        .post(
            "/v1/batch",
            &json!({"batch": [order(&uuid(1)), {"type": "track", "event": "Product Viewed", "userId": "u", "properties": {"product_id": "p", "note": big}}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let records = s.records().await;
    assert_eq!(records.len(), 2);
    let reasons: Vec<Option<Reason>> = records
        .iter()
        .map(|r| {
            decode(r, crate::arrival(), &Limits::default())
                .err()
                .map(|e| e.reason)
        })
        .collect();
    assert!(
        reasons.contains(&None) && reasons.contains(&Some(Reason::TooLarge)),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn collector_gzip_bodies() {
    let s = start(CollectorConfig::default()).await;
    let body = json!({"batch": [order(&uuid(1)), order(&uuid(2))], "sentAt": chrono::Utc::now().to_rfc3339()});
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(body.to_string().as_bytes()).unwrap();
    let resp = s
        .post_raw(
            "/v1/batch",
            gz.finish().unwrap(),
            &[
                ("content-encoding", "gzip"),
                ("content-type", "application/json"),
            ],
            true,
        )
        .await;
    assert_eq!(
        reply(resp).await,
        (StatusCode::OK, json!({"success": true}))
    );
    let ids: Vec<String> = s
        .events()
        .await
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&uuid(1)) && ids.contains(&uuid(2)));
    // A body that says gzip and is not.
    let resp = s
        .post_raw(
            "/v1/batch",
            body.to_string().into_bytes(),
            &[("content-encoding", "gzip")],
            true,
        )
        .await;
    let (status, answer) = reply(resp).await;
    assert_error(
        status,
        &answer,
        StatusCode::BAD_REQUEST,
        "malformed",
        "not valid gzip",
    );
    // A gzip bomb stops at the limit.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![b' '; 4 << 20]).unwrap();
    let resp = s
        .post_raw(
            "/v1/batch",
            gz.finish().unwrap(),
            &[("content-encoding", "gzip")],
            true,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn collector_cors() {
    let s = start(CollectorConfig {
        cors_allowed_origins: vec!["https://shop.example".into()],
        ..CollectorConfig::default()
    })
    .await;
    let preflight = |origin: &'static str| {
        s.http
            .request(reqwest::Method::OPTIONS, s.url("/v1/track"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let resp = preflight("https://shop.example").await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "https://shop.example");
    assert_eq!(h["access-control-allow-methods"], "POST, OPTIONS");
    assert!(
        h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );
    let resp = preflight("https://evil.example").await.unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    // The answer to the request itself names the origin too.
    let resp = s
        .http
        .post(s.url("/v1/page"))
        .header("origin", "https://shop.example")
        .basic_auth(&s.key, Some(""))
        .json(&json!({"anonymousId": "a", "properties": {"path": "/"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
}

#[tokio::test]
async fn collector_rate_limit_per_key() {
    let s = start(CollectorConfig {
        rate_limit_events_per_sec: 1.0,
        rate_limit_burst: 3.0,
        ..CollectorConfig::default()
    })
    .await;
    let batch = json!({"batch": [order(&uuid(1)), order(&uuid(2)), order(&uuid(3))]});
    assert_eq!(s.post("/v1/batch", &batch).await.0, StatusCode::OK);
    let resp = s
        .http
        .post(s.url("/v1/batch"))
        .basic_auth(&s.key, Some(""))
        .json(&batch)
        .send()
        .await
        .unwrap();
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3).contains(&retry), "Retry-After {retry}");
    let (status, answer) = reply(resp).await;
    assert_error(
        status,
        &answer,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "rate limit of 1 events/s",
    );
    // Another key has its own bucket.
    let other = KeyStore::open(&s.keys_path)
        .unwrap()
        .create("backend")
        .unwrap();
    let resp = s
        .http
        .post(s.url("/v1/batch"))
        .basic_auth(&other.key, Some(""))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(s.records().await.len(), 6);
}

//! Write keys: created, refused, revoked, and the source they put on events.

use reqwest::StatusCode;
use serde_json::json;
use shoplake_collector::{CollectorConfig, KeyStore};

use crate::{assert_error, reply, start};

#[tokio::test]
async fn collector_write_keys() {
    let s = start(CollectorConfig::default()).await;
    let body = json!({"event": "Product Viewed", "userId": "u", "properties": {"product_id": "p"}});
    // Missing.
    let resp = s
        .http
        .post(s.url("/v1/track"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, answer) = reply(resp).await;
    assert_error(
        status,
        &answer,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "no write key",
    );
    // Unknown, in the header and in the body.
    let resp = s
        .http
        .post(s.url("/v1/track"))
        .basic_auth("shk_nope", Some(""))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["www-authenticate"],
        "Basic realm=\"shoplake collector\""
    );
    let (status, answer) = reply(resp).await;
    assert_error(
        status,
        &answer,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "unknown or revoked",
    );
    let mut with_key = body.clone();
    with_key["writeKey"] = json!("shk_nope");
    let resp = s
        .http
        .post(s.url("/v1/track"))
        .json(&with_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // Valid in the body (single call and batch), as analytics.js sends it.
    with_key["writeKey"] = json!(s.key);
    let resp = s
        .http
        .post(s.url("/v1/track"))
        .json(&with_key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        reply(resp).await,
        (StatusCode::OK, json!({"success": true}))
    );
    let batch = json!({"writeKey": s.key, "batch": [{"type": "identify", "userId": "u"}]});
    let resp = s
        .http
        .post(s.url("/v1/batch"))
        .header("content-type", "text/plain")
        .body(batch.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(s.records().await.len(), 2);

    // Each key's source is recorded; a revoked key is refused.
    let other = KeyStore::open(&s.keys_path).unwrap();
    let ios = other.create("ios").unwrap();
    let resp = s
        .http
        .post(s.url("/v1/track"))
        .basic_auth(&ios.key, Some(""))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let sources: Vec<String> = s
        .events()
        .await
        .iter()
        .map(|e| e["context"]["source"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(sources.iter().filter(|s| *s == "ios").count(), 1);
    other.revoke(&ios.info.key_id).unwrap();
    let resp = s
        .http
        .post(s.url("/v1/track"))
        .basic_auth(&ios.key, Some(""))
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, answer) = reply(resp).await;
    assert_error(
        status,
        &answer,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "revoked",
    );
    assert_eq!(s.records().await.len(), 3);
}

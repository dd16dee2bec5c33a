//! A stream that fails: nothing answered 200 is missing from it.

use std::sync::atomic::Ordering;

use reqwest::StatusCode;
use serde_json::{Value, json};
use shoplake_collector::CollectorConfig;

use crate::{assert_error, order, reply, start, uuid};

#[tokio::test]
async fn collector_a_failing_stream_loses_nothing_answered_200() {
    let s = start(CollectorConfig::default()).await;
    let mut acknowledged: Vec<String> = Vec::new();
    let mut refused: Vec<Value> = Vec::new();
    let ready = || async { s.http.get(s.url("/ready")).send().await.unwrap().status() };
    assert_eq!(ready().await, StatusCode::OK);
    for round in 0..6usize {
        // Rounds 2 and 3: the stream is down.
        s.stream
            .fail
            .store(round == 2 || round == 3, Ordering::SeqCst);
        let items: Vec<Value> = (0..10).map(|i| order(&uuid(round * 100 + i))).collect();
        let ids: Vec<String> = (0..10).map(|i| uuid(round * 100 + i)).collect();
        let body = json!({"batch": items});
        let resp = s
            .http
            .post(s.url("/v1/batch"))
            .basic_auth(&s.key, Some(""))
            .json(&body)
            .send()
            .await
            .unwrap();
        if round == 2 || round == 3 {
            assert_eq!(resp.headers()["retry-after"], "2");
            let (status, answer) = reply(resp).await;
            assert_error(
                status,
                &answer,
                StatusCode::SERVICE_UNAVAILABLE,
                "stream_unavailable",
                "retry it",
            );
            assert_eq!(ready().await, StatusCode::SERVICE_UNAVAILABLE);
            refused.push(body);
        } else {
            assert_eq!(resp.status(), StatusCode::OK);
            acknowledged.extend(ids);
        }
    }
    // A batch larger than one put (1200 events: 3 puts) fails after its first put is durable.
    let items: Vec<Value> = (0..1200)
        .map(|i| json!({"type": "track", "event": "Order Shipped", "messageId": uuid(10_000 + i), "userId": "u", "properties": {"order_id": "o"}}))
        .collect();
    let big = json!({"batch": items});
    s.stream.puts_before_failing.store(1, Ordering::SeqCst);
    assert_eq!(
        s.post("/v1/batch", &big).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    s.stream
        .puts_before_failing
        .store(usize::MAX, Ordering::SeqCst);
    // The clients retry what was refused, and get 200.
    for body in refused.iter().chain([&big]) {
        assert_eq!(s.post("/v1/batch", body).await.0, StatusCode::OK);
        for item in body["batch"].as_array().unwrap() {
            acknowledged.push(item["messageId"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(ready().await, StatusCode::OK);

    let mut seen: Vec<String> = s
        .events()
        .await
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect();
    let copies = seen.len();
    seen.sort();
    seen.dedup();
    acknowledged.sort();
    assert_eq!(acknowledged.len(), 60 + 1200);
    assert_eq!(
        seen, acknowledged,
        "every event answered 200 is in the stream"
    );
    // The first put of the big batch was written twice: same ids, which the stage de-duplicates.
    assert_eq!(copies, 60 + 1200 + 500);
    let metrics = shoplake_server::telemetry::render(s.collector.metrics());
    assert!(
        metrics.contains(
            "shoplake_collector_requests_rejected_total{reason=\"stream_unavailable\"} 3"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("shoplake_collector_stream_up 1"),
        "{metrics}"
    );
}

//! The HTTP collector over a real socket: every endpoint, write keys, limits, gzip, CORS, rate
//! limits, bad events in a batch, GeoIP, and a stream that fails (nothing answered 200 is missing).

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use reqwest::StatusCode;
use serde_json::{Value, json};
use shoplake_events::{Limits, Reason, decode};
use shoplake_ingest::collector::{self, Collector, CollectorConfig, KeyStore};
use shoplake_ingest::{
    Error, LocalLog, PutResult, Record, StartPosition, StreamConsumer, StreamProducer,
};

/// The stream under test: the local log, failing on demand (this is our stream, not AWS).
struct Flaky {
    log: Arc<LocalLog>,
    fail: AtomicBool,
    /// Puts that succeed before the next ones fail (usize::MAX: never).
    puts_before_failing: AtomicUsize,
}

#[async_trait]
impl StreamProducer for Flaky {
    async fn put_records(&self, records: Vec<Record>) -> shoplake_ingest::Result<Vec<PutResult>> {
        let left = self.puts_before_failing.load(Ordering::SeqCst);
        if left == 0 || self.fail.load(Ordering::SeqCst) {
            return Err(Error::Unavailable {
                stream: "test".into(),
                message: "injected failure".into(),
            });
        }
        if left != usize::MAX {
            self.puts_before_failing.store(left - 1, Ordering::SeqCst);
        }
        self.log.put_records(records).await
    }
}

struct Server {
    _dir: tempfile::TempDir,
    addr: SocketAddr,
    stream: Arc<Flaky>,
    collector: Arc<Collector>,
    keys_path: std::path::PathBuf,
    /// A key of source "web".
    key: String,
    http: reqwest::Client,
}

async fn start(config: CollectorConfig) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(LocalLog::open(&dir.path().join("events.redb"), 2).unwrap());
    let stream = Arc::new(Flaky {
        log,
        fail: AtomicBool::new(false),
        puts_before_failing: AtomicUsize::new(usize::MAX),
    });
    let keys_path = dir.path().join("keys.redb");
    let keys = KeyStore::open(&keys_path).unwrap();
    let key = keys.create("web").unwrap().key;
    let collector = Arc::new(
        Collector::new(
            stream.clone(),
            keys,
            CollectorConfig {
                key_refresh_secs: 0,
                ..config
            },
        )
        .unwrap(),
    );
    let router = collector::router(collector.clone()).route(
        "/ready",
        axum::routing::get(collector::ready).with_state(collector.clone()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    Server {
        _dir: dir,
        addr,
        stream,
        collector,
        keys_path,
        key,
        http: reqwest::Client::new(),
    }
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(self.url(path))
            .basic_auth(&self.key, Some(""))
            .json(body)
            .send()
            .await
            .unwrap();
        reply(resp).await
    }

    async fn post_raw(
        &self,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
        auth: bool,
    ) -> reqwest::Response {
        let mut req = self.http.post(self.url(path)).body(body);
        if auth {
            req = req.basic_auth(&self.key, Some(""));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.unwrap()
    }

    /// Every record of the stream, as JSON, in no particular order.
    async fn records(&self) -> Vec<Vec<u8>> {
        let log = &self.stream.log;
        let mut out = Vec::new();
        for shard in log.list_shards().await.unwrap() {
            let mut reader = log
                .open_shard(&shard.shard_id, StartPosition::TrimHorizon)
                .await
                .unwrap();
            loop {
                let batch = reader.next_batch(1000).await.unwrap();
                if batch.records.is_empty() {
                    break;
                }
                out.extend(batch.records.into_iter().map(|r| r.data.to_vec()));
            }
        }
        out
    }

    async fn events(&self) -> Vec<Value> {
        self.records()
            .await
            .iter()
            .map(|r| serde_json::from_slice(r).unwrap())
            .collect()
    }
}

async fn reply(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

fn order(id: &str) -> Value {
    json!({
        "type": "track", "event": "Order Completed", "messageId": id, "userId": "u-1",
        "timestamp": chrono::Utc::now().to_rfc3339(),
        "properties": {"order_id": format!("o-{id}"), "total": 20.0, "currency": "EUR",
                       "products": [{"product_id": "p-1", "price": 20.0, "quantity": 1}]}
    })
}

fn uuid(n: usize) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

#[track_caller]
fn assert_error(status: StatusCode, body: &Value, want: StatusCode, code: &str, detail_has: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["error"], code, "{body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(detail_has),
        "{detail:?} lacks {detail_has:?}"
    );
}

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
        let v = decode(&raw, 0, &Limits::default());
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
    let metrics = s.collector.metrics().render_prometheus();
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
        .map(|r| decode(r, 0, &Limits::default()).err().map(|e| e.reason))
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
        match decode(raw, 0, &Limits::default()) {
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
    let metrics = s.collector.metrics().render_prometheus();
    assert!(
        metrics.contains("shoplake_collector_events_invalid_total{reason=\"wrong_type\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("shoplake_collector_events_invalid_total{reason=\"unknown_event\"} 1"),
        "{metrics}"
    );
}

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
    let metrics = s.collector.metrics().render_prometheus();
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

/// A MaxMind DB (format 2.0, IPv4, 24-bit records) mapping networks to `country.iso_code`.
fn write_mmdb(path: &std::path::Path, networks: &[([u8; 4], u8, &str)]) {
    #[derive(Clone, Copy)]
    enum Rec {
        Empty,
        Node(usize),
        Data(usize),
    }
    fn string(out: &mut Vec<u8>, s: &str) {
        out.push(0x40 | s.len() as u8);
        out.extend_from_slice(s.as_bytes());
    }
    let mut data = Vec::new();
    let mut nodes: Vec<[Rec; 2]> = vec![[Rec::Empty, Rec::Empty]];
    for (ip, prefix, country) in networks {
        let offset = data.len();
        data.push(0xE1); // map of 1
        string(&mut data, "country");
        data.push(0xE1);
        string(&mut data, "iso_code");
        string(&mut data, country);
        let bits = u32::from_be_bytes(*ip);
        let mut node = 0;
        for depth in 0..*prefix {
            let bit = ((bits >> (31 - depth)) & 1) as usize;
            if depth + 1 == *prefix {
                nodes[node][bit] = Rec::Data(offset);
            } else {
                node = match nodes[node][bit] {
                    Rec::Node(n) => n,
                    _ => {
                        nodes.push([Rec::Empty, Rec::Empty]);
                        nodes[node][bit] = Rec::Node(nodes.len() - 1);
                        nodes.len() - 1
                    }
                };
            }
        }
    }
    let count = nodes.len();
    let mut out = Vec::new();
    for n in &nodes {
        for r in n {
            let v = match *r {
                Rec::Empty => count,
                Rec::Node(i) => i,
                Rec::Data(off) => count + 16 + off,
            } as u32;
            out.extend_from_slice(&v.to_be_bytes()[1..]);
        }
    }
    out.extend_from_slice(&[0; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    out.push(0xE9); // map of 9
    string(&mut out, "binary_format_major_version");
    out.extend_from_slice(&[0xA1, 2]);
    string(&mut out, "binary_format_minor_version");
    out.push(0xA0);
    string(&mut out, "build_epoch");
    out.extend_from_slice(&[0x04, 0x02, 0x65, 0x00, 0x00, 0x00]);
    string(&mut out, "database_type");
    string(&mut out, "Test-Country");
    string(&mut out, "description");
    out.push(0xE1);
    string(&mut out, "en");
    string(&mut out, "test");
    string(&mut out, "ip_version");
    out.extend_from_slice(&[0xA1, 4]);
    string(&mut out, "languages");
    out.extend_from_slice(&[0x01, 0x04]);
    string(&mut out, "en");
    string(&mut out, "node_count");
    out.extend_from_slice(&[0xC2, (count >> 8) as u8, count as u8]);
    string(&mut out, "record_size");
    out.extend_from_slice(&[0xA1, 24]);
    std::fs::write(path, out).unwrap();
}

#[tokio::test]
async fn collector_geoip_country_and_truncated_ips() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("countries.mmdb");
    write_mmdb(
        &db,
        &[([81, 2, 69, 0], 24, "GB"), ([89, 160, 0, 0], 16, "SE")],
    );
    let s = start(CollectorConfig {
        geoip_database: Some(db),
        truncate_ips: true,
        hash_emails: true,
        ..CollectorConfig::default()
    })
    .await;
    let msg = |ip: &str| json!({"type": "identify", "userId": "jane@shop.example", "context": {"ip": ip}, "traits": {"email": "jane@shop.example"}});
    let batch = json!({"batch": [msg("81.2.69.160"), msg("89.160.20.112"), msg("10.0.0.1")]});
    assert_eq!(s.post("/v1/batch", &batch).await.0, StatusCode::OK);
    let mut seen: Vec<(String, Option<String>)> = s
        .events()
        .await
        .iter()
        .map(|e| {
            (
                e["context"]["ip"].as_str().unwrap().to_owned(),
                e["context"]["country"].as_str().map(str::to_owned),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("10.0.0.0".to_owned(), None),
            ("81.2.69.0".to_owned(), Some("GB".to_owned())),
            ("89.160.20.0".to_owned(), Some("SE".to_owned())),
        ]
    );
    for raw in s.records().await {
        let text = String::from_utf8(raw.clone()).unwrap();
        assert!(!text.contains('@'), "no e-mail is stored: {text}");
        assert!(decode(&raw, 0, &Limits::default()).is_ok(), "{text}");
    }
    // Without a context IP, the peer address (127.0.0.1 here) is looked up and truncated.
    let (status, _) = s
        .post("/v1/track", &json!({"event": "Signed In", "userId": "u"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let events = s.events().await;
    assert!(
        events.iter().any(|e| e["context"]["ip"] == "127.0.0.0"),
        "{events:?}"
    );
}

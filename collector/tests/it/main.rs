//! The HTTP collector over a real socket: every endpoint (`endpoints`), write keys (`keys`),
//! limits, gzip, CORS and rate limits (`requests`), a stream that fails (`stream`: nothing
//! answered 200 is missing), GeoIP (`geoip`), and arbitrary bytes and unicode at every endpoint
//! (`fuzz`). The stream under them is the local log.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod endpoints;
mod fuzz;
mod geoip;
mod keys;
mod requests;
mod stream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use reqwest::StatusCode;
use serde_json::{Value, json};
use shoplake_collector::{Collector, CollectorConfig, KeyStore};
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
                key_refresh: std::time::Duration::ZERO,
                ..config
            },
        )
        .unwrap(),
    );
    let router = shoplake_collector::router(collector.clone())
        .unguarded()
        .route(
            "/ready",
            axum::routing::get(shoplake_collector::ready).with_state(collector.clone()),
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

/// When the stream got the records a test reads back: now (a payload's received_at may not be
/// after its arrival, so decoding one needs the arrival).
fn arrival() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(since_epoch.as_micros()).unwrap()
}

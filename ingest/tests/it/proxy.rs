//! What the fault-injecting proxies of the Kinesis and Firehose tests share: holding back some
//! records of a put call (the emulator never sees them, and the proxy answers them failed), and
//! forwarding the rest of a call to the emulator.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

/// Holds back every n-th record a put call carries, the first time its data is seen.
#[derive(Default)]
pub struct HoldBack {
    /// n (0: none).
    pub fail_every: usize,
    seen: AtomicUsize,
    failed_once: Mutex<HashSet<String>>,
    /// Records held back so far.
    pub failed: AtomicUsize,
}

impl HoldBack {
    pub fn every(n: usize) -> Self {
        HoldBack {
            fail_every: n,
            ..HoldBack::default()
        }
    }

    /// The indexes of the request's `records` (JSON, each with its base64 `Data`) to answer
    /// failed, and the records to forward.
    pub fn split(&self, records: &[Value]) -> (HashSet<usize>, Vec<Value>) {
        let mut failed_at = HashSet::new();
        let mut kept = Vec::new();
        for (i, r) in records.iter().enumerate() {
            let n = self.seen.fetch_add(1, Ordering::SeqCst);
            let data = r["Data"].as_str().unwrap_or_default().to_owned();
            if self.fail_every > 0
                && n.is_multiple_of(self.fail_every)
                && self.failed_once.lock().unwrap().insert(data)
            {
                failed_at.insert(i);
            } else {
                kept.push(r.clone());
            }
        }
        self.failed.fetch_add(failed_at.len(), Ordering::SeqCst);
        (failed_at, kept)
    }
}

/// Sends a call on to `upstream` with its headers (the signature stays valid: the proxy changes
/// the body only of calls whose signature the emulators do not check); returns the answer.
pub async fn forward(
    http: &reqwest::Client,
    upstream: &str,
    headers: &HeaderMap,
    body: Vec<u8>,
) -> (StatusCode, Vec<u8>) {
    let mut request = http.post(upstream).body(body);
    for (name, value) in headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let answer = request.send().await.unwrap();
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
    (status, answer.bytes().await.unwrap().to_vec())
}

/// Serves `app` on a free port of 127.0.0.1, without a body limit (put calls carry up to 5 MiB
/// of records, more in base64).
pub async fn serve(app: axum::Router) -> SocketAddr {
    let app = app.layer(axum::extract::DefaultBodyLimit::disable());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

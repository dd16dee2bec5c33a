//! The Firehose client over the wire, against the moto server `./scripts/test` starts
//! (`SHOPLAKE_TEST_MOTO`): a delivery stream with an S3 destination, whose delivered objects are
//! read back from moto's S3.
//!
//! moto accepts every record, so partial failures and throttling come from a fault-injecting
//! proxy in front of it, as for Kinesis: it holds back every n-th record of a PutRecordBatch once
//! (moto never sees it) and answers it failed with `ServiceUnavailableException`, as Firehose does
//! when a stream is over its throughput; and it refuses the first calls whole with a 503.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_sdk_firehose::Client;
use aws_sdk_firehose::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_firehose::types::{DeliveryStreamType, ExtendedS3DestinationConfiguration};
use axum::body::Bytes as AxumBytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use shoplake_ingest::firehose::MAX_RECORD_BYTES;
use shoplake_ingest::{Error, Firehose, FirehoseConfig};

use crate::endpoint;
use crate::proxy::{self, HoldBack};

const MOTO: &str = "SHOPLAKE_TEST_MOTO";

fn moto() -> Option<String> {
    endpoint(MOTO)
}

fn client(endpoint: &str) -> Client {
    let conf = aws_sdk_firehose::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "emulator"))
        .endpoint_url(endpoint)
        .build();
    Client::from_conf(conf)
}

fn fast() -> FirehoseConfig {
    FirehoseConfig {
        backoff_base: std::time::Duration::from_millis(10),
        backoff_max: std::time::Duration::from_millis(100),
        ..FirehoseConfig::default()
    }
}

/// A bucket and a delivery stream into `s3://BUCKET/raw/` on moto; returns (bucket store, stream).
async fn delivery_stream(moto: &str) -> (object_store::aws::AmazonS3, String) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let bucket = format!("fh-{}", &id[..12]);
    // moto takes an unsigned CreateBucket.
    let status = reqwest::Client::new()
        .put(format!("{moto}/{bucket}"))
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success(), "creating bucket {bucket}: {status}");
    let name = format!("t-{}", &id[..12]);
    client(moto)
        .create_delivery_stream()
        .delivery_stream_name(&name)
        .delivery_stream_type(DeliveryStreamType::DirectPut)
        .extended_s3_destination_configuration(
            ExtendedS3DestinationConfiguration::builder()
                .role_arn("arn:aws:iam::123456789012:role/firehose")
                .bucket_arn(format!("arn:aws:s3:::{bucket}"))
                .prefix("raw/")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(moto)
        .with_allow_http(true)
        .with_bucket_name(&bucket)
        .with_region("us-east-1")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .build()
        .unwrap();
    (store, name)
}

/// Every line of every object delivered under `raw/`, with its count.
async fn delivered(store: &object_store::aws::AmazonS3) -> (usize, BTreeMap<String, usize>) {
    use futures::TryStreamExt;
    use object_store::{ObjectStore, ObjectStoreExt};
    let objects: Vec<_> = store
        .list(Some(&object_store::path::Path::from("raw")))
        .try_collect()
        .await
        .unwrap();
    let mut lines = BTreeMap::new();
    for o in &objects {
        let bytes = store.get(&o.location).await.unwrap().bytes().await.unwrap();
        assert!(bytes.ends_with(b"\n"), "{} ends at a line end", o.location);
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            *lines
                .entry(String::from_utf8(line.to_vec()).unwrap())
                .or_insert(0) += 1;
        }
    }
    (objects.len(), lines)
}

#[derive(Default)]
struct Faults {
    /// Whole calls to refuse with a 503 first.
    refuse_calls: AtomicUsize,
    /// Records of PutRecordBatch calls answered failed.
    hold: HoldBack,
}

#[derive(Clone)]
struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    faults: Arc<Faults>,
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [("content-type", "application/x-amz-json-1.1")],
        body.to_string(),
    )
        .into_response()
}

async fn forward(state: &ProxyState, headers: &HeaderMap, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    proxy::forward(&state.http, &state.upstream, headers, body).await
}

async fn proxy(State(state): State<ProxyState>, headers: HeaderMap, body: AxumBytes) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let faults = &state.faults;
    if !target.ends_with(".PutRecordBatch") {
        let (status, body) = forward(&state, &headers, body.to_vec()).await;
        return (status, body).into_response();
    }
    if faults
        .refuse_calls
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
        .is_ok()
    {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"__type": "ServiceUnavailableException", "message": "Slow down."}),
        );
    }
    let mut request: Value = serde_json::from_slice(&body).unwrap();
    let records = request["Records"].as_array().cloned().unwrap_or_default();
    let (failed_at, kept) = faults.hold.split(&records);
    let mut upstream = Vec::new().into_iter();
    if !kept.is_empty() {
        request["Records"] = Value::Array(kept);
        let (status, body) = forward(&state, &headers, serde_json::to_vec(&request).unwrap()).await;
        assert!(
            status.is_success(),
            "moto refused a PutRecordBatch: {status}"
        );
        let v: Value = serde_json::from_slice(&body).unwrap();
        upstream = v["RequestResponses"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter();
    }
    let answers: Vec<Value> = (0..records.len())
        .map(|i| {
            if failed_at.contains(&i) {
                json!({"ErrorCode": "ServiceUnavailableException", "ErrorMessage": "Slow down."})
            } else {
                upstream.next().unwrap()
            }
        })
        .collect();
    json_response(
        StatusCode::OK,
        json!({"FailedPutCount": failed_at.len(), "Encrypted": false, "RequestResponses": answers}),
    )
}

async fn start_proxy(upstream: &str, faults: Faults) -> (String, Arc<Faults>) {
    let faults = Arc::new(faults);
    let state = ProxyState {
        upstream: upstream.to_owned(),
        http: reqwest::Client::new(),
        faults: faults.clone(),
    };
    let addr = proxy::serve(axum::Router::new().fallback(proxy).with_state(state)).await;
    (format!("http://{addr}"), faults)
}

#[tokio::test]
async fn every_line_is_delivered_once_through_throttling_and_partial_failures() {
    let Some(moto) = moto() else {
        return;
    };
    let (store, name) = delivery_stream(&moto).await;
    let (url, faults) = start_proxy(
        &moto,
        Faults {
            refuse_calls: AtomicUsize::new(2),
            hold: HoldBack::every(3),
        },
    )
    .await;
    let firehose = Firehose::with_client(&client(&url), &name, fast()).unwrap();
    // 60 lines of ~200 KiB: four to a Firehose record (1,000 KiB), five records to a request
    // (4 MiB), so the put makes 15 records in 3 requests; and 2,000 small lines after them.
    let mut ndjson = String::new();
    let mut sent = Vec::new();
    for i in 0..60 {
        sent.push(format!(
            "{{\"i\":{i},\"pad\":\"{}\"}}",
            "x".repeat(200 * 1024)
        ));
    }
    for i in 60..2_060 {
        sent.push(format!("{{\"i\":{i}}}"));
    }
    for line in &sent {
        ndjson.push_str(line);
        ndjson.push('\n');
    }
    firehose.put_ndjson(ndjson.as_bytes()).await.unwrap();

    let (objects, lines) = delivered(&store).await;
    assert_eq!(lines.len(), sent.len(), "every line delivered");
    assert!(
        lines.values().all(|n| *n == 1),
        "no line delivered twice: {:?}",
        lines.values().filter(|n| **n > 1).count()
    );
    assert_eq!(
        lines.keys().cloned().collect::<HashSet<_>>(),
        sent.into_iter().collect::<HashSet<_>>()
    );
    let m = firehose.metrics();
    let failed = faults.hold.failed.load(Ordering::SeqCst);
    assert!(failed >= 5, "the proxy failed records: {failed}");
    assert_eq!(m.records_retried.load(Ordering::Relaxed) as usize, failed);
    assert_eq!(m.requests_retried.load(Ordering::Relaxed), 2);
    assert_eq!(m.lines_put.load(Ordering::Relaxed), 2_060);
    // Four big lines to a record, the small ones in the last; moto writes one object a request.
    assert_eq!(m.records_put.load(Ordering::Relaxed), 15);
    assert!(objects >= 4, "objects delivered: {objects}");
    assert!(
        m.bytes_put.load(Ordering::Relaxed) as usize >= ndjson.len(),
        "bytes counted"
    );
    let mut telemetry = shoplake_server::Telemetry::new();
    telemetry.register_labelled("delivery_stream", name.clone(), m.clone());
    let text = telemetry.render();
    assert!(
        text.contains(&format!(
            "shoplake_firehose_lines_put_total{{delivery_stream=\"{name}\"}} 2060"
        )),
        "{text}"
    );
}

#[tokio::test]
async fn an_unknown_delivery_stream_or_a_too_long_line_is_a_clear_error() {
    let Some(moto) = moto() else {
        return;
    };
    let firehose = Firehose::with_client(&client(&moto), "no-such-stream", fast()).unwrap();
    let err = firehose.put_ndjson(b"{}\n").await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(
        matches!(&err, Error::Firehose { code: Some(c), .. } if c == "ResourceNotFoundException"),
        "{err:?}"
    );
    assert!(err.to_string().contains("no-such-stream"), "{err}");
    let line = format!("\"{}\"\n", "y".repeat(MAX_RECORD_BYTES));
    let err = firehose
        .put_ndjson(line.as_bytes())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("longer than a Firehose record"), "{err}");
}

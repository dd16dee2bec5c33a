//! The Kinesis backend over the wire, against the emulators `./scripts/test` starts: kinesalite
//! (`SHOPLAKE_TEST_KINESALITE`) for the data path, kinesis-local (`SHOPLAKE_TEST_KINESIS_MOCK`)
//! for resharding. Each test makes its own stream. Without the variables the tests fail and say
//! how to run them, unless `SHOPLAKE_SKIP_EMULATORS=1` asks to skip them.
//!
//! Neither emulator throttles, so partial failures and throttling come from a fault-injecting
//! proxy in front of kinesalite ([`FaultProxy`]): it holds back some records of a PutRecords call
//! (kinesalite never sees them) and answers them failed, as Kinesis does for a throttled shard.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::endpoint;
use crate::proxy::{self, HoldBack};
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use axum::body::Bytes as AxumBytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use md5::Digest;
use serde_json::{Value, json};
use shoplake_ingest::kinesis::aggregation::MAGIC;
use shoplake_ingest::{
    Error, KinesisConfig, KinesisStream, Record, ShardId, ShardInfo, StartPosition, StreamConsumer,
    StreamProducer, StreamRecord, conformance,
};

const KINESALITE: &str = "SHOPLAKE_TEST_KINESALITE";
const KINESIS_MOCK: &str = "SHOPLAKE_TEST_KINESIS_MOCK";

fn client(endpoint: &str) -> Client {
    let conf = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "emulator"))
        .endpoint_url(endpoint)
        .build();
    Client::from_conf(conf)
}

fn test_config() -> KinesisConfig {
    KinesisConfig {
        // Emulators answer at once: keep waits short so the tests stay quick.
        backoff_base: std::time::Duration::from_millis(10),
        backoff_max: std::time::Duration::from_millis(200),
        get_records_interval: std::time::Duration::from_millis(20),
        ..KinesisConfig::default()
    }
}

/// A new stream of `shards` shards on the emulator at `endpoint`.
async fn stream(endpoint: &str, shards: u32, config: KinesisConfig) -> KinesisStream {
    let name = format!("t-{}", uuid::Uuid::new_v4().simple());
    let s = KinesisStream::with_client(&client(endpoint), name, config).unwrap();
    s.create(shards).await.unwrap();
    s
}

fn rec(key: &str, data: impl Into<Bytes>) -> Record {
    Record {
        partition_key: key.to_owned(),
        data: data.into(),
    }
}

/// Every record of every shard from `from`, reading until caught up.
async fn read_all(
    s: &KinesisStream,
    from: impl Fn(&ShardId) -> StartPosition,
    max: usize,
) -> BTreeMap<ShardId, Vec<StreamRecord>> {
    let mut out = BTreeMap::new();
    for shard in s.list_shards().await.unwrap() {
        let mut reader = s
            .open_shard(&shard.shard_id, from(&shard.shard_id))
            .await
            .unwrap();
        let mut records = Vec::new();
        loop {
            let b = reader.next_batch(max).await.unwrap();
            let empty = b.records.is_empty();
            records.extend(b.records);
            if empty || b.end_of_shard {
                break;
            }
        }
        out.insert(shard.shard_id, records);
    }
    out
}

/// Data of the records by key, in read order.
fn by_key<'a>(records: impl IntoIterator<Item = &'a StreamRecord>) -> HashMap<String, Vec<Bytes>> {
    let mut out: HashMap<String, Vec<Bytes>> = HashMap::new();
    for r in records {
        out.entry(r.partition_key.clone())
            .or_default()
            .push(r.data.clone());
    }
    out
}

/// `keys × per_key` records, interleaved, data `key:i`; and what each key should read back.
fn interleaved(keys: usize, per_key: usize) -> (Vec<Record>, HashMap<String, Vec<Bytes>>) {
    let mut records = Vec::new();
    let mut expected: HashMap<String, Vec<Bytes>> = HashMap::new();
    for i in 0..per_key {
        for k in 0..keys {
            let key = format!("key-{k}");
            let data = Bytes::from(format!("{key}:{i}"));
            expected.entry(key.clone()).or_default().push(data.clone());
            records.push(rec(&key, data));
        }
    }
    (records, expected)
}

// ---------------------------------------------------------------------------------------------
// The conformance suite, on kinesalite, with and without aggregation.

macro_rules! conformance_on_kinesalite {
    ($name:ident, $suite:ident, $shards:expr, $aggregate:expr) => {
        #[tokio::test]
        async fn $name() {
            let Some(url) = endpoint(KINESALITE) else {
                return;
            };
            let s = stream(
                &url,
                $shards,
                KinesisConfig {
                    aggregate: $aggregate,
                    ..test_config()
                },
            )
            .await;
            conformance::$suite(&s, &s).await;
        }
    };
}

conformance_on_kinesalite!(conformance_ordering_per_key, ordering_per_key, 4, false);
conformance_on_kinesalite!(
    conformance_resume_after_checkpoint,
    resume_after_checkpoint,
    3,
    false
);
conformance_on_kinesalite!(
    conformance_at_least_once,
    at_least_once_across_restart,
    2,
    false
);
conformance_on_kinesalite!(
    conformance_latest_and_at_timestamp,
    latest_and_at_timestamp,
    2,
    false
);
conformance_on_kinesalite!(
    aggregated_conformance_ordering_per_key,
    ordering_per_key,
    4,
    true
);
conformance_on_kinesalite!(
    aggregated_conformance_resume_after_checkpoint,
    resume_after_checkpoint,
    3,
    true
);
conformance_on_kinesalite!(
    aggregated_conformance_at_least_once,
    at_least_once_across_restart,
    2,
    true
);

// ---------------------------------------------------------------------------------------------
// Limits.

#[tokio::test]
async fn records_over_a_limit_are_refused_before_anything_is_sent() {
    let Some(url) = endpoint(KINESALITE) else {
        return;
    };
    let s = stream(&url, 1, test_config()).await;
    let ok = rec("k", "fine");
    let err = s
        .put_records(vec![ok.clone(), rec(&"k".repeat(257), "x")])
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Limit { .. }) && !err.is_retryable(),
        "{err}"
    );
    assert!(
        err.to_string().contains("record 1: partition key") && err.to_string().contains("257"),
        "{err}"
    );
    let err = s.put_records(vec![rec("", "x")]).await.unwrap_err();
    assert!(err.to_string().contains("got 0"), "{err}");
    // 1 MiB counts the partition key too.
    let err = s
        .put_records(vec![ok.clone(), rec("kk", vec![b'x'; (1 << 20) - 1])])
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("1048577 bytes") && err.to_string().contains("limit is 1048576"),
        "{err}"
    );
    assert_eq!(
        s.metrics().put_requests.load(Ordering::Relaxed),
        0,
        "nothing was sent"
    );
    let read = read_all(&s, |_| StartPosition::TrimHorizon, 100).await;
    assert_eq!(
        read.values().map(Vec::len).sum::<usize>(),
        0,
        "nothing was put"
    );

    // At the limits exactly: a 256-character key and a record of 1 MiB with its key.
    let key = "é".repeat(256); // characters, not bytes, count for the key
    let big = vec![b'y'; (1 << 20) - key.len()];
    let put = s
        .put_records(vec![rec(&key, big.clone()), ok])
        .await
        .unwrap();
    assert_eq!(put.len(), 2);
    let read = read_all(&s, |_| StartPosition::TrimHorizon, 100).await;
    let records: Vec<_> = read.into_values().flatten().collect();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].partition_key, key);
    assert_eq!(records[0].data.len(), big.len());
    assert_eq!(records[1].data, Bytes::from("fine"));
}

#[tokio::test]
async fn calls_over_500_records_or_5_mib_are_split_not_refused() {
    let Some(url) = endpoint(KINESALITE) else {
        return;
    };
    let s = stream(&url, 2, test_config()).await;
    // 1,201 small records: at least three requests of at most 500.
    let (records, expected) = interleaved(7, 172);
    let total = records.len();
    let put = s.put_records(records).await.unwrap();
    assert_eq!(put.len(), total, "one result per record");
    assert!(s.metrics().put_requests.load(Ordering::Relaxed) >= 3);
    let read = read_all(&s, |_| StartPosition::TrimHorizon, 10_000).await;
    assert_eq!(
        by_key(read.values().flatten()),
        expected,
        "all read back, in order per key"
    );

    // Six records of almost 1 MiB: 6 MiB, over the 5 MiB request limit, so two requests.
    let s = stream(&url, 1, test_config()).await;
    let big: Vec<Record> = (0..6)
        .map(|i| rec(&format!("big-{i}"), vec![b'0' + i as u8; (1 << 20) - 10]))
        .collect();
    s.put_records(big).await.unwrap();
    assert_eq!(s.metrics().put_requests.load(Ordering::Relaxed), 2);
    let read = read_all(&s, |_| StartPosition::TrimHorizon, 10_000).await;
    let mut records: Vec<_> = read.into_values().flatten().collect();
    assert_eq!(records.len(), 6);
    // Different keys: requests in flight together may land in either order.
    records.sort_by(|a, b| a.partition_key.cmp(&b.partition_key));
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.partition_key, format!("big-{i}"));
        assert!(r.data.iter().all(|b| *b == b'0' + i as u8) && r.data.len() == (1 << 20) - 10);
    }
}

// ---------------------------------------------------------------------------------------------
// Partial failures and throttling, through a fault-injecting proxy in front of kinesalite.

#[derive(Default)]
struct Faults {
    /// PutRecords calls to answer "throttled" as a whole, before any other.
    throttle_puts: AtomicUsize,
    /// GetRecords calls to answer "throttled".
    throttle_gets: AtomicUsize,
    /// Records of PutRecords calls answered failed.
    hold: HoldBack,
}

struct FaultProxy {
    addr: SocketAddr,
    faults: Arc<Faults>,
}

#[derive(Clone)]
struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    faults: Arc<Faults>,
}

fn throttled(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [("content-type", "application/x-amz-json-1.1")],
        json!({"__type": "ProvisionedThroughputExceededException", "message": message}).to_string(),
    )
        .into_response()
}

async fn forward(state: &ProxyState, headers: &HeaderMap, body: Vec<u8>) -> Response {
    let (status, body) = proxy::forward(&state.http, &state.upstream, headers, body).await;
    (
        status,
        [("content-type", "application/x-amz-json-1.1")],
        body,
    )
        .into_response()
}

async fn proxy(State(state): State<ProxyState>, headers: HeaderMap, body: AxumBytes) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let faults = &state.faults;
    let take = |n: &AtomicUsize| {
        n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
            .is_ok()
    };
    if target.ends_with(".GetRecords") && take(&faults.throttle_gets) {
        return throttled("Rate exceeded for shard");
    }
    if !target.ends_with(".PutRecords") {
        return forward(&state, &headers, body.to_vec()).await;
    }
    if take(&faults.throttle_puts) {
        return throttled("Rate exceeded for stream");
    }
    // Hold back every n-th record (once per record) and answer it as throttled.
    let mut request: Value = serde_json::from_slice(&body).unwrap();
    let records = request["Records"].as_array().cloned().unwrap_or_default();
    let (failed_at, kept) = faults.hold.split(&records);
    let mut answered: Vec<Value> = Vec::new();
    let mut upstream_failed = 0;
    if !kept.is_empty() {
        request["Records"] = Value::Array(kept);
        let answer = forward(&state, &headers, serde_json::to_vec(&request).unwrap()).await;
        if !answer.status().is_success() {
            return answer;
        }
        let bytes = axum::body::to_bytes(answer.into_body(), usize::MAX)
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        upstream_failed = v["FailedRecordCount"].as_u64().unwrap_or(0) as usize;
        answered = v["Records"].as_array().cloned().unwrap_or_default();
    }
    let mut upstream = answered.into_iter();
    let merged: Vec<Value> = (0..records.len())
        .map(|i| {
            if failed_at.contains(&i) {
                json!({"ErrorCode": "ProvisionedThroughputExceededException",
                       "ErrorMessage": "Rate exceeded for shard shardId-000000000000"})
            } else {
                upstream.next().unwrap()
            }
        })
        .collect();
    let body = json!({"FailedRecordCount": failed_at.len() + upstream_failed, "Records": merged});
    (
        StatusCode::OK,
        [("content-type", "application/x-amz-json-1.1")],
        body.to_string(),
    )
        .into_response()
}

impl FaultProxy {
    async fn start(upstream: &str, faults: Faults) -> Self {
        let faults = Arc::new(faults);
        let state = ProxyState {
            upstream: upstream.to_owned(),
            http: reqwest::Client::new(),
            faults: faults.clone(),
        };
        let addr = proxy::serve(axum::Router::new().fallback(proxy).with_state(state)).await;
        FaultProxy { addr, faults }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn partial_failures(strict_order: bool) {
    let Some(url) = endpoint(KINESALITE) else {
        return;
    };
    let proxy = FaultProxy::start(
        &url,
        Faults {
            throttle_puts: AtomicUsize::new(2),
            throttle_gets: AtomicUsize::new(3),
            hold: HoldBack::every(4),
        },
    )
    .await;
    let s = stream(
        &proxy.url(),
        3,
        KinesisConfig {
            strict_order,
            ..test_config()
        },
    )
    .await;
    let (records, expected) = interleaved(40, 30);
    let total = records.len();
    let mut put = Vec::new();
    for chunk in records.chunks(300) {
        put.extend(s.put_records(chunk.to_vec()).await.unwrap());
    }
    assert_eq!(put.len(), total);
    let m = s.metrics();
    let failed = proxy.faults.hold.failed.load(Ordering::SeqCst);
    // Every 4th record the proxy sees fails once (retries count as seen, so somewhat fewer).
    assert!(failed >= total / 8, "the proxy failed records: {failed}");
    assert_eq!(
        m.put_entries_retried.load(Ordering::Relaxed) as usize,
        failed,
        "each failed entry was sent again"
    );
    assert!(
        m.put_throttled.load(Ordering::Relaxed) as usize >= failed + 2,
        "throttled calls and entries counted"
    );
    assert_eq!(m.records_put.load(Ordering::Relaxed) as usize, total);

    let read = read_all(&s, |_| StartPosition::TrimHorizon, 10_000).await;
    assert!(
        m.get_throttled.load(Ordering::Relaxed) >= 3,
        "GetRecords throttling was retried"
    );
    let all: Vec<&StreamRecord> = read.values().flatten().collect();
    assert_eq!(all.len(), total, "no record lost, none twice");
    let distinct: HashSet<&Bytes> = all.iter().map(|r| &r.data).collect();
    assert_eq!(distinct.len(), total);
    // Put results name where each record landed.
    let landed: HashSet<(String, String)> = all
        .iter()
        .map(|r| (r.shard_id.0.clone(), r.sequence_number.0.clone()))
        .collect();
    assert!(
        put.iter()
            .all(|p| landed.contains(&(p.shard_id.0.clone(), p.sequence_number.0.clone())))
    );
    if strict_order {
        assert_eq!(
            by_key(all),
            expected,
            "per-key order kept through failures and retries"
        );
    } else {
        let mut got = by_key(all);
        for v in got.values_mut() {
            v.sort();
        }
        let mut want = expected;
        for v in want.values_mut() {
            v.sort();
        }
        assert_eq!(got, want);
    }
}

#[tokio::test]
async fn partly_failed_batches_lose_nothing_and_keep_key_order() {
    partial_failures(true).await;
}

#[tokio::test]
async fn partly_failed_batches_lose_nothing_without_strict_order() {
    partial_failures(false).await;
}

#[tokio::test]
async fn a_record_that_keeps_failing_is_an_error_after_max_attempts() {
    let Some(url) = endpoint(KINESALITE) else {
        return;
    };
    let proxy = FaultProxy::start(
        &url,
        Faults {
            throttle_puts: AtomicUsize::new(usize::MAX),
            ..Faults::default()
        },
    )
    .await;
    let s = stream(
        &url,
        1,
        KinesisConfig {
            max_attempts: 3,
            ..test_config()
        },
    )
    .await;
    let s =
        KinesisStream::with_client(&client(&proxy.url()), s.name(), s.config().clone()).unwrap();
    let err = s.put_records(vec![rec("k", "v")]).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("after 3 attempts"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Aggregation.

#[tokio::test]
async fn aggregates_round_trip_and_checkpoints_inside_an_aggregate_are_exact() {
    let Some(url) = endpoint(KINESALITE) else {
        return;
    };
    let s = stream(
        &url,
        2,
        KinesisConfig {
            aggregate: true,
            aggregate_max_bytes: 4096,
            ..test_config()
        },
    )
    .await;
    let (records, expected) = interleaved(50, 40);
    let total = records.len();
    let put = s.put_records(records).await.unwrap();
    let m = s.metrics();
    let aggregates = m.aggregates_put.load(Ordering::Relaxed) as usize;
    assert!(
        aggregates > 0 && aggregates < total / 20,
        "{aggregates} aggregates for {total} records"
    );
    assert!(
        put.iter().all(|p| p.sequence_number.parts().1.is_some()),
        "results name the record in its aggregate"
    );

    // Raw Kinesis records are KPL aggregates (magic bytes), far fewer than the records.
    let c = client(&url);
    let mut raw = 0;
    for shard in s.list_shards().await.unwrap() {
        let it = c
            .get_shard_iterator()
            .stream_name(s.name())
            .shard_id(&shard.shard_id.0)
            .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap();
        let out = c
            .get_records()
            .shard_iterator(it.shard_iterator().unwrap())
            .send()
            .await
            .unwrap();
        for r in out.records() {
            assert_eq!(r.data().as_ref()[..4], MAGIC);
            raw += 1;
        }
    }
    assert_eq!(raw, aggregates);

    // Read back de-aggregated, in small batches (an aggregate spans several batches).
    let read = read_all(&s, |_| StartPosition::TrimHorizon, 7).await;
    assert_eq!(by_key(read.values().flatten()), expected);
    assert_eq!(m.records_read.load(Ordering::Relaxed) as usize, total);

    // A checkpoint inside an aggregate: the next record is the one after it, nothing else lost
    // or repeated, for every position of one aggregate.
    let (shard, records) = read.iter().find(|(_, r)| r.len() > 40).unwrap();
    let first_aggregate = records[0].sequence_number.parts().0.to_owned();
    let in_first: Vec<usize> = (0..records.len())
        .filter(|i| records[*i].sequence_number.parts().0 == first_aggregate)
        .collect();
    assert!(
        in_first.len() > 3,
        "the first aggregate holds several records"
    );
    for &i in &in_first {
        let checkpoint = records[i].sequence_number.clone();
        let mut reader = s
            .open_shard(
                shard,
                StartPosition::AfterSequenceNumber(checkpoint.clone()),
            )
            .await
            .unwrap();
        let mut rest = Vec::new();
        loop {
            let b = reader.next_batch(1000).await.unwrap();
            if b.records.is_empty() {
                break;
            }
            rest.extend(b.records);
        }
        assert_eq!(
            rest.as_slice(),
            &records[i + 1..],
            "resume after {checkpoint}"
        );
    }
}

/// KPL aggregate bytes as another producer (the official KPL) writes them, built field by field.
fn kpl_aggregate(keys: &[&str], records: &[(u64, &[u8])]) -> Vec<u8> {
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    let mut proto = Vec::new();
    for k in keys {
        proto.push(0x0A);
        varint(k.len() as u64, &mut proto);
        proto.extend_from_slice(k.as_bytes());
    }
    for (key_index, data) in records {
        let mut r = vec![0x08];
        varint(*key_index, &mut r);
        r.push(0x1A);
        varint(data.len() as u64, &mut r);
        r.extend_from_slice(data);
        proto.push(0x1A);
        varint(r.len() as u64, &mut proto);
        proto.extend(r);
    }
    let mut out = MAGIC.to_vec();
    out.extend(&proto);
    out.extend(md5::Md5::digest(&proto));
    out
}

#[tokio::test]
async fn kpl_aggregates_put_by_another_producer_are_read() {
    let Some(url) = endpoint(KINESALITE) else {
        return;
    };
    let s = stream(&url, 1, test_config()).await;
    let c = client(&url);
    let aggregate = kpl_aggregate(&["user-1", "user-2"], &[(0, b"a"), (1, b"b"), (0, b"c")]);
    let mut not_quite = MAGIC.to_vec();
    not_quite.extend(b"plain bytes that start like an aggregate");
    let entry = |data: Vec<u8>, key: &str| {
        PutRecordsRequestEntry::builder()
            .data(Blob::new(data))
            .partition_key(key)
            .build()
            .unwrap()
    };
    c.put_records()
        .stream_name(s.name())
        .records(entry(b"before".to_vec(), "p"))
        .records(entry(aggregate, "user-1"))
        .records(entry(not_quite.clone(), "p"))
        .send()
        .await
        .unwrap();
    let read = read_all(&s, |_| StartPosition::TrimHorizon, 100).await;
    let got: Vec<(String, Bytes)> = read
        .into_values()
        .flatten()
        .map(|r| (r.partition_key, r.data))
        .collect();
    assert_eq!(
        got,
        vec![
            ("p".into(), Bytes::from("before")),
            ("user-1".into(), Bytes::from("a")),
            ("user-2".into(), Bytes::from("b")),
            ("user-1".into(), Bytes::from("c")),
            ("p".into(), Bytes::from(not_quite)),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Expired iterators.

/// kinesalite 3.3.3's shard iterators: 8 header bytes, then AES-256-CBC of
/// `created-millis(14)/stream/shard/sequence/000…` under the key and IV in its `db/index.js`.
/// An iterator made 400 s ago is one the server answers ExpiredIteratorException to.
fn expire_kinesalite_iterator(iterator: &str) -> String {
    use aws_lc_rs::cipher::{
        AES_256, DecryptionContext, EncryptionContext, PaddedBlockDecryptingKey,
        PaddedBlockEncryptingKey, UnboundCipherKey,
    };
    use aws_lc_rs::iv::FixedLength;
    let hex = |s: &str| -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    };
    let key = hex("1133a5a833666b49abf28c8ba302930f0b2fb240dccd43cf4dfbc0ca91f17751");
    let iv: [u8; 16] = hex("7bf139dbabbea2d9995d6fcae1dff7da").try_into().unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let raw = b64.decode(iterator).unwrap();
    let (header, cipher) = raw.split_at(8);
    let mut buf = cipher.to_vec();
    let dec = PaddedBlockDecryptingKey::cbc_pkcs7(UnboundCipherKey::new(&AES_256, &key).unwrap())
        .unwrap();
    let plain = dec
        .decrypt(&mut buf, DecryptionContext::Iv128(FixedLength::from(iv)))
        .unwrap()
        .to_vec();
    let plain = String::from_utf8(plain).unwrap();
    let (_created, rest) = plain.split_at(14);
    let old = chrono::Utc::now().timestamp_millis() - 400_000;
    let mut data = format!("{old:014}{rest}").into_bytes();
    let enc = PaddedBlockEncryptingKey::cbc_pkcs7(UnboundCipherKey::new(&AES_256, &key).unwrap())
        .unwrap();
    enc.less_safe_encrypt(&mut data, EncryptionContext::Iv128(FixedLength::from(iv)))
        .unwrap();
    let mut out = header.to_vec();
    out.extend(data);
    b64.encode(out)
}

#[tokio::test]
async fn an_expired_iterator_is_reopened_after_the_last_record_read() {
    let Some(url) = endpoint(KINESALITE) else {
        return;
    };
    for aggregate in [false, true] {
        let s = stream(
            &url,
            1,
            KinesisConfig {
                aggregate,
                aggregate_max_bytes: 2048,
                ..test_config()
            },
        )
        .await;
        let (records, _) = interleaved(10, 30);
        let all: Vec<Bytes> = records.iter().map(|r| r.data.clone()).collect();
        s.put_records(records).await.unwrap();
        let shard = s.list_shards().await.unwrap().remove(0).shard_id;
        let mut reader = s
            .open_reader(&shard, StartPosition::TrimHorizon)
            .await
            .unwrap();
        let mut got = Vec::new();
        // Drain what the first GetRecords fetched, so that the next batch needs a new call.
        loop {
            let b = shoplake_ingest::ShardReader::next_batch(&mut reader, 1000)
                .await
                .unwrap();
            got.extend(b.records.into_iter().map(|r| r.data));
            if got.len() >= 100 {
                break;
            }
        }
        let put_more: Vec<Record> = (0..20).map(|i| rec("late", format!("late:{i}"))).collect();
        let late: Vec<Bytes> = put_more.iter().map(|r| r.data.clone()).collect();
        s.put_records(put_more).await.unwrap();
        let expired = expire_kinesalite_iterator(reader.shard_iterator().unwrap());
        reader.replace_shard_iterator(expired);
        loop {
            let b = shoplake_ingest::ShardReader::next_batch(&mut reader, 1000)
                .await
                .unwrap();
            if b.records.is_empty() {
                break;
            }
            got.extend(b.records.into_iter().map(|r| r.data));
        }
        let want: Vec<Bytes> = all.into_iter().chain(late).collect();
        assert_eq!(
            got, want,
            "aggregate={aggregate}: nothing lost or repeated across the expiry"
        );
        assert_eq!(s.metrics().iterators_expired.load(Ordering::Relaxed), 1);
    }
}

// ---------------------------------------------------------------------------------------------
// Resharding, on kinesis-local.

/// Reads like the streaming stage: a shard only once its parents are read to their end. Returns
/// the records of each shard, the order shards were finished in, and the shards whose end was
/// reported.
async fn read_in_lineage(
    s: &KinesisStream,
) -> (
    BTreeMap<ShardId, Vec<StreamRecord>>,
    Vec<ShardId>,
    HashSet<ShardId>,
) {
    let shards: Vec<ShardInfo> = s.list_shards().await.unwrap();
    let mut records = BTreeMap::new();
    let mut order = Vec::new();
    let mut ended = HashSet::new();
    loop {
        let ready: Vec<&ShardInfo> = shards
            .iter()
            .filter(|sh| !records.contains_key(&sh.shard_id))
            .filter(|sh| {
                sh.parent_shard_ids
                    .iter()
                    .all(|p| ended.contains(p) || !shards.iter().any(|x| &x.shard_id == p))
            })
            .collect();
        if ready.is_empty() {
            break;
        }
        for sh in ready {
            let mut reader = s
                .open_shard(&sh.shard_id, StartPosition::TrimHorizon)
                .await
                .unwrap();
            let mut got = Vec::new();
            loop {
                let b = reader.next_batch(500).await.unwrap();
                let empty = b.records.is_empty();
                got.extend(b.records);
                if b.end_of_shard {
                    ended.insert(sh.shard_id.clone());
                    let again = reader.next_batch(500).await.unwrap();
                    assert!(
                        again.records.is_empty() && again.end_of_shard,
                        "the end stays reported"
                    );
                    break;
                }
                if empty {
                    break;
                }
            }
            assert_eq!(
                sh.closed,
                ended.contains(&sh.shard_id),
                "{}: closed shards, and only they, end",
                sh.shard_id
            );
            order.push(sh.shard_id.clone());
            records.insert(sh.shard_id.clone(), got);
        }
    }
    (records, order, ended)
}

#[tokio::test]
async fn split_and_merge_while_putting_lose_nothing_and_keep_key_order() {
    let Some(url) = endpoint(KINESIS_MOCK) else {
        return;
    };
    let s = stream(&url, 1, test_config()).await;
    let c = client(&url);
    let mut expected: HashMap<String, Vec<Bytes>> = HashMap::new();
    let mut round = 0;
    let mut put_round = |s: KinesisStream| {
        round += 1;
        let r = round;
        let mut batch = Vec::new();
        for i in 0..10 {
            for k in 0..30 {
                let key = format!("key-{k}");
                let data = Bytes::from(format!("{key}:{r}:{i}"));
                expected.entry(key.clone()).or_default().push(data.clone());
                batch.push(rec(&key, data));
            }
        }
        async move { s.put_records(batch).await.unwrap() }
    };
    put_round(s.clone()).await;
    let parent = ShardId::from_index(0);
    c.split_shard()
        .stream_name(s.name())
        .shard_to_split(&parent.0)
        .new_starting_hash_key((1u128 << 127).to_string())
        .send()
        .await
        .unwrap();
    s.wait_until_active(Duration::from_secs(30)).await.unwrap();
    put_round(s.clone()).await;
    let shards = s.list_shards().await.unwrap();
    let children: Vec<&ShardInfo> = shards
        .iter()
        .filter(|x| x.parent_shard_ids == vec![parent.clone()])
        .collect();
    assert_eq!(children.len(), 2, "{shards:?}");
    assert!(shards.iter().any(|x| x.shard_id == parent && x.closed));
    let (a, b) = (children[0].shard_id.clone(), children[1].shard_id.clone());
    c.merge_shards()
        .stream_name(s.name())
        .shard_to_merge(&a.0)
        .adjacent_shard_to_merge(&b.0)
        .send()
        .await
        .unwrap();
    s.wait_until_active(Duration::from_secs(30)).await.unwrap();
    put_round(s.clone()).await;

    let shards = s.list_shards().await.unwrap();
    let merged = shards
        .iter()
        .find(|x| x.parent_shard_ids.len() == 2)
        .expect("a merged shard with two parents");
    assert!(merged.parent_shard_ids.contains(&a) && merged.parent_shard_ids.contains(&b));
    assert!(!merged.closed);

    let (records, order, ended) = read_in_lineage(&s).await;
    let pos = |x: &ShardId| order.iter().position(|o| o == x).unwrap();
    assert!(pos(&parent) < pos(&a) && pos(&parent) < pos(&b));
    assert!(pos(&a) < pos(&merged.shard_id) && pos(&b) < pos(&merged.shard_id));
    assert!(ended.contains(&parent) && ended.contains(&a) && ended.contains(&b));
    assert_eq!(records[&parent].len(), 300);
    assert_eq!(records[&a].len() + records[&b].len(), 300);
    assert_eq!(records[&merged.shard_id].len(), 300);
    let in_order: Vec<&StreamRecord> = order.iter().flat_map(|o| &records[o]).collect();
    assert_eq!(
        by_key(in_order),
        expected,
        "every record once, in order per key across the reshards"
    );
}

#[tokio::test]
async fn a_shard_split_while_it_is_read_ends_and_its_children_continue() {
    let Some(url) = endpoint(KINESIS_MOCK) else {
        return;
    };
    let s = stream(&url, 1, test_config()).await;
    let (first, mut expected) = interleaved(10, 20);
    s.put_records(first).await.unwrap();
    let parent = ShardId::from_index(0);
    let mut reader = s
        .open_shard(&parent, StartPosition::TrimHorizon)
        .await
        .unwrap();
    let mut from_parent = reader.next_batch(50).await.unwrap().records;
    assert_eq!(from_parent.len(), 50);
    client(&url)
        .split_shard()
        .stream_name(s.name())
        .shard_to_split(&parent.0)
        .new_starting_hash_key((1u128 << 127).to_string())
        .send()
        .await
        .unwrap();
    s.wait_until_active(Duration::from_secs(30)).await.unwrap();
    let (second, more) = interleaved(10, 20);
    let second: Vec<Record> = second
        .into_iter()
        .map(|r| {
            rec(
                &r.partition_key,
                format!("after-split:{}", String::from_utf8_lossy(&r.data)),
            )
        })
        .collect();
    for (k, v) in more {
        expected.get_mut(&k).unwrap().extend(
            v.into_iter()
                .map(|d| Bytes::from(format!("after-split:{}", String::from_utf8_lossy(&d)))),
        );
    }
    s.put_records(second).await.unwrap();
    // The parent reader goes on to the parent's end, reported once its last record is out.
    loop {
        let b = reader.next_batch(50).await.unwrap();
        from_parent.extend(b.records);
        if b.end_of_shard {
            break;
        }
    }
    assert_eq!(
        from_parent.len(),
        200,
        "the parent holds what was put before the split"
    );
    let shards = s.list_shards().await.unwrap();
    let children: Vec<ShardId> = shards
        .iter()
        .filter(|x| x.parent_shard_ids == vec![parent.clone()])
        .map(|x| x.shard_id.clone())
        .collect();
    assert_eq!(children.len(), 2);
    let mut all = from_parent;
    for child in &children {
        let mut r = s
            .open_shard(child, StartPosition::TrimHorizon)
            .await
            .unwrap();
        loop {
            let b = r.next_batch(100).await.unwrap();
            if b.records.is_empty() {
                break;
            }
            all.extend(b.records);
        }
    }
    assert_eq!(
        by_key(&all),
        expected,
        "nothing lost, per-key order kept across the split"
    );
}

#[tokio::test]
async fn conformance_ordering_per_key_on_kinesis_local() {
    let Some(url) = endpoint(KINESIS_MOCK) else {
        return;
    };
    let s = stream(&url, 2, test_config()).await;
    conformance::ordering_per_key(&s, &s).await;
}

#[tokio::test]
async fn an_unknown_shard_or_stream_is_a_clear_error() {
    let Some(url) = endpoint(KINESALITE) else {
        return;
    };
    let s = stream(&url, 1, test_config()).await;
    let err = s
        .open_shard(&ShardId::from_index(7), StartPosition::TrimHorizon)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, Error::UnknownShard { .. }), "{err}");
    let missing =
        KinesisStream::with_client(&client(&url), "no-such-stream", test_config()).unwrap();
    let err = missing.put_records(vec![rec("k", "v")]).await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(
        err.to_string().contains("ResourceNotFoundException"),
        "{err}"
    );
}

/// Figures for the issue note: records/s put and read on kinesalite (printed, not asserted;
/// `cargo test --test it kinesis::throughput -- --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput() {
    let Some(url) = endpoint(KINESALITE) else {
        return;
    };
    let n: usize = std::env::var("SHOPLAKE_KINESIS_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    for aggregate in [false, true] {
        let s = stream(
            &url,
            4,
            KinesisConfig {
                aggregate,
                ..test_config()
            },
        )
        .await;
        let payload = "x".repeat(300);
        let records: Vec<Record> = (0..n)
            .map(|i| rec(&format!("session-{}", i % 500), format!("{i}:{payload}")))
            .collect();
        let start = std::time::Instant::now();
        for chunk in records.chunks(500) {
            s.put_records(chunk.to_vec()).await.unwrap();
        }
        let put_secs = start.elapsed().as_secs_f64();
        let start = std::time::Instant::now();
        let read = read_all(&s, |_| StartPosition::TrimHorizon, 10_000).await;
        let read_secs = start.elapsed().as_secs_f64();
        let total: usize = read.values().map(Vec::len).sum();
        assert_eq!(total, n);
        eprintln!(
            "kinesalite, aggregate={aggregate}: put {n} records of ~300 B in {put_secs:.2} s ({:.0}/s, {} requests); read in {read_secs:.2} s ({:.0}/s)",
            n as f64 / put_secs,
            s.metrics().put_requests.load(Ordering::Relaxed),
            n as f64 / read_secs
        );
    }
}

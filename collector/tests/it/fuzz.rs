//! Arbitrary input at every endpoint: random bytes (plain, and behind a gzip header), and Segment
//! messages whose strings range over all of Unicode (controls, NUL, bidi overrides, astral
//! planes) in every field. Whatever arrives, the collector answers — 200 with the events on the
//! stream, or a 4xx with `{success: false, error, detail}` and nothing written — never a 5xx or a
//! dropped connection, and it still takes a good event afterwards. Every record it wrote decodes
//! through the contract or is refused by it with a reason (the stage's bad row).
//!
//! Cases: `PROPTEST_CASES` (proptest's own variable; 256 by default, as in CI). A long run:
//! `PROPTEST_CASES=20000 ./scripts/test -p shoplake-collector --test it fuzz`.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shoplake_collector::CollectorConfig;
use shoplake_events::{Limits, decode};

use crate::{Server, start};

const PATHS: &[&str] = &[
    "/v1/track",
    "/v1/t",
    "/v1/page",
    "/v1/screen",
    "/v1/identify",
    "/v1/alias",
    "/v1/group",
    "/v1/batch",
    "/v1/b",
    "/v1/import",
];

/// Any string: every Unicode scalar value, controls and NUL included.
fn any_text() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..24).prop_map(|c| c.into_iter().collect())
}

/// A JSON value of any shape, its strings from [`any_text`].
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        any_text().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(any_text(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A Segment message of any type whose every field may hold anything.
fn message() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec![
            "track", "page", "screen", "identify", "alias", "group", "x",
        ]),
        any_text(),
        any_text(),
        any_text(),
        any_json(),
        any_json(),
        any_text(),
    )
        .prop_map(|(kind, event, user, message_id, properties, context, ts)| {
            json!({
                "type": kind, "event": event, "userId": user, "anonymousId": user,
                "messageId": message_id, "properties": properties, "traits": properties,
                "context": context, "timestamp": ts, "previousId": event, "groupId": user,
            })
        })
}

/// What a body is: raw bytes, raw bytes claimed to be gzip, or JSON.
#[derive(Debug, Clone)]
enum Body {
    Bytes(Vec<u8>),
    Gzip(Vec<u8>),
    Json(Value),
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512).prop_map(Body::Bytes),
        prop::collection::vec(any::<u8>(), 0..256).prop_map(|b| {
            let mut gz = vec![0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0xff];
            gz.extend(b);
            Body::Gzip(gz)
        }),
        message().prop_map(Body::Json),
        prop::collection::vec(message(), 0..5)
            .prop_map(|batch| Body::Json(json!({"batch": batch}))),
        any_json().prop_map(Body::Json),
    ]
}

/// Sends `body` to `path`; checks the answer and what it wrote. Returns the status.
async fn send(s: &Server, path: &str, body: &Body) -> Result<StatusCode, TestCaseError> {
    let before = s.records().await.len();
    let resp = match body {
        Body::Bytes(b) => {
            s.post_raw(
                path,
                b.clone(),
                &[("content-type", "application/json")],
                true,
            )
            .await
        }
        Body::Gzip(b) => {
            let headers = [
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ];
            s.post_raw(path, b.clone(), &headers, true).await
        }
        Body::Json(v) => {
            let headers = [("content-type", "application/json")];
            s.post_raw(path, serde_json::to_vec(v).unwrap(), &headers, true)
                .await
        }
    };
    let status = resp.status();
    let answer: Value = resp
        .json()
        .await
        .map_err(|e| TestCaseError::fail(format!("{status}: the answer is not JSON: {e}")))?;
    prop_assert!(
        status == StatusCode::OK || status.is_client_error(),
        "{status} {answer} for {body:?}"
    );
    let written = s.records().await;
    if status.is_client_error() {
        prop_assert_eq!(&answer["success"], &json!(false), "{}", answer);
        prop_assert!(
            answer["error"].is_string() && answer["detail"].is_string(),
            "{}",
            answer
        );
        prop_assert_eq!(written.len(), before, "a refused request wrote nothing");
    }
    // Every record decodes or is refused with a reason; decoding never panics.
    for raw in &written[before..] {
        if let Err(r) = decode(raw, crate::arrival(), &Limits::default()) {
            prop_assert!(!r.message.is_empty());
        }
    }
    Ok(status)
}

#[test]
fn any_bytes_or_unicode_at_any_endpoint_is_answered_never_a_5xx() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s = rt.block_on(start(CollectorConfig::default()));
    // Config::default() reads PROPTEST_CASES. A failing case is printed, not saved to a file.
    let mut runner = TestRunner::new(Config {
        failure_persistence: None,
        ..Config::default()
    });
    let answered = std::cell::RefCell::new(std::collections::BTreeMap::new());
    runner
        .run(
            &(prop::sample::select(PATHS.to_vec()), body()),
            |(path, body)| {
                let status = rt.block_on(send(&s, path, &body))?;
                *answered.borrow_mut().entry(status.as_u16()).or_insert(0u64) += 1;
                Ok(())
            },
        )
        .unwrap();
    // The random inputs reached both sides: some accepted, some refused.
    let answered = answered.into_inner();
    eprintln!("answers by status: {answered:?}");
    assert!(answered.contains_key(&200), "{answered:?}");
    assert!(
        answered.keys().any(|s| (400..500).contains(s)),
        "{answered:?}"
    );
    // And it still takes a good event.
    let (status, answer) = rt.block_on(s.post("/v1/track", &crate::order(&crate::uuid(1))));
    assert_eq!(status, StatusCode::OK, "{answer}");
}

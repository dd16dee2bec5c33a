//! Arbitrary input at `POST /v1/sql`: random bytes as the body (as JSON and as text), statements
//! of random Unicode (controls, NUL, bidi overrides, astral planes), real statements with random
//! characters spliced in or cut out, and good statements with any string as their bound
//! parameter (always answered 200). Whatever arrives, the answer is 200 or a 4xx
//! `{"error", "detail"}` — never a 5xx, a dropped connection or a dead service — and the service
//! still answers a good statement afterwards. (Its first run found a body that is not UTF-8
//! answered with a plain-text 400.)
//!
//! Cases: `PROPTEST_CASES` (proptest's own variable; 256 by default, as in CI). A long run:
//! `PROPTEST_CASES=5000 ./scripts/test --test it any_statement_at_the_sql_endpoint`.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

/// Statements a user might send, each a starting point for the mutations.
const STATEMENTS: &[&str] = &[
    "select count(*) from events",
    "select event_name, count(*) from events group by 1 order by 2 desc limit 5",
    "select * from orders where order_id = 'o-1'",
    "select channel, sum(revenue) from sessions group by channel",
    "select * from report_overview('2026-03-01', '2026-03-07')",
    "select step, step_name from funnel_steps",
];

/// Any string: every Unicode scalar value, controls and NUL included.
fn any_text() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..40).prop_map(|c| c.into_iter().collect())
}

/// A statement of [`STATEMENTS`] with `insert` spliced in at a character boundary, or with a
/// piece cut out.
fn mutated() -> impl Strategy<Value = String> {
    (
        prop::sample::select(STATEMENTS.to_vec()),
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
        any_text(),
        any::<bool>(),
    )
        .prop_map(|(sql, at, to, insert, cut)| {
            let chars: Vec<char> = sql.chars().collect();
            let (a, b) = (at.index(chars.len() + 1), to.index(chars.len() + 1));
            let (a, b) = (a.min(b), a.max(b));
            let mut out: String = chars[..a].iter().collect();
            if !cut {
                out.push_str(&insert);
                out.extend(&chars[a..]);
            } else {
                out.extend(&chars[b..]);
            }
            out
        })
}

#[derive(Debug, Clone)]
enum Body {
    Bytes(Vec<u8>, bool),
    Sql(String),
    /// A good statement whose parameter is any string (bound by the engine, never spliced).
    Bound(&'static str, String),
}

/// Statements with one string parameter.
const BOUND: &[&str] = &[
    "select count(*) as n from events where anonymous_id = $1",
    "select count(*) as n from events where event_name like $1",
    "select upper($1) as u, length($1) as l",
    "select * from orders where order_id = $1 limit 3",
];

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        (prop::collection::vec(any::<u8>(), 0..256), any::<bool>())
            .prop_map(|(b, json)| Body::Bytes(b, json)),
        any_text().prop_map(Body::Sql),
        mutated().prop_map(Body::Sql),
        (prop::sample::select(BOUND.to_vec()), any_text()).prop_map(|(q, p)| Body::Bound(q, p)),
    ]
}

async fn send(client: &reqwest::Client, base: &str, body: &Body) -> Result<u16, TestCaseError> {
    let mut req = client.post(format!("{base}/v1/sql"));
    req = match body {
        Body::Bytes(b, json) => {
            let req = req.body(b.clone());
            if *json {
                req.header("content-type", "application/json")
            } else {
                req
            }
        }
        Body::Sql(sql) => req
            .header("content-type", "application/json")
            .body(json!({ "sql": sql }).to_string()),
        Body::Bound(sql, param) => req
            .header("content-type", "application/json")
            .body(json!({ "sql": sql, "params": [param] }).to_string()),
    };
    let resp = req
        .send()
        .await
        .map_err(|e| TestCaseError::fail(format!("no answer: {e}")))?;
    let status = resp.status().as_u16();
    let answer: Value = resp
        .json()
        .await
        .map_err(|e| TestCaseError::fail(format!("{status}: the answer is not JSON: {e}")))?;
    prop_assert!(
        status == 200 || (400..500).contains(&status),
        "{} {} for {:?}",
        status,
        answer,
        body
    );
    if let Body::Bound(..) = body {
        prop_assert_eq!(status, 200, "a bound parameter is only a value: {}", answer);
    }
    if status != 200 {
        prop_assert!(
            answer["error"].is_string() && answer["detail"].is_string(),
            "{}",
            answer
        );
    }
    Ok(status)
}

#[test]
fn any_statement_at_the_sql_endpoint_is_answered_never_a_5xx() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let base = rt.block_on(async {
        let app = shoplake_query::router(crate::lake::service().await).unguarded();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    });
    let client = reqwest::Client::new();
    let answered = std::cell::RefCell::new(std::collections::BTreeMap::new());
    let mut runner = TestRunner::new(Config {
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&body(), |body| {
            let status = rt.block_on(send(&client, &base, &body))?;
            *answered.borrow_mut().entry(status).or_insert(0u64) += 1;
            Ok(())
        })
        .unwrap();
    let answered = answered.into_inner();
    eprintln!("answers by status: {answered:?}");
    assert!(
        answered.contains_key(&400) && answered.contains_key(&200),
        "{answered:?}"
    );
    let good = json!({"sql": "select count(*) as n from events"});
    let (status, answer) = rt.block_on(async {
        let resp = client
            .post(format!("{base}/v1/sql"))
            .header("content-type", "application/json")
            .body(good.to_string())
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
    });
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["rows"][0]["n"],
        json!(crate::lake::fixture().stats.valid_unique)
    );
}

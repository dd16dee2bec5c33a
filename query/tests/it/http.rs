//! The HTTP API as a client sees it: status codes and bodies.

use std::sync::Arc;

use serde_json::{Value, json};
use shoplake_query::QueryService;

use crate::lake::{fixture, service};

/// Serves the query API on an ephemeral port; returns its base URL and the service behind it.
/// (`/health` and `/metrics` are the binary's, tested end to end through `shoplake up`.)
async fn start_with_service() -> (String, Arc<QueryService>) {
    let service = service().await;
    let app = shoplake_query::router(service.clone()).unguarded();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), service)
}

async fn start() -> String {
    start_with_service().await.0
}

async fn get_json(url: String) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

async fn post(base: &str, body: reqwest::Body, json_type: bool) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{base}/v1/sql"))
        .body(body);
    if json_type {
        req = req.header("content-type", "application/json");
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_answers_with_rows_and_columns() {
    let base = start().await;
    let body = json!({"sql": "select count(*) as n, count(distinct event_id) as ids from events"});
    let (status, answer) = post(&base, body.to_string().into(), true).await;
    assert_eq!(status, 200, "{answer}");
    let valid = fixture().stats.valid_unique;
    assert_eq!(answer["rows"][0]["n"], json!(valid));
    assert_eq!(answer["rows"][0]["ids"], json!(valid));
    assert_eq!(answer["row_count"], json!(1));
    assert_eq!(answer["truncated"], json!(false));
    assert_eq!(answer["columns"][0]["name"], json!("n"));
    assert_eq!(answer["columns"][0]["type"], json!("Int64"));

    // The SQL as a plain-text body works too, and views are there.
    let (status, answer) = post(
        &base,
        "select step, step_name from funnel_steps group by 1, 2 order by 1".into(),
        false,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["rows"][0]["step_name"], json!("session_started"));
    assert_eq!(answer["rows"][4]["step_name"], json!("order_completed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_400_with_the_reason() {
    let base = start().await;
    let cases = [
        (
            json!({"sql": "select nope from events"}).to_string(),
            "bad_sql",
            "nope",
        ),
        (json!({"sql": "selec 1"}).to_string(), "bad_sql", "selec"),
        (
            json!({"sql": "select * from no_such_table"}).to_string(),
            "bad_sql",
            "no_such_table",
        ),
        (
            json!({"query": "select 1"}).to_string(),
            "bad_request",
            "sql",
        ),
        ("{not json".to_owned(), "bad_request", "not JSON"),
        (json!({"sql": "  "}).to_string(), "bad_request", "no SQL"),
    ];
    for (body, error, detail) in cases {
        let (status, answer) = post(&base, body.clone().into(), true).await;
        assert_eq!(status, 400, "{body} → {answer}");
        assert_eq!(answer["error"], json!(error), "{body} → {answer}");
        let text = answer["detail"].as_str().unwrap_or_default();
        assert!(
            text.contains(detail),
            "{body}: {text:?} should mention {detail:?}"
        );
    }
    // The lake is untouched by the refused statement.
    let (status, answer) = post(&base, "select count(*) as n from events".into(), false).await;
    assert_eq!(status, 200);
    assert_eq!(answer["rows"][0]["n"], json!(fixture().stats.valid_unique));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_and_query_counters() {
    let (base, service) = start_with_service().await;
    let tables = get_json(format!("{base}/v1/tables")).await;
    let names: Vec<&str> = tables["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "events",
            "bad_rows",
            "orders",
            "visits",
            "identities",
            "fraud_decisions",
            "rollup_products",
            "rollup_search",
            "rollup_promotions",
            "product_affinity",
            "campaign_spend",
            "erasures"
        ]
    );
    assert!(tables["tables"][0]["delta_version"].is_u64());

    post(&base, "select 1".into(), false).await;
    post(&base, "select x".into(), false).await;
    let metrics = shoplake_server::telemetry::render(service.metrics().clone());
    assert!(metrics.contains("shoplake_queries_total 2"), "{metrics}");
    assert!(
        metrics.contains("shoplake_query_errors_total{kind=\"bad_sql\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_lake_answers_with_empty_tables() {
    let dir = tempfile::tempdir().unwrap();
    let service =
        shoplake_query::QueryService::open(&dir.path().display().to_string(), Default::default())
            .await
            .unwrap();
    let result = service
        .sql("select count(*) as n from events")
        .await
        .unwrap();
    assert_eq!(result.row_count(), 1);
    let sessions = service
        .sql("select * from daily_campaign_performance")
        .await
        .unwrap();
    assert_eq!(sessions.row_count(), 0);
    assert!(sessions.schema.field_with_name("conversion_rate").is_ok());
    // Tables compaction has not written yet are queryable, empty, with their schema.
    let identities = service
        .sql("select anonymous_id, user_id, is_current from identities")
        .await
        .unwrap();
    assert_eq!(identities.row_count(), 0);
    assert_eq!(identities.schema.fields().len(), 3);
}

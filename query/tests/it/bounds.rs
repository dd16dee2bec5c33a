//! `POST /v1/sql` as an analyst's client meets it: answers streamed in every format, parameters,
//! statements that are not queries, the caps, the time limit, the queue, and the result cache
//! with its `ETag`.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::AsArray;
use datafusion::scalar::ScalarValue;
use serde_json::{Value, json};
use shoplake_batch::{CompactOptions, Lake, compact_all};
use shoplake_ingest::LocalLog;
use shoplake_query::{Params, QueryConfig, QueryOptions, QueryRequest, QueryService};
use shoplake_transform::{Stage, StageConfig};

use crate::lake::{fixture, simulate};

async fn serve(service: Arc<QueryService>) -> String {
    let app = shoplake_query::router(service).unguarded();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// The fixture's lake, served under `limits`.
async fn start(limits: QueryConfig) -> (String, Arc<QueryService>) {
    let service = Arc::new(
        QueryService::open_with(
            &fixture().lake_root,
            QueryOptions {
                limits,
                ..QueryOptions::default()
            },
        )
        .await
        .unwrap(),
    );
    (serve(service.clone()).await, service)
}

async fn post(base: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/v1/sql"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn error_of(response: reqwest::Response) -> (u16, String, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (
        status,
        body["error"].as_str().unwrap_or_default().to_owned(),
        body["detail"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_carries_the_same_rows() {
    let (base, _) = start(QueryConfig::default()).await;
    let sql = "select event_id, event_name, event_time from events order by event_id";
    let expected = fixture().stats.valid_unique as usize;
    let client = reqwest::Client::new();
    let get = |accept: &'static str| {
        client
            .post(format!("{base}/v1/sql"))
            .header("accept", accept)
            .body(sql)
            .send()
    };

    let json: Value = get("application/json").await.unwrap().json().await.unwrap();
    assert_eq!(json["row_count"], json!(expected));
    let first_id = json["rows"][0]["event_id"].as_str().unwrap().to_owned();

    let response = get("application/x-ndjson").await.unwrap();
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let text = response.text().await.unwrap();
    assert_eq!(text.lines().count(), expected);
    let line: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(line["event_id"], json!(first_id));

    let csv = get("text/csv").await.unwrap().text().await.unwrap();
    assert_eq!(csv.lines().next(), Some("event_id,event_name,event_time"));
    assert_eq!(csv.lines().count(), expected + 1);

    let response = get("application/vnd.apache.arrow.stream").await.unwrap();
    let bytes = response.bytes().await.unwrap();
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes.to_vec()), None)
            .unwrap();
    let batches: Vec<_> = reader.map(Result::unwrap).collect();
    assert_eq!(
        batches.iter().map(|b| b.num_rows()).sum::<usize>(),
        expected
    );
    assert_eq!(batches[0].schema().field(0).name(), "event_id");

    let parquet = get("application/vnd.apache.parquet")
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(parquet)
        .unwrap()
        .build()
        .unwrap();
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, expected);

    // ?format= wins over Accept; an Accept we do not serve is a 406 naming what we do.
    let response = client
        .post(format!("{base}/v1/sql?format=csv"))
        .header("accept", "application/json")
        .body("select 1 as one")
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap().trim(), "one\n1");
    let response = client
        .post(format!("{base}/v1/sql"))
        .header("accept", "application/xml")
        .body("select 1")
        .send()
        .await
        .unwrap();
    let (status, error, detail) = error_of(response).await;
    assert_eq!((status, error.as_str()), (406, "not_acceptable"));
    assert!(detail.contains("text/csv"), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_are_bound_not_spliced() {
    let (base, service) = start(QueryConfig::default()).await;
    let expected = service
        .sql("select count(*) as n from events where event_name = 'product_viewed' and event_time >= timestamp '2026-03-01T12:00:00Z'")
        .await
        .unwrap();
    let expected = shoplake_query::to_json_rows(&expected).unwrap()[0]["n"].clone();

    let sql = "select count(*) as n from events where event_name = $1 and event_time >= $2";
    let answer: Value = post(
        &base,
        json!({"sql": sql, "params": ["product_viewed", "2026-03-01T12:00:00Z"]}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(answer["rows"][0]["n"], expected, "{answer}");

    let sql = "select count(*) as n from events where event_name = $name and event_time >= $since";
    let answer: Value = post(
        &base,
        json!({"sql": sql, "params": {"name": "product_viewed", "since": "2026-03-01T12:00:00Z"}}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(answer["rows"][0]["n"], expected, "{answer}");

    // A value is a value: quotes in it do not end a string.
    let answer: Value = post(
        &base,
        json!({"sql": "select count(*) as n from events where event_name = $1", "params": ["x' or '1'='1"]}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(answer["rows"][0]["n"], json!(0), "{answer}");

    let one = "select count(*) from events where event_name = $1";
    let two = "select count(*) from events where event_name = $1 and event_time >= $2";
    for (sql, params, needle) in [
        (one, json!([]), "$1"),
        (one, json!(["a", "b"]), "2 values"),
        (one, json!({"other": 1}), "$1"),
        (two, json!(["product_viewed", "not a time"]), "$2"),
    ] {
        let (status, error, detail) =
            error_of(post(&base, json!({"sql": sql, "params": params})).await).await;
        assert_eq!(
            (status, error.as_str()),
            (400, "bad_params"),
            "{params}: {detail}"
        );
        assert!(
            detail.contains(needle),
            "{params}: {detail:?} should name {needle}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_queries_run() {
    let (base, service) = start(QueryConfig::default()).await;
    let refused = [
        "create external table etc stored as csv location '/etc'",
        "copy (select 1) to '/tmp/shoplake-copy-test.csv'",
        "insert into events select * from events",
        "set datafusion.execution.batch_size = 1",
        "drop table events",
        "create view v as select 1",
        "delete from events",
    ];
    for sql in refused {
        let (status, error, detail) = error_of(post(&base, json!({"sql": sql})).await).await;
        assert_eq!(
            (status, error.as_str()),
            (403, "not_allowed"),
            "{sql}: {detail}"
        );
        assert!(detail.contains("only queries"), "{sql}: {detail}");
    }
    assert!(!std::path::Path::new("/tmp/shoplake-copy-test.csv").exists());
    // Files and table functions that read them are not there.
    for sql in [
        "select * from '/etc/passwd'",
        "select * from read_parquet('/etc/hosts')",
        "select * from read_csv('/etc/passwd')",
    ] {
        let (status, error, detail) = error_of(post(&base, json!({"sql": sql})).await).await;
        assert_eq!(
            (status, error.as_str()),
            (400, "bad_sql"),
            "{sql}: {detail}"
        );
    }
    // Queries, EXPLAIN, SHOW and DESCRIBE do run.
    for sql in [
        "select 1",
        "with x as (select 1 as a) select a from x",
        "explain select count(*) from events",
        "show tables",
        "describe events",
        "values (1), (2)",
    ] {
        let response = post(&base, json!({"sql": sql})).await;
        assert_eq!(
            response.status(),
            200,
            "{sql}: {}",
            response.text().await.unwrap()
        );
    }
    let metrics = shoplake_server::telemetry::render(service.metrics().clone());
    assert!(
        metrics.contains("shoplake_query_errors_total{kind=\"not_allowed\"} 7"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_over_a_cap_are_refused_not_cut() {
    let (base, service) = start(QueryConfig {
        max_rows: 1_000,
        ..QueryConfig::default()
    })
    .await;
    let (status, error, detail) =
        error_of(post(&base, json!({"sql": "select * from events"})).await).await;
    assert_eq!((status, error.as_str()), (413, "too_large"), "{detail}");
    assert!(detail.contains("1000 rows"), "{detail}");

    // Asked for a limit, the client gets it, and is told the answer was cut.
    let answer: Value = reqwest::Client::new()
        .post(format!("{base}/v1/sql?limit=10"))
        .body("select * from events")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["row_count"], json!(10));
    assert_eq!(answer["truncated"], json!(true));
    let answer: Value = post(&base, json!({"sql": "select 1 as a", "limit": 10}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(answer["truncated"], json!(false));

    // The byte cap too, in the format's own bytes.
    let (base, _) = start(QueryConfig {
        max_bytes: bytesize::ByteSize::kib(64),
        ..QueryConfig::default()
    })
    .await;
    let (status, error, detail) = error_of(
        post(
            &base,
            json!({"sql": "select * from events", "format": "csv"}),
        )
        .await,
    )
    .await;
    assert_eq!((status, error.as_str()), (413, "too_large"), "{detail}");
    assert!(detail.contains("bytes"), "{detail}");

    // The service still answers.
    let answer: Value = post(&base, json!({"sql": "select count(*) as n from events"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(answer["rows"][0]["n"], json!(fixture().stats.valid_unique));
    let metrics = shoplake_server::telemetry::render(service.metrics().clone());
    assert!(
        metrics.contains("shoplake_query_errors_total{kind=\"too_large\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_that_never_ends_is_stopped_and_others_wait_their_turn() {
    let (base, _) = start(QueryConfig {
        timeout: Duration::from_secs(2),
        max_concurrent: 1,
        queue: 0,
        ..QueryConfig::default()
    })
    .await;
    // A cross join that would take days (its small side is held, the large one streams).
    let endless = json!({"sql": "select count(*) from generate_series(1, 1000) a cross join generate_series(1, 1000000000000) b"});
    let started = std::time::Instant::now();
    let first = tokio::spawn({
        let base = base.clone();
        let endless = endless.clone();
        async move { error_of(post(&base, endless).await).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The one turn is taken and nothing may wait: 429 at once, with when to retry.
    let response = post(&base, json!({"sql": "select 1"})).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "10");
    let (_, error, _) = error_of(response).await;
    assert_eq!(error, "busy");

    let (status, error, detail) = first.await.unwrap();
    assert_eq!((status, error.as_str()), (408, "timed_out"), "{detail}");
    assert!(detail.contains("2s"), "{detail}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // The turn came back.
    let response = post(&base, json!({"sql": "select 1"})).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_answers_until_a_table_changes() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(
        &dir.path().join("lake").display().to_string(),
        Default::default(),
    )
    .unwrap();
    // Two batches of sessions, staged and compacted in turn into one lake.
    let round = |seed: u64| {
        let dir = dir.path().join(format!("round-{seed}"));
        let lake = lake.clone();
        async move {
            std::fs::create_dir_all(&dir).unwrap();
            let stream = Arc::new(LocalLog::open(&dir.join("stream.redb"), 2).unwrap());
            // Enough sessions that some devices send late (the late days below).
            let (stats, _) = simulate(&stream, seed, 200).await;
            let mut stage = Stage::open(
                stream,
                lake.store(),
                &dir.join("stage.redb"),
                StageConfig::default(),
            )
            .unwrap();
            stage.drain().await.unwrap();
            compact_all(&lake, &CompactOptions::default())
                .await
                .unwrap();
            stats
        }
    };
    let first = round(1).await;
    let service = Arc::new(
        QueryService::open_with(
            lake.root().as_str(),
            QueryOptions {
                refresh_interval: Duration::ZERO,
                ..QueryOptions::default()
            },
        )
        .await
        .unwrap(),
    );
    let base = serve(service.clone()).await;
    let (late, counted) = (late_days(&service).await, late_days_counted(&service).await);
    assert_eq!(late, counted);
    let ask = |etag: Option<String>| {
        let mut request = reqwest::Client::new()
            .post(format!("{base}/v1/sql"))
            .body("SELECT count(*) AS n FROM events");
        if let Some(etag) = etag {
            request = request.header("if-none-match", etag);
        }
        request.send()
    };
    let response = ask(None).await.unwrap();
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["rows"][0]["n"], json!(first.valid_unique));
    assert_eq!(answer["cached"], json!(false));

    // The same statement, spaced and cased differently: from the cache, same tag.
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/sql"))
        .body("select   count(*) as n\n from events")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["etag"].to_str().unwrap(), etag);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["cached"], json!(true), "{answer}");
    // A client holding the tag is told nothing changed.
    let response = ask(Some(etag.clone())).await.unwrap();
    assert_eq!(response.status(), 304);

    // Compaction commits a new version of events: a miss, with the new rows.
    let second = round(2).await;
    let response = ask(Some(etag.clone())).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_ne!(response.headers()["etag"].to_str().unwrap(), etag);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["cached"], json!(false));
    assert_eq!(
        answer["rows"][0]["n"],
        json!(first.valid_unique + second.valid_unique)
    );
    let metrics = shoplake_server::telemetry::render(service.metrics().clone());
    assert!(
        metrics.contains("shoplake_query_cache_lookups_total{outcome=\"hit\"} 2"),
        "{metrics}"
    );
    // A report's late days follow the new version too (they are counted once per version).
    let (late_after, counted_after) =
        (late_days(&service).await, late_days_counted(&service).await);
    assert_eq!(late_after, counted_after);
    assert_ne!(late_after, late, "the second round sent late events too");
}

/// The late days `freshness` gives a report over the whole simulation (2026-03-01 on).
async fn late_days(service: &QueryService) -> Vec<(String, u64)> {
    let day = |d: &str| {
        ScalarValue::Date32(Some(
            (chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap()
                - chrono::NaiveDate::default())
            .num_days() as i32,
        ))
    };
    let mut request = QueryRequest::new("SELECT 1");
    request.params = Params::Named(
        [("from", day("2026-03-01")), ("to", day("2026-12-31"))]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    );
    let freshness = service.freshness(&request).await.unwrap().unwrap();
    assert!(
        !freshness.late_days.is_empty(),
        "the simulation sends late events"
    );
    freshness.late_days
}

/// The same, counted by a statement of its own over the lake as it is now.
async fn late_days_counted(service: &QueryService) -> Vec<(String, u64)> {
    let answer = service
        .run(&QueryRequest::new(
            "SELECT CAST(event_date AS VARCHAR) AS day, count(*) AS n FROM events \
             WHERE received_at >= CAST(event_date AS TIMESTAMP) + INTERVAL '1 day' \
             GROUP BY 1 ORDER BY 1",
        ))
        .await
        .unwrap();
    let mut late = Vec::new();
    for batch in &answer.batches {
        let days =
            arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
        let days = days.as_string::<i32>();
        let counts = batch
            .column(1)
            .as_primitive::<arrow::datatypes::Int64Type>();
        for i in 0..batch.num_rows() {
            late.push((days.value(i).to_owned(), counts.value(i) as u64));
        }
    }
    late
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_run_below_ingestion_priority() {
    let (_, service) = start(QueryConfig::default()).await;
    // Nice 10, or the process's own when it already runs nicer than that.
    let own = shoplake_query::current_thread_nice().unwrap();
    assert_eq!(service.query_thread_nice().await, Some(own.max(10)));
    let (_, service) = start(QueryConfig {
        low_priority: false,
        ..QueryConfig::default()
    })
    .await;
    assert_eq!(
        service.query_thread_nice().await,
        shoplake_query::current_thread_nice()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_restricted_catalog_holds_no_personal_data() {
    use shoplake_query::{Catalog, QueryRequest};
    let (_, service) = start(QueryConfig::default()).await;
    let ask = |sql: &str| {
        let service = service.clone();
        let request = QueryRequest {
            catalog: Catalog::NoPersonalData,
            ..QueryRequest::new(sql)
        };
        async move { service.run(&request).await }
    };
    // Counts, products, campaigns and amounts are there, as many rows as in the full catalog.
    let n = ask("select count(*) as n from events").await.unwrap();
    let n = shoplake_query::to_json_rows(&n).unwrap()[0]["n"].clone();
    assert_eq!(n, json!(fixture().stats.valid_unique));
    ask("select event_name, count(*) from events group by 1")
        .await
        .unwrap();
    ask("select * from funnel_steps").await.unwrap();
    ask("select * from daily_campaign_performance")
        .await
        .unwrap();
    // Shoppers' ids, addresses and raw inputs are not, whatever the statement.
    for sql in [
        "select user_id from events",
        "select anonymous_id from visits",
        "select raw from bad_rows",
        "select order_id from orders",
        "select * from sessions",
        "select * from identities where user_id is not null",
    ] {
        let err = ask(sql).await.unwrap_err();
        assert!(err.is_user_error(), "{sql}: {err}");
    }
    let star = ask("select * from events limit 1").await.unwrap();
    for personal in ["user_id", "anonymous_id", "event_id"] {
        let names: Vec<_> = star
            .schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        if shoplake_batch::tables::get("events")
            .unwrap()
            .is_personal(personal)
        {
            assert!(
                !names.contains(&personal.to_owned()),
                "{personal} in {names:?}"
            );
        }
    }
    // The catalog's own description agrees.
    let columns = ask(
        "select column_name from information_schema.columns where table_name = 'events' and column_name = 'user_id'",
    )
    .await
    .unwrap();
    assert_eq!(columns.row_count(), 0);
    for (name, _, schema) in service.tables(Catalog::NoPersonalData).await.unwrap() {
        let table = shoplake_batch::tables::get(&name).unwrap();
        assert!(
            schema.fields().iter().all(|f| !table.is_personal(f.name())),
            "{name}"
        );
    }
    // The full catalog still has them.
    service.sql("select user_id from events").await.unwrap();
}

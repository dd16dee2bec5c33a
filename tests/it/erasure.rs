//! Erasure of a person (`shoplake erase`), as a store's privacy officer runs it on a stopped
//! platform, checked byte by byte on disk.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use shoplake_ingest::{LocalLog, Record, StreamProducer};

use crate::auth::start_query;
use crate::e2e::{admin_token, block_on, count, emit, python, run, sql, terminate};

/// The user with the most events (ties by id): the person the erasure tests erase.
/// The user with the most events among those linked to a browser (an anonymous id).
pub(crate) const TOP_USER: &str = "select user_id from events where user_id is not null \
                                   and user_id in (select user_id from identities) \
                                   group by user_id order by count(*) desc, user_id limit 1";

/// Puts `events` (wire JSON) on the embedded stream of `data`, as a storefront would.
fn put(data: &Path, events: &[Value]) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let log = LocalLog::open(&data.join("stream/events.redb"), 4).unwrap();
        let records = events
            .iter()
            .map(|e| Record {
                partition_key: e["anonymous_id"].as_str().unwrap_or("k").to_owned(),
                data: serde_json::to_vec(e).unwrap().into(),
            })
            .collect();
        log.put_records(records).await.unwrap();
    });
}

fn event(name: &str, user: &str, anonymous: &str, extra: Value) -> Value {
    let mut e = json!({
        "event_id": uuid::Uuid::new_v4().to_string(),
        "event_name": name,
        "occurred_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "user_id": user,
        "anonymous_id": anonymous,
    });
    if let (Some(e), Some(extra)) = (e.as_object_mut(), extra.as_object()) {
        e.extend(extra.clone());
    }
    e
}

/// Every file under `dir` (but the simulator's own state: the storefront's database, not the
/// platform's) whose bytes contain one of `needles`, with the needle.
fn files_mentioning(dir: &Path, needles: &[String]) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path == dir.join("simulator") {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            for n in needles {
                if bytes.windows(n.len()).any(|w| w == n.as_bytes()) {
                    found.push((path.clone(), n.clone()));
                }
            }
        }
    }
    found
}

/// `values` as a SQL list of strings.
fn list(values: &[String]) -> String {
    values
        .iter()
        .map(|v| format!("'{v}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn an_erased_person_leaves_every_file_and_the_others_numbers_stay() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    emit(data, "21", "800");
    run(data, &["stream", "--drain"]);
    run(data, &["batch", "compact"]);

    // The person: the user with the most events, with every anonymous id linked to them.
    let top = sql(data, TOP_USER);
    let user = top[0]["user_id"].as_str().unwrap().to_owned();
    let anonymous: Vec<String> = sql(
        data,
        &format!("select distinct anonymous_id from identities where user_id = '{user}'"),
    )
    .iter()
    .map(|r| r["anonymous_id"].as_str().unwrap().to_owned())
    .collect();
    assert!(!anonymous.is_empty(), "{user} has no linked anonymous id");
    let email = format!("{user}@mail.example");
    // An e-mail in their traits and a bad input that names them, through the stream.
    put(
        data,
        &[
            event(
                "identify",
                &user,
                &anonymous[0],
                json!({"traits": {"email": email, "plan": "gold"}}),
            ),
            event(
                "no_such_event",
                &user,
                &anonymous[0],
                json!({"note": email}),
            ),
        ],
    );
    run(data, &["stream", "--drain"]);
    run(data, &["batch", "compact"]);
    let mut needles = vec![user.clone(), email.clone()];
    needles.extend(anonymous.iter().cloned());
    let person = format!(
        "(user_id in ({}) or anonymous_id in ({}))",
        list(std::slice::from_ref(&user)),
        list(&anonymous)
    );
    assert!(count(data, &format!("select count(*) from events where {person}")) > 10);
    assert_eq!(
        count(
            data,
            &format!(
                "select count(*) from bad_rows where strpos(arrow_cast(raw, 'Utf8'), '{user}') > 0"
            )
        ),
        1
    );
    // More of the store's traffic, still in the stream when the request comes.
    emit(data, "22", "200");

    // What must stay: every other person's rows and money.
    let others = |table: &str| {
        count(
            data,
            &format!("select count(*) from {table} where not coalesce({person}, false)"),
        )
    };
    let expected: Vec<(&str, u64)> = [
        "events",
        "orders",
        "visits",
        "identities",
        "fraud_decisions",
    ]
    .into_iter()
    .map(|t| (t, others(t)))
    .collect();
    let bad_others = count(
        data,
        &format!(
            "select count(*) from bad_rows where strpos(arrow_cast(raw, 'Utf8'), '{user}') = 0"
        ),
    );
    let revenue_of_others = |data: &Path| {
        sql(
            data,
            &format!(
                "select cast(sum(revenue) as varchar) r from orders where not coalesce({person}, false)"
            ),
        )[0]["r"]
            .clone()
    };
    let revenue = revenue_of_others(data);

    let out = run(data, &["erase", "--user", &user, "--vacuum-after", "0s"]);
    let mut lines = out.lines();
    let report: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    let vacuumed: Value = serde_json::from_str(lines.next().expect("the vacuum's line")).unwrap();
    assert!(
        report["rows_deleted"]["events"].as_u64().unwrap() > 10,
        "{report}"
    );
    assert_eq!(report["rows_deleted"]["bad_rows"], 1, "{report}");
    assert!(
        report["rows_deleted"]["identities"].as_u64().unwrap() >= 1,
        "{report}"
    );
    assert!(report["stream_records"].as_u64().unwrap() > 10, "{report}");
    assert!(report["state_entries"].as_u64().unwrap() >= 1, "{report}");
    assert!(report["files_removed"].as_u64().unwrap() > 0, "{report}");
    // The files the erasure removed, and those removed before it (merges) not vacuumed yet.
    assert!(
        vacuumed["files_deleted"].as_u64() >= report["files_removed"].as_u64(),
        "{vacuumed}"
    );
    assert!(!out.contains(&user), "the report names nobody: {out}");

    // No byte of the person is left: lake, staging, log, stream, state.
    let left = files_mentioning(data, &needles);
    assert!(left.is_empty(), "the person is still in {left:?}");

    // The person's rows are gone, everyone else's are all there.
    assert_eq!(
        count(data, &format!("select count(*) from events where {person}")),
        0
    );
    for (table, n) in &expected {
        assert_eq!(
            count(data, &format!("select count(*) from {table}")),
            *n,
            "{table}"
        );
    }
    assert_eq!(count(data, "select count(*) from bad_rows"), bad_others);
    assert_eq!(revenue_of_others(data), revenue);
    // DuckDB (through the deltalake package) reads the same tables after the deletes and the
    // VACUUM: no file it needs is gone.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/other_engines.py");
    let seen = crate::e2e::ok(
        std::process::Command::new(python())
            .arg(script)
            .arg(data.join("lake"))
            .output()
            .unwrap(),
    );
    let seen: Value = serde_json::from_str(seen.trim()).unwrap();
    assert_eq!(
        seen["events"]["duckdb_rows"].as_u64(),
        Some(expected[0].1),
        "{seen}"
    );

    // The request is recorded, without the person.
    let recorded = sql(
        data,
        "select request_id, subject, rows_deleted, bytes_gone_at from erasures",
    );
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0]["request_id"], report["request_id"]);
    assert_eq!(recorded[0]["subject"], "user_id");
    assert!(!recorded[0]["bytes_gone_at"].is_null());

    // Their events still in flight, or sent again later, do not land: the stage drops them
    // (tombstones), and the rest of the traffic lands.
    put(
        data,
        &[event(
            "page_viewed",
            &user,
            &anonymous[0],
            json!({"context": {"page": {"url": "https://shop.example/"}}}),
        )],
    );
    run(data, &["stream", "--drain"]);
    run(data, &["batch", "compact"]);
    assert_eq!(
        count(data, &format!("select count(*) from events where {person}")),
        0
    );
    assert!(count(data, "select count(*) from events") > expected[0].1);
}

#[test]
fn an_admin_erases_a_person_over_http_and_the_answer_names_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    emit(data, "23", "300");
    run(data, &["stream", "--drain"]);
    run(data, &["batch", "compact"]);
    let user = sql(data, TOP_USER)[0]["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let of_user = format!("select count(*) from events where user_id = '{user}'");
    assert!(count(data, &of_user) > 0);
    let events = count(data, "select count(*) from events");
    // Staged, not compacted yet: the request compacts first, and finds them.
    emit(data, "24", "100");
    run(data, &["stream", "--drain"]);

    let token = admin_token(data);
    let (child, addr) = start_query(data);
    let post = |body: Value| {
        block_on(async {
            let r = reqwest::Client::new()
                .post(format!("http://{addr}/v1/admin/erasures"))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    };
    let (status, body) = post(json!({}));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("name the person"), "{body}");
    let (status, body) = post(json!({"user": user}));
    assert!(status == 400 || status == 422, "{status} {body}");
    let (status, body) = post(json!({"user_id": user}));
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains(&user), "the answer names nobody: {body}");
    let report: Value = serde_json::from_str(&body).unwrap();
    let deleted = report["rows_deleted"]["events"].as_u64().unwrap();
    assert!(deleted > 0, "{report}");
    terminate(child);

    assert_eq!(count(data, &of_user), 0);
    // Everyone else's events, the ones staged before the request included, are there.
    let after = count(data, "select count(*) from events");
    assert!(after > events - deleted, "{after} vs {events} - {deleted}");
    assert_eq!(report["subject"], "user_id");
    // Recorded at once; its bytes go at its VACUUM, an hour later by default.
    let recorded = sql(data, "select request_id, bytes_gone_at from erasures");
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0]["request_id"], report["request_id"]);
    assert!(recorded[0]["bytes_gone_at"].is_null(), "{recorded:?}");
}

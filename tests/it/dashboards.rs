//! The dashboards as a person meets them: served by `shoplake query` and `shoplake up`, signed in
//! with a password, and driven in a real browser (Debian's Chromium, by Playwright:
//! `tests/dashboards_in_chromium.py`), which checks that the numbers each page shows are the
//! reports' numbers over HTTP. Screenshots of every page are written to
//! `target/dashboards-screenshots/` for a reviewer to look at.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};

use crate::auth::{start_query, wait_healthy};
use crate::e2e::{authorize, block_on, free_port, ok, python, run, shoplake, terminate};

const ANALYST: (&str, &str) = ("ana", "analyst-password-1");
const MARKETING: (&str, &str) = ("mark", "marketing-password-1");
const ADMIN: (&str, &str) = ("root", "admin-password-1");

fn create_user(data: &Path, (name, password): (&str, &str), role: &str) {
    crate::pg::create_user(data, name, role, Some(password));
}

/// A client that follows no redirect (the test looks at them).
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

fn send(request: reqwest::RequestBuilder) -> Answer {
    block_on(async {
        let response = request.send().await.unwrap();
        Answer {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.bytes().await.unwrap().to_vec(),
        }
    })
}

fn sign_in(client: &reqwest::Client, addr: &str, (user, password): (&str, &str)) -> Answer {
    send(
        client
            .post(format!("http://{addr}/v1/session"))
            .json(&json!({"user": user, "password": password})),
    )
}

/// The files, the session cookie's rules and the pipeline page's source, over plain HTTP.
fn check_http(addr: &str) {
    let client = client();
    let root = send(client.get(format!("http://{addr}/")));
    assert!(root.status.is_redirection(), "{}", root.status);
    assert_eq!(root.header("location"), "/dashboards/");
    let page = send(client.get(format!("http://{addr}/dashboards/")));
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.header("content-type").starts_with("text/html"));
    assert!(
        page.header("content-security-policy")
            .contains("script-src 'self'")
    );
    let echarts = send(
        client
            .get(format!("http://{addr}/dashboards/vendor/echarts.min.js"))
            .header("accept-encoding", "gzip"),
    );
    assert_eq!(echarts.status, StatusCode::OK);
    assert_eq!(echarts.header("content-encoding"), "gzip");
    let etag = echarts.header("etag").to_owned();
    let again = send(
        client
            .get(format!("http://{addr}/dashboards/vendor/echarts.min.js"))
            .header("if-none-match", &etag),
    );
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    let missing = send(client.get(format!("http://{addr}/dashboards/../Cargo.toml")));
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    // Without a session, the data is closed.
    let closed = send(client.get(format!("http://{addr}/v1/reports")));
    assert_eq!(closed.status, StatusCode::UNAUTHORIZED);

    // A body that is not UTF-8 is refused in the API's error shape, not axum's plain text.
    let garbled = send(
        client
            .post(format!("http://{addr}/v1/session"))
            .header("content-type", "application/json")
            .body(vec![0x80, b'{']),
    );
    assert_eq!(garbled.status, StatusCode::BAD_REQUEST);
    assert_eq!(garbled.json()["error"], "bad_request");

    let wrong = sign_in(&client, addr, (MARKETING.0, "not-the-password"));
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.json()["error"], "bad_credentials");
    let shop = sign_in(&client, addr, ("shop", "storefront-password"));
    assert_eq!(shop.status, StatusCode::FORBIDDEN);
    assert!(
        shop.json()["detail"]
            .as_str()
            .unwrap()
            .contains("may not use the dashboards")
    );

    let signed = sign_in(&client, addr, MARKETING);
    assert_eq!(signed.status, StatusCode::OK);
    let set_cookie = signed.header("set-cookie").to_owned();
    for attribute in ["shoplake_session=", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    let session = signed.json();
    assert_eq!(session["role"], "marketing");
    let csrf = session["csrf"].as_str().unwrap().to_owned();
    // What the browser sends back from now on.
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let mut with_cookie = HeaderMap::new();
    with_cookie.insert("cookie", HeaderValue::from_str(&cookie).unwrap());
    let client = reqwest::Client::builder()
        .default_headers(with_cookie)
        .build()
        .unwrap();
    let me = send(client.get(format!("http://{addr}/v1/session"))).json();
    assert_eq!(
        (me["user"].as_str(), me["csrf"].as_str()),
        (Some("mark"), Some(csrf.as_str()))
    );

    // A report's answer says how complete its period is.
    let overview = send(client.get(format!(
        "http://{addr}/v1/reports/overview?from=2026-10-01&to=2026-10-31"
    )));
    assert_eq!(overview.status, StatusCode::OK);
    let until = overview.header("x-shoplake-complete-until");
    assert!(until.starts_with("20") && until.ends_with('Z'), "{until:?}");
    // The simulation has late devices: October's first day received events after it ended.
    let late = overview.header("x-shoplake-late-days");
    assert!(
        late.starts_with("2026-10-01=") && late.split(',').all(|d| d.starts_with("2026-10-")),
        "late days of October only: {late:?}"
    );
    let reports = send(client.get(format!("http://{addr}/v1/reports")));
    assert_eq!(reports.status, StatusCode::OK);
    let names: Vec<String> = reports.json()["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(names.contains(&"overview".to_owned()), "{names:?}");
    assert!(
        !names.contains(&"fraud_review_queue".to_owned()),
        "{names:?}"
    );

    // A request with the cookie that changes something needs the CSRF token: a page of another
    // site can make the browser send the cookie (were it not SameSite) but cannot read the token.
    let forged = send(
        client
            .post(format!("http://{addr}/v1/sql"))
            .json(&json!({"sql": "select 1 as one"})),
    );
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(forged.json()["error"], "csrf");
    let mut headers = HeaderMap::new();
    headers.insert("x-csrf-token", HeaderValue::from_str(&csrf).unwrap());
    let with_token = send(
        client
            .post(format!("http://{addr}/v1/sql"))
            .headers(headers.clone())
            .json(&json!({"sql": "select 1 as one"})),
    );
    assert_eq!(with_token.status, StatusCode::OK);
    assert_eq!(with_token.json()["rows"][0]["one"], 1);

    let pipeline = send(client.get(format!("http://{addr}/v1/pipeline")));
    assert_eq!(pipeline.status, StatusCode::OK);
    let pipeline = pipeline.json();
    assert!(pipeline["stage"].is_null(), "shoplake query runs no stage");
    let events = pipeline["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "events")
        .unwrap();
    assert!(events["files"].as_u64().unwrap() > 0, "{events}");
    assert!(events["bytes"].as_u64().unwrap() > 10_000, "{events}");
    assert!(
        pipeline["compaction"]["last_commit"].is_string(),
        "{pipeline}"
    );

    let out = send(
        client
            .delete(format!("http://{addr}/v1/session"))
            .headers(headers),
    );
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    let after = send(client.get(format!("http://{addr}/v1/reports")));
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboards-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn dashboards_sign_in_and_show_the_reports_numbers_in_a_browser() {
    let python = python();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    run(
        data,
        &[
            "emit",
            "--seed",
            "21",
            "--sessions",
            "3000",
            "--start",
            "2026-10-01T00:00:00Z",
        ],
    );
    run(data, &["stream", "--drain"]);
    run(data, &["batch", "compact"]);
    run(data, &["batch", "affinity"]);
    create_user(data, ANALYST, "analyst");
    create_user(data, MARKETING, "marketing");
    create_user(data, ADMIN, "admin");
    create_user(data, ("shop", "storefront-password"), "storefront");
    let (child, addr) = start_query(data);
    check_http(&addr);

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboards_in_chromium.py");
    let pair = |(user, password): (&str, &str)| format!("{user}:{password}");
    let out = Command::new(&python)
        .arg(script)
        .args(["--url", &format!("http://{addr}")])
        .args(["--admin", &pair(ADMIN)])
        .args(["--analyst", &pair(ANALYST)])
        .args(["--marketing", &pair(MARKETING)])
        .args(["--from", "2026-10-01", "--to", "2026-10-31"])
        .arg("--screenshots")
        .arg(screenshots())
        .output()
        .unwrap();
    let text = ok(out);
    // The load time of each page, for the note.
    println!("{text}");
    assert!(text.contains("\"load_ms\""), "{text}");
    assert!(terminate(child).success());
}

#[test]
fn up_plays_a_simulated_past_on_a_new_folder_and_serves_the_live_hour() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let addr = format!("127.0.0.1:{}", free_port());
    let start = || {
        let mut command = shoplake(
            data,
            &[
                "up",
                "--rate",
                "20",
                "--history",
                "3d",
                "--history-sessions-per-day",
                "150",
                "--http-addr",
                &addr,
            ],
        );
        command.env("SHOPLAKE_LOG", "info").stdout(Stdio::null());
        command
    };
    let mut child = start().stderr(Stdio::null()).spawn().unwrap();
    wait_healthy(&addr, &mut child);
    authorize(data, &addr);
    let today = chrono::Utc::now().date_naive();
    let from = today - chrono::Days::new(3);
    let deadline = Instant::now() + Duration::from_secs(180);
    let overview = loop {
        let path = format!("/v1/reports/overview?from={from}&to={today}");
        if let Some((200, body)) = crate::e2e::http_get(&addr, &path) {
            let answer: Value = serde_json::from_str(&body).unwrap();
            let row = answer["rows"][0].clone();
            if row["orders"].as_u64().unwrap_or(0) > 0 {
                break row;
            }
        }
        assert!(child.try_wait().unwrap().is_none(), "shoplake up exited");
        assert!(
            Instant::now() < deadline,
            "no order in the last three days after 180 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    // Three days at 150 sessions a day: hundreds of sessions, not the live minutes' few.
    assert!(overview["sessions"].as_u64().unwrap() > 200, "{overview}");
    let (status, pulse) = crate::e2e::http_get(&addr, "/v1/live/pulse").unwrap();
    assert_eq!(status, 200, "{pulse}");
    let pulse: Value = serde_json::from_str(&pulse).unwrap();
    assert_eq!(pulse["minutes"].as_array().unwrap().len(), 60);
    let live_events: u64 = pulse["minutes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["events"].as_u64().unwrap())
        .sum();
    assert!(
        live_events > 0,
        "the live storefront's last minutes: {pulse}"
    );
    let (status, pipeline) = crate::e2e::http_get(&addr, "/v1/pipeline").unwrap();
    assert_eq!(status, 200);
    let pipeline: Value = serde_json::from_str(&pipeline).unwrap();
    assert!(
        pipeline["stage"]["records_read"].as_u64().unwrap() > 0,
        "{pipeline}"
    );
    let status = terminate(child);
    assert!(status.success());

    // A second start on the same folder goes on live: the past is played once.
    let mut again = start().stderr(Stdio::piped()).spawn().unwrap();
    wait_healthy(&addr, &mut again);
    let _ = Command::new("kill")
        .args(["-TERM", &again.id().to_string()])
        .status();
    let out = again.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!log.contains("simulating the past"), "{log}");
}

//! Every route of every long-running command behind the guard, as clients meet it: no token, a
//! wrong token, a revoked one, each role's token, a foreign `Host`. The routes come from the
//! running process itself (`GET /v1/routes`), so a route added later is walked too, and a route
//! added without a rule answers nothing (the guard fails closed).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use shoplake_server::auth::{Access, Role};

use crate::e2e::{block_on, free_port, run, shoplake, terminate};

/// One user per role, and a token of each: role → token.
fn users(data: &Path) -> BTreeMap<&'static str, String> {
    Role::ALL
        .iter()
        .map(|role| {
            let name = format!("{}-user", role.as_str());
            run(data, &["users", "create", &name, "--role", role.as_str()]);
            let token = run(data, &["tokens", "create", "--user", &name]);
            (role.as_str(), token.trim().to_owned())
        })
        .collect()
}

/// One request: status, `error` of the body (if JSON), `WWW-Authenticate`.
fn call(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    host: Option<&str>,
) -> (u16, String, Option<String>) {
    block_on(async {
        let client = reqwest::Client::new();
        let url = format!("http://{addr}{path}");
        let mut request = match method {
            "POST" => client.post(url).body("{}"),
            _ => client.get(url),
        };
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(host) = host {
            request = request.header("host", host);
        }
        let response = request
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned());
        let body: Value = response.json().await.unwrap_or(Value::Null);
        (
            status,
            body["error"].as_str().unwrap_or_default().to_owned(),
            challenge,
        )
    })
}

/// Whether the guard refused (rather than the handler answering, whatever it answered).
fn refused_by_guard(error: &str) -> bool {
    matches!(error, "unauthenticated" | "invalid_token" | "forbidden")
}

pub(crate) fn wait_healthy(addr: &str, child: &mut std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while crate::e2e::http_get(addr, "/health").map(|r| r.0) != Some(200) {
        assert!(child.try_wait().unwrap().is_none(), "the server exited");
        assert!(Instant::now() < deadline, "no /health in 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts `shoplake query` on a free port of `data` and waits until it answers; returns the
/// process and its address.
pub(crate) fn start_query(data: &std::path::Path) -> (std::process::Child, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = shoplake(data, &["query", "--http-addr", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_healthy(&addr, &mut child);
    (child, addr)
}

#[test]
fn every_route_of_every_command_needs_its_role() {
    let commands: [(&str, &[&str], &[&str]); 4] = [
        (
            "query",
            &["query", "--http-addr"],
            &[
                "/v1/sql",
                "/v1/tables",
                "/v1/admin/erasures",
                "/v1/reports",
                "/v1/reports/{name}",
                "/v1/session",
                "/v1/pipeline",
                "/dashboards/{*path}",
            ],
        ),
        (
            "collect",
            &["collect", "--http-addr"],
            &["/v1/track", "/v1/batch"],
        ),
        (
            "stream",
            &["stream", "--metrics-addr"],
            &["/v1/fraud/score", "/v1/recommendations/{shopper}"],
        ),
        (
            "up",
            &["up", "--rate", "50", "--http-addr"],
            &[
                "/v1/sql",
                "/v1/reports/{name}",
                "/v1/admin/erasures",
                "/v1/track",
                "/v1/products/{id}/related",
                "/v1/live/pulse",
                "/v1/pipeline",
            ],
        ),
    ];
    for (command, args, expected) in commands {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        let tokens = users(data);
        let addr = format!("127.0.0.1:{}", free_port());
        let mut all: Vec<&str> = args.to_vec();
        all.push(&addr);
        let mut child = shoplake(data, &all)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_healthy(&addr, &mut child);

        let listing = block_on(async {
            reqwest::Client::new()
                .get(format!("http://{addr}/v1/routes"))
                .bearer_auth(&tokens["admin"])
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        });
        let routes = listing["routes"].as_array().unwrap().clone();
        let paths: Vec<&str> = routes.iter().map(|r| r["path"].as_str().unwrap()).collect();
        for path in expected
            .iter()
            .chain(&["/health", "/ready", "/metrics", "/v1/routes"])
        {
            assert!(paths.contains(path), "{command}: {path} not in {paths:?}");
        }

        for route in &routes {
            let method = route["method"].as_str().unwrap();
            let rule = route["path"].as_str().unwrap();
            let access: Access = serde_json::from_value(route["access"].clone()).unwrap();
            let path = rule
                .replace("{shopper}", "u-1")
                .replace("{id}", "p-1")
                .replace("{name}", "overview");
            let what = format!("{command}: {method} {rule} ({access:?})");
            let open = matches!(access, Access::Open | Access::WriteKey);

            let (status, error, challenge) = call(&addr, method, &path, None, None);
            if open {
                assert!(
                    !refused_by_guard(&error),
                    "{what} without a token: {status} {error}"
                );
            } else {
                assert_eq!((status, error.as_str()), (401, "unauthenticated"), "{what}");
                assert!(
                    challenge.unwrap_or_default().starts_with("Bearer"),
                    "{what}"
                );
            }
            let (status, error, _) = call(&addr, method, &path, Some("slt_not_a_token"), None);
            if !open {
                assert_eq!((status, error.as_str()), (401, "invalid_token"), "{what}");
            }
            for role in Role::ALL {
                let (status, error, _) =
                    call(&addr, method, &path, Some(&tokens[role.as_str()]), None);
                if role.allows(access) {
                    assert!(
                        !refused_by_guard(&error),
                        "{what} as {role}: {status} {error}"
                    );
                } else {
                    assert_eq!(
                        (status, error.as_str()),
                        (403, "forbidden"),
                        "{what} as {role}"
                    );
                }
            }
        }

        // The analyst-only report (it lists shoppers) is neither listed nor run for marketing.
        if command == "query" {
            let get = |path: &str, role: &str| {
                block_on(async {
                    let response = reqwest::Client::new()
                        .get(format!("http://{addr}{path}"))
                        .bearer_auth(&tokens[role])
                        .send()
                        .await
                        .unwrap();
                    let status = response.status().as_u16();
                    (status, response.json::<Value>().await.unwrap())
                })
            };
            let listed = |role: &str| -> Vec<String> {
                let (status, body) = get("/v1/reports", role);
                assert_eq!(status, 200, "{role}: {body}");
                body["reports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["name"].as_str().unwrap().to_owned())
                    .collect()
            };
            let queue = "fraud_review_queue".to_owned();
            assert!(!listed("marketing").contains(&queue));
            assert!(listed("analyst").contains(&queue));
            assert!(listed("marketing").contains(&"overview".to_owned()));
            let (status, body) = get("/v1/reports/fraud_review_queue", "marketing");
            assert_eq!(
                (status, &body["error"]),
                (404, &Value::from("no_report")),
                "{body}"
            );
            let (status, body) = get("/v1/reports/fraud_review_queue", "analyst");
            assert_eq!(status, 200, "{body}");
        }

        // A page of another site whose name resolves here (DNS rebinding) is not answered.
        let (status, error, _) = call(
            &addr,
            "GET",
            "/metrics",
            Some(&tokens["admin"]),
            Some("attacker.example:8080"),
        );
        assert_eq!((status, error.as_str()), (421, "unknown_host"), "{command}");
        assert!(terminate(child).success(), "{command}: a clean stop");
    }
}

#[test]
fn a_revoked_token_stops_working_while_the_server_runs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let tokens = users(data);
    let (child, addr) = start_query(data);
    let token = &tokens["analyst"];
    assert_eq!(call(&addr, "GET", "/v1/tables", Some(token), None).0, 200);

    // Marketing's SQL reads the catalog without personal data; the analyst's reads it all.
    let sql = |token: &str, statement: &str| {
        block_on(async {
            let response = reqwest::Client::new()
                .post(format!("http://{addr}/v1/sql"))
                .bearer_auth(token)
                .body(statement.to_owned())
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        })
    };
    let (status, body) = sql(&tokens["marketing"], "select user_id from events");
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("user_id"),
        "{body}"
    );
    assert_eq!(sql(&tokens["analyst"], "select user_id from events").0, 200);
    assert_eq!(
        sql(&tokens["marketing"], "select count(*) from funnel_steps").0,
        200
    );

    let listed = run(data, &["tokens", "list", "--json"]);
    let id = listed
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|t| t["user"] == "analyst-user")
        .unwrap()["token_id"]
        .as_str()
        .unwrap()
        .to_owned();
    run(data, &["tokens", "revoke", &id]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, error, _) = call(&addr, "GET", "/v1/tables", Some(token), None);
        if status == 401 {
            assert_eq!(error, "invalid_token");
            break;
        }
        assert!(Instant::now() < deadline, "the revoked token still works");
        std::thread::sleep(Duration::from_millis(200));
    }
    // A token that expires: works at once (an unknown token re-reads a changed store),
    // then is refused once it has expired.
    let short = run(
        data,
        &[
            "tokens",
            "create",
            "--user",
            "marketing-user",
            "--expires-in",
            "4s",
        ],
    );
    let short = short.trim();
    let deadline = Instant::now() + Duration::from_secs(2);
    while call(&addr, "GET", "/v1/tables", Some(short), None).0 != 200 {
        assert!(
            Instant::now() < deadline,
            "a new token did not work within 2 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(5));
    let (status, error, _) = call(&addr, "GET", "/v1/tables", Some(short), None);
    assert_eq!((status, error.as_str()), (401, "invalid_token"));
    assert!(terminate(child).success());
}

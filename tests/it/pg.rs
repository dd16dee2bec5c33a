//! The Postgres wire protocol of `shoplake query`, tried with clients nobody on the project
//! wrote: psql, psycopg 3, SQLAlchemy (tests/pg_clients.py) and pgjdbc (tests/PgJdbc.java).
//! ./scripts/test installs them (psql and pgjdbc from Debian, the Python drivers from PyPI);
//! a missing client fails the test rather than skipping it, and so does a run outside
//! ./scripts/test (`crate::e2e::python`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::e2e::{count, free_port, ok, python, run, shoplake, sql, terminate};

const ANALYST_PASSWORD: &str = "analyst-password-1";
const MARKETING_PASSWORD: &str = "marketing-password-1";

/// A lake of a few thousand events, users with passwords, and `shoplake query` serving it.
struct Served {
    _dir: tempfile::TempDir,
    data: PathBuf,
    pg_port: u16,
    flight_port: u16,
    http_addr: String,
    child: std::process::Child,
}

pub(crate) fn create_user(data: &Path, name: &str, role: &str, password: Option<&str>) {
    let mut args = vec!["users", "create", name, "--role", role];
    if password.is_some() {
        args.push("--password-stdin");
    }
    let mut child = shoplake(data, &args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(password) = password {
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    }
    ok(child.wait_with_output().unwrap());
}

fn serve(config: Option<&str>) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_owned();
    run(
        &data,
        &[
            "emit",
            "--seed",
            "11",
            "--sessions",
            "400",
            "--start",
            "2026-03-01T00:00:00Z",
        ],
    );
    run(&data, &["stream", "--drain"]);
    run(&data, &["batch", "compact"]);
    create_user(&data, "analyst", "analyst", Some(ANALYST_PASSWORD));
    create_user(&data, "marketing", "marketing", Some(MARKETING_PASSWORD));
    create_user(&data, "shop", "storefront", Some("storefront-password"));
    let mut args = Vec::new();
    let config_path = config.map(|text| {
        let path = data.join("pipeline.toml");
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    });
    if let Some(path) = &config_path {
        args.push("--config".to_owned());
        args.push(path.clone());
    }
    let (pg_port, flight_port) = (free_port(), free_port());
    let http_addr = format!("127.0.0.1:{}", free_port());
    let pg_addr = format!("127.0.0.1:{pg_port}");
    let flight_addr = format!("127.0.0.1:{flight_port}");
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.extend(["query", "--http-addr", &http_addr, "--pg-addr", &pg_addr]);
    all.extend(["--flight-addr", &flight_addr]);
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = shoplake(&data, &all)
        .stdout(Stdio::null())
        .stderr(Stdio::from(log.reopen().unwrap()))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(&pg_addr).is_err() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "shoplake query exited: {}",
            std::fs::read_to_string(log.path()).unwrap_or_default()
        );
        assert!(Instant::now() < deadline, "no Postgres listener in 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    Served {
        _dir: dir,
        data,
        pg_port,
        flight_port,
        http_addr,
        child,
    }
}

fn psql(port: u16, user: &str, password: &str, ssl: &str, command: &str) -> Output {
    Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={port} user={user} dbname=shoplake sslmode={ssl}"
        ))
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-c", command])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("psql is installed (./scripts/test installs postgresql-client)")
}

#[track_caller]
fn psql_ok(port: u16, command: &str) -> String {
    let out = psql(port, "analyst", ANALYST_PASSWORD, "disable", command);
    assert!(
        out.status.success(),
        "psql -c {command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn psql_lists_describes_and_queries_and_refuses_a_wrong_password() {
    python();
    let served = serve(None);
    let port = served.pg_port;
    let tables = psql_ok(port, "\\dt");
    for table in ["events", "orders", "visits", "identities", "bad_rows"] {
        assert!(tables.contains(table), "\\dt lists {table}:\n{tables}");
    }
    let described = psql_ok(port, "\\d events");
    for column in ["event_id", "event_name", "event_time", "anonymous_id"] {
        assert!(
            described.contains(column),
            "\\d events shows {column}:\n{described}"
        );
    }
    // A report's query, the same numbers as the CLI gives.
    let report = psql_ok(
        port,
        "select event_name, count(*) as n from events group by 1 order by 1",
    );
    for row in sql(
        &served.data,
        "select event_name, count(*) as n from events group by 1 order by 1",
    ) {
        let line = format!(
            "{} | {}",
            row["event_name"].as_str().unwrap(),
            row["n"].as_u64().unwrap()
        );
        assert!(
            report
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") == line),
            "psql shows {line}:\n{report}"
        );
    }
    // A named report through its table function: the same figures as `shoplake report`.
    let funnel = psql_ok(
        port,
        "select step, sessions from report_funnel('2020-01-01', '2030-12-31') order by step",
    );
    let cli = crate::e2e::run(
        &served.data,
        &[
            "report",
            "funnel",
            "--param",
            "from=2020-01-01",
            "--param",
            "to=2030-12-31",
            "--format",
            "json",
        ],
    );
    let cli: Vec<serde_json::Value> = serde_json::from_str(cli.trim()).unwrap();
    assert_eq!(cli.len(), 5, "{cli:?}");
    for row in &cli {
        let line = format!("{} | {}", row["step"], row["sessions"]);
        assert!(
            funnel
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") == line),
            "psql shows {line}:\n{funnel}"
        );
    }
    let version = psql_ok(port, "select version()");
    assert!(version.contains("PostgreSQL 16.6"), "{version}");

    // Refusals, in Postgres's words.
    let wrong = psql(port, "analyst", "not-the-password", "disable", "select 1");
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        stderr
            .to_lowercase()
            .contains("password authentication failed"),
        "{stderr}"
    );
    let nobody = psql(port, "nobody", "whatever-password", "disable", "select 1");
    assert!(
        String::from_utf8_lossy(&nobody.stderr)
            .to_lowercase()
            .contains("password authentication failed"),
        "an unknown user fails like a wrong password"
    );
    let storefront = psql(port, "shop", "storefront-password", "disable", "select 1");
    assert!(
        !storefront.status.success(),
        "a storefront user runs no SQL"
    );
    let write = psql(
        port,
        "analyst",
        ANALYST_PASSWORD,
        "disable",
        "copy events to '/tmp/x.csv'",
    );
    assert!(!write.status.success(), "COPY is refused");
    let drop = psql(
        port,
        "analyst",
        ANALYST_PASSWORD,
        "disable",
        "drop table events",
    );
    assert!(!drop.status.success());
    assert!(
        String::from_utf8_lossy(&drop.stderr).contains("only queries run here"),
        "{}",
        String::from_utf8_lossy(&drop.stderr)
    );
    // The lake is untouched.
    assert!(count(&served.data, "select count(*) from events") > 1000);
    assert!(terminate(served.child).success(), "a clean stop");
}

#[test]
fn psycopg_sqlalchemy_and_pgjdbc_see_the_lake() {
    let python = python();
    let served = serve(None);
    let port = served.pg_port;
    let counts = |name: &str| {
        count(
            &served.data,
            &format!("select count(*) from events where event_name = '{name}'"),
        )
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pg_clients.py");
    let out = Command::new(&python)
        .arg(script)
        .args(["127.0.0.1", &port.to_string()])
        .args([ANALYST_PASSWORD, MARKETING_PASSWORD])
        .output()
        .unwrap();
    let seen: Value = serde_json::from_str(ok(out).trim()).unwrap();
    eprintln!("pg_clients.py saw: {seen}");
    let page_viewed = counts("page_viewed");
    assert!(page_viewed > 100);
    assert_eq!(seen["server_version"], 160006);
    assert_eq!(seen["page_viewed"], page_viewed);
    assert_eq!(seen["page_viewed_binary"], page_viewed);
    for name in ["page_viewed", "product_viewed", "order_completed"] {
        assert_eq!(seen["prepared_counts"][name], counts(name), "{name}");
    }
    assert_eq!(seen["injection_count"], 0);
    assert_eq!(seen["first_event_time_type"], "datetime");
    assert!(seen["funnel_rows"].as_u64().unwrap() > 0);
    assert_eq!(seen["create_table"], "25006");
    assert_eq!(seen["cursor_rows"], 1_000_000);
    assert_eq!(seen["cursor_sum"], 1_000_001_000_000u64);
    assert_eq!(seen["stream_rows"], 1_000_000);
    assert_eq!(seen["timeout"], "57014");
    assert!(seen["timeout_seconds"].as_f64().unwrap() < 10.0, "{seen}");
    assert_eq!(seen["after_timeout"], 1);
    assert_eq!(seen["cancel"], "57014");
    assert!(seen["cancel_seconds"].as_f64().unwrap() < 10.0, "{seen}");
    assert_eq!(seen["after_cancel"], 2);
    assert!(
        seen["wrong_password"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("password authentication failed"),
        "{seen}"
    );
    assert_eq!(
        seen["marketing_events"],
        count(&served.data, "select count(*) from events")
    );
    assert_eq!(seen["marketing_ip"], "42703", "marketing has no ip column");
    let tables: Vec<&str> = seen["sqlalchemy_tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for table in ["events", "orders", "visits", "identities"] {
        assert!(
            tables.contains(&table),
            "SQLAlchemy reflects {table}: {tables:?}"
        );
    }
    assert_eq!(
        seen["sqlalchemy_page_viewed"],
        serde_json::json!([["page_viewed", page_viewed]])
    );

    // pgjdbc: DatabaseMetaData and a prepared statement with parameters.
    let jar = Path::new("/usr/share/java/postgresql.jar");
    assert!(
        jar.exists(),
        "pgjdbc is installed (./scripts/test installs libpostgresql-jdbc-java)"
    );
    let java = Command::new("java")
        .arg("-cp")
        .arg(jar)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/PgJdbc.java"))
        .arg(format!(
            "jdbc:postgresql://127.0.0.1:{port}/shoplake?sslmode=disable"
        ))
        .args(["analyst", ANALYST_PASSWORD])
        .output()
        .unwrap();
    let printed = ok(java);
    let line = |key: &str| {
        printed
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("pgjdbc printed no {key}:\n{printed}"))
            .to_owned()
    };
    assert!(line("product").starts_with("PostgreSQL 16.6"), "{printed}");
    let tables = line("tables");
    for table in ["public.events", "public.orders", "public.funnel_steps"] {
        assert!(tables.contains(table), "getTables lists {table}: {tables}");
    }
    assert!(line("orders_columns").contains("order_id"), "{printed}");
    for i in 1..=7 {
        assert_eq!(
            line(&format!("prepared_{i}")),
            format!("{page_viewed} true"),
            "run {i} (binary results from the 5th)"
        );
    }
    assert_eq!(line("fetched"), "100000 5000050000");
    assert!(terminate(served.child).success(), "a clean stop");
}

#[test]
fn adbc_over_flight_sql_gets_what_http_gets() {
    let python = python();
    let served = serve(None);
    let token = run(&served.data, &["tokens", "create", "--user", "analyst"]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/flight_client.py");
    let out = Command::new(&python)
        .arg(script)
        .arg(format!("grpc://127.0.0.1:{}", served.flight_port))
        .args(["analyst", ANALYST_PASSWORD])
        .arg(format!("http://{}", served.http_addr))
        .arg(token.trim())
        .output()
        .unwrap();
    let seen: Value = serde_json::from_str(ok(out).trim()).unwrap();
    eprintln!("flight_client.py saw: {seen}");
    let names = count(
        &served.data,
        "select count(distinct event_name) from events",
    );
    assert_eq!(seen["rows"], names);
    assert_eq!(seen["equal_to_http"], true, "{seen}");
    for name in ["page_viewed", "order_completed"] {
        assert_eq!(
            seen["prepared_counts"][name],
            count(
                &served.data,
                &format!("select count(*) from events where event_name = '{name}'")
            ),
            "{name}"
        );
    }
    assert_eq!(seen["large_rows"], 1_000_000);
    assert_ne!(seen["create_table"], "ran");
    let tables: Vec<&str> = seen["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for table in ["public.events", "public.orders", "public.funnel_steps"] {
        assert!(
            tables.contains(&table),
            "GetTables lists {table}: {tables:?}"
        );
    }
    assert_eq!(seen["vendor"], "shoplake");
    assert_ne!(seen["wrong_password"], "connected");
    assert!(terminate(served.child).success(), "a clean stop");
}

#[test]
fn tls_when_required_refuses_plain_text_and_serves_tls() {
    python();
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    ok(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl"));
    let config = format!(
        "[query]\ntls = \"required\"\ntls_cert = {:?}\ntls_key = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    let served = serve(Some(&config));
    let port = served.pg_port;
    let plain = psql(port, "analyst", ANALYST_PASSWORD, "disable", "select 1");
    assert!(!plain.status.success(), "plain text is refused");
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert!(stderr.contains("requires TLS"), "{stderr}");
    let secure = psql(
        port,
        "analyst",
        ANALYST_PASSWORD,
        "require",
        "select 42 as answer",
    );
    assert!(
        secure.status.success(),
        "{}",
        String::from_utf8_lossy(&secure.stderr)
    );
    assert!(terminate(served.child).success(), "a clean stop");

    // A certificate that does not load stops the command; it never serves plain text instead.
    std::fs::write(&cert, "not a certificate").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pipeline.toml");
    std::fs::write(&path, &config).unwrap();
    let out = shoplake(
        dir.path(),
        &[
            "--config",
            &path.display().to_string(),
            "query",
            "--http-addr",
            &format!("127.0.0.1:{}", free_port()),
        ],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cert.pem"), "names the file: {stderr}");
}

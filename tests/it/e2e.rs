use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_shoplake");

fn shoplake(data: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("--data-dir")
        .arg(data)
        .args(args)
        .env("SHOPLAKE_LOG", "warn");
    cmd
}

#[track_caller]
fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "command failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run(data: &Path, args: &[&str]) -> String {
    ok(shoplake(data, args).output().expect("start shoplake"))
}

fn emit(data: &Path, seed: &str, sessions: &str) -> Value {
    let out = run(
        data,
        &[
            "emit",
            "--seed",
            seed,
            "--sessions",
            sessions,
            "--start",
            "2026-03-01T00:00:00Z",
            "--stats-json",
        ],
    );
    serde_json::from_str(out.lines().last().unwrap_or_default()).expect("stats json")
}

/// Rows of a query, as JSON objects.
fn sql(data: &Path, query: &str) -> Vec<Value> {
    let out = run(data, &["sql", query, "--format", "json"]);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn count(data: &Path, query: &str) -> u64 {
    let rows = sql(data, query);
    rows[0]
        .as_object()
        .and_then(|o| o.values().next())
        .and_then(Value::as_u64)
        .expect("a count")
}

fn assert_lake_matches(data: &Path, stats: &Value) {
    let valid = stats["valid_unique"].as_u64().unwrap();
    let bad = stats["bad"].as_u64().unwrap();
    assert!(
        valid > 1000 && bad > 0,
        "the simulation is big enough: {stats}"
    );
    assert_eq!(
        count(data, "select count(*) from events"),
        valid,
        "every valid event exactly once"
    );
    assert_eq!(
        count(data, "select count(distinct event_id) from events"),
        valid,
        "no event twice"
    );
    assert_eq!(
        count(data, "select count(*) from bad_rows"),
        bad,
        "every bad input kept"
    );
    // Each bad row has the reason the simulator injected.
    for row in sql(
        data,
        "select reason, count(*) as n from bad_rows group by reason",
    ) {
        let reason = row["reason"].as_str().unwrap();
        assert_eq!(
            row["n"].as_u64(),
            stats["bad_by_reason"][reason].as_u64(),
            "bad rows with reason {reason}"
        );
    }
    let orders = stats["orders"].as_u64().unwrap();
    assert!(orders > 0);
    assert_eq!(
        count(data, "select count(*) from orders"),
        count(
            data,
            "select count(distinct order_id) from events where event_name = 'order_completed'"
        )
    );
}

#[test]
fn simulator_to_lake_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let stats = emit(data, "7", "1500");
    let drained: Value = serde_json::from_str(run(data, &["stream", "--drain"]).trim()).unwrap();
    assert_eq!(drained["records"], stats["records"]);
    run(data, &["batch", "compact"]);
    assert_lake_matches(data, &stats);
    // Re-running compaction and the stage changes nothing.
    run(data, &["stream", "--drain"]);
    run(data, &["batch", "compact"]);
    assert_lake_matches(data, &stats);
    // The views answer.
    let funnel = sql(data, "select * from funnel_steps");
    assert!(!funnel.is_empty());
    let campaigns = count(data, "select count(*) from daily_campaign_performance");
    assert!(campaigns > 0);
}

fn kill_after(mut child: Child, after: Duration) {
    let deadline = Instant::now() + after;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn killing_the_stage_and_compaction_midway_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let config = data.join("small-batches.toml");
    std::fs::create_dir_all(data).unwrap();
    // Small batches: many flushes, so the kills land between staging and checkpoint.
    std::fs::write(
        &config,
        "[stage]\nmax_batch_records = 700\nread_batch = 300\n[compaction]\nmax_bytes = 200000\n",
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let stats = emit(data, "11", "2500");
    for (i, ms) in [150u64, 300, 450, 700].iter().enumerate() {
        let stage = shoplake(data, &["--config", cfg, "stream", "--drain"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        kill_after(stage, Duration::from_millis(*ms));
        let compact = shoplake(data, &["--config", cfg, "batch", "compact"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        kill_after(compact, Duration::from_millis(100 + 150 * i as u64));
    }
    run(data, &["--config", cfg, "stream", "--drain"]);
    run(data, &["--config", cfg, "batch", "compact"]);
    assert_lake_matches(data, &stats);
}

#[test]
fn config_check_reports_the_bad_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[stage]\nsession_timeout = 10\n").unwrap();
    let out = Command::new(BIN)
        .args(["config", "check"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("session_timeout") && err.contains("bad.toml"),
        "{err}"
    );
}

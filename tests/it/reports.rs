//! The named reports (`sql/reports`) against an independent engine: every report, run by
//! `shoplake report`, equals what `tests/reports_oracle.py` computes with DuckDB from the lake's
//! raw tables with SQL written from the reports' descriptions only (not from shoplake's SQL). The
//! lake holds two seeded simulations a month apart (bad input, duplicates, clock skew, identity
//! stitching, several currencies) and hand-made edge cases sent through the collector
//! (`tests/reports_edge_cases.py`).

use std::path::Path;
use std::process::Command;

use crate::e2e::{ok, pipeline_config, python, run, shoplake, start_collect_with, terminate};

const BIN: &str = env!("CARGO_BIN_EXE_shoplake");

/// Sends the edge cases through `shoplake collect` into `data`'s stream, with `config` (the
/// edge cases are dated: they stay within the lateness it allows for years).
fn send_edge_cases(data: &Path, python: &str, config: &str) {
    let web = run(data, &["keys", "create", "--source", "web"]);
    let backend = run(data, &["keys", "create", "--source", "backend"]);
    let (collect, addr) = start_collect_with(data, &["--config", config]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reports_edge_cases.py");
    ok(Command::new(python)
        .arg(script)
        .arg(format!("http://{addr}"))
        .arg(web.trim())
        .arg(backend.trim())
        .output()
        .unwrap());
    assert!(terminate(collect).success(), "a clean stop on SIGTERM");
}

#[test]
fn every_report_agrees_with_duckdb() {
    let python = python();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    for (seed, start) in [
        ("11", "2026-09-12T00:00:00Z"),
        ("12", "2026-10-20T00:00:00Z"),
    ] {
        // With what its paid campaigns cost, loaded as a store loads its ad platforms' exports.
        let spend = data.join(format!("spend-{seed}.csv"));
        let spend = spend.to_str().unwrap();
        run(
            data,
            &[
                "emit",
                "--seed",
                seed,
                "--sessions",
                "2500",
                "--start",
                start,
                "--spend-csv",
                spend,
            ],
        );
        let loaded: serde_json::Value =
            serde_json::from_str(&run(data, &["load", "spend", spend])).unwrap();
        assert!(loaded["inserted"].as_u64().unwrap() > 0, "{loaded}");
    }
    // Loading a file again replaces its days; a file with a bad line loads nothing and names it.
    let again: serde_json::Value = serde_json::from_str(&run(
        data,
        &["load", "spend", data.join("spend-12.csv").to_str().unwrap()],
    ))
    .unwrap();
    assert_eq!(again["inserted"], 0, "{again}");
    assert_eq!(again["replaced"], again["rows"], "{again}");
    let bad = data.join("bad-spend.csv");
    std::fs::write(
        &bad,
        "date,source,campaign,spend,currency\n2026-09-12,google,brand_search,5,USD\n2026-09-31,google,x,1,USD\n",
    )
    .unwrap();
    let out = shoplake(data, &["load", "spend", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nothing loaded: 1 bad line(s)")
            && err.contains("line 3: date \"2026-09-31\""),
        "{err}"
    );
    // The edge cases are dated November 2026: the collector and the stage take them however
    // long after that the test runs.
    let config = pipeline_config(data, "[stage]\nmax_lateness = \"3650d\"\n");
    send_edge_cases(data, &python, &config);
    run(data, &["--config", &config, "stream", "--drain"]);
    run(data, &["batch", "compact"]);
    run(data, &["batch", "affinity"]);

    let reports = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/sql/reports"))
        .unwrap()
        .count();
    let oracle = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/reports_oracle.py");
    // A month with the first simulation, the next two with the second and the edge cases (the
    // first one's previous periods and cohorts reach back), one day of edge cases, and a month
    // with no data at all.
    for (from, to) in [
        ("2026-09-01", "2026-09-30"),
        ("2026-10-01", "2026-11-30"),
        ("2026-11-25", "2026-11-25"),
        ("2027-02-01", "2027-02-28"),
    ] {
        let out = Command::new(&python)
            .args([oracle, "--shoplake", BIN, "--data-dir"])
            .arg(data)
            .args(["--from", from, "--to", to])
            .env("SHOPLAKE_LOG", "warn")
            .output()
            .unwrap();
        let text = ok(out);
        assert!(
            text.contains(&format!("{reports} of {reports} reports agree")),
            "{from}..{to}:\n{text}"
        );
    }

    // The terminal: the catalogue, and a wrong parameter named.
    let listed = run(data, &["report"]);
    for name in ["overview", "attribution", "cohorts", "fraud_review_queue"] {
        assert!(listed.contains(&format!("{name} — ")), "{listed}");
    }
    let out = shoplake(data, &["report", "overview", "--param", "from=2026-02-30"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("parameter from: \"2026-02-30\" is not a date"),
        "{err}"
    );
    let csv = run(
        data,
        &[
            "report",
            "funnel",
            "--param",
            "from=2026-09-01",
            "--param",
            "to=2026-09-30",
            "--format",
            "csv",
        ],
    );
    assert_eq!(csv.lines().count(), 6, "a header and five steps:\n{csv}");
}

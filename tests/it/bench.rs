//! The benchmark scripts run and produce their figures (a smoke test: how fast is for
//! BENCHMARKS.md, not for tests).

use std::process::Command;

use crate::e2e::ok;

const BIN: &str = env!("CARGO_BIN_EXE_shoplake");

/// bench/queries.sh on a small lake, with the debug binary: every query answers on both engines
/// with the same number of rows, and the table has a row per query and the geometric mean.
#[test]
fn the_query_benchmark_produces_its_table() {
    if std::env::var_os("SHOPLAKE_TEST_PYTHON").is_none() {
        eprintln!(
            "SKIPPED: the query benchmark needs DuckDB from ./scripts/test's virtual environment (SHOPLAKE_TEST_PYTHON is not set)"
        );
        return;
    }
    let out = ok(Command::new("bench/queries.sh")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["400", "1"])
        .env("SHOPLAKE_BENCH_BIN", BIN)
        .output()
        .unwrap());
    let queries = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/bench/queries"))
        .unwrap()
        .count();
    assert!(queries >= 12, "{queries} queries");
    let rows: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("| 0") || l.starts_with("| 1"))
        .collect();
    assert_eq!(rows.len(), queries, "{out}");
    for row in &rows {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        // | name | rows | p50 | p95 | p50 | p95 | ratio |
        for cell in &cells[3..8] {
            let v: f64 = cell.parse().unwrap_or_else(|_| panic!("{row}"));
            assert!(v > 0.0, "{row}");
        }
    }
    assert!(out.contains("**geometric mean**"), "{out}");
}

#!/usr/bin/env bash
# Dashboard views and analyst queries over a seeded lake, hot, on shoplake (`shoplake query`,
# POST /v1/sql) and on DuckDB over the same Parquet files, in the same run (bench/queries.py).
# Prints Markdown.
# Usage: bench/queries.sh [SESSIONS] [RUNS] [DATA_DIR]
#   SESSIONS  simulated sessions of the dataset (530,000 ≈ 10 million events); default 530000
#   RUNS      hot runs per query and engine after one warm-up; default 10
#   DATA_DIR  reuse a lake made by an earlier run (made there when missing); default: a temp dir
set -euo pipefail
cd "$(dirname "$0")/.."
sessions="${1:-530000}"
runs="${2:-10}"
data="${3:-}"

# shellcheck source=bench/common.sh
source bench/common.sh
# The peer, DuckDB, from PyPI into the virtual environment of the test tools.
bench_python
[ -n "$data" ] || data="$work/data"
bench_lake "$data" "$sessions"

bench_query "$data"

echo "### Dashboard and analyst queries, hot ($(nproc) cores)"
echo
SHOPLAKE_TOKEN=$(bench_token "$data") "$venv/bin/python" bench/queries.py "$data/lake" "http://$addr" "$runs"

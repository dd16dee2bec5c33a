#!/usr/bin/env bash
# Every report of the catalogue over the last 30 days of a seeded lake, hot, on shoplake
# (`GET /v1/reports/NAME` of `shoplake query`) and on DuckDB running the same report's SQL over the
# same Parquet files, in the same run (bench/reports.py). Prints Markdown. bench/run.sh measures
# the same as one of its rows.
# Usage: bench/reports.sh [SESSIONS] [RUNS] [DATA_DIR]   (as bench/queries.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
sessions="${1:-530000}"
runs="${2:-10}"
data="${3:-}"

# shellcheck source=bench/common.sh
source bench/common.sh
bench_python
[ -n "$data" ] || data="$work/data"
bench_lake "$data" "$sessions"

bench_query "$data"

echo "### Reports, hot ($(nproc) cores)"
echo
SHOPLAKE_TOKEN=$(bench_token "$data") "$venv/bin/python" bench/reports.py "$data/lake" "http://$addr" "$runs"

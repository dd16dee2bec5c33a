#!/usr/bin/env bash
# The analysts' query service (issue 24), on this machine (bench/service.py says how):
#   - rows/s of a 1M-row answer over the Postgres wire (psycopg), Flight SQL (ADBC), HTTP Arrow
#     and HTTP JSON, beside DuckDB producing the same rows to Arrow in the same run;
#   - the stage's rate in `shoplake up` (reading a backlog) alone and with four heavy queries running.
# Prints Markdown.
# Usage: bench/service.sh [DATA_DIR] [-- service.py options: --runs N --window S --loaded-windows N
#        --backlog-sessions N --only protocols|ingestion]
#   DATA_DIR  the 10-million-event lake of bench/queries.sh / bench/run.sh --query-data (made
#             there when missing); default: a temp dir
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-}"
[ $# -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift

# shellcheck source=bench/common.sh
source bench/common.sh
bench_python
[ -n "$data" ] || data="$work/data"
bench_lake "$data" 530000
"$venv/bin/python" bench/service.py --bin "$bin" --lake-data "$data" --work "$work" "$@"

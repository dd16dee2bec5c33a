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

# SHOPLAKE_BENCH_BIN runs another build (a dry run of the script with a debug binary).
bin="${SHOPLAKE_BENCH_BIN:-target/release/shoplake}"
[ -n "${SHOPLAKE_BENCH_BIN:-}" ] || cargo build --release --workspace --bins --quiet
# The peer, from PyPI, into the same virtual environment as the test tools.
venv=.emulators/venv
if ! cmp -s scripts/requirements-test.txt "$venv/.installed" 2> /dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
    cp scripts/requirements-test.txt "$venv/.installed"
fi

work="$(mktemp -d)"
pid=
cleanup() {
    [ -n "$pid" ] && kill -TERM "$pid" 2> /dev/null && wait "$pid" 2> /dev/null
    rm -rf "$work"
}
trap cleanup EXIT
export SHOPLAKE_LOG=warn
[ -n "$data" ] || data="$work/data"
if [ ! -d "$data/lake/events" ]; then
    "$bin" --data-dir "$data" emit --seed 1 --sessions "$sessions" --start 2026-03-01T00:00:00Z > /dev/null
    "$bin" --data-dir "$data" stream --drain > /dev/null
    "$bin" --data-dir "$data" batch compact > /dev/null
    "$bin" --data-dir "$data" batch optimize > /dev/null
    rm -rf "$data/stream"
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" --data-dir "$data" query --http-addr "127.0.0.1:$port" > /dev/null 2> "$work/query.err" &
pid=$!
for _ in $(seq 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health")" = 200 ] && break
    sleep 0.1
done

echo "### Dashboard and analyst queries, hot ($(nproc) cores)"
echo
"$venv/bin/python" bench/queries.py "$data/lake" "http://127.0.0.1:$port" "$runs"

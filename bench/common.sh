# Set-up shared by the bench scripts (sourced; the caller has cd'ed to the checkout's root).
#   $bin           the shoplake binary: SHOPLAKE_BENCH_BIN (a dry run with a debug build), else
#                  target/release/shoplake, built first
#   $work          a temporary folder, removed on exit with the process in $pid, if any
#   bench_wrk      installs wrk from Debian when it is missing
#   bench_python   installs the Python tools (DuckDB, deltalake) into $venv
#   free_port      prints a free TCP port of 127.0.0.1
#   wait_ok URL    waits until URL answers 200 (a server's /health or /ready)
#   cpu_secs       user + system CPU seconds of the process in $pid so far
#   bench_lake DATA SESSIONS  makes the seeded, compacted lake in DATA (seed 1, with the simulated
#                  campaigns' spend and product affinity) unless it is there
#   bench_token DATA  prints an admin token of DATA's users (the user is made on first use)
#   bench_query DATA  starts `shoplake query` on DATA without its result cache (hot runs repeat a
#                  statement, and the comparison is of engines); sets $addr and $pid
bin="${SHOPLAKE_BENCH_BIN:-target/release/shoplake}"
[ -n "${SHOPLAKE_BENCH_BIN:-}" ] || cargo build --release --workspace --bins --quiet
export SHOPLAKE_LOG=warn

work="$(mktemp -d)"
pid=
cleanup() {
    [ -n "$pid" ] && kill -TERM "$pid" 2> /dev/null && wait "$pid" 2> /dev/null
    rm -rf "$work"
}
trap cleanup EXIT

bench_wrk() {
    command -v wrk > /dev/null || apt-get install -y wrk > /dev/null || {
        apt-get update > /dev/null && apt-get install -y wrk > /dev/null
    }
}

bench_python() {
    # shellcheck source=scripts/python-tools.sh
    source scripts/python-tools.sh
    python_tools_install
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_ok() {
    for _ in $(seq 300); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "$1")" = 200 ] && return 0
        sleep 0.1
    done
    echo "$1 did not answer 200 in 30 s" >&2
    return 1
}

cpu_secs() {
    awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$pid/stat"
}

bench_lake() {
    [ -d "$1/lake/events" ] && return 0
    "$bin" --data-dir "$1" emit --seed 1 --sessions "$2" --start 2026-03-01T00:00:00Z \
      --spend-csv "$work/spend.csv" > /dev/null
    "$bin" --data-dir "$1" stream --drain > /dev/null
    "$bin" --data-dir "$1" batch compact > /dev/null
    "$bin" --data-dir "$1" batch optimize > /dev/null
    # What the reports read beside the events: the campaigns' spend and product affinity.
    "$bin" --data-dir "$1" load spend "$work/spend.csv" > /dev/null
    "$bin" --data-dir "$1" batch affinity > /dev/null
    rm -rf "$1/stream"
}

bench_token() {
    "$bin" --data-dir "$1" users create bench --role admin > /dev/null 2>&1 || true
    "$bin" --data-dir "$1" tokens create --user bench 2> /dev/null | tr -d '[:space:]'
}

bench_query() {
    addr="127.0.0.1:$(free_port)"
    printf '[query]\ncache_size = 0\n' > "$work/no-cache.toml"
    "$bin" --data-dir "$1" --config "$work/no-cache.toml" query --http-addr "$addr" \
      --pg-addr 127.0.0.1:0 --flight-addr 127.0.0.1:0 > /dev/null 2> "$work/query.err" &
    pid=$!
    wait_ok "http://$addr/health"
}

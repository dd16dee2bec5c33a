#!/usr/bin/env bash
# Fraud scoring and recommendations (issue 4) on this machine:
#  1. the streaming stage's throughput on the same seeded stream with the live engines on and
#     off (`stream --drain`, wall and CPU seconds), since the engines must not cost the stage more
#     than 20%;
#  2. the three storefront endpoints under wrk over loopback, against a stage that holds the
#     state of that stream: requests/s and p50 / p99 / p99.9 latency at several connection counts.
# Usage: bench/live.sh [SESSIONS] [SECONDS_PER_LEVEL] [CONNECTIONS...]   (prints Markdown)
#   e.g. bench/live.sh 40000 10 4 16 64
set -euo pipefail
cd "$(dirname "$0")/.."
sessions="${1:-40000}"
secs="${2:-10}"
shift 2 || shift $# || true
levels=("$@")
[ ${#levels[@]} -gt 0 ] || levels=(4 16 64)

# shellcheck source=bench/common.sh
source bench/common.sh
bench_wrk

# One seeded stream, copied so that both runs read the same records.
"$bin" --data-dir "$work/on" emit --seed 7 --sessions "$sessions" --start 2026-03-01T00:00:00Z \
    --fraud-share 0.02 --stats-json > "$work/emit.json"
cp -r "$work/on" "$work/off"
cat > "$work/off.toml" << 'TOML'
[stage.fraud]
enabled = false
[stage.recommendations]
enabled = false
TOML
records=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["records"])' "$work/emit.json")

drain() { # data-dir [config] → "wall cpu"
    local cfg=()
    [ -n "${2:-}" ] && cfg=(--config "$2")
    /usr/bin/time -f "%e %U %S" -o "$work/time" "$bin" --data-dir "$1" "${cfg[@]}" stream --drain > /dev/null
    awk '{printf "%s %.2f\n", $1, $2 + $3}' "$work/time"
}
read -r off_wall off_cpu < <(drain "$work/off" "$work/off.toml")
read -r on_wall on_cpu < <(drain "$work/on")

echo "### Streaming stage with and without fraud scoring and recommendations ($(nproc) cores)"
echo
echo "\`stream --drain\` of one seeded stream ($records records, $sessions sessions, seed 7)."
echo
echo "| live engines | wall s | CPU s | records/s (wall) | records per CPU-second |"
echo "|---|---|---|---|---|"
for row in "off $off_wall $off_cpu" "on $on_wall $on_cpu"; do
    read -r name wall cpu <<< "$row"
    printf '| %s | %.2f | %.2f | %.0f | %.0f |\n' "$name" "$wall" "$cpu" \
        "$(echo "$records / $wall" | bc -l)" "$(echo "$records / $cpu" | bc -l)"
done
printf '\nWith the engines on, the stage reads %.0f%% fewer records per second and takes %.0f%% more CPU per record.\n\n' \
    "$(echo "(1 - $off_wall / $on_wall) * 100" | bc -l)" "$(echo "($on_cpu / $off_cpu - 1) * 100" | bc -l)"

# Known shoppers and products, from the lake.
"$bin" --data-dir "$work/on" batch compact > /dev/null
"$bin" --data-dir "$work/on" sql "select distinct coalesce(user_id, anonymous_id) as id from events where event_name = 'order_completed' limit 2000" --format csv | tail -n +2 > "$work/shoppers"
"$bin" --data-dir "$work/on" sql "select distinct products[1]['product_id'] as id from events where event_name = 'product_viewed' limit 2000" --format csv | tail -n +2 > "$work/products"

addr="127.0.0.1:$(free_port)"
export TOKEN
TOKEN=$(bench_token "$work/on")
"$bin" --data-dir "$work/on" stream --metrics-addr "$addr" > /dev/null 2> "$work/stream.err" &
pid=$!
wait_ok "http://$addr/health"

echo "### Storefront endpoints over loopback (wrk, 1 thread, $(nproc) cores shared with the server)"
echo
echo "Against the stage holding the state of the stream above ($(wc -l < "$work/shoppers") known shoppers, $(wc -l < "$work/products") products asked in turn)."
echo
echo "| endpoint | connections | requests/s | p50 ms | p99 ms | p99.9 ms | non-2xx | server CPU s per 100k requests |"
echo "|---|---|---|---|---|---|---|---|"
for mode in recs related score; do
    case $mode in
        recs) ids="$work/shoppers"; name='GET /v1/recommendations/{shopper}' ;;
        related) ids="$work/products"; name='GET /v1/products/{id}/related' ;;
        score) ids="$work/shoppers"; name='POST /v1/fraud/score' ;;
    esac
    for c in "${levels[@]}"; do
        before=$(cpu_secs)
        out=$(MODE=$mode IDS=$ids wrk -t1 -c"$c" -d"${secs}s" --timeout 5s -s bench/live.lua "http://$addr" 2>&1)
        after=$(cpu_secs)
        line=$(grep '^RESULT' <<< "$out") || { echo "wrk failed: $out" >&2; exit 1; }
        declare -A r=()
        for kv in ${line#RESULT }; do r[${kv%%=*}]=${kv#*=}; done
        printf '| %s | %d | %.0f | %.2f | %.2f | %.2f | %d | %.2f |\n' "$name" "$c" \
            "$(echo "${r[requests]} * 1000000 / ${r[duration_us]}" | bc -l)" \
            "$(echo "${r[p50_us]} / 1000" | bc -l)" "$(echo "${r[p99_us]} / 1000" | bc -l)" \
            "$(echo "${r[p999_us]} / 1000" | bc -l)" "$((r[non2xx] + r[errors]))" \
            "$(echo "($after - $before) * 100000 / (${r[requests]} + 1)" | bc -l)"
    done
done

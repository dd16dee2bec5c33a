#!/usr/bin/env bash
# Whole-pipeline figures of the embedded default, on this machine:
#   - events/s and CPU-seconds per million events for each step (emit → stream → compact),
#   - the size of the lake per million events,
#   - peak memory (max RSS) of `shoplake up` at a given rate.
# Usage: bench/pipeline.sh [SESSIONS] [UP_RATE] [UP_SECONDS]   (release build; prints Markdown)
set -euo pipefail
cd "$(dirname "$0")/.."
sessions="${1:-50000}"
up_rate="${2:-5000}"
up_secs="${3:-60}"
bin="${SHOPLAKE_BIN:-target/release/shoplake}"
[ -x "$bin" ] || cargo build --release --quiet
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export SHOPLAKE_LOG=warn

# GNU time's fields: wall seconds, user + system CPU seconds, max RSS (KiB).
timed() {
    local name="$1"; shift
    /usr/bin/time -f "%e %U %S %M" -o "$work/$name.time" "$@" > "$work/$name.out"
    read -r wall user sys rss < "$work/$name.time"
    echo "$name $wall $(echo "$user + $sys" | bc) $rss"
}

data="$work/data"
emit=$(timed emit "$bin" --data-dir "$data" emit --seed 1 --sessions "$sessions" --start 2026-03-01T00:00:00Z --stats-json)
records=$(tail -1 "$work/emit.out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["records"])')
valid=$(tail -1 "$work/emit.out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["valid_unique"])')
stream=$(timed stream "$bin" --data-dir "$data" stream --drain)
compact=$(timed compact "$bin" --data-dir "$data" batch compact)
optimize=$(timed optimize "$bin" --data-dir "$data" batch optimize)
lake_bytes=$(du -sb "$data/lake/events" | cut -f1)
lake_files=$(find "$data/lake/events" -name '*.parquet' | wc -l)
stream_log_bytes=$(du -sb "$data/stream" | cut -f1)

echo "### Pipeline, ${records} records (${valid} valid unique events), $(nproc) cores"
echo
echo "| step | wall s | CPU s | records/s (wall) | CPU s per million records | peak RSS MiB |"
echo "|---|---|---|---|---|---|"
total_wall=0; total_cpu=0
for line in "$emit" "$stream" "$compact" "$optimize"; do
    read -r name wall cpu rss <<< "$line"
    total_wall=$(echo "$total_wall + $wall" | bc); total_cpu=$(echo "$total_cpu + $cpu" | bc)
    printf '| %s | %.2f | %.2f | %.0f | %.2f | %.0f |\n' "$name" "$wall" "$cpu" \
        "$(echo "$records / $wall" | bc -l)" "$(echo "$cpu * 1000000 / $records" | bc -l)" "$(echo "$rss / 1024" | bc -l)"
done
printf '| **emit → queryable** | %.2f | %.2f | %.0f | %.2f | |\n' "$total_wall" "$total_cpu" \
    "$(echo "$records / $total_wall" | bc -l)" "$(echo "$total_cpu * 1000000 / $records" | bc -l)"
echo
printf 'Lake: events table %.1f MiB in %d files = %.1f MiB per million events; the embedded stream holds %.1f MiB.\n' \
    "$(echo "$lake_bytes / 1048576" | bc -l)" "$lake_files" "$(echo "$lake_bytes / 1048576 * 1000000 / $valid" | bc -l)" \
    "$(echo "$stream_log_bytes / 1048576" | bc -l)"

# shoplake up: everything in one process at a steady rate, sampled every 30 s: what the stage has
# read, what is queryable, resident and peak memory (VmRSS, VmHWM) and CPU, from /proc and the API.
updata="$work/up"
token=$(bench_token "$updata")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" --data-dir "$updata" up --rate "$up_rate" --history 0 --http-addr "127.0.0.1:$port" \
  --pg-addr 127.0.0.1:0 --flight-addr 127.0.0.1:0 > /dev/null 2> "$work/up.err" &
pid=$!
echo
echo "### \`shoplake up --rate $up_rate\`, sampled every 30 s"
echo
echo "| after | records read by the stage | events queryable | RSS MiB | peak RSS MiB | CPU s |"
echo "|---|---|---|---|---|---|"
for ((t = 30; t <= up_secs; t += 30)); do
    sleep 30
    read_n=$(curl -s -H "Authorization: Bearer $token" "127.0.0.1:$port/metrics" | awk '/^shoplake_stage_records_read_total/ {print $2}')
    n=$(curl -s -H "Authorization: Bearer $token" "127.0.0.1:$port/v1/sql" -d '{"sql":"select count(*) as n from events"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["rows"][0]["n"])')
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    cpu=$(awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$pid/stat")
    printf '| %d s | %s | %s | %.0f | %.0f | %.1f |\n' "$t" "$read_n" "$n" "$(echo "$rss / 1024" | bc -l)" "$(echo "$hwm / 1024" | bc -l)" "$cpu"
done
kill -TERM "$pid"
wait "$pid"

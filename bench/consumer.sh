#!/usr/bin/env bash
# The streaming stage reading Kinesis: how fast `shoplake stream --drain` reads, processes and
# stages a backlog from kinesalite (the emulator the tests use, installed and started by
# scripts/emulators.sh), against the same backlog on the embedded local stream (the stage's own
# cost: decode, validate, dedup, enrich, live state, Parquet). A seeded simulation is emitted once
# onto each; each run drains it into a new data folder and lake (so from TRIM_HORIZON, with fresh
# leases). Per run: events/s, CPU seconds of shoplake per million events, its peak RSS, and the
# CPU seconds kinesalite spent serving it.
# Usage: bench/consumer.sh [SESSIONS] [RUNS]   (prints Markdown)
#   SHOPLAKE_BENCH_AGGREGATE=1 puts the backlog as KPL aggregates (as a KPL producer would),
#   SHOPLAKE_BENCH_SHARDS sets the shards (default 4).
set -euo pipefail
cd "$(dirname "$0")/.."
sessions="${1:-20000}"
runs="${2:-3}"
shards="${SHOPLAKE_BENCH_SHARDS:-4}"

# shellcheck source=bench/common.sh
source bench/common.sh
# shellcheck source=scripts/emulators.sh
. scripts/emulators.sh
emulators_install
emulators_start
trap 'cleanup; emulators_stop' EXIT
kinesalite_pid="${EMULATOR_PIDS[0]}"
export AWS_ENDPOINT_URL_KINESIS="$SHOPLAKE_TEST_KINESALITE" AWS_ACCESS_KEY_ID=test \
    AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
node scripts/emulators.js create-stream "$AWS_ENDPOINT_URL_KINESIS" bench "$shards"
config="$work/pipeline.toml"
: > "$config"
if [ -n "${SHOPLAKE_BENCH_AGGREGATE:-}" ]; then
    printf '[stream.kinesis]\naggregate = true\n' >> "$config"
fi
export SHOPLAKE_CONFIG="$config"

emit() {
    "$bin" --data-dir "$work/emit-$1" --stream "$2" emit --seed 1 --sessions "$sessions" \
        --start 2026-03-01T00:00:00Z --stats-json | tail -n 1
}
stats=$(emit kinesis kinesis://bench)
emit local local > /dev/null
records=$(echo "$stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["records"])')

proc_cpu() {
    awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat"
}

# One drain; prints "events wall cpu rss_kib kinesalite_cpu".
drain() {
    local stream="$1" n="$2" data
    data="$work/drain-$n"
    if [ "$stream" = local ]; then
        # The local log lives in the data folder: drain a copy of the emitted one.
        mkdir -p "$data"
        cp -r "$work/emit-local/stream" "$data/"
    fi
    local k0 k1 start end out
    k0=$(proc_cpu "$kinesalite_pid")
    start=$(date +%s.%N)
    out=$(/usr/bin/time -f "TIME %U %S %M" "$bin" --data-dir "$data" --stream "$stream" \
        stream --drain 2>&1 > "$work/drain.json" | grep '^TIME')
    end=$(date +%s.%N)
    k1=$(proc_cpu "$kinesalite_pid")
    local records_read
    records_read=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["records"])' "$work/drain.json")
    [ "$records_read" = "$records" ] || {
        echo "drain read $records_read records, expected $records" >&2
        exit 1
    }
    rm -rf "$data"
    echo "$out" | awk -v s="$start" -v e="$end" -v k0="$k0" -v k1="$k1" \
        '{printf "%.3f %.2f %d %.2f\n", e - s, $2 + $3, $4, k1 - k0}'
}

if [ -n "${SHOPLAKE_BENCH_AGGREGATE:-}" ]; then
    how="KPL-aggregated records"
else
    how="one Kinesis record per event"
fi
echo "### Streaming stage reading Kinesis ($records records, $sessions sessions, $how, $shards shards)"
echo
echo "Command: \`${SHOPLAKE_BENCH_AGGREGATE:+SHOPLAKE_BENCH_AGGREGATE=1 }bench/consumer.sh $sessions $runs\` ($(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), release build)"
echo
echo "| stream | run | events/s | wall s | shoplake CPU s | CPU s / million | peak RSS MiB | kinesalite CPU s |"
echo "|---|---|---|---|---|---|---|---|"
n=0
for stream in local kinesis://bench; do
    for run in $(seq "$runs"); do
        n=$((n + 1))
        read -r wall cpu rss kcpu < <(drain "$stream" "$n")
        [ "$stream" = local ] && kcpu="—"
        awk -v st="$stream" -v r="$run" -v rec="$records" -v w="$wall" -v c="$cpu" -v m="$rss" -v k="$kcpu" \
            'BEGIN {printf "| %s | %d | %.0f | %.2f | %.2f | %.1f | %.0f | %s |\n", st, r, rec / w, w, c, c / rec * 1e6, m / 1024, k}'
    done
done

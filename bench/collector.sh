#!/usr/bin/env bash
# The HTTP collector's throughput on this machine: `shoplake collect` on the embedded (local redb)
# stream, driven by wrk with POST /v1/batch requests of 100 realistic e-commerce events each
# (bench/collector.lua: every request a new device with new message ids), at increasing
# concurrency. For each level: accepted events/s, p50 / p99 latency, and the CPU seconds the
# collector process used. At the end the stream is drained and must hold exactly the events
# answered 200.
# Usage: bench/collector.sh [SECONDS_PER_LEVEL] [CONNECTIONS...]   (prints Markdown)
#   e.g. bench/collector.sh 20 1 2 4 8 16 32
# SHOPLAKE_BENCH_STREAM=kinesis puts onto Kinesis instead: kinesalite (the emulator the tests use,
# installed and started by scripts/emulators.sh) with SHOPLAKE_BENCH_SHARDS shards (default 4);
# SHOPLAKE_BENCH_AGGREGATE=1 turns on KPL aggregation.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-20}"
shift || true
levels=("$@")
[ ${#levels[@]} -gt 0 ] || levels=(1 2 4 8 16 32 64)

# shellcheck source=bench/common.sh
source bench/common.sh
bench_wrk
data="$work/data"
stream=local
if [ "${SHOPLAKE_BENCH_STREAM:-local}" = kinesis ]; then
    # shellcheck source=scripts/emulators.sh
    . scripts/emulators.sh
    emulators_install
    emulators_start
    trap 'cleanup; emulators_stop' EXIT
    export AWS_ENDPOINT_URL="$SHOPLAKE_TEST_KINESALITE" AWS_ACCESS_KEY_ID=test \
        AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
    node scripts/emulators.js create-stream "$AWS_ENDPOINT_URL" bench "${SHOPLAKE_BENCH_SHARDS:-4}"
    stream="kinesis://bench"
fi
export SHOPLAKE_STREAM="$stream"
# The per-key rate limit (20,000 events/s by default) would cap the measurement: lift it.
cat > "$work/pipeline.toml" << 'EOF'
[collector]
rate_limit_events_per_sec = 1e9
rate_limit_burst = 1e9
EOF
if [ -n "${SHOPLAKE_BENCH_AGGREGATE:-}" ]; then
    # KPL aggregation: many events per Kinesis record, past the 1,000 records/s of a shard.
    printf '[stream.kinesis]\naggregate = true\n' >> "$work/pipeline.toml"
fi
export SHOPLAKE_CONFIG="$work/pipeline.toml"
WRITE_KEY="$("$bin" --data-dir "$data" keys create --source web 2> /dev/null | tr -d '[:space:]')"
export WRITE_KEY

addr="127.0.0.1:$(free_port)"
token=$(bench_token "$data")
"$bin" --data-dir "$data" collect --http-addr "$addr" > /dev/null 2> "$work/collect.err" &
pid=$!
wait_ok "http://$addr/ready"

if [ "$stream" = local ]; then
    where="local stream"
else
    where="Kinesis (kinesalite, ${SHOPLAKE_BENCH_SHARDS:-4} shards${SHOPLAKE_BENCH_AGGREGATE:+, KPL aggregation})"
fi
echo "### Collector: POST /v1/batch, 100 events per request, $where, $(nproc) cores"
echo
echo "| connections | requests/s | accepted events/s | p50 ms | p99 ms | p99.9 ms | non-200 | collector CPU s | collector CPU s per million events | wrk CPU s |"
echo "|---|---|---|---|---|---|---|---|---|---|"
total_ok=0
export WINDOW_SECS="$secs"
run=$(date +%s)
for c in "${levels[@]}"; do
    run=$((run + 1))
    before=$(cpu_secs)
    # Requests go out for $secs s; wrk runs 5 s longer so that every request sent is answered
    # (bench/collector.lua), and nothing is in flight when it stops.
    out=$(RUN_ID=$run /usr/bin/time -f "WRKCPU %U %S" wrk -t1 -c"$c" -d"$((secs + 5))s" --timeout 10s \
        -s bench/collector.lua "http://$addr" 2>&1)
    after=$(cpu_secs)
    line=$(grep '^RESULT' <<< "$out") || { echo "wrk failed: $out" >&2; exit 1; }
    read -r _ wrk_user wrk_sys < <(grep '^WRKCPU' <<< "$out")
    declare -A r=()
    for kv in ${line#RESULT }; do r[${kv%%=*}]=${kv#*=}; done
    total_ok=$((total_ok + r[ok]))
    cpu=$(echo "$after - $before" | bc)
    events=$((r[ok] * 100))
    printf '| %d | %.0f | %.0f | %.1f | %.1f | %.1f | %d | %.2f | %.2f | %.2f |\n' "$c" \
        "$(echo "${r[ok]} * 1000000 / ${r[window_us]}" | bc -l)" \
        "$(echo "$events * 1000000 / ${r[window_us]}" | bc -l)" \
        "$(echo "${r[p50_us]} / 1000" | bc -l)" "$(echo "${r[p99_us]} / 1000" | bc -l)" \
        "$(echo "${r[p999_us]} / 1000" | bc -l)" \
        "$((r[non2xx] + r[errors]))" "$cpu" \
        "$(echo "$cpu * 1000000 / ($events + 1)" | bc -l)" "$(echo "$wrk_user + $wrk_sys" | bc)"
done
rss_kib=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
accepted=$(curl -s -H "Authorization: Bearer $token" "http://$addr/metrics" | awk '/^shoplake_collector_events_accepted_total / {print $2}')
kill -TERM "$pid"
wait "$pid" || true
pid=

# The stream must hold exactly what was answered 200: every request carries new event ids and
# none was in flight when wrk stopped, so the records the stage reads back equal the 200s × 100
# (a lost or doubled write shows here).
drained=$("$bin" --data-dir "$data" stream --drain | tail -1)
records=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["records"])' "$drained")
echo
printf 'Answered 200: %d requests = %d events; the collector counted %s accepted; the stream holds %d records; collector peak RSS %.0f MiB.\n' \
    "$total_ok" "$((total_ok * 100))" "$accepted" "$records" "$(echo "$rss_kib / 1024" | bc -l)"
if [ "$records" -ne $((total_ok * 100)) ] || [ "$accepted" -ne "$records" ]; then
    echo "MISMATCH: the stream holds $records records; $((total_ok * 100)) events were answered 200" >&2
    exit 1
fi
"$bin" --data-dir "$data" batch compact > /dev/null
lake=$("$bin" --data-dir "$data" sql "select count(*) as n, count(distinct event_id) as ids from events" --format csv | tail -1)
bad=$("$bin" --data-dir "$data" sql "select count(*) as n from bad_rows" --format csv | tail -1)
echo "After staging and compaction: events, distinct event ids = $lake; bad rows = $bad."
if [ "$lake" != "$records,$records" ] || [ "$bad" != 0 ]; then
    echo "MISMATCH: the lake holds $lake (events, distinct ids) and $bad bad rows for $records records" >&2
    exit 1
fi

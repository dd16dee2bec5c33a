#!/usr/bin/env bash
# What exactly once across workers costs (issue 20, item 1; batch/src/keys.rs): compaction's key
# index, measured in the two rounds that matter.
#   1. A new lake: emit SESSIONS simulated sessions, drain, compact. Every round looks its rows up
#      in the index, which first indexes the files earlier rounds wrote (reading their key column).
#   2. A worker that lost its disk: the stage's state is deleted and the whole stream staged
#      again, every event a second time; compaction finds every one in the index, confirms it in
#      its file, and writes nothing.
# Prints, per round, compaction's CPU, the key index lookups' time, the lake files whose key
# column was read, and per million events; plus the index's bytes on disk.
# Usage: bench/keys.sh [SESSIONS]   (release build; SHOPLAKE_BENCH_BIN for a dry run)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/common.sh
source bench/common.sh
sessions="${1:-50000}"
data="$work/data"

# GNU time: user + system CPU seconds and max RSS (KiB) of a command; its stdout to $work/out.
timed() {
    /usr/bin/time -f "%U %S %M" -o "$work/time" "$@" > "$work/out"
    read -r user sys rss < "$work/time"
    echo "$(echo "$user + $sys" | bc) $rss"
}
field() { tail -1 "$work/out" | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

"$bin" --data-dir "$data" emit --seed 7 --sessions "$sessions" --start 2026-03-01T00:00:00Z --stats-json > "$work/emit"
"$bin" --data-dir "$data" stream --drain > /dev/null

echo "### Key index, ${sessions} sessions, $(nproc) cores"
echo
echo "| round | events read | written | already in lake | compaction CPU s | key index s | lake files read | key index s per million events read | peak RSS MiB |"
echo "|---|---|---|---|---|---|---|---|---|"
row() {
    read -r cpu rss <<< "$(timed "$bin" --data-dir "$data" batch compact)"
    local read written already secs files
    read=$(field events_read); written=$(field events_written); already=$(field already_in_lake)
    secs=$(field key_index_seconds); files=$(field lake_files_read)
    printf '| %s | %d | %d | %d | %.2f | %.2f | %d | %.2f | %.0f |\n' "$1" "$read" "$written" "$already" \
        "$cpu" "$secs" "$files" "$(echo "$secs * 1000000 / $read" | bc -l)" "$(echo "$rss / 1024" | bc -l)"
}
row "new lake"
rm -f "$data/state/stage.redb"
"$bin" --data-dir "$data" stream --drain > /dev/null
row "every event again (lost disk)"
echo
printf 'Index on disk: %.1f MiB for the events table'"'"'s %.1f MiB.\n' \
    "$(echo "$(du -sb "$data/lake/_index/events" | cut -f1) / 1048576" | bc -l)" \
    "$(echo "$(du -sb "$data/lake/events" | cut -f1) / 1048576" | bc -l)"

#!/usr/bin/env bash
# Where the CPU goes in each step of the pipeline: every step of bench/run.sh's pipeline (seed 1,
# the same simulation) run once under `perf record`, then its samples summed by the crate (or
# library) of the function they landed in, and its hottest functions. Flat profiles: the release
# build keeps line tables but no frame pointers, so samples are charged to the function that ran.
# Usage: bench/profile.sh [SESSIONS] [STEP ...]   (default 50000 sessions; steps: emit stream
#        stage-alone compact ndjson optimize; needs perf, from linux-perf on Debian)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/common.sh
source bench/common.sh
sessions="${1:-50000}"
shift || true
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(emit stream stage-alone compact ndjson optimize)
command -v perf > /dev/null || apt-get install -y linux-perf > /dev/null
bin="$(realpath "$bin")"
printf '[stage.fraud]\nenabled = false\n[stage.recommendations]\nenabled = false\n' \
    > "$work/live-off.toml"

# profile NAME CMD...: records CMD, prints the share of samples per crate and the top functions.
profile() {
    local name=$1
    shift
    perf record -q -F 499 -o "$work/$name.perf" -- "$@" > /dev/null 2>&1
    echo "### $name: $*"
    perf report -q -i "$work/$name.perf" --no-children --sort symbol --stdio 2> /dev/null |
        awk 'NF >= 3 && $1 ~ /%$/ {
            pct = $1; sub(/%/, "", pct); kernel = ($2 == "[k]"); $1 = ""; $2 = "";
            sym = $0; sub(/^ +/, "", sym); sub(/( +-)+ *$/, "", sym);
            if (kernel) crate = "kernel (page faults, I/O, scheduling)";
            else if (sym ~ /^(ZSTD_|HUF_|FSE_)/) crate = "zstd (C)";
            else if (sym ~ /^_?rjem_|^je_/) crate = "jemalloc";
            else if (sym ~ /^__(mem|str)/) crate = "libc mem*/str*";
            else if (match(sym, /^<?&?(mut )?[a-z_][a-z0-9_]*::/)) {
                crate = substr(sym, RSTART, RLENGTH); gsub(/[<&]|mut |::/, "", crate)
            } else crate = "other";
            by[crate] += pct; n++;
            if (n <= 15) top[n] = sprintf("  %5.1f%%  %s", pct, substr(sym, 1, 150));
        }
        END {
            print "by crate:";
            for (c in by) if (by[c] >= 1) printf "  %5.1f%%  %s\n", by[c], c | "sort -rn";
            close("sort -rn");
            print "top functions:";
            for (i = 1; i <= n && i <= 15; i++) print top[i];
        }'
    echo
}

data="$work/data"
"$bin" --data-dir "$data" emit --seed 1 --sessions "$sessions" --start 2026-03-01T00:00:00Z \
    > /dev/null
cp -r "$data" "$work/pristine"
for step in "${steps[@]}"; do
    case "$step" in
    emit)
        rm -rf "$work/emit"
        profile emit "$bin" --data-dir "$work/emit" emit --seed 1 --sessions "$sessions" \
            --start 2026-03-01T00:00:00Z
        ;;
    stream)
        rm -rf "$data" && cp -r "$work/pristine" "$data"
        profile stream "$bin" --data-dir "$data" stream --drain
        ;;
    stage-alone)
        rm -rf "$work/alone" && cp -r "$work/pristine" "$work/alone"
        profile stage-alone "$bin" --data-dir "$work/alone" --config "$work/live-off.toml" \
            stream --drain
        ;;
    compact)
        [ -d "$data/lake/_staging" ] || "$bin" --data-dir "$data" stream --drain > /dev/null
        profile compact "$bin" --data-dir "$data" batch compact
        ;;
    ndjson)
        [ -d "$data/lake/events" ] || {
            "$bin" --data-dir "$data" stream --drain > /dev/null
            "$bin" --data-dir "$data" batch compact > /dev/null
        }
        staged="$work/ndjson/lake/_staging/events/2026/03/01/00"
        mkdir -p "$staged"
        "$bin" --data-dir "$data" sql --format ndjson "select * from events" |
            split -C 64M - "$staged/events-"
        profile ndjson "$bin" --data-dir "$work/ndjson" batch compact
        ;;
    optimize)
        [ -d "$data/lake/events" ] || {
            "$bin" --data-dir "$data" stream --drain > /dev/null
            "$bin" --data-dir "$data" batch compact > /dev/null
        }
        profile optimize "$bin" --data-dir "$data" batch optimize
        ;;
    *)
        echo "unknown step $step" >&2
        exit 2
        ;;
    esac
done

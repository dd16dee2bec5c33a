#!/usr/bin/env bash
# The whole pipeline, A/B on one machine: emit → stream --drain → batch compact → batch optimize
# (seed 1, 50,000 sessions = 913,089 records), the binaries in turn, RUNS rounds; CPU (user +
# system) of each step per million records, and their total.
# Usage: RUNS=3 bench/ab/pipeline.sh BIN [BIN ...]
set -euo pipefail
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for run in $(seq "${RUNS:-3}"); do
    for bin in "$@"; do
        rm -rf "$work/d"
        line="$bin run $run:"
        total=0
        for step in "emit --seed 1 --sessions 50000 --start 2026-03-01T00:00:00Z" "stream --drain" \
            "batch compact" "batch optimize"; do
            # shellcheck disable=SC2086 # the step's words are separate arguments
            t=$({ /usr/bin/time -f "%U %S" env SHOPLAKE_LOG=warn "$bin" --data-dir "$work/d" $step \
                > /dev/null; } 2>&1 | tail -1)
            cpu=$(awk '{printf "%.2f", ($1 + $2) / 0.913089}' <<< "$t")
            total=$(awk -v a="$total" -v b="$cpu" 'BEGIN {printf "%.2f", a + b}')
            line="$line ${step%% --*} $cpu"
        done
        echo "$line; total $total CPU-s per million records"
    done
done

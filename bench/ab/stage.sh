#!/usr/bin/env bash
# The stage alone, A/B on one machine: each binary emits the same seeded stream (seed 1, 50,000
# sessions) into its own folder, then drains a fresh copy of it with the live engines off, the
# binaries in turn, RUNS rounds. Prints events per CPU-second of the decoding thread and records
# per CPU-second of the whole process, per run.
# Usage: RUNS=5 bench/ab/stage.sh BIN [BIN ...]   (release builds of the commits to compare)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
printf '[stage.fraud]\nenabled = false\n[stage.recommendations]\nenabled = false\n' > "$work/off.toml"
bins=("$@")
for i in "${!bins[@]}"; do
    SHOPLAKE_LOG=warn "${bins[$i]}" --data-dir "$work/src-$i" emit --seed 1 --sessions 50000 \
        --start 2026-03-01T00:00:00Z > /dev/null
done
for run in $(seq "${RUNS:-5}"); do
    for i in "${!bins[@]}"; do
        rm -rf "$work/run"
        cp -r "$work/src-$i" "$work/run"
        out=$({ /usr/bin/time -f "TIME %U %S" env SHOPLAKE_LOG=warn "${bins[$i]}" --data-dir "$work/run" \
            --config "$work/off.toml" stream --drain; } 2>&1)
        python3 "$here/fmt.py" "$(grep '^{' <<< "$out" | tail -1)" "$(grep '^TIME' <<< "$out")" \
            "${bins[$i]}" "$run"
    done
done

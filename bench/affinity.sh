#!/usr/bin/env bash
# The product_affinity job (DataFusion SQL) over a seeded lake: wall and CPU seconds, peak memory,
# and where the time goes (reading the lake down to each product's first view per session and first
# line per order; pairing, scoring and ranking; writing the Delta table).
# Prints Markdown.
# Usage: bench/affinity.sh [SESSIONS] [RUNS] [DATA_DIR]
#   SESSIONS  simulated sessions of the dataset (530,000 ≈ 10 million events); default 530000
#   RUNS      runs of the job; default 5
#   DATA_DIR  reuse a lake made by an earlier run (made there when missing); default: a temp dir
set -euo pipefail
cd "$(dirname "$0")/.."
sessions="${1:-530000}"
runs="${2:-5}"
data="${3:-}"

# shellcheck source=bench/common.sh
source bench/common.sh
[ -n "$data" ] || data="$work/data"
bench_lake "$data" "$sessions"
events="$("$bin" --data-dir "$data" sql "select count(*) as n from events" --format csv | tail -1)"

for i in $(seq "$runs"); do
    # GNU time: wall, user, system seconds and peak resident KiB, on stderr's last line.
    /usr/bin/time -f "%e %U %S %M" "$bin" --data-dir "$data" batch affinity \
        > "$work/report.$i.json" 2> "$work/time.$i"
    tail -1 "$work/time.$i" > "$work/figures.$i"
done

python3 - "$work" "$runs" "$events" "$(nproc)" << 'PY'
import json, statistics, sys
work, runs, events, cores = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rows = []
for i in range(1, runs + 1):
    report = json.load(open(f"{work}/report.{i}.json"))
    wall, user, system, kib = open(f"{work}/figures.{i}").read().split()
    rows.append((float(wall), float(user) + float(system), int(kib) / 1024, report))
def spread(values):
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"
r = rows[-1][3]
print(f"### product_affinity job ({cores} cores, {runs} runs, median (min–max))")
print()
print(f"{events:,} events in the lake: {r['views']:,} product views in {r['sessions']:,} sessions, "
      f"{r['order_lines']:,} order lines in {r['orders']:,} orders → {r['rows']:,} rows for "
      f"{r['products']:,} products.")
print()
print("| wall s | CPU s | peak RSS MiB | read s | pair and score s | write s (Delta) | M events per CPU-s |")
print("|---|---|---|---|---|---|---|")
walls = [x[0] for x in rows]; cpus = [x[1] for x in rows]; mems = [x[2] for x in rows]
reads = [x[3]["read_secs"] for x in rows]; comps = [x[3]["compute_secs"] for x in rows]
writes = [x[3]["write_secs"] for x in rows]
rate = events / 1e6 / statistics.median(cpus)
print(f"| {spread(walls)} | {spread(cpus)} | {spread(mems)} | {spread(reads)} | {spread(comps)} | {spread(writes)} | {rate:.2f} |")
PY

#!/usr/bin/env bash
# What an erasure request costs on the seeded lake (issue 21): `shoplake erase` of the user with
# the most events, then the request's VACUUM (`batch vacuum` with `erasure_grace = "0s"`), then an
# anonymous shopper erased with `--vacuum-after 0s`, then a plain VACUUM of every table. Prints
# each command's answer with its wall and CPU time and peak memory, the lake's size before and
# after, and how many files of the data folder still hold the first user's id (0 expected).
# Usage: bench/erase.sh [SESSIONS] [DATA_DIR]
#   SESSIONS  simulated sessions of the dataset (530,000 ≈ 10 million events); default 530000
#   DATA_DIR  reuse a lake made by an earlier run (bench/queries.sh's, made there when missing);
#             it is copied, never changed; default: a temp dir
set -euo pipefail
cd "$(dirname "$0")/.."
sessions="${1:-530000}"
data="${2:-}"

# shellcheck source=bench/common.sh
source bench/common.sh
[ -n "$data" ] || data="$work/data"
bench_lake "$data" "$sessions"
run="$work/erase"
cp -a "$data" "$run"
timed() { /usr/bin/time -f "wall %e s, user %U s, sys %S s, max RSS %M KB" "$bin" --data-dir "$run" "$@"; }
sql() { "$bin" --data-dir "$run" sql "$1" --format csv | tail -1; }
printf '[retention]\nerasure_grace = "0s"\n' > "$work/grace0.toml"

echo "lake bytes before: $(du -sb "$run/lake" | cut -f1)"
user=$(sql "select user_id from events where user_id is not null group by 1 order by count(*) desc, 1 limit 1")
echo "--- erase --user (the user with the most events: $(sql "select count(*) from events where user_id = '$user'"))"
timed erase --user "$user"
echo "--- its VACUUM (batch vacuum, erasure_grace = 0s)"
timed --config "$work/grace0.toml" batch vacuum
echo "lake bytes after: $(du -sb "$run/lake" | cut -f1)"
anon=$(sql "select anonymous_id from events where user_id is null group by 1 order by count(*) desc, 1 limit 1")
echo "--- erase --anonymous-id (the anonymous shopper with the most events), --vacuum-after 0s"
timed --config "$work/grace0.toml" erase --anonymous-id "$anon" --vacuum-after 0s
echo "--- a plain VACUUM of every table (7-day grace)"
timed batch vacuum
echo "files of the data folder holding the first user's id: $(grep -rl --binary-files=text "$user" "$run" | grep -vc /simulator/ || true)"

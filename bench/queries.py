"""Dashboard and analyst queries, hot, on shoplake and on DuckDB over the same Parquet files.

Run by bench/queries.sh; prints Markdown. shoplake answers over HTTP (`POST /v1/sql` of a running
`shoplake query`, the way a dashboard asks it); DuckDB runs in this process over the active
Parquet files of the same Delta tables (listed by the `deltalake` package), with the dashboard
views created from the same `sql/views/*.sql` (DuckDB spells the ordered aggregate `first_value(x
ORDER BY y)` as `first(x ORDER BY y)`; that is the only change). Each query runs once to warm up,
then RUNS times on each engine; the answers must have the same number of rows.

usage: queries.py LAKE_DIR SHOPLAKE_URL RUNS
"""

import glob
import json
import math
import os
import re
import statistics
import sys
import time
import urllib.request

import deltalake
import duckdb

lake, url, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)

con = duckdb.connect()
threads = con.execute("select current_setting('threads')").fetchall()[0][0]
for table in ["events", "orders", "identities"]:
    files = deltalake.DeltaTable(os.path.join(lake, table)).file_uris()
    con.execute(
        f"create view {table} as select * from read_parquet({files!r}, hive_partitioning = true)"
    )
for view in ["sessions", "funnel_steps", "daily_campaign_performance"]:
    text = open(os.path.join(root, "sql", "views", f"{view}.sql")).read()
    con.execute(re.sub(r"\bfirst_value\(", "first(", text))

# Parameters from the data: the busiest hour of product views, its day, and a shopper with
# several visits.
(hour_start,) = con.execute(
    "select epoch(date_trunc('hour', event_time)) as h from events "
    "where event_name = 'product_viewed' group by 1 order by count(*) desc, 1 limit 1"
).fetchall()[0]
shopper = con.execute(
    "select anonymous_id from events where anonymous_id is not null group by 1 "
    "order by count(distinct session_id) >= 2 desc, hash(anonymous_id) limit 1"
).fetchall()[0][0]
utc = lambda t, f="%Y-%m-%dT%H:%M:%SZ": time.strftime(f, time.gmtime(t))
params = {
    "hour_start": utc(hour_start),
    "hour_end": utc(hour_start + 3600),
    "day": utc(hour_start, "%Y-%m-%d"),
    "shopper": shopper,
}
events = con.execute("select count(*) from events").fetchall()[0][0]


def shoplake(sql):
    req = urllib.request.Request(
        f"{url}/v1/sql",
        data=json.dumps({"sql": sql}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=600) as resp:
        answer = json.load(resp)
    return answer["row_count"]


def duck(sql):
    return con.sql(sql).to_arrow_table().num_rows


def timed(run, sql):
    rows = run(sql)  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        n = run(sql)
        times.append((time.perf_counter() - start) * 1000)
        assert n == rows
    return rows, times


def pct(times, p):
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)]


print(
    f"{events:,} events; {runs} hot runs per query after a warm-up; DuckDB {duckdb.__version__} "
    f"({threads} threads) in-process, shoplake over HTTP. Parameters: hour {params['hour_start']}, "
    f"day {params['day']}, shopper {params['shopper']}."
)
print()
print("| query | rows | shoplake p50 ms | shoplake p95 ms | DuckDB p50 ms | DuckDB p95 ms | shoplake / DuckDB (p50) |")
print("|---|---|---|---|---|---|---|")
ratios, ours, theirs = [], [], []
for path in sorted(glob.glob(os.path.join(here, "queries", "*.sql"))):
    name = os.path.basename(path)[:-4]
    sql = "\n".join(l for l in open(path).read().splitlines() if not l.startswith("--"))
    sql = sql.format(**params)
    rows, ours_t = timed(shoplake, sql)
    duck_rows, theirs_t = timed(duck, sql)
    if rows != duck_rows:
        print(f"MISMATCH {name}: shoplake {rows} rows, DuckDB {duck_rows}", file=sys.stderr)
        sys.exit(1)
    a, b = statistics.median(ours_t), statistics.median(theirs_t)
    ratios.append(a / b)
    ours.append(a)
    theirs.append(b)
    print(
        f"| {name} | {rows} | {a:.1f} | {pct(ours_t, 95):.1f} | {b:.1f} | {pct(theirs_t, 95):.1f} | {a / b:.2f} |"
    )
geo = lambda xs: math.exp(sum(math.log(x) for x in xs) / len(xs))
print(
    f"| **geometric mean** | | {geo(ours):.1f} | | {geo(theirs):.1f} | | **{geo(ratios):.2f}** |"
)

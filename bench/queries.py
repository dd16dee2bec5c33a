"""Dashboard and analyst queries, hot, on shoplake and on DuckDB over the same Parquet files.

Run by bench/queries.sh; prints Markdown. shoplake answers over HTTP (`POST /v1/sql` of a running
`shoplake query`, the way a dashboard asks it); DuckDB runs in this process over the active
Parquet files of the same Delta tables (every table of the lake, listed by the `deltalake`
package), with the dashboard views created from the same `sql/views/*.sql` (DuckDB spells the
ordered aggregates `first_value(x ORDER BY y)` / `last_value(…)` as `first(…)` / `last(…)`; that is
the only change). Each query runs once to warm up, then RUNS times on each engine; the answers
must have the same number of rows.

usage: queries.py LAKE_DIR SHOPLAKE_URL RUNS   (bench/run.py imports its functions)
"""

import glob
import json
import math
import os
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

import deltalake
import duckdb
import pyarrow
import pyarrow.ipc

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


VIEWS = ["sessions", "funnel_steps", "daily_campaign_performance"]


def duckdb_over(lake, url=None):
    """DuckDB with every Delta table of LAKE (its active files) and the views of sql/views/.

    A table the lake does not hold yet (no spend loaded, say) is registered empty, with the
    schema the server at URL gives it (shoplake registers such a table empty too)."""
    con = duckdb.connect()
    # `arrow_cast(x, 'Utf8')`: a type DataFusion needs for its memory accounting (the attribution
    # report's touches); DuckDB's strings are one type, so the cast is the value itself.
    con.execute("create or replace macro arrow_cast(x, t) as x")
    present = set()
    for table in sorted(os.listdir(lake)):
        path = os.path.join(lake, table)
        if table.startswith("_") or not os.path.isdir(os.path.join(path, "_delta_log")):
            continue
        dt = deltalake.DeltaTable(path)
        files = dt.file_uris()
        if files:
            partitioned = "true" if dt.metadata().partition_columns else "false"
            con.execute(f"create view {table} as select * from "
                        f"read_parquet({files!r}, hive_partitioning = {partitioned}, union_by_name = true)")
        else:
            empty(con, table, pyarrow.schema(dt.schema().to_arrow()).empty_table())
        present.add(table)
    if url:
        tables = arrow_of(url, "SELECT table_name FROM information_schema.tables "
                               "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'")
        for table in tables.column(0).to_pylist():
            if table not in present:
                empty(con, table, arrow_of(url, f"SELECT * FROM {table} LIMIT 0"))
    for view in VIEWS:
        con.execute(duck_sql(open(os.path.join(ROOT, "sql", "views", f"{view}.sql")).read()))
    return con


def empty(con, table, arrow):
    """TABLE as a view over an empty Arrow table (DuckDB cannot read an empty file list)."""
    con.register(f"{table}_empty", arrow)
    con.execute(f"create view {table} as select * from {table}_empty")


def arrow_of(url, sql):
    """A statement's answer from the server at URL, as a pyarrow Table."""
    req = urllib.request.Request(f"{url}/v1/sql?format=arrow", data=sql.encode(),
                                 headers={"content-type": "text/plain", **auth(url)})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return pyarrow.ipc.open_stream(resp.read()).read_all()


def duck_sql(text):
    text = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("--"))
    return re.sub(r"\b(first|last)_value\((?=[^()]*\bORDER BY\b)", r"\1(", text)


def parameters(con):
    """The busiest hour of product views, its day, and a shopper with several visits."""
    (hour_start,) = con.execute(
        "select epoch(date_trunc('hour', event_time)) as h from events "
        "where event_name = 'product_viewed' group by 1 order by count(*) desc, 1 limit 1"
    ).fetchall()[0]
    shopper = con.execute(
        "select anonymous_id from events where anonymous_id is not null group by 1 "
        "order by count(distinct session_id) >= 2 desc, hash(anonymous_id) limit 1"
    ).fetchall()[0][0]
    utc = lambda t, f="%Y-%m-%dT%H:%M:%SZ": time.strftime(f, time.gmtime(t))
    return {
        "hour_start": utc(hour_start),
        "hour_end": utc(hour_start + 3600),
        "day": utc(hour_start, "%Y-%m-%d"),
        "shopper": shopper,
    }


# Tokens of the servers started, by URL (`login`).
TOKENS = {}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def login(bin, data, url, env=None):
    """Makes an admin of DATA's users (once) and a token that `ask` sends to URL."""
    subprocess.run([bin, "--data-dir", data, "users", "create", "bench", "--role", "admin"],
                   env=env, capture_output=True)
    out = subprocess.run([bin, "--data-dir", data, "tokens", "create", "--user", "bench"],
                         env=env, capture_output=True, text=True, check=True)
    TOKENS[url] = out.stdout.strip()


def auth(url):
    """The Authorization header of URL's token (`login`), if any."""
    return {"authorization": f"Bearer {TOKENS[url]}"} if url in TOKENS else {}


def ask(url, sql):
    """POST /v1/sql of a running `shoplake query`; its JSON answer."""
    headers = {"content-type": "application/json", **auth(url)}
    req = urllib.request.Request(
        f"{url}/v1/sql",
        data=json.dumps({"sql": sql}).encode(),
        headers=headers,
    )
    with urllib.request.urlopen(req, timeout=600) as resp:
        return json.load(resp)


def timed(run, sql, runs):
    """One warm-up, then RUNS timed runs (ms); every run must answer the same number of rows."""
    rows = run(sql)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        n = run(sql)
        times.append((time.perf_counter() - start) * 1000)
        assert n == rows, f"{n} rows, then {rows}"
    return rows, times


def pct(times, p):
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)]


def geo(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def measure(con, url, runs, params):
    """Each query of bench/queries/ on both engines: a dict per query (rows, times in ms)."""
    results = []
    for path in sorted(glob.glob(os.path.join(HERE, "queries", "*.sql"))):
        name = os.path.basename(path)[:-4]
        sql = "\n".join(l for l in open(path).read().splitlines() if not l.startswith("--"))
        sql = sql.format(**params)
        rows, ours = timed(lambda q: ask(url, q)["row_count"], sql, runs)
        duck_rows, theirs = timed(lambda q: con.sql(q).to_arrow_table().num_rows, sql, runs)
        if rows != duck_rows:
            raise SystemExit(f"MISMATCH {name}: shoplake {rows} rows, DuckDB {duck_rows}")
        results.append({"name": name, "rows": rows, "shoplake": ours, "duckdb": theirs})
    return results


def main():
    lake, url, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if os.environ.get("SHOPLAKE_TOKEN"):
        TOKENS[url] = os.environ["SHOPLAKE_TOKEN"]
    con = duckdb_over(lake)
    threads = con.execute("select current_setting('threads')").fetchall()[0][0]
    params = parameters(con)
    events = con.execute("select count(*) from events").fetchall()[0][0]
    print(
        f"{events:,} events; {runs} hot runs per query after a warm-up; DuckDB {duckdb.__version__} "
        f"({threads} threads) in-process, shoplake over HTTP. Parameters: hour {params['hour_start']}, "
        f"day {params['day']}, shopper {params['shopper']}."
    )
    print()
    print("| query | rows | shoplake p50 ms | shoplake p95 ms | DuckDB p50 ms | DuckDB p95 ms | shoplake / DuckDB (p50) |")
    print("|---|---|---|---|---|---|---|")
    results = measure(con, url, runs, params)
    for r in results:
        a, b = statistics.median(r["shoplake"]), statistics.median(r["duckdb"])
        print(
            f"| {r['name']} | {r['rows']} | {a:.1f} | {pct(r['shoplake'], 95):.1f} | {b:.1f} "
            f"| {pct(r['duckdb'], 95):.1f} | {a / b:.2f} |"
        )
    ours = [statistics.median(r["shoplake"]) for r in results]
    theirs = [statistics.median(r["duckdb"]) for r in results]
    ratios = [a / b for a, b in zip(ours, theirs)]
    print(f"| **geometric mean** | | {geo(ours):.1f} | | {geo(theirs):.1f} | | **{geo(ratios):.2f}** |")


if __name__ == "__main__":
    main()

"""The analysts' query service (issue 24): how fast a large answer leaves it over each protocol,
and what heavy queries cost ingestion in `shoplake up`. Prints Markdown; bench/service.sh runs it.

1. A 1M-row answer (seven columns of `events`: ids, a timestamp, strings, a decimal) fetched whole
   by the client a BI tool or notebook would use: psycopg 3 over the Postgres wire (a server-side
   cursor, rows as Python tuples), ADBC's Flight SQL driver (to a pyarrow Table), HTTP Arrow IPC
   (`?format=arrow`, read into a pyarrow Table) and HTTP JSON (parsed by `json`), beside DuckDB
   producing the same rows to Arrow in this process over the same Parquet files. Rows per second
   of wall time, the median of RUNS runs after one warm-up; each client checks the row count.
2. Ingestion in `shoplake up` on a copy of the lake (so heavy queries have 10M events to chew),
   its stage reading a backlog emitted into its stream beforehand (so it reads as fast as it can),
   measured as the stage's records read per second over a window. Windows alone and windows with
   four heavy queries kept running over HTTP by four client threads alternate, and each loaded
   window is compared with the mean of the windows alone on either side (the stage's rate alone
   drifts as the lake and its live state grow).

usage: service.py --bin SHOPLAKE --lake-data DIR --work DIR [--runs N] [--window SECONDS]
                  [--loaded-windows N] [--backlog-sessions N] [--only protocols|ingestion]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import adbc_driver_flightsql.dbapi as flight_sql
import psycopg
import pyarrow.ipc

import queries

ROWS = 1_000_000
ANSWER = ("SELECT event_id, event_time, event_name, anonymous_id, session_id, country, revenue "
          f"FROM events LIMIT {ROWS}")
# Each of these reads every row of events and aggregates on a string key: seconds each on 10M events.
HEAVY = [
    "SELECT anonymous_id, count(*) AS n, sum(revenue) AS revenue FROM events GROUP BY 1 ORDER BY 2 DESC LIMIT 10",
    "SELECT session_id, count(DISTINCT event_name) AS kinds FROM events GROUP BY 1 ORDER BY 2 DESC LIMIT 10",
    "SELECT page_url, count(DISTINCT anonymous_id) AS shoppers FROM events GROUP BY 1 ORDER BY 2 DESC LIMIT 10",
    "SELECT ip, user_agent, count(*) AS n FROM events GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 10",
]
PASSWORD = "bench-password-1"


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


class Service:
    """`shoplake query` (or `up`) on DATA with every listener on a free port, and an analyst."""

    def __init__(self, bin, data, env, command, *flags):
        self.http_port, self.pg_port, self.flight_port = (queries.free_port() for _ in range(3))
        subprocess.run([bin, "--data-dir", data, "users", "create", "bench", "--role", "admin"],
                       env=env, capture_output=True)  # fails when the user is there: fine
        run([bin, "--data-dir", data, "users", "password", "bench"], input=PASSWORD + "\n", env=env)
        self.token = run([bin, "--data-dir", data, "tokens", "create", "--user", "bench"], env=env).stdout.strip()
        self.proc = subprocess.Popen(
            [bin, "--data-dir", data, *command, "--http-addr", f"127.0.0.1:{self.http_port}",
             "--pg-addr", f"127.0.0.1:{self.pg_port}", "--flight-addr", f"127.0.0.1:{self.flight_port}", *flags],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.http_port}"
        queries.TOKENS[self.url] = self.token
        for _ in range(1200):
            try:
                with urllib.request.urlopen(f"{self.url}/ready", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise SystemExit(f"{' '.join(command)} did not become ready on {self.url}")

    def metric(self, name):
        req = urllib.request.Request(f"{self.url}/metrics", headers=queries.auth(self.url))
        with urllib.request.urlopen(req, timeout=30) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    return float(line.rsplit(" ", 1)[1])
        raise SystemExit(f"no metric {name}")

    def close(self):
        self.proc.terminate()
        self.proc.wait()


def http_body(url, sql, fmt):
    req = urllib.request.Request(f"{url}/v1/sql?format={fmt}", data=sql.encode(),
                                 headers={"content-type": "text/plain", **queries.auth(url)})
    return urllib.request.urlopen(req, timeout=900)


def fetch_clients(svc, con):
    """name → (function answering the row count of ANSWER)."""

    def pg():
        with psycopg.connect(host="127.0.0.1", port=svc.pg_port, user="bench", password=PASSWORD,
                             dbname="shoplake", sslmode="disable") as conn:
            with conn.cursor(name="answer") as cur:
                cur.itersize = 10_000
                cur.execute(ANSWER)
                return sum(1 for _ in cur)

    def flight():
        with flight_sql.connect(f"grpc://127.0.0.1:{svc.flight_port}",
                                db_kwargs={"username": "bench", "password": PASSWORD}) as conn:
            with conn.cursor() as cur:
                cur.execute(ANSWER)
                return cur.fetch_arrow_table().num_rows

    def arrow():
        with http_body(svc.url, ANSWER, "arrow") as resp:
            return pyarrow.ipc.open_stream(resp).read_all().num_rows

    def js():
        with http_body(svc.url, ANSWER, "json") as resp:
            return len(json.load(resp)["rows"])

    def duck():
        return con.sql(ANSWER).to_arrow_table().num_rows

    return [
        ("Postgres wire: psycopg 3, server-side cursor", pg),
        ("Flight SQL: ADBC driver → pyarrow Table", flight),
        ("HTTP Arrow IPC stream → pyarrow Table", arrow),
        ("HTTP JSON → Python objects", js),
        ("DuckDB, in process → pyarrow Table (the peer)", duck),
    ]


def protocols(args, env):
    con = queries.duckdb_over(os.path.join(args.lake_data, "lake"))
    (expected,) = con.sql(f"select count(*) from ({ANSWER})").fetchall()[0]
    svc = Service(args.bin, args.lake_data, env, ["--config", args.no_cache, "query"])
    rows = []
    try:
        for name, fetch in fetch_clients(svc, con):
            n, times = queries.timed(lambda _: fetch(), None, args.runs)
            if n != expected:
                raise SystemExit(f"{name}: {n} rows, not {expected}")
            rows.append((name, n, statistics.median(times), min(times), max(times)))
    finally:
        svc.close()
    return rows


def ingestion(args, env):
    """Records/s the stage of `up` reads from a backlog: alone, with four heavy queries, alone."""
    data = os.path.join(args.work, "up")
    # The lake and the users only: the stage's checkpoint of the old stream would wait for
    # offsets the new stream has not reached.
    shutil.copytree(args.lake_data, data,
                    ignore=shutil.ignore_patterns("stream", "state", "simulator", "collector"))
    # A backlog in the embedded stream, so that the stage reads as fast as it can the whole time
    # (the simulator of `up --rate` ramps up as its sessions start, and past the stage's capacity
    # it floods the machine): simulated sessions after the lake's, emitted before `up` starts.
    out = run([args.bin, "--data-dir", data, "emit", "--seed", "2", "--sessions",
               str(args.backlog_sessions), "--start", "2026-03-26T00:00:00Z", "--stats-json"], env=env)
    backlog = json.loads(out.stdout.strip().splitlines()[-1])["records"]
    # Without the result cache, as for the protocols: each heavy query is computed every time.
    svc = Service(args.bin, data, env, ["--config", args.no_cache, "up"], "--rate", "0",
                  "--history", "0")
    windows = []
    try:
        for _ in range(600):
            if svc.metric("shoplake_stage_records_read_total") > 0:
                break
            time.sleep(0.5)
        else:
            raise SystemExit("the stage of `up` read nothing in 5 minutes")
        time.sleep(5)
        # Alone and loaded in turn, so that each loaded window is compared with the windows alone
        # just before and after it: the stage's rate drifts as the lake and its state grow.
        for n in range(2 * args.loaded_windows + 1):
            label, heavy = ("four heavy queries running", True) if n % 2 else ("alone", False)
            stop = threading.Event()
            done = []

            def keep_asking(sql):
                while not stop.is_set():
                    try:
                        queries.ask(svc.url, sql)
                        done.append(sql)
                    except urllib.error.HTTPError as e:
                        done.append(f"HTTP {e.code}")

            threads = [threading.Thread(target=keep_asking, args=(q,), daemon=True)
                       for q in HEAVY] if heavy else []
            for t in threads:
                t.start()
            time.sleep(3 if heavy else 0)  # the queries under way
            start, before = time.monotonic(), svc.metric("shoplake_stage_records_read_total")
            cpu0 = cpu_secs(svc.proc.pid)
            time.sleep(args.window)
            after, wall = svc.metric("shoplake_stage_records_read_total"), time.monotonic() - start
            cpu = cpu_secs(svc.proc.pid) - cpu0
            stop.set()
            for t in threads:
                t.join()
            answered = sum(1 for d in done if not d.startswith("HTTP"))
            left = backlog - svc.metric("shoplake_stage_records_read_total")
            if left <= 0:
                # The stage may have idled in this window: it does not count.
                print(f"the backlog of {backlog:,} records ran out in window {n + 1}: emit more "
                      f"(--backlog-sessions); the windows before it follow", file=sys.stderr)
                break
            windows.append(dict(label=label, rate=(after - before) / wall, cpu=cpu / wall,
                                answered=answered, refused=len(done) - answered))
    finally:
        # SIGKILL: a stop would compact the whole backlog first, which says nothing here (and
        # `up` is built to lose nothing when killed).
        svc.proc.kill()
        svc.proc.wait()
    if len(windows) % 2 == 0:
        windows.pop()  # a loaded window needs a window alone after it
    if len(windows) < 3:
        raise SystemExit("fewer than three windows before the backlog ran out: emit more (--backlog-sessions)")
    return windows, backlog, left


def cpu_secs(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", required=True)
    p.add_argument("--lake-data", required=True, help="a data folder holding the 10M-event lake")
    p.add_argument("--work", required=True)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--window", type=int, default=40, help="seconds of each ingestion window")
    p.add_argument("--loaded-windows", type=int, default=2,
                   help="windows with the heavy queries, each between two windows alone")
    p.add_argument("--only", choices=["protocols", "ingestion"], help="one of the two measurements")
    p.add_argument("--backlog-sessions", type=int, default=800000,
                   help="simulated sessions emitted into up's stream before it starts")
    args = p.parse_args()
    args.bin = os.path.abspath(args.bin)
    args.no_cache = os.path.join(args.work, "no-cache.toml")
    with open(args.no_cache, "w") as f:
        f.write("[query]\ncache_size = 0\n")
    env = dict(os.environ, SHOPLAKE_LOG="warn")

    if args.only != "ingestion":
        print(f"### A {ROWS:,}-row answer by protocol ({args.runs} runs after a warm-up; rows/s of wall time)")
        print()
        print(f"`{ANSWER}`")
        print()
        print("| client | rows | median s | rows/s | spread s |")
        print("|---|---|---|---|---|")
        for name, n, med, lo, hi in protocols(args, env):
            print(f"| {name} | {n:,} | {med / 1000:.2f} | {n / (med / 1000):,.0f} | {lo / 1000:.2f}–{hi / 1000:.2f} |")
        print()
    if args.only == "protocols":
        return
    windows, backlog, left = ingestion(args, env)
    print(f"### Ingestion in `shoplake up` with and without four heavy queries ({args.window} s windows)")
    print()
    print(f"The stage of `up` reads a backlog of {backlog:,} records (seed 2, emitted before `up` "
          f"starts; {left:,.0f} were still unread at the end) while the lake holds the 10M events the "
          f"queries read; the four heavy queries are kept running by four HTTP clients, without the "
          f"result cache.")
    print()
    print("| while | records read by the stage per s | process CPU (cores) | heavy queries answered "
          "| refused | rate against the windows alone around it |")
    print("|---|---|---|---|---|---|")
    ratios = []
    for i, w in enumerate(windows):
        ratio = ""
        if i % 2:
            ratios.append(w["rate"] / ((windows[i - 1]["rate"] + windows[i + 1]["rate"]) / 2))
            ratio = f"{ratios[-1]:.0%}"
        print(f"| {w['label']} | {w['rate']:,.0f} | {w['cpu']:.2f} | {w['answered']} | {w['refused']} | {ratio} |")
    print()
    print(f"Under four heavy queries ingestion keeps {min(ratios):.0%}–{max(ratios):.0%} of its rate "
          f"alone (each loaded window against the mean of the windows alone on either side; target: "
          f"at least 80%).")


if __name__ == "__main__":
    main()

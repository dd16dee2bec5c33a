"""Every report of the catalogue, hot, on shoplake and on DuckDB over the same Parquet files.

Run by bench/run.py (the reports row) or alone: `reports.py LAKE_DIR SHOPLAKE_URL RUNS` with
SHOPLAKE_TOKEN set, prints Markdown. shoplake answers `GET /v1/reports/NAME?from=…&to=…` of a
running `shoplake query` (the way a dashboard asks, its result cache off); DuckDB runs the same
report's SQL (`sql/reports/NAME.sql`, its parameters bound by DuckDB) in this process over the
active Parquet files of every Delta table of the lake (rollups included, so the comparison is of
engines) and the views of `sql/views/`. The range is the 30 days up to the lake's last day of sessions; the
other parameters keep their declared defaults.

DuckDB spells three things differently, and only those are changed: the ordered aggregates
`first_value(x ORDER BY y)` / `last_value(x ORDER BY y)` are `first(…)` / `last(…)`, a
`$name` placeholder is bound from a dict, and `arrow_cast(x, 'Utf8')` is `x` (a macro of
`queries.duckdb_over`). The answers must have the same number of rows.
"""

import datetime
import json
import os
import re
import statistics
import sys
import urllib.error
import urllib.parse
import urllib.request


import queries

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def catalogue(url):
    req = urllib.request.Request(f"{url}/v1/reports", headers=queries.auth(url))
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.load(resp)["reports"]


def report(url, name, params):
    query = urllib.parse.urlencode(params)
    req = urllib.request.Request(f"{url}/v1/reports/{name}?{query}", headers=queries.auth(url))
    with urllib.request.urlopen(req, timeout=600) as resp:
        return json.load(resp)["row_count"]


def default(param, today):
    """A parameter's declared default as DuckDB binds it ("today-29" is relative to the range's end)."""
    kind, text = param["type"], param["default"]
    if text == "null":
        return None
    if kind == "date":
        days = int(text[len("today"):] or 0)
        return today + datetime.timedelta(days=days)
    return {"int": int, "float": float, "bool": lambda t: t == "true"}.get(kind, str)(text)


def last_day(con):
    """The last day of the lake's storefront traffic: back-office events (chargebacks weeks later,
    restocks) reach far past it, and a range ending on them would hold almost nothing."""
    (day,) = con.execute("select max(session_date) from visits").fetchall()[0]
    return day


def measure(con, url, runs):
    """Each report on both engines over the lake's last 30 days: a dict per report."""
    to = last_day(con)
    frm = to - datetime.timedelta(days=29)
    results = []
    for entry in catalogue(url):
        name = entry["name"]
        text = queries.duck_sql(open(os.path.join(ROOT, "sql", "reports", f"{name}.sql")).read())
        used = set(re.findall(r"\$([a-z_][a-z0-9_]*)", text))
        bound = {}
        for p in entry["params"]:
            if p["name"] in used:
                bound[p["name"]] = {"from": frm, "to": to}.get(p["name"]) or default(p, to)
        # The period just before, of the same length, as the service derives it.
        if "previous_from" in used:
            bound["previous_from"] = frm - (to - frm + datetime.timedelta(days=1))
        if "previous_to" in used:
            bound["previous_to"] = frm - datetime.timedelta(days=1)
        http = {k: v.isoformat() for k, v in bound.items() if k in ("from", "to")}
        try:
            rows, ours = queries.timed(lambda _: report(url, name, http), None, runs)
        except urllib.error.HTTPError as e:
            # A report that fails is a figure too (the row says why), not the end of the run.
            results.append({"name": name, "error": f"HTTP {e.code}: {json.load(e).get('error')}"})
            continue
        duck_rows, theirs = queries.timed(
            lambda _: con.sql(text, params=bound).to_arrow_table().num_rows, None, runs)
        if rows != duck_rows:
            raise SystemExit(f"MISMATCH report {name}: shoplake {rows} rows, DuckDB {duck_rows}")
        results.append({"name": name, "rows": rows, "shoplake": ours, "duckdb": theirs})
    return dict(results=results, range=(frm, to))


def table(r):
    """Markdown lines of measure()'s answer."""
    lines = [
        "| report | rows | shoplake p50 ms | shoplake p95 ms | DuckDB p50 ms | DuckDB p95 ms | shoplake / DuckDB (p50) |",
        "|---|---|---|---|---|---|---|",
    ]
    for x in r["results"]:
        if "error" in x:
            lines.append(f"| {x['name']} | | fails: {x['error']} | | | | |")
            continue
        a, b = statistics.median(x["shoplake"]), statistics.median(x["duckdb"])
        mark = " **over 300 ms**" if queries.pct(x["shoplake"], 95) > 300 else ""
        lines.append(f"| {x['name']} | {x['rows']} | {a:.1f} | {queries.pct(x['shoplake'], 95):.1f}{mark} "
                     f"| {b:.1f} | {queries.pct(x['duckdb'], 95):.1f} | {a / b:.2f} |")
    ours = [statistics.median(x["shoplake"]) for x in r["results"] if "error" not in x]
    theirs = [statistics.median(x["duckdb"]) for x in r["results"] if "error" not in x]
    ratios = [a / b for a, b in zip(ours, theirs)]
    lines.append(f"| **geometric mean** | | {queries.geo(ours):.1f} | | {queries.geo(theirs):.1f} | "
                 f"| **{queries.geo(ratios):.2f}** |")
    return lines


def main():
    lake, url, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    queries.TOKENS[url] = os.environ["SHOPLAKE_TOKEN"]
    con = queries.duckdb_over(lake, url)
    r = measure(con, url, runs)
    print(f"Reports over {r['range'][0]} … {r['range'][1]}; {runs} hot runs each after a warm-up.")
    print()
    print("\n".join(table(r)))


if __name__ == "__main__":
    main()

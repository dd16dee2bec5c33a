"""The dashboards in a real browser (Debian's Chromium, driven by Playwright), as a person uses them.

Run by tests/it/dashboards.rs against `shoplake query` on a seeded lake:

    python tests/dashboards_in_chromium.py --url URL --admin USER:PASS --analyst USER:PASS \
        --marketing USER:PASS --from YYYY-MM-DD --to YYYY-MM-DD --screenshots DIR

It signs in through the form, opens every page, and checks what a reviewer would: the numbers on
the page are the reports' numbers over HTTP (fetched with the same session), every chart's ECharts
instance holds data (or the page shows its empty state where the report is empty), no console or
page error was logged, filters live in the URL and survive a reload, and a marketing user cannot
open the fraud page. It prints one JSON line with each page's load time and exits non-zero with a
message at the first failure. Screenshots of every page go to DIR.
"""

import argparse
import datetime
import json
import math
import os
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

PAGES = ["overview", "acquisition", "funnel", "products", "customers", "live", "fraud", "pipeline"]
KPIS = ["sessions", "shoppers", "orders", "conversion_rate", "revenue", "average_order_value"]
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


class Failure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failure(message)


def close(a, b):
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-6)


class Browser:
    def __init__(self, pw, base, shots):
        self.base = base.rstrip("/")
        self.shots = shots
        self.browser = pw.chromium.launch(
            executable_path=os.environ.get("SHOPLAKE_CHROMIUM", "/usr/bin/chromium"),
            args=CHROMIUM_ARGS,
        )
        self.problems = []
        self.new_context()

    def new_context(self):
        self.context = self.browser.new_context(viewport={"width": 1440, "height": 900})
        self.page = self.context.new_page()
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))

    def no_problems(self, where):
        check(not self.problems, f"{where}: {self.problems}")

    def sign_in(self, user, password, expect_ok=True):
        self.page.goto(f"{self.base}/")
        self.page.wait_for_selector("#signin-form", state="visible")
        # Not signed in yet, the page's GET /v1/session is answered 401, which the browser logs.
        self.problems.clear()
        self.page.fill("input[name=user]", user)
        self.page.fill("input[name=password]", password)
        self.page.click("#signin-form button[type=submit]")
        if expect_ok:
            self.page.wait_for_selector("#app", state="visible")
            self.wait_ready("sign-in")
        else:
            self.page.wait_for_function("() => document.getElementById('signin-error').textContent.length > 0")
            return self.page.text_content("#signin-error")

    def wait_ready(self, where):
        try:
            self.page.wait_for_function("() => window.__dashboards && window.__dashboards.ready", timeout=30000)
        except Exception as e:
            raise Failure(f"{where}: the page did not finish loading: {e}")
        errors = self.page.evaluate("window.__dashboards.errors")
        check(not errors, f"{where}: panels in their error state: {errors}")

    def open(self, page, query):
        self.page.evaluate("window.__dashboards.ready = false")
        started = self.page.evaluate("performance.now()")
        self.page.evaluate(f"location.hash = {json.dumps(f'#/{page}?{query}')}")
        self.wait_ready(page)
        return self.page.evaluate("window.__dashboards.loadMs") or (self.page.evaluate("performance.now()") - started)

    def get(self, path):
        """A GET with the page's session cookie, as the page makes it."""
        return self.page.evaluate(
            """async (path) => { const r = await fetch(path); return {status: r.status, body: await r.text()}; }""",
            path,
        )

    def report(self, name, params):
        q = "&".join(f"{k}={v}" for k, v in params.items() if v)
        answer = self.get(f"/v1/reports/{name}?{q}")
        check(answer["status"] == 200, f"report {name}: {answer}")
        return json.loads(answer["body"])["rows"]

    def charts(self):
        """Each chart on the page: its id and how many data points its series hold."""
        return self.page.evaluate(
            """() => [...document.querySelectorAll('[data-chart]')].map(el => {
                const c = echarts.getInstanceByDom(el);
                const series = c ? (c.getOption().series || []) : [];
                return {id: el.dataset.chart, instance: !!c,
                        points: series.reduce((a, s) => a + ((s.data || []).length), 0)};
            })"""
        )

    def screenshot(self, name):
        self.page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)


def check_overview(b, params, where):
    rows = b.report("overview", params)
    check(len(rows) == 1, f"{where}: overview has one row: {rows}")
    expected = rows[0]
    for key in KPIS:
        shown = b.page.get_attribute(f'[data-kpi="{key}"]', "data-value")
        want = expected.get(key)
        check(close(float(shown) if shown else None, want),
              f"{where}: the {key} tile shows {shown}, the overview report says {want}")
    return expected


def check_charts(b, page):
    charts = b.charts()
    shown = b.page.locator("[data-empty], [data-table], [data-denied]").count()
    for c in charts:
        check(c["instance"], f"{page}: chart {c['id']} has no ECharts instance")
        check(c["points"] > 0, f"{page}: chart {c['id']} has no data")
    check(charts or shown, f"{page}: no chart, table or empty state")
    return charts


def check_table(b, name, params, key):
    """The first rows of table `name` on the page equal its report's, compared on `key`."""
    rows = b.report(name, params)
    if not rows:
        check(b.page.locator(f'[data-table="{name}"]').count() == 0, f"table {name} shows rows its report has not")
        return
    cells = b.page.evaluate(
        """(name) => { const t = document.querySelector(`[data-table="${name}"]`); if (!t) return null;
            const heads = [...t.querySelectorAll('th')].map(th => th.dataset.column);
            return [...t.querySelectorAll('tbody tr')].slice(0, 5).map(tr =>
                Object.fromEntries([...tr.children].map((td, i) => [heads[i], td.dataset.value]))); }""",
        name,
    )
    check(cells is not None, f"table {name} is not on the page")
    check(len(cells) == min(5, len(rows)), f"table {name}: {len(cells)} rows shown of {len(rows)}")
    for shown, want in zip(cells, rows[:5]):
        check(str(shown[key]) == str(want[key]), f"table {name}: row {shown} is not {want}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    for role in ("admin", "analyst", "marketing"):
        ap.add_argument(f"--{role}", required=True, help="USER:PASSWORD")
    ap.add_argument("--from", dest="start", required=True)
    ap.add_argument("--to", dest="end", required=True)
    ap.add_argument("--screenshots", type=Path, required=True)
    args = ap.parse_args()
    args.screenshots.mkdir(parents=True, exist_ok=True)
    creds = {r: getattr(args, r).split(":", 1) for r in ("admin", "analyst", "marketing")}
    params = {"from": args.start, "to": args.end}
    query = f"from={args.start}&to={args.end}"
    load_ms = {}

    with sync_playwright() as pw:
        b = Browser(pw, args.url, args.screenshots)
        # A wrong password is refused on the form.
        error = b.sign_in(creds["analyst"][0], "not-the-password", expect_ok=False)
        check("wrong password" in error, f"the form says {error!r} for a wrong password")
        b.screenshot("signin-refused")

        b.sign_in(*creds["analyst"])
        for page in PAGES:
            load_ms[page] = round(b.open(page, query))
            check(b.page.evaluate("window.__dashboards.page") == page, f"{page}: not the page shown")
            charts = check_charts(b, page)
            b.screenshot(page)
            if page == "overview":
                check_overview(b, params, "overview")
                check(len([c for c in charts if c["id"].startswith("spark-")]) >= 4, "overview: sparklines")
            if page == "acquisition":
                check_table(b, "acquisition", {**params, "by": "campaign"}, "dimension")
                check_table(b, "coupons", params, "coupon")
            if page == "products":
                check_table(b, "products", {**params, "by": "product"}, "dimension")
                check_table(b, "inventory", {**params, "out_of_stock_only": "true"}, "product_id")
            if page == "fraud":
                check(b.page.locator("[data-denied]").count() == 0, "fraud: an analyst is refused")
                check_table(b, "fraud_rules", params, "rule")
            if page == "pipeline":
                check(b.page.locator("[data-table=tables]").count() == 1, "pipeline: the tables")
                check_table(b, "bad_rows", params, "reason")
        b.no_problems("every page as analyst")

        # A filter: the first channel offered, then a preset; the URL holds them and the numbers
        # follow the reports.
        b.open("overview", query)
        channels = b.page.eval_on_selector_all("select[name=channel] option", "os => os.map(o => o.value).filter(v => v)")
        check(channels, "the channel filter offers the lake's channels")
        b.page.select_option("select[name=channel]", channels[0])
        b.page.evaluate("window.__dashboards.ready = false")
        b.page.click("#filters button[type=submit]")
        b.wait_ready("overview with a channel")
        check(f"channel={channels[0]}" in b.page.url, f"the URL holds the channel: {b.page.url}")
        filtered = check_overview(b, {**params, "channel": channels[0]}, f"overview, channel {channels[0]}")
        whole = b.report("overview", params)[0]
        check(filtered["sessions"] < whole["sessions"], "a channel has fewer sessions than all of them")
        b.screenshot("overview-one-channel")
        shared = b.page.url
        b.page.reload()
        b.wait_ready("the shared URL")
        check(b.page.input_value("select[name=channel]") == channels[0], "the reload keeps the channel")
        check_overview(b, {**params, "channel": channels[0]}, "the shared URL")
        b.page.select_option("select[name=preset]", "7")
        b.page.select_option("select[name=channel]", "")
        b.page.evaluate("window.__dashboards.ready = false")
        b.page.click("#filters button[type=submit]")
        b.wait_ready("the last 7 days")
        check("channel=" not in b.page.url and shared != b.page.url, f"the URL follows the filters: {b.page.url}")
        start = b.page.input_value("input[name=from]")
        end = b.page.input_value("input[name=to]")
        check_overview(b, {"from": start, "to": end}, "the last 7 days")
        b.no_problems("the filters")

        # Sign out; marketing sees no fraud page and cannot read the review queue.
        b.page.click("#signout")
        b.page.wait_for_selector("#signin-form", state="visible")
        b.sign_in(*creds["marketing"])
        nav = b.page.eval_on_selector_all("#nav a", "as => as.map(a => a.dataset.page)")
        check("fraud" not in nav and "overview" in nav, f"marketing's navigation: {nav}")
        b.open("fraud", query)
        check(b.page.locator("[data-denied]").count() == 1, "marketing opening #/fraud sees the role message")
        b.screenshot("fraud-as-marketing")
        b.no_problems("marketing's pages")
        check(b.get("/v1/reports/fraud_review_queue")["status"] == 404, "marketing reads the review queue")
        b.problems.clear()  # that refusal is logged by the browser, rightly
        b.open("overview", query)
        check_overview(b, params, "overview as marketing")
        b.no_problems("marketing")

        # Admin signs in too (every page is theirs).
        b.page.click("#signout")
        b.page.wait_for_selector("#signin-form", state="visible")
        b.sign_in(*creds["admin"])
        # The seeded lake's bad rows were received today (the day the test ran the stage).
        today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
        b.open("pipeline", f"from={today}&to={today}")
        check(b.page.locator("[data-table=bad_row_examples]").count() == 1, "admin sees the bad inputs")
        check_table(b, "bad_rows", {"from": today, "to": today}, "reason")
        b.screenshot("pipeline-today")
        b.no_problems("admin")
        b.browser.close()

    print(json.dumps({"load_ms": load_ms}))


if __name__ == "__main__":
    try:
        main()
    except Failure as e:
        print(f"FAIL: {e}", file=sys.stderr)
        sys.exit(1)

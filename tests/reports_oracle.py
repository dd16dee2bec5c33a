#!/usr/bin/env python3
"""An independent cross-check ("oracle") of shoplake's named reports (sql/reports/*.sql).

Every report is recomputed here with DuckDB from the lake's raw tables, with SQL written from the
reports' *descriptions* only (the `--` header comments of sql/reports/*.sql, sql/batch/*.sql and
sql/views/*.sql), never from shoplake's SQL, and compared with shoplake's answers.

What is read from the lake (Delta tables, through `deltalake`):
  events           every valid event, de-duplicated (the source of almost everything here)
  identities       anonymous id -> user links (a primary output of the stream stage's compaction)
  fraud_decisions  the stage's fraud verdicts (primary output)
  product_affinity `shoplake batch affinity`'s neighbours (primary output)
The derived `visits`/`sessions` and `orders` are NOT read: they are rebuilt below from `events`
(+ `identities`) after the header comments of sql/batch/visits.sql, sql/views/sessions.sql and
sql/batch/orders.sql, into the temporary tables `o_sessions` and `o_orders`.

Usage:
  reports_oracle.py --lake LAKE_DIR --answers ANSWERS_DIR --from YYYY-MM-DD --to YYYY-MM-DD
                    [--only NAME,...]
      ANSWERS_DIR holds NAME.json per report: shoplake's answer, a JSON array of row objects.
  reports_oracle.py --shoplake BIN --data-dir DIR --from YYYY-MM-DD --to YYYY-MM-DD [--only A,B]
      runs `BIN --data-dir DIR report NAME --param from=.. --param to=.. --format json` for every
      report itself (the lake is DIR/lake unless --lake says otherwise); --save-answers DIR keeps
      the answers it got.
  reports_oracle.py --lake LAKE_DIR --dump DIR --from .. --to ..
      only writes the oracle's own rows, NAME.json, into DIR (to look at them).

Prints `ok NAME (N rows)` per report that agrees, or its differences (columns, row count, the
first mismatching rows side by side, a broken stated sort); exits 1 if any report differs, has no
answer, or is not implemented here, 0 otherwise. Rows are matched on each report's key columns;
numbers agree within 1e-6 relative or absolute.

All parameters other than from/to are at their defaults (the `-- param:` header lines).

Readings chosen where a description is ambiguous are marked "READING:" in the comments.
"""

from __future__ import annotations

import argparse
import datetime as dt
import decimal
import json
import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import deltalake
import duckdb

REPO = Path(__file__).resolve().parent.parent
REPORTS_DIR = REPO / "sql" / "reports"
RAW_TABLES = ["events", "identities", "fraud_decisions", "product_affinity", "bad_rows"]
# Tables a lake may not have yet (nothing loaded): an empty table of the same columns instead.
OPTIONAL_TABLES = {
    "campaign_spend": """CREATE TABLE campaign_spend (spend_date DATE, source VARCHAR,
        medium VARCHAR, campaign VARCHAR, spend DECIMAL(18, 2), currency VARCHAR,
        fx_rate DECIMAL(18, 8), impressions BIGINT, clicks BIGINT, loaded_at TIMESTAMPTZ)""",
}
REL_TOL = 1e-6
ABS_TOL = 1e-6
SHOW_ROWS = 5  # mismatching rows shown per report

# --------------------------------------------------------------------------------------------
# The lake and the oracle's own derived tables
# --------------------------------------------------------------------------------------------


def connect(lake: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    # Every "UTC day" below is a plain ::date cast of a timestamptz, so the session is in UTC.
    con.execute("SET TimeZone = 'UTC'")
    for name in RAW_TABLES:
        dataset = deltalake.DeltaTable(str(lake / name)).to_pyarrow_dataset()
        con.register(name, dataset)
    for name, empty in OPTIONAL_TABLES.items():
        if (lake / name / "_delta_log").exists():
            con.register(name, deltalake.DeltaTable(str(lake / name)).to_pyarrow_dataset())
        else:
            con.execute(empty)
    con.execute(SESSIONS_SQL)
    con.execute(ORDERS_SQL)
    return con


# sessions (sql/batch/visits.sql + sql/views/sessions.sql): one row per visit, from the
# storefront's own events (back-office events are not visits).
#  - READING: back-office events are those with source = 'backend' (the order lifecycle after
#    the order: payment, shipping, cancellation, refunds...); every other source is storefront.
#  - the session's own user is "any user id seen in it" (max() here; one per session in practice).
#  - first touch: channel, utm_* and referrer all come from one event: the earliest event
#    carrying any UTM parameter, else the earliest carrying a referrer, else the session's first
#    event ("earliest" = smallest event_time, then smallest event_id). The landing page, the
#    anonymous id, device_type and country are the session's first event's.
#  - a session is a bot session when any of its events is flagged is_bot.
#  - started_at/ended_at = first/last event_time; session_date = UTC day of started_at.
#  - orders/revenue: the orders completed in the session: its distinct order ids among its
#    order_completed events, each with the revenue_reporting of its latest such event (READING:
#    an order_completed sent twice under two event ids is one order, counted once; a later
#    order_updated does not change a session's revenue).
#  - user: the own user, else the current (is_current) identities link of its anonymous id;
#    shopper = user, else anonymous id.
SESSIONS_SQL = """
CREATE OR REPLACE TEMP TABLE o_sessions AS
WITH storefront AS (
    SELECT * FROM events WHERE source IS DISTINCT FROM 'backend' AND session_id IS NOT NULL
),
first_touch AS (
    SELECT session_id, channel, utm_source, utm_medium, utm_campaign, page_referrer AS referrer
    FROM storefront
    QUALIFY row_number() OVER (
        PARTITION BY session_id
        ORDER BY coalesce(utm_source, utm_medium, utm_campaign, utm_term, utm_content) IS NULL,
                 page_referrer IS NULL,
                 event_time, event_id) = 1
),
landing AS (
    SELECT session_id, anonymous_id, page_path AS landing_path, device_type, country
    FROM storefront
    QUALIFY row_number() OVER (PARTITION BY session_id ORDER BY event_time, event_id) = 1
),
agg AS (
    SELECT session_id,
           max(user_id) AS own_user_id,
           min(event_time) AS started_at,
           max(event_time) AS ended_at,
           bool_or(coalesce(is_bot, false)) AS is_bot,
           bool_or(event_name = 'product_viewed') AS viewed_product,
           bool_or(event_name = 'product_added') AS added_to_cart,
           bool_or(event_name = 'checkout_started') AS started_checkout,
           count(DISTINCT order_id) FILTER (WHERE event_name = 'order_completed') AS orders
    FROM storefront
    GROUP BY session_id
),
completed AS (  -- one row per order completed in a session
    SELECT session_id, order_id, arg_max(revenue_reporting, event_time) AS revenue
    FROM storefront WHERE event_name = 'order_completed' AND order_id IS NOT NULL
    GROUP BY session_id, order_id
),
revenue AS (
    SELECT session_id, sum(revenue) AS revenue FROM completed GROUP BY session_id
)
SELECT a.session_id,
       coalesce(a.own_user_id, i.user_id) AS user_id,
       a.own_user_id IS NULL AND i.user_id IS NOT NULL AS user_from_identity,
       l.anonymous_id,
       coalesce(a.own_user_id, i.user_id, l.anonymous_id) AS shopper,
       a.started_at, a.ended_at, a.started_at::date AS session_date,
       a.is_bot, a.viewed_product, a.added_to_cart, a.started_checkout,
       a.orders, coalesce(r.revenue, 0) AS revenue,
       f.channel, f.utm_source, f.utm_medium, f.utm_campaign, f.referrer, l.landing_path,
       l.device_type, l.country
FROM agg a
JOIN first_touch f USING (session_id)
JOIN landing l USING (session_id)
LEFT JOIN revenue r USING (session_id)
LEFT JOIN identities i ON i.anonymous_id = l.anonymous_id AND i.is_current
"""

# orders (sql/batch/orders.sql): one row per order whose order_completed event is in the lake.
#  - every amount and attribute is the latest non-null value an order_completed / order_updated
#    event gave it, field by field (latest = greatest event_time, then smallest event_id);
#  - placed_at: the order_completed event's time (READING: the earliest if there were several);
#  - READING (undocumented): paid/shipped/delivered/cancelled/refunded/return-requested times are
#    the FIRST event of each kind (payment_authorized, order_shipped, ...);
#  - status: the furthest milestone reached, refunded > cancelled > return requested > delivered
#    > shipped > paid > payment failed > placed.
ORDER_FIELDS = [
    "user_id", "anonymous_id", "session_id", "currency", "total", "revenue", "tax", "shipping",
    "discount", "fx_rate", "total_reporting", "revenue_reporting", "coupon", "payment_method",
    "card_fingerprint", "billing_country", "shipping_country",
]
LATEST_FIELDS = ",\n           ".join(
    f"arg_min({f}, recency) FILTER (WHERE {f} IS NOT NULL) AS {f}" for f in ORDER_FIELDS)
ORDERS_SQL = f"""
CREATE OR REPLACE TEMP TABLE o_orders AS
WITH lifecycle AS (
    SELECT *, row_number() OVER (PARTITION BY order_id
                                 ORDER BY event_time DESC, event_id) AS recency
    FROM events
    WHERE order_id IS NOT NULL AND event_name IN ('order_completed', 'order_updated')
),
latest AS (
    SELECT order_id,
           {LATEST_FIELDS}
    FROM lifecycle GROUP BY order_id
),
milestones AS (
    SELECT order_id,
           min(event_time) FILTER (WHERE event_name = 'order_completed') AS placed_at,
           min(event_time) FILTER (WHERE event_name = 'payment_authorized') AS paid_at,
           min(event_time) FILTER (WHERE event_name = 'payment_failed') AS payment_failed_at,
           min(event_time) FILTER (WHERE event_name = 'order_shipped') AS shipped_at,
           min(event_time) FILTER (WHERE event_name = 'order_delivered') AS delivered_at,
           min(event_time) FILTER (WHERE event_name = 'return_requested') AS return_requested_at,
           min(event_time) FILTER (WHERE event_name = 'order_cancelled') AS cancelled_at,
           min(event_time) FILTER (WHERE event_name = 'order_refunded') AS refunded_at
    FROM events WHERE order_id IS NOT NULL
    GROUP BY order_id
)
SELECT l.*, m.* EXCLUDE (order_id),
       m.placed_at::date AS order_date,
       CASE
           WHEN m.refunded_at IS NOT NULL THEN 'refunded'
           WHEN m.cancelled_at IS NOT NULL THEN 'cancelled'
           WHEN m.return_requested_at IS NOT NULL THEN 'return_requested'
           WHEN m.delivered_at IS NOT NULL THEN 'delivered'
           WHEN m.shipped_at IS NOT NULL THEN 'shipped'
           WHEN m.paid_at IS NOT NULL THEN 'paid'
           WHEN m.payment_failed_at IS NOT NULL THEN 'payment_failed'
           ELSE 'placed'
       END AS status
FROM latest l JOIN milestones m USING (order_id)
WHERE m.placed_at IS NOT NULL
"""

# Orders that count as sales (attribution, coupons, rfm): "except cancelled ones and those whose
# payment failed". READING: by the order's status (so an order cancelled and then refunded has
# status `refunded` and counts).
SALE = "status NOT IN ('cancelled', 'payment_failed')"

# The shopper of an order (attribution, rfm): its user, else the user its anonymous id is linked
# to now (the current identities link), else its anonymous id.
ORDERS_WITH_SHOPPER = """
    SELECT o.*, coalesce(o.user_id, i.user_id, o.anonymous_id) AS shopper
    FROM o_orders o
    LEFT JOIN identities i ON i.anonymous_id = o.anonymous_id AND i.is_current
"""

NON_BOT_SESSIONS = "SELECT * FROM o_sessions WHERE NOT is_bot"


# --------------------------------------------------------------------------------------------
# Reports: one function each, registered with the columns that identify a row and, where the
# description states a sort, the order the answer's rows must follow.
# --------------------------------------------------------------------------------------------


@dataclass
class Params:
    start: dt.date  # `from`
    end: dt.date  # `to`

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    @property
    def prev_start(self) -> dt.date:  # the period of the same length just before
        return self.start - dt.timedelta(days=self.days)

    @property
    def prev_end(self) -> dt.date:
        return self.start - dt.timedelta(days=1)

    def bind(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end,
                "prev_start": self.prev_start, "prev_end": self.prev_end}


@dataclass
class Report:
    name: str
    compute: Callable[[duckdb.DuckDBPyConnection, Params], list[dict]]
    keys: list[str]
    # (column, descending) pairs the answer's rows must be sorted by, within `sort_within` groups;
    # an optional third item, nulls_last, says where empty values go (by default last when
    # descending, first when ascending)
    sort: list[tuple] = field(default_factory=list)
    sort_within: list[str] = field(default_factory=list)


REPORTS: dict[str, Report] = {}


def report(keys: list[str], sort: list[tuple] | None = None,
           sort_within: list[str] | None = None):
    def register(fn):
        REPORTS[fn.__name__] = Report(fn.__name__, fn, keys, sort or [], sort_within or [])
        return fn
    return register


def rows(con: duckdb.DuckDBPyConnection, sql: str, p: Params) -> list[dict]:
    bind = {k: v for k, v in p.bind().items() if f"${k}" in sql}
    # Through Arrow: timestamps come back as UTC datetimes without needing pytz.
    return con.sql(sql, params=bind).to_arrow_table().to_pylist()


@report(keys=[])
def overview(con, p):
    """Headline figures of the period beside the period of the same length just before
    (`_previous`): sessions, shoppers, orders, conversion rate (sessions with an order /
    sessions), revenue, AOV (revenue / orders). Non-bot sessions by the UTC day they started;
    shopper = stitched user else anonymous id; orders and revenue = orders completed in the
    sessions (reporting currency). READING: a ratio over zero is null."""
    def figures(period: str, suffix: str) -> str:
        w = f"session_date BETWEEN ${period}start AND ${period}end"
        return f"""
            count(*) FILTER (WHERE {w}) AS sessions{suffix},
            count(DISTINCT shopper) FILTER (WHERE {w}) AS shoppers{suffix},
            coalesce(sum(orders) FILTER (WHERE {w}), 0) AS orders{suffix},
            count(*) FILTER (WHERE {w} AND orders > 0) AS converted{suffix},
            coalesce(sum(revenue) FILTER (WHERE {w}), 0) AS revenue{suffix}"""

    sql = f"""
        WITH f AS (
            SELECT {figures("", "")}, {figures("prev_", "_previous")}
            FROM ({NON_BOT_SESSIONS})
        )
        SELECT sessions, shoppers, orders,
               converted / nullif(sessions, 0) AS conversion_rate,
               revenue, revenue / nullif(orders, 0) AS average_order_value,
               sessions_previous, shoppers_previous, orders_previous,
               converted_previous / nullif(sessions_previous, 0) AS conversion_rate_previous,
               revenue_previous,
               revenue_previous / nullif(orders_previous, 0) AS average_order_value_previous
        FROM f
    """
    return rows(con, sql, p)


@report(keys=["day", "dimension"])
def trend(con, p):
    """Day by day (UTC day a non-bot session started), split by the default dimension `channel`
    ('(none)' when missing): sessions, shoppers, orders, revenue. Days without sessions: no row."""
    sql = f"""
        SELECT session_date AS day, coalesce(channel, '(none)') AS dimension,
               count(*) AS sessions, count(DISTINCT shopper) AS shoppers,
               sum(orders) AS orders, sum(revenue) AS revenue
        FROM ({NON_BOT_SESSIONS})
        WHERE session_date BETWEEN $start AND $end
        GROUP BY ALL
    """
    return rows(con, sql, p)


@report(keys=["dimension"])
def acquisition(con, p):
    """Per first-touch channel (default `by`; '(none)' when missing) of non-bot sessions started
    in the period: sessions, shoppers, new shoppers (their first non-bot session ever, any
    channel, started in the period), returning shoppers (the others), orders, conversion rate,
    revenue, AOV; and sessions/orders/revenue of the previous period. A value seen only in the
    previous period has a row with zero sessions. READING: a ratio over zero is null."""
    sql = f"""
        WITH s AS (SELECT *, coalesce(channel, '(none)') AS dim FROM ({NON_BOT_SESSIONS})),
        first_seen AS (SELECT shopper, min(started_at)::date AS first_day FROM s GROUP BY 1),
        cur AS (
            SELECT dim, count(*) AS sessions, count(DISTINCT shopper) AS shoppers,
                   count(DISTINCT shopper) FILTER (
                       WHERE first_day BETWEEN $start AND $end) AS new_shoppers,
                   sum(orders) AS orders, count(*) FILTER (WHERE orders > 0) AS converted,
                   sum(revenue) AS revenue
            FROM s JOIN first_seen USING (shopper)
            WHERE session_date BETWEEN $start AND $end
            GROUP BY dim
        ),
        prev AS (
            SELECT dim, count(*) AS sessions_previous, sum(orders) AS orders_previous,
                   sum(revenue) AS revenue_previous
            FROM s WHERE session_date BETWEEN $prev_start AND $prev_end
            GROUP BY dim
        )
        SELECT dim AS dimension,
               coalesce(c.sessions, 0) AS sessions, coalesce(c.shoppers, 0) AS shoppers,
               coalesce(c.new_shoppers, 0) AS new_shoppers,
               coalesce(c.shoppers - c.new_shoppers, 0) AS returning_shoppers,
               coalesce(c.orders, 0) AS orders,
               c.converted / nullif(c.sessions, 0) AS conversion_rate,
               coalesce(c.revenue, 0) AS revenue,
               c.revenue / nullif(c.orders, 0) AS average_order_value,
               coalesce(sessions_previous, 0) AS sessions_previous,
               coalesce(orders_previous, 0) AS orders_previous,
               coalesce(revenue_previous, 0) AS revenue_previous
        FROM cur c FULL JOIN prev USING (dim)
    """
    return rows(con, sql, p)


@report(keys=["dimension", "step"])
def funnel(con, p):
    """Of the period's non-bot sessions (by=none: one dimension '(all)'): how many did each step
    (1 session_started, 2 product_viewed, 3 product_added, 4 checkout_started, 5 order_completed),
    whether or not they did the ones before; drop_off = sessions of the step before - sessions;
    the share that went on from the step before and from the start.
    Every session has started (the lake holds no session_started events), so step 1 is all
    sessions; step 1 has drop-off 0 and rate 1 from the step before; a period without sessions
    has no rows."""
    sql = f"""
        WITH s AS (
            SELECT * FROM ({NON_BOT_SESSIONS}) WHERE session_date BETWEEN $start AND $end
        ),
        counts AS (
            SELECT '(all)' AS dimension, step, step_name,
                   count(s.session_id) FILTER (WHERE CASE step
                       WHEN 1 THEN true
                       WHEN 2 THEN s.viewed_product
                       WHEN 3 THEN s.added_to_cart
                       WHEN 4 THEN s.started_checkout
                       WHEN 5 THEN s.orders > 0 END) AS sessions
            FROM (VALUES (1, 'session_started'), (2, 'product_viewed'), (3, 'product_added'),
                         (4, 'checkout_started'), (5, 'order_completed')) AS t(step, step_name)
            LEFT JOIN s ON true
            GROUP BY ALL
        )
        SELECT dimension, step, step_name, sessions,
               CASE WHEN step = 1 THEN 0 ELSE lag(sessions) OVER w - sessions END AS drop_off,
               CASE WHEN step = 1 THEN 1.0
                    ELSE sessions / nullif(lag(sessions) OVER w, 0) END AS conversion_from_previous,
               sessions / nullif(first_value(sessions) OVER w, 0) AS conversion_from_start
        FROM counts
        WHERE (SELECT count(*) FROM s) > 0
        WINDOW w AS (PARTITION BY dimension ORDER BY step)
    """
    return rows(con, sql, p)


@report(keys=["stage"])
def abandonment(con, p):
    """Of the period's non-bot sessions that added to cart (stage 'cart') or started checkout
    (stage 'checkout'): sessions, abandoned (no order in the session), abandonment rate, value
    left behind (product_added line items of the abandoned sessions: price x quantity x fx_rate)
    and recovered (the same shopper started a non-bot session with an order after the abandoned
    one started and at most 7 days after it ended), and the recovery rate (recovered /
    abandoned).
    READING: the two stages are overlapping groups (a session that did both is in both);
    'after it started' is strictly later; the recovering session may lie outside the period."""
    sql = f"""
        WITH s AS ({NON_BOT_SESSIONS}),
        period AS (SELECT * FROM s WHERE session_date BETWEEN $start AND $end),
        staged AS (
            SELECT 'cart' AS stage, * FROM period WHERE added_to_cart
            UNION ALL
            SELECT 'checkout' AS stage, * FROM period WHERE started_checkout
        ),
        cart_items AS (
            SELECT session_id, fx_rate, unnest(products) AS item
            FROM events WHERE event_name = 'product_added'
        ),
        added_value AS (
            SELECT session_id, sum(item.price * item.quantity * fx_rate) AS value
            FROM cart_items GROUP BY session_id
        ),
        recovered AS (
            SELECT DISTINCT a.session_id
            FROM period a JOIN s b
              ON b.shopper = a.shopper AND b.session_id <> a.session_id AND b.orders > 0
             AND b.started_at > a.started_at AND b.started_at <= a.ended_at + INTERVAL 7 DAY
            WHERE a.orders = 0
        )
        SELECT stage, count(*) AS sessions,
               count(*) FILTER (WHERE orders = 0) AS abandoned,
               count(*) FILTER (WHERE orders = 0) / count(*) AS abandonment_rate,
               coalesce(sum(v.value) FILTER (WHERE orders = 0), 0) AS value_left,
               count(r.session_id) AS recovered,
               count(r.session_id) / nullif(count(*) FILTER (WHERE orders = 0), 0) AS recovery_rate
        FROM staged
        LEFT JOIN added_value v USING (session_id)
        LEFT JOIN recovered r USING (session_id)
        GROUP BY stage
    """
    return rows(con, sql, p)


ATTRIBUTION_MODELS = ["first_touch", "last_touch", "last_non_direct", "linear",
                      "position_based", "time_decay"]


@report(keys=["dimension"])
def attribution(con, p):
    """Orders placed in the period (UTC day of placed_at) except cancelled / payment failed,
    credited to channels (default `by`) by six models. An order's shopper: its user, else the
    current identities user of its anonymous id, else its anonymous id. Touches: that shopper's
    non-bot sessions started at most lookback_days (30) days before placed_at and not after it,
    by start ('(none)' for a missing channel). First/last touch 1 to the first/last; last
    non-direct 1 to the last touch whose channel is not 'direct' (else the last); linear 1/n;
    position-based 1 / 0.5+0.5 / 0.4 first, 0.4 last, 0.2/(n-2) between; time decay in proportion
    to 0.5^(hours from session start to order / (24 x half_life_days=7)). No touch: '(no touch)'.
    Revenue credited = credit x the order's revenue_reporting.
    READING: touches of equal start are ordered by session_id."""
    lookback_days, half_life_days = 30, 7.0
    sql = f"""
        WITH sales AS (SELECT * FROM ({ORDERS_WITH_SHOPPER}) WHERE {SALE}),
        firsts AS (
            -- a new customer's order: the shopper's earliest sale in the lake (ties by order_id)
            SELECT shopper, arg_min(order_id, (placed_at, order_id)) AS first_id
            FROM sales GROUP BY shopper
        ),
        o AS (
            SELECT sales.*, (sales.order_id = f.first_id)::DOUBLE AS first_order
            FROM sales JOIN firsts f USING (shopper)
            WHERE placed_at::date BETWEEN $start AND $end
        ),
        touches AS (
            SELECT o.order_id, coalesce(s.channel, '(none)') AS dim,
                   coalesce(s.channel, '(none)') <> 'direct' AS non_direct,
                   row_number() OVER (PARTITION BY o.order_id
                                      ORDER BY s.started_at, s.session_id) AS i,
                   count(*) OVER (PARTITION BY o.order_id) AS n,
                   pow(0.5, (epoch(o.placed_at) - epoch(s.started_at)) / 3600.0
                            / (24 * {half_life_days})) AS decay
            FROM o JOIN ({NON_BOT_SESSIONS}) s
              ON s.shopper = o.shopper
             AND s.started_at <= o.placed_at
             AND s.started_at >= o.placed_at - INTERVAL {lookback_days} DAY
        ),
        marked AS (
            SELECT *,
                   max(CASE WHEN non_direct THEN i END) OVER (PARTITION BY order_id) AS last_nd,
                   sum(decay) OVER (PARTITION BY order_id) AS decay_total
            FROM touches
        ),
        credits AS (
            SELECT order_id, dim,
                   (i = 1)::DOUBLE AS first_touch,
                   (i = n)::DOUBLE AS last_touch,
                   (i = coalesce(last_nd, n))::DOUBLE AS last_non_direct,
                   1.0 / n AS linear,
                   CASE WHEN n = 1 THEN 1.0
                        WHEN n = 2 THEN 0.5
                        WHEN i = 1 OR i = n THEN 0.4
                        ELSE 0.2 / (n - 2) END AS position_based,
                   decay / decay_total AS time_decay
            FROM marked
            UNION ALL
            SELECT order_id, '(no touch)', 1, 1, 1, 1, 1, 1
            FROM o WHERE order_id NOT IN (SELECT order_id FROM touches)
        )
        SELECT dim AS dimension,
               {", ".join(f"sum({m}) AS orders_{m}, sum({m} * o.revenue_reporting) AS revenue_{m}"
                          for m in ATTRIBUTION_MODELS)},
               {", ".join(f"sum({m} * o.first_order) AS new_customers_{m}" for m in ATTRIBUTION_MODELS)},
               NULL::DOUBLE AS spend  -- by channel (the default): spend is only by campaign
        FROM credits JOIN o USING (order_id)
        GROUP BY dim
    """
    return rows(con, sql, p)


@report(keys=["product_id", "relation", "related_product_id"],
        sort=[("score", True)], sort_within=["product_id", "relation"])
def bought_together(con, p):
    """From product_affinity as it is: per product and relation, the neighbours with the
    highest score, best first, up to top=5. READING: equal scores are ordered by
    related_product_id."""
    sql = """
        SELECT product_id, relation, rank, related_product_id, together, score
        FROM (SELECT *, row_number() OVER (PARTITION BY product_id, relation
                                           ORDER BY score DESC, related_product_id) AS rank
              FROM product_affinity)
        WHERE rank <= 5
        ORDER BY product_id, relation, rank
    """
    return rows(con, sql, p)


@report(keys=["cohort", "month_number"])
def cohorts(con, p):
    """Shoppers by the UTC month of their first non-bot session ever, for the shoppers first
    seen between from and to: per cohort and month since it (0 = its own month, up to the latest
    month with non-bot sessions): size, active shoppers (a non-bot session that month), retention
    (active / size), orders and revenue of the cohort's sessions that month.
    Months in which no member of the cohort had a session have no row.
    READING: 'the latest month with sessions' is the latest month of any non-bot session in the
    lake."""
    sql = f"""
        WITH s AS ({NON_BOT_SESSIONS}),
        first_seen AS (SELECT shopper, min(started_at) AS first_start FROM s GROUP BY 1),
        members AS (
            SELECT shopper, date_trunc('month', first_start)::date AS cohort
            FROM first_seen WHERE first_start::date BETWEEN $start AND $end
        ),
        sizes AS (SELECT cohort, count(*) AS size FROM members GROUP BY cohort),
        grid AS (
            SELECT cohort, size, unnest(range(0, date_diff('month', cohort,
                       (SELECT max(started_at) FROM s)::date) + 1)) AS month
            FROM sizes
        ),
        activity AS (
            SELECT m.cohort, date_diff('month', m.cohort, s.started_at::date) AS month,
                   count(DISTINCT s.shopper) AS active, sum(s.orders) AS orders,
                   sum(s.revenue) AS revenue
            FROM s JOIN members m USING (shopper)
            GROUP BY ALL
        )
        SELECT g.cohort, g.month AS month_number, g.size AS shoppers,
               coalesce(a.active, 0) AS active,
               coalesce(a.active, 0) / g.size AS retention,
               coalesce(a.orders, 0) AS orders, coalesce(a.revenue, 0) AS revenue
        FROM grid g JOIN activity a USING (cohort, month)
    """
    return rows(con, sql, p)


@report(keys=["coupon"])
def coupons(con, p):
    """Per coupon ('(no coupon)' without one), orders placed in the period except cancelled /
    payment failed: orders, revenue (reporting), discount in the reporting currency
    (discount x total_reporting / total), AOV (revenue / orders)."""
    sql = f"""
        SELECT coalesce(coupon, '(no coupon)') AS coupon, count(*) AS orders,
               sum(revenue_reporting) AS revenue,
               coalesce(sum(discount * total_reporting / nullif(total, 0)), 0) AS discount,
               sum(revenue_reporting) / count(*) AS average_order_value
        FROM o_orders
        WHERE order_date BETWEEN $start AND $end AND {SALE}
        GROUP BY 1
    """
    return rows(con, sql, p)


@report(keys=["day", "decision"])
def fraud_daily(con, p):
    """Per UTC day of the scored event (fraud_decisions.event_time) and verdict: decisions,
    distinct orders, their amount (each distinct order's total_reporting once), the average
    score, and the orders later refunded (refunded_at set)."""
    sql = """
        WITH d AS (
            SELECT event_time::date AS day, decision, order_id, score
            FROM fraud_decisions WHERE event_time::date BETWEEN $start AND $end
        ),
        per_order AS (
            SELECT DISTINCT d.day, d.decision, d.order_id, o.total_reporting,
                   o.refunded_at IS NOT NULL AS refunded
            FROM d LEFT JOIN o_orders o USING (order_id)
        ),
        amounts AS (
            SELECT day, decision, sum(total_reporting) AS amount,
                   count(*) FILTER (WHERE refunded) AS refunded
            FROM per_order GROUP BY ALL
        )
        SELECT day, decision, count(*) AS decisions, count(DISTINCT order_id) AS orders,
               any_value(a.amount) AS amount, avg(score) AS average_score,
               any_value(a.refunded) AS later_refunded
        FROM d JOIN amounts a USING (day, decision)
        GROUP BY day, decision
    """
    return rows(con, sql, p)


@report(keys=["order_id"], sort=[("score", True)])
def fraud_review_queue(con, p):
    """Orders whose latest decision (greatest decided_at) is 'review', scored in the period (UTC
    day of that decision's event_time): order, user and anonymous ids, scored_at, score, rules
    that fired, total (reporting), status now, refunded since; highest score first.
    READING: the ids are the scored event's (fraud_decisions.user_id / anonymous_id, not
    stitched); 'the rules that fired' are the enforced `reasons` (not shadow_reasons); decisions
    with equal decided_at are broken by event_id."""
    sql = """
        WITH latest AS (
            SELECT * FROM fraud_decisions
            QUALIFY row_number() OVER (PARTITION BY order_id
                                       ORDER BY decided_at DESC, event_id) = 1
        )
        SELECT l.order_id, l.user_id, l.anonymous_id, l.event_time AS scored_at, l.score,
               array_to_string(l.reasons, ', ') AS rules, o.total_reporting AS total, o.status,
               o.refunded_at IS NOT NULL AS refunded
        FROM latest l LEFT JOIN o_orders o USING (order_id)
        WHERE l.decision = 'review' AND l.event_time::date BETWEEN $start AND $end
        ORDER BY l.score DESC, l.order_id
    """
    return rows(con, sql, p)


@report(keys=["rule", "mode"])
def fraud_rules(con, p):
    """Per rule and mode ('enforced' from `reasons`, 'shadow' from `shadow_reasons`) over the
    period's decisions (UTC day of the scored event): times fired, fired in decisions that
    blocked / sent to review / allowed, distinct orders, of them later refunded."""
    sql = """
        WITH d AS (
            SELECT * FROM fraud_decisions WHERE event_time::date BETWEEN $start AND $end
        ),
        fired AS (
            SELECT unnest(reasons) AS rule, 'enforced' AS mode, decision, order_id FROM d
            UNION ALL
            SELECT unnest(shadow_reasons), 'shadow', decision, order_id FROM d
        )
        SELECT rule, mode, count(*) AS hits,
               count(*) FILTER (WHERE decision = 'block') AS blocked,
               count(*) FILTER (WHERE decision = 'review') AS reviewed,
               count(*) FILTER (WHERE decision = 'allow') AS allowed,
               count(DISTINCT order_id) AS orders,
               count(DISTINCT order_id) FILTER (WHERE o.refunded_at IS NOT NULL) AS later_refunded
        FROM fired LEFT JOIN o_orders o USING (order_id)
        GROUP BY rule, mode
    """
    return rows(con, sql, p)


@report(keys=["campaign"])
def campaign_spend(con, p):
    """Per campaign with spend in the period (UTC spend_date): its sources (distinct, sorted,
    comma-separated), spend x fx_rate summed, clicks and impressions summed, the non-bot sessions
    of the period whose first touch has that campaign and a source it was bought on, cost per
    session and per click."""
    sql = """
        WITH spend AS (
            SELECT campaign,
                   string_agg(DISTINCT source, ',' ORDER BY source) AS sources,
                   sum(spend * coalesce(fx_rate, 0)) AS spend,
                   sum(clicks) AS clicks, sum(impressions) AS impressions
            FROM campaign_spend WHERE spend_date BETWEEN $start AND $end
            GROUP BY campaign
        ),
        paid AS (
            SELECT s.utm_campaign AS campaign, count(*) AS sessions
            FROM o_sessions s
            WHERE NOT s.is_bot AND s.session_date BETWEEN $start AND $end
              AND (s.utm_source, s.utm_campaign) IN (SELECT source, campaign FROM campaign_spend)
            GROUP BY 1
        )
        SELECT spend.*, coalesce(paid.sessions, 0) AS sessions,
               spend.spend / nullif(paid.sessions, 0) AS cost_per_session,
               spend.spend / nullif(spend.clicks, 0) AS cost_per_click
        FROM spend LEFT JOIN paid USING (campaign)
    """
    return rows(con, sql, p)


@report(keys=["reason", "stage", "field"])
def bad_rows(con, p):
    """Per reason, stage and field ('(none)' when missing) of the inputs refused in the period
    (UTC day received): rows, first and last received."""
    sql = """
        SELECT reason, stage, coalesce(field, '(none)') AS field, count(*) AS rows,
               min(received_at) AS first_seen, max(received_at) AS last_seen
        FROM bad_rows
        WHERE received_at::date BETWEEN $start AND $end
        GROUP BY ALL
    """
    return rows(con, sql, p)


@report(keys=["reason", "stage"])
def bad_row_examples(con, p):
    """Per reason and stage, the latest input refused in the period (UTC day received; ties to
    the greatest bad_row_id): received_at, field, message, the first 500 characters of the input
    ('(not UTF-8)' when it is not UTF-8), and how many inputs had that reason and stage."""
    sql = """
        SELECT reason, stage, count(*) OVER (PARTITION BY reason, stage) AS rows,
               received_at, field, message,
               coalesce(substr(try(decode(raw)), 1, 500), '(not UTF-8)') AS example,
               row_number() OVER (PARTITION BY reason, stage
                                  ORDER BY received_at DESC, bad_row_id DESC) AS n
        FROM bad_rows
        WHERE received_at::date BETWEEN $start AND $end
        QUALIFY n = 1
    """
    return [{k: v for k, v in r.items() if k != "n"} for r in rows(con, sql, p)]


@report(keys=["country"])
def fulfilment(con, p):
    """Per shipping country ('(none)' when missing), all orders placed in the period: orders,
    cancelled (cancelled_at set), payment failed (status), shipped / delivered / refunded (their
    timestamps set), returned (a return_requested event at any time); cancellation, return and
    refund rates over orders; average hours from placing to the first payment_authorized, to
    shipping and to delivery over the orders that got there; refunded amount (order_refunded
    events' total x fx_rate).
    READING: 'failed payment' is the status payment_failed (a retried, then paid order is not
    counted); shipped/delivered times are the first such event."""
    sql = """
        WITH o AS (SELECT * FROM o_orders WHERE order_date BETWEEN $start AND $end),
        refunds AS (
            SELECT order_id, sum(total * fx_rate) AS amount
            FROM events WHERE event_name = 'order_refunded' GROUP BY order_id
        ),
        hours AS (
            SELECT order_id,
                   (epoch(paid_at) - epoch(placed_at)) / 3600 AS to_payment,
                   (epoch(shipped_at) - epoch(placed_at)) / 3600 AS to_shipping,
                   (epoch(delivered_at) - epoch(placed_at)) / 3600 AS to_delivery
            FROM o
        )
        SELECT coalesce(shipping_country, '(none)') AS country,
               count(*) AS orders,
               count(cancelled_at) AS cancelled,
               count(*) FILTER (WHERE status = 'payment_failed') AS payment_failed,
               count(shipped_at) AS shipped,
               count(delivered_at) AS delivered,
               count(refunded_at) AS refunded,
               count(return_requested_at) AS returned,
               count(cancelled_at) / count(*) AS cancellation_rate,
               count(return_requested_at) / count(*) AS return_rate,
               count(refunded_at) / count(*) AS refund_rate,
               avg(to_payment) AS hours_to_pay,
               avg(to_shipping) AS hours_to_ship,
               avg(to_delivery) AS hours_to_deliver,
               coalesce(sum(r.amount), 0) AS refunded_amount
        FROM o JOIN hours USING (order_id) LEFT JOIN refunds r USING (order_id)
        GROUP BY 1
    """
    return rows(con, sql, p)


@report(keys=["channel"])
def lifetime_value(con, p):
    """Shoppers whose first non-bot session ever started between from and to, by that first
    session's channel ('(none)' when missing): shoppers, buyers (an order in any of their
    non-bot sessions so far), repeat buyers (two orders or more), repeat purchase rate, orders,
    revenue, lifetime value per shopper (revenue / shoppers).
    READING: 'so far' = everything in the lake, not cut at `to`; sessions of equal start are
    ordered by session_id."""
    sql = f"""
        WITH s AS ({NON_BOT_SESSIONS}),
        per_shopper AS (
            SELECT shopper,
                   arg_min(coalesce(channel, '(none)'), (started_at, session_id)) AS channel,
                   min(started_at) AS first_start,
                   sum(orders) AS orders, sum(revenue) AS revenue
            FROM s GROUP BY shopper
        )
        SELECT channel, count(*) AS shoppers,
               count(*) FILTER (WHERE orders >= 1) AS buyers,
               count(*) FILTER (WHERE orders >= 2) AS repeat_buyers,
               count(*) FILTER (WHERE orders >= 2)
                   / nullif(count(*) FILTER (WHERE orders >= 1), 0) AS repeat_purchase_rate,
               sum(orders) AS orders, sum(revenue) AS revenue,
               sum(revenue) / count(*) AS lifetime_value
        FROM per_shopper
        WHERE first_start::date BETWEEN $start AND $end
        GROUP BY channel
    """
    return rows(con, sql, p)


@report(keys=["dimension"], sort=[("revenue", True), ("views", True)])
def products(con, p):
    """Per product (default `by`) over the period's non-bot events (by UTC day): views
    (product_viewed), adds (product_added), add-to-cart rate (adds / views), orders (completed
    orders listing it), units and revenue (price x quantity x the order's fx_rate) from the
    order_completed line items, purchase rate (orders / views), returns (of those orders, the
    ones with a return_requested event at any time), return rate (returns / orders), reviews
    (product_reviewed) and their average rating. Sorted by revenue, then views (READING: both
    descending). (A product's category and brand, of its latest event in the period, only
    matter for by=category / by=brand, not the default by=product.)
    READING: a product is identified in an event by its `products` line items; a product has a
    row when it has a view, add, order or review in the period; a ratio over zero is null."""
    sql = """
        WITH ev AS (
            SELECT * FROM events
            WHERE NOT coalesce(is_bot, false) AND event_time::date BETWEEN $start AND $end
        ),
        items AS (
            SELECT event_id, event_name, event_time, order_id, fx_rate, rating,
                   unnest(products) AS item
            FROM ev WHERE products IS NOT NULL
        ),
        returned AS (
            SELECT DISTINCT order_id FROM events WHERE event_name = 'return_requested'
        ),
        per_product AS (
            SELECT item.product_id AS product_id,
                   count(DISTINCT event_id) FILTER (WHERE event_name = 'product_viewed') AS views,
                   count(DISTINCT event_id) FILTER (WHERE event_name = 'product_added') AS adds,
                   count(DISTINCT order_id) FILTER (WHERE event_name = 'order_completed') AS orders,
                   coalesce(sum(item.quantity) FILTER (WHERE event_name = 'order_completed'), 0)
                       AS units,
                   coalesce(sum(item.price * item.quantity * fx_rate)
                            FILTER (WHERE event_name = 'order_completed'), 0) AS revenue,
                   count(DISTINCT order_id) FILTER (
                       WHERE event_name = 'order_completed'
                         AND order_id IN (SELECT order_id FROM returned)) AS returns,
                   count(DISTINCT event_id) FILTER (WHERE event_name = 'product_reviewed')
                       AS reviews,
                   avg(rating) FILTER (WHERE event_name = 'product_reviewed') AS avg_rating
            FROM items GROUP BY 1
        )
        SELECT product_id AS dimension, views, adds AS adds_to_cart,
               adds / nullif(views, 0) AS add_to_cart_rate,
               orders, units, revenue,
               orders / nullif(views, 0) AS purchase_rate,
               returns, returns / nullif(orders, 0) AS return_rate,
               reviews, avg_rating AS average_rating
        FROM per_product
        WHERE views + adds + orders + reviews > 0
        ORDER BY revenue DESC, views DESC, product_id
    """
    return rows(con, sql, p)


@report(keys=["product_id"],
        sort=[("hours_out_of_stock", True), ("days_of_cover", False, True), ("product_id", False)])
def inventory(con, p):
    """Per product, from the stock levels of the period's end and the storefront's demand.
    A stock update: a `custom` event whose custom_event_name is "Inventory Updated" or
    "inventory_updated" in any case; each product line with a quantity gives that product the
    level `quantity` from the event's time on (a product listed twice in one update: the lower
    quantity); updates are ordered by event time, then event id. The period: [from's midnight UTC,
    the end of `to`, or now if earlier). Per product with an update before the period's end:
    category, brand and stock level of its latest update before the end; out of stock (level 0);
    stock-outs (updates in the period setting 0 after an update above 0, or as its first update);
    hours out of stock within the period; non-bot product_viewed / product_added events of the
    period's UTC days while its latest update at or before the event had set 0; units sold (the
    period's order_completed lines, quantity 1 when missing, bots included); sales per day (units /
    days in the period); days of cover (level / sales per day, null without sales). Sorted by
    hours out of stock (desc), days of cover (asc, empty last), product id.
    READING: "now" is the oracle's own clock (DuckDB now()); shoplake answered a moment before,
    which only matters for a period that contains now (none of the test's periods does). A period
    wholly after now (its end, now, before its start) is empty: 0 hours and no stock-outs, while
    its rows and levels are those of now (views, adds and sales go by UTC day; none lie ahead).
    READING: the description names no columns: those the dashboard shows (product_id, category,
    stock_level, stock_outs, hours_out_of_stock, views_out_of_stock, adds_out_of_stock,
    units_sold, days_of_cover) and brand, out_of_stock, sales_per_day.
    READING: "days in the period" is the number of calendar days from `from` to `to` (as the
    other reports' periods), even when now cuts the period short.
    READING: "or that are its first update" qualifies the updates setting 0 (a first update that
    sets a level above 0 is no stock-out).
    READING: the name is matched exactly but for case (no trimming); an update counts whatever
    its source and is_bot; product lines without a product_id are ignored, and so are lines
    without a quantity (they do not count as an update of the product at all).
    READING: "before the period's end" / "up to then" is strictly before the end (the end is
    exclusive); category and brand are the latest update's even when it leaves them empty (of
    the line with the lower quantity when listed twice).
    READING: units sold counts every order_completed event of the period (by its UTC day), so an
    order_completed re-sent under a second event id counts twice, as in `products`; views and
    adds are distinct events (an event listing the product twice counts once)."""
    sql = """
        WITH bounds AS (
            SELECT $start::DATE::TIMESTAMPTZ AS p_start,
                   least(($end::DATE + INTERVAL 1 DAY)::TIMESTAMPTZ, now()) AS p_end,
                   date_diff('day', $start::DATE, $end::DATE) + 1 AS days
        ),
        lines AS (
            SELECT event_id, event_time, unnest(products) AS item
            FROM events
            WHERE event_name = 'custom'
              AND lower(custom_event_name) IN ('inventory updated', 'inventory_updated')
        ),
        updates AS (  -- one row per update and product
            SELECT item.product_id AS product_id, event_id, event_time,
                   min(item.quantity) AS level,
                   -- the line of the lower quantity (then the smaller category/brand)
                   (array_agg(item.category ORDER BY item.quantity, item.category NULLS LAST))[1]
                       AS category,
                   (array_agg(item.brand ORDER BY item.quantity, item.brand NULLS LAST))[1]
                       AS brand
            FROM lines
            WHERE item.product_id IS NOT NULL AND item.quantity IS NOT NULL
            GROUP BY item.product_id, event_id, event_time
        ),
        seq AS (
            SELECT u.*,
                   lag(level) OVER w AS level_before,
                   lead(event_time) OVER w AS next_time
            FROM updates u
            WINDOW w AS (PARTITION BY product_id ORDER BY event_time, event_id)
        ),
        latest AS (  -- each product's latest update before the period's end
            SELECT product_id, category, brand, level
            FROM seq, bounds WHERE event_time < p_end
            QUALIFY row_number() OVER (PARTITION BY product_id
                                       ORDER BY event_time DESC, event_id DESC) = 1
        ),
        spans AS (
            SELECT product_id,
                   count(*) FILTER (WHERE event_time >= p_start AND event_time < p_end
                                      AND level = 0
                                      AND (level_before IS NULL OR level_before > 0))
                       AS stock_outs,
                   coalesce(sum(greatest(0,
                       epoch_us(least(coalesce(next_time, p_end), p_end))
                       - epoch_us(greatest(event_time, p_start))))
                       FILTER (WHERE level = 0), 0) / 3600e6 AS hours_out_of_stock
            FROM seq, bounds
            GROUP BY product_id
        ),
        demand AS (
            SELECT event_id, event_name, event_time, unnest(products).product_id AS product_id
            FROM events
            WHERE event_name IN ('product_viewed', 'product_added')
              AND NOT coalesce(is_bot, false)
              AND event_time::date BETWEEN $start AND $end
        ),
        demand_status AS (  -- the level its latest update at or before the event had set
            SELECT d.event_id, d.event_name, d.product_id, u.level
            FROM demand d JOIN seq u
              ON u.product_id = d.product_id AND u.event_time <= d.event_time
            QUALIFY row_number() OVER (PARTITION BY d.event_id, d.product_id
                                       ORDER BY u.event_time DESC, u.event_id DESC) = 1
        ),
        missed AS (
            SELECT product_id,
                   count(DISTINCT event_id) FILTER (WHERE event_name = 'product_viewed')
                       AS views_out_of_stock,
                   count(DISTINCT event_id) FILTER (WHERE event_name = 'product_added')
                       AS adds_out_of_stock
            FROM demand_status WHERE level = 0
            GROUP BY product_id
        ),
        sold AS (
            SELECT item.product_id AS product_id,
                   sum(coalesce(item.quantity, 1))::BIGINT AS units_sold
            FROM (SELECT unnest(products) AS item FROM events
                  WHERE event_name = 'order_completed'
                    AND event_time::date BETWEEN $start AND $end)
            GROUP BY 1
        ),
        per_product AS (
            SELECT l.product_id, l.category, l.brand, l.level AS stock_level,
                   l.level = 0 AS out_of_stock,
                   s.stock_outs, s.hours_out_of_stock,
                   coalesce(m.views_out_of_stock, 0) AS views_out_of_stock,
                   coalesce(m.adds_out_of_stock, 0) AS adds_out_of_stock,
                   coalesce(so.units_sold, 0) AS units_sold,
                   coalesce(so.units_sold, 0) / b.days AS sales_per_day
            FROM latest l
            JOIN spans s USING (product_id)
            LEFT JOIN missed m USING (product_id)
            LEFT JOIN sold so USING (product_id)
            CROSS JOIN bounds b
        )
        SELECT *,
               CASE WHEN units_sold > 0 THEN stock_level / sales_per_day END AS days_of_cover
        FROM per_product
        ORDER BY hours_out_of_stock DESC, days_of_cover ASC NULLS LAST, product_id
    """
    return rows(con, sql, p)


@report(keys=["promotion_id"])
def promotions(con, p):
    """Per promotion (id; its latest name in the period) over the period's non-bot events: views
    (promotion_viewed), clicks (promotion_clicked), click-through rate (clicks / views), the
    distinct orders completed in a session after a click on the promotion in it, on the click's
    UTC day or the next, their revenue (reporting).
    The click is in the period; the order may complete after it (strictly after the click, and on
    the click's UTC day or the next: its event_time::date, the lake's event_date, is the click's
    or the one after).
    READING: a ratio over zero is null.
    READING: every click opens its own window (not only the session's first click): an order two
    days after a session's first click still counts when it is strictly after another click of
    the promotion in the session (in the period) of its own UTC day or the day before. "The next
    day" is the whole next calendar day (UTC), not 24 hours from the click."""
    sql = """
        WITH ev AS (
            SELECT * FROM events
            WHERE NOT coalesce(is_bot, false) AND event_time::date BETWEEN $start AND $end
        ),
        promo AS (
            SELECT promotion_id,
                   arg_min(promotion_name, recency) FILTER (WHERE promotion_name IS NOT NULL)
                       AS promotion_name,
                   count(*) FILTER (WHERE event_name = 'promotion_viewed') AS views,
                   count(*) FILTER (WHERE event_name = 'promotion_clicked') AS clicks
            FROM (SELECT *, row_number() OVER (PARTITION BY promotion_id
                                               ORDER BY event_time DESC, event_id) AS recency
                  FROM ev WHERE event_name IN ('promotion_viewed', 'promotion_clicked')
                            AND promotion_id IS NOT NULL)
            GROUP BY promotion_id
        ),
        click AS (
            SELECT promotion_id, session_id, event_time AS clicked_at
            FROM ev WHERE event_name = 'promotion_clicked' AND promotion_id IS NOT NULL
        ),
        promo_orders AS (
            SELECT DISTINCT c.promotion_id, o.order_id, o.revenue_reporting
            FROM click c JOIN events o
              ON o.session_id = c.session_id AND o.event_name = 'order_completed'
             AND NOT coalesce(o.is_bot, false)
             AND o.event_time > c.clicked_at
             AND o.event_time::date BETWEEN c.clicked_at::date AND c.clicked_at::date + 1
        ),
        promo_sales AS (
            SELECT promotion_id, count(DISTINCT order_id) AS orders,
                   sum(revenue_reporting) AS revenue
            FROM promo_orders GROUP BY promotion_id
        )
        SELECT promotion_id, promotion_name, views, clicks,
               clicks / nullif(views, 0) AS click_rate,
               coalesce(orders, 0) AS orders, coalesce(revenue, 0) AS revenue
        FROM promo LEFT JOIN promo_sales USING (promotion_id)
    """
    return rows(con, sql, p)


@report(keys=["reason"])
def returns(con, p):
    """Per reason ('(none)' when missing) over the period's events (UTC day): return requests
    (return_requested), refunds (order_refunded), refunded amount (their total x fx_rate),
    orders concerned (distinct orders with either event)."""
    sql = """
        SELECT coalesce(reason, '(none)') AS reason,
               count(*) FILTER (WHERE event_name = 'return_requested') AS return_requests,
               count(*) FILTER (WHERE event_name = 'order_refunded') AS refunds,
               coalesce(sum(total * fx_rate) FILTER (WHERE event_name = 'order_refunded'), 0)
                   AS refunded_amount,
               count(DISTINCT order_id) AS orders
        FROM events
        WHERE event_name IN ('return_requested', 'order_refunded')
          AND event_time::date BETWEEN $start AND $end
        GROUP BY 1
    """
    return rows(con, sql, p)


@report(keys=["segment"])
def rfm(con, p):
    """Per buyer (order's user, else current identities user of its anonymous id, else anonymous
    id) over the orders placed between from and to except cancelled / payment failed: recency
    (days from the last order's UTC day to `to`), frequency (orders), monetary (revenue,
    reporting). Segments, first match: champions r<=30 & f>=3; loyal f>=3; new f=1 & r<=30;
    promising r<=30; at_risk r>90 & f>=2; hibernating. Per segment: buyers, orders, revenue,
    average recency, frequency, monetary. READING: 'placed within 30 days' is recency <= 30."""
    sql = f"""
        WITH o AS (
            SELECT * FROM ({ORDERS_WITH_SHOPPER})
            WHERE placed_at::date BETWEEN $start AND $end AND {SALE}
        ),
        buyers AS (
            SELECT shopper, date_diff('day', max(placed_at::date), $end::DATE) AS recency,
                   count(*) AS frequency, sum(revenue_reporting) AS monetary
            FROM o GROUP BY shopper
        ),
        segmented AS (
            SELECT *, CASE
                WHEN recency <= 30 AND frequency >= 3 THEN 'champions'
                WHEN frequency >= 3 THEN 'loyal'
                WHEN frequency = 1 AND recency <= 30 THEN 'new'
                WHEN recency <= 30 THEN 'promising'
                WHEN recency > 90 AND frequency >= 2 THEN 'at_risk'
                ELSE 'hibernating' END AS segment
            FROM buyers
        )
        SELECT segment, count(*) AS buyers, sum(frequency) AS orders, sum(monetary) AS revenue,
               avg(recency) AS average_recency_days, avg(frequency) AS average_frequency,
               avg(monetary) AS average_monetary
        FROM segmented GROUP BY segment
    """
    return rows(con, sql, p)


@report(keys=["query"], sort=[("searches", True)])
def search(con, p):
    """Per search query (lower-cased, trimmed) of the period's non-bot products_searched events:
    searches; searches followed by a click (product_clicked / product_viewed in the same session
    after the search and before the session's next search, on the search's UTC day or the next);
    without one; click rate; searches whose session completed an order after the search on the
    search's UTC day or the next; revenue of those orders (each order once per query,
    reporting); revenue per search. Sorted by searches (READING: descending).
    READING: 'after' is strictly later event_time; the next search is the session's next
    products_searched event whatever its day; clicks and orders need not fall in the period;
    empty queries are kept as ''.
    READING: "on the search's UTC day or the next" bounds the click's and the order's own UTC
    day (event_time::date, the lake's event_date) to the search's or the one after: the whole
    next calendar day, not 24 hours from the search. It bounds the click as well as the order
    (the sentence's "both strictly" is about after/before, the day clause follows it)."""
    sql = """
        WITH all_searches AS (
            SELECT event_id, session_id, event_time, is_bot,
                   lower(trim(search_query)) AS query,
                   lead(event_time) OVER (PARTITION BY session_id
                                          ORDER BY event_time, event_id) AS next_search_at
            FROM events WHERE event_name = 'products_searched'
        ),
        s AS (
            SELECT * FROM all_searches
            WHERE NOT coalesce(is_bot, false) AND event_time::date BETWEEN $start AND $end
        ),
        clicked AS (
            SELECT DISTINCT s.event_id
            FROM s JOIN events c
              ON c.session_id = s.session_id
             AND c.event_name IN ('product_clicked', 'product_viewed')
             AND c.event_time > s.event_time
             AND (s.next_search_at IS NULL OR c.event_time < s.next_search_at)
             AND c.event_time::date BETWEEN s.event_time::date AND s.event_time::date + 1
        ),
        bought AS (
            SELECT s.event_id, s.query, o.order_id, o.revenue_reporting
            FROM s JOIN events o
              ON o.session_id = s.session_id AND o.event_name = 'order_completed'
             AND o.event_time > s.event_time
             AND o.event_time::date BETWEEN s.event_time::date AND s.event_time::date + 1
        ),
        query_revenue AS (
            SELECT query, sum(revenue_reporting) AS revenue
            FROM (SELECT DISTINCT query, order_id, revenue_reporting FROM bought)
            GROUP BY query
        ),
        per_query AS (
            SELECT query, count(*) AS searches,
                   count(*) FILTER (WHERE event_id IN (SELECT event_id FROM clicked)) AS clicked,
                   count(*) FILTER (WHERE event_id IN (SELECT event_id FROM bought))
                       AS converted
            FROM s GROUP BY query
        )
        SELECT query, searches, clicked,
               searches - clicked AS without_click,
               clicked / searches AS click_rate,
               converted,
               converted / searches AS conversion_rate,
               coalesce(r.revenue, 0) AS revenue,
               coalesce(r.revenue, 0) / searches AS revenue_per_search
        FROM per_query LEFT JOIN query_revenue r USING (query)
        ORDER BY searches DESC, query
    """
    return rows(con, sql, p)


# --------------------------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------------------------


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float, decimal.Decimal)) and not isinstance(v, bool)


def normalize(v: Any) -> Any:
    """The oracle's DuckDB values as comparable plain values."""
    if isinstance(v, decimal.Decimal):
        return float(v)
    if isinstance(v, dt.datetime):
        return v.astimezone(dt.timezone.utc)
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, (list, tuple)):
        return [normalize(x) for x in v]
    return v


def coerce_like(answer: Any, mine: Any) -> Any:
    """shoplake's JSON value, read as the type of the oracle's value (decimals may come as
    strings, timestamps as RFC 3339)."""
    if answer is None:
        return None
    if is_number(mine) and isinstance(answer, str):
        try:
            return float(answer)
        except ValueError:
            return answer
    if isinstance(mine, dt.datetime) and isinstance(answer, str):
        try:
            parsed = dt.datetime.fromisoformat(answer.replace("Z", "+00:00"))
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=dt.timezone.utc)
            return parsed.astimezone(dt.timezone.utc)
        except ValueError:
            return answer
    if isinstance(mine, str) and isinstance(answer, str) and re.fullmatch(r"\d{4}-\d\d-\d\d", mine):
        return answer[:10] if re.match(r"\d{4}-\d\d-\d\dT00:00:00", answer) else answer
    return answer


def same(a: Any, b: Any) -> bool:
    if is_number(a) and is_number(b):
        a, b = float(a), float(b)
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def show(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, dt.datetime):
        return v.isoformat()
    return repr(v)


def sort_violations(answer: list[dict], rep: Report) -> list[str]:
    """Where the answer's rows break the stated sort (within `sort_within` groups)."""
    problems = []
    last: dict[tuple, tuple] = {}
    for n, row in enumerate(answer):
        group = tuple(row.get(c) for c in rep.sort_within)
        key = []
        for col, desc, *nulls_last in rep.sort:
            v = row.get(col)
            v = float(v) if isinstance(v, str) and re.fullmatch(r"-?[\d.eE+-]+", v) else v
            if v is None:
                key.append(math.inf if (nulls_last[0] if nulls_last else desc) else -math.inf)
                continue
            key.append(-v if desc else v)
        key = tuple(key)
        if group in last and key < last[group]:
            problems.append(f"row {n} ({', '.join(f'{c}={row.get(c)!r}' for c, *_ in rep.sort)})"
                            f" comes after a row it should follow")
        last[group] = key
    return problems


def compare(rep: Report, mine: list[dict], answer: Any) -> list[str]:
    """Differences between the oracle's rows and shoplake's answer, as printable lines."""
    if not isinstance(answer, list) or not all(isinstance(r, dict) for r in answer):
        return ["answer is not a JSON array of objects"]
    out: list[str] = []
    my_cols = list(mine[0]) if mine else None
    # shoplake's JSON leaves out the fields whose value is null: a row's missing field is null,
    # and a column is known to be missing only if it never shows and the oracle's isn't all null.
    ans_cols = list(dict.fromkeys(c for r in answer for c in r)) if answer else None
    if my_cols is not None and ans_cols is not None:
        only_mine = [c for c in my_cols if c not in ans_cols
                     and any(r.get(c) is not None for r in mine)]
        only_ans = [c for c in ans_cols if c not in my_cols]
        if only_mine or only_ans:
            out.append(f"columns differ: oracle only {only_mine}, shoplake only {only_ans}")
    if len(mine) != len(answer):
        out.append(f"row count: oracle {len(mine)}, shoplake {len(answer)}")

    mine_n = [{k: normalize(v) for k, v in r.items()} for r in mine]
    types = {c: next((r[c] for r in mine_n if r.get(c) is not None), None)
             for c in (my_cols or [])}
    answer_n = [{k: coerce_like(v, types.get(k)) for k, v in r.items()} for r in answer]

    def key_of(row: dict) -> tuple:
        return tuple(json.dumps(row.get(k), default=str) for k in rep.keys)

    by_key_mine: dict[tuple, dict] = {}
    by_key_ans: dict[tuple, dict] = {}
    for rows_, index, who in ((mine_n, by_key_mine, "oracle"), (answer_n, by_key_ans, "shoplake")):
        repeated = []
        for r in rows_:
            k = key_of(r)
            if k in index:
                repeated.append(k)
            index[k] = r
        if repeated:
            out.append(f"{who} has {len(repeated)} rows whose key {rep.keys} repeats an earlier "
                       f"row's, e.g. {[json.loads(v) for v in repeated[0]]}")

    shown = 0
    common_cols = [c for c in (my_cols or []) if ans_cols is None or c in ans_cols]
    for k in list(by_key_mine) + [k for k in by_key_ans if k not in by_key_mine]:
        a, b = by_key_mine.get(k), by_key_ans.get(k)
        if a is not None and b is not None:
            diffs = [c for c in common_cols if not same(a.get(c), b.get(c))]
            if not diffs:
                continue
            line = "; ".join(f"{c}: oracle {show(a.get(c))} vs shoplake {show(b.get(c))}"
                             for c in diffs)
        else:
            line = "only in " + ("oracle" if b is None else "shoplake") + ": " + ", ".join(
                f"{c}={show(v)}" for c, v in (a or b).items())
        out.append(f"  [{', '.join(f'{kk}={json.loads(v)!r}' for kk, v in zip(rep.keys, k))}] "
                   f"{line}")
        shown += 1
        if shown >= SHOW_ROWS:
            out.append("  ...")
            break
    if rep.sort:
        problems = sort_violations(answer_n, rep)
        if problems:
            out.append(f"order: shoplake's rows are not sorted by "
                       f"{', '.join(c + (' desc' if d else '') for c, d, *_ in rep.sort)}"
                       f"{' within ' + ', '.join(rep.sort_within) if rep.sort_within else ''}: "
                       f"{problems[0]} ({len(problems)} such rows)")
    return out


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def report_names(reports_dir: Path) -> list[str]:
    return sorted(f.stem for f in reports_dir.glob("*.sql"))


def declared_params(reports_dir: Path, name: str) -> set[str]:
    """The parameter names a report's `-- param:` header lines declare."""
    names = set()
    for line in (reports_dir / f"{name}.sql").read_text().splitlines():
        if not line.startswith("--"):
            break
        m = re.match(r"--\s*param:\s*(\w+)", line)
        if m:
            names.add(m.group(1))
    return names


def period_params(reports_dir: Path, name: str, p: Params) -> dict[str, str]:
    declared = declared_params(reports_dir, name)
    given = {"from": p.start.isoformat(), "to": p.end.isoformat()}
    return {k: v for k, v in given.items() if k in declared}


def answer_from_file(answers: Path, name: str, _params: dict[str, str]) -> Any:
    path = answers / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"no answer {path}")
    return json.loads(path.read_text())


def answer_from_shoplake(binary: str, data_dir: str, save: Path | None):
    def get(name: str, params: dict[str, str]) -> Any:
        cmd = [binary, "--data-dir", data_dir, "report", name, "--format", "json"]
        for k, v in params.items():
            cmd += ["--param", f"{k}={v}"]
        env = dict(os.environ, SHOPLAKE_LOG=os.environ.get("SHOPLAKE_LOG", "warn"))
        env["RUST_BACKTRACE"] = "0"
        env["RUST_LIB_BACKTRACE"] = "0"
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            # the error itself, not a backtrace
            message = done.stderr.split("\nStack backtrace:")[0].strip()[:1500]
            raise RuntimeError(f"`{' '.join(cmd)}` failed ({done.returncode}): {message}")
        if save is not None:
            save.mkdir(parents=True, exist_ok=True)
            (save / f"{name}.json").write_text(done.stdout)
        return json.loads(done.stdout)
    return get


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lake", type=Path, help="the lake folder (default DATA_DIR/lake)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--answers", type=Path, help="folder of NAME.json answers")
    src.add_argument("--shoplake", help="shoplake binary to ask for each report")
    src.add_argument("--dump", type=Path, help="only write the oracle's own rows, NAME.json here")
    ap.add_argument("--data-dir", help="shoplake's --data-dir (with --shoplake)")
    ap.add_argument("--save-answers", type=Path, help="keep shoplake's answers here")
    ap.add_argument("--from", dest="start", required=True, type=dt.date.fromisoformat)
    ap.add_argument("--to", dest="end", required=True, type=dt.date.fromisoformat)
    ap.add_argument("--only", help="comma-separated report names")
    ap.add_argument("--reports-dir", type=Path, default=REPORTS_DIR)
    args = ap.parse_args(argv)

    if args.shoplake:
        if not args.data_dir:
            ap.error("--shoplake needs --data-dir")
        lake = args.lake or Path(args.data_dir) / "lake"
        get_answer = answer_from_shoplake(args.shoplake, args.data_dir, args.save_answers)
    else:
        if not args.lake:
            ap.error("--answers and --dump need --lake")
        lake = args.lake
        answers_dir = args.answers
        get_answer = lambda name, params: answer_from_file(answers_dir, name, params)  # noqa: E731

    names = report_names(args.reports_dir)
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            ap.error(f"no such report: {', '.join(unknown)}")
        names = wanted

    con = connect(lake)
    p = Params(args.start, args.end)
    failed = []
    for name in names:
        rep = REPORTS.get(name)
        if rep is None:
            print(f"FAIL {name}: not implemented by the oracle")
            failed.append(name)
            continue
        if args.dump:
            args.dump.mkdir(parents=True, exist_ok=True)
            mine = rep.compute(con, p)
            (args.dump / f"{name}.json").write_text(json.dumps(
                [{k: normalize(v) for k, v in r.items()} for r in mine], indent=1, default=str))
            print(f"wrote {name} ({len(mine)} rows)")
            continue
        try:
            answer = get_answer(name, period_params(args.reports_dir, name, p))
        except Exception as e:  # a missing or failing answer is a failure, not a crash
            print(f"FAIL {name}: no answer: {e}")
            failed.append(name)
            continue
        mine = rep.compute(con, p)
        problems = compare(rep, mine, answer)
        if problems:
            print(f"FAIL {name} (oracle {len(mine)} rows, shoplake {len(answer)} rows)")
            for line in problems:
                print(f"  {line}")
            failed.append(name)
        else:
            print(f"ok {name} ({len(mine)} rows)")
    if args.dump:
        return 1 if failed else 0
    print(f"{len(names) - len(failed)} of {len(names)} reports agree"
          + (f"; differ: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

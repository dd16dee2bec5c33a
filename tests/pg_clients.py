"""Postgres drivers nobody on the project wrote, against `shoplake query`'s Postgres wire.

Run by tests/it/pg.rs with the Python of ./scripts/test (psycopg 3 and SQLAlchemy from PyPI):

    pg_clients.py HOST PORT ANALYST_PASSWORD MARKETING_PASSWORD

Prints one JSON object of what each client saw; the Rust test compares it with the lake as
`shoplake sql` answers it. A check that fails here raises, and the test shows the traceback.
"""

import json
import sys
import threading
import time

import psycopg
import sqlalchemy
from psycopg import errors

host, port, analyst_password, marketing_password = sys.argv[1:5]


def connect(user, password, **kwargs):
    return psycopg.connect(
        host=host,
        port=port,
        user=user,
        password=password,
        dbname="shoplake",
        sslmode="disable",
        **kwargs,
    )


seen = {}

with connect("analyst", analyst_password) as conn:
    seen["server_version"] = conn.info.server_version
    with conn.cursor() as cur:
        # Parameters bound by the server (psycopg 3 sends $1 and the value apart), text and
        # binary results.
        cur.execute(
            "select count(*) from events where event_name = %s", ["page_viewed"]
        )
        seen["page_viewed"] = cur.fetchone()[0]
        cur.execute(
            "select count(*) from events where event_name = %s",
            ["page_viewed"],
            binary=True,
        )
        seen["page_viewed_binary"] = cur.fetchone()[0]
        # Prepared on the server after the first run (prepare=True), run again with new values.
        counts = {}
        for name in ["page_viewed", "product_viewed", "order_completed"]:
            cur.execute(
                "select count(*) from events where event_name = %s", [name], prepare=True
            )
            counts[name] = cur.fetchone()[0]
        seen["prepared_counts"] = counts
        # A value that would break SQL spliced into text matches nothing and breaks nothing.
        cur.execute(
            "select count(*) from events where event_name = %s",
            ["x' or '1'='1"],
        )
        seen["injection_count"] = cur.fetchone()[0]
        # Types come back as Python types.
        cur.execute(
            "select event_time, event_name from events order by event_time, event_id limit 1"
        )
        first = cur.fetchone()
        seen["first_event_time_type"] = type(first[0]).__name__
        # The views.
        cur.execute("select count(*) from funnel_steps")
        seen["funnel_rows"] = cur.fetchone()[0]
        # Not a query: refused with Postgres's read-only code.
        try:
            cur.execute("create table x (a int)")
            seen["create_table"] = "ran"
        except errors.ReadOnlySqlTransaction as e:
            seen["create_table"] = e.sqlstate
        conn.rollback()

    # A large answer read a slice at a time through a server-side cursor (DECLARE / FETCH).
    started = time.monotonic()
    with conn.cursor(name="big") as cur:
        cur.itersize = 20000
        cur.execute(
            "select value, value * 2 as twice from generate_series(1, 1000000)"
        )
        rows = total = 0
        for value, twice in cur:
            rows += 1
            total += twice
    conn.commit()
    seen["cursor_rows"] = rows
    seen["cursor_sum"] = total
    seen["cursor_seconds"] = round(time.monotonic() - started, 2)

    # The same answer streamed row by row without a cursor (extended protocol, every row).
    with conn.cursor() as cur:
        rows = 0
        for (value,) in cur.stream("select value from generate_series(1, 1000000)"):
            rows += 1
        seen["stream_rows"] = rows
    conn.commit()

# statement_timeout of the session stops a long statement with 57014.
with connect("analyst", analyst_password, autocommit=True) as conn:
    conn.execute("set statement_timeout = '1s'")
    started = time.monotonic()
    try:
        conn.execute(
            "select count(*) from generate_series(1, 1000) a cross join generate_series(1, 1000000000000) b"
        )
        seen["timeout"] = "finished"
    except errors.QueryCanceled as e:
        seen["timeout"] = e.sqlstate
    seen["timeout_seconds"] = round(time.monotonic() - started, 1)
    # The connection still answers.
    seen["after_timeout"] = conn.execute("select 1").fetchone()[0]

# A cancel request from another thread stops a running statement.
with connect("analyst", analyst_password, autocommit=True) as conn:
    timer = threading.Timer(1.0, conn.cancel_safe)
    timer.start()
    started = time.monotonic()
    try:
        conn.execute(
            "select count(*) from generate_series(1, 1000) a cross join generate_series(1, 1000000000000) b"
        )
        seen["cancel"] = "finished"
    except errors.QueryCanceled as e:
        seen["cancel"] = e.sqlstate
    seen["cancel_seconds"] = round(time.monotonic() - started, 1)
    timer.cancel()
    seen["after_cancel"] = conn.execute("select 2").fetchone()[0]

# A wrong password is refused as Postgres refuses it.
try:
    connect("analyst", analyst_password + "x").close()
    seen["wrong_password"] = "connected"
except psycopg.OperationalError as e:
    seen["wrong_password"] = str(e)

# Marketing reads no personal column: the column does not exist for it.
with connect("marketing", marketing_password, autocommit=True) as conn:
    seen["marketing_events"] = conn.execute("select count(*) from events").fetchone()[0]
    try:
        conn.execute("select ip from events limit 1")
        seen["marketing_ip"] = "read"
    except errors.Error as e:
        seen["marketing_ip"] = e.sqlstate

# SQLAlchemy, the path Superset takes: connect, reflect the tables, run text with parameters.
engine = sqlalchemy.create_engine(
    f"postgresql+psycopg://analyst:{analyst_password}@{host}:{port}/shoplake?sslmode=disable"
)
with engine.connect() as conn:
    inspector = sqlalchemy.inspect(conn)
    seen["sqlalchemy_tables"] = sorted(inspector.get_table_names())
    seen["sqlalchemy_views"] = sorted(inspector.get_view_names())
    # inspector.get_columns() is not asked: SQLAlchemy 2.1's column query needs
    # json_build_object, which this server does not have yet (README, "Connecting your tools").
    result = conn.execute(
        sqlalchemy.text(
            "select event_name, count(*) as n from events where event_name = :name group by 1"
        ),
        {"name": "page_viewed"},
    )
    seen["sqlalchemy_page_viewed"] = [list(r) for r in result]
engine.dispose()

print(json.dumps(seen))

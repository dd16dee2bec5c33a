"""ADBC's Flight SQL driver (from PyPI) against `shoplake query`'s Flight SQL listener.

Run by tests/it/pg.rs with the Python of ./scripts/test:

    flight_client.py GRPC_URI USER PASSWORD HTTP_URL TOKEN

Prints one JSON object of what it saw. The answer of a query over Flight SQL must equal the
same query's Arrow answer over HTTP (`POST /v1/sql?format=arrow`), as pyarrow Tables.
"""

import json
import sys
import urllib.request

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import pyarrow
import pyarrow.ipc

uri, user, password, http, token = sys.argv[1:6]
seen = {}
QUERY = "select event_name, count(*) as n, min(event_time) as first from events group by 1 order by 1"

with flight_sql.connect(uri, db_kwargs={"username": user, "password": password}) as conn:
    with conn.cursor() as cur:
        cur.execute(QUERY)
        flight = cur.fetch_arrow_table()
        request = urllib.request.Request(
            f"{http}/v1/sql?format=arrow",
            data=QUERY.encode(),
            headers={"Authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(request) as response:
            over_http = pyarrow.ipc.open_stream(response.read()).read_all()
        seen["rows"] = flight.num_rows
        seen["equal_to_http"] = flight.equals(over_http)
        seen["columns"] = flight.column_names
        # A prepared statement with a parameter (CreatePreparedStatement, DoPut, DoGet).
        counts = {}
        for name in ["page_viewed", "order_completed"]:
            cur.execute(
                "select count(*) as n from events where event_name = $1", parameters=(name,)
            )
            counts[name] = cur.fetchone()[0]
        seen["prepared_counts"] = counts
        # A large answer streams batch by batch.
        cur.execute("select value from generate_series(1, 1000000)")
        reader = cur.fetch_record_batch()
        rows = 0
        for batch in reader:
            rows += batch.num_rows
        seen["large_rows"] = rows
        # Not a query: refused.
        try:
            cur.execute("create table x (a int)")
            seen["create_table"] = "ran"
        except adbc_driver_manager.Error as e:
            seen["create_table"] = type(e).__name__
    # Metadata: GetCatalogs / GetDbSchemas / GetTables, GetSqlInfo.
    objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
    tables = []
    for catalog in objects:
        for schema in catalog["catalog_db_schemas"] or []:
            for table in schema["db_schema_tables"] or []:
                tables.append(f"{schema['db_schema_name']}.{table['table_name']}")
    seen["tables"] = sorted(tables)
    info = conn.adbc_get_info()
    seen["vendor"] = info.get("vendor_name")

try:
    with flight_sql.connect(uri, db_kwargs={"username": user, "password": password + "x"}) as conn:
        with conn.cursor() as cur:
            cur.execute("select 1")
    seen["wrong_password"] = "connected"
except adbc_driver_manager.Error as e:
    seen["wrong_password"] = type(e).__name__

print(json.dumps(seen, default=str))

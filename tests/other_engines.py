"""Reads a shoplake lake with other engines and prints what they see, as JSON.

Used by the end-to-end test (tests/it/e2e.rs) to check that the lake is plain Delta Lake:
the deltalake package opens each table, and DuckDB reads the table's active Parquet files.

    python tests/other_engines.py LAKE_ROOT
"""

import json
import sys

import deltalake
import duckdb


def main(root: str) -> None:
    out = {}
    for table in ("events", "bad_rows", "orders"):
        dt = deltalake.DeltaTable(f"{root}/{table}")
        files = dt.file_uris()
        duck = duckdb.sql(
            "select count(*), count(distinct "
            + ("order_id" if table == "orders" else "event_id" if table == "events" else "bad_row_id")
            + ") from read_parquet($files, hive_partitioning = true)",
            params={"files": files},
        ).fetchall()[0]
        out[table] = {
            "version": dt.version(),
            "deltalake_rows": dt.to_pyarrow_dataset().count_rows(),
            "duckdb_rows": duck[0],
            "duckdb_distinct_ids": duck[1],
            "partitions": dt.metadata().partition_columns,
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])

#!/usr/bin/env python3
"""Reads a keel inference table the way users do, and checks its contract (SPEC.md §6.1).

usage: check_inference_table.py TABLE_DIR EXPECTED_ROWS

- pyarrow.dataset over the directory with hive partitioning (`date=YYYY-MM-DD`), files
  and directories starting with `.` or `_` ignored (the WAL and temporary parts);
- DuckDB `read_parquet('TABLE_DIR/**/*.parquet', hive_partitioning = true)`.

- Spark (`spark.read.parquet(TABLE_DIR)`, partition discovery on) when `pyspark` is
  importable (and Java installed); skipped with a message otherwise.

Each must see exactly the columns and types of the spec, EXPECTED_ROWS rows, unique
request ids, and a `date` equal to the UTC day of `timestamp_ms`. Exits non-zero with a
message naming what differs. Needs `pyarrow` and `duckdb` (tools/test.sh installs them).
"""

import datetime
import sys

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds

COLUMNS = [
    ("databricks_request_id", pa.string(), "VARCHAR"),
    ("client_request_id", pa.string(), "VARCHAR"),
    ("date", pa.date32(), "DATE"),
    ("timestamp_ms", pa.int64(), "BIGINT"),
    ("status_code", pa.int32(), "INTEGER"),
    ("execution_time_ms", pa.int64(), "BIGINT"),
    ("sampling_fraction", pa.float64(), "DOUBLE"),
    ("request", pa.string(), "VARCHAR"),
    ("response", pa.string(), "VARCHAR"),
    ("request_metadata", pa.map_(pa.string(), pa.string()), "MAP(VARCHAR, VARCHAR)"),
    ("prompt_tokens", pa.int32(), "INTEGER"),
    ("completion_tokens", pa.int32(), "INTEGER"),
    ("ttft_ms", pa.int64(), "BIGINT"),
]
METADATA_KEYS = {"endpoint_name", "model_name", "model_version", "served_entity_name", "response_mean_logprob"}


def fail(msg):
    print(f"check_inference_table: {msg}", file=sys.stderr)
    sys.exit(1)


def same_type(got, want):
    if pa.types.is_map(want):
        return pa.types.is_map(got) and got.key_type == want.key_type and got.item_type == want.item_type
    return got == want


def check_pyarrow(table_dir, expected):
    part = ds.partitioning(pa.schema([("date", pa.date32())]), flavor="hive")
    dataset = ds.dataset(table_dir, format="parquet", partitioning=part)
    names = [f.name for f in dataset.schema]
    if names != [c[0] for c in COLUMNS]:
        fail(f"pyarrow columns {names} != {[c[0] for c in COLUMNS]}")
    for name, want, _ in COLUMNS:
        got = dataset.schema.field(name).type
        if not same_type(got, want):
            fail(f"pyarrow: column {name} is {got}, expected {want}")
    t = dataset.to_table()
    if t.num_rows != expected:
        fail(f"pyarrow read {t.num_rows} rows, expected {expected}")
    ids = t.column("databricks_request_id").to_pylist()
    if len(set(ids)) != len(ids):
        fail("pyarrow: a databricks_request_id appears twice")
    epoch = datetime.date(1970, 1, 1)
    for d, ts, md in zip(
        t.column("date").to_pylist(), t.column("timestamp_ms").to_pylist(), t.column("request_metadata").to_pylist()
    ):
        if d != epoch + datetime.timedelta(days=ts // 86_400_000):
            fail(f"pyarrow: date {d} is not the UTC day of timestamp_ms {ts}")
        if {k for k, _ in md} != METADATA_KEYS:
            fail(f"pyarrow: request_metadata keys {sorted(k for k, _ in md)}")
    print(f"pyarrow.dataset: {t.num_rows} rows, schema ok")


def check_duckdb(table_dir, expected):
    con = duckdb.connect()
    src = f"read_parquet('{table_dir}/**/*.parquet', hive_partitioning = true)"
    cols = con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()
    got = {c[0]: c[1] for c in cols}
    for name, _, want in COLUMNS:
        if got.get(name) != want:
            fail(f"duckdb: column {name} is {got.get(name)}, expected {want} (all: {got})")
    if set(got) != {c[0] for c in COLUMNS}:
        fail(f"duckdb columns {sorted(got)}")
    n, distinct, bad_dates = con.execute(
        f"SELECT count(*), count(DISTINCT databricks_request_id),"
        f" count(*) FILTER (WHERE date <> CAST(to_timestamp(timestamp_ms / 1000) AT TIME ZONE 'UTC' AS DATE))"
        f" FROM {src}"
    ).fetchone()
    if n != expected or distinct != expected:
        fail(f"duckdb read {n} rows ({distinct} distinct ids), expected {expected}")
    if bad_dates:
        fail(f"duckdb: {bad_dates} rows whose date is not the UTC day of timestamp_ms")
    endpoints = con.execute(f"SELECT DISTINCT request_metadata['endpoint_name'] FROM {src}").fetchall()
    if not endpoints or any(e[0] is None for e in endpoints):
        fail(f"duckdb: request_metadata['endpoint_name'] missing: {endpoints}")
    print(f"duckdb: {n} rows, schema ok")


SPARK_TYPES = {
    "databricks_request_id": "string",
    "client_request_id": "string",
    "date": "date",
    "timestamp_ms": "bigint",
    "status_code": "int",
    "execution_time_ms": "bigint",
    "sampling_fraction": "double",
    "request": "string",
    "response": "string",
    "request_metadata": "map<string,string>",
    "prompt_tokens": "int",
    "completion_tokens": "int",
    "ttft_ms": "bigint",
}


def check_spark(table_dir, expected):
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        print("spark: skipped (pyspark is not installed)")
        return
    spark = SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false").getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    try:
        df = spark.read.parquet(table_dir)
        got = dict(df.dtypes)
        if got != SPARK_TYPES:
            fail(f"spark: types {got} != {SPARK_TYPES}")
        n = df.count()
        distinct = df.select("databricks_request_id").distinct().count()
        if n != expected or distinct != expected:
            fail(f"spark read {n} rows ({distinct} distinct ids), expected {expected}")
        print(f"spark: {n} rows, schema ok")
    finally:
        spark.stop()


def main():
    if len(sys.argv) != 3:
        fail("usage: check_inference_table.py TABLE_DIR EXPECTED_ROWS")
    table_dir, expected = sys.argv[1].rstrip("/"), int(sys.argv[2])
    check_pyarrow(table_dir, expected)
    check_duckdb(table_dir, expected)
    check_spark(table_dir, expected)


if __name__ == "__main__":
    main()

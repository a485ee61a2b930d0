#!/usr/bin/env python3
"""Reads keel's profile and drift metric tables the way users do and checks their contract
(SPEC.md §6.2, README "Monitoring").

usage: check_monitor_tables.py PROFILE_DIR DRIFT_DIR TABLE_ROWS

- pyarrow: `pq.read_table(dir)` over each directory (files starting with `_` or `.` are
  skipped, so `_state.json` and temporary files are not read): exact column names and types;
- DuckDB: `read_parquet('DIR/*.parquet')`, struct fields (`window.start`, `ks_test.pvalue`)
  and lists (`quantiles`, `frequent_items`) queried in SQL.

Checks: for every granularity, the `:table` rows of all models, unsliced, INPUT, sum to
TABLE_ROWS (every inference-table row is in exactly one window); windows are half-open,
non-overlapping and `end - start` is the granularity; quantiles are 5 ascending values whose
first and last are min and max; drift p-values are in [0, 1]; and both readers agree on the
row counts. Exits non-zero with a message naming what differs.
"""

import sys

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

TS = pa.timestamp("ms", tz="UTC")
WINDOW = pa.struct([pa.field("start", TS, nullable=False), pa.field("end", TS, nullable=False)])
TEST = pa.struct([("statistic", pa.float64()), ("pvalue", pa.float64())])
KEYS = [
    ("granularity", pa.string()),
    ("model_id", pa.string()),
    ("slice_key", pa.string()),
    ("slice_value", pa.string()),
    ("column_name", pa.string()),
    ("data_type", pa.string()),
]
PROFILE = [("window", WINDOW)] + KEYS + [
    ("log_type", pa.string()),
    ("count", pa.int64()),
    ("num_nulls", pa.int64()),
    ("percent_null", pa.float64()),
    ("avg", pa.float64()),
    ("stddev", pa.float64()),
    ("min", pa.float64()),
    ("max", pa.float64()),
    ("median", pa.float64()),
    ("quantiles", pa.list_(pa.float64())),
    ("distinct_count", pa.int64()),
    ("percent_distinct", pa.float64()),
    ("frequent_items", pa.list_(pa.struct([("item", pa.string()), pa.field("count", pa.int64(), nullable=False)]))),
    ("min_length", pa.int64()),
    ("max_length", pa.int64()),
    ("avg_length", pa.float64()),
]
DRIFT = [("window", WINDOW), ("window_cmp", WINDOW), ("drift_type", pa.string())] + KEYS + [
    ("count_delta", pa.float64()),
    ("avg_delta", pa.float64()),
    ("percent_null_delta", pa.float64()),
    ("ks_test", TEST),
    ("chi_squared_test", TEST),
    ("js_distance", pa.float64()),
    ("wasserstein_distance", pa.float64()),
    ("population_stability_index", pa.float64()),
    ("tv_distance", pa.float64()),
    ("l_infinity_distance", pa.float64()),
]
UNITS = {"minute": 60_000, "hour": 3_600_000, "day": 86_400_000, "week": 604_800_000}


def fail(msg):
    print(f"check_monitor_tables: {msg}", file=sys.stderr)
    sys.exit(1)


def check_schema(name, table, want):
    got = [(f.name, f.type) for f in table.schema]
    if [n for n, _ in got] != [n for n, _ in want]:
        fail(f"{name} columns {[n for n, _ in got]} != {[n for n, _ in want]}")
    for (n, t), (_, w) in zip(got, want):
        if not t.equals(w):
            fail(f"{name}.{n} is {t}, expected {w}")


def width_ms(granularity):
    n, unit = granularity.split()
    return int(n) * UNITS[unit.rstrip("s")]


def main():
    if len(sys.argv) != 4:
        fail("usage: check_monitor_tables.py PROFILE_DIR DRIFT_DIR TABLE_ROWS")
    profile_dir, drift_dir, table_rows = sys.argv[1], sys.argv[2], int(sys.argv[3])

    profile = pq.read_table(profile_dir)
    drift = pq.read_table(drift_dir)
    check_schema("profile", profile, PROFILE)
    check_schema("drift", drift, DRIFT)

    con = duckdb.connect()
    p = f"read_parquet('{profile_dir}/*.parquet')"
    d = f"read_parquet('{drift_dir}/*.parquet')"
    (n_profile,) = con.execute(f"SELECT count(*) FROM {p}").fetchone()
    (n_drift,) = con.execute(f"SELECT count(*) FROM {d}").fetchone()
    if (n_profile, n_drift) != (profile.num_rows, drift.num_rows):
        fail(f"DuckDB sees {n_profile}/{n_drift} rows, pyarrow {profile.num_rows}/{drift.num_rows}")
    if n_profile == 0 or n_drift == 0:
        fail(f"empty tables: {n_profile} profile rows, {n_drift} drift rows")

    totals = con.execute(
        f"""SELECT granularity, sum(count) FROM {p}
            WHERE column_name = ':table' AND model_id = ':all' AND slice_key IS NULL AND log_type = 'INPUT'
            GROUP BY granularity"""
    ).fetchall()
    for g, total in totals:
        if total != table_rows:
            fail(f"granularity {g}: the windows' :table counts sum to {total}, the table has {table_rows} rows")
    windows = con.execute(
        f"""SELECT DISTINCT granularity, epoch_ms("window".start), epoch_ms("window"."end") FROM {p}
            WHERE log_type = 'INPUT' ORDER BY 1, 2"""
    ).fetchall()
    last = {}
    for g, start, end in windows:
        if end - start != width_ms(g):
            fail(f"window [{start}, {end}) of granularity {g} is not {g} wide")
        if g in last and start < last[g]:
            fail(f"windows of {g} overlap at {start}")
        last[g] = end
    bad = con.execute(
        f"""SELECT column_name, quantiles, min, max FROM {p}
            WHERE quantiles IS NOT NULL AND (len(quantiles) != 5 OR quantiles[1] != min OR quantiles[5] != max
                  OR list_sort(quantiles) != quantiles)"""
    ).fetchall()
    if bad:
        fail(f"quantiles inconsistent with min/max: {bad[:3]}")
    items = con.execute(
        f"SELECT count(*) FROM {p} WHERE data_type = 'string' AND frequent_items IS NOT NULL AND len(frequent_items) > 0"
    ).fetchone()[0]
    if items == 0:
        fail("no string column has frequent items")
    bad = con.execute(
        f"""SELECT column_name, ks_test.pvalue, chi_squared_test.pvalue FROM {d}
            WHERE ks_test.pvalue < 0 OR ks_test.pvalue > 1 OR chi_squared_test.pvalue < 0 OR chi_squared_test.pvalue > 1"""
    ).fetchall()
    if bad:
        fail(f"p-values outside [0, 1]: {bad[:3]}")
    (consecutive,) = con.execute(
        f"SELECT count(*) FROM {d} WHERE drift_type = 'CONSECUTIVE' AND window_cmp.\"end\" <= \"window\".start"
    ).fetchone()
    (all_consecutive,) = con.execute(f"SELECT count(*) FROM {d} WHERE drift_type = 'CONSECUTIVE'").fetchone()
    if consecutive != all_consecutive:
        fail("a CONSECUTIVE row compares with a window that is not earlier")
    print(
        f"pyarrow + DuckDB: {n_profile} profile rows, {n_drift} drift rows; "
        f"windows {len(windows)}; :table counts sum to {table_rows} per granularity"
    )


if __name__ == "__main__":
    main()

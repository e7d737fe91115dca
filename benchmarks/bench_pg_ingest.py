"""Institutional ingest throughput: our full path into PostgreSQL against psql's plain COPY of the same rows.

    .venv/bin/python benchmarks/bench_pg_ingest.py [--symbols 500] [--years 10] [--repeat 3] [--server URL]

(a) ours: synthetic universe (in memory) -> validation -> quarantine -> yearly partitions -> idempotent
    delete-window + COPY FROM STDIN -> journal (one row per month), one PostgreSQL transaction, through
    :class:`emp_core.store.postgres_store.PostgresStore` (``ingest_bars``, as `emp ingest` and the bars asset).
(b) ours, the store step alone (``replace_bars``: partitions, delete, COPY, journal), to show where (a) goes.
(c) reference: ``psql -c "\\copy ... FROM 'bars.csv' (FORMAT csv)"`` of the same rows, written to a CSV file
    beforehand (not timed), into a table of the same shape (partitioned by year, same primary key, the
    partitions created beforehand, not timed).
Each runs --repeat times into a fresh private database on the server (created and dropped here), the three
side by side in each round. Reports best rows/s, and the ratio ours / reference as the median over rounds of
each round's own ratio (paired: a round's three runs share the machine's load at that moment); target for
(a): >= 0.7. Talks only to the server given (default: the loopback one). Ends with one line of JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import polars as pl
import psycopg
from bench_ingest import FrameSource, months  # the sibling script

from emp_core.market_data.ingest import ingest_bars
from emp_core.market_data.sources import generate_bars
from emp_core.store.postgres_store import PostgresStore

SERVER = "postgresql://127.0.0.1:5432"


def fresh_database(server: str) -> str:
    name = f"emp_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return f"{server}/{name}"


def drop_database(url: str) -> None:
    server, name = url.rsplit("/", 1)
    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def ready_store(url: str) -> PostgresStore:
    store = PostgresStore(url)
    store.tables()  # schema migration is set-up, not ingest
    return store


def reference(url: str, csv: Path, years: range) -> float:
    with psycopg.connect(url, autocommit=True) as con:
        con.execute("""CREATE TABLE bars (symbol text NOT NULL, ts timestamp NOT NULL,
            open double precision NOT NULL, high double precision NOT NULL, low double precision NOT NULL,
            close double precision NOT NULL, volume double precision NOT NULL, source text NOT NULL,
            run_id text NOT NULL, PRIMARY KEY (symbol, ts)) PARTITION BY RANGE (ts)""")
        for y in years:
            con.execute(f"CREATE TABLE bars_y{y} PARTITION OF bars FOR VALUES FROM ('{y}-01-01') TO ('{y + 1}-01-01')")
    t = time.perf_counter()
    subprocess.run(["psql", "-q", "-d", url, "-c", f"\\copy bars FROM '{csv}' (FORMAT csv)"], check=True)
    return time.perf_counter() - t


def in_fresh_database(server: str, work) -> float:
    url = fresh_database(server)
    try:
        return work(url)
    finally:
        drop_database(url)


def one_round(server: str, i: int, frame: pl.DataFrame, parts, csv: Path, start: datetime,
              end: datetime) -> dict[str, float]:
    def ours(url: str) -> float:
        store = ready_store(url)
        t = time.perf_counter()
        report = ingest_bars(store, FrameSource(frame), "bars_1d", run_id=f"bench-{i}", partitions=parts,
                             now=datetime(2030, 1, 1))
        seconds = time.perf_counter() - t
        assert report.rows_stored == frame.height and report.rows_quarantined == 0
        assert store.table_counts()["market.bars_1d"] == frame.height
        store.dispose()
        return seconds

    def store_step(url: str) -> float:
        store = ready_store(url)
        journal = pl.DataFrame([{"run_id": "s", "dataset": "bars_1d", "source": "bench", "input": "memory",
                                 "rows_in": frame.height, "rows_stored": frame.height, "rows_quarantined": 0,
                                 "status": "ok", "started_at": start, "finished_at": start}])
        t = time.perf_counter()
        store.replace_bars("bars_1d", frame, source="bench", run_id="s", window=(start, end),
                           quarantine=pl.DataFrame(schema={"run_id": pl.String}), journal=journal)
        seconds = time.perf_counter() - t
        store.dispose()
        return seconds

    def copy(url: str) -> float:
        seconds = reference(url, csv, range(start.year, end.year))
        with psycopg.connect(url) as con:
            assert con.execute("SELECT count(*) FROM bars").fetchone()[0] == frame.height
        return seconds

    return {"ours": in_fresh_database(server, ours), "store": in_fresh_database(server, store_step),
            "copy": in_fresh_database(server, copy)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--symbols", type=int, default=500)
    ap.add_argument("--years", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--server", default=SERVER, help="a PostgreSQL server URL without a database name")
    args = ap.parse_args()
    if shutil.which("psql") is None:
        raise SystemExit("psql is not on PATH: the reference needs it")
    start, end = datetime(2010, 1, 1), datetime(2010 + args.years, 1, 1)
    frame = generate_bars(args.symbols, start, end, seed=42)
    parts = months(start, end)
    print(f"universe: {args.symbols} symbols x {args.years} years = {frame.height:,} daily bars", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="emp-bench-pg-"))
    csv = tmp / "bars.csv"
    frame.with_columns(pl.lit("bench").alias("source"), pl.lit("ref").alias("run_id")).write_csv(
        csv, include_header=False, datetime_format="%Y-%m-%d %H:%M:%S%.6f")
    times: dict[str, list[float]] = {"ours": [], "store": [], "copy": []}
    try:
        for i in range(args.repeat):
            for k, v in one_round(args.server, i, frame, parts, csv, start, end).items():
                times[k].append(v)
            print(f"  round {i + 1}: ours {times['ours'][-1]:.2f}s, store step {times['store'][-1]:.2f}s, "
                  f"psql COPY {times['copy'][-1]:.2f}s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    best = {k: min(v) for k, v in times.items()}
    rate = {k: frame.height / v for k, v in best.items()}
    labels = {"ours": "ours (validate + quarantine + partitions + replace + journal)",
              "store": "ours, store step only (partitions + delete + COPY + journal)",
              "copy": "psql \\copy FROM a CSV file (same table shape)"}
    for k in ("ours", "store", "copy"):
        print(f"{labels[k]:<64} best {best[k]:.3f}s  {rate[k]:>12,.0f} rows/s")
    paired = {k: statistics.median(c / o for c, o in zip(times["copy"], times[k], strict=True))
              for k in ("ours", "store")}
    print(f"ratio ours / psql COPY, median of the rounds' own: {paired['ours']:.2f} (per round: "
          f"{', '.join(f'{c / o:.2f}' for c, o in zip(times['copy'], times['ours'], strict=True))}; target >= 0.7); "
          f"store step / psql COPY: {paired['store']:.2f}")
    print(json.dumps({"rows": frame.height, "ours_rows_per_s": round(rate["ours"]),
                      "store_rows_per_s": round(rate["store"]), "copy_rows_per_s": round(rate["copy"]),
                      "vs_copy": round(paired["ours"], 3), "store_vs_copy": round(paired["store"], 3)}))


if __name__ == "__main__":
    main()

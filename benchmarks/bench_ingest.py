"""Ingest throughput: our full path against DuckDB's own bulk load of the same rows.

    .venv/bin/python benchmarks/bench_ingest.py [--symbols 500] [--years 10] [--repeat 3]

(a) ours: synthetic universe (in memory) -> validation -> quarantine -> idempotent
    delete-window + insert -> journal (one row per month), one DuckDB transaction.
(b) reference: `CREATE TABLE AS SELECT * FROM read_parquet(...)` of the same rows
    into a fresh DuckDB file (no validation, no journal), then close (checkpoint);
    ours also ends with the store's connection closed, so both times include
    making the data durable.
Each is run --repeat times into a fresh store; the best time counts. Prints rows/s
and the ratio ours / reference (target >= 0.5).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import datetime
from pathlib import Path

import duckdb
import polars as pl

from emp_core.market_data.ingest import Partition, ingest_bars
from emp_core.market_data.sources import generate_bars
from emp_core.store import DuckDBStore


class FrameSource:
    """A source over a frame already in memory, so both sides start from the same rows."""

    name = "bench"

    def __init__(self, frame: pl.DataFrame) -> None:
        self.frame = frame

    def read(self, dataset, start, end, symbols):
        return self.frame

    def coverage(self, dataset, symbols):
        return self.frame.group_by("symbol").agg(pl.col("ts").min().alias("first_ts"),
                                                pl.col("ts").max().alias("last_ts"))

    def describe(self):
        return "in-memory synthetic universe"


def months(start: datetime, end: datetime) -> list[Partition]:
    out, y, m = [], start.year, start.month
    while datetime(y, m, 1) < end:
        y2, m2 = (y + 1, 1) if m == 12 else (y, m + 1)
        out.append(Partition(f"{y}-{m:02d}-01", datetime(y, m, 1), datetime(y2, m2, 1)))
        y, m = y2, m2
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--symbols", type=int, default=500)
    ap.add_argument("--years", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    start, end = datetime(2010, 1, 1), datetime(2010 + args.years, 1, 1)
    frame = generate_bars(args.symbols, start, end, seed=42)
    parts = months(start, end)
    print(f"universe: {args.symbols} symbols x {args.years} years = {frame.height:,} daily bars")
    tmp = Path(tempfile.mkdtemp(prefix="emp-bench-"))
    parquet = tmp / "bars.parquet"
    frame.write_parquet(parquet)
    source = FrameSource(frame)
    ours, ref = [], []
    try:
        for i in range(args.repeat):
            db = tmp / f"ours{i}.duckdb"
            store = DuckDBStore(db)
            with store.connect():
                pass  # schema creation is set-up, not ingest
            t = time.perf_counter()
            report = ingest_bars(store, source, "bars_1d", run_id=f"bench-{i}", partitions=parts,
                                 now=datetime(2030, 1, 1))
            ours.append(time.perf_counter() - t)
            assert report.rows_stored == frame.height and report.rows_quarantined == 0

            con = duckdb.connect(str(tmp / f"ref{i}.duckdb"))
            t = time.perf_counter()
            con.execute(f"CREATE TABLE bars AS SELECT * FROM read_parquet('{parquet}')")
            con.close()  # both sides are timed until the file is checkpointed and closed
            ref.append(time.perf_counter() - t)
            with duckdb.connect(str(tmp / f"ref{i}.duckdb"), read_only=True) as check:
                assert check.execute("SELECT count(*) FROM bars").fetchone()[0] == frame.height
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    best_ours, best_ref = min(ours), min(ref)
    rate_ours, rate_ref = frame.height / best_ours, frame.height / best_ref
    print(f"ours (validate + quarantine + replace + journal): best {best_ours:.3f}s  {rate_ours:,.0f} rows/s"
          f"   runs: {', '.join(f'{x:.3f}' for x in ours)}")
    print(f"DuckDB bulk load from Parquet:                   best {best_ref:.3f}s  {rate_ref:,.0f} rows/s"
          f"   runs: {', '.join(f'{x:.3f}' for x in ref)}")
    print(f"ratio ours / reference: {rate_ours / rate_ref:.2f}  (target >= 0.5)")


if __name__ == "__main__":
    main()

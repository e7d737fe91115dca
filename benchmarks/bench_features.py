"""Sensory cortex throughput: all five dimensions plus fusion, against the bar-by-bar reference.

    .venv/bin/python benchmarks/bench_features.py [--symbols 500] [--years 10] [--repeat 5]
                                                  [--reference-symbols 4]

(a) ours: ``compute_features`` on a synthetic universe (500 symbols x 10 years of
    daily bars, ~1.26M rows) with the shipped Treasury curve and macro series.
    The first call is reported on its own (cold: allocator, thread pool); then the
    best of --repeat. Peak memory is the process's resident set sampled every 5 ms
    during one call, minus the resident set before it.
(b) reference: ``tests/sensory_reference.py``, the plain-Python restatement the
    tests compare against, on the first --reference-symbols symbols of the same
    universe. It is linear in the number of symbols, so its time for the whole
    universe is extrapolated from its per-symbol time (running it on 1.26M rows
    would take hours). The two results are compared on that subset.
Prints rows/s, the ratio reference / ours, and the target check (< 1.5 s).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emp_core.market_data.macro import macro_series, treasury_curve  # noqa: E402
from emp_core.market_data.sources import generate_bars  # noqa: E402
from emp_core.sensory import MacroInputs, compute_features  # noqa: E402
from tests.sensory_reference import reference_features  # noqa: E402

TARGET_SECONDS = 1.5
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


def peak_rss_during(fn) -> tuple[object, int]:
    """(result, peak resident bytes above the level before the call)."""
    base = rss()
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.005)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        result = fn()
    finally:
        stop.set()
        t.join()
    return result, max(peak[0], rss()) - base


def max_difference(fast: pl.DataFrame, ref: pl.DataFrame) -> float:
    worst = 0.0
    for col in fast.columns:
        a = fast.get_column(col)
        if a.dtype.is_float():
            r = ref.get_column(col).cast(pl.Float64)
            d = ((a - r).abs() / (1.0 + r.abs())).max()
            worst = max(worst, d or 0.0)
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--years", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--reference-symbols", type=int, default=4)
    args = parser.parse_args()

    data = ROOT / "data"
    macro = MacroInputs(curve=treasury_curve(data)[0], series=macro_series(data)[0])
    start = datetime(2009, 1, 1)
    bars = generate_bars(args.symbols, start, datetime(2009 + args.years, 1, 1), seed=0)
    rows = bars.height
    print(f"input: {args.symbols} symbols x {args.years} years daily = {rows:,} rows; "
          f"Polars {pl.__version__}, {os.cpu_count()} cores")

    t0 = time.perf_counter()
    out, peak = peak_rss_during(lambda: compute_features(bars, macro))
    cold = time.perf_counter() - t0
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        compute_features(bars, macro)
        times.append(time.perf_counter() - t0)
    best = min(times)
    print(f"ours:      first call {cold:.3f} s; best of {args.repeat} {best:.3f} s "
          f"(median {sorted(times)[len(times) // 2]:.3f} s) = {rows / best / 1e6:.2f}M rows/s; "
          f"{out.width} columns out; peak memory +{peak / 2**20:.0f} MiB "
          f"(input {bars.estimated_size() / 2**20:.0f} MiB, output {out.estimated_size() / 2**20:.0f} MiB)")

    subset_symbols = bars.get_column("symbol").unique(maintain_order=True).head(args.reference_symbols).to_list()
    subset = bars.filter(pl.col("symbol").is_in(subset_symbols))
    t0 = time.perf_counter()
    ref = reference_features(subset, macro)
    ref_time = time.perf_counter() - t0
    per_row = ref_time / subset.height
    ref_full = per_row * rows
    fast_subset = compute_features(subset, macro)
    print(f"reference: {subset.height:,} rows ({len(subset_symbols)} symbols) in {ref_time:.1f} s = "
          f"{subset.height / ref_time:,.0f} rows/s; extrapolated to {rows:,} rows: {ref_full:,.0f} s")
    print(f"agreement on the subset: max |ours - reference| / (1 + |reference|) = "
          f"{max_difference(fast_subset, ref.select(fast_subset.columns)):.2e}")
    print(f"ratio reference / ours: {ref_full / best:,.0f}x")
    verdict = "meets" if best < TARGET_SECONDS else "MISSES"
    print(f"target < {TARGET_SECONDS} s for all five dimensions + fusion: {verdict} ({best:.3f} s)")


if __name__ == "__main__":
    main()

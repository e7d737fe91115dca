"""Backtest throughput: 100 SMA-crossover pairs on GOOG, our batched engine against backtesting.py (and vectorbt).

    .venv/bin/python benchmarks/bench_backtest.py [--repeat 5] [--reference-runs 100]

Same data for all: the GOOG daily file that ships with backtesting.py (2148 bars).
Grid: fast 5..50 step 5 x slow 60..150 step 10, long/short, commission 0.002, cash 10,000.

(a) ours: targets for all 100 pairs and one ``simulate`` call over the 100 columns; best of --repeat.
(b) backtesting.py ``Backtest.run`` in a loop (test-only reference, AGPL).
(c) vectorbt ``Portfolio.from_signals`` with 100 columns (``benchmarks/vectorbt_grid.py``), run in
    ``.venv-vectorbt`` (``make bench`` creates it from requirements/vectorbt-bench.txt): vectorbt 1.2
    requires pandas >= 3, which the pinned stack (pandas 2.3.3) excludes. Warm best of --repeat, and its
    first call (numba compilation) on its own.
All final equities of (a), (b) and (c) are compared. Then one strategy over 1M synthetic bars (bars/s).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from emp_core.backtest import simulate
from emp_core.backtest.strategies import sma_cross
from emp_core.market_data.sources import generate_bars

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.backtesting_reference import GOOG, reference  # noqa: E402

PAIRS = [(f, s) for f in range(5, 55, 5) for s in range(60, 160, 10)]


def ours(open_, close, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = simulate(open_, close, sma_cross(close, PAIRS), cash=10_000, commission=0.002)
        times.append(time.perf_counter() - t0)
    return result, min(times), times[0]


def reference_loop(runs):
    finals = []
    t0 = time.perf_counter()
    for fast, slow in PAIRS[:runs]:
        finals.append(reference(fast, slow)["Equity Final [$]"])
    return np.array(finals), time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--reference-runs", type=int, default=100)
    args = parser.parse_args()
    open_, close = GOOG.Open.to_numpy(), GOOG.Close.to_numpy()
    result, best, first = ours(open_, close, args.repeat)
    print(f"GOOG {len(close)} bars, {len(PAIRS)} SMA pairs, long/short, commission 0.002")
    print(f"(a) ours batched: best {best * 1e3:.1f} ms (first call {first * 1e3:.1f} ms) = "
          f"{len(PAIRS) / best:,.0f} evaluations/s")
    finals, ref_time = reference_loop(args.reference_runs)
    n = len(finals)
    print(f"\n(b) backtesting.py loop: {n} runs in {ref_time:.1f} s = {n / ref_time:,.1f} evaluations/s")
    worst = float(np.max(np.abs(finals - result.final_equity[:n])))
    print(f"    final equities of (a) and (b): max |difference| = {worst:.2e} over {n} strategies "
          f"({'agree' if worst < 1e-6 else 'DISAGREE'})")
    print(f"    ratio (a) / (b): {(len(PAIRS) / best) / (n / ref_time):,.0f}x (target >= 100x)")
    vbt_python = ROOT / ".venv-vectorbt" / "bin" / "python"
    if vbt_python.exists():
        with tempfile.TemporaryDirectory() as tmp:
            inp, out = Path(tmp) / "grid.npz", Path(tmp) / "out.json"
            np.savez(inp, open=open_, close=close, fast=np.array([f for f, _ in PAIRS]),
                     slow=np.array([s for _, s in PAIRS]))
            subprocess.run([str(vbt_python), str(ROOT / "benchmarks" / "vectorbt_grid.py"), str(inp), str(out),
                            "--repeat", str(args.repeat)], check=True)
            v = json.loads(out.read_text())
        diff = float(np.max(np.abs(np.array(v["final_equity"]) - result.final_equity)))
        print(f"(c) vectorbt {v['version']} from_signals, 100 columns (signals included): warm best "
              f"{v['best'] * 1e3:.1f} ms = {len(PAIRS) / v['best']:,.0f} evaluations/s; first call (numba compile) "
              f"{v['first_call']:.1f} s")
        print(f"    final equities of (a) and (c): max |difference| = {diff:.2e} over {len(PAIRS)} strategies "
              f"({'agree' if diff < 1e-6 else 'DISAGREE'})")
        print(f"    ratio (a) / (c) warm: {v['best'] / best:.1f}x (target >= 2x); our first call {first * 1e3:.0f} ms")
    else:
        print("(c) vectorbt: run `make bench` to create .venv-vectorbt (vectorbt 1.2 needs pandas >= 3, which the "
              "pinned stack excludes, so it lives in its own environment)")

    # 1M hourly bars: four synthetic symbols of 250k bars each, chained into one long series.
    bars = generate_bars(4, datetime(1990, 1, 1), datetime(2030, 1, 1), interval="1h", seed=3)
    o1 = np.concatenate([g.get_column("open").to_numpy() * 100 / g.get_column("open")[0]
                         for _, g in bars.group_by("symbol", maintain_order=True)])[:1_000_000]
    c1 = np.concatenate([g.get_column("close").to_numpy() * 100 / g.get_column("open")[0]
                         for _, g in bars.group_by("symbol", maintain_order=True)])[:1_000_000]
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        one = simulate(o1, c1, sma_cross(c1, [(50, 200)]), cash=10_000, commission=0.0005)
        times.append(time.perf_counter() - t0)
    print(f"one strategy over {len(c1):,} bars ({int(one.trades[0]):,} trades): best {min(times) * 1e3:.1f} ms = "
          f"{len(c1) / min(times) / 1e6:.1f}M bars/s (target > 20M)")


if __name__ == "__main__":
    main()

"""Backtest throughput: our compiled kernel beside our NumPy engine (the reference), backtesting.py and vectorbt.

    .venv/bin/python benchmarks/bench_backtest.py [--repeat 7] [--reference-runs 100]

1. 100 SMA-crossover pairs on GOOG, the daily file that ships with backtesting.py (2148 bars). Grid: fast
   5..50 step 5 x slow 60..150 step 10, long/short, commission 0.002, cash 10,000. Timed with the signals:
   (a) ours: targets for all 100 pairs and one ``simulate`` call over the 100 columns, on the compiled kernel
       (``emp_core.backtest.kernel``) and on the NumPy engine; best of --repeat, and the kernel's first call;
   (b) backtesting.py ``Backtest.run`` in a loop (test-only reference, AGPL; its run also computes its
       statistics, which is how its users run it);
   (c) vectorbt ``Portfolio.from_signals`` with 100 columns (``benchmarks/vectorbt_grid.py``), in
       ``.venv-vectorbt`` (``make bench`` creates it from requirements/vectorbt-bench.txt: vectorbt 1.2
       requires pandas >= 3, which the pinned stack excludes). Warm best of --repeat.
2. One SMA(50, 200) strategy over 1,000,000 hourly bars, targets given: the kernel, the NumPy engine's
   one-strategy path and vectorbt's single-column ``from_signals`` on the same bars and targets (the engines'
   own cost, signals excluded), commission 0.0005.

The kernel runs with its per-bar curves (equity, units, cash: what the NumPy engine always returns) and, in 2.,
without them (``curves=False``: final state and fills, what vectorbt's run computes before ``final_value``).
Every final equity is compared between engines (to 1e-9 relative), and the trades with vectorbt's. First, a
fresh interpreter's import and first call (numba's cache loaded), and the compile without the cache. The last
line is JSON: the ratios (how many times faster ours is), the kernel's 1M-bar throughput, the start-up
figures and ``equal``: whether every comparison agreed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
from scipy.signal import lfilter

from emp_core.backtest import engine, kernel
from emp_core.backtest.strategies import sma_cross

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.backtesting_reference import GOOG, reference  # noqa: E402

PAIRS = [(f, s) for f in range(5, 55, 5) for s in range(60, 160, 10)]
VBT_PYTHON = ROOT / ".venv-vectorbt" / "bin" / "python"
RTOL = 1e-9  # final equities agree to nine digits (sums in another order differ in the last ones)


def timed(fn, repeat: int):
    """(the last result, best seconds, first call's seconds)."""
    times, result = [], None
    for _ in range(repeat + 1):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return result, min(times[1:]), times[0]


def vectorbt(payload: dict, args: list[str]) -> dict | None:
    if not VBT_PYTHON.exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = Path(tmp) / "in.npz", Path(tmp) / "out.json"
        np.savez(inp, **payload)
        subprocess.run([str(VBT_PYTHON), str(ROOT / "benchmarks" / "vectorbt_grid.py"), str(inp), str(out), *args],
                       check=True)
        return json.loads(out.read_text())


def agree(name: str, a, b) -> bool:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    worst = float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1.0)))
    ok = worst < RTOL
    print(f"    final equities, {name}: max relative difference = {worst:.1e} ({'agree' if ok else 'DISAGREE'})")
    return ok


def same_trades(ours, v: dict) -> bool:
    """Round trips: ours counts the closed ones, vectorbt the closed and the open one."""
    closed = np.asarray(v["trades"]) - np.asarray(v["open_trades"])
    still_open = np.asarray(v["open_trades"]) > 0
    ok = bool(np.array_equal(ours.trades, closed) and np.array_equal(ours.units[-1] != 0, still_open))
    print(f"    trades, kernel vs vectorbt: {int(ours.trades.sum()):,} closed vs {int(closed.sum()):,} "
          f"({'agree' if ok else 'DISAGREE'}, and the positions still open)")
    return ok


def fresh_process() -> dict:
    """The kernel in a new interpreter: import and first call with numba's on-disk cache (what a user's first
    backtest pays), and the same with an empty cache directory (the one-time compile the install step pays)."""
    code = ("import time; t0 = time.perf_counter(); import numpy as np; from emp_core.backtest import kernel; "
            "p = np.linspace(100.0, 110.0, 50); kernel.simulate(p, p, np.sign(np.sin(np.arange(50.0)))); "
            "t1 = time.perf_counter(); kernel.warm(); print(t1 - t0, time.perf_counter() - t0)")
    out = {}
    for name, env in (("cached", {}), ("cold", {"NUMBA_CACHE_DIR": tempfile.mkdtemp(prefix="numba-cold-")})):
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                             env={**os.environ, **env})
        first, everything = (float(x) for x in run.stdout.split())
        out[name] = {"first_call_s": first, "all_kernels_s": everything}
    print(f"fresh process: import + first simulate {out['cached']['first_call_s']:.2f} s with the cache "
          f"(every kernel loaded: {out['cached']['all_kernels_s']:.2f} s); "
          f"without it {out['cold']['first_call_s']:.1f} s "
          f"(every kernel compiled: {out['cold']['all_kernels_s']:.1f} s, paid once by the install step)")
    return out


def grid(repeat: int, reference_runs: int) -> tuple[dict, list[bool]]:
    open_, close = GOOG.Open.to_numpy(), GOOG.Close.to_numpy()
    print(f"1. GOOG {len(close)} bars, {len(PAIRS)} SMA pairs, long/short, commission 0.002 (signals included)")
    runs = {}
    for name, simulate in (("kernel", kernel.simulate), ("numpy", engine.simulate)):
        runs[name] = timed(lambda s=simulate: s(open_, close, sma_cross(close, PAIRS), cash=10_000, commission=0.002),
                           repeat)
        _result, best, first = runs[name]
        print(f"(a) ours, {name}: best {best * 1e3:.2f} ms (first call {first * 1e3:.1f} ms) = "
              f"{len(PAIRS) / best:,.0f} evaluations/s")
    ours, best = runs["kernel"][0], runs["kernel"][1]
    checks = [agree("kernel vs NumPy engine", ours.final_equity, runs["numpy"][0].final_equity)]
    t0 = time.perf_counter()
    finals = np.array([reference(f, s)["Equity Final [$]"] for f, s in PAIRS[:reference_runs]])
    ref_time = time.perf_counter() - t0
    n = len(finals)
    print(f"(b) backtesting.py loop: {n} runs in {ref_time:.1f} s = {n / ref_time:,.1f} evaluations/s")
    checks.append(agree(f"kernel vs backtesting.py over {n}", ours.final_equity[:n], finals))
    out = {"vs_backtesting_py": (len(PAIRS) / best) / (n / ref_time), "vs_numpy": runs["numpy"][1] / best}
    v = vectorbt({"open": open_, "close": close, "fast": np.array([f for f, _ in PAIRS]),
                  "slow": np.array([s for _, s in PAIRS])}, ["--repeat", str(repeat)])
    if v is None:
        print("(c) vectorbt: `make bench` creates .venv-vectorbt (vectorbt 1.2 needs pandas >= 3, which the pinned "
              "stack excludes, so it lives in its own environment)")
        out["vs_vectorbt"] = None
    else:
        print(f"(c) vectorbt {v['version']} from_signals, 100 columns: warm best {v['best'] * 1e3:.1f} ms = "
              f"{len(PAIRS) / v['best']:,.0f} evaluations/s; first call (numba compile) {v['first_call']:.1f} s")
        checks.append(agree("kernel vs vectorbt", ours.final_equity, v["final_equity"]))
        checks.append(same_trades(ours, v))
        out["vs_vectorbt"] = v["best"] / best
    print(f"    kernel: {out['vs_numpy']:.1f}x the NumPy engine, {out['vs_backtesting_py']:,.0f}x backtesting.py, "
          + (f"{out['vs_vectorbt']:.1f}x vectorbt warm" if out["vs_vectorbt"] else "vectorbt not run")
          + " (targets: 10x vectorbt, 1,000x backtesting.py)")
    return out, checks


def million(repeat: int) -> tuple[dict, list[bool]]:
    # 1M hourly bars: a log price mean-reverting around 100 (an Ornstein-Uhlenbeck walk, hourly volatility 0.3%),
    # so prices and equity stay in one range. (On a trending walk over 1M bars, equity reaches 2e9 and positions
    # 4e7 units; there vectorbt's sizing, which compares amounts with a relative tolerance of about 1e-9, buys one
    # unit fewer than the rule when the affordable quantity's fraction is below 1e-9 of it, e.g. 37,261,757.02
    # units at order 2,584 of 5,639: every order before agrees to the unit, every final equity to 1.4e-7.)
    rng = np.random.default_rng(3)
    shocks = rng.normal(0.0, 0.003, 1_000_000)
    log_close = lfilter([1.0], [1.0, -0.9995], shocks) + np.log(100.0)
    c1 = np.exp(log_close)
    o1 = np.exp(np.r_[np.log(100.0), log_close[:-1]] + rng.normal(0.0, 0.0005, c1.size))  # a small gap at the open
    tg = sma_cross(c1, [(50, 200)])
    n = len(c1)
    print(f"\n2. one SMA(50, 200) strategy over {n:,} bars, targets given, commission 0.0005")
    final_only = partial(kernel.simulate, curves=False)
    runs = {name: timed(lambda s=simulate: s(o1, c1, tg, cash=10_000, commission=0.0005), repeat)
            for name, simulate in (("kernel", kernel.simulate), ("kernel, curves=False", final_only),
                                   ("numpy", engine.simulate))}
    ours, best = runs["kernel"][0], runs["kernel"][1]
    for name, (result, b, _) in runs.items():
        print(f"    ours, {name}: best {b * 1e3:.1f} ms = {n / b / 1e6:.1f}M bars/s ({int(result.trades[0]):,} trades)")
    checks = [agree("kernel vs NumPy engine", ours.final_equity, runs["numpy"][0].final_equity),
              agree("kernel without curves vs with", runs["kernel, curves=False"][0].final_equity, ours.final_equity)]
    final_best = runs["kernel, curves=False"][1]
    out = {"bars_per_s_1m": n / best, "vs_numpy_1m": runs["numpy"][1] / best,
           "vs_numpy_1m_final_only": runs["numpy"][1] / final_best}
    v = vectorbt({"open": o1, "close": c1, "targets": tg[:, 0], "fees": 0.0005}, ["--single", "--repeat", str(repeat)])
    if v is None:
        out["vs_vectorbt_1m"] = out["vs_vectorbt_1m_final_only"] = None
    else:
        print(f"    vectorbt {v['version']} from_signals, one column: warm best {v['best'] * 1e3:.1f} ms = "
              f"{n / v['best'] / 1e6:.1f}M bars/s ({v['trades']:,} trades)")
        checks.append(agree("kernel vs vectorbt", ours.final_equity, [v["final_equity"]]))
        checks.append(same_trades(ours, {"trades": [v["trades"]], "open_trades": [v["open_trades"]]}))
        out["vs_vectorbt_1m"] = v["best"] / best
        out["vs_vectorbt_1m_final_only"] = v["best"] / final_best
    print(f"    kernel: {out['vs_numpy_1m']:.1f}x the NumPy engine (target 5x; {out['vs_numpy_1m_final_only']:.1f}x "
          "without curves), "
          + (f"{out['vs_vectorbt_1m']:.1f}x vectorbt (target 10x)" if out["vs_vectorbt_1m"] else "vectorbt not run"))
    return out, checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--reference-runs", type=int, default=100)
    args = parser.parse_args()
    start = fresh_process()
    kernel.warm()  # loads the cached compilation (make's install step built it)
    a, checks_a = grid(args.repeat, args.reference_runs)
    b, checks_b = million(args.repeat)
    print(json.dumps({"vs_vectorbt": a["vs_vectorbt"], "vs_backtesting_py": a["vs_backtesting_py"],
                      "vs_vectorbt_1m": b["vs_vectorbt_1m"], "bars_per_s_1m": b["bars_per_s_1m"],
                      "vs_numpy": a["vs_numpy"], "vs_numpy_1m": b["vs_numpy_1m"],
                      "vs_numpy_1m_final_only": b["vs_numpy_1m_final_only"],
                      "vs_vectorbt_1m_final_only": b["vs_vectorbt_1m_final_only"],
                      "fresh_process_first_call_s": start["cached"]["first_call_s"],
                      "compile_s": start["cold"]["all_kernels_s"], "equal": all(checks_a + checks_b)}))


if __name__ == "__main__":
    main()

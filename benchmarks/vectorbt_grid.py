"""Run the SMA grid with vectorbt: called by bench_backtest.py inside .venv-vectorbt (pandas >= 3).

    .venv-vectorbt/bin/python benchmarks/vectorbt_grid.py IN.npz OUT.json [--repeat 5]
    .venv-vectorbt/bin/python benchmarks/vectorbt_grid.py IN.npz OUT.json --single [--repeat 5]

Grid: IN.npz holds open, close, fast, slow (one pair per column). The crossover signals are computed here
the same way as in emp_core (strict cross of the two SMAs at the close of t) and shifted one bar, so
orders execute at the next open (``price=open``), whole units, commission 0.002 on entry and exit,
reversing on the opposite signal. Timed with the signals.

--single: IN.npz holds open, close, targets (one column, -1/0/+1 at each close) and fees. The targets
become entries and exits at the next open; only ``from_signals`` and the final value are timed, the
engine's own cost, beside ours given the same targets.
"""

import argparse
import json
import time

import numpy as np
import pandas as pd
import vectorbt as vbt


def signals(close: np.ndarray, fast: np.ndarray, slow: np.ndarray):
    """Each distinct window's rolling mean once (as ours computes them), then each pair's crosses."""
    s = pd.Series(close)
    means = {n: s.rolling(n).mean().to_numpy() for n in sorted({*fast.tolist(), *slow.tolist()})}
    f = np.column_stack([means[n] for n in fast])
    w = np.column_stack([means[n] for n in slow])
    up = np.zeros_like(f, dtype=bool)
    down = np.zeros_like(f, dtype=bool)
    with np.errstate(invalid="ignore"):
        up[1:] = (f[:-1] < w[:-1]) & (f[1:] > w[1:])
        down[1:] = (f[:-1] > w[:-1]) & (f[1:] < w[1:])
    shift = np.zeros_like(up)
    long_entries, short_entries = shift.copy(), shift.copy()
    long_entries[1:], short_entries[1:] = up[:-1], down[:-1]
    return long_entries, short_entries


def run(open_, close, long_entries, short_entries):
    """One column per pair; the prices are one column, which vectorbt broadcasts to the signals' columns."""
    return vbt.Portfolio.from_signals(close[:, None], entries=long_entries, short_entries=short_entries,
                                      price=open_[:, None],
                                      fees=0.002, init_cash=10_000.0, size=np.inf, size_granularity=1.0,
                                      upon_opposite_entry="reverse", freq="1D")


def single_signals(targets: np.ndarray):
    """Entries and exits at each bar's open from the direction wanted at the close before."""
    ordered = np.zeros_like(targets)
    ordered[1:] = targets[:-1]
    before = np.zeros_like(ordered)
    before[1:] = ordered[:-1]
    change = ordered != before
    flat = change & (ordered == 0)  # a reversal is an opposite entry (upon_opposite_entry="reverse"), not an exit
    return change & (ordered > 0), flat & (before > 0), change & (ordered < 0), flat & (before < 0)


def single(d: dict, repeat: int) -> dict:
    le, lx, se, sx = single_signals(d["targets"])
    close, open_, fees = d["close"], d["open"], float(d["fees"])

    def run():
        return vbt.Portfolio.from_signals(close, entries=le, exits=lx, short_entries=se, short_exits=sx, price=open_,
                                          fees=fees, init_cash=10_000.0, size=np.inf, size_granularity=1.0,
                                          upon_opposite_entry="reverse", freq="1h")

    t0 = time.perf_counter()
    pf = run()
    final = float(pf.final_value())
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeat):  # the simulation and its final value only
        t0 = time.perf_counter()
        float(run().final_value())
        times.append(time.perf_counter() - t0)
    return {"first_call": first, "best": min(times), "final_equity": final, "trades": int(pf.trades.count()),
            "open_trades": int(pf.trades.open.count()), "version": vbt.__version__}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("inp")
    p.add_argument("out")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--single", action="store_true")
    a = p.parse_args()
    with np.load(a.inp) as npz:  # read once: an NpzFile reads the archive again at every access
        d = {k: npz[k] for k in npz.files}
    if a.single:
        with open(a.out, "w") as fh:
            json.dump(single(d, a.repeat), fh)
        return
    t0 = time.perf_counter()
    le, se = signals(d["close"], d["fast"], d["slow"])
    pf = run(d["open"], d["close"], le, se)
    finals = np.asarray(pf.final_value())
    first = time.perf_counter() - t0
    times = []
    for _ in range(a.repeat):  # the signals, the simulation and the final values
        t0 = time.perf_counter()
        le, se = signals(d["close"], d["fast"], d["slow"])
        np.asarray(run(d["open"], d["close"], le, se).final_value())
        times.append(time.perf_counter() - t0)
    with open(a.out, "w") as fh:
        json.dump({"first_call": first, "best": min(times), "final_equity": finals.tolist(),
                   "trades": np.asarray(pf.trades.count()).tolist(),
                   "open_trades": np.asarray(pf.trades.open.count()).tolist(), "version": vbt.__version__},
                  fh)


if __name__ == "__main__":
    main()

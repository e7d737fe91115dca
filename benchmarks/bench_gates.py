"""Size and power of the promotion gates: how often noise is promoted, and a planted edge of known strength.

For each strength (the annualised Sharpe ratio, after costs, of a simple strategy that
exploits the planted edge, measured on each universe; ``none`` = pure random walks) and
each seed: a universe of ``--symbols`` symbols x ``--years`` years of daily bars
(``emp_core.evolution.planted``), the full walk-forward evolution with a fresh trial
registry, and the decision. Reported per strength: the measured simple-strategy Sharpe,
the promotion rate with a Wilson 95% interval, each gate's pass rate, and the mean
figures (N, effective N, SR0, DSR, OOS PSR, PBO).

Beside it, in the same runs, two references: the previous gate's verdict ("old gate":
SR0 from the spread of the in-sample train Sharpe ratios with N = every train evaluation,
applied to the out-of-sample track; PBO as now), and how often the paper's closed-form
DSR ("DSR(V,N)": V the trials' cross-sectional Sharpe variance, N nominal, on the
champion's evidence span) would have passed.

    .venv/bin/python benchmarks/bench_gates.py                    # 20 seeds x 7 strengths, ~15-30 min
    .venv/bin/python benchmarks/bench_gates.py --seeds 4 --strengths none,3
"""

from __future__ import annotations

import argparse
import json
import math
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from emp_core.evolution.overfitting import deflated_sharpe
from emp_core.evolution.planted import planted_universe, simple_strategy_sharpe
from emp_core.evolution.walkforward import walk_forward, windows

RESULTS = Path(__file__).resolve().parent / "results"


def one(job: tuple) -> dict:
    strength, seed, args = job
    t0 = time.perf_counter()
    universe = planted_universe(strength, n_symbols=args.symbols, years=args.years, seed=seed,
                                commission=args.commission)
    first = universe.ts[universe.symbols[0]]
    spans = windows(first[0], first[-1])
    result = walk_forward(universe, spans, size=args.population, generations=args.generations, seed=seed,
                          commission=args.commission, dataset=f"planted-{strength}-{seed}")
    d = result.decision
    train = np.array([r["sharpe_per_bar"] for r in result.log.rows if r["phase"] == "train"])
    old_dsr = deflated_sharpe(result.oos_returns, train, trials=train.size)
    gates = d.gates
    return {
        "strength": strength, "seed": seed,
        "simple_sharpe": simple_strategy_sharpe(universe, commission=args.commission),
        "promoted": d.promoted, "follows_edge": bool(result.chosen[-1].w_what > 0),
        "dsr_pass": d.dsr is not None and d.dsr >= gates.min_dsr,
        "oos_pass": d.oos_psr is not None and d.oos_psr >= gates.min_oos_psr,
        "pbo_pass": d.pbo is not None and d.pbo <= gates.max_pbo,
        "old_promoted": bool(old_dsr >= gates.min_dsr and d.pbo is not None and d.pbo <= gates.max_pbo),
        "old_dsr": old_dsr, "closed_form_pass": d.dsr_closed_form is not None and d.dsr_closed_form >= gates.min_dsr,
        "seconds": time.perf_counter() - t0,
        **{k: getattr(d, k) for k in ("dsr", "sharpe", "sr0", "n_trials", "n_effective", "oos_psr", "pbo", "reason")},
    }


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion k / n (Wilson 1927)."""
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def summarise(rows: list[dict], strengths: list) -> list[dict]:
    table = []
    for s in strengths:
        group = [r for r in rows if r["strength"] == s]
        n = len(group)
        k = sum(r["promoted"] for r in group)
        lo, hi = wilson(k, n)

        def mean(key: str, group: list[dict] = group) -> float:
            return float(np.mean([r[key] for r in group if r[key] is not None]))

        table.append({"strength": "noise" if s is None else s, "runs": n, "promoted": k, "rate": k / n if n else 0,
                      "ci_low": lo, "ci_high": hi, "simple_sharpe": mean("simple_sharpe"),
                      "simple_sharpe_sd": float(np.std([r["simple_sharpe"] for r in group])),
                      "dsr_pass": mean("dsr_pass"), "oos_pass": mean("oos_pass"), "pbo_pass": mean("pbo_pass"),
                      "old_rate": mean("old_promoted"), "closed_form_dsr_pass": mean("closed_form_pass"),
                      "n_trials": mean("n_trials"),
                      "n_effective": mean("n_effective"), "sr0_year": mean("sr0") * math.sqrt(252),
                      "sharpe_year": mean("sharpe") * math.sqrt(252), "follows_edge": mean("follows_edge"),
                      "seconds": mean("seconds")})
    return table


def markdown(table: list[dict], seeds: int) -> str:
    """The table as Markdown, for the README."""
    lines = ["| planted strength | simple strategy's Sharpe (mean ± sd) | promoted | rate [95% CI] | DSR passes | "
             "OOS PSR passes | PBO passes | previous gate | paper's closed-form DSR |",
             "|---|---|---|---|---|---|---|---|---|"]
    for t in table:
        name = "noise (random walk)" if t["strength"] == "noise" else f"{t['strength']:g}"
        lines.append(f"| {name} | {t['simple_sharpe']:.2f} ± {t['simple_sharpe_sd']:.2f} | {t['promoted']}/{t['runs']} "
                     f"| {t['rate']:.0%} [{t['ci_low']:.2f}, {t['ci_high']:.2f}] | {t['dsr_pass']:.0%} | "
                     f"{t['oos_pass']:.0%} | {t['pbo_pass']:.0%} | {t['old_rate']:.0%} | "
                     f"{t['closed_form_dsr_pass']:.0%} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--first-seed", type=int, default=1000, help="seeds run from here (the tests use others)")
    p.add_argument("--strengths", default="none,0,0.5,1,2,3,4")
    p.add_argument("--symbols", type=int, default=10)
    p.add_argument("--years", type=int, default=10)
    p.add_argument("--population", type=int, default=40)
    p.add_argument("--generations", type=int, default=5)
    p.add_argument("--commission", type=float, default=0.001)
    p.add_argument("--jobs", type=int, default=2)
    args = p.parse_args()
    strengths = [None if s == "none" else float(s) for s in args.strengths.split(",")]
    jobs = [(s, seed, args) for s in strengths for seed in range(args.first_seed, args.first_seed + args.seeds)]
    print(f"{len(jobs)} walk-forward runs: {args.symbols} symbols x {args.years} years, population "
          f"{args.population}, {args.generations} generations, {args.jobs} processes", flush=True)
    t0 = time.perf_counter()
    rows = []
    with ProcessPoolExecutor(args.jobs) as pool:
        for r in pool.map(one, jobs):
            rows.append(r)
            print(f"  [{len(rows):>3}/{len(jobs)}] strength {r['strength']!s:>4} seed {r['seed']}: simple SR "
                  f"{r['simple_sharpe']:5.2f} -> {'PROMOTED' if r['promoted'] else 'refused '} dsr {r['dsr'] or 0:.3f} "
                  f"oos_psr {r['oos_psr'] or 0:.3f} pbo {r['pbo'] if r['pbo'] is not None else math.nan:.3f} "
                  f"N {r['n_trials']} N_eff {r['n_effective'] or 0:.0f} ({r['seconds']:.0f} s)", flush=True)
    table = summarise(rows, strengths)
    print(f"\nPromotion rate by planted strength ({args.seeds} seeds each, {time.perf_counter() - t0:.0f} s)")
    print(f"{'strength':>8} {'simple SR':>11} {'promoted':>9} {'rate':>6} {'95% CI':>13} {'DSR ok':>7} "
          f"{'OOS ok':>7} {'PBO ok':>7} {'old gate':>9} {'DSR(V,N)':>9} {'N':>6} {'N_eff':>6} {'SR0/yr':>7} "
          f"{'SR/yr':>6}")
    for t in table:
        print(f"{t['strength']!s:>8} {t['simple_sharpe']:>5.2f}±{t['simple_sharpe_sd']:<4.2f} {t['promoted']:>4}/"
              f"{t['runs']:<4} {t['rate']:>6.0%} [{t['ci_low']:.2f}, {t['ci_high']:.2f}] {t['dsr_pass']:>7.0%} "
              f"{t['oos_pass']:>7.0%} {t['pbo_pass']:>7.0%} {t['old_rate']:>9.0%} {t['closed_form_dsr_pass']:>9.0%} "
              f"{t['n_trials']:>6.0f} "
              f"{t['n_effective']:>6.0f} {t['sr0_year']:>7.2f} {t['sharpe_year']:>6.2f}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gates.md").write_text(markdown(table, args.seeds))
    out = RESULTS / "gates.json"
    out.write_text(json.dumps({"args": {k: v for k, v in vars(args).items()}, "table": table, "runs": rows},
                              indent=1, default=str))
    print(f"every run: {out}")


if __name__ == "__main__":
    main()

"""Evolution throughput: NSGA-II generations per second for a population over a synthetic universe, on the
compiled kernel beside the NumPy engine (the reference) in the same run, with identical objectives.

    .venv/bin/python benchmarks/bench_evolution.py [--symbols 500] [--years 10] [--population 200] [--generations 1]
        [--engine in_process|spark]

Features for the universe are computed once (``compute_features``, timed separately); each generation
evaluates the offspring (as many as the population) on every symbol over the whole span, batched into
engine calls of about 1,000 (genome x symbol) columns, then selects with NSGA-II. A run is generation 0 (the
initial population) plus ``--generations``; seconds per generation divide by both. The last line is JSON:
seconds_per_generation (the kernel's), vs_numpy (the NumPy path's seconds over the kernel's),
genome_bars_per_s, identical (the final populations' objectives equal to 1e-9 relative).
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime
from functools import partial

import numpy as np

from emp_core.evolution.fitness import Universe, evaluate
from emp_core.evolution.population import ExperimentLog, evolve
from emp_core.market_data.sources import generate_bars
from emp_core.sensory import compute_features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--years", type=int, default=10)
    parser.add_argument("--population", type=int, default=200)
    parser.add_argument("--generations", type=int, default=1)
    parser.add_argument("--engine", choices=["in_process", "spark"], default="in_process",
                        help="spark: fitness on a local[2] Spark session (identical results)")
    args = parser.parse_args()
    bars = generate_bars(args.symbols, datetime(2009, 1, 1), datetime(2009 + args.years, 1, 1), seed=0)
    t0 = time.perf_counter()
    universe = Universe.from_frames(bars, compute_features(bars, None))
    features = time.perf_counter() - t0
    print(f"universe: {args.symbols} symbols x {args.years} years = {bars.height:,} bars; features {features:.1f} s")
    extra = {}
    if args.engine == "spark":
        from emp_core.evolution.spark import local_session, spark_evaluator

        t0 = time.perf_counter()
        extra["evaluator"] = spark_evaluator(local_session())
        print(f"spark local[2] session started in {time.perf_counter() - t0:.1f} s")
    window = (np.datetime64("2009-01-01"), np.datetime64(f"{2009 + args.years}-01-01"))
    from emp_core.backtest.kernel import warm

    print(f"kernel loaded (or compiled into its cache) in {warm():.2f} s")  # not inside the timed runs
    runs = {}
    paths = {"numpy": {"evaluator": partial(evaluate, compiled=False)}, "kernel": extra or {}}
    for name, evaluator in paths.items():
        log = ExperimentLog()
        t0 = time.perf_counter()
        result = evolve(universe, window, size=args.population, generations=args.generations, seed=0, log=log,
                        **evaluator)
        seconds = time.perf_counter() - t0
        runs[name] = (seconds, log.evaluations, result)
        rate = log.evaluations * bars.height / seconds / 1e6
        best = [round(b, 3) for b in result.best_per_generation]
        print(f"[{name}{' on spark' if name == 'kernel' and extra else ''}] population {args.population}: "
              f"generation 0 + {args.generations}, {log.evaluations:,} evaluations in {seconds:.1f} s = "
              f"{seconds / (args.generations + 1):.2f} s per generation ({rate:.1f}M genome-bars/s); best Sharpe "
              f"lower bound by generation {best}")
    (ref_s, _, ref), (ker_s, evaluations, ker) = runs["numpy"], runs["kernel"]
    objectives = [np.array([ind.fitness.values for ind in r.population]) for r in (ref, ker)]
    identical = objectives[0].shape == objectives[1].shape and bool(np.allclose(*objectives, rtol=1e-9, atol=1e-12))
    per_generation = ker_s / (args.generations + 1)
    print(json.dumps({"seconds_per_generation": round(per_generation, 3), "vs_numpy": round(ref_s / ker_s, 2),
                      "genome_bars_per_s": round(evaluations * bars.height / ker_s), "identical": identical,
                      "numpy_seconds_per_generation": round(ref_s / (args.generations + 1), 3),
                      "engine": args.engine, "symbols": args.symbols, "years": args.years,
                      "population": args.population, "generations": args.generations}))


if __name__ == "__main__":
    main()

"""Evolution throughput: NSGA-II generations per second for a population over a synthetic universe.

    .venv/bin/python benchmarks/bench_evolution.py [--symbols 500] [--years 10] [--population 200] [--generations 2]

Features for the universe are computed once (``compute_features``, timed separately); each generation
evaluates the offspring (as many as the population) on every symbol over the whole span, batched into
engine calls of about 1,000 (genome x symbol) columns, then selects with NSGA-II.
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime

import numpy as np

from emp_core.evolution.fitness import Universe
from emp_core.evolution.population import ExperimentLog, evolve
from emp_core.market_data.sources import generate_bars
from emp_core.sensory import compute_features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--years", type=int, default=10)
    parser.add_argument("--population", type=int, default=200)
    parser.add_argument("--generations", type=int, default=2)
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
    log = ExperimentLog()
    t0 = time.perf_counter()
    result = evolve(universe, (np.datetime64("2009-01-01"), np.datetime64(f"{2009 + args.years}-01-01")),
                    size=args.population, generations=args.generations, seed=0, log=log, **extra)
    seconds = time.perf_counter() - t0
    evaluations = log.evaluations
    genome_bars = evaluations * bars.height
    print(f"[{args.engine}] population {args.population}: generation 0 + {args.generations} generations, "
          f"{evaluations:,} evaluations in {seconds:.1f} s = {(args.generations + 1) / seconds:.3f} generations/s "
          f"({genome_bars / seconds / 1e6:.1f}M genome-bars/s); best Sharpe lower bound by generation "
          f"{[round(b, 3) for b in result.best_per_generation]}")


if __name__ == "__main__":
    main()

"""Evolution throughput: NSGA-II generations per second for a population over a synthetic universe, on the
compiled kernel beside the NumPy engine (the reference) in the same run, with identical objectives.

    .venv/bin/python benchmarks/bench_evolution.py [--symbols 500] [--years 10] [--population 200] [--generations 1]
        [--engine in_process|spark]

Features for the universe are computed once (``compute_features``, timed separately); each generation
evaluates the offspring (as many as the population) on every symbol over the whole span, batched into
engine calls of about 1,000 (genome x symbol) columns, then selects with NSGA-II. A run is generation 0 (the
initial population) plus ``--generations``; seconds per generation divide by both. The last line is JSON:
seconds_per_generation (the kernel's), vs_numpy (the NumPy path's seconds over the kernel's),
genome_bars_per_s, identical (the final populations' objectives bit for bit equal), and the peak memory
above the process's baseline while each path ran (resident set, sampled every 5 ms). Then a profile of one
kernel-path evaluation of the population: where its time goes.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import threading
import time
from datetime import datetime
from functools import partial

import numpy as np

from emp_core.evolution.fitness import Universe, evaluate
from emp_core.evolution.population import ExperimentLog, evolve
from emp_core.market_data.sources import generate_bars
from emp_core.sensory import compute_features


class PeakMemory:
    """The process's peak resident set above its level at entry, sampled from /proc every 5 ms (the kernel's
    arrays come from numba's allocator, which tracemalloc does not see)."""

    def __enter__(self):
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * 4096

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    @property
    def mb(self) -> float:
        return (self.peak - self.base) / 2**20


def profile(universe: Universe, window, population: int) -> None:
    """One kernel-path evaluation of a population, under cProfile: the functions that take the time."""
    from emp_core.evolution.genome import BOUNDS, Genome

    rng = np.random.default_rng(1)
    genomes = [Genome.from_vector(rng.random(len(BOUNDS))) for _ in range(population)]
    pr = cProfile.Profile()
    t0 = time.perf_counter()
    pr.enable()
    evaluate(genomes, universe, *window)
    pr.disable()
    print(f"\nprofile of one kernel evaluation of {population} genomes ({time.perf_counter() - t0:.2f} s), "
          "by own time:")
    pstats.Stats(pr).sort_stats("tottime").print_stats(8)


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
        with PeakMemory() as memory:
            t0 = time.perf_counter()
            result = evolve(universe, window, size=args.population, generations=args.generations, seed=0, log=log,
                            **evaluator)
            seconds = time.perf_counter() - t0
        runs[name] = (seconds, log.evaluations, result, memory.mb)
        rate = log.evaluations * bars.height / seconds / 1e6
        best = [round(b, 3) for b in result.best_per_generation]
        print(f"[{name}{' on spark' if name == 'kernel' and extra else ''}] population {args.population}: "
              f"generation 0 + {args.generations}, {log.evaluations:,} evaluations in {seconds:.1f} s = "
              f"{seconds / (args.generations + 1):.2f} s per generation ({rate:.1f}M genome-bars/s); best Sharpe "
              f"lower bound by generation {best}; peak memory +{memory.mb:,.0f} MB")
    (ref_s, _, ref, ref_mb), (ker_s, evaluations, ker, ker_mb) = runs["numpy"], runs["kernel"]
    objectives = [np.array([ind.fitness.values for ind in r.population]) for r in (ref, ker)]
    identical = bool(np.array_equal(*objectives))
    per_generation = ker_s / (args.generations + 1)
    if not extra:
        profile(universe, window, args.population)
    print(json.dumps({"seconds_per_generation": round(per_generation, 3), "vs_numpy": round(ref_s / ker_s, 2),
                      "genome_bars_per_s": round(evaluations * bars.height / ker_s), "identical": identical,
                      "numpy_seconds_per_generation": round(ref_s / (args.generations + 1), 3),
                      "peak_mb_kernel": round(ker_mb), "peak_mb_numpy": round(ref_mb),
                      "engine": args.engine, "symbols": args.symbols, "years": args.years,
                      "population": args.population, "generations": args.generations}))


if __name__ == "__main__":
    main()

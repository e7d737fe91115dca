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
above the process's baseline while each path ran (resident set, sampled every 5 ms). Each path runs in its
own process (the kernel's first), so neither inherits the other's memory. The kernel's process then profiles
one evaluation of the population: where its time goes.
"""

from __future__ import annotations

import argparse
import cProfile
import ctypes
import json
import pstats
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from functools import partial
from pathlib import Path

import numpy as np

from emp_core.evolution.fitness import Universe, evaluate
from emp_core.evolution.population import ExperimentLog, evolve
from emp_core.market_data.sources import generate_bars
from emp_core.sensory import compute_features


class PeakMemory:
    """The process's peak resident set above its level at entry, sampled from /proc every 5 ms (numba's
    allocations, the fused kernel's scratch rows, are not seen by tracemalloc)."""

    def __enter__(self):
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # what was freed before goes back to the system: the base is real
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


def run_path(args) -> None:
    """One path in this process (a child of ``main``): build the universe, evolve, write the figures and the
    final population's objectives to ``args.out``."""
    bars = generate_bars(args.symbols, datetime(2009, 1, 1), datetime(2009 + args.years, 1, 1), seed=0)
    t0 = time.perf_counter()
    universe = Universe.from_frames(bars, compute_features(bars, None))
    features = time.perf_counter() - t0
    evaluator, on = {}, ""
    if args.path == "numpy":
        evaluator["evaluator"] = partial(evaluate, compiled=False)
    elif args.engine == "spark":
        from emp_core.evolution.spark import local_session, spark_evaluator

        t0 = time.perf_counter()
        evaluator["evaluator"] = spark_evaluator(local_session())
        on = f" on spark local[2] (session started in {time.perf_counter() - t0:.1f} s)"
    window = (np.datetime64("2009-01-01"), np.datetime64(f"{2009 + args.years}-01-01"))
    from emp_core.backtest.kernel import warm

    warm()  # loads numba's cache: not inside the timed run
    log = ExperimentLog()
    with PeakMemory() as memory:
        t0 = time.perf_counter()
        result = evolve(universe, window, size=args.population, generations=args.generations, seed=0, log=log,
                        **evaluator)
        seconds = time.perf_counter() - t0
    rate = log.evaluations * bars.height / seconds / 1e6
    best = [round(b, 3) for b in result.best_per_generation]
    print(f"[{args.path}{on}] universe {args.symbols} symbols x {args.years} years = {bars.height:,} bars (features "
          f"{features:.1f} s); population {args.population}: generation 0 + {args.generations}, "
          f"{log.evaluations:,} evaluations in {seconds:.1f} s = {seconds / (args.generations + 1):.2f} s per "
          f"generation ({rate:.1f}M genome-bars/s); best Sharpe lower bound by generation {best}; peak memory "
          f"+{memory.mb:,.0f} MB", flush=True)
    if args.path == "kernel" and args.engine == "in_process":
        profile(universe, window, args.population)
    np.save(args.out, np.array([ind.fitness.values for ind in result.population]))
    with open(f"{args.out}.json", "w") as fh:
        json.dump({"seconds": seconds, "evaluations": log.evaluations, "bars": bars.height, "peak_mb": memory.mb}, fh)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--years", type=int, default=10)
    parser.add_argument("--population", type=int, default=200)
    parser.add_argument("--generations", type=int, default=1)
    parser.add_argument("--engine", choices=["in_process", "spark"], default="in_process",
                        help="spark: the kernel path's fitness on a local[2] Spark session (identical results)")
    parser.add_argument("--path", choices=["kernel", "numpy"], help=argparse.SUPPRESS)  # a child's path
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.path:
        run_path(args)
        return
    figures, objectives = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for path in ("kernel", "numpy"):  # each in a fresh process: its memory and caches its own
            out = str(Path(tmp) / path)
            subprocess.run([sys.executable, __file__, *sys.argv[1:], "--path", path, "--out", out], check=True)
            figures[path] = json.loads(Path(f"{out}.json").read_text())
            objectives[path] = np.load(f"{out}.npy")
    ker, ref = figures["kernel"], figures["numpy"]
    per_generation = ker["seconds"] / (args.generations + 1)
    print(json.dumps({"seconds_per_generation": round(per_generation, 3),
                      "vs_numpy": round(ref["seconds"] / ker["seconds"], 2),
                      "genome_bars_per_s": round(ker["evaluations"] * ker["bars"] / ker["seconds"]),
                      "identical": bool(np.array_equal(objectives["kernel"], objectives["numpy"])),
                      "numpy_seconds_per_generation": round(ref["seconds"] / (args.generations + 1), 3),
                      "peak_mb_kernel": round(ker["peak_mb"]), "peak_mb_numpy": round(ref["peak_mb"]),
                      "engine": args.engine, "symbols": args.symbols, "years": args.years,
                      "population": args.population, "generations": args.generations}))


if __name__ == "__main__":
    main()

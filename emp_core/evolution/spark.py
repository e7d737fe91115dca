"""Fitness evaluation spread over Spark: the same chunks as in-process, on executors, identical results.

``spark_evaluator(session)`` returns a drop-in for ``fitness.evaluate``: the universe's symbols are
cut into the same chunks as in-process (``fitness.chunks``), broadcast once per window, each chunk runs
``fitness.run_chunk`` on an executor and returns only its portfolio sums, and the driver adds them in chunk order with
``fitness.combine``: the same arithmetic in the same order as in-process. Used by the evolution
assets through dagster-pyspark's ``LazyPySparkResource`` (``local[2]`` in tests, a cluster URL in
production).
"""

from __future__ import annotations

import sys

from emp_core.config import python_for_spark_workers
from emp_core.evolution.fitness import chunks, combine, pieces, run_chunk

# Spark settings for a small local session (tests, one machine): loopback only, no UI, few shuffle
# partitions, and executors that run this interpreter (so they import the same emp_core).
LOCAL_CONFIG = {
    "spark.master": "local[2]",
    "spark.app.name": "emp-evolution",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.sql.shuffle.partitions": "2",
    "spark.driver.memory": "4g",  # local mode: the executors live in the driver's JVM
    "spark.pyspark.python": sys.executable,
    "spark.pyspark.driver.python": sys.executable,
}


def local_session(config: dict[str, str] | None = None):
    """A SparkSession with ``LOCAL_CONFIG`` (overridden by ``config``)."""
    from pyspark.sql import SparkSession

    python_for_spark_workers(sys.executable)
    builder = SparkSession.builder
    for key, value in {**LOCAL_CONFIG, **(config or {})}.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def spark_evaluator(session):
    """A ``fitness.evaluate`` that runs the engine calls on ``session``'s executors.

    Each window's chunks are broadcast once and reused by every generation on that window: an executor
    fetches the window's chunks once (a task unpickles only its own), and a generation ships only the
    genomes. The previous window's broadcasts are destroyed when the next window starts (``unpersist``
    would leave their files on the driver until the session ends)."""
    sc = session.sparkContext
    shipped: dict = {}  # "key": (universe, start, end) of the chunks broadcast now, "chunks": their broadcasts

    def broadcast(universe, start, end) -> list:
        key = (universe, start, end)
        if shipped.get("key") is None or not _same(shipped["key"], key):
            for b in shipped.get("chunks", []):
                b.destroy()  # the evaluation that used it has collected its results
            parts = chunks(pieces(universe, start, end), [])
            if not parts:
                raise ValueError(f"no symbol has two bars in [{start}, {end})")
            shipped.update(key=key, chunks=[sc.broadcast(part) for part in parts])
        return shipped["chunks"]

    def evaluate(genomes, universe, start, end, *, commission: float = 0.001, slippage_bps: float = 0.0,
                 min_trades: int = 5, compiled: bool = True):
        parts = broadcast(universe, start, end)
        jobs = sc.parallelize(list(enumerate(parts)), numSlices=len(parts))
        done = jobs.map(lambda item: (item[0], run_chunk(item[1].value, genomes, commission, slippage_bps,
                                                         compiled=compiled))).collect()
        results = [r for _, r in sorted(done, key=lambda x: x[0])]
        return combine(results, len(genomes), universe.bars_per_year, min_trades, (start, end))

    return evaluate


def _same(a: tuple, b: tuple) -> bool:
    """The same universe object and the same window."""
    return a[0] is b[0] and a[1] == b[1] and a[2] == b[2]

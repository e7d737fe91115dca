"""Fitness on Spark (local[2]): the same results as in-process, to the bit."""

import os

import numpy as np
import polars as pl
import pytest

from emp_core.evolution.fitness import Universe, evaluate
from emp_core.evolution.genome import BOUNDS, CATALOGUE, Genome
from emp_core.evolution.spark import spark_evaluator
from emp_core.evolution.walkforward import walk_forward, windows
from emp_core.sensory import compute_features
from tests.support import SHIPPED

pytestmark = pytest.mark.spark


def universe() -> Universe:
    bars = pl.read_parquet(SHIPPED / "bars_daily.parquet")
    return Universe.from_frames(bars, compute_features(bars, None))


def test_spark_evaluation_equals_in_process(spark):
    u = universe()
    rng = np.random.default_rng(0)
    genomes = [*CATALOGUE.values(), *(Genome.from_vector(rng.random(len(BOUNDS))) for _ in range(25))]
    window = (np.datetime64("2001-01-01"), np.datetime64("2011-01-01"))
    local = evaluate(genomes, u, *window)
    remote = spark_evaluator(spark)(genomes, u, *window)
    np.testing.assert_array_equal(remote.objectives, local.objectives)
    np.testing.assert_array_equal(remote.returns, local.returns)
    np.testing.assert_array_equal(remote.trades, local.trades)
    assert spark.sparkContext.defaultParallelism == 2


def test_the_evaluator_reuses_a_windows_broadcast_chunks_and_renews_them_for_another(spark, monkeypatch):
    """The chunks of a window are shipped once and serve every generation on it; another window (or another
    universe) ships its own: each evaluation still equals the in-process one."""
    sc = spark.sparkContext
    shipped, handles = [], []

    def broadcast(value, _real=sc.broadcast):
        shipped.append(value)
        handles.append(_real(value))
        return handles[-1]

    monkeypatch.setattr(sc, "broadcast", broadcast)
    u = universe()
    rng = np.random.default_rng(1)
    evaluator = spark_evaluator(spark)
    first, second = (np.datetime64("2001-01-01"), np.datetime64("2006-01-01")), (np.datetime64("2006-01-01"),
                                                                                 np.datetime64("2011-01-01"))
    per_window = []
    for window in (first, first, second, first):
        genomes = [Genome.from_vector(rng.random(len(BOUNDS))) for _ in range(6)]
        np.testing.assert_array_equal(evaluator(genomes, u, *window).returns, evaluate(genomes, u, *window).returns)
        per_window.append(len(shipped))
    chunks_per_window = per_window[0]
    assert chunks_per_window > 1
    assert per_window == [chunks_per_window, chunks_per_window, 2 * chunks_per_window, 3 * chunks_per_window]
    # the windows left behind are destroyed, their files on the driver too; the window in use is not
    gone = [not os.path.exists(h._path) for h in handles]
    assert gone == [True] * 2 * chunks_per_window + [False] * chunks_per_window
    other = universe()  # another object with the same bars: its own chunks
    genomes = list(CATALOGUE.values())
    np.testing.assert_array_equal(evaluator(genomes, other, *first).objectives,
                                  evaluate(genomes, other, *first).objectives)
    assert len(shipped) == 4 * chunks_per_window


def test_a_walk_forward_on_spark_makes_the_same_choices(spark):
    u = universe()
    spans = windows(np.datetime64("2000-01-01"), np.datetime64("2006-12-31"), train_years=3)[:1]
    local = walk_forward(u, spans, size=8, generations=1, seed=2)
    remote = walk_forward(u, spans, size=8, generations=1, seed=2, evaluator=spark_evaluator(spark))
    assert remote.log.frame().equals(local.log.frame())
    assert remote.decision == local.decision

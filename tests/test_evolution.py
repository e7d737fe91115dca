"""Evolution: DEAP lifecycle with lineage, walk-forward that never sees later data, and champion gates."""

import itertools
from datetime import datetime

import numpy as np
import polars as pl
import pytest

from emp_core.evolution.fitness import FEATURE_COLUMNS, Universe, evaluate
from emp_core.evolution.genome import CATALOGUE
from emp_core.evolution.population import ExperimentLog, evolve
from emp_core.evolution.walkforward import _cut, walk_forward, windows
from emp_core.sensory import compute_features
from tests.conftest import SHIPPED


@pytest.fixture(scope="module")
def universe() -> Universe:
    bars = pl.read_parquet(SHIPPED / "bars_daily.parquet")
    return Universe.from_frames(bars, compute_features(bars, None))


TRAIN = (np.datetime64("2003-01-01"), np.datetime64("2006-01-01"))


def test_evolution_is_elitist_logged_and_has_lineage(universe):
    log = ExperimentLog()
    result = evolve(universe, TRAIN, size=20, generations=4, seed=1, log=log)
    best = result.best_per_generation
    assert all(b >= a for a, b in itertools.pairwise(best))  # NSGA-II keeps the elite
    frame = log.frame()
    assert log.trials == frame.height == 20 * 5
    seen = set()
    for row in frame.iter_rows(named=True):
        assert set(row["parents"]) <= seen  # every parent was evaluated before its child
        seen.add(row["individual"])
        assert row["species"] in CATALOGUE
    assert frame.filter(pl.col("generation") == 0).get_column("operator").str.starts_with("seed:").sum() == 5
    assert set(frame.filter(pl.col("generation") > 0).get_column("operator")) <= {"sbx+polynomial", "polynomial"}
    again = ExperimentLog()
    evolve(universe, TRAIN, size=20, generations=4, seed=1, log=again)
    assert again.frame().equals(frame)  # same seed, same history


def test_windows_roll_forward_without_overlap():
    spans = windows(np.datetime64("2000-01-01"), np.datetime64("2010-12-31"), train_years=3)
    assert len(spans) == 7
    for w in spans:
        assert w.train[0] < w.train[1] == w.selection[0] < w.selection[1] == w.test[0] < w.test[1]
    assert all(a.train[0] < b.train[0] for a, b in itertools.pairwise(spans))


def test_walk_forward_never_reads_past_a_window(universe):
    """The same windows on a universe whose future was cut away give the same choices and numbers."""
    spans = windows(np.datetime64("2000-01-01"), np.datetime64("2008-06-30"), train_years=3)[:2]
    full = walk_forward(universe, spans, size=12, generations=2, seed=3)
    cut = walk_forward(_cut(universe, spans[-1].test[1]), spans, size=12, generations=2, seed=3)
    assert [g.to_vector().tolist() for g in full.chosen] == [g.to_vector().tolist() for g in cut.chosen]
    assert full.test_metrics == cut.test_metrics
    assert full.log.frame().equals(cut.log.frame())


def test_no_champion_on_the_shipped_data_and_the_reason_is_given(universe):
    spans = windows(np.datetime64("2000-01-01"), np.datetime64("2012-12-31"), train_years=3)
    result = walk_forward(universe, spans, size=16, generations=2, seed=0)
    d = result.decision
    assert d.trials == len(spans) * 16 * 3
    assert d.promoted == (d.dsr >= 0.95 and d.pbo <= 0.2)
    assert d.reason.startswith("promoted" if d.promoted else "no champion")
    assert (result.champion is not None) == d.promoted


def planted_edge_universe(n: int = 2600, seed: int = 0) -> Universe:
    """One symbol whose WHAT score at the close of t tells the direction of bar t+1 (an edge no one has)."""
    rng = np.random.default_rng(seed)
    z = rng.choice([-1.0, 1.0], n)
    close = np.empty(n)
    open_ = np.empty(n)
    close[0] = open_[0] = 100.0
    for t in range(1, n):
        open_[t] = close[t - 1]
        close[t] = open_[t] * (1 + 0.004 * z[t - 1] + rng.normal(0, 0.004))
    ts = np.array([np.datetime64(datetime(2000, 1, 3)) + np.timedelta64(i, "D") for i in range(n)])
    feats = {c: np.full(n, np.nan) for c in FEATURE_COLUMNS}
    feats["what_score"], feats["what_confidence"] = z * 0.9, np.ones(n)
    ohlc = {"open": open_, "close": close, "high": np.maximum(open_, close) * 1.001,
            "low": np.minimum(open_, close) * 0.999}
    return Universe(("EDGE",), {"EDGE": ts}, {"EDGE": ohlc}, {"EDGE": feats}, bars_per_year=365.0)


def test_a_real_edge_passes_pbo_and_the_gates_are_configurable():
    u = planted_edge_universe()
    spans = windows(u.ts["EDGE"][0], u.ts["EDGE"][-1], train_years=2)
    strict = walk_forward(u, spans, size=12, generations=2, seed=0)
    # Every chosen genome follows WHAT and earns an annualised Sharpe lower bound above 10 out of sample.
    assert all(g.w_what > 0 for g in strict.chosen)
    assert min(m["sharpe_lb"] for m in strict.test_metrics) > 10
    assert strict.decision.pbo < 0.05
    # The deflated Sharpe ratio is conservative: the trials' Sharpe ratios spread widely (genomes that fade
    # WHAT lose as surely as the others win), so the luck benchmark SR0 is high and the gate refuses.
    assert not strict.decision.promoted and "deflated Sharpe" in strict.decision.reason
    lenient = walk_forward(u, spans, size=12, generations=2, seed=0, min_dsr=0.0)
    assert lenient.decision.promoted and lenient.decision.reason.startswith("promoted")
    assert lenient.champion is not None and lenient.champion.w_what > 0
    trend = evaluate([CATALOGUE["trend"]], u, spans[0].test[0], spans[-1].test[1])
    assert trend.objectives[0, 0] > 2  # the seed that follows WHAT sees the edge

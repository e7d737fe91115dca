"""Evolution: DEAP lifecycle with lineage, walk-forward that never sees later data, the trial registry across
runs, and the gates' outcome on noise and on a planted edge."""

import itertools
from datetime import datetime

import numpy as np
import polars as pl
import pytest

from emp_core.evolution.fitness import Universe
from emp_core.evolution.genome import CATALOGUE, Genome
from emp_core.evolution.overfitting import expected_max_sharpe
from emp_core.evolution.planted import planted_universe
from emp_core.evolution.population import ExperimentLog, evolve
from emp_core.evolution.promotion import Gates
from emp_core.evolution.registry import MemoryRegistry
from emp_core.evolution.registry import genome_hash as registry_genome_hash
from emp_core.evolution.walkforward import walk_forward, windows
from emp_core.sensory import compute_features
from tests.support import SHIPPED


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
    assert log.evaluations == frame.height == 20 * 5
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


def test_walk_forward_decisions_survive_a_re_read_of_the_truncated_history():
    """Every window's decision (chosen genome, its selection-span and test metrics) and the promotion decision
    are the same when bars *and features* are computed on the history cut at the last test end."""
    bars = pl.read_parquet(SHIPPED / "bars_daily.parquet").filter(pl.col("ts") < datetime(2009, 1, 1))
    spans = windows(np.datetime64("2000-01-01"), np.datetime64("2008-06-30"), train_years=3)[:2]
    end = spans[-1].test[1]
    cut_bars = bars.filter(pl.col("ts") < end.astype(datetime))
    full = walk_forward(Universe.from_frames(bars, compute_features(bars, None)), spans, size=12, generations=2,
                        seed=3)
    cut = walk_forward(Universe.from_frames(cut_bars, compute_features(cut_bars, None)), spans, size=12,
                       generations=2, seed=3)
    assert [g.to_vector().tolist() for g in full.chosen] == [g.to_vector().tolist() for g in cut.chosen]
    assert full.selection_metrics == cut.selection_metrics
    assert full.test_metrics == cut.test_metrics
    assert full.log.frame().equals(cut.log.frame())
    assert full.decision == cut.decision
    # and the cut is real: the full history holds bars (and features) past the last test end
    assert bars["ts"].max() >= end.astype(datetime) > cut_bars["ts"].max()


def scrambled(bars: pl.DataFrame, cut: datetime, seed: int) -> Universe:
    """The true bars before ``cut`` and another random path from it on (every price of a row scaled by one
    random-walk factor, so each bar stays consistent), with features computed over the whole."""
    rng = np.random.default_rng(seed)
    later = pl.col("ts") >= cut
    factor = pl.Series(np.exp(np.cumsum(rng.normal(0, 0.02, bars.height))))
    prices = ("open", "high", "low", "close")
    moved = bars.with_columns(pl.when(later).then(pl.col(c) * factor).otherwise(pl.col(c)).alias(c) for c in prices)
    return Universe.from_frames(moved, compute_features(moved, None))


def test_no_phase_of_a_window_reads_the_bars_after_it():
    """Scramble everything from a window's test start: its choice and selection metrics stay; scramble from its
    selection start: its training stays. Each scramble changes the later phase, so the test can see a leak."""
    bars = pl.read_parquet(SHIPPED / "bars_daily.parquet").filter(pl.col("ts") < datetime(2010, 1, 1))
    true = Universe.from_frames(bars, compute_features(bars, None))
    for w in windows(np.datetime64("2000-01-01"), np.datetime64("2009-12-31"), train_years=3)[1:3]:
        base = walk_forward(true, [w], size=10, generations=2, seed=5)
        test_cut = walk_forward(scrambled(bars, w.test[0].astype(datetime), w.index), [w], size=10, generations=2,
                                seed=5)
        assert test_cut.chosen == base.chosen and test_cut.selection_metrics == base.selection_metrics
        assert test_cut.test_metrics != base.test_metrics
        selection_cut = walk_forward(scrambled(bars, w.selection[0].astype(datetime), w.index), [w], size=10,
                                     generations=2, seed=5)
        train = [r for r in base.log.rows if r["phase"] == "train"]
        assert [r for r in selection_cut.log.rows if r["phase"] == "train"] == train
        assert selection_cut.selection_metrics != base.selection_metrics


def test_the_registry_counts_trials_across_runs_once_each():
    u = planted_universe(None, n_symbols=3, years=6, seed=0)
    spans = windows(u.ts["P00"][0], u.ts["P00"][-1])
    registry = MemoryRegistry()
    first = walk_forward(u, spans, size=8, generations=1, seed=0, registry=registry, dataset="d")
    again = walk_forward(u, spans, size=8, generations=1, seed=0, registry=registry, dataset="d",
                         gates=Gates(min_dsr=0.5))
    other = walk_forward(u, spans, size=8, generations=1, seed=1, registry=registry, dataset="d")
    # Other costs try the same genomes again: N does not start from nothing.
    dearer = walk_forward(u, spans, size=8, generations=1, seed=0, registry=registry, dataset="d", commission=0.002)
    assert dearer.trials_added > 0 and dearer.decision.n_trials == other.decision.n_trials
    assert first.trials_added > 0 and again.trials_added == 0 and other.trials_added > 0
    distinct = registry.trials("d")["genome_hash"].n_unique()
    assert first.decision.n_trials == again.decision.n_trials < other.decision.n_trials == distinct
    # Catalogue seeds are evaluated in every window of every run, yet each is one trial.
    catalogue = {registry_genome_hash(Genome.from_vector(g.to_vector())) for g in CATALOGUE.values()}
    rows = registry.trials("d").filter(pl.col("genome_hash").is_in(list(catalogue)))
    assert rows.height > len(catalogue) and rows["genome_hash"].n_unique() == len(catalogue)
    # Another dataset starts from nothing.
    alone = walk_forward(u, spans, size=8, generations=1, seed=1, registry=registry, dataset="elsewhere")
    assert alone.decision.n_trials < other.decision.n_trials


@pytest.mark.parametrize(("sharpe", "seed"), [(None, 11), (None, 12), (4.0, 11)])
def test_noise_gets_no_champion_and_a_strong_edge_does(sharpe, seed):
    """The gates' outcome on fixed seeds (benchmarks/bench_gates.py measures the rates over many)."""
    u = planted_universe(sharpe, n_symbols=10, years=10, seed=seed)
    spans = windows(u.ts["P00"][0], u.ts["P00"][-1])
    result = walk_forward(u, spans, size=20, generations=3, seed=seed, commission=0.001)
    d = result.decision
    if sharpe is None:
        assert not d.promoted and result.champion is None and d.reason.startswith("no champion")
    else:
        assert d.promoted and result.champion is not None, d.reason
        assert result.champion.w_what > 0  # it follows the planted dimension
    # N_eff: the N at which the closed form gives the bootstrap's SR0 (it may exceed N)
    assert d.n_trials > 0 and d.n_effective >= 1
    assert expected_max_sharpe(d.sharpe_variance, d.n_effective) == pytest.approx(d.sr0, rel=1e-9)
    assert d.dsr is not None and d.oos_psr is not None and d.pbo is not None


def test_front_mask_is_the_set_of_non_dominated_points():
    """NSGA-II's first front against the definition, pair by pair: a point is off the front when another is at
    least as good on every objective (higher Sharpe bound, higher drawdown, lower turnover) and better on one."""
    from emp_core.evolution.population import front_mask

    rng = np.random.default_rng(3)
    for _ in range(100):
        n = int(rng.integers(1, 30))
        s, d, t = np.round(rng.normal(size=(3, n)), 1)  # rounded: ties and duplicates occur
        expected = []
        for i in range(n):
            dominated = any(s[j] >= s[i] and d[j] >= d[i] and t[j] <= t[i]
                            and (s[j] > s[i] or d[j] > d[i] or t[j] < t[i]) for j in range(n))
            expected.append(not dominated)
        assert front_mask(s, d, t).tolist() == expected

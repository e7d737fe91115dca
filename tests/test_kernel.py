"""The compiled kernel (emp_core/backtest/kernel.py) against the NumPy engine, the reference: the same
equity, units, cash, trade counts, traded value and fills on random targets, prices, costs, sizing shares,
stops and take-profits, bankruptcies included. Equality is exact but for summation order: 1e-9 relative."""

from __future__ import annotations

import numpy as np
import pytest

from emp_core.backtest import engine, kernel


def market(rng, n_bars: int, n_strats: int, *, per_column: bool, vol: float = 0.02):
    shape = (n_bars, n_strats) if per_column else (n_bars,)
    close = 100 * np.exp(np.cumsum(rng.normal(0, vol, shape), axis=0))
    open_ = close * np.exp(rng.normal(0, vol / 2, shape))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, vol / 2, shape)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, vol / 2, shape)))
    return open_, high, low, close


def targets(rng, n_bars: int, n_strats: int, changes: float = 0.1):
    t = np.where(rng.random((n_bars, n_strats)) < changes, rng.choice([-1.0, 0.0, 1.0, np.nan],
                                                                      (n_bars, n_strats)), np.nan)
    # hold a view between changes (NaN inside a run is no view: flat), so orders are sparse
    held = np.copy(t)
    for i in range(1, n_bars):
        held[i] = np.where(np.isnan(t[i]), held[i - 1], t[i])
    return held


def same(a: engine.BacktestResult, b: engine.BacktestResult) -> None:
    for name in ("equity", "units", "cash", "traded_value"):
        np.testing.assert_allclose(getattr(b, name), getattr(a, name), rtol=1e-9, atol=1e-9, err_msg=name)
    np.testing.assert_array_equal(b.trades, a.trades)
    np.testing.assert_array_equal(b.wins, a.wins)
    assert a.fills.shape == b.fills.shape
    np.testing.assert_array_equal(b.fills[:, [0, 1, 4]], a.fills[:, [0, 1, 4]])
    np.testing.assert_allclose(b.fills[:, [2, 3]], a.fills[:, [2, 3]], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("seed", range(12))
def test_the_kernel_matches_the_engine_on_random_books(seed):
    rng = np.random.default_rng(seed)
    n_bars, n_strats = int(rng.integers(2, 300)), int(rng.integers(1, 9))
    open_, high, low, close = market(rng, n_bars, n_strats, per_column=bool(seed % 2))
    kw = {"cash": float(rng.choice([1_000.0, 10_000.0, 1e6])), "commission": float(rng.choice([0.0, 0.001, 0.01])),
          "slippage_bps": float(rng.choice([0.0, 5.0, 50.0])), "fractional": bool(seed % 3 == 0),
          "fraction": [None, 0.5, rng.uniform(0.1, 1.0, n_strats)][seed % 3]}
    if seed % 4:
        kw |= {"high": high, "low": low, "stop_loss": rng.uniform(0.01, 0.1, n_strats),
               "take_profit": np.where(rng.random(n_strats) < 0.3, np.nan, rng.uniform(0.01, 0.2, n_strats))}
    tg = targets(rng, n_bars, n_strats)
    same(engine.simulate(open_, close, tg, **kw), kernel.simulate(open_, close, tg, **kw))


def test_the_kernel_matches_the_engine_through_bankruptcy():
    """A crash to near zero: leveraged shorts and longs go bust; the liquidation, the zero equity after it and
    the orders that no longer fill agree with the engine's."""
    rng = np.random.default_rng(7)
    n = 200
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    close[100:] *= 0.01  # the instrument loses 99%
    close[150:] *= 1000.0  # and then multiplies: the short is ruined
    open_ = np.r_[close[0], close[:-1]]
    tg = targets(rng, n, 6, changes=0.2)
    tg[:, 0] = 1.0
    tg[:, 1] = -1.0
    for kw in ({}, {"commission": 0.01, "slippage_bps": 20.0}):
        a, b = engine.simulate(open_, close, tg, **kw), kernel.simulate(open_, close, tg, **kw)
        assert (a.fills[:, 4] == engine.BANKRUPT).any()
        same(a, b)


def test_gaps_through_levels_fill_at_the_open_as_in_the_engine():
    """Gaps: opens far beyond both levels, on and after the entry bar."""
    rng = np.random.default_rng(3)
    open_, high, low, close = market(rng, 400, 4, per_column=True, vol=0.08)
    tg = targets(rng, 400, 4, changes=0.05)
    kw = {"high": high, "low": low, "stop_loss": 0.02, "take_profit": 0.03, "slippage_bps": 10.0}
    a, b = engine.simulate(open_, close, tg, **kw), kernel.simulate(open_, close, tg, **kw)
    assert {engine.STOP_LOSS, engine.TAKE_PROFIT} <= set(a.fills[:, 4].tolist())
    same(a, b)


def test_fitness_on_the_kernel_gives_the_numpy_engines_objectives():
    """The evolution's fitness (every genome on every symbol, equal-weight portfolios): the compiled path's
    objectives and portfolio returns are the NumPy engine's, bit for bit, stops, costs and sizing included."""
    from datetime import datetime

    from emp_core.evolution.fitness import Universe, evaluate
    from emp_core.evolution.genome import CATALOGUE
    from emp_core.market_data.sources import generate_bars
    from emp_core.sensory import compute_features

    bars = generate_bars(12, datetime(2015, 1, 1), datetime(2017, 1, 1), seed=3)
    universe = Universe.from_frames(bars, compute_features(bars, None))
    genomes = list(CATALOGUE.values())
    window = (np.datetime64("2015-01-01"), np.datetime64("2017-01-01"))
    a = evaluate(genomes, universe, *window, commission=0.001, slippage_bps=5.0, compiled=False)
    b = evaluate(genomes, universe, *window, commission=0.001, slippage_bps=5.0, compiled=True)
    np.testing.assert_array_equal(a.trades, b.trades)
    assert a.trades.sum() > 0
    # the kernel sums the portfolio in the NumPy path's order: the same floats, not merely close ones
    np.testing.assert_array_equal(b.returns, a.returns)
    np.testing.assert_array_equal(b.objectives, a.objectives)


def test_price_rows_shared_by_many_strategies_give_the_per_column_result():
    """simulate_rows: three instruments' prices once, seven strategies mapped onto them, equals the engine on
    each strategy's own copy of its instrument's prices; a bad map or shape is refused."""
    rng = np.random.default_rng(11)
    n = 250
    o, h, lo, c = (np.stack(x) for x in zip(*[market(rng, n, 1, per_column=False) for _ in range(3)], strict=True))
    row_of = np.array([0, 2, 1, 1, 0, 2, 2])
    tg = targets(rng, n, row_of.size)
    kw = {"commission": 0.002, "slippage_bps": 3.0, "stop_loss": 0.04, "take_profit": 0.06}
    a = engine.simulate(o[row_of].T, c[row_of].T, tg, high=h[row_of].T, low=lo[row_of].T, **kw)
    same(a, kernel.simulate_rows(o, h, lo, c, row_of, tg, **kw))
    with pytest.raises(ValueError, match="row_of"):
        kernel.simulate_rows(o, h, lo, c, row_of + 1, tg)
    with pytest.raises(ValueError, match="one shape"):
        kernel.simulate_rows(o, h[:, :-1], lo, c, row_of, tg)


def test_compiled_genome_targets_equal_the_numpy_rules():
    """Random dimension scores and confidences with NaN gaps, random genomes (long-only ones too): the same
    target at every bar as emp_core.evolution.genome.targets."""
    from emp_core.evolution.genome import BOUNDS, DIMENSIONS, Genome, targets

    rng = np.random.default_rng(5)
    n = 400
    feats = {}
    for d in DIMENSIONS:
        score = np.tanh(np.cumsum(rng.normal(0, 0.3, n)))
        score[rng.random(n) < 0.1] = np.nan
        feats[f"{d}_score"], feats[f"{d}_confidence"] = score, rng.uniform(0, 1, n)
    genomes = [Genome.from_vector(rng.random(len(BOUNDS)), long_only=bool(i % 3 == 0)) for i in range(40)]
    want = targets(feats, genomes)
    got = kernel.genome_targets(feats, genomes)
    assert {-1.0, 0.0, 1.0} <= set(np.unique(want).tolist())
    np.testing.assert_array_equal(got.T, want)

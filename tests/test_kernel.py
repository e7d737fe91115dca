"""The compiled kernel (emp_core/backtest/kernel.py) against the NumPy engine, the reference: the same
equity, units, cash, trade counts, traded value and fills on random targets, prices, costs, sizing shares,
stops and take-profits, bankruptcies included. Equality is to the bit."""

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
    """Equal to the bit: each strategy's arithmetic happens in the same order in both engines (a sum in
    another order, or a fused multiply-add, would show here)."""
    for name in ("equity", "units", "cash", "traded_value", "trades", "wins", "fills"):
        np.testing.assert_array_equal(getattr(b, name), getattr(a, name), err_msg=name)


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


CAPPED_SEEDS = range(16)


@pytest.mark.parametrize("seed", CAPPED_SEEDS)
def test_the_kernel_matches_the_engine_under_a_volume_cap(seed):
    """Random books with a volume cap tight enough that entries, closes and reversals fill over several bars,
    bars without volume, stops passed over while nothing is held, and (some seeds) a crash to bankruptcy: the
    kernel's capped loop gives the engine's partial fills, average entries, states and counts."""
    a, b, _ = capped_case(seed)
    same(a, b)


def test_the_capped_books_do_fill_over_several_bars():
    """The cases above exercise what they claim: many orders keep filling after their order bar, and some
    strategies go bankrupt."""
    later = bust = 0
    for seed in CAPPED_SEEDS:
        a, _, tg = capped_case(seed)
        wanted = np.sign(np.nan_to_num(tg))
        ordered = np.vstack([np.zeros((1, tg.shape[1])), wanted[:-1]])
        order_bar = np.vstack([np.zeros((1, tg.shape[1]), dtype=bool), ordered[1:] != ordered[:-1]])
        orders = a.fills[a.fills[:, 4] == engine.ORDER]
        later += int((~order_bar[orders[:, 0].astype(int), orders[:, 1].astype(int)]).sum())
        bust += int((a.fills[:, 4] == engine.BANKRUPT).sum())
    assert later > 100
    assert bust > 0


def capped_case(seed):
    rng = np.random.default_rng(100 + seed)
    n_bars, n_strats = int(rng.integers(5, 250)), int(rng.integers(1, 7))
    open_, high, low, close = market(rng, n_bars, n_strats, per_column=bool(seed % 2), vol=0.04)
    if seed % 4 == 3:  # a crash and a squeeze: longs and shorts go bust while orders are still working
        k = n_bars // 2
        for a in (open_, high, low, close):
            a[k:] *= 0.02
            a[k + (n_bars - k) // 2:] *= 400.0
    cash = float(rng.choice([1_000.0, 10_000.0]))
    wanted = cash / 100.0  # about the units an entry wants at these prices
    volume = rng.uniform(0.0, 0.6, open_.shape) * wanted * 10  # 0 to 60% of an entry per bar (share 0.1)
    volume[rng.random(open_.shape) < 0.15] = 0.0
    kw = {"cash": cash, "commission": float(rng.choice([0.0, 0.002])), "slippage_bps": float(rng.choice([0.0, 10.0])),
          "fractional": bool(seed % 3 == 0), "fraction": [None, 0.5, rng.uniform(0.2, 1.0, n_strats)][seed % 3],
          "volume": volume, "volume_share": 0.1}
    if seed % 2 == 0:
        kw |= {"high": high, "low": low, "stop_loss": rng.uniform(0.01, 0.08, n_strats),
               "take_profit": np.where(rng.random(n_strats) < 0.3, np.nan, rng.uniform(0.02, 0.15, n_strats))}
    tg = targets(rng, n_bars, n_strats, changes=0.15)
    return engine.simulate(open_, close, tg, **kw), kernel.simulate(open_, close, tg, **kw), tg


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
    v = rng.uniform(0, 40, o.shape)
    same(engine.simulate(o[row_of].T, c[row_of].T, tg, high=h[row_of].T, low=lo[row_of].T, volume=v[row_of].T, **kw),
         kernel.simulate_rows(o, h, lo, c, row_of, tg, volume=v, **kw))
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


@pytest.mark.parametrize("bad", [0.0, -1.0, np.nan, np.inf])
@pytest.mark.parametrize("series", ["open", "close", "high", "low"])
def test_a_price_that_is_not_positive_and_finite_is_refused_by_both_engines(series, bad):
    """A zero or negative price would size an infinite or negative position, a NaN one poison every later
    equity: both engines refuse it up front, naming the series, the bar and the column; nothing is run."""
    rng = np.random.default_rng(3)
    open_, high, low, close = market(rng, 50, 3, per_column=True)
    prices = {"open": open_, "close": close, "high": high, "low": low}
    prices[series][17, 2] = bad
    tg = targets(rng, 50, 3)
    kw = {"high": prices["high"], "low": prices["low"], "stop_loss": 0.05}
    for simulate in (engine.simulate, kernel.simulate):
        with pytest.raises(ValueError, match=rf"{series} prices must be positive and finite: bar 17 \(column 2\)"):
            simulate(prices["open"], prices["close"], tg, **kw)
    rows = {k: np.ascontiguousarray(v.T) for k, v in prices.items()}
    with pytest.raises(ValueError, match=rf"{series} prices must be positive and finite: bar 17 \(column 2\)"):
        kernel.simulate_rows(rows["open"], rows["high"], rows["low"], rows["close"], np.arange(3), tg)


def test_high_and_low_are_not_read_without_stops():
    """Without stops the bars' range is never read, so a NaN there (a source without highs and lows) is
    no error, and the result is the one without them."""
    rng = np.random.default_rng(4)
    open_, _, low, close = market(rng, 60, 2, per_column=False)
    tg = targets(rng, 60, 2)
    for simulate in (engine.simulate, kernel.simulate):
        same(simulate(open_, close, tg), simulate(open_, close, tg, high=np.full(60, np.nan), low=low))


def test_volume_may_be_zero_but_not_negative_or_nan():
    rng = np.random.default_rng(6)
    open_, _, _, close = market(rng, 40, 1, per_column=False)
    tg = targets(rng, 40, 1, changes=0.3)
    volume = np.full(40, 1_000.0)
    volume[5:9] = 0.0  # a bar without trades: nothing fills there
    result = kernel.simulate(open_, close, tg, volume=volume)
    assert not np.isin(result.fills[:, 0], [5, 6, 7, 8]).any()
    for bad in (-1.0, np.nan):
        volume[9] = bad
        with pytest.raises(ValueError, match=r"volume must be non-negative and finite: bar 9"):
            kernel.simulate(open_, close, tg, volume=volume)


@pytest.mark.skipif(__import__("numba").config.DISABLE_JIT, reason="nothing is compiled (NUMBA_DISABLE_JIT)")
def test_read_only_and_strided_inputs_use_the_cached_compilation():
    """A Polars column's NumPy view is read-only, a transposed frame strided: numba would compile a second
    version of the kernel for either (seconds, at a user's first call); the kernel hands it the one layout
    it was compiled for instead, and gives the same result."""
    rng = np.random.default_rng(8)
    open_, high, low, close = market(rng, 80, 4, per_column=True)
    tg = targets(rng, 80, 4)
    kw = {"high": high, "low": low, "stop_loss": 0.03}
    want = kernel.simulate(open_, close, tg, **kw)
    compiled = (kernel._all, kernel._sma_cross)
    kernel.sma_cross(close[:, 0], [(2, 5)])
    before = {f: len(f.signatures) for f in compiled}
    frozen = []
    for a in (open_, close, tg, high, low):
        f = np.asfortranarray(a)
        f.flags.writeable = False
        frozen.append(f)
    o, c, t, h, lo = frozen
    same(want, kernel.simulate(o, c, t, high=h, low=lo, stop_loss=0.03))
    rows = [np.ascontiguousarray(x.T) for x in (open_, high, low, close)]
    for x in rows:
        x.flags.writeable = False
    same(want, kernel.simulate_rows(*rows, np.arange(4), t, stop_loss=0.03))
    np.testing.assert_array_equal(kernel.sma_cross(rows[3][0], [(2, 5)]), kernel.sma_cross(close[:, 0], [(2, 5)]))
    assert {f: len(f.signatures) for f in compiled} == before


def test_a_universe_with_a_repeated_or_unsorted_timestamp_is_refused():
    """The portfolio adds each bar's return at its timestamp's position: two bars at one timestamp would
    be added twice by one path and once by another. The universe refuses them, naming the symbol."""
    from emp_core.evolution.fitness import Universe

    ts = np.array(["2020-01-01", "2020-01-02", "2020-01-02", "2020-01-03"], dtype="datetime64[ns]")
    ohlc = {k: np.full(4, 100.0) for k in ("open", "high", "low", "close")}
    with pytest.raises(ValueError, match=r"XYZ: bar timestamps must be strictly increasing; bar 2"):
        Universe(("XYZ",), {"XYZ": ts}, {"XYZ": ohlc}, {"XYZ": {}})
    Universe(("XYZ",), {"XYZ": np.unique(ts)}, {"XYZ": ohlc}, {"XYZ": {}})


@pytest.mark.parametrize("seed", [0, 3, 5])
def test_without_curves_the_final_state_and_fills_are_the_same(seed):
    """curves=False keeps the last bar's equity, units and cash only: the engine's final values, trades and
    fills, on books that stop out, go bankrupt and (seed 3) fill under a volume cap."""
    rng = np.random.default_rng(seed)
    open_, high, low, close = market(rng, 300, 5, per_column=True, vol=0.05)
    tg = targets(rng, 300, 5)
    close[200:, 0] *= 10.0  # strategy 0 is short there (forced below), without a stop: bankrupt
    tg[:, 0] = -1.0
    kw = {"high": np.maximum(high, close), "low": np.minimum(low, close), "stop_loss": [np.nan, .05, .05, .1, .1],
          "commission": 0.001}
    if seed == 3:
        kw["volume"] = rng.uniform(0, 2_000, close.shape)
    full = kernel.simulate(open_, close, tg, **kw)
    final = kernel.simulate(open_, close, tg, curves=False, **kw)
    assert final.equity.shape == final.units.shape == final.cash.shape == (1, 5)
    for name in ("equity", "units", "cash"):
        np.testing.assert_array_equal(getattr(final, name)[0], getattr(full, name)[-1], err_msg=name)
    for name in ("trades", "wins", "traded_value", "fills"):
        np.testing.assert_array_equal(getattr(final, name), getattr(full, name), err_msg=name)
    assert full.equity[-1, 0] == 0.0 and (full.fills[:, 4] == engine.BANKRUPT).any()
    np.testing.assert_allclose(final.equity[0], engine.simulate(open_, close, tg, **kw).equity[-1], rtol=1e-9)


def sma_cross_reference(close, pairs, long_only=False):
    """The crossover rule in NumPy, from its statement: strict crosses of the two ``sma`` series (NaN compares
    false), the target held between crosses, flat before the first."""
    from emp_core.backtest.strategies import sma

    out = np.zeros((close.shape[0], len(pairs)))
    for j, (a, b) in enumerate(pairs):
        f, s = sma(close, a), sma(close, b)
        held = 0.0
        for t in range(1, close.shape[0]):
            if f[t - 1] < s[t - 1] and f[t] > s[t]:
                held = 1.0
            elif f[t - 1] > s[t - 1] and f[t] < s[t]:
                held = 0.0 if long_only else -1.0
            out[t, j] = held
    return out


@pytest.mark.parametrize("long_only", [False, True])
def test_compiled_sma_crossover_targets_follow_the_rule(long_only):
    """Random walks with flat stretches (equal averages: no strict cross), windows longer than the series and
    a window of one bar: the compiled targets are the rule's, exactly."""
    from emp_core.backtest.strategies import sma_cross

    rng = np.random.default_rng(9)
    for n in (1, 2, 7, 300):
        close = 100 + np.cumsum(rng.choice([-1.0, 0.0, 0.0, 1.0], n))
        pairs = [(1, 2), (2, 5), (3, 3), (5, 400), (4, 20)]
        got = sma_cross(close, pairs, long_only=long_only)
        np.testing.assert_array_equal(got, sma_cross_reference(close, pairs, long_only))
    assert set(np.unique(got)) == ({0.0, 1.0} if long_only else {-1.0, 0.0, 1.0})
    np.testing.assert_array_equal(kernel.sma_cross(close, pairs), sma_cross_reference(close, pairs))  # long/short
    assert sma_cross(close, []).shape == (close.size, 0)
    with pytest.raises(ValueError, match="at least 1 bar: 0"):
        sma_cross(close, [(0, 5)])


@pytest.mark.parametrize("columns", [1024, 70])
def test_fused_fitness_equals_the_numpy_path_on_ragged_symbols_and_ruin(columns, monkeypatch):
    """Symbols that start late, end early or hold a few bars (the padding), a squeeze that ruins the shorts,
    random genomes with and without stops, several chunks, and (70) a NumPy path that splits a chunk into
    engine calls of two symbols: the fused kernel's portfolio returns, objectives and trade counts are the
    NumPy path's, bit for bit."""
    from datetime import datetime

    import polars as pl

    from emp_core.evolution import fitness
    from emp_core.evolution.fitness import Universe, evaluate

    monkeypatch.setattr(fitness, "CHUNK_COLUMNS", columns)
    monkeypatch.setattr(fitness, "MIN_CHUNKS", 3)  # chunks of four symbols
    from emp_core.evolution.genome import BOUNDS, Genome
    from emp_core.market_data.sources import generate_bars
    from emp_core.sensory import compute_features

    bars = generate_bars(10, datetime(2015, 1, 1), datetime(2016, 6, 1), seed=8)
    symbols = bars.get_column("symbol").unique().sort().to_list()
    ts = bars.get_column("ts").unique().sort()
    keep = (pl.col("symbol") != symbols[0]) | (pl.col("ts") >= ts[120])  # starts late
    keep &= (pl.col("symbol") != symbols[1]) | (pl.col("ts") < ts[200])  # ends early
    keep &= (pl.col("symbol") != symbols[2]) | (pl.col("ts") < ts[3])  # three bars only
    bars = bars.filter(keep)
    squeeze = (pl.col("symbol") == symbols[3]) & (pl.col("ts") >= ts[250])
    bars = bars.with_columns([pl.when(squeeze).then(pl.col(c) * 30.0).otherwise(pl.col(c)).alias(c)
                              for c in ("open", "high", "low", "close")])
    universe = Universe.from_frames(bars, compute_features(bars, None))
    rng = np.random.default_rng(4)
    genomes = [Genome.from_vector(rng.random(len(BOUNDS)), long_only=bool(i % 4 == 0)) for i in range(30)]
    window = (np.datetime64("2015-01-01"), np.datetime64("2016-06-01"))
    a = evaluate(genomes, universe, *window, commission=0.002, slippage_bps=3.0, compiled=False)
    b = evaluate(genomes, universe, *window, commission=0.002, slippage_bps=3.0, compiled=True)
    np.testing.assert_array_equal(b.trades, a.trades)
    np.testing.assert_array_equal(b.returns, a.returns)
    np.testing.assert_array_equal(b.objectives, a.objectives)
    assert a.trades.sum() > 300 and (a.trades > 0).sum() > 15
    assert a.returns.min() < -0.08  # a short ruined by the squeeze: one of nine symbols loses everything


@pytest.mark.parametrize(("terms", "words"), [
    ({"cash": 0.0}, "cash must be positive"), ({"cash": np.nan}, "cash must be positive"),
    ({"commission": -0.001}, "commission is a rate"), ({"slippage_bps": 1e4}, "slippage_bps must be in"),
    ({"slippage_bps": np.nan}, "slippage_bps must be in"), ({"volume_share": np.nan}, "volume_share"),
    ({"volume_share": 0.0}, "volume_share"), ({"volume_share": 1.5}, "volume_share")])
def test_terms_no_market_has_are_refused_by_both_engines(terms, words):
    """Slippage of 100% fills a sell at 0 (the engine divided by it, the kernel gave NaN equity); a NaN volume
    share filled without limit in the kernel and not at all in the engine: both refuse such terms."""
    rng = np.random.default_rng(2)
    open_, _, _, close = market(rng, 30, 2, per_column=False)
    tg = targets(rng, 30, 2, changes=0.3)
    kw = {"volume": np.full(30, 1e6), **terms}
    for simulate in (engine.simulate, kernel.simulate):
        with pytest.raises(ValueError, match=words):
            simulate(open_, close, tg, **kw)
    with pytest.raises(ValueError, match=words):
        kernel.simulate_rows(open_[None], open_[None], open_[None], close[None], [0, 0], tg, **kw | {
            "volume": np.full((1, 30), 1e6)})


def test_no_bar_no_strategy_and_bad_shapes():
    """Empty books give empty results on both engines (curves or not); a volume or target array of the wrong
    shape, or a 2-D close for the crossovers, is a clear error."""
    for n_bars, n_strats in ((0, 3), (5, 0), (0, 0)):
        tg = np.zeros((n_bars, n_strats))
        prices = np.full(n_bars, 10.0)
        a = engine.simulate(prices, prices, tg)
        for curves in (True, False):
            b = kernel.simulate(prices, prices, tg, curves=curves)
            assert b.fills.shape == (0, 5) and b.trades.shape == (n_strats,)
            want = a.equity if curves else a.equity[-1:]
            np.testing.assert_array_equal(b.equity, want)
    rows = np.full((2, 10), 10.0)
    with pytest.raises(ValueError, match="volume rows"):
        kernel.simulate_rows(rows, rows, rows, rows, [0, 1], np.zeros((10, 2)), volume=np.ones((2, 9)))
    with pytest.raises(ValueError, match="bars x strategies"):
        kernel.simulate_rows(rows, rows, rows, rows, [0, 1], np.zeros(10))
    from emp_core.backtest.strategies import sma_cross

    with pytest.raises(ValueError, match="one series"):
        sma_cross(rows, [(2, 3)])


def test_portfolio_fitness_refuses_inputs_that_would_index_outside_its_arrays():
    """numba checks no bounds: a position past the timestamps, a length past the bars, fusion terms with more
    dimensions than the weights, rules for other genomes would read or write outside the arrays (a crash, or
    silently wrong sums). Each is refused before the kernel runs; the valid call runs."""
    from emp_core.evolution.genome import CATALOGUE, DIMENSIONS

    genomes = list(CATALOGUE.values())
    k, n = 2, 6
    rows = np.full((k, n), 10.0)
    signal = np.zeros((k, len(DIMENSIONS), n))
    positions = np.tile(np.arange(n), (k, 1))
    lengths = np.array([n, 4])
    ok = (rows, rows, rows, rows, signal, signal, genomes, positions, lengths, n)
    costs = {"cash": 1.0, "commission": 0.0, "fractional": True, "slippage_bps": 0.0}
    total, turnover, trades = kernel.portfolio_fitness(*ok, **costs)
    assert total.shape == (n, len(genomes)) and turnover.shape == trades.shape == (len(genomes),)
    bad = [({7: positions + 1}, "positions must lie in"),  # past the timestamps
           ({7: positions - 1}, "positions must lie in"),  # negative
           ({7: positions[:, :4]}, "must agree"),  # narrower than the bars
           ({8: np.array([n + 1, 4])}, "lengths must be in"),  # past the bars
           ({4: np.zeros((k, 6, n)), 5: np.zeros((k, 6, n))}, r"rules must hold 5 genomes x 6 dimensions"),
           ({4: np.zeros((k * 5, n)), 5: np.zeros((k * 5, n))}, "must agree")]  # terms not per symbol
    for change, words in bad:
        args = list(ok)
        for i, v in change.items():
            args[i] = v
        with pytest.raises(ValueError, match=words):
            kernel.portfolio_fitness(*args, **costs)
    with pytest.raises(ValueError, match="rules must hold"):
        kernel.portfolio_fitness(*ok, rules=kernel.genome_rules(genomes[:2]), **costs)
    closes = rows.copy()
    closes[1, 3] = np.nan
    with pytest.raises(ValueError, match=r"close prices must be positive and finite: bar 3 \(column 1\)"):
        kernel.portfolio_fitness(rows, rows, rows, closes, *ok[4:], **costs)
    kernel.portfolio_fitness(*ok[:8], np.array([n, 0]), n, **costs)  # a symbol without a bar adds nothing
    one = rows[:, :1]  # one bar, one timestamp: position 0 is in range
    kernel.portfolio_fitness(one, one, one, one, signal[:, :, :1], signal[:, :, :1], genomes, positions[:, :1],
                             np.array([1, 1]), 1, **costs)
    # a padded bar's position is never read: positions beyond a symbol's length may hold anything
    padded = positions.copy()
    padded[1, 4:] = 10 ** 9
    np.testing.assert_array_equal(kernel.portfolio_fitness(*ok[:7], padded, *ok[8:], **costs)[0], total)


def test_a_strategy_with_more_fills_than_its_first_room_runs_again_for_them():
    """Fills go first into room for three per FILL_ROOM bars; a strategy that reverses every bar makes far more
    (and a capped one more still), runs again alone to collect them, and the table is the engine's."""
    rng = np.random.default_rng(12)
    n = 400
    open_, high, low, close = market(rng, n, 3, per_column=True)
    tg = np.zeros((n, 3))
    tg[:, 0] = np.where(np.arange(n) % 2, 1.0, -1.0)  # reverses at every open
    tg[50:, 1] = 1.0  # one order
    tg[:, 2] = np.where(np.arange(n) % 4 < 2, 1.0, -1.0)
    room = 3 * -(-n // kernel.FILL_ROOM) + 4
    for kw in ({}, {"high": high, "low": low, "stop_loss": 0.01}, {"volume": rng.uniform(0, 300, (n, 3))}):
        a, b = engine.simulate(open_, close, tg, **kw), kernel.simulate(open_, close, tg, **kw)
        same(a, b)
        per_strategy = np.bincount(b.fills[:, 1].astype(int), minlength=3)
        assert per_strategy[0] > room and per_strategy[2] > room


@pytest.mark.parametrize("extra", [-1, 0, 1])
def test_a_strategy_at_the_edge_of_its_fill_room(extra):
    """One fill fewer than the room, exactly the room, one more: the table is the engine's either way."""
    n = 64
    room = 3 * -(-n // kernel.FILL_ROOM) + 4  # 10 fills
    fills = room + extra
    tg = np.zeros((n, 2))
    # a long entry is one fill, each reversal two: 1 + 2 x (fills - 1) / 2 for odd counts, plus a flat exit for even
    changes = [1.0 if i % 2 == 0 else -1.0 for i in range((fills + 1) // 2)]
    if fills % 2 == 0:
        changes.append(0.0)
    for i, d in enumerate(changes):
        tg[2 * i + 1:, 0] = d
    tg[5:, 1] = 1.0
    prices = np.linspace(100.0, 120.0, n)
    a, b = engine.simulate(prices, prices, tg), kernel.simulate(prices, prices, tg)
    same(a, b)
    assert int((b.fills[:, 1] == 0).sum()) == fills


def test_every_kernel_is_compiled_cached_on_disk_and_runs_in_parallel_or_without_the_gil():
    """In a fresh interpreter with the JIT on (the mutation runs set NUMBA_DISABLE_JIT): every function of the
    kernel's loops is compiled machine code that numba caches on disk (else a user's first call compiles for
    seconds), with NumPy's float semantics (no ZeroDivisionError inside a parallel loop); the population
    functions run their columns in parallel, the per-column ones release the GIL."""
    import json
    import os
    import subprocess
    import sys

    code = ("import json; from numba.core.registry import CPUDispatcher; from emp_core.backtest import kernel; "
            "print(json.dumps({k: [type(f._cache).__name__, f.targetoptions.get('error_model'), "
            "bool(f.targetoptions.get('parallel')), bool(f.targetoptions.get('nogil'))] "
            "for k, f in vars(kernel).items() if isinstance(f, CPUDispatcher)}))")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_DISABLE_JIT"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    found = json.loads(run.stdout)
    parallel = {"_all", "_targets", "_fitness", "_sma_cross"}
    per_column = {"_put", "_reduce", "_direction", "_column", "_hits", "_level_exit", "_bankrupt", "_column_capped",
                  "_genome_row"}
    assert set(found) == parallel | per_column
    for name, (cache, errors, in_parallel, nogil) in found.items():
        assert cache == "FunctionCache" and errors == "numpy", name
        assert (in_parallel, nogil) == ((True, False) if name in parallel else (False, True)), name


def test_warm_compiles_every_kernel_and_says_how_long():
    assert kernel.warm() > 0


def test_fused_fitness_holds_a_busy_genome_and_a_position_from_the_first_bar(monkeypatch):
    """A genome that reverses every few bars makes more fills per symbol than the fused kernel's first fill
    buffer holds (it grows it), and a strong signal at bar 0 holds a position through bar 1 (its first bar
    return counts): the NumPy path's sums, bit for bit."""
    from emp_core.evolution import fitness
    from emp_core.evolution.fitness import Universe, evaluate
    from emp_core.evolution.genome import DIMENSIONS, Genome

    monkeypatch.setattr(fitness, "MIN_CHUNKS", 1)  # one chunk: the two-bar symbol is padded to 600 bars
    n = 600
    t = np.arange(n)
    ts = np.datetime64("2020-01-01") + t.astype("timedelta64[D]")
    rng = np.random.default_rng(21)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    ohlc = {"open": np.r_[100.0, close[:-1]], "high": close * 1.01, "low": close * 0.99, "close": close}
    ohlc["high"] = np.maximum(ohlc["high"], ohlc["open"])
    ohlc["low"] = np.minimum(ohlc["low"], ohlc["open"])
    score = np.where((t // 3) % 2 == 0, 0.9, -0.9)  # strong from bar 0, flipping every three bars
    feats = {f"{d}_{k}": np.full(n, np.nan) for d in DIMENSIONS for k in ("score", "confidence")}
    feats["why_score"], feats["why_confidence"] = score, np.ones(n)
    two = slice(0, 2)  # and a symbol with two bars: its padding repeats its first target
    universe = Universe(("A", "B", "C"), {"A": ts, "B": ts, "C": ts[two]},
                        {"A": ohlc, "B": ohlc, "C": {k: v[two] for k, v in ohlc.items()}},
                        {"A": feats, "B": feats, "C": {k: v[two] for k, v in feats.items()}})
    zero = dict.fromkeys((f"w_{d}" for d in DIMENSIONS), 0.0)
    busy = Genome(**(zero | {"w_why": 1.0}), entry=0.5, exit=0.1, min_confidence=0.5, holding_period=1,
                  stop_loss=0.0, take_profit=0.0, position_size=1.0)
    calm = Genome(**(zero | {"w_why": 1.0}), entry=0.5, exit=0.1, min_confidence=0.5, holding_period=1,
                  stop_loss=0.005, take_profit=0.0, position_size=0.5, long_only=True)  # a stop, no take-profit
    window = (ts[0], ts[-1] + np.timedelta64(1, "D"))
    a = evaluate([busy, calm], universe, *window, compiled=False)
    b = evaluate([busy, calm], universe, *window, compiled=True)
    np.testing.assert_array_equal(b.trades, a.trades)
    np.testing.assert_array_equal(b.returns, a.returns)
    np.testing.assert_array_equal(b.objectives, a.objectives)
    assert a.trades[0] > 2 * 64  # both symbols: far more fills than 64 each
    assert a.returns[1, 0] != 0.0  # long from bar 1's open: bar 1's return is a position's


def test_compiled_genome_targets_at_their_thresholds():
    """Scores and confidences in powers of two (exact arithmetic) placed exactly on a genome's thresholds: a
    signal equal to the entry enters, a confidence equal to the minimum is sure enough, a signal equal to the
    exit does not exit; the kernel gives the rule's targets, as the NumPy rules do."""
    from emp_core.evolution.genome import DIMENSIONS, Genome, targets

    zero = dict.fromkeys((f"w_{d}" for d in DIMENSIONS), 0.0)
    g = Genome(**(zero | {"w_why": 1.0}), entry=0.5, exit=0.25, min_confidence=0.5, holding_period=1,
               stop_loss=0.0, take_profit=0.0, position_size=1.0)
    score = np.array([0.5, 0.25, 0.125, -0.5, -0.25, 0.5, 0.5, 0.25, 0.0])
    conf = np.array([0.5, 1.0, 1.0, 0.5, 1.0, 0.25, 1.0, 1.0, 1.0])
    feats = {f"{d}_{k}": np.full(score.size, np.nan) for d in DIMENSIONS for k in ("score", "confidence")}
    feats["why_score"], feats["why_confidence"] = score, conf
    # bar 0: entry (0.5 >= 0.5, sure 0.5 >= 0.5); 1: 0.25 is not below the exit, holds; 2: exits; 3: short;
    # 4: holds; 5: not sure (0.25 < 0.5), holds nothing new, |0.5| is no exit: holds short; 6: long; 7: holds;
    # 8: exits
    want = np.array([1.0, 1.0, 0.0, -1.0, -1.0, -1.0, 1.0, 1.0, 0.0])
    np.testing.assert_array_equal(kernel.genome_targets(feats, [g])[0], want)
    np.testing.assert_array_equal(targets(feats, [g])[:, 0], want)
    with pytest.raises(ValueError, match="rules must hold"):
        kernel.genome_targets(feats, [g], rules=kernel.genome_rules([g, g])[:1] + kernel.genome_rules([g])[1:])


def test_a_capped_short_whose_equity_lands_exactly_on_zero_is_bankrupt():
    """Under a volume cap too, equity of exactly 0 at a close is bankruptcy: the position is liquidated there
    and nothing fills after."""
    open_ = np.array([10.0, 10.0, 10.0, 20.0, 20.0, 10.0])
    close = np.array([10.0, 10.0, 25.0, 20.0, 20.0, 10.0])  # one unit short from cash 15 at 10: worth 0 at 25
    tg = np.array([-1.0, -1.0, -1.0, -1.0, 1.0, 1.0])
    for simulate in (engine.simulate, kernel.simulate):
        r = simulate(open_, close, tg, cash=15.0, volume=np.full(6, 100.0), volume_share=1.0)
        assert r.equity[2, 0] == 0.0 and r.fills[-1, 4] == engine.BANKRUPT and r.fills[-1, 0] == 2
        assert (r.equity[2:, 0] == 0).all() and r.fills.shape[0] == 2


def test_price_rows_with_one_level_only_defaults_and_zero_volume():
    """simulate_rows with a stop-loss and no take-profit, no slippage given, a bar without volume: the engine's
    result on each strategy's own copy of the prices; a bad volume names its bar and row."""
    rng = np.random.default_rng(13)
    n = 200
    o, h, lo, c = (np.stack(x) for x in zip(*[market(rng, n, 1, per_column=False) for _ in range(2)], strict=True))
    row_of = np.array([1, 0, 1])
    tg = targets(rng, n, 3)
    v = rng.uniform(0, 50, o.shape)
    v[:, 10:20] = 0.0
    want = engine.simulate(o[row_of].T, c[row_of].T, tg, high=h[row_of].T, low=lo[row_of].T, stop_loss=0.02,
                           volume=v[row_of].T)
    got = kernel.simulate_rows(o, h, lo, c, row_of, tg, stop_loss=0.02, volume=v)
    same(want, got)
    assert (got.fills[:, 4] == engine.STOP_LOSS).any()
    v[1, 7] = -1.0
    with pytest.raises(ValueError, match=r"volume must be non-negative and finite: bar 7 \(column 1\)"):
        kernel.simulate_rows(o, h, lo, c, row_of, tg, volume=v)

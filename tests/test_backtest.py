"""The backtest engine: cross-checked against backtesting.py to the cent, and small cases by hand.

backtesting.py is a test-only reference (AGPL, from the dev extra): only the cross-checks, which take
the ``bt`` fixture, skip without it. The other tests run on the shipped GOOG bars.
"""

import numpy as np
import polars as pl
import pytest

from emp_core.backtest import metrics
from emp_core.backtest.engine import BANKRUPT, ORDER, STOP_LOSS, TAKE_PROFIT, simulate
from emp_core.backtest.strategies import sma, sma_cross
from tests.support import SHIPPED

pytestmark = pytest.mark.usefixtures("both_engines")  # every test on the NumPy engine and the kernel

PAIRS = [(f, s) for f in range(5, 55, 5) for s in range(60, 160, 10)]
CHECKED = PAIRS[::9]  # 12 of the 100 pairs here; the benchmark compares all 100
BARS = pl.read_parquet(SHIPPED / "bars_daily.parquet").filter(pl.col("symbol") == "GOOG").sort("ts").drop("symbol")


@pytest.fixture(scope="module")
def bt():
    """The reference module: backtesting.py's GOOG, ``reference``, ``Backtest`` and ``Strategy``."""
    pytest.importorskip("backtesting")
    from tests import backtesting_reference

    return backtesting_reference


def follow(bt, open_, high, low, close, targets, *, cash=10_000.0, commission=0.0, stop_loss=None,
           take_profit=None):
    """backtesting.py's statistics for a strategy that trades as our engine reads ``targets``: when the
    target changes at the close of bar t, it closes the position and opens the new direction, which
    fills at the open of t + 1, with stops set from that open (known in advance on test data).
    backtesting.py calls ``next`` from bar 1 on, so ``targets[0]`` must be 0."""
    import warnings

    import pandas as pd

    assert targets[0] == 0
    data = pd.DataFrame({"Open": open_, "High": high, "Low": low, "Close": close, "Volume": 1e6},
                        index=pd.date_range("2020-01-01", periods=len(close), freq="D"))

    class Follow(bt.Strategy):
        def init(self):
            pass

        def next(self):
            i = len(self.data) - 1
            if targets[i] == targets[i - 1] or i + 1 == len(close):
                return
            self.position.close()
            d = targets[i]
            if d:
                entry = open_[i + 1]
                sl = entry * (1 - d * stop_loss) if stop_loss else None
                tp = entry * (1 + d * take_profit) if take_profit else None
                (self.buy if d > 0 else self.sell)(sl=sl, tp=tp)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bt.Backtest(data, Follow, cash=cash, commission=commission).run()


@pytest.mark.parametrize("long_only", [False, True])
def test_sma_cross_matches_backtesting_py(bt, long_only):
    goog = bt.GOOG
    targets = sma_cross(goog.Close.to_numpy(), PAIRS, long_only=long_only)
    ours = simulate(goog.Open.to_numpy(), goog.Close.to_numpy(), targets, cash=10_000, commission=0.002)
    for fast, slow in CHECKED:
        k = PAIRS.index((fast, slow))
        stats = bt.reference(fast, slow, long_only)
        assert ours.final_equity[k] == pytest.approx(stats["Equity Final [$]"], abs=1e-6), (fast, slow)
        assert ours.trades[k] == stats["# Trades"], (fast, slow)
    assert len({round(x, 2) for x in ours.final_equity}) > 90  # the 100 strategies really differ


def test_equity_curve_and_metrics_match_backtesting_py(bt):
    goog = bt.GOOG
    stats = bt.reference(10, 60, long_only=False)
    ours = simulate(goog.Open.to_numpy(), goog.Close.to_numpy(), sma_cross(goog.Close.to_numpy(), [(10, 60)]),
                    cash=10_000, commission=0.002)
    np.testing.assert_allclose(ours.equity[:, 0], stats._equity_curve["Equity"].to_numpy(), rtol=0, atol=1e-6)
    days = (goog.index[-1] - goog.index[0]).days
    m = metrics(ours, years=days / 365.25, bars_per_year=252)[0]
    assert m["max_drawdown"] * 100 == pytest.approx(stats["Max. Drawdown [%]"], abs=1e-9)
    # Exposure differs by definition: backtesting.py counts closed trades from entry to exit bar
    # inclusive; ours is the share of bars that close with a position (open trades included).
    assert m["exposure"] == pytest.approx((ours.units[:, 0] != 0).mean())
    assert m["win_rate"] * 100 == pytest.approx(stats["Win Rate [%]"], abs=1e-9)
    assert m["total_return"] * 100 == pytest.approx(stats["Return [%]"], abs=1e-9)


def test_a_population_equals_its_columns_run_alone():
    close, open_ = BARS["close"].to_numpy(), BARS["open"].to_numpy()
    targets = sma_cross(close, PAIRS[:20])
    together = simulate(open_, close, targets, cash=10_000, commission=0.001)
    for k in (0, 7, 19):
        alone = simulate(open_, close, targets[:, k], cash=10_000, commission=0.001)
        np.testing.assert_array_equal(together.equity[:, k], alone.equity[:, 0])


OPEN = np.array([10.0, 11.0, 12.0, 10.0, 9.0, 10.0])
CLOSE = np.array([10.5, 11.5, 11.0, 9.5, 9.5, 10.5])


def test_fill_at_next_open_sizing_commission_and_reversal_by_hand():
    # long at the close of bar 0, short at the close of bar 2, flat at the close of bar 4
    targets = np.array([1, 1, -1, -1, 0, 0], dtype=float)
    r = simulate(OPEN, CLOSE, targets, cash=1000.0, commission=0.01)
    # bar 1 open 11: n = int(1000 // 11.11) = 90 units; entry commission 9.9
    n1 = int(1000 * (1 - 2.220446049250313e-16) // (11 + 11 * 0.01))
    assert n1 == 90
    cash1 = 1000 - 90 * 11 * 0.01
    assert r.equity[1, 0] == pytest.approx(cash1 + 90 * (11.5 - 11))
    # bar 3 open 10: close the long (P&L 90 * (10 - 11), commission 9.0), then short from what is left
    cash3 = cash1 + 90 * (10 - 11) - 90 * 10 * 0.01
    n3 = int(cash3 * (1 - 2.220446049250313e-16) // (10 + 10 * 0.01))
    cash3 -= n3 * 10 * 0.01
    assert r.units[3, 0] == -n3
    assert r.equity[3, 0] == pytest.approx(cash3 - n3 * (9.5 - 10))
    # bar 5 open 10: cover the short
    cash5 = cash3 - n3 * (10 - 10) - n3 * 10 * 0.01
    assert r.units[5, 0] == 0 and r.equity[5, 0] == pytest.approx(cash5)
    assert r.trades[0] == 2 and r.wins[0] == 0


def test_an_order_at_the_last_bar_never_fills_and_fractional_sizing():
    targets = np.array([0, 0, 0, 0, 0, 1], dtype=float)
    r = simulate(OPEN, CLOSE, targets, cash=1000.0)
    assert (r.units == 0).all() and (r.equity == 1000.0).all() and r.fills.shape == (0, 5)
    frac = simulate(OPEN, CLOSE, np.array([1, 1, 1, 1, 1, 1], dtype=float), cash=1000.0, commission=0.01,
                    fractional=True)
    units = frac.units[1, 0]
    assert units == pytest.approx(1000 / (11 * 1.01))
    assert frac.equity[-1, 0] == pytest.approx(1000 - units * 11 * 0.01 + units * (10.5 - 11))


def test_too_little_cash_for_one_unit_stays_flat():
    r = simulate(OPEN, CLOSE, np.ones(6), cash=5.0)
    assert (r.units == 0).all() and r.trades[0] == 0


def test_sma_is_the_mean_of_the_last_n_closes():
    close = np.array([1.0, 2.0, 4.0, 8.0])
    np.testing.assert_allclose(sma(close, 3), [np.nan, np.nan, 7 / 3, 14 / 3])


def test_emp_backtest_prints_the_reference_result_as_json(bt, tmp_path, capsys):
    import json

    from emp_core.cli import main

    data = tmp_path / "GOOG.csv"
    bt.GOOG.reset_index(names="Date").to_csv(data, index=False)
    argv = ["backtest", "--data", str(data), "--strategy", "sma-cross", "--fast", "10", "--slow", "60",
            "--cash", "10000", "--commission", "0.002", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    stats = bt.reference(10, 60, long_only=False)
    assert report["final_equity"] == pytest.approx(stats["Equity Final [$]"], abs=1e-6)
    assert report["trades"] == stats["# Trades"]
    assert {"sharpe", "max_drawdown", "cagr", "sortino", "turnover", "win_rate", "exposure"} <= set(report)
    assert main([*argv[:-1], "--long-only"]) == 0
    assert "final_equity" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "message"), [
    (["--fast", "60", "--slow", "10"], "need 0 < --fast < --slow"),
    (["--commission", "0.5"], "--commission is a rate per fill"),
    (["--cash", "-1"], "--cash must be a positive number"),
])
def test_emp_backtest_usage_errors(tmp_path, capsys, argv, message):
    from emp_core.cli import main

    data = tmp_path / "GOOG.parquet"
    BARS.head(100).write_parquet(data)
    assert main(["backtest", "--data", str(data), *argv]) == 2
    assert message in capsys.readouterr().err


HIGH = np.array([10.6, 11.8, 12.3, 10.2, 9.8, 10.8])
LOW = np.array([9.9, 10.9, 10.8, 9.2, 8.9, 9.9])
LONG = np.ones(6)


def stopped(targets, **kw):
    return simulate(OPEN, CLOSE, targets, cash=1000.0, high=HIGH, low=LOW, **kw)


def test_stop_loss_gapped_through_fills_at_the_open_and_stays_flat():
    r = stopped(LONG, stop_loss=0.05)  # long 90 at 11 from bar 1; stop 10.45; bar 3 opens at 10
    assert r.units[:, 0].tolist() == [0, 90, 90, 0, 0, 0]
    assert r.equity[3:, 0].tolist() == pytest.approx([1000 + 90 * (10 - 11)] * 3)
    bar, _, units, price, kind = r.fills[-1]
    assert (bar, units, price, kind) == (3, -90, 10.0, 1)
    assert r.trades[0] == 1


def test_take_profit_inside_the_entry_bar_fills_at_its_level():
    r = stopped(LONG, take_profit=0.07)  # level 11.77, bar 1's high 11.8
    assert r.units[1, 0] == 0
    assert r.equity[1, 0] == pytest.approx(1000 + 90 * (11.77 - 11))
    assert r.fills[-1][4] == 2


def test_take_profit_gapped_through_fills_at_the_better_open():
    r = stopped(LONG, take_profit=0.08)  # level 11.88; bar 2 opens at 12
    assert r.fills[-1][[0, 3]].tolist() == [2, 12.0]
    assert r.equity[-1, 0] == pytest.approx(1000 + 90 * (12 - 11))


def test_both_levels_in_one_bar_count_as_the_stop():
    r = stopped(LONG, stop_loss=0.005, take_profit=0.07)  # bar 1: low 10.9 <= 10.945 and high 11.8 >= 11.77
    assert r.fills[-1][[3, 4]].tolist() == [pytest.approx(10.945), 1]
    assert r.equity[-1, 0] == pytest.approx(1000 + 90 * (10.945 - 11))


def test_short_stop_loss_and_a_population_with_mixed_stops():
    r = stopped(np.column_stack([-LONG, -LONG]), stop_loss=np.array([0.05, np.nan]))
    assert r.equity[-1, 0] == pytest.approx(1000 - 90 * (11.55 - 11))  # stopped on bar 1's high 11.8
    assert r.units[-1, 1] == -90  # no stop: still short
    assert r.equity[-1, 1] == pytest.approx(1000 - 90 * (10.5 - 11))


def test_slippage_moves_every_fill_against_the_trade():
    r = simulate(OPEN, CLOSE, np.array([1, 1, 0, 0, 0, 0], dtype=float), cash=1000.0, slippage_bps=100)
    # buy at 11 * 1.01 = 11.11: 90 units; sell at 10 * 0.99 = 9.9
    assert r.fills[:, 3].tolist() == pytest.approx([11.11, 9.9])
    assert r.equity[-1, 0] == pytest.approx(1000 + 90 * (9.9 - 11.11))


def test_stops_need_high_and_low_and_positive_levels():
    with pytest.raises(ValueError, match="high and low"):
        simulate(OPEN, CLOSE, LONG, stop_loss=0.05)
    with pytest.raises(ValueError, match="positive fraction"):
        stopped(LONG, take_profit=-0.1)


def test_fraction_sizes_from_a_share_of_equity():
    r = simulate(OPEN, CLOSE, np.column_stack([LONG, LONG]), cash=1000.0, fraction=np.array([0.5, 1.0]))
    assert r.units[1].tolist() == [45, 90]  # int(500 // 11), int(1000 // 11)
    with pytest.raises(ValueError, match="in \\(0, 1\\]"):
        simulate(OPEN, CLOSE, LONG, fraction=1.5)


def test_emp_backtest_runs_a_genome_on_the_sensory_signals(tmp_path, capsys):
    import json

    from emp_core.cli import main
    from emp_core.evolution.fitness import FEATURE_COLUMNS
    from emp_core.evolution.genome import CATALOGUE, targets
    from emp_core.sensory import compute_features

    data = tmp_path / "GOOG.parquet"
    BARS.write_parquet(data)
    assert main(["backtest", "--data", str(data), "--strategy", "genome", "--genome", "trend", "--no-macro",
                 "--commission", "0.002", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # the same genome, wired by hand: features -> targets -> engine with its stop and size
    bars = BARS.with_columns(symbol=pl.lit("DATA"))
    feats = compute_features(bars, None)
    f = {c: feats.get_column(c).fill_null(np.nan).to_numpy() for c in FEATURE_COLUMNS}
    g = CATALOGUE["trend"]
    px = {c: BARS[c].to_numpy() for c in ("open", "high", "low", "close")}
    r = simulate(px["open"], px["close"], targets(f, [g]), cash=10_000, commission=0.002, high=px["high"],
                 low=px["low"], stop_loss=g.stop_loss, fraction=g.position_size)
    assert report["genome"] == "trend" and report["final_equity"] == pytest.approx(r.final_equity[0], abs=1e-6)
    assert report["trades"] == r.trades[0] > 0
    bad = tmp_path / "g.json"
    bad.write_text('{"entry": 0.3}')
    assert main(["backtest", "--data", str(data), "--strategy", "genome", "--genome", str(bad)]) == 2
    assert "not a genome JSON object" in capsys.readouterr().err


def capped(targets, caps, open_=OPEN, close=CLOSE, **kw):
    """Volume share 0.1 of volumes 10x the wanted capacities."""
    return simulate(open_, close, np.asarray(targets, dtype=float), cash=1000.0, volume=np.array(caps) * 10.0,
                    volume_share=0.1, **kw)


def test_a_volume_cap_fills_an_entry_over_several_opens_at_their_average_price():
    r = capped(LONG, [100, 20, 30, 100, 100, 100])  # 90 wanted: 20 @ 11, 30 @ 12, 40 @ 10
    assert r.units[:, 0].tolist() == [0, 20, 50, 90, 90, 90]
    assert r.equity[1:4, 0].tolist() == pytest.approx([1000 + 20 * 0.5, 1000 + 50 * (11 - 11.6),
                                                       1000 + 90 * (9.5 - (50 * 11.6 + 40 * 10) / 90)])
    assert r.fills[:, 2].tolist() == [20, 30, 40] and r.fills[:, 3].tolist() == [11, 12, 10]


def test_the_next_order_cancels_what_was_not_filled():
    r = capped([1, 1, 0, 0, 0, 0], [100, 20, 30, 100, 100, 100])
    assert r.units[:, 0].tolist() == [0, 20, 50, 0, 0, 0]
    assert r.equity[-1, 0] == pytest.approx(1000 + 20 * (10 - 11) + 30 * (10 - 12))
    assert r.trades[0] == 1


def test_a_capped_exit_and_a_capped_reversal():
    out = capped([1, 1, 0, 0, 0, 0], [100, 100, 100, 30, 20, 100])  # sell 90: 30 @ 10, 20 @ 9, 40 @ 10
    assert out.units[:, 0].tolist() == [0, 90, 90, 60, 40, 0]
    assert out.equity[-1, 0] == pytest.approx(1000 + 30 * (10 - 11) + 20 * (9 - 11) + 40 * (10 - 11))
    assert out.trades[0] == 1
    rev = capped([1, 1, -1, -1, -1, -1], [100, 100, 100, 50, 100, 100])
    # close 50 @ 10, then 40 @ 9; the short is sized from the cash then (870 // 9 = 96): 60 @ 9, 36 @ 10
    assert rev.units[:, 0].tolist() == [0, 90, 90, 40, -60, -96]
    assert rev.equity[-1, 0] == pytest.approx(870 - 96 * (10.5 - (60 * 9 + 36 * 10) / 96))


def test_unlimited_volume_gives_the_uncapped_result():
    open_, close = BARS["open"].to_numpy(), BARS["close"].to_numpy()
    targets = sma_cross(close, PAIRS[:10])
    free = simulate(open_, close, targets, cash=10_000, commission=0.002)
    huge = simulate(open_, close, targets, cash=10_000, commission=0.002, volume=np.full(len(close), 1e12),
                    volume_share=0.1)
    np.testing.assert_array_equal(free.equity, huge.equity)


# A short from bar 1's open at 10 on a path that more than doubles: whole units, 99 (1000 // 10 less a hair),
# are ruined when 1000 - 99 (close - 10) <= 0, at a close of 20.1010...: not yet at bar 3 (equity 0.1), at bar 4
# (21: -89). Fractional units, 99.9001 after commission, are ruined at bar 3 already.
BUST_OPEN = np.array([10.0, 10.0, 14.0, 18.0, 22.0, 25.0, 30.0])
BUST_CLOSE = np.array([10.0, 12.0, 16.0, 20.1, 21.0, 26.0, 28.0])
SHORT_THEN_LONG = np.array([-1, -1, -1, -1, 1, 1, 1], dtype=float)  # the long order (bar 5) comes after the ruin


def by_column(r, p):
    """Column p of a result, as the arrays a run of that strategy alone gives."""
    fills = r.fills[r.fills[:, 1] == p].copy()
    fills[:, 1] = 0
    return [r.equity[:, p], r.units[:, p], r.cash[:, p], r.trades[p], r.wins[p], r.traded_value[p], fills]


def test_a_short_that_more_than_doubles_goes_bankrupt_at_the_close_computed_by_hand():
    r = simulate(BUST_OPEN, BUST_CLOSE, SHORT_THEN_LONG, cash=1000.0)
    assert r.equity[:4, 0].tolist() == pytest.approx([1000, 1000 - 99 * 2, 1000 - 99 * 6, 1000 - 99 * 10.1])
    assert r.equity[4:, 0].tolist() == [0, 0, 0]
    assert r.units[:, 0].tolist() == [0, -99, -99, -99, 0, 0, 0]
    assert r.cash[:, 0].tolist() == [1000, 1000, 1000, 1000, 0, 0, 0]
    # the liquidation closes the short at bar 4's close; the long ordered for bar 5 never fills
    assert r.fills.tolist() == [[1, 0, -99, 10.0, ORDER], [4, 0, 99, 21.0, BANKRUPT]]
    assert (r.trades[0], r.wins[0]) == (1, 0)
    assert r.traded_value[0] == pytest.approx(99 * 10 + 99 * 21)


def test_fractional_units_go_bankrupt_at_their_own_bar():
    r = simulate(BUST_OPEN, BUST_CLOSE, SHORT_THEN_LONG, cash=1000.0, commission=0.001, fractional=True)
    units = 1000 * (1 - 2.220446049250313e-16) / (10 * 1.001)
    assert r.equity[2, 0] == pytest.approx(1000 - units * 10 * 0.001 - units * 6)
    assert r.equity[3:, 0].tolist() == [0, 0, 0, 0]  # 999.001 - 99.9001 * 10.1 < 0 at bar 3
    assert r.fills[:, [0, 3, 4]].tolist() == [[1, 10.0, ORDER], [3, 20.1, BANKRUPT]]
    assert r.fills[1, 2] == pytest.approx(units)
    assert r.trades[0] == 1 and r.traded_value[0] == pytest.approx(units * (10 + 20.1))


def test_a_bankrupt_column_in_a_population_equals_its_run_alone():
    columns = np.column_stack([SHORT_THEN_LONG, np.ones(7), np.zeros(7), [1, -1, -1, -1, -1, 0, 0],
                               -np.ones(7)])
    together = simulate(BUST_OPEN, BUST_CLOSE, columns, cash=1000.0, commission=0.002)
    assert (together.equity[:, [0, 4]] == 0).any(axis=0).all()  # two bankrupt columns among five
    for p in range(columns.shape[1]):
        alone = simulate(BUST_OPEN, BUST_CLOSE, columns[:, p], cash=1000.0, commission=0.002)
        for x, y in zip(by_column(together, p), by_column(alone, 0), strict=True):
            np.testing.assert_array_equal(x, y)


def test_a_capped_close_in_progress_is_finished_by_the_liquidation():
    # flat ordered for bar 4, where the cap lets 10 of the 99 be covered at 22: cash 1000 - 10 * 12 = 880,
    # equity 880 - 89 * (21 - 10) = -99 at bar 4's close, so the 89 left are bought back at 21
    r = capped([-1, -1, -1, 0, 0, 0, 0], [100, 100, 100, 100, 10, 10, 10], open_=BUST_OPEN, close=BUST_CLOSE)
    assert r.fills.tolist() == [[1, 0, -99, 10, ORDER], [4, 0, 10, 22, ORDER], [4, 0, 89, 21, BANKRUPT]]
    assert r.equity[4:, 0].tolist() == [0, 0, 0] and r.units[4:, 0].tolist() == [0, 0, 0]
    assert r.trades[0] == 1 and r.traded_value[0] == pytest.approx(990 + 220 + 89 * 21)
    # with room for everything, the capped path books the uncapped result
    wide = capped(SHORT_THEN_LONG, [1000] * 7, open_=BUST_OPEN, close=BUST_CLOSE)
    free = simulate(BUST_OPEN, BUST_CLOSE, SHORT_THEN_LONG, cash=1000.0)
    for x, y in zip(by_column(wide, 0), by_column(free, 0), strict=True):
        np.testing.assert_array_equal(x, y)


def random_market(seed: int, n_bars: int = 80):
    """OHLC of a volatile walk with overnight gaps, three of them jumps of x2.5 (what ruins a short), and
    volumes."""
    rng = np.random.default_rng(seed)
    close = 50 * np.exp(np.cumsum(rng.normal(0.0, 0.08, n_bars)))
    jump = np.ones(n_bars - 1)
    jump[rng.choice(n_bars - 1, 3, replace=False)] = 2.5
    open_ = np.empty(n_bars)
    open_[0] = close[0]
    open_[1:] = close[:-1] * np.exp(rng.normal(0.0, 0.05, n_bars - 1)) * jump
    close[1:] *= np.cumprod(jump)
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 0.03, n_bars)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 0.03, n_bars)))
    return rng, open_, high, low, close, rng.uniform(50, 2000, n_bars)


@pytest.mark.parametrize("seed", range(12))
def test_equity_never_goes_below_zero_and_a_ruined_strategy_trades_no_more(seed):
    rng, open_, high, low, close, volume = random_market(seed)
    n_bars, n = close.size, 16
    # runs of a held direction, shorts included; leverage-free sizing, so shorts are what goes bust
    targets = np.repeat(rng.choice([-1.0, 0.0, 1.0], size=(n_bars // 8, n), p=[0.5, 0.2, 0.3]), 8, axis=0)
    kw = {"cash": 1000.0, "commission": 0.001, "high": high, "low": low, "fractional": seed % 2 == 1,
          "stop_loss": np.where(rng.random(n) < 0.3, 0.2, np.nan),
          "take_profit": np.where(rng.random(n) < 0.3, 0.5, np.nan),
          "fraction": rng.choice([0.5, 1.0], n)}
    if seed % 3 == 0:
        kw |= {"volume": volume, "volume_share": 0.05}
    r = simulate(open_, close, targets, **kw)
    assert (r.equity >= 0).all()
    ruined = (r.equity == 0).any(axis=0)
    assert 2 <= ruined.sum() < n  # the case really tests the rule
    bar, col = r.fills[:, 0].astype(int), r.fills[:, 1].astype(int)
    for p in range(n):
        mine = col == p
        np.testing.assert_allclose(r.traded_value[p], np.sum(np.abs(r.fills[mine, 2]) * r.fills[mine, 3]))
        held = np.cumsum(r.fills[mine, 2])
        flat = np.isclose(held, 0, atol=1e-9 * max(np.abs(held).max(initial=0), 1))
        assert r.trades[p] == flat.sum()  # every return to flat closes one trade, the liquidation included
        if not ruined[p]:
            assert (r.fills[mine, 4] != BANKRUPT).all()
            continue
        b = int(np.argmax(r.equity[:, p] == 0))
        assert (r.equity[b:, p] == 0).all() and (r.units[b:, p] == 0).all() and (r.cash[b:, p] == 0).all()
        assert bar[mine].max(initial=0) <= b
        liquidation = mine & (r.fills[:, 4] == BANKRUPT)
        assert (bar[liquidation] == b).all() and (r.fills[liquidation, 3] == close[b]).all()
    for p in np.nonzero(ruined)[0][:2]:
        alone = simulate(open_, close, targets[:, p], **{k: v[p] if isinstance(v, np.ndarray) and v.ndim == 1
                                                         and v.size == n else v for k, v in kw.items()})
        for x, y in zip(by_column(r, p), by_column(alone, 0), strict=True):
            np.testing.assert_array_equal(x, y)


def test_bankruptcy_matches_backtesting_py(bt):
    rng = np.random.default_rng(5)
    close = 10 * np.exp(np.cumsum(rng.normal(0.03, 0.02, 60)))
    open_ = np.append(10.0, close[:-1] * np.exp(rng.normal(0, 0.01, 59)))
    high, low = np.maximum(open_, close) * 1.01, np.minimum(open_, close) * 0.99
    # a few trades, then a short held into the rise; and a short from the start
    several = np.array([0, 1, 1, 1, -1, -1, 0, 0, 1, 1, -1] + [-1] * 45 + [1] * 4, dtype=float)
    held = np.array([0] + [-1] * 59, dtype=float)
    ours = simulate(open_, close, np.column_stack([several, held]), cash=10_000, commission=0.002)
    for p, targets in enumerate((several, held)):
        stats = follow(bt, open_, high, low, close, targets, commission=0.002)
        curve = stats._equity_curve["Equity"].to_numpy()
        assert stats["Equity Final [$]"] == 0 == ours.final_equity[p]
        assert np.argmax(curve == 0) == np.argmax(ours.equity[:, p] == 0) > 10
        np.testing.assert_allclose(ours.equity[:, p], curve, rtol=0, atol=1e-6)
        assert ours.trades[p] == stats["# Trades"]


# A long from bar 2's open at 100 (stop 5% at 95, take-profit 10% at 110), or the mirrored short (stop at 105,
# take-profit at 90); bar 3 is the case. Bars 0 and 1 are flat (backtesting.py trades from bar 1's close).
GAP_OPEN = [100.0, 100.0, 100.0]
GAP_HIGH = [101.0, 101.0, 104.0]
GAP_LOW = [99.0, 99.0, 97.0]
GAP_CLOSE = [100.0, 100.0, 101.0]


def gap_case(direction, bar3, **kw):
    o, h, lo, c = (np.array([*x, y, y]) for x, y in zip((GAP_OPEN, GAP_HIGH, GAP_LOW, GAP_CLOSE), bar3,
                                                          strict=True))
    if direction < 0:  # the mirror image around 100 of the long case
        o, h, lo, c = 200 - o, 200 - lo, 200 - h, 200 - c
    targets = np.array([0, direction, direction, direction, direction], dtype=float)
    return o, h, lo, c, targets


GAPS = {  # bar 3's (open, high, low, close) for the long; the expected exit price and kind
    "take-profit gapped, stop inside the bar": ((112, 115, 94, 100), 112, TAKE_PROFIT),
    "both levels inside the bar": ((100, 111, 94, 100), 95, STOP_LOSS),
    "stop gapped, take-profit inside the bar": ((93, 115, 90, 100), 93, STOP_LOSS),
    "only the take-profit, inside": ((100, 112, 99, 100), 110, TAKE_PROFIT),
    "only the take-profit, gapped": ((113, 115, 112, 114), 113, TAKE_PROFIT),
}


@pytest.mark.parametrize("direction", [1, -1])
@pytest.mark.parametrize("case", GAPS)
def test_a_level_crossed_at_the_open_fills_there_before_anything_inside_the_bar(case, direction):
    bar3, price, kind = GAPS[case]
    o, h, lo, c, targets = gap_case(direction, bar3)
    r = simulate(o, c, targets, cash=10_000.0, high=h, low=lo, stop_loss=0.05, take_profit=0.1)
    expected = price if direction > 0 else 200 - price
    assert r.fills.tolist() == [[2, 0, 99 * direction, 100, ORDER],
                                [3, 0, -99 * direction, pytest.approx(expected), kind]]
    assert r.final_equity[0] == pytest.approx(10_000 + 99 * (expected - 100) * direction)


@pytest.mark.parametrize("direction", [1, -1])
@pytest.mark.parametrize("case", [c for c in GAPS if not c.startswith("take-profit gapped")])
def test_stops_match_backtesting_py_where_both_rules_agree(bt, case, direction):
    o, h, lo, c, targets = gap_case(direction, GAPS[case][0])
    ours = simulate(o, c, targets, cash=10_000.0, commission=0.002, high=h, low=lo, stop_loss=0.05,
                    take_profit=0.1)
    stats = follow(bt, o, h, lo, c, targets, commission=0.002, stop_loss=0.05, take_profit=0.1)
    assert ours.final_equity[0] == pytest.approx(stats["Equity Final [$]"], abs=1e-6)
    assert ours.fills[-1, 3] == pytest.approx(stats._trades["ExitPrice"].iloc[-1])
    assert ours.trades[0] == stats["# Trades"] == 1


def test_where_we_depart_from_backtesting_py_it_books_the_stop_of_a_gapped_take_profit(bt):
    # backtesting.py processes the stop order first and finds it inside the bar's range; the open,
    # the bar's first trade, was already past the take-profit (see the engine's docstring)
    o, h, lo, c, targets = gap_case(1, GAPS["take-profit gapped, stop inside the bar"][0])
    stats = follow(bt, o, h, lo, c, targets, stop_loss=0.05, take_profit=0.1)
    ours = simulate(o, c, targets, cash=10_000.0, high=h, low=lo, stop_loss=0.05, take_profit=0.1)
    assert stats._trades["ExitPrice"].iloc[-1] == pytest.approx(95)
    assert ours.fills[-1, 3] == 112


def test_metrics_of_a_bankrupt_strategy_are_finite_and_by_hand():
    r = simulate(BUST_OPEN, BUST_CLOSE, SHORT_THEN_LONG, cash=1000.0)
    m = metrics(r, years=6 / 252, bars_per_year=252)[0]
    # equity 1000, 802, 406, 0.1, then 0 from the bust at bar 4 on: bar returns end at -100%, then 0 (no 0/0)
    eq = [1000, 802, 406, 1000 - 99 * 10.1]
    rets = np.array([eq[1] / eq[0] - 1, eq[2] / eq[1] - 1, eq[3] / eq[2] - 1, -1.0, 0.0, 0.0])
    assert m["sharpe"] == pytest.approx(np.sqrt(252) * rets.mean() / rets.std(ddof=1))
    assert m["final_equity"] == 0 and m["total_return"] == -1 and m["max_drawdown"] == -1
    # turnover: 99 x 10 at bar 1 over the 1000 before it, 99 x 21 at bar 4 over the 0.1 left at bar 3's close
    assert m["turnover"] == pytest.approx((99 * 10 / 1000 + 99 * 21 / eq[3]) / (6 / 252))

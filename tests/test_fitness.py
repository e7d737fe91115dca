"""Fitness of genomes on a universe: the equal-weight portfolio's returns and turnover, by hand."""

import numpy as np
import pytest

from emp_core.evolution.fitness import FEATURE_COLUMNS, Universe, evaluate
from emp_core.evolution.genome import Genome

FULL = 1 - 2.220446049250313e-16  # the engine's share of equity per entry (FULL_EQUITY)
DAY0 = np.datetime64("2020-01-01")
WINDOW = (DAY0, DAY0 + np.timedelta64(365, "D"))


def genome(**kw) -> Genome:
    """Follows the ``what`` score alone: long at +1, short at -1, flat at 0 one bar after the last +-1."""
    base = {"w_why": 0.0, "w_how": 0.0, "w_what": 1.0, "w_when": 0.0, "w_anomaly": 0.0, "entry": 0.3, "exit": 0.1,
            "min_confidence": 0.0, "holding_period": 1, "stop_loss": 0.0, "take_profit": 0.0, "position_size": 1.0}
    return Genome(**base | kw)


def universe(**symbols) -> Universe:
    """Daily bars per symbol: (first day, opens, closes, what scores); high and low bound open and close."""
    ts, ohlc, feats = {}, {}, {}
    for name, (first, opens, closes, scores) in symbols.items():
        o, c = np.asarray(opens, dtype=float), np.asarray(closes, dtype=float)
        ts[name] = DAY0 + np.arange(first, first + c.size).astype("timedelta64[D]")
        ohlc[name] = {"open": o, "high": np.maximum(o, c), "low": np.minimum(o, c), "close": c}
        feats[name] = {k: np.full(c.size, np.nan) for k in FEATURE_COLUMNS}
        feats[name] |= {"what_score": np.asarray(scores, dtype=float), "what_confidence": np.ones(c.size)}
    return Universe(tuple(symbols), ts, ohlc, feats)


A = (0, [10, 10, 11, 10.5, 12, 12.5, 13, 12, 12.8, 13.5], [10, 11, 10.5, 12, 12.5, 13, 12, 12.8, 13.5, 14], [1] * 10)
B = (5, [20, 20, 21, 19, 22], [20, 21, 19, 22, 23], [1] * 5)  # lists on A's sixth day


def test_a_symbol_listing_later_does_not_count_before_its_first_return():
    alone = evaluate([genome()], universe(A=A), *WINDOW, commission=0.0, min_trades=0)
    both = evaluate([genome()], universe(A=A, B=B), *WINDOW, commission=0.0, min_trades=0)
    late = evaluate([genome()], universe(B=B), *WINDOW, commission=0.0, min_trades=0)
    assert both.returns[0, 0] == 0.0  # no symbol has a return at the first timestamp
    # B's first bar has no return: the portfolio there is A's return, not half of it
    assert both.returns[5, 0] == alone.returns[5, 0] != 0.0
    assert both.returns[6, 0] == pytest.approx((alone.returns[6, 0] + late.returns[1, 0]) / 2)
    assert both.returns[:5, 0].tolist() == alone.returns[:5, 0].tolist()


def test_a_genome_that_goes_bankrupt_has_finite_objectives_and_turnover_by_hand():
    # Short 0.1 (1 / 10 less a hair) from bar 1's open at 10: equity 1 - 0.1 (close - 10) is 0.1 at the
    # close of 19 and -0.1 at 21, where the short is liquidated; after that the sleeve earns 0.
    closes = [10, 12, 15, 18, 19, 21, 25, 30, 30, 30]
    opens = [10, 10, 12, 15, 18, 19, 21, 25, 30, 30]
    ev = evaluate([genome()], universe(S=(0, opens, closes, [-1] * 10)), *WINDOW, commission=0.0, min_trades=0)
    assert np.isfinite(ev.objectives).all() and np.isfinite(ev.returns).all()
    units = FULL / 10
    assert ev.returns[5, 0] == -1.0 and (ev.returns[6:, 0] == 0).all()
    assert ev.objectives[0, 1] == -1.0  # the drawdown: everything
    # turnover: the entry (its value over the equity at the previous close, 1), then the liquidation
    # at 21 over the equity at the close of 19
    years = 9 / 365.25
    by_hand = (units * 10 / 1.0 + units * 21 / (1 - units * (19 - 10))) / years
    assert ev.objectives[0, 2] == pytest.approx(by_hand)
    assert by_hand < 23 / years  # the old path divided by a mean equity clipped at 1e-12


def test_turnover_is_each_fill_over_the_equity_at_the_close_before_averaged_over_symbols_per_year():
    # A: long from bar 1's open (10) to bar 5's open (12.5), commission 0.001; C: never trades
    c = 0.001
    a = (0, A[1], A[2], [1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    ev = evaluate([genome()], universe(A=a, C=(0, A[1], A[2], [0] * 10)), *WINDOW, commission=c, min_trades=0)
    units = FULL / (10 * (1 + c))
    cash = 1 - units * 10 * c
    equity_before_exit = cash + units * (12.5 - 10)  # at the close of bar 4
    turnover_a = units * 10 / 1.0 + units * 12.5 / equity_before_exit
    assert ev.trades[0] == 1
    assert ev.objectives[0, 2] == pytest.approx(turnover_a / 2 / (9 / 365.25))


def test_chunks_are_consecutive_nearly_equal_and_cover_every_symbol_once():
    """MIN_CHUNKS chunks (one per symbol below that), more when a chunk would pass MAX_SYMBOLS; sizes differ by
    at most one; the symbols in order, each once."""
    from emp_core.evolution.fitness import MAX_SYMBOLS, MIN_CHUNKS, chunks

    for n in (0, 1, 5, MIN_CHUNKS, 10, 100, 511, 512, 513, 2_000):
        parts = chunks(list(range(n)), [])
        assert [x for part in parts for x in part] == list(range(n))
        assert len(parts) == min(n, max(MIN_CHUNKS, -(-n // MAX_SYMBOLS)))
        sizes = {len(p) for p in parts}
        assert not sizes or (max(sizes) - min(sizes) <= 1 and max(sizes) <= MAX_SYMBOLS and min(sizes) >= 1)


def test_a_window_without_a_start_or_an_end_is_refused():
    from emp_core.evolution.fitness import Universe, pieces

    u = Universe(("A",), {"A": np.array(["2020-01-01", "2020-01-02"], dtype="datetime64[ns]")},
                 {"A": {k: np.ones(2) for k in ("open", "high", "low", "close")}}, {"A": {}})
    with pytest.raises(ValueError, match="a start and an end"):
        pieces(u, np.datetime64("2020-01-01"), np.datetime64("NaT"))
    assert len(pieces(u, np.datetime64("2020-01-01"), np.datetime64("2020-01-03"))) == 1

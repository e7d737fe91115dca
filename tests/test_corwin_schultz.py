"""Corwin and Schultz (2012) as published, overnight adjustment included (issue 9, item 4).

The restatement below is written from the paper, in its own terms (days t and t+1, day t+1's
prices adjusted for the overnight return), with loops and the math module only, independently of
``emp_core.sensory.how`` and of ``tests/sensory_reference.py``.
"""

import math
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from emp_core.sensory import compute_features
from emp_core.sensory.features import prepare
from emp_core.sensory.how import LIQ_WINDOW, corwin_schultz
from tests.support import SHIPPED


def paper_spread(h0: float, l0: float, h1: float, l1: float, c0: float | None, *, adjust: bool = True) -> float:
    """Corwin and Schultz (2012), J. Finance 67(2), eqs. (14), (18), (19) and their overnight adjustment:
    day t = (h0, l0, close c0), day t+1 = (h1, l1). If day t+1's low is above day t's close, day t+1's
    high and low are lowered by the difference; if its high is below that close, they are raised by
    the difference. Negative two-day estimates are set to zero, as in the paper."""
    if adjust:
        if l1 > c0:
            gap = l1 - c0
            h1, l1 = h1 - gap, l1 - gap
        elif h1 < c0:
            gap = c0 - h1
            h1, l1 = h1 + gap, l1 + gap
    beta = math.log(h0 / l0) ** 2 + math.log(h1 / l1) ** 2
    gamma = math.log(max(h0, h1) / min(l0, l1)) ** 2
    denom = 3 - 2 * math.sqrt(2)
    alpha = (math.sqrt(2 * beta) - math.sqrt(beta)) / denom - math.sqrt(gamma / denom)
    spread = 2 * (math.exp(alpha) - 1) / (1 + math.exp(alpha))
    return max(spread, 0.0)


def paper_series(high: list, low: list, close: list, *, adjust: bool = True) -> list:
    """S at each bar t from days t-1 and t (None on the first bar): what is known at t's close."""
    return [None] + [paper_spread(high[t - 1], low[t - 1], high[t], low[t], close[t - 1], adjust=adjust)
                     for t in range(1, len(high))]


def fast_spread(bars: pl.DataFrame) -> pl.DataFrame:
    """The library's two-bar estimates, one Polars expression over all symbols."""
    return prepare(bars).select("symbol", "ts", corwin_schultz().alias("s"))


def random_ohlc(seed: int, n: int, symbols: tuple[str, ...]) -> pl.DataFrame:
    """Random walks whose opens gap both ways, often by more than a day's range, so that day t's low
    lies above the previous close or its high below it on many bars."""
    rng = np.random.default_rng(seed)
    rows = []
    start = datetime(2020, 1, 1)
    for symbol in symbols:
        close = 100.0
        for t in range(n):
            gap = rng.normal(0.0, 0.01) + rng.choice([-1, 0, 0, 1]) * rng.uniform(0.005, 0.03)
            open_ = close * math.exp(gap)
            new_close = open_ * math.exp(rng.normal(0.0, 0.01))
            half_spread = rng.uniform(0.0, 0.004)
            high = max(open_, new_close) * math.exp(abs(rng.normal(0.0, 0.005)) + half_spread)
            low = min(open_, new_close) * math.exp(-abs(rng.normal(0.0, 0.005)) - half_spread)
            rows.append((symbol, start + timedelta(days=t), open_, high, low, new_close, 1e6))
            close = new_close
    return pl.DataFrame(rows, schema=["symbol", "ts", "open", "high", "low", "close", "volume"], orient="row")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_vectorised_estimate_equals_the_paper_restated(seed):
    bars = random_ohlc(seed, 400, ("AAA", "BBB", "CCC"))
    fast = fast_spread(bars)
    for symbol in ("AAA", "BBB", "CCC"):
        s = bars.filter(pl.col("symbol") == symbol).sort("ts")
        high, low, close = (s.get_column(c).to_list() for c in ("high", "low", "close"))
        up = sum(low[t] > close[t - 1] for t in range(1, len(low)))
        down = sum(high[t] < close[t - 1] for t in range(1, len(low)))
        assert up > 40 and down > 40, (up, down)  # both branches of the adjustment are exercised
        expected = paper_series(high, low, close)
        got = fast.filter(pl.col("symbol") == symbol).get_column("s").to_list()
        assert got[0] is None and expected[0] is None
        worst = max(abs(g - e) for g, e in zip(got[1:], expected[1:], strict=True))
        assert worst <= 1e-12, worst
        positive = sum(e > 0 for e in expected[1:])
        assert 0 < positive < len(expected) - 1  # both sides of the zero floor are exercised
        # how_spread is the 21-bar mean of these estimates, point in time
        feats = compute_features(bars.filter(pl.col("symbol") == symbol), None).get_column("how_spread").to_list()
        for t in (LIQ_WINDOW, 200, len(expected) - 1):
            window = expected[t - LIQ_WINDOW + 1: t + 1]
            assert feats[t] == pytest.approx(sum(window) / LIQ_WINDOW, rel=1e-12, abs=1e-15)


def _two_days(h0, l0, c0, h1, l1) -> pl.DataFrame:
    return pl.DataFrame({
        "symbol": ["X", "X"], "ts": [datetime(2024, 1, 2), datetime(2024, 1, 3)],
        "open": [c0, (h1 + l1) / 2], "high": [h0, h1], "low": [l0, l1],
        "close": [c0, (h1 + l1) / 2], "volume": [1e6, 1e6],
    })


def test_gap_up_is_adjusted_as_in_the_paper():
    """Day t: H 102, L 98, C 98.5. Day t+1 opens above: H 104, L 100 (low 1.5 above the close).
    Adjusted day t+1: H 102.5, L 98.5. By hand:
    beta = ln(102/98)^2 + ln(102.5/98.5)^2 = 0.00160043 + 0.00158454 = 0.00318496,
    gamma = ln(102.5/98)^2 = 0.00201559,
    alpha = (1 + sqrt 2)(sqrt(beta) - sqrt(gamma)) = 2.41421 (0.0564355 - 0.0448953) = 0.0278604,
    S = 2 (e^alpha - 1) / (1 + e^alpha) = 0.0278586.
    Unadjusted, the gap reads as range: gamma = ln(104/98)^2 = 0.00353 > beta = 0.00314, alpha < 0, S = 0."""
    got = fast_spread(_two_days(102.0, 98.0, 98.5, 104.0, 100.0)).get_column("s").to_list()
    beta = math.log(102 / 98) ** 2 + math.log(102.5 / 98.5) ** 2
    gamma = math.log(102.5 / 98) ** 2
    assert beta == pytest.approx(0.00318496, abs=1e-8) and gamma == pytest.approx(0.00201559, abs=1e-8)
    alpha = (1 + math.sqrt(2)) * (math.sqrt(beta) - math.sqrt(gamma))  # (sqrt2 - 1) / (3 - 2 sqrt2) = 1 + sqrt2
    hand = 2 * (math.exp(alpha) - 1) / (1 + math.exp(alpha))
    assert hand == pytest.approx(0.0278586, abs=1e-7)
    assert got[0] is None
    assert got[1] == pytest.approx(hand, rel=1e-12)
    unadjusted = paper_spread(102.0, 98.0, 104.0, 100.0, 98.5, adjust=False)
    assert unadjusted == 0.0 and got[1] > 0.02


def test_gap_down_is_adjusted_and_no_gap_is_left_alone():
    # The mirror image: day t+1's high 1.5 below day t's close of 101.5 -> raised to 101.5.
    got = fast_spread(_two_days(102.0, 98.0, 101.5, 100.0, 96.0)).get_column("s")[1]
    hand = paper_spread(102.0, 98.0, 101.5, 97.5, 101.5, adjust=False)  # H 100 + 1.5, L 96 + 1.5
    assert hand > 0.02 and got == pytest.approx(hand, rel=1e-12)
    assert paper_spread(102.0, 98.0, 100.0, 96.0, 101.5, adjust=False) == 0.0
    # Day t+1 straddles the close: nothing to adjust.
    got = fast_spread(_two_days(102.0, 98.0, 100.0, 103.0, 99.0)).get_column("s")[1]
    assert got == pytest.approx(paper_spread(102.0, 98.0, 103.0, 99.0, 100.0, adjust=False), rel=1e-12)


def test_a_missing_previous_close_leaves_the_estimate_undefined():
    bars = _two_days(102.0, 98.0, 98.5, 104.0, 100.0).with_columns(
        pl.Series("close", [float("nan"), 102.0]))
    assert fast_spread(bars).get_column("s").to_list() == [None, None]


def test_aapl_mean_spread_and_zero_share_match_the_issue():
    """Issue 9 measured AAPL's daily two-day estimates at mean 0.00879 with the adjustment (0.00805
    without) and a share set to zero of 0.41 (0.46 without). Measured here on data/bars_daily.parquet
    (AAPL, 3,269 estimates): 0.008802 and 0.4136 with the adjustment, 0.008065 and 0.4586 without."""
    bars = pl.read_parquet(SHIPPED / "bars_daily.parquet").filter(pl.col("symbol") == "AAPL")
    s = fast_spread(bars).get_column("s").drop_nulls()
    assert s.len() == bars.height - 1
    assert s.mean() == pytest.approx(0.00879, abs=5e-5)
    assert (s == 0).mean() == pytest.approx(0.41, abs=0.01)
    # and the independent restatement agrees on the same bars, with and without the adjustment
    a = bars.sort("ts")
    high, low, close = (a.get_column(c).to_list() for c in ("high", "low", "close"))
    adjusted = paper_series(high, low, close)[1:]
    assert max(abs(x - y) for x, y in zip(s.to_list(), adjusted, strict=True)) <= 1e-12
    plain = paper_series(high, low, close, adjust=False)[1:]
    assert sum(plain) / len(plain) == pytest.approx(0.00805, abs=5e-5)
    assert sum(p == 0 for p in plain) / len(plain) == pytest.approx(0.46, abs=0.01)

"""HOW at its edges, against its definition (emp_core/sensory/how.py docstring), computed by hand here:
a flat bar's close location value is 0, and a locked quote (ask == bid) is a quoted spread of 0, not a
missing one."""

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from emp_core.sensory import compute_features


def _bars(high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray, **extra) -> pl.DataFrame:
    n = len(close)
    return pl.DataFrame({
        "symbol": ["FLAT"] * n, "ts": [datetime(2021, 1, 4) + timedelta(days=i) for i in range(n)],
        "open": close, "high": high, "low": low, "close": close, "volume": volume, **extra})


def test_a_run_of_flat_bars_has_zero_pressure_not_a_missing_one():
    """CLV = 0 when H = L, so 20 flat bars in a row (a halted or untraded name) give pressure exactly 0;
    reading a flat bar as missing would leave the window without enough values and the pressure null."""
    n = 40
    rng = np.random.default_rng(3)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    high, low = close * 1.01, close * 0.98  # CLV = (0.02 - 0.01) / 0.03 = 1/3 on these bars
    flat = np.arange(n) >= 15  # from bar 15 on: H = L = C
    high, low = np.where(flat, close, high), np.where(flat, close, low)
    volume = rng.uniform(1e5, 2e5, n)
    out = compute_features(_bars(high, low, close, volume), None)
    pressure = out.get_column("how_pressure").to_numpy()
    clv = np.where(flat, 0.0, ((close - low) - (high - close)) / np.where(flat, 1.0, high - low))
    for t in (25, 33, 39):  # the 20-bar windows ending there hold 9, 1 and 0 bars that are not flat
        window = slice(t - 19, t + 1)
        assert pressure[t] == pytest.approx((clv[window] * volume[window]).sum() / volume[window].sum(), abs=1e-12)
    assert pressure[39] == 0.0


def test_locked_quotes_count_as_a_zero_spread():
    """Quoted spread (ask - bid) / mid, mean over 21 bars; a locked quote (ask == bid) is a spread of 0 and
    counts in the mean (only a crossed quote, ask < bid, is left out)."""
    n = 60
    close = np.full(n, 50.0)
    half = np.where(np.arange(n) % 3 == 0, 0.0, 0.01)  # every third quote locked
    half[45] = -0.01  # one crossed quote: left out
    bid, ask = close - half, close + half
    bars = _bars(close * 1.001, close * 0.999, close, np.full(n, 1e5), bid=bid, ask=ask)
    spread = compute_features(bars, None).get_column("how_spread").to_numpy()
    quoted = (ask - bid) / ((ask + bid) / 2)
    for t in (30, 44):
        window = quoted[t - 20: t + 1]
        assert spread[t] == pytest.approx(window.mean(), rel=1e-12)
        assert spread[t] < 0.0004 * 20 / 21  # the locked quotes' zeros pull the mean down
    window = quoted[50 - 20: 50 + 1]
    assert spread[50] == pytest.approx(window[window >= 0].mean(), rel=1e-12)

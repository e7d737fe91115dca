"""Strategies expressed as target positions (bars x strategies), for the engine."""

from __future__ import annotations

import numpy as np


def sma(close: np.ndarray, n: int) -> np.ndarray:
    """Simple moving average of the last n closes; NaN for the first n-1 bars."""
    out = np.full(close.shape[0], np.nan)
    if n <= close.shape[0]:
        csum = np.cumsum(np.insert(close, 0, 0.0))
        out[n - 1:] = (csum[n:] - csum[:-n]) / n
    return out


def sma_cross(close: np.ndarray, pairs: list[tuple[int, int]], long_only: bool = False) -> np.ndarray:
    """Targets of SMA-crossover strategies, one column per (fast, slow) pair (bars x pairs).

    At the close of bar t the fast SMA (``sma``: the same running sum, the same floats) crossing strictly
    above the slow one (f[t-1] < s[t-1] and f[t] > s[t]) targets long, crossing strictly below targets
    short (or flat when ``long_only``); otherwise the previous target holds; flat before the first cross.
    Compiled (``emp_core.backtest.kernel.sma_cross``); its result is a view of a pairs x bars array, the
    layout the kernel reads without a copy.
    """
    from emp_core.backtest.kernel import sma_cross as compiled

    return compiled(close, pairs, long_only)

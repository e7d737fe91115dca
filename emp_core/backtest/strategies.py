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
    """Targets of SMA-crossover strategies, one column per (fast, slow) pair.

    At the close of bar t the fast SMA crossing strictly above the slow one
    (f[t-1] < s[t-1] and f[t] > s[t]) targets long, crossing strictly below targets
    short (or flat when ``long_only``); otherwise the previous target holds.
    """
    close = np.asarray(close, dtype=float)
    cache: dict[int, np.ndarray] = {}
    cols = []
    for fast, slow in pairs:
        f = cache.setdefault(fast, sma(close, fast))
        s = cache.setdefault(slow, sma(close, slow))
        with np.errstate(invalid="ignore"):
            up = np.zeros(close.shape[0], dtype=bool)
            down = np.zeros(close.shape[0], dtype=bool)
            up[1:] = (f[:-1] < s[:-1]) & (f[1:] > s[1:])
            down[1:] = (f[:-1] > s[:-1]) & (f[1:] < s[1:])
        events = np.where(up, 1.0, np.where(down, 0.0 if long_only else -1.0, np.nan))
        cols.append(_hold(events))
    return np.column_stack(cols) if cols else np.zeros((close.shape[0], 0))


def _hold(events: np.ndarray) -> np.ndarray:
    """Forward-fill a column of target changes (NaN = unchanged; flat before the first)."""
    idx = np.where(~np.isnan(events), np.arange(events.shape[0]), 0)
    np.maximum.accumulate(idx, out=idx)
    held = events[idx]
    return np.where(np.isnan(held), 0.0, held)

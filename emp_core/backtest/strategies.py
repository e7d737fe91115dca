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
    """Targets of SMA-crossover strategies, one column per (fast, slow) pair, computed for all pairs at once.

    At the close of bar t the fast SMA crossing strictly above the slow one
    (f[t-1] < s[t-1] and f[t] > s[t]) targets long, crossing strictly below targets
    short (or flat when ``long_only``); otherwise the previous target holds.
    """
    close = np.asarray(close, dtype=float)
    if not pairs:
        return np.zeros((close.shape[0], 0))
    windows = sorted({n for pair in pairs for n in pair})
    table = np.column_stack([sma(close, n) for n in windows])
    col = {n: i for i, n in enumerate(windows)}
    f = table[:, [col[a] for a, _ in pairs]]
    s = table[:, [col[b] for _, b in pairs]]
    up = np.zeros(f.shape, dtype=bool)
    down = np.zeros(f.shape, dtype=bool)
    with np.errstate(invalid="ignore"):
        up[1:] = (f[:-1] < s[:-1]) & (f[1:] > s[1:])
        down[1:] = (f[:-1] > s[:-1]) & (f[1:] < s[1:])
    events = np.where(up, 1.0, np.where(down, 0.0 if long_only else -1.0, np.nan))
    return _hold(events)


def _hold(events: np.ndarray) -> np.ndarray:
    """Forward-fill target changes down each column (NaN = unchanged; flat before the first)."""
    idx = np.where(~np.isnan(events), np.arange(events.shape[0])[:, None], 0)
    np.maximum.accumulate(idx, axis=0, out=idx)
    held = np.take_along_axis(events, idx, axis=0)
    return np.where(np.isnan(held), 0.0, held)

"""Small dependency-free SVG charts for asset metadata (the Dagster UI renders them inside markdown)."""

from __future__ import annotations

import base64

import numpy as np


def _scale(values: np.ndarray, lo: float, hi: float, size: float, pad: float) -> np.ndarray:
    span = hi - lo if hi > lo else 1.0
    return pad + (values - lo) / span * (size - 2 * pad)


def _wrap(body: str, width: int, height: int, title: str) -> str:
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           f'font-size="11"><rect width="100%" height="100%" fill="white"/>'
           f'<text x="8" y="14">{title}</text>{body}</svg>')
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


def line_chart(values, title: str, width: int = 560, height: int = 180) -> str:
    """A data URI of a line chart of ``values`` (NaN skipped), min and max labelled."""
    y = np.asarray(values, dtype=float)
    y = y[np.isfinite(y)]
    if y.size < 2:
        return _wrap('<text x="8" y="40">no data</text>', width, height, title)
    xs = _scale(np.arange(y.size, dtype=float), 0, y.size - 1, width, 10)
    ys = height - _scale(y, y.min(), y.max(), height - 16, 10)
    points = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(xs, ys, strict=True))
    body = (f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.2" points="{points}"/>'
            f'<text x="{width - 120}" y="14">max {y.max():.4g}, min {y.min():.4g}</text>')
    return _wrap(body, width, height, title)


def scatter(x, y, title: str, highlight: np.ndarray | None = None, width: int = 360, height: int = 260) -> str:
    """A data URI of a scatter plot; ``highlight`` marks points drawn in red (e.g. the Pareto front)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    mark = np.zeros(x.size, dtype=bool) if highlight is None else np.asarray(highlight, dtype=bool)
    x, y, mark = x[ok], y[ok], mark[ok]
    if x.size == 0:
        return _wrap('<text x="8" y="40">no data</text>', width, height, title)
    px = _scale(x, x.min(), x.max(), width, 14)
    py = height - _scale(y, y.min(), y.max(), height - 16, 14)
    dots = "".join(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="{3 if m else 2}" fill="{"#d62728" if m else "#999"}"/>'
                   for a, b, m in zip(px, py, mark, strict=True))
    return _wrap(dots, width, height, title)

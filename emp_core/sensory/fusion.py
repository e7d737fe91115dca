"""Fusion: one signed signal with a confidence from the five dimensions.

signal_t = sum_d w_d c_d s_d / sum_d |w_d| c_d over the dimensions whose score
s_d is defined (c_d its confidence), so it stays in [-1, 1] and a dimension
counts in proportion to both its weight and how sure it is.
signal_confidence_t = sum_d |w_d| c_d / sum_d |w_d| (an undefined dimension
contributes 0): full only when every weighted dimension is defined and sure.
A negative weight is allowed (the evolution engine may learn to fade a
dimension). No term reads the last candle's direction.

Default weights (documented starting point, the evolution engine supplies its
own): WHAT 0.35 (price pattern carries most of the directional evidence in
daily equity data), HOW 0.20, ANOMALY 0.20, WHY 0.15, WHEN 0.10 (seasonal
effects are small and slow to estimate).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import polars as pl

from emp_core.errors import EmpError
from emp_core.sensory.base import ordered_sum

DIMENSIONS = ("why", "how", "what", "when", "anomaly")
DEFAULT_WEIGHTS: Mapping[str, float] = {"why": 0.15, "how": 0.20, "what": 0.35, "when": 0.10, "anomaly": 0.20}


def check_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    """The full weight vector (missing dimensions weigh 0); a clear error for unknown names or bad values."""
    if weights is None:
        return dict(DEFAULT_WEIGHTS)
    unknown = sorted(set(weights) - set(DIMENSIONS))
    if unknown:
        raise EmpError(f"fusion weights: unknown dimension(s) {', '.join(unknown)}; use {', '.join(DIMENSIONS)}")
    out = {d: float(weights.get(d, 0.0)) for d in DIMENSIONS}
    bad = [d for d, w in out.items() if not math.isfinite(w)]
    if bad:
        raise EmpError(f"fusion weights: {', '.join(bad)} is not a finite number")
    if not any(out.values()):
        raise EmpError("fusion weights: every weight is zero; give at least one dimension a weight")
    return out


def fuse(weights: Mapping[str, float] | None = None) -> list[pl.Expr]:
    """Expressions for ``signal`` and ``signal_confidence`` over the ``{d}_score``/``{d}_confidence`` columns."""
    w = check_weights(weights)
    total = sum(abs(v) for v in w.values())
    used = [d for d in DIMENSIONS if w[d] != 0.0]
    present = {d: pl.col(f"{d}_score").is_not_null() for d in used}
    num = ordered_sum([pl.col(f"{d}_score") * pl.col(f"{d}_confidence") * w[d] for d in used])
    den = ordered_sum([pl.when(present[d]).then(pl.col(f"{d}_confidence") * abs(w[d])).otherwise(0.0)
                             for d in used])
    return [
        pl.when(den > 0).then(num / den).alias("signal"),
        (den / total).alias("signal_confidence"),
    ]

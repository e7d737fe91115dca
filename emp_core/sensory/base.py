"""Building blocks shared by the five dimensions: per-symbol windows over one flat, sorted frame.

Bars arrive sorted by (symbol, ts), so a symbol's bars are one contiguous run.
A trailing window is computed over the whole column at once and then masked
with the bar's position inside its symbol (``_i``): a statistic is defined only
where its whole window lies inside the symbol, past the warm-up of its input.
That is a Polars rolling kernel over the full column instead of one per symbol
group, and it is point in time by construction: the value at bar t reads bars
t-n+1 .. t of the same symbol and nothing later.

Conventions every dimension follows:

- a **score** is in [-1, 1] (sign = direction), a **confidence** in [0, 1];
- an undefined quantity (too little history, zero variance, missing input) is
  null, never NaN or inf; a null score has confidence 0;
- windows are counted in bars of the input's interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import polars as pl

POS = "_i"  # position of the bar inside its symbol, 0-based
RET = "_r"  # log close-to-close return ln(C_t / C_{t-1})
MIN_FRACTION = 0.8  # share of non-null values a window needs (NaN gaps in the input)
MAD_TO_SIGMA = 1.4826  # 1 / Phi^-1(3/4): MAD of a normal sample times this estimates sigma


def pos() -> pl.Expr:
    return pl.col(POS)


def finite(x: pl.Expr) -> pl.Expr:
    """``x`` with NaN as null, for raw input columns. Derived values avoid NaN at the source
    (:func:`ratio`, :func:`log`) instead: ``fill_nan`` on a large expression costs a second
    evaluation of it."""
    return x.fill_nan(None)


def nonzero(x: pl.Expr) -> pl.Expr:
    """``x`` with 0 as null (a divisor, or the argument of a log)."""
    return x.replace(0.0, None)


def ratio(num: pl.Expr, den: pl.Expr) -> pl.Expr:
    """num / den, null where den is zero or null (never inf or NaN for finite inputs)."""
    return num / nonzero(den)


def log(x: pl.Expr) -> pl.Expr:
    """ln x, null where x <= 0 or null."""
    return nonzero(x.clip(lower_bound=0.0)).log()


def lag(x: pl.Expr, h: int, warm: int = 0) -> pl.Expr:
    """``x`` of the bar h bars earlier in the same symbol."""
    return pl.when(pos() >= warm + h).then(x.shift(h))


@dataclass(frozen=True)
class Context:
    """What the stages need to know about the input: its columns, whether it is intraday, and
    whether it is complete (every price positive and finite, every volume positive), in which
    case the only nulls are the structural ones of each symbol's first bars."""

    columns: frozenset[str]
    intraday: bool
    complete: bool


def trailing(x: pl.Expr, n: int, how: str, *, warm: int = 0, exclude_current: bool = False,
             complete: bool = False) -> pl.Expr:
    """Rolling ``how`` (mean, std, sum, min, max, median) of ``x`` over the n bars ending at t.

    ``warm``: bars at the start of a symbol where ``x`` itself is still undefined.
    ``exclude_current``: the window ends at t-1 (so bar t is judged against its past only).
    ``complete``: ``x`` is null only in those warm-up bars; then a window that could
    see such a null is masked anyway, so nulls may be filled first. This matters for
    the median, whose null-aware kernel is several times slower.
    """
    if how == "median" and complete:
        x = x.fill_null(0.0)
    min_samples = max(2, math.ceil(MIN_FRACTION * n)) if how in ("std", "median") else math.ceil(MIN_FRACTION * n)
    stat = getattr(x, f"rolling_{how}")(n, min_samples=min_samples)
    shift = 1 if exclude_current else 0
    if shift:
        stat = stat.shift(1)
    return pl.when(pos() >= warm + n - 1 + shift).then(stat)


def zscore(x: pl.Expr, n: int, *, warm: int = 0) -> pl.Expr:
    """(x_t - mean) / std over the n bars ending at t; null where the std is zero."""
    return ratio(x - trailing(x, n, "mean", warm=warm), trailing(x, n, "std", warm=warm))


def robust_z(x: pl.Expr, n: int, *, warm: int = 0, complete: bool = False) -> tuple[pl.Expr, pl.Expr]:
    """(median, deviation) pieces of the robust z of bar t against the n bars before it.

    Returns ``(centre, abs_dev)``: centre m_t = median(x_{t-n} .. x_{t-1}) and
    |x_t - m_t|. The caller stores them and divides by :func:`robust_scale` to get
    z_t = (x_t - m_t) / (1.4826 * MAD_t), where MAD_t is the median of the
    previous n absolute deviations |x_s - m_s| (each measured from the median
    known at its own time s; a trailing, point-in-time form of the median
    absolute deviation, Hampel 1974). Bar t is never part of its own yardstick.
    """
    centre = trailing(x, n, "median", warm=warm, exclude_current=True, complete=complete)
    return centre, (x - centre).abs()


def robust_scale(abs_dev: pl.Expr, n: int, *, warm: int = 0, complete: bool = False) -> pl.Expr:
    """1.4826 * MAD_t: the trailing median of the previous n absolute deviations (see :func:`robust_z`)."""
    return MAD_TO_SIGMA * trailing(abs_dev, n, "median", warm=warm + n, exclude_current=True, complete=complete)


def squash(x: pl.Expr) -> pl.Expr:
    """tanh: maps a real-valued evidence to a score in (-1, 1), odd and monotone."""
    return x.tanh()


def weighted_mean(parts: list[tuple[float, pl.Expr]]) -> tuple[pl.Expr, pl.Expr]:
    """(sum a_k x_k / sum |a_k| over the non-null x_k, share of |a| that was present).

    Missing parts drop out of both sums, so the mean stays an average of what is
    known and the coverage says how much was known.
    """
    total = sum(abs(a) for a, _ in parts)
    num = pl.sum_horizontal([(x * a) for a, x in parts])
    den = pl.sum_horizontal([pl.when(x.is_not_null()).then(abs(a)).otherwise(0.0) for a, x in parts])
    mean = pl.when(den > 0).then(num / den)
    return mean, den / total


def score_and_confidence(prefix: str, evidence: pl.Expr, confidence: pl.Expr) -> list[list[pl.Expr]]:
    """Two stages: ``{prefix}_score`` = tanh(evidence), then ``{prefix}_confidence`` clipped to
    [0, 1] (0 where the score is null). Two stages so that neither expression is evaluated twice."""
    score = squash(evidence).alias(f"{prefix}_score")
    conf = pl.when(pl.col(f"{prefix}_score").is_not_null()).then(confidence.clip(0.0, 1.0)).otherwise(0.0)
    return [[score], [conf.alias(f"{prefix}_confidence")]]

"""Building blocks shared by the five dimensions: per-symbol windows over one sorted frame.

Bars arrive sorted by (symbol, ts), so a symbol's bars are one contiguous run and
``_i`` is the bar's position inside it. Two kinds of trailing window:

- **sums, means, standard deviations** run per symbol (``over("symbol")``) and are
  defined once at least 80% of the window holds values (the window is cut at the
  symbol's first bar). Per symbol, because Polars updates them incrementally: on
  the flat column the rounding of symbol B's windows would depend on how many
  rows symbol A has, including A's rows after t, so truncating the future would
  move B's past in the last bits.
- **medians, minima, maxima** are exact whatever came before, so they run on the
  flat column (several times faster) and are masked with ``_i``: defined only
  where the whole window lies inside the symbol past the warm-up of its input.

Both read bars t-n+1 .. t of the same symbol and nothing later: point in time by
construction.

Every window becomes a column of its own before an expression combines it (see
:func:`window_columns`): Polars evaluates a window function nested inside
another expression more slowly, and re-evaluates shared sub-expressions.

Conventions every dimension follows:

- a **score** is in [-1, 1] (sign = direction), a **confidence** in [0, 1];
- an undefined quantity (too little history, zero variance, missing input) is
  null, never NaN or inf; a null score has confidence 0;
- windows are counted in bars of the input's interval.
"""

from __future__ import annotations

import functools
import hashlib
import math
import operator
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import polars as pl

POS = "_i"  # position of the bar inside its symbol, 0-based
RET = "_r"  # log close-to-close return ln(C_t / C_{t-1})
MIN_FRACTION = 0.8  # share of non-null values a window needs (NaN gaps in the input)
SUMMING = ("mean", "std", "sum")  # rolling kernels that carry floating-point state from window to window
MAD_TO_SIGMA = 1.4826  # 1 / Phi^-1(3/4): MAD of a normal sample times this estimates sigma


def pos() -> pl.Expr:
    return pl.col(POS)


def nonzero(x: pl.Expr) -> pl.Expr:
    """``x`` with 0 as null (a divisor, or the argument of a log)."""
    return x.replace(0.0, None)


def ratio(num: pl.Expr, den: pl.Expr) -> pl.Expr:
    """num / den, null where den is zero or null (never inf or NaN for finite inputs). Derived values
    avoid NaN at the source like this: ``fill_nan`` on a large expression would evaluate it twice."""
    return num / nonzero(den)


def log(x: pl.Expr) -> pl.Expr:
    """ln x, null where x <= 0 or null."""
    return nonzero(x.clip(lower_bound=0.0)).log()


def lag(x: pl.Expr, h: int) -> pl.Expr:
    """``x`` of the bar h bars earlier in the same symbol."""
    return pl.when(pos() >= h).then(x.shift(h))


@dataclass(frozen=True)
class Context:
    """What the stages need to know about the input: its columns, whether it is intraday, and
    whether it is complete (every price positive and finite, every volume positive), in which
    case the only nulls are the structural ones of each symbol's first bars."""

    columns: frozenset[str]
    intraday: bool
    complete: bool


_WINDOWS: ContextVar[dict[str, pl.Expr] | None] = ContextVar("sensory_windows", default=None)


@contextmanager
def window_columns() -> Iterator[dict[str, pl.Expr]]:
    """Collect the trailing windows built inside the block as named columns.

    Inside the block :func:`trailing` returns ``pl.col(name)`` and records the
    window under that name (the same window built twice is one column); the
    caller computes the recorded columns in a stage before the expressions that
    read them. Outside a block, :func:`trailing` returns the expression itself.
    """
    token = _WINDOWS.set({})
    try:
        yield _WINDOWS.get()
    finally:
        _WINDOWS.reset(token)


def _as_column(expr: pl.Expr) -> pl.Expr:
    registry = _WINDOWS.get()
    if registry is None:
        return expr
    name = "_w" + hashlib.blake2s(expr.meta.serialize(format="json").encode(), digest_size=8).hexdigest()
    registry.setdefault(name, expr.alias(name))
    return pl.col(name)


def trailing(x: pl.Expr, n: int, how: str, *, warm: int = 0, exclude_current: bool = False,
             complete: bool = False) -> pl.Expr:
    """Rolling ``how`` (mean, std, sum, min, max, median) of ``x`` over the n bars ending at t.

    ``exclude_current``: the window ends at t-1 (bar t is judged against its past only).
    ``warm`` (min, max, median): bars at the start of a symbol where ``x`` is undefined.
    ``complete`` (median): ``x`` is null only in those warm-up bars; windows that could
    see them are masked anyway, so nulls may be filled first (the null-aware median
    kernel is several times slower).

    An input expression that reads other bars (a shift) must guard its reads with :func:`lag`:
    inside a :func:`window_columns` block it is computed on the whole frame, where a bare
    shift would read the previous symbol's last bar.
    """
    min_samples = max(2, math.ceil(MIN_FRACTION * n)) if how in ("std", "median") else math.ceil(MIN_FRACTION * n)
    shift = 1 if exclude_current else 0
    if how in SUMMING:
        if not x.meta.is_column():
            x = _as_column(x)  # inside .over() an input expression would be evaluated group by group
        stat = getattr(x, f"rolling_{how}")(n, min_samples=min_samples)
        return _as_column((stat.shift(1) if shift else stat).over("symbol"))
    if how == "median" and complete:
        x = x.fill_null(0.0)
    stat = getattr(x, f"rolling_{how}")(n, min_samples=min_samples)
    if shift:
        stat = stat.shift(1)
    return _as_column(pl.when(pos() >= warm + n - 1 + shift).then(stat))


def zscore(x: pl.Expr, n: int) -> pl.Expr:
    """(x_t - mean) / std over the n bars ending at t; null where the std is zero."""
    return ratio(x - trailing(x, n, "mean"), trailing(x, n, "std"))


def robust_scale(abs_dev: pl.Expr, n: int, *, warm: int = 0, complete: bool = False) -> pl.Expr:
    """1.4826 * MAD_t from the absolute deviations d_s = |x_s - m_s| (m_s the median of the n
    values before s): MAD_t is the median of d_{t-n} .. d_{t-1}. Each deviation is measured
    from the median known at its own time, a trailing, point-in-time form of the median
    absolute deviation (Hampel 1974); the robust z of bar t is (x_t - m_t) / (1.4826 MAD_t),
    and bar t is never part of its own yardstick."""
    return MAD_TO_SIGMA * trailing(abs_dev, n, "median", warm=warm + n, exclude_current=True, complete=complete)


def squash(x: pl.Expr) -> pl.Expr:
    """tanh: maps a real-valued evidence to a score in (-1, 1), odd and monotone."""
    return x.tanh()


def ordered_sum(exprs: Sequence[pl.Expr]) -> pl.Expr:
    """``sum_horizontal``'s meaning (a null counts as 0; no terms is 0), added left to right in the given order.
    Polars adds three or more columns with a parallel reduce whose grouping follows its thread pool, so the last
    bits of such a sum depended on the machine's cores (a 1-thread pool against 2 differed in five columns)."""
    terms = [e.fill_null(0) for e in exprs]
    return functools.reduce(operator.add, terms) if terms else pl.lit(0.0)


def ordered_mean(exprs: Sequence[pl.Expr]) -> pl.Expr:
    """``mean_horizontal``'s meaning (the mean of the non-null terms; null when none is), in a fixed order."""
    exprs = list(exprs)
    count = functools.reduce(operator.add, [e.is_not_null().cast(pl.Int64) for e in exprs])
    return pl.when(count > 0).then(ordered_sum(exprs) / count)


def weighted_mean(parts: list[tuple[float, pl.Expr]]) -> tuple[pl.Expr, pl.Expr]:
    """(sum a_k x_k / sum |a_k| over the non-null x_k, share of |a| that was present).

    Missing parts drop out of both sums, so the mean stays an average of what is
    known and the coverage says how much was known.
    """
    total = sum(abs(a) for a, _ in parts)
    num = ordered_sum([(x * a) for a, x in parts])
    den = ordered_sum([pl.when(x.is_not_null()).then(abs(a)).otherwise(0.0) for a, x in parts])
    mean = pl.when(den > 0).then(num / den)
    return mean, den / total


def score_and_confidence(prefix: str, evidence: pl.Expr, confidence: pl.Expr) -> list[list[pl.Expr]]:
    """Two stages: ``{prefix}_score`` = tanh(evidence), then ``{prefix}_confidence`` clipped to
    [0, 1] (0 where the score is null). Two stages so that neither expression is evaluated twice."""
    score = squash(evidence).alias(f"{prefix}_score")
    conf = pl.when(pl.col(f"{prefix}_score").is_not_null()).then(confidence.clip(0.0, 1.0)).otherwise(0.0)
    return [[score], [conf.alias(f"{prefix}_confidence")]]

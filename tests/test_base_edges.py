"""Edge cases of the sensory building blocks (``emp_core.sensory.base``): the immutable Context, the
``window_columns`` registry, the trailing-window defaults and sample thresholds, ``robust_scale`` defaults,
``weighted_mean`` with nothing known and the confidence clip. Expected values come from numpy / plain
Python, not from the code under test."""

import dataclasses
import math

import numpy as np
import polars as pl
import pytest

from emp_core.sensory.base import (
    POS,
    Context,
    robust_scale,
    score_and_confidence,
    trailing,
    weighted_mean,
    window_columns,
    zscore,
)


def bars(values: dict[str, list[float | None]]) -> pl.DataFrame:
    """Symbols stacked in order, each with its 0-based position ``_i`` and the value column ``v``."""
    symbols = [s for s, vs in values.items() for _ in vs]
    position = [i for vs in values.values() for i in range(len(vs))]
    flat = [v for vs in values.values() for v in vs]
    return pl.DataFrame({"symbol": symbols, POS: position, "v": flat},
                        schema={"symbol": pl.String, POS: pl.Int32, "v": pl.Float64})


def column(frame: pl.DataFrame, expr: pl.Expr) -> list[float | None]:
    return frame.select(expr.alias("out"))["out"].to_list()


def staged(frame: pl.DataFrame, windows: dict[str, pl.Expr], expr: pl.Expr) -> list[float | None]:
    """The caller's side of ``window_columns``: the recorded columns first (in the order they were
    recorded, so a window reading another one comes after it), then the expression reading them."""
    for window in windows.values():
        frame = frame.with_columns(window)
    return column(frame, expr)


def rolling(values: list[float | None], n: int, stat, min_samples: int, first: int = 0) -> list[float | None]:
    """Oracle: ``stat`` of the non-null values among bars t-n+1 .. t (cut at the first bar), null with fewer
    than ``min_samples`` of them or before position ``first``."""
    out: list[float | None] = []
    for t in range(len(values)):
        window = [v for v in values[max(0, t - n + 1):t + 1] if v is not None]
        out.append(float(stat(np.array(window))) if t >= first and len(window) >= min_samples else None)
    return out


def assert_close(actual: list[float | None], expected: list[float | None]) -> None:
    assert [a is None for a in actual] == [e is None for e in expected], (actual, expected)
    for a, e in zip(actual, expected, strict=True):
        if e is not None:
            assert a == pytest.approx(e, rel=1e-12, abs=1e-12), (actual, expected)


# --- Context --------------------------------------------------------------------------------------------------

def test_context_is_an_immutable_hashable_value():
    ctx = Context(frozenset({"close", "volume"}), intraday=False, complete=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.complete = False  # type: ignore[misc]
    assert ctx.complete is True
    twin = Context(frozenset({"volume", "close"}), intraday=False, complete=True)
    assert hash(ctx) == hash(twin)
    assert {ctx, twin} == {ctx}


# --- window_columns -------------------------------------------------------------------------------------------

def test_trailing_inside_a_block_returns_a_column_and_records_the_window_once():
    frame = bars({"A": [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]})
    with window_columns() as windows:
        first = trailing(pl.col("v"), 3, "max")
        again = trailing(pl.col("v"), 3, "max")
    assert first.meta.is_column() and again.meta.is_column()
    name = first.meta.output_name()
    assert again.meta.output_name() == name
    assert list(windows) == [name]  # the same window built twice is one column
    expected = [None, None, 4.0, 4.0, 5.0, 9.0, 9.0, 9.0]  # max of bars t-2 .. t, from bar 2 on
    assert staged(frame, windows, first) == expected
    assert column(frame, trailing(pl.col("v"), 3, "max")) == expected


def test_trailing_outside_a_block_returns_the_expression_itself():
    frame = bars({"A": [2.0, 4.0, 6.0, 8.0], "B": [1.0, 3.0, 5.0, 7.0]})
    expr = trailing(pl.col("v"), 2, "mean")
    assert not expr.meta.is_column()
    assert set(expr.meta.root_names()) == {"v", "symbol"}  # reads the input itself, no recorded column
    # 2-bar means per symbol, each symbol's first bar alone (1 of 2 values < ceil(0.8 * 2) = 2): null
    assert column(frame, expr) == [None, 3.0, 5.0, 7.0, None, 2.0, 4.0, 6.0]


def test_staged_block_gives_the_values_of_the_plain_expression():
    a = [1.0, 2.0, 4.0, 7.0, 11.0, 16.0]
    b = [5.0, 3.0, 8.0, 1.0, 9.0, 2.0]
    frame = bars({"A": a, "B": b})
    with window_columns() as windows:
        inside = zscore(pl.col("v"), 3)
    assert len(windows) == 2  # the mean and the std
    plain = column(frame, zscore(pl.col("v"), 3))
    assert staged(frame, windows, inside) == plain
    expected: list[float | None] = []
    for values in (a, b):
        for t in range(len(values)):
            w = np.array(values[max(0, t - 2):t + 1])
            expected.append(float((values[t] - w.mean()) / w.std(ddof=1)) if len(w) == 3 else None)
    assert_close(plain, expected)


# --- trailing: defaults and sample thresholds -----------------------------------------------------------------

def test_trailing_median_by_default_ignores_a_null_in_the_window():
    values = [1.0, 2.0, 3.0, None, 5.0, 6.0, 7.0, 8.0, 9.0]
    frame = bars({"A": values})
    n = 5
    min_samples = max(2, math.ceil(0.8 * n))  # 4
    expected = rolling(values, n, np.median, min_samples, first=n - 1)
    assert expected[4] == 2.5  # median of 1, 2, 3, 5 (the null is not a 0)
    assert_close(column(frame, trailing(pl.col("v"), n, "median")), expected)


def test_two_bar_std_and_median_are_defined_from_two_values():
    values = [1.0, 4.0, 2.0, 7.0, 7.0]
    frame = bars({"A": values})
    std = [None] + [float(np.std(values[t - 1:t + 1], ddof=1)) for t in range(1, len(values))]
    median = [None] + [(values[t - 1] + values[t]) / 2 for t in range(1, len(values))]
    assert_close(column(frame, trailing(pl.col("v"), 2, "std")), std)
    assert_close(column(frame, trailing(pl.col("v"), 2, "median")), median)


@pytest.mark.parametrize("how", ["mean", "sum", "max", "min"])
def test_one_bar_window_is_the_value_itself_from_the_first_bar(how):
    values = [3.0, -1.5, 8.0, 0.25]
    frame = bars({"A": values, "B": [2.0, 6.0]})
    assert column(frame, trailing(pl.col("v"), 1, how)) == [*values, 2.0, 6.0]


def test_complete_applies_to_the_median_only():
    """``complete`` fills nulls for the median kernel only: a max over negative values (or a min over positive
    ones) with a null in the window stays the max (min) of the values present, as without ``complete``."""
    n = 5
    min_samples = math.ceil(0.8 * n)  # 4
    negative = [-5.0, -3.0, -4.0, None, -6.0, -2.0, -7.0, -8.0, -9.0]
    positive = [None if v is None else -v for v in negative]
    for how, stat, values, at_4 in (("max", np.max, negative, -3.0), ("min", np.min, positive, 3.0)):
        frame = bars({"A": values})
        expected = rolling(values, n, stat, min_samples, first=n - 1)
        assert expected[4] == at_4  # a 0 in place of the null would give 0
        with_complete = column(frame, trailing(pl.col("v"), n, how, complete=True))
        assert_close(with_complete, expected)
        assert with_complete == column(frame, trailing(pl.col("v"), n, how))


# --- trailing: an input expression inside a block -------------------------------------------------------------

def test_input_expression_is_evaluated_on_the_flat_frame_inside_a_block():
    """Inside a block a non-column input becomes a column of its own, computed on the whole frame (not symbol by
    symbol inside ``.over``). An unguarded ``shift`` therefore reads the previous symbol's last bar at a symbol's
    first bar: callers guard such reads with ``lag`` / the position, as every sensory caller does."""
    a = [1.0, 2.0, 4.0, 7.0, 11.0]
    b = [100.0, 103.0, 109.0, 110.0, 120.0]
    frame = bars({"A": a, "B": b})
    flat = np.array(a + b)
    diff = [None, *(float(d) for d in np.diff(flat))]  # B's first diff is 100 - 11
    expected = rolling(diff[:5], 3, np.sum, 3) + rolling(diff[5:], 3, np.sum, 3)
    assert expected[7] == 89.0 + 3.0 + 6.0
    with window_columns() as windows:
        expr = trailing(pl.col("v") - pl.col("v").shift(1), 3, "sum")
    assert len(windows) == 2  # the input column and the rolling sum
    assert_close(staged(frame, windows, expr), expected)


# --- robust_scale ---------------------------------------------------------------------------------------------

def test_robust_scale_defaults_first_defined_bar_and_null_aware():
    n = 5
    rng = np.random.default_rng(7)
    x = rng.normal(size=24)
    # d_s = |x_s - median(x_{s-n} .. x_{s-1})|, defined from s = n
    d: list[float | None] = [None] * n + [float(abs(x[s] - np.median(x[s - n:s]))) for s in range(n, len(x))]
    d[13] = None  # a missing deviation in the middle
    frame = bars({"A": d})
    min_samples = max(2, math.ceil(0.8 * n))
    expected: list[float | None] = []
    for t in range(len(d)):
        window = [v for v in d[t - n:t] if v is not None] if t >= n else []
        # MAD_t reads d_{t-n} .. d_{t-1}; d_{t-n} exists from t - n = n on, so the first scale is at t = 2n
        expected.append(1.4826 * float(np.median(window)) if t >= 2 * n and len(window) >= min_samples else None)
    assert expected[2 * n - 1] is None and expected[2 * n] is not None
    assert all(expected[t] is not None for t in range(14, 19))  # the windows holding the null d_13
    assert_close(column(frame, robust_scale(pl.col("v"), n)), expected)


# --- weighted_mean / score_and_confidence ---------------------------------------------------------------------

def test_weighted_mean_with_every_part_missing_is_null_with_zero_coverage():
    frame = pl.DataFrame({"a": [None, 2.0, None], "b": [None, None, 4.0]},
                         schema={"a": pl.Float64, "b": pl.Float64})
    mean, coverage = weighted_mean([(1.0, pl.col("a")), (-3.0, pl.col("b"))])
    out = frame.select(mean.alias("m"), coverage.alias("c"))
    assert out["m"].to_list() == [None, 2.0, -3.0 * 4.0 / 3.0]
    assert out["m"].is_nan().fill_null(False).sum() == 0
    assert out["c"].to_list() == [0.0, 0.25, 0.75]


def test_confidence_is_clipped_to_unit_interval_and_zero_without_score():
    frame = pl.DataFrame({"e": [0.2, -0.7, None, 1.3, 0.0], "c": [1.5, -0.5, 0.8, 0.9, 1.0]})
    stages = score_and_confidence("dim", pl.col("e"), pl.col("c"))
    for stage in stages:
        frame = frame.with_columns(stage)
    assert_close(frame["dim_score"].to_list(), [math.tanh(0.2), math.tanh(-0.7), None, math.tanh(1.3), 0.0])
    assert frame["dim_confidence"].to_list() == [1.0, 0.0, 0.0, 0.9, 1.0]

"""WHEN edge cases: the public ``per_date`` default, the month end, the next business day of intraday release eves,
the null statistic at zero variance, and no eve without a release calendar. Expected values come from
``calendar`` / ``datetime``, not from the code under test."""

import calendar
from datetime import date, datetime, timedelta

import numpy as np
import polars as pl

from emp_core.sensory import compute_features, when
from emp_core.sensory.why import MacroInputs


def next_business_day(d: date) -> date:
    """The first Monday-to-Friday day after ``d``."""
    d += timedelta(days=1)
    while d.weekday() >= 5:
        d += timedelta(days=1)
    return d


def business_days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)
            if (first + timedelta(days=i)).weekday() < 5]


def is_turn(d: date) -> bool:
    """``d`` (a business day) is the last business day of its month or one of its first three."""
    month = business_days(d.replace(day=1), d.replace(day=calendar.monthrange(d.year, d.month)[1]))
    return month.index(d) < 3 or d == month[-1]


def frame(ts: list[datetime], close: list[float], symbol: str = "SYN") -> pl.DataFrame:
    close_ = np.asarray(close)
    open_ = np.concatenate([[close_[0]], close_[:-1]])
    return pl.DataFrame({"symbol": symbol, "ts": pl.Series(ts, dtype=pl.Datetime("us")), "open": open_,
                         "high": np.maximum(open_, close_) * 1.002, "low": np.minimum(open_, close_) * 0.998,
                         "close": close_, "volume": np.full(len(ts), 1e6)})


def daily_bars(days: list[date], flat: set[date], seed: int = 0) -> pl.DataFrame:
    """Business-day bars whose close on each day in ``flat`` equals the previous close exactly (own return exactly
    0.0), random elsewhere."""
    rng = np.random.default_rng(seed)
    close = [100.0]
    for d in days[1:]:
        close.append(close[-1] if d in flat else close[-1] * (1 + rng.normal(0, 0.01)))
    return frame([datetime(d.year, d.month, d.day) for d in days], close)


def monthly_release(on: date) -> MacroInputs:
    """One monthly series (not read by WHY) published on ``on``: the release calendar is that one day."""
    return MacroInputs(series=pl.DataFrame({
        "series_id": ["test_monthly"], "period_start": [date(on.year, on.month, 1) - timedelta(days=31)],
        "value": [1.0], "frequency": ["M"], "available_at": [on]}))


def test_per_date_treats_bars_as_daily_unless_told_intraday():
    """Called without ``intraday``, per_date adds the next trading day's weekday, turn flag and distance (Monday
    to Friday without a calendar)."""
    days = [date(2024, 1, 1) + timedelta(days=i) for i in range(91)]  # every day of Q1 2024, weekends too
    dates = pl.LazyFrame({"ts": pl.Series([datetime(d.year, d.month, d.day) for d in days], dtype=pl.Datetime("us"))})
    out = when.per_date(dates, None).collect()
    assert {"_next_weekday", "_next_turn", "_next_gap"} <= set(out.columns)
    nxt = [next_business_day(d) for d in days]
    assert out["_next_weekday"].to_list() == [n.isoweekday() for n in nxt]
    assert out["_next_gap"].to_list() == [(n - d).days for n, d in zip(nxt, days, strict=True)]
    assert out["_next_turn"].to_list() == [is_turn(n) for n in nxt]
    assert out["when_days_to_release"].is_null().all()
    # told intraday, it adds no next-trading-day columns
    assert "_next_weekday" not in when.per_date(dates, None, intraday=True).collect().columns


def test_month_end_is_the_last_day_of_the_month():
    for year in (2023, 2024):  # 2024: leap February
        d = date(year, 1, 1)
        while d.year == year:
            assert when._month_end(d) == date(year, d.month, calendar.monthrange(year, d.month)[1]), d
            d += timedelta(days=1)


def intraday_eves(release: date) -> tuple[pl.DataFrame, list[bool]]:
    """Hourly 24/7 bars from Thursday 29 February to Sunday 3 March 2024 with one release on ``release``; the
    eves expected from the docstring: the release falls after the bar's date, on or before the next
    Monday-to-Friday day."""
    ts = [datetime(2024, 2, 29) + timedelta(hours=h) for h in range(96)]
    rng = np.random.default_rng(1)
    close = list(100 * np.cumprod(1 + rng.normal(0, 0.002, len(ts))))
    f = compute_features(frame(ts, close), monthly_release(release), intraday=True)
    assert f["ts"].to_list() == ts
    expected = [t.date() < release <= next_business_day(t.date()) for t in ts]
    return f, expected


def test_intraday_release_eve_looks_to_the_next_business_day_only():
    """The next Monday-to-Friday day of a Friday, Saturday or Sunday bar is Monday: a Monday release makes them
    all eves, a Tuesday release none of them (nor the Thursday bars)."""
    assert date(2024, 3, 1).weekday() == 4 and date(2024, 3, 4).weekday() == 0  # Friday 1, Monday 4 March
    monday, expected = intraday_eves(date(2024, 3, 4))
    assert sum(expected) == 72  # Friday, Saturday, Sunday
    assert monday["when_release_eve"].to_list() == expected
    tuesday, expected = intraday_eves(date(2024, 3, 5))
    assert not any(expected)
    assert tuesday["when_release_eve"].to_list() == expected


def test_intraday_bars_without_a_release_calendar_have_no_eve():
    ts = [datetime(2024, 3, 1) + timedelta(hours=h) for h in range(96)]
    close = list(100 * np.cumprod(1 + np.random.default_rng(2).normal(0, 0.002, len(ts))))
    f = compute_features(frame(ts, close), None, intraday=True)
    assert f["when_days_to_release"].is_null().all()
    assert not f["when_release_eve"].any()


DAYS = business_days(date(2023, 1, 2), date(2024, 6, 28))


def test_a_bucket_whose_returns_are_all_zero_has_no_statistic():
    """Every Monday closes exactly at Friday's close: the Monday bucket (the Friday bars, which forecast Monday)
    holds only returns of exactly 0.0, zero variance, so its statistic is null however many bars it has; the
    other weekdays, with varied returns on both sides, have one once both sides hold 20 bars."""
    f = compute_features(daily_bars(DAYS, {d for d in DAYS if d.weekday() == 0}), None, intraday=False)
    assert f["when_weekday"].to_list() == [next_business_day(d).isoweekday() for d in DAYS]
    late = f.filter(pl.col("ts") >= datetime(2023, 9, 1))  # > 30 weeks in: every bucket holds > 20 bars
    monday = late.filter(pl.col("when_weekday") == 1)
    assert monday.height > 20 and monday["when_t_weekday"].is_null().all()
    assert late.filter(pl.col("when_weekday") != 1)["when_t_weekday"].is_not_null().all()


def test_a_bucket_whose_complement_has_zero_variance_has_no_statistic():
    """Only turn-of-month days move (each bar's bucket is that of the next trading day, whose return it
    forecasts): the rest bucket's returns are all exactly 0.0, so the turn bucket, whose other side has zero
    variance, has no month-phase statistic, though it holds varied returns and both sides hold 20 bars."""
    f = compute_features(daily_bars(DAYS, {d for d in DAYS if not is_turn(d)}), None, intraday=False)
    assert f["when_month_phase"].to_list() == ["turn" if is_turn(next_business_day(d)) else "rest" for d in DAYS]
    late = f.filter(pl.col("ts") >= datetime(2023, 9, 1))  # 8 months in: > 30 turn and > 100 rest bars before
    turn = late.filter(pl.col("when_month_phase") == "turn")
    assert turn.height > 20 and turn["when_t_month_phase"].is_null().all()
    assert late["when_t_month_phase"].is_null().all()
    # the weekday buckets mix turn and rest days: varied on both sides, so that family does have a statistic
    assert late["when_t_weekday"].is_not_null().all()

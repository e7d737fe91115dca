"""Trading calendars: which bar timestamps a complete data set must contain.

Two calendars cover the shipped data:

- ``XNYS``: New York Stock Exchange sessions (holidays and special closures from
  ``exchange_calendars``); a daily bar is stamped with its session date at 00:00.
- ``FX24X5``: the spot FX week, Sunday 17:00 to Friday 17:00 New York time (the
  market convention); an hourly bar is stamped with its open time in UTC. Holidays
  are not modelled: thin holiday trading shows up as gaps within the tolerance.

:func:`trading_dates` gives the days on which a calendar trades (XNYS sessions;
Monday to Friday for FX24X5 and for data without a calendar; every day for
24/7): calendar effects such as the turn of the month are counted in them.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from functools import lru_cache

import polars as pl

from emp_core.errors import ConfigError

CALENDARS = ("XNYS", "FX24X5", "24/7")
INTERVALS = {"1d": timedelta(days=1), "1h": timedelta(hours=1)}
_XNYS_RANGE = (1990, 2035)  # years held by default (building 1885 onwards costs ~4 s, on demand only)


@lru_cache(maxsize=2)
def _xnys_sessions(first_year: int = _XNYS_RANGE[0]) -> pl.Series:
    import exchange_calendars as xc

    cal = xc.get_calendar("XNYS", start=f"{first_year}-01-01", end=f"{_XNYS_RANGE[1]}-12-31")
    return pl.Series("ts", cal.sessions.tz_localize(None).to_numpy()).cast(pl.Datetime("us"))


def trading_dates(calendar: str | None, first: date, last: date) -> pl.Series:
    """The dates in ``[first, last]`` on which ``calendar`` trades, sorted (``None``: Monday to Friday).

    Exchange holidays are known in advance, so a date's place among them is point in time.
    """
    if calendar == "XNYS":
        if first.year < 1885 or last.year > _XNYS_RANGE[1]:
            raise ConfigError(f"calendar XNYS: sessions are known here from 1885 to {_XNYS_RANGE[1]}, "
                              f"not for {first} .. {last}")
        days = _xnys_sessions(min(first.year, _XNYS_RANGE[0])).dt.date()
        return days.filter(days.is_between(first, last)).alias("date")
    days = pl.date_range(first, last, interval="1d", eager=True).alias("date")
    if calendar == "24/7":
        return days
    if calendar in (None, "FX24X5"):
        return days.filter(days.dt.weekday() <= 5)
    raise ConfigError(f"calendar {calendar!r} is not known; choose one of {', '.join(CALENDARS)}")


def interval_length(interval: str) -> timedelta:
    try:
        return INTERVALS[interval]
    except KeyError:
        choices = ", ".join(INTERVALS)
        raise ConfigError(f"interval {interval!r} is not supported; choose one of {choices}") from None


def expected_bars(calendar: str, interval: str, start: datetime, end: datetime) -> pl.Series:
    """Timestamps of every bar the calendar expects in ``[start, end)`` (naive UTC)."""
    step = interval_length(interval)
    if end <= start:
        return pl.Series("ts", [], dtype=pl.Datetime("us"))
    if calendar == "XNYS":
        sessions = _xnys_sessions()
        if interval != "1d":
            raise ConfigError("calendar XNYS is defined here for daily bars only")
        return sessions.filter((sessions >= start) & (sessions < end))
    grid = pl.datetime_range(_ceil(start, step), end, step, closed="left", time_unit="us", eager=True)
    if calendar == "24/7":
        return grid.alias("ts")
    if calendar == "FX24X5":
        ny = grid.dt.replace_time_zone("UTC").dt.convert_time_zone("America/New_York")
        weekday, hour = ny.dt.weekday(), ny.dt.hour()  # Monday=1 .. Sunday=7
        open_ = (weekday <= 4) | ((weekday == 5) & (hour < 17)) | ((weekday == 7) & (hour >= 17))
        return grid.filter(open_).alias("ts")
    raise ConfigError(f"calendar {calendar!r} is not known; choose one of {', '.join(CALENDARS)}")


def _ceil(ts: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1)
    n = -((epoch - ts) // step)
    return epoch + n * step
